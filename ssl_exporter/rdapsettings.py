"""The ``rdap:`` settings of a module (docs/domains.md) and the bootstrap registry's shape.

Pure values: config.py parses ``rdap:`` with :func:`parse_config`; ssl_exporter.rdap looks
domains up with them. A ``bootstrap_file`` is read and parsed here, at load, so a bad file
is a configuration error and not a probe failure.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlsplit

from ssl_exporter import yamlrules as rules
from ssl_exporter.durations import format_duration
from ssl_exporter.sources import SourceError, read_regular
from ssl_exporter.targets import TargetError, normalise_name
from ssl_exporter.yamlrules import ConfigError

# The IANA registry of RDAP servers for DNS names (RFC 9224), as whodap and whoisit name it.
IANA_BOOTSTRAP_URL = "https://data.iana.org/rdap/dns.json"
MAX_BOOTSTRAP_BYTES = 4 * 1024 * 1024  # the IANA file is about 40 KB


@dataclass(frozen=True)
class Bootstrap:
    """The DNS bootstrap registry: domain suffix (ASCII, lower case) -> service URLs."""

    services: Mapping[str, tuple[str, ...]]
    publication: str = ""

    def lookup(self, domain: str) -> tuple[str, tuple[str, ...]] | None:
        """The longest suffix of ``domain`` with an entry (RFC 9224 section 4)."""
        labels = domain.split(".")
        for start in range(len(labels)):
            suffix = ".".join(labels[start:])
            if suffix in self.services:
                return suffix, self.services[suffix]
        return None


def parse_bootstrap(data: bytes | str) -> Bootstrap:
    """Parse an RFC 9224 registry file; ValueError names what is wrong."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    return bootstrap_from(doc)


def bootstrap_from(doc: Any) -> Bootstrap:
    """The registry from its parsed JSON document; ValueError names what is wrong."""
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), list):
        raise ValueError("not an RDAP bootstrap registry (no services list)")
    services: dict[str, tuple[str, ...]] = {}
    for entry in doc["services"]:
        if (not isinstance(entry, list) or len(entry) < 2 or not isinstance(entry[0], list)
                or not isinstance(entry[1], list)):
            raise ValueError("a service is not [[suffixes], [URLs]]")
        urls = tuple(u for u in entry[1] if isinstance(u, str) and u.startswith(("https://", "http://")))
        for suffix in entry[0]:
            if isinstance(suffix, str) and suffix.strip("."):
                services[suffix.strip(".").lower()] = urls
    publication = doc.get("publication")
    return Bootstrap(services, publication if isinstance(publication, str) else "")


@dataclass(frozen=True)
class RDAPConfig:
    """``rdap:`` of a module (docs/domains.md)."""

    bootstrap_file: str | None = None
    bootstrap_url: str | None = None
    bootstrap_refresh: float = 86400.0
    servers: Mapping[str, str] = field(default_factory=dict)  # suffix -> base URL
    cache_ttl: float = 6 * 3600.0
    error_retry: float = 900.0
    max_redirects: int = 3
    max_response_bytes: int = 1024 * 1024
    follow_referral: bool = True
    allow_http: bool = False
    host_concurrency: int = 2
    proxy_url: str | None = field(default=None, repr=False)
    expiry_override: Mapping[str, float] = field(default_factory=dict)  # domain -> timestamp
    # The bootstrap_file, parsed at load.
    file_bootstrap: Bootstrap | None = field(default=None, compare=False, repr=False)

    def as_dict(self, redact: Callable[[str | None], str | None]) -> dict[str, Any]:
        def shown(seconds: float) -> str:
            return format_duration(seconds, style="config")

        out: dict[str, Any] = {
            "bootstrap_file": self.bootstrap_file, "bootstrap_url": self.bootstrap_url,
            "bootstrap_refresh": shown(self.bootstrap_refresh), "servers": dict(self.servers) or None,
            "cache_ttl": shown(self.cache_ttl), "error_retry": shown(self.error_retry),
            "max_redirects": self.max_redirects, "max_response_bytes": self.max_response_bytes,
            "follow_referral": self.follow_referral, "allow_http": self.allow_http,
            "host_concurrency": self.host_concurrency, "proxy_url": redact(self.proxy_url),
            "expiry_override": {d: iso_time(t) for d, t in self.expiry_override.items()} or None,
        }
        return {k: v for k, v in out.items() if v is not None}

    @property
    def cache_key(self) -> tuple[Any, ...]:
        """What in ``rdap:`` makes two modules' answers for a domain interchangeable (the
        module's target policy and trust settings count too: see :func:`ssl_exporter.rdap.lookup`)."""
        return (self.bootstrap_url, self.bootstrap_file, tuple(sorted(self.servers.items())),
                self.follow_referral, self.allow_http, self.proxy_url, self.max_redirects,
                self.max_response_bytes)


RDAP_KEYS = ("bootstrap_file", "bootstrap_url", "bootstrap_refresh", "servers", "cache_ttl", "error_retry",
             "max_redirects", "max_response_bytes", "follow_referral", "allow_http", "host_concurrency",
             "proxy_url", "expiry_override")


def parse_config(raw: Any, path: str, base_dir: str) -> RDAPConfig:
    """Parse ``rdap:``; ConfigError names the key path of a mistake."""
    raw = {} if raw is None else raw
    rules.expect_mapping(raw, path)
    rules.reject_unknown(raw, set(RDAP_KEYS), path)
    values: dict[str, Any] = {}
    for key in ("bootstrap_refresh", "cache_ttl", "error_retry"):
        if key in raw:
            values[key] = rules.parse_timeout(raw[key], f"{path}.{key}")
    for key, low in (("max_redirects", 0), ("max_response_bytes", 1024), ("host_concurrency", 1)):
        number = rules.get_typed(raw, key, int, path, None)
        if number is not None:
            if number < low:
                raise ConfigError(f"{path}.{key}: must be at least {low}")
            values[key] = number
    for key in ("follow_referral", "allow_http"):
        flag = rules.get_typed(raw, key, bool, path, None)
        if flag is not None:
            values[key] = flag
    allow_http = values.get("allow_http", False)
    bootstrap_url = rules.get_typed(raw, "bootstrap_url", str, path, None)
    if bootstrap_url is not None:
        _check_url(bootstrap_url, f"{path}.bootstrap_url", allow_http)
    bootstrap_file = rules.get_typed(raw, "bootstrap_file", str, path, None)
    file_bootstrap = None
    if bootstrap_file is not None:
        bootstrap_file = os.path.join(base_dir, os.path.expanduser(bootstrap_file))
        try:  # a regular file only: a FIFO here would hold this load and every later one
            data, _ = read_regular(bootstrap_file, MAX_BOOTSTRAP_BYTES)
        except SourceError as exc:
            raise ConfigError(f"{path}.bootstrap_file: cannot read {bootstrap_file}: {exc}") from None
        try:
            file_bootstrap = parse_bootstrap(data)
        except ValueError as exc:
            raise ConfigError(f"{path}.bootstrap_file: {bootstrap_file}: {exc}") from None
    servers = rules.get_typed(raw, "servers", dict, path, None) or {}
    parsed_servers = {}
    for suffix, url in servers.items():
        key = f"{path}.servers.{suffix}"
        if not isinstance(suffix, str) or not isinstance(url, str):
            raise ConfigError(f"{key}: expected a TLD mapped to an RDAP base URL")
        _check_url(url, key, allow_http)
        parsed_servers[_suffix(suffix, key)] = url
    proxy_url = rules.get_typed(raw, "proxy_url", str, path, None)
    if proxy_url is not None:
        rules.check_proxy_url(proxy_url, f"{path}.proxy_url")
    overrides = rules.get_typed(raw, "expiry_override", dict, path, None) or {}
    parsed_overrides = {}
    for name, when in overrides.items():
        key = f"{path}.expiry_override.{name}"
        domain = _suffix(str(name), key)
        stamp = _override_time(when)
        if stamp is None:
            raise ConfigError(f"{key}: expected a date like 2031-05-01 or 2031-05-01T12:00:00Z")
        parsed_overrides[domain] = stamp
    return RDAPConfig(bootstrap_file=bootstrap_file, bootstrap_url=bootstrap_url, servers=parsed_servers,
                      proxy_url=proxy_url, expiry_override=parsed_overrides, file_bootstrap=file_bootstrap,
                      **values)


def _check_url(url: str, path: str, allow_http: bool) -> None:
    parts = urlsplit(url)
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise ConfigError(f"{path}: {url!r} is not an https:// URL" + ("" if allow_http else
                                                                         " (allow_http is off)"))
    if not parts.hostname:
        raise ConfigError(f"{path}: {url!r} has no host")


def _suffix(name: str, path: str) -> str:
    try:
        return normalise_name(name.strip("."), name)
    except TargetError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _override_time(value: Any) -> float | None:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    return parse_time(value) if isinstance(value, str) else None


def parse_time(text: Any) -> float | None:
    """An RFC 3339 date-time (RDAP eventDate) as a timestamp; None when it is not one."""
    if not isinstance(text, str) or not 10 <= len(text) <= 40:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.timestamp()
    except (OverflowError, ValueError):
        return None



def iso_time(timestamp: float) -> str:
    if not math.isfinite(timestamp):
        return str(timestamp)
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
