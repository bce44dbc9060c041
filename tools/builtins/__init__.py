"""Offline functions the service can run in-process, and the tool specs that describe them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tools.builtins.calculator import calculate
from tools.builtins.specs import _SPECS
from tools.builtins.time_zones import convert_time, current_time
from tools.builtins.units import convert_units
from tools.spec import ToolSpec

__all__ = [
    "BuiltinFunction",
    "BuiltinFunctions",
    "builtin_specs",
    "calculate",
    "convert_time",
    "convert_units",
    "current_time",
    "default_builtins",
]

BuiltinFunction = Callable[..., Any]


class BuiltinFunctions:
    """Python callables, sync or async, that `builtin` executors name; called with the
    tool's (already validated) arguments as keyword arguments."""

    def __init__(self) -> None:
        self._functions: dict[str, BuiltinFunction] = {}

    def register(self, name: str, fn: BuiltinFunction) -> None:
        if name in self._functions:
            raise ValueError(f"builtin function {name!r} is already registered")
        self._functions[name] = fn

    def get(self, name: str) -> BuiltinFunction | None:
        return self._functions.get(name)

    def names(self) -> list[str]:
        return sorted(self._functions)


def builtin_specs() -> list[ToolSpec]:
    """Tool specs for the functions `default_builtins` registers."""
    return list(_SPECS)


def default_builtins() -> BuiltinFunctions:
    functions = BuiltinFunctions()
    for fn in (calculate, convert_units, current_time, convert_time):
        functions.register(fn.__name__, fn)
    return functions
