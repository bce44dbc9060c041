"""Read tool specs from files: JSON, JSON Lines, and BFCL's function format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tools.errors import ImportFormatError
from tools.spec import function_name

# BFCL spells JSON Schema types its own way; `any` means no type constraint at all.
_BFCL_TYPES = {"dict": "object", "float": "number", "tuple": "array", "any": None}


def read_tool_file(path: Path) -> list[dict[str, Any]]:
    """Specs in a file, BFCL functions converted; raises `ImportFormatError` saying where."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ImportFormatError(str(path), None, f"cannot read file: {exc.strerror}") from exc
    return [normalize_item(item) for item in _documents(text, str(path))]


def _documents(text: str, source: str) -> list[Any]:
    stripped = text.lstrip()
    if not stripped:
        raise ImportFormatError(source, None, "file is empty: expected JSON or JSON Lines specs")
    if stripped[0] == "[" or (stripped[0] == "{" and _is_single_document(stripped)):
        doc = json.loads(stripped)
        return _flatten(doc)
    items: list[Any] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.extend(_flatten(json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ImportFormatError(source, number, f"not valid JSON: {exc.msg}") from exc
    return items


def _is_single_document(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _flatten(doc: Any) -> list[Any]:
    """A spec, a list of specs, {"tools": [...]}, or a BFCL entry {"function": [...]}."""
    if isinstance(doc, list):
        return [item for part in doc for item in _flatten(part)]
    if isinstance(doc, dict) and isinstance(doc.get("tools"), list):
        return list(doc["tools"])
    if isinstance(doc, dict) and isinstance(doc.get("function"), list) and "name" not in doc:
        return list(doc["function"])
    return [doc]


def normalize_item(item: Any) -> Any:
    """Convert a BFCL function to a spec; anything else passes through for validation."""
    if isinstance(item, dict) and is_bfcl_function(item):
        return from_bfcl(item)
    return item


def is_bfcl_function(item: dict[str, Any]) -> bool:
    params = item.get("parameters")
    bfcl_root = isinstance(params, dict) and params.get("type") == "dict"
    dotted = isinstance(item.get("name"), str) and "." in item["name"]
    return "executor" not in item and (bfcl_root or dotted)


def from_bfcl(function: dict[str, Any]) -> dict[str, Any]:
    """BFCL's {"name", "description", "parameters"} as a Switchboard spec."""
    spec = {k: v for k, v in function.items() if k != "parameters"}
    spec["name"] = function_name(str(function.get("name", "")))
    if "parameters" in function:
        spec["parameters"] = bfcl_schema(function["parameters"])
    return spec


def bfcl_schema(schema: Any) -> Any:
    """Rewrite BFCL type names to JSON Schema, descending only into schema positions."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if isinstance(out.get("type"), str) and out["type"] in _BFCL_TYPES:
        mapped = _BFCL_TYPES[out["type"]]
        if mapped is None:
            del out["type"]
        else:
            out["type"] = mapped
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: bfcl_schema(v) for k, v in out["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = bfcl_schema(out[key])
    if isinstance(out.get("items"), list):
        out["prefixItems"] = [bfcl_schema(s) for s in out.pop("items")]
    return out


def deduplicate(items: list[Any], on_duplicate: str = "error") -> list[Any]:
    """Drop exact repeats; for one name with different specs keep the first, the last, or keep
    both so validation reports the clash (`error`)."""
    seen: dict[tuple[Any, Any], int] = {}
    out: list[Any] = []
    for item in items:
        if not isinstance(item, dict):
            out.append(item)
            continue
        key = (item.get("namespace"), item.get("name"))
        if key not in seen:
            seen[key] = len(out)
            out.append(item)
        elif out[seen[key]] == item or on_duplicate == "first":
            continue
        elif on_duplicate == "last":
            out[seen[key]] = item
        else:
            out.append(item)
    return out
