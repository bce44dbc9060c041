"""What the service logs and how: one format; libraries' chatter left out, so start-up says
only what a person needs (where the data lives, the admin key, where it listens); and lines
that cannot be forged (a control character from request input is written escaped, so one
record is always one line)."""

from __future__ import annotations

import logging
import re

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CHATTY_LOGGERS = ("httpx", "httpcore", "pgserver", "sentence_transformers")
"""Libraries that log at INFO what the service's own lines say better, or need not say:
httpx and httpcore every outgoing request with its URL (which may carry a credential in its
query; the calls are in the turn's records and traces, and on a turn of eight parallel calls
the lines took a tenth of the service's CPU), pgserver initdb's whole output and every pg_ctl
command line, sentence-transformers the path it loads the model from."""
_UVICORN_CHATTER = frozenset({
    "Started server process [%d]", "Waiting for application startup.",
    "Application startup complete.", "Waiting for application shutdown.",
    "Application shutdown complete.",
})
_UVICORN_LISTENING = "Uvicorn running on %s://%s:%d (Press CTRL+C to quit)"
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


def chatty_level(level: str) -> str:
    """The level of CHATTY_LOGGERS under LOG_LEVEL `level`: WARNING, unless DEBUG (everything)
    or ERROR (less still) is asked for."""
    return level if level in ("DEBUG", "ERROR") else "WARNING"


class ServerLines(logging.Filter):
    """uvicorn's own lines on "uvicorn.error": its start-up and shutdown steps left out, and
    where it listens said with where the docs are."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str):
            return True
        if record.msg in _UVICORN_CHATTER:
            return False
        if record.msg == _UVICORN_LISTENING and isinstance(record.args, tuple):
            scheme, host, port = record.args
            url = f"{scheme}://{host}:{port}"
            record.msg, record.args = "listening on %s (API docs at %s/docs)", (url, url)
            record.__dict__.pop("color_message", None)
        return True


def quiet_server_start() -> None:
    """Put ServerLines on uvicorn's logger (once), and keep model loading from drawing a
    progress bar."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    server = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, ServerLines) for f in server.filters):
        server.addFilter(ServerLines())
