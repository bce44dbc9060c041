"""Offline functions the service can run in-process, and the tool specs that describe them."""

from __future__ import annotations

import ast
import functools
import math
import operator
import zoneinfo
from collections.abc import Callable
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

from tools.spec import BuiltinExecutor, ToolPolicy, ToolSpec

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


# --- calculate ---------------------------------------------------------------------------------

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


# --- convert_units -----------------------------------------------------------------------------

_F = Fraction
# Each quantity's units as (symbol, size in the quantity's base unit, other names).
_SCALES: dict[str, list[tuple[str, Fraction, tuple[str, ...]]]] = {
    "length": [
        ("mm", _F("0.001"), ("millimeter", "millimetre")),
        ("cm", _F("0.01"), ("centimeter", "centimetre")),
        ("m", _F(1), ("meter", "metre")),
        ("km", _F(1000), ("kilometer", "kilometre")),
        ("in", _F("0.0254"), ("inch", "inches")),
        ("ft", _F("0.3048"), ("foot", "feet")),
        ("yd", _F("0.9144"), ("yard",)),
        ("mi", _F("1609.344"), ("mile",)),
        ("nmi", _F(1852), ("nautical_mile",)),
    ],
    "mass": [
        ("mg", _F("0.000001"), ("milligram",)),
        ("g", _F("0.001"), ("gram",)),
        ("kg", _F(1), ("kilogram",)),
        ("t", _F(1000), ("tonne", "metric_ton")),
        ("oz", _F("0.028349523125"), ("ounce",)),
        ("lb", _F("0.45359237"), ("pound", "lbs")),
        ("st", _F("6.35029318"), ("stone",)),
    ],
    "volume": [
        ("ml", _F("0.001"), ("milliliter", "millilitre")),
        ("l", _F(1), ("liter", "litre")),
        ("m3", _F(1000), ("cubic_meter", "cubic_metre")),
        ("tsp", _F("0.00492892159375"), ("teaspoon",)),
        ("tbsp", _F("0.01478676478125"), ("tablespoon",)),
        ("fl_oz", _F("0.0295735295625"), ("fluid_ounce",)),
        ("cup", _F("0.2365882365"), ()),
        ("pt", _F("0.473176473"), ("pint",)),
        ("qt", _F("0.946352946"), ("quart",)),
        ("gal", _F("3.785411784"), ("gallon",)),
    ],
    "time": [
        ("ms", _F("0.001"), ("millisecond",)),
        ("s", _F(1), ("second", "sec")),
        ("min", _F(60), ("minute",)),
        ("h", _F(3600), ("hour", "hr")),
        ("d", _F(86400), ("day",)),
        ("wk", _F(604800), ("week",)),
        ("yr", _F(31557600), ("year",)),  # Julian year, 365.25 days
    ],
    "speed": [
        ("m/s", _F(1), ("meters_per_second",)),
        ("km/h", _F(1000, 3600), ("kph", "kmh")),
        ("mph", _F("0.44704"), ("miles_per_hour",)),
        ("kn", _F(1852, 3600), ("knot",)),
        ("ft/s", _F("0.3048"), ("feet_per_second",)),
    ],
    "data": [
        ("bit", _F(1, 8), ()),
        ("B", _F(1), ("byte",)),
        ("kB", _F(10**3), ("kilobyte",)),
        ("MB", _F(10**6), ("megabyte",)),
        ("GB", _F(10**9), ("gigabyte",)),
        ("TB", _F(10**12), ("terabyte",)),
        ("KiB", _F(2**10), ("kibibyte",)),
        ("MiB", _F(2**20), ("mebibyte",)),
        ("GiB", _F(2**30), ("gibibyte",)),
        ("TiB", _F(2**40), ("tebibyte",)),
        ("kbit", _F(10**3, 8), ("kilobit",)),
        ("Mbit", _F(10**6, 8), ("megabit",)),
        ("Gbit", _F(10**9, 8), ("gigabit",)),
    ],
}
_TEMPERATURES: list[tuple[str, tuple[str, ...]]] = [
    ("C", ("celsius", "°c", "degc")),
    ("F", ("fahrenheit", "°f", "degf")),
    ("K", ("kelvin",)),
]
_ABSOLUTE_ZERO_C = Fraction("273.15")


def _unit_names() -> dict[str, tuple[str, str]]:
    """Every accepted spelling, lower-cased, to (quantity, symbol); names also as plurals."""
    names: dict[str, tuple[str, str]] = {}
    entries = [(q, s, aliases) for q, units in _SCALES.items() for s, _, aliases in units]
    entries += [("temperature", s, aliases) for s, aliases in _TEMPERATURES]
    for quantity, symbol, aliases in entries:
        names[symbol.lower()] = (quantity, symbol)
        for alias in aliases:
            names[alias] = names[alias + "s"] = (quantity, symbol)
    return names


_UNIT_NAMES = _unit_names()
_SIZES = {symbol: size for units in _SCALES.values() for symbol, size, _ in units}
_KNOWN_UNITS = "; ".join(
    [f"{q}: {', '.join(s for s, _, _ in units)}" for q, units in _SCALES.items()]
    + [f"temperature: {', '.join(s for s, _ in _TEMPERATURES)}"]
)


def convert_units(value: float, from_unit: str, to_unit: str) -> dict[str, Any]:
    """Convert between units of one quantity, exactly (fractions), rounding once at the end."""
    (quantity, source), (target_quantity, target) = _unit(from_unit), _unit(to_unit)
    if quantity != target_quantity:
        raise ValueError(
            f"cannot convert {source} ({quantity}) to {target} ({target_quantity}); "
            "both units must measure the same quantity"
        )
    exact = Fraction(repr(value)) if isinstance(value, float) else Fraction(value)
    if quantity == "temperature":
        converted = _from_kelvin(_to_kelvin(exact, source), target)
    else:
        converted = exact * _SIZES[source] / _SIZES[target]
    return {
        "value": value,
        "from_unit": source,
        "to_unit": target,
        "quantity": quantity,
        "result": float(converted),
    }


def _unit(name: str) -> tuple[str, str]:
    found = _UNIT_NAMES.get(name.strip().lower())
    if found is None:
        raise ValueError(f"unknown unit {name!r}; known units: {_KNOWN_UNITS}")
    return found


def _to_kelvin(value: Fraction, unit: str) -> Fraction:
    kelvin = {
        "C": value + _ABSOLUTE_ZERO_C,
        "F": (value - 32) * Fraction(5, 9) + _ABSOLUTE_ZERO_C,
        "K": value,
    }[unit]
    if kelvin < 0:
        raise ValueError(f"{float(value):g} {unit} is below absolute zero")
    return kelvin


def _from_kelvin(kelvin: Fraction, unit: str) -> Fraction:
    celsius = kelvin - _ABSOLUTE_ZERO_C
    return {"C": celsius, "F": celsius * Fraction(9, 5) + 32, "K": kelvin}[unit]


# --- current_time, convert_time ----------------------------------------------------------------

_ZONE_HINT = "use an IANA time zone name such as 'Europe/Paris', 'America/New_York' or 'UTC'"


def current_time(time_zone: str = "UTC") -> dict[str, Any]:
    """The current time in an IANA time zone."""
    return _moment(datetime.now(_zone(time_zone)))


def convert_time(time: str, to_zone: str, from_zone: str = "UTC") -> dict[str, Any]:
    """A wall-clock time (ISO 8601) in one zone, as the same instant in another zone."""
    try:
        parsed = datetime.fromisoformat(time)
    except ValueError as exc:
        raise ValueError(
            f"time {time!r} is not ISO 8601; write it like '2025-03-14T15:30' "
            "or '2025-03-14T15:30:00+01:00'"
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_zone(from_zone))
    return _moment(parsed.astimezone(_zone(to_zone)))


def _moment(moment: datetime) -> dict[str, Any]:
    offset = moment.utcoffset() or timedelta(0)
    return {
        "time": moment.isoformat(timespec="seconds"),
        "time_zone": str(moment.tzinfo),
        "utc_offset": _format_offset(offset),
        "abbreviation": moment.tzname(),
        "weekday": moment.strftime("%A"),
    }


def _format_offset(offset: timedelta) -> str:
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


def _zone(name: str) -> zoneinfo.ZoneInfo:
    key = _zone_keys().get(name.strip().lower())
    if key is None:
        raise ValueError(f"unknown time zone {name!r}; {_ZONE_HINT}")
    return zoneinfo.ZoneInfo(key)


@functools.cache
def _zone_keys() -> dict[str, str]:
    """Lower-cased zone names to their canonical spelling (so 'europe/paris' works too)."""
    return {key.lower(): key for key in zoneinfo.available_timezones() | {"UTC"}}


# --- tool specs --------------------------------------------------------------------------------

_POLICY = ToolPolicy(timeout_s=5.0, max_retries=0, idempotent=True)


def _spec(
    fn: BuiltinFunction,
    description: str,
    properties: dict[str, Any],
    required: list[str],
    output: dict[str, Any],
    examples: list[str],
    tags: list[str],
) -> ToolSpec:
    return ToolSpec(
        name=fn.__name__,
        namespace="builtin",
        description=description,
        parameters={
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        },
        output_schema=output,
        tags=tags,
        examples=examples,
        executor=BuiltinExecutor(function=fn.__name__),
        policy=_POLICY,
    )


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties)}


_MOMENT_SCHEMA = _object(
    {
        "time": {"type": "string", "description": "ISO 8601 with the UTC offset"},
        "time_zone": {"type": "string"},
        "utc_offset": {"type": "string", "pattern": "^[+-][0-9]{2}:[0-9]{2}$"},
        "abbreviation": {"type": ["string", "null"]},
        "weekday": {"type": "string"},
    }
)
_ZONE = {"type": "string", "minLength": 1, "maxLength": 64}

_SPECS: list[ToolSpec] = [
    _spec(
        calculate,
        "Evaluate an arithmetic expression exactly as a calculator would: + - * / // % ** and "
        "parentheses, unary minus, the functions sqrt, sin, cos, tan, log (natural, or "
        "log(x, base)), exp, abs, round, min, max, and the constants pi and e. Angles are in "
        "radians. Use it for any arithmetic instead of computing in your head.",
        {
            "expression": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_EXPRESSION_LENGTH,
                "description": "The expression, e.g. '(3 + 4) * 2' or 'sqrt(2) * pi'.",
            }
        },
        ["expression"],
        _object({"expression": {"type": "string"}, "result": {"type": "number"}}),
        [
            "What is 17% of 2,340?",
            "Compute (3 + 4) * 2 ** 5",
            "What is the square root of 1764?",
            "sin(pi / 6) + log(100, 10)",
        ],
        ["math", "arithmetic", "calculator"],
    ),
    _spec(
        convert_units,
        "Convert a value between units of the same quantity: length (mm, cm, m, km, in, ft, "
        "yd, mi, nmi), mass (mg, g, kg, t, oz, lb, st), temperature (C, F, K), volume (ml, l, "
        "m3, tsp, tbsp, fl_oz, cup, pt, qt, gal; US measures), time (ms, s, min, h, d, wk, yr), "
        "speed (m/s, km/h, mph, kn, ft/s) and data sizes (bit, B, kB, MB, GB, TB, KiB, MiB, "
        "GiB, TiB, kbit, Mbit, Gbit). Full names such as 'miles' or 'celsius' work too.",
        {
            "value": {"type": "number", "description": "The amount to convert."},
            "from_unit": {
                "type": "string",
                "minLength": 1,
                "description": "The unit of `value`, e.g. 'mi', 'kg', 'C'.",
            },
            "to_unit": {
                "type": "string",
                "minLength": 1,
                "description": "The unit to convert to; must measure the same quantity.",
            },
        },
        ["value", "from_unit", "to_unit"],
        _object(
            {
                "value": {"type": "number"},
                "from_unit": {"type": "string"},
                "to_unit": {"type": "string"},
                "quantity": {"type": "string"},
                "result": {"type": "number"},
            }
        ),
        [
            "How many kilometres is 26.2 miles?",
            "Convert 350 F to Celsius",
            "How many pounds is 70 kg?",
            "How many MiB is 5 GB?",
        ],
        ["units", "conversion", "measurement"],
    ),
    _spec(
        current_time,
        "The current date and time in an IANA time zone (default UTC), as ISO 8601 with the "
        "UTC offset, plus the offset, the zone's abbreviation and the weekday.",
        {
            "time_zone": {
                **_ZONE,
                "description": "IANA zone name, e.g. 'Europe/Paris' or 'America/New_York'.",
            }
        },
        [],
        _MOMENT_SCHEMA,
        [
            "What time is it in Tokyo right now?",
            "What's today's date in UTC?",
            "Is it morning in New York at the moment?",
        ],
        ["time", "date", "clock", "time zone"],
    ),
    _spec(
        convert_time,
        "Convert a date and time from one IANA time zone to another (e.g. a meeting at 15:00 "
        "in London, in Tokyo time). A time with its own UTC offset ignores from_zone.",
        {
            "time": {
                "type": "string",
                "minLength": 1,
                "description": "ISO 8601 date and time, e.g. '2025-03-14T15:30'.",
            },
            "to_zone": {**_ZONE, "description": "IANA zone to convert to, e.g. 'Asia/Tokyo'."},
            "from_zone": {
                **_ZONE,
                "description": "IANA zone `time` is in when it has no offset; default UTC.",
            },
        },
        ["time", "to_zone"],
        _MOMENT_SCHEMA,
        [
            "What time is 3pm London time in Tokyo?",
            "Convert 2025-06-01T09:00 New York time to Berlin time",
            "When is 18:30 UTC in Los Angeles?",
        ],
        ["time", "time zone", "conversion"],
    ),
]


def builtin_specs() -> list[ToolSpec]:
    """Tool specs for the functions `default_builtins` registers."""
    return list(_SPECS)


def default_builtins() -> BuiltinFunctions:
    functions = BuiltinFunctions()
    for fn in (calculate, convert_units, current_time, convert_time):
        functions.register(fn.__name__, fn)
    return functions
