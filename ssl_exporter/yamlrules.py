"""Reading and checking configuration files: the rules every settings parser shares.

The configuration (config.py and the per-feature settings modules it uses) and the web
configuration (webconfig.py) follow the same rules and give the same messages: a file read
in one line of error, its YAML bounded (:mod:`ssl_exporter.safeyaml`), each value checked
with the key path in the message. Each validator takes the error class to raise, so the web
config raises its own. This module imports nothing of the exporter but leaf helpers.
"""

from __future__ import annotations

import math
import os
import re
import reprlib
import stat
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ssl_exporter import safeyaml
from ssl_exporter.printable import cut
from ssl_exporter.redact import redact_urls


class ConfigError(ValueError):
    """A configuration that cannot be used; the message starts with the key path.

    It is shown in the log, a failed reload's answer and by --config.check: credentials in
    any URL it quotes (a proxy_url, a kubeconfig's cluster server) are redacted here, once.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact_urls(a) if isinstance(a, str) else a for a in args))


# --- files and YAML ------------------------------------------------------------------------

MAX_CONFIG_BYTES = 16 * 1024 * 1024  # a real configuration file is a few KB


def read_text(path: str, error: type[ValueError] = ConfigError) -> str:
    """A configuration file's text, or ``error`` in one line (the config and the web config).

    A regular file, bounded in bytes, or a FIFO: unlike the files a configuration names
    (read with sources.read_regular, which refuses FIFOs), this one is named by the operator
    on the command line, where ``--config.file=<(make-config)`` is a real use, and a load
    runs in a thread of its own, so a FIFO nobody writes to holds that load, not the
    exporter (tests/test_lifecycle.py holds loads that way). A device (/dev/zero, a
    terminal) is refused before it is read.
    """
    try:
        with open(path, "rb") as f:
            if not (stat.S_ISREG(mode := os.fstat(f.fileno()).st_mode) or stat.S_ISFIFO(mode)):
                raise error(f"{path}: not a regular file")
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise error(f"{path}: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise error(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8 text") from None


def load_yaml(text: str, source: str, error: type[ValueError] = ConfigError) -> Any:
    """One YAML document, bounded (safeyaml.CONFIG_LIMITS); ``error`` with the problem and
    its place if bad. YAML's own message is not used: it quotes the file, secrets included."""
    return safeyaml.load_config(text, source, error)


# --- messages ------------------------------------------------------------------------------


def clip(text: str, limit: int = 100) -> str:
    """At most ``limit`` characters of ``text``, with a marker when cut."""
    return cut(text, limit, "...({cut} more characters)")


_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxdict, _SHOWN.maxstring, _SHOWN.maxother = 2, 4, 4, 80, 80


def shown(value: Any) -> str:
    """A value from the file, for a message: its repr, bounded however large or shared it is."""
    return clip(_SHOWN.repr(value))


def type_name(value: Any) -> str:
    """The YAML name of a value's type, for "expected X, got Y" messages."""
    names: dict[type, str] = {dict: "mapping", list: "list", str: "string", bool: "boolean"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


# --- values --------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Prometheus-style duration ("10s", "1m30s", "500ms") in seconds; ValueError if bad."""
    if not text or _DURATION.sub("", text) != "":
        raise ValueError(f"{shown(text)} is not a duration like 10s, 1m30s or 500ms")
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION.findall(text))


def parse_timeout(raw: Any, path: str) -> float:
    """A positive, finite duration (a number of seconds or "10s"); ConfigError if not."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):  # str() of a shared tree could be huge
        raise ConfigError(f"{path}: expected a duration like 10s, got {type_name(raw)}")
    try:
        seconds = float(raw) if isinstance(raw, int | float) else parse_duration(raw)
    except (ValueError, OverflowError) as exc:  # OverflowError: an integer beyond float range
        raise ConfigError(f"{path}: {exc}") from None
    if not math.isfinite(seconds):  # .nan, .inf
        raise ConfigError(f"{path}: must be a finite duration")
    if seconds <= 0:
        raise ConfigError(f"{path}: must be greater than 0")
    return seconds


def expect_mapping(raw: Any, path: str, error: type[ValueError] = ConfigError) -> None:
    if not isinstance(raw, Mapping):
        raise error(f"{path}: expected a mapping, got {type_name(raw)}")


def reject_unknown(raw: Mapping[str, Any], known: set[str], path: str, context: str = "") -> None:
    for key in raw:
        if key not in known:
            where = f"{path}.{clip(str(key))}" if path else clip(str(key))
            scope = f" {context}" if context else ""
            raise ConfigError(f"{where}: unknown key{scope} (expected one of {', '.join(sorted(known))})")


def get_typed(raw: Mapping[str, Any], key: str, kind: type, path: str, default: Any = None,
              error: type[ValueError] = ConfigError) -> Any:
    """``raw[key]`` if it is a ``kind`` (a bool is no int), ``default`` if absent."""
    value = raw.get(key, default)
    if value is None or value is default:
        return value
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise error(f"{path}.{key}: expected {kind.__name__}, got {type_name(value)}")
    return value


def check_readable(filename: str, path: str, error: type[ValueError] = ConfigError) -> None:
    """``error`` unless ``filename`` is a regular file this process can open."""
    try:
        # O_NONBLOCK: a FIFO or terminal named here must not hang the (re)load in open().
        fd = os.open(filename, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise error(f"{path}: file not found: {filename}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {filename}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
    finally:
        os.close(fd)
    if stat.S_ISDIR(mode):
        raise error(f"{path}: is a directory: {filename}")
    if not stat.S_ISREG(mode):  # a FIFO or device: reading it later would block or never end
        raise error(f"{path}: not a regular file: {filename}")


def check_proxy_url(url: str, path: str) -> None:
    """ConfigError unless ``url`` is http://host:port (the proxies the probers speak to)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if parts.scheme != "http":
        raise ConfigError(f"{path}: scheme {shown(parts.scheme)} is not supported, use http://")
    if not parts.hostname or not port:
        raise ConfigError(f"{path}: expected http://host:port")


def redact_url(url: str | None) -> str | None:
    """The URL with its user information redacted (ssl_exporter.redact: a lone user is a token too)."""
    return redact_urls(url) if url else url
