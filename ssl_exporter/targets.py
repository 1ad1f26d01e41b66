"""Parsing and validation of probe targets and verification names.

Accepted targets: ``host:port``, ``[v6addr]:port``, a bare host or IPv6 address (the
module's default port), or a URL ``scheme://host[:port]/path``. Internationalised names
are converted to their ASCII form (IDNA 2008 with UTS #46 mapping, as browsers do).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna

# Default ports of URL schemes; a URL with another scheme uses the module's default port.
_SCHEME_PORTS = {
    "https": 443,
    "wss": 443,
    "smtps": 465,
    "imaps": 993,
    "pop3s": 995,
    "ldaps": 636,
    "ftps": 990,
    "smtp": 25,
    "imap": 143,
    "pop3": 110,
    "ldap": 389,
    "ftp": 21,
    "postgres": 5432,
    "postgresql": 5432,
    "mysql": 3306,
    "xmpp": 5222,
    "nntp": 119,
    "sieve": 4190,
}

# A DNS label as it appears in certificates and internal names (underscore included).
_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")

# What the resolver reads as an IPv4 address besides a.b.c.d (inet_aton): "0", "127.1",
# "0x7f.1", "2130706433". Parsed here too, so that the target_policy sees the address.
_NUMERIC_HOST = re.compile(r"(?:0[xX][0-9A-Fa-f]*|[0-9]+)(?:\.(?:0[xX][0-9A-Fa-f]*|[0-9]+)){0,3}")

# An IPv6 zone id (fe80::1%eth0): an interface name (at most 15 characters on Linux) or index.
_ZONE_ID = re.compile(r"[A-Za-z0-9_.-]{1,15}")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetError(ValueError):
    """A target or name that cannot be probed; the message is one line for HTTP 400."""


# Input quoted back in an error message is clipped: a 400 answer or a check line need not
# carry the asker's 5,000 characters back (docs/security.md).
ECHO_LIMIT = 200


def echo(text: str, limit: int = ECHO_LIMIT) -> str:
    """``text`` quoted for an error message (repr: one line, escapes shown), at most ``limit`` characters of it."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


@dataclass(frozen=True)
class Target:
    host: str  # ASCII name, or the address without brackets
    port: int
    ip: IPAddress | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.ip is not None and self.ip.version == 6 else self.host
        return f"{host}:{self.port}"


def parse_target(raw: str, default_port: int) -> Target:
    """Parse ``raw`` into a Target, or raise TargetError naming what is wrong."""
    text = raw.strip()
    if not text:
        raise TargetError("target is empty")
    if any(ch.isspace() for ch in text) or any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise TargetError(f"target {echo(raw)} contains whitespace or control characters")
    if "://" in text:
        return _parse_url(text, raw)
    ip = _ip_or_none(text)
    if ip is not None:  # bare IPv4, or IPv6 without brackets
        return Target(str(ip), default_port, ip)
    host, port_text = _split_host_port(text, raw)
    port = _parse_port(port_text, raw) if port_text is not None else default_port
    return _make_target(host, port, raw)


def parse_hostname(raw: str) -> str:
    """Validate a verification name (a DNS name or an IP address); return its ASCII form."""
    text = raw.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    ip = _ip_or_none(text)
    if ip is not None:
        return str(ip)
    return normalise_name(text, raw)


def normalise_name(name: str, raw: str) -> str:
    """ASCII form of a DNS name, or TargetError."""
    if not name:
        raise TargetError(f"{echo(raw)}: host is empty")
    if any(ch.isspace() for ch in name):
        raise TargetError(f"{echo(raw)}: host contains whitespace")
    name = name.rstrip(".") if name != "." else name
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise TargetError(f"{echo(raw)}: invalid internationalised name: {exc}") from None
    if len(name) > 253:
        raise TargetError(f"{echo(raw)}: name longer than 253 characters")
    for label in name.split("."):
        if len(label) > 63:
            raise TargetError(f"{echo(raw)}: label {label[:20]!r}... longer than 63 characters")
        if not _LABEL.match(label):
            raise TargetError(f"{echo(raw)}: invalid host name label {echo(label)}")
    return name.lower()


def _parse_url(text: str, raw: str) -> Target:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise TargetError(f"target {echo(raw)}: {exc}") from None
    host = parts.hostname
    if not host:
        raise TargetError(f"target {echo(raw)}: URL has no host")
    if port is None:
        port = _SCHEME_PORTS.get(parts.scheme.lower())
        if port is None:
            raise TargetError(f"target {echo(raw)}: unknown URL scheme {echo(parts.scheme, 20)}, give a port")
    if port == 0:
        raise TargetError(f"target {echo(raw)}: port 0 is out of range 1-65535")
    return _make_target(host, port, raw)


def _split_host_port(text: str, raw: str) -> tuple[str, str | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise TargetError(f"target {echo(raw)}: missing ']' after IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if _ip_or_none(host) is None or ":" not in host:
            raise TargetError(f"target {echo(raw)}: {echo(host)} in brackets is not an IPv6 address")
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise TargetError(f"target {echo(raw)}: unexpected {echo(rest)} after ']'")
        return host, rest[1:]
    if text.count(":") > 1:
        raise TargetError(f"target {echo(raw)}: put IPv6 addresses in brackets, e.g. [::1]:443")
    host, sep, port = text.partition(":")
    return host, (port if sep else None)


def _parse_port(text: str, raw: str) -> int:
    # str.isdigit() is also true for "²" (int() refuses it) and for other scripts' digits
    # ("١٢", which int() reads as 12): a port is ASCII digits, and not 5,000 of them
    # (int() refuses over 4,300 digits).
    if not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > 5:
        raise TargetError(f"target {echo(raw)}: port {text[:20]!r} is not a number from 1 to 65535")
    port = int(text)
    if not 1 <= port <= 65535:
        raise TargetError(f"target {echo(raw)}: port {port} is out of range 1-65535")
    return port


def _make_target(host: str, port: int, raw: str) -> Target:
    ip = _ip_or_none(host)
    if ip is None:
        # Judged on the name as it will be resolved: "0." and "⁰" (IDNA maps it to "0") are
        # the name "0", which the resolver reads as 0.0.0.0.
        name = normalise_name(host, raw)
        ip = _numeric_ipv4_or_none(name)
        if ip is None:
            return Target(name, port, None)
    return Target(str(ip), port, ip)


def _ip_or_none(text: str) -> IPAddress | None:
    if ":" not in text and not text.replace(".", "").isdigit():
        return None  # a name: ipaddress would fail on it too, through two exceptions (bench/)
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None and not _ZONE_ID.fullmatch(ip.scope_id):
        # ipaddress takes anything after "%", line breaks included: shown, it would forge lines.
        raise TargetError(f"{echo(text)}: the IPv6 zone id is not an interface name or number "
                          f"(letters, digits, '_', '.', '-'; at most 15)")
    return ip


def _numeric_ipv4_or_none(text: str) -> ipaddress.IPv4Address | None:
    if not _NUMERIC_HOST.fullmatch(text):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:  # out of range: not an address (and not a usable name either)
        return None
