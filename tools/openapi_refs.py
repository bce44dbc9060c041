"""Local `$ref`s of an OpenAPI document made into self-contained JSON Schemas (2020-12)."""

from __future__ import annotations

import re
from typing import Any

from tools.errors import DocumentInvalid
from tools.validation import pointer

# Keywords whose value is data, not a schema: a "$ref" key inside them is not a reference.
_VALUE_KEYWORDS = frozenset({"example", "examples", "default", "enum", "const"})
# Keywords whose value maps names to schemas.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions",
                          "dependentSchemas"})
_DEF_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def unescape(part: str) -> str:
    return part.replace("~1", "/").replace("~0", "~")


class RefResolver:
    """Follows `#/...` references within one document. A schema is inlined where it is used,
    except one that contains itself: that goes to `$defs` once and is referred to there."""

    def __init__(self, document: dict[str, Any], *, openapi_30: bool) -> None:
        self.document = document
        self.openapi_30 = openapi_30

    def target(self, ref: Any, at: str) -> tuple[Any, str]:
        """The value a `$ref` at pointer `at` names, and its own pointer."""
        if not isinstance(ref, str):
            raise DocumentInvalid(at, "$ref must be a string such as '#/components/schemas/Pet'")
        if not ref.startswith("#"):
            raise DocumentInvalid(
                at,
                f"$ref {ref!r} points outside this document; only local references "
                "('#/components/...') are resolved: bundle the document into one file first "
                "(for example with `redocly bundle`)",
            )
        if not ref.startswith("#/"):
            raise DocumentInvalid(
                at, f"$ref {ref!r} is not a JSON pointer; write it as '#/components/schemas/Name'"
            )
        node: Any = self.document
        for part in (unescape(p) for p in ref[1:].split("/")[1:]):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise DocumentInvalid(at, f"$ref {ref!r} points to nothing in this document")
        return node, ref[1:]

    def follow(self, node: Any, at: str) -> tuple[Any, str]:
        """An object that may be a `$ref` (a parameter, a request body) and where it is."""
        seen: set[str] = set()
        while isinstance(node, dict) and "$ref" in node:
            if at in seen:
                raise DocumentInvalid(at, "$ref refers to itself without reaching an object")
            seen.add(at)
            node, at = self.target(node["$ref"], f"{at}/$ref")
        return node, at

    def schema(self, schema: Any, at: str, defs: dict[str, str]) -> dict[str, Any]:
        """`schema` with every reference inlined; `$defs` holds the ones that recur. `defs`
        maps their pointers to names in `$defs`: share it between schemas that will sit in
        one root so that names do not clash."""
        inlined = _Inliner(self, defs).schema(schema, at, ())
        if not isinstance(inlined, dict):
            return {}
        built: dict[str, Any] = {}
        done: set[str] = set()
        while len(done) < len(defs):
            for ref, name in list(defs.items()):
                if ref not in done:
                    target, _ = self.target("#" + ref, ref)
                    built[name] = _Inliner(self, defs).schema(target, ref, (ref,))
                    if built[name] == {"$ref": f"#/$defs/{name}"}:
                        raise DocumentInvalid(ref, "$refs here lead only to one another, never "
                                              "to a schema; point one of them at a schema")
                    done.add(ref)
        if built:
            inlined = {**inlined, "$defs": {**inlined.get("$defs", {}), **built}}
        return inlined


class _Inliner:
    def __init__(self, resolver: RefResolver, defs: dict[str, str]) -> None:
        self.resolver = resolver
        self.defs = defs

    def schema(self, node: Any, at: str, stack: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [self.schema(v, f"{at}/{i}", stack) for i, v in enumerate(node)]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return self._reference(node, at, stack)
        out: dict[str, Any] = {}
        for key, value in node.items():
            where = f"{at}{pointer(key)}"
            if key in _VALUE_KEYWORDS or key.startswith("x-"):
                out[key] = value
            elif key in _SCHEMA_MAPS and isinstance(value, dict):
                out[key] = {k: self.schema(v, f"{where}{pointer(k)}", stack)
                            for k, v in value.items()}
            else:
                out[key] = self.schema(value, where, stack)
        return _from_openapi_30(out) if self.resolver.openapi_30 else out

    def _reference(self, node: dict[str, Any], at: str, stack: tuple[str, ...]) -> Any:
        target, ref = self.resolver.target(node["$ref"], f"{at}/$ref")
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        if ref in stack:
            # A schema that contains itself cannot be inlined: refer to its one copy in $defs.
            inlined: Any = {"$ref": f"#/$defs/{self._def_name(ref)}"}
        else:
            inlined = self.schema(target, ref, (*stack, ref))
        if siblings and isinstance(inlined, dict):
            return {**inlined, **self.schema(siblings, at, stack)}
        return inlined

    def _def_name(self, ref: str) -> str:
        if ref not in self.defs:
            base = _DEF_NAME.sub("_", unescape(ref.rsplit("/", 1)[-1])) or "schema"
            name, n = base, 1
            while name in self.defs.values():
                n += 1
                name = f"{base}_{n}"
            self.defs[ref] = name
        return self.defs[ref]


def _from_openapi_30(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI 3.0's schema dialect in 2020-12 terms: `nullable`, and boolean exclusive bounds."""
    out = dict(schema)
    if out.pop("nullable", False) is True and "type" in out:
        kinds = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*kinds, "null"] if "null" not in kinds else kinds
    for flag, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(flag), bool) and out.pop(flag) and bound in out:
            out[flag] = out.pop(bound)
    return out
