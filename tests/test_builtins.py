"""The offline builtin functions and the tool specs that describe them."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import Any

import msgspec
import pytest
from jsonschema import Draft202012Validator

from tools.builtins import (
    BuiltinFunctions,
    builtin_specs,
    calculate,
    convert_time,
    convert_units,
    current_time,
    default_builtins,
)
from tools.spec import BuiltinExecutor
from tools.validation import parse_spec

ALLOWED = (
    "use numbers, + - * / // % **, parentheses, the functions abs, cos, exp, log, max, min, "
    "round, sin, sqrt, tan and the constants pi, e"
)
KNOWN_UNITS = (
    "length: mm, cm, m, km, in, ft, yd, mi, nmi; mass: mg, g, kg, t, oz, lb, st; "
    "volume: ml, l, m3, tsp, tbsp, fl_oz, cup, pt, qt, gal; time: ms, s, min, h, d, wk, yr; "
    "speed: m/s, km/h, mph, kn, ft/s; data: bit, B, kB, MB, GB, TB, KiB, MiB, GiB, TiB, kbit, "
    "Mbit, Gbit; temperature: C, F, K"
)
ZONE_HINT = "use an IANA time zone name such as 'Europe/Paris', 'America/New_York' or 'UTC'"


# --- calculate ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "result"),
    [
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("2 ** 3 ** 2", 512),
        ("-2 ** 2", -4),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("-7 % 3", 2),
        ("sqrt(1764)", 42.0),
        ("max(1, 5, 3) - min(4, 2)", 3),
        ("round(3.14159, 2)", 3.14),
        ("abs(-3) + log(e) + cos(0)", 5.0),
        ("log(1000, 10)", 2.9999999999999996),
        ("2 * pi", 2 * math.pi),
    ],
)
def test_calculate_evaluates_arithmetic_exactly(expression: str, result: float) -> None:
    assert calculate(expression) == {"expression": expression, "result": result}


@pytest.mark.parametrize(
    ("expression", "error"),
    [
        ("__import__('os')", f"function '__import__' is not allowed; {ALLOWED}"),
        ("(1).real", f"attribute access is not allowed; {ALLOWED}"),
        ("().__class__", f"attribute access is not allowed; {ALLOWED}"),
        ("[1][0]", f"indexing is not allowed; {ALLOWED}"),
        ("open", f"unknown name 'open'; {ALLOWED}"),
        ("'a' * 3", f"'a' is not a number; {ALLOWED}"),
        ("lambda: 1", f"lambda is not allowed; {ALLOWED}"),
        ("1 < 2", f"comparison is not allowed; {ALLOWED}"),
        ("2 +", f"not an arithmetic expression: invalid syntax; {ALLOWED}"),
    ],
)
def test_calculate_refuses_anything_but_arithmetic(expression: str, error: str) -> None:
    with pytest.raises(ValueError) as caught:
        calculate(expression)
    assert str(caught.value) == error


def test_calculate_refuses_a_huge_exponent_before_computing_it() -> None:
    with pytest.raises(ValueError) as caught:
        calculate("9 ** 9 ** 9")
    assert str(caught.value) == (
        "'9 ** 9 ** 9' is too large to compute: integer results are limited to 4096 bits "
        "(about 1233 digits)"
    )


def test_calculate_refuses_a_long_expression() -> None:
    with pytest.raises(ValueError) as caught:
        calculate("1+" * 250 + "1")
    assert str(caught.value) == "expression is 501 characters long; the limit is 500"


@pytest.mark.parametrize(
    ("expression", "error"),
    [
        ("1 / 0", "cannot evaluate '1 / 0': division by zero"),
        ("sqrt(-1)", "cannot evaluate 'sqrt(-1)': math domain error"),
        ("exp(1000)", "cannot evaluate 'exp(1000)': math range error"),
        ("(-8) ** 0.5", "'(-8) ** 0.5' has no finite real result"),
        ("1e308 * 10", "'1e308 * 10' has no finite real result"),
    ],
)
def test_calculate_explains_arithmetic_errors(expression: str, error: str) -> None:
    with pytest.raises(ValueError) as caught:
        calculate(expression)
    assert str(caught.value) == error


# --- convert_units -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "source", "target", "result"),
    [
        (100, "C", "F", 212.0),
        (32, "F", "C", 0.0),
        (0, "K", "C", -273.15),
        (1, "mile", "m", 1609.344),
        (12, "in", "ft", 1.0),
        (2.5, "miles", "km", 4.02336),
        (1, "lb", "g", 453.59237),
        (1, "gal", "l", 3.785411784),
        (90, "min", "h", 1.5),
        (60, "mph", "km/h", 96.56064),
        (1, "GiB", "MiB", 1024.0),
        (8, "Mbit", "MB", 1.0),
    ],
)
def test_convert_units_is_exact(value: float, source: str, target: str, result: float) -> None:
    assert convert_units(value, source, target)["result"] == result


def test_convert_units_names_the_canonical_units_and_quantity() -> None:
    assert convert_units(100, "Celsius", "fahrenheit") == {
        "value": 100,
        "from_unit": "C",
        "to_unit": "F",
        "quantity": "temperature",
        "result": 212.0,
    }


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            (1, "kg", "m"),
            "cannot convert kg (mass) to m (length); both units must measure the same quantity",
        ),
        (
            (1, "C", "mi"),
            "cannot convert C (temperature) to mi (length); "
            "both units must measure the same quantity",
        ),
        ((1, "furlong", "m"), f"unknown unit 'furlong'; known units: {KNOWN_UNITS}"),
        ((-300, "C", "K"), "-300 C is below absolute zero"),
    ],
)
def test_convert_units_explains_what_it_cannot_do(args: tuple[Any, ...], error: str) -> None:
    with pytest.raises(ValueError) as caught:
        convert_units(*args)
    assert str(caught.value) == error


# --- current_time, convert_time ----------------------------------------------------------------

ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$")


def test_current_time_gives_iso_time_with_the_zone_and_its_offset() -> None:
    now = current_time("Asia/Kolkata")

    assert ISO_WITH_OFFSET.match(now["time"])
    assert datetime.fromisoformat(now["time"]).utcoffset() == timedelta(hours=5, minutes=30)
    assert (now["time_zone"], now["utc_offset"], now["abbreviation"]) == (
        "Asia/Kolkata",
        "+05:30",
        "IST",
    )
    assert now["weekday"] == datetime.fromisoformat(now["time"]).strftime("%A")


def test_current_time_defaults_to_utc_and_accepts_any_case() -> None:
    assert (current_time()["time_zone"], current_time()["utc_offset"]) == ("UTC", "+00:00")
    assert current_time("europe/paris")["time_zone"] == "Europe/Paris"


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../etc/passwd", ""])
def test_current_time_rejects_an_unknown_zone(zone: str) -> None:
    with pytest.raises(ValueError) as caught:
        current_time(zone)
    assert str(caught.value) == f"unknown time zone {zone!r}; {ZONE_HINT}"


def test_convert_time_moves_a_wall_clock_time_between_zones() -> None:
    moved = convert_time("2025-03-14T15:00", "Asia/Tokyo", "Europe/London")

    assert moved == {
        "time": "2025-03-15T00:00:00+09:00",
        "time_zone": "Asia/Tokyo",
        "utc_offset": "+09:00",
        "abbreviation": "JST",
        "weekday": "Saturday",
    }


def test_convert_time_uses_an_offset_written_in_the_time() -> None:
    moved = convert_time("2025-07-01T12:00:00-04:00", "UTC", from_zone="Asia/Tokyo")

    assert moved["time"] == "2025-07-01T16:00:00+00:00"


def test_convert_time_rejects_a_time_that_is_not_iso() -> None:
    with pytest.raises(ValueError) as caught:
        convert_time("3pm", "UTC")
    assert str(caught.value) == (
        "time '3pm' is not ISO 8601; write it like '2025-03-14T15:30' "
        "or '2025-03-14T15:30:00+01:00'"
    )


# --- registry and specs ------------------------------------------------------------------------


def test_a_name_can_be_registered_once() -> None:
    functions = BuiltinFunctions()
    functions.register("calculate", calculate)

    with pytest.raises(ValueError) as caught:
        functions.register("calculate", convert_units)
    assert str(caught.value) == "builtin function 'calculate' is already registered"
    assert (functions.get("calculate"), functions.get("nope")) == (calculate, None)


def test_every_builtin_spec_is_valid_and_names_a_registered_function() -> None:
    functions = default_builtins()
    specs = builtin_specs()

    assert [s.name for s in specs] == ["calculate", "convert_units", "current_time", "convert_time"]
    for spec in specs:
        assert parse_spec(msgspec.to_builtins(spec)) == spec
        assert spec.executor == BuiltinExecutor(function=spec.name)
        assert functions.get(spec.name) is not None
        assert (spec.namespace, spec.policy.idempotent) == ("builtin", True)
        assert 3 <= len(spec.examples) <= 5
        assert spec.parameters["additionalProperties"] is False
        assert all("description" in p for p in spec.parameters["properties"].values())


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("calculate", {"expression": "1 + 1"}),
        ("convert_units", {"value": 1, "from_unit": "km", "to_unit": "m"}),
        ("current_time", {"time_zone": "Asia/Tokyo"}),
        ("convert_time", {"time": "2025-03-14T15:00", "to_zone": "Asia/Tokyo"}),
    ],
)
def test_builtin_output_matches_its_output_schema(name: str, arguments: dict[str, Any]) -> None:
    [spec] = [s for s in builtin_specs() if s.name == name]
    fn = default_builtins().get(name)
    assert fn is not None and spec.output_schema is not None

    Draft202012Validator(spec.parameters).validate(arguments)
    Draft202012Validator(spec.output_schema).validate(fn(**arguments))
