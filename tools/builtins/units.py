"""The `convert_units` builtin: exact conversions between units of one quantity."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

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
