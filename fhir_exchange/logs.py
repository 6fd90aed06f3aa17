"""Logging: one JSON object per line (or plain text), each carrying the id of the request it belongs to.

Operators feed these lines to a log collector, so they are structured and free of what must not leave
the server: the server's own log calls name interactions, types, statuses and durations, never a
resource's content, a token or a patient identifier; the access line (:mod:`fhir_exchange.api.telemetry`)
logs the path without its query string, where search and conditional-write criteria (identifiers,
names, birth dates) travel. uvicorn's own access log, which prints the query string, is turned off by
``serve``.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

# The request being answered in this task (X-Request-Id, taken from the caller or made up): every log
# line written while answering it carries it, so one request's lines can be found among many.
REQUEST_ID: ContextVar[str | None] = ContextVar("fhir_exchange_request_id", default=None)

FORMATS = ("json", "text")

# Attributes every LogRecord has; anything else was passed with ``extra=`` and becomes a field.
# uvicorn adds ``color_message`` (its message with terminal colours) to some records: not a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName", "color_message"}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "request_id", ...extra fields, "error"}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """``time level logger [request id] message key=value ...`` for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD)
        request_id = REQUEST_ID.get()
        prefix = f"[{request_id}] " if request_id else ""
        head, sep, rest = line.partition(f"{record.name} ")
        return f"{head}{sep}{prefix}{rest}" + (f" {fields}" if fields else "")


def configure(level: str = "info", format: str = "json", stream: TextIO | None = None) -> None:
    """Route every logger (ours, uvicorn's, the libraries') through one handler on the root logger."""
    if format not in FORMATS:
        raise ValueError(f"unknown log format {format!r} (use {' or '.join(FORMATS)})")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    # uvicorn's "trace" is below debug; the standard library does not know it.
    root.setLevel("DEBUG" if level.lower() == "trace" else level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # Its lines carry the query string (patient identifiers in search criteria): ours replace them.
    logging.getLogger("uvicorn.access").disabled = True
