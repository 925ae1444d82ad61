"""Structured logs for the serving process: one JSON object per line.

Every line carries ``time`` (UTC, ISO-8601), ``level``, ``logger``, ``message`` and, when emitted while
a request is being served, that request's ``request_id``; access lines add ``model_version``,
``method``, ``path``, ``status`` and ``latency_ms``. Nothing here runs at import: the CLI (or whoever
builds the HTTP app) calls :func:`configure_json_logging` once.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

__all__ = ["JsonFormatter", "configure_json_logging", "request_id_var"]

#: The request being served in this context (set by the HTTP app's middleware).
request_id_var: ContextVar[str | None] = ContextVar("loopml_request_id", default=None)

_EXTRA = ("request_id", "model_version", "method", "path", "status", "latency_ms", "error_type", "previous_version",
          "ref", "reason")


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line (extras named in ``_EXTRA`` become top-level keys)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        rid = getattr(record, "request_id", None) or request_id_var.get()
        if rid is not None:
            doc["request_id"] = rid
        for key in _EXTRA[1:]:
            value = getattr(record, key, None)
            if value is not None:
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_json_logging(level: int | str = logging.INFO, *, stream: IO[str] | None = None) -> logging.Handler:
    """Send the ``loopml`` and ``uvicorn`` loggers to ``stream`` (default stderr) as JSON lines.

    Returns the handler so that a caller (a test) can remove it again.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("loopml", "uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers = [h for h in lg.handlers if not getattr(h, "_loopml_json", False)]
        lg.addHandler(handler)
        lg.setLevel(level)
        lg.propagate = False
    handler._loopml_json = True  # type: ignore[attr-defined]  # so a second call replaces, not duplicates
    return handler
