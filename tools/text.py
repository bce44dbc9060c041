"""The text that stands for a tool in search: what is embedded and what keywords match."""

from __future__ import annotations

import re
from typing import Any

from tools.spec import DEFAULT_NAMESPACE, ToolSpec

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[._\-/]+")
_MAX_PARAMS = 24
_CLAUSE_END = re.compile(r"(?<=[.!?;,])\s+")
_MAX_CLAUSES = 4
_LONG_DESCRIPTION = 20
"""Words from which a description is also searched clause by clause. Shorter ones mostly say
one thing, and their comma clauses are fragments of a list ("such as cuisine", "and dietary
preferences") that pull near-twins ahead (bench/BENCHMARKS.md, "Clauses of a description")."""


def words_of_name(name: str) -> str:
    """`getWeather_forecast` -> `get Weather forecast`: names read as words to the embedder."""
    return " ".join(_SEPARATORS.sub(" ", _CAMEL.sub(" ", name)).split())


def parameter_lines(parameters: dict[str, Any]) -> list[str]:
    props = parameters.get("properties")
    if not isinstance(props, dict):
        return []
    lines = []
    for name, schema in list(props.items())[:_MAX_PARAMS]:
        desc = schema.get("description", "") if isinstance(schema, dict) else ""
        lines.append(f"{words_of_name(name)}: {desc}".strip().rstrip(":"))
    return lines


def _title(namespace: str, name: str) -> str:
    title = words_of_name(name)
    if namespace != DEFAULT_NAMESPACE:
        title = f"{words_of_name(namespace)} {title}"
    return title


def tool_text(spec: ToolSpec) -> str:
    """Name, namespace, description and parameters; examples are embedded on their own."""
    parts = [f"{_title(spec.namespace, spec.name)}: {spec.description.strip()}"]
    params = parameter_lines(spec.parameters)
    if params:
        parts.append("Parameters: " + "; ".join(params) + ".")
    return "\n".join(parts)


def description_clauses(namespace: str, name: str, description: str) -> list[str]:
    """The sentences and comma clauses (of two words or more) of a long description, each under
    the tool's title, when there are two or more; the first four. Each is embedded on its own: a
    request for one of the several things a tool does matches that clause better than the whole
    text, where the other things dilute it."""
    if len(description.split()) < _LONG_DESCRIPTION:
        return []
    pieces = (c.strip(" ,;.") for c in _CLAUSE_END.split(description.strip()))
    clauses = [c for c in pieces if len(c.split()) >= 2][:_MAX_CLAUSES]
    if len(clauses) < 2:
        return []
    title = _title(namespace, name)
    return [f"{title}: {c}" for c in clauses]


def keyword_text(spec: ToolSpec) -> str:
    """What keyword search matches against: the embedded text plus tags and examples."""
    return "\n".join([tool_text(spec), " ".join(spec.tags), *spec.examples])
