"""The text that stands for a tool in search: what is embedded and what keywords match."""

from __future__ import annotations

import re
from typing import Any

from tools.spec import DEFAULT_NAMESPACE, ToolSpec

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[._\-/]+")
_MAX_PARAMS = 24


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


def tool_text(spec: ToolSpec) -> str:
    """Name, namespace, description and parameters; examples are embedded on their own."""
    title = words_of_name(spec.name)
    if spec.namespace != DEFAULT_NAMESPACE:
        title = f"{words_of_name(spec.namespace)} {title}"
    parts = [f"{title}: {spec.description.strip()}"]
    params = parameter_lines(spec.parameters)
    if params:
        parts.append("Parameters: " + "; ".join(params) + ".")
    return "\n".join(parts)


def keyword_text(spec: ToolSpec) -> str:
    """What keyword search matches against: the embedded text plus tags and examples."""
    return "\n".join([tool_text(spec), " ".join(spec.tags), *spec.examples])
