"""Logging for the worker: JSON lines or plain text, written by a thread, never by the loop.

`KCS_LOG_FORMAT=json` writes one JSON object per record: `time`, `level`, `logger`,
`message`, and the fields a call passes with `extra=` (the connection logs' `exchange`,
`region`, `request_type`, `phase`, `symbol`), formatted by python-json-logger. `text` is
for a terminal; empty picks text when stderr is a terminal and JSON otherwise.

Every record goes through a `QueueHandler` to a `QueueListener` thread that formats and
writes it, so a slow stderr (a pipe, a container log driver) never blocks the event loop.
Faust installs it: `logging_config()` is the app's `logging_config` (merged with Faust's
own, so `-l info` still sets the level).
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

__all__ = ["FORMATS", "log_format", "logging_config", "queue_handler", "formatter"]

FORMATS = ("json", "text")
TEXT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
# Fields of a record that are not the caller's `extra=`.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_listener: logging.handlers.QueueListener | None = None


def log_format(value: str, stream: Any = None) -> str:
    """The KCS_LOG_FORMAT value as json or text (refused, with its name, otherwise)."""
    chosen = value.strip().lower()
    if not chosen:
        stream = stream if stream is not None else sys.stderr
        return "text" if getattr(stream, "isatty", lambda: False)() else "json"
    if chosen not in FORMATS:
        raise ValueError(f"KCS_LOG_FORMAT={value!r}: use json or text (or leave it empty)")
    return chosen


class TextFormatter(logging.Formatter):
    """Faust's usual line, with the `extra=` fields appended as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        return line


def formatter(kind: str) -> logging.Formatter:
    if kind == "json":
        return JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                             rename_fields={"asctime": "time", "levelname": "level",
                                            "name": "logger"},
                             datefmt="%Y-%m-%dT%H:%M:%S%z")
    return TextFormatter(TEXT)


def queue_handler(kind: str = "json") -> logging.Handler:
    """A QueueHandler whose listener thread writes to stderr in `kind` (started once)."""
    global _listener
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    out = logging.StreamHandler(sys.stderr)
    out.setFormatter(formatter(kind))
    if _listener is not None:
        _listener.stop()
    _listener = logging.handlers.QueueListener(records, out, respect_handler_level=True)
    _listener.start()
    atexit.register(_stop_listener)
    return logging.handlers.QueueHandler(records)


def _stop_listener() -> None:
    """Write what is still queued (at exit)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


def logging_config(kind: str) -> dict[str, Any]:
    """Faust's `logging_config`: the root logger writes through `queue_handler(kind)`."""
    return {
        "version": 1,
        "merge": True,  # keep Faust's level (-l) and formatters; replace the root handler
        "disable_existing_loggers": False,
        "handlers": {"queue": {"()": f"{__name__}.queue_handler", "kind": kind}},
        "root": {"handlers": ["queue"]},
    }
