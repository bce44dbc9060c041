"""The tool specs that describe the builtin functions to the model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tools.builtins.calculator import MAX_EXPRESSION_LENGTH, calculate
from tools.builtins.time_zones import convert_time, current_time
from tools.builtins.units import convert_units
from tools.spec import BuiltinExecutor, ToolPolicy, ToolSpec

if TYPE_CHECKING:
    from tools.builtins import BuiltinFunction

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
