"""Structured logging in logfmt or JSON, as Prometheus exporters log.

Callers pass fields as ``extra={"fields": {...}}``; each becomes a key in the line.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from ssl_exporter.redact import redact_urls

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    out: dict[str, Any] = {
        "ts": f"{ts}.{int(record.msecs):03d}Z",
        "level": record.levelname.lower().replace("warning", "warn"),
        "caller": f"{record.module}:{record.lineno}",
        "msg": record.getMessage(),
    }
    out.update(getattr(record, "fields", {}) or {})
    if record.exc_info:
        out["err"] = logging.Formatter().formatException(record.exc_info)
    # Whatever a field quotes, a URL's credentials never reach the log (ssl_exporter.redact).
    return {key: redact_urls(value) if isinstance(value, str) else value for key, value in out.items()}


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in _fields(record).items())


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


# Control characters are escaped so that a hostile peer's text cannot forge log lines.
_LOGFMT_ESCAPES = str.maketrans({
    **{chr(c): f"\\u{c:04x}" for c in [*range(32), 127]},
    "\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t",
})


def _logfmt_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    # Quote anything that could split the line into more keys or more lines.
    if text and text.isprintable() and not any(ch in text for ch in ' ="\\'):
        return text
    return '"' + text.translate(_LOGFMT_ESCAPES) + '"'


def setup(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Send every log line to ``stream`` (standard error) in ``fmt``, from ``level`` up."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    # aiohttp's access log would log every scrape; operators have Prometheus for that.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
