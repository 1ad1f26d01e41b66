"""Facts about a probe result in words and numbers, shared by the pages and the check command.

Which certificate is the leaf, which not-after the time left counts down to, how an error
or a certificate's source reads: the rules live here once, free of HTML and of Nagios
states, so that :mod:`ssl_exporter.web` and :mod:`ssl_exporter.check` say the same things.
Values are returned unescaped; each face escapes them for its own output.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from ssl_exporter.durations import format_span
from ssl_exporter.result import CertInfo, ProbeError, ProbeResult


def format_utc(timestamp: float, seconds: bool = True) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


def describe_expiry(not_after: float, now: float) -> str:
    """'expires in 3d 4h' or 'expired 2d 1h ago'."""
    left = not_after - now
    return f"expires in {format_span(left)}" if left >= 0 else f"expired {format_span(left)} ago"


def source_text(source: Mapping[str, str]) -> str:
    """Where a certificate at rest was read: 'file=/etc/ssl/a.pem', 'namespace=prod secret=web key=tls.crt'."""
    return " ".join(f"{key}={value}" for key, value in source.items())


def error_text(address: str, error: ProbeError) -> str:
    """'stage/reason: detail', after the address it happened on when there is one."""
    where = f"{address} " if address else ""
    return f"{where}{error.stage}/{error.reason}" + (f": {error.detail}" if error.detail else "")


def positions(result: ProbeResult) -> Sequence[str]:
    """The position label of each certificate, as the metrics have it."""
    return [position for position, _cert in result.placed_certs()]


def is_presented_chain(result: ProbeResult) -> bool:
    """Whether the certificates are a server's chain (leaf first) rather than certificates at rest."""
    return bool(result.certs) and not result.certs[0].source


def leaf_or_soonest(result: ProbeResult) -> CertInfo | None:
    """The leaf of a presented chain; for certificates at rest, the one that expires first;
    for a probe of every address, the leaf that expires first."""
    if result.addresses is not None:
        leaves = [leaf for a in result.addresses if (leaf := leaf_or_soonest(a.result)) is not None]
        return min(leaves, key=lambda cert: cert.not_after, default=None)
    if not result.certs:
        return None
    if is_presented_chain(result):  # the leaf, unless it could not be parsed
        return next((cert for position, cert in result.placed_certs() if position == "0"), None)
    return min(result.certs, key=lambda cert: cert.not_after)


def expiry_of(result: ProbeResult) -> tuple[float | None, str | None]:
    """The not-after the time left counts down to, and where it comes from.

    The verified chain's earliest not-after when the chain verified (an intermediate can
    expire before the leaf): "verified_chain"; else the leaf's ("leaf"), or for certificates
    at rest the soonest one's ("soonest"); for a probe of every address, the soonest of
    their expiries. (None, None) when no certificate was obtained.
    """
    if result.addresses is not None:
        known = [found for a in result.addresses if (found := expiry_of(a.result))[0] is not None]
        return min(known, key=lambda found: found[0] or 0.0) if known else (None, None)
    if result.chain_valid and result.verified_chain_expiry is not None:
        return result.verified_chain_expiry, "verified_chain"
    cert = leaf_or_soonest(result)
    if cert is None:
        return None, None
    return cert.not_after, "leaf" if is_presented_chain(result) else "soonest"


def chain_expires_before_leaf(result: ProbeResult, chain_expiry: float) -> bool:
    """Whether something other than the leaf expires first (then it is the chain that expires)."""
    return bool(result.certs) and chain_expiry < result.certs[0].not_after
