"""Log lines that cannot be forged: a control character that request input carried into a
message (a path with `%0A`, text from a model or a tool) is written escaped, so one record is
always one line."""

from __future__ import annotations

import logging
import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
LOGGERS = ("", "uvicorn.access", "uvicorn.error")
"""The loggers whose handlers write the service's lines: the root, and uvicorn's own."""


def escaped(text: str) -> str:
    """`a\\nb` -> `a\\x0ab`: control characters as escapes."""
    return _CONTROL.sub(lambda found: f"\\x{ord(found[0]):02x}", text)


class OneLine(logging.Filter):
    """Escapes what a record's message would print (tracebacks are formatted apart, as
    before). uvicorn's access records keep their arguments, each escaped: its formatter reads
    them one by one."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not _CONTROL.search(message):
            return True
        if isinstance(record.args, tuple) and record.name == "uvicorn.access":
            record.args = tuple(escaped(a) if isinstance(a, str) else a for a in record.args)
        else:
            record.msg, record.args = escaped(message), ()
        return True


ONE_LINE = OneLine()


def keep_lines_whole() -> None:
    """Put the filter on every handler of LOGGERS (once each); call it after the server has
    configured its logging."""
    for name in LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if ONE_LINE not in handler.filters:
                handler.addFilter(ONE_LINE)
