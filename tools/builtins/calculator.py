"""The `calculate` builtin: safe arithmetic by walking an expression's syntax tree."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

MAX_EXPRESSION_LENGTH = 500
# Bounds integer results so `9**9**9` is refused up front instead of hanging the thread.
MAX_RESULT_BITS = 4096

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "log": math.log,
    "exp": math.exp,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}
_ALLOWED = (
    "use numbers, + - * / // % **, parentheses, the functions "
    f"{', '.join(sorted(_FUNCTIONS))} and the constants {', '.join(_CONSTANTS)}"
)
_DESCRIBED = {
    ast.Attribute: "attribute access",
    ast.Subscript: "indexing",
    ast.Compare: "comparison",
    ast.BoolOp: "and/or",
    ast.Lambda: "lambda",
    ast.IfExp: "a conditional expression",
}


def calculate(expression: str) -> dict[str, Any]:
    """Evaluate an arithmetic expression by walking its syntax tree; nothing else can run."""
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise ValueError(
            f"expression is {len(expression)} characters long; the limit is {MAX_EXPRESSION_LENGTH}"
        )
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an arithmetic expression: {exc.msg}; {_ALLOWED}") from exc
    try:
        result = _evaluate(tree.body)
    except _Refused:
        raise
    except (ArithmeticError, TypeError, ValueError) as exc:
        raise ValueError(f"cannot evaluate {expression!r}: {exc}") from exc
    if isinstance(result, complex) or not math.isfinite(result):
        raise ValueError(f"{expression!r} has no finite real result")
    return {"expression": expression, "result": result}


class _Refused(ValueError):
    """The expression uses something outside the calculator's grammar or limits."""


def _evaluate(node: ast.expr) -> Any:
    match node:
        case ast.Constant(value=int() | float() as number) if not isinstance(number, bool):
            return number
        case ast.Constant(value=value):
            raise _Refused(f"{value!r} is not a number; {_ALLOWED}")
        case ast.Name(id=name) if name in _CONSTANTS:
            return _CONSTANTS[name]
        case ast.Name(id=name):
            raise _Refused(f"unknown name {name!r}; {_ALLOWED}")
        case ast.UnaryOp(op=op, operand=operand) if type(op) in _UNARY:
            return _UNARY[type(op)](_evaluate(operand))
        case ast.BinOp(left=left, op=op, right=right) if type(op) in _BINARY:
            return _binary(node, type(op), _evaluate(left), _evaluate(right))
        case ast.Call():
            return _call(node)
    what = _DESCRIBED.get(type(node), type(node).__name__)
    raise _Refused(f"{what} is not allowed; {_ALLOWED}")


def _binary(node: ast.expr, op: type[ast.operator], left: Any, right: Any) -> Any:
    if op is ast.Pow and _power_bits(left, right) > MAX_RESULT_BITS:
        raise _too_large(node)
    result = _BINARY[op](left, right)
    if isinstance(result, int) and result.bit_length() > MAX_RESULT_BITS:
        raise _too_large(node)
    return result


def _too_large(node: ast.expr) -> _Refused:
    return _Refused(
        f"{ast.unparse(node)!r} is too large to compute: integer results are limited to "
        f"{MAX_RESULT_BITS} bits (about {int(MAX_RESULT_BITS * math.log10(2))} digits)"
    )


def _power_bits(base: Any, exponent: Any) -> float:
    """Estimated size of an integer power; floats overflow on their own, quickly."""
    if not (isinstance(base, int) and isinstance(exponent, int)) or exponent <= 0:
        return 0
    return exponent * math.log2(abs(base)) if abs(base) > 1 else 0


def _call(node: ast.Call) -> Any:
    if not isinstance(node.func, ast.Name):
        what = _DESCRIBED.get(type(node.func), "calling an expression")
        raise _Refused(f"{what} is not allowed; {_ALLOWED}")
    name = node.func.id
    if name not in _FUNCTIONS:
        raise _Refused(f"function {name!r} is not allowed; {_ALLOWED}")
    if node.keywords:
        raise _Refused(f"{name}() takes positional arguments only")
    args = [_evaluate(arg) for arg in node.args]
    return _FUNCTIONS[name](*args)
