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
    handler.addFilter(RateLimit())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    # aiohttp's access log would log every scrape; operators have Prometheus for that.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequests) for f in server_log.filters):
        server_log.addFilter(MalformedRequests())


# --- rate limiting ----------------------------------------------------------------------

# Fields that differ between otherwise identical lines and so do not make a line new.
_VOLATILE_FIELDS = frozenset({"probe_id", "duration_seconds", "remote", "count"})
RATE_LIMIT_INTERVAL = 10.0


class RateLimit(logging.Filter):
    """Lets the first of a run of identical lines through, then one per ``interval`` seconds
    with ``repeated=N``: how many identical lines were dropped since the last one shown.

    Only records marked ``extra={"rate_limited": True}`` are limited (what a flood can repeat:
    accept failures, malformed requests, exhaustion); two lines are identical when their
    level, message and fields (but :data:`_VOLATILE_FIELDS`) are.
    """

    def __init__(self, interval: float = RATE_LIMIT_INTERVAL, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self._seen: dict[tuple[Any, ...], list[float | int]] = {}  # key -> [shown at, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "rate_limited", False):
            return True
        fields = getattr(record, "fields", None) or {}
        key = (record.levelno, record.name, record.getMessage(),
               tuple(sorted((k, str(v)) for k, v in fields.items() if k not in _VOLATILE_FIELDS)))
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.interval:
            seen[1] += 1
            return False
        dropped = int(seen[1]) if seen is not None else 0
        if len(self._seen) > 1000:  # a bound on distinct keys: forget the oldest
            self._seen.pop(next(iter(self._seen)))
        self._seen[key] = [now, 0]
        if dropped:
            record.fields = {**fields, "repeated": dropped}
        return True


class MalformedRequests(logging.Filter):
    """aiohttp logs a request it cannot parse (a request line over 8,190 bytes, a bad header)
    as an ERROR with a traceback, before any authentication: anyone who can connect could
    fill the log. Such a record becomes one rate-limited WARN line naming the problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or type(exc).__module__ != "aiohttp.http_exceptions":
            return True
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else ""
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg, record.args, record.exc_info, record.exc_text = "malformed HTTP request", (), None, None
        detail = " ".join(str(getattr(exc, "message", "") or exc).split())
        record.fields = {"err": f"{type(exc).__name__}: {detail[:200]}", "remote": str(remote)}
        record.rate_limited = True
        return True
