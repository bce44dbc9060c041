"""The `current_time` and `convert_time` builtins: clock times in IANA time zones."""

from __future__ import annotations

import functools
import zoneinfo
from datetime import datetime, timedelta
from typing import Any

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
