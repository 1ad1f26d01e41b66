"""The one place where low-level errors become ``(stage, reason)`` pairs.

Labels must come from finite sets, so every failure a probe can meet is mapped here to one
of the documented reasons below (docs/metrics.md lists them with their meaning). Free text
(OpenSSL's message, errno text) travels in ``ProbeError.detail``, which goes to logs and the
debug output only.

Stages, in the order a probe meets them::

    resolve -> connect -> starttls -> handshake -> verify        (network probes)
    read                                                         (files, Kubernetes)
    rdap                                                         (domain registrations)
"""

from __future__ import annotations

import errno
import socket
import ssl

from ssl_exporter import reasons
from ssl_exporter.printable import describe
from ssl_exporter.result import ProbeError

STAGES = ("resolve", "connect", "starttls", "handshake", "verify", "read", "rdap")

REASONS = reasons.PROBE  # the reason label of ssl_probe_error_info (the registry lives in reasons.py)

# OpenSSL X509_V_ERR_* codes -> reason. Codes not listed are "bad_certificate".
_VERIFY_REASONS = {
    9: "not_yet_valid",  # CERT_NOT_YET_VALID
    10: "expired",  # CERT_HAS_EXPIRED
    18: "self_signed",  # DEPTH_ZERO_SELF_SIGNED_CERT
    19: "unknown_issuer",  # SELF_SIGNED_CERT_IN_CHAIN (an untrusted root was sent)
    24: "invalid_purpose",  # INVALID_CA
    26: "invalid_purpose",  # INVALID_PURPOSE
    62: "hostname_mismatch",  # HOSTNAME_MISMATCH
    64: "hostname_mismatch",  # IP_ADDRESS_MISMATCH
    66: "weak_crypto",  # EE_KEY_TOO_SMALL
    67: "weak_crypto",  # CA_KEY_TOO_SMALL
    68: "weak_crypto",  # CA_MD_TOO_WEAK
}
# UNABLE_TO_GET_ISSUER_CERT(_LOCALLY): the issuer of the last certificate OpenSSL could
# place is neither presented nor trusted.
_ISSUER_NOT_FOUND = {2, 20}


def verify_reason(verify_code: int, last_is_ca: bool) -> str:
    """Reason for an OpenSSL verification failure.

    ``last_is_ca`` says whether the certificate whose issuer could not be found is a CA.
    When it is a leaf, the server most likely left out its intermediate (a client without
    AIA fetching, as OpenSSL is, fails); when it is a CA, the chain leads to an untrusted CA.
    A leaf issued directly by an untrusted root reads as incomplete_chain too: without the
    issuer the two cases cannot be told apart.
    """
    if verify_code in _ISSUER_NOT_FOUND:
        return "unknown_issuer" if last_is_ca else "incomplete_chain"
    return _VERIFY_REASONS.get(verify_code, "bad_certificate")


# OpenSSL's error reasons (ssl.SSLError.reason) that mean "no common TLS version".
_VERSION_REASONS = {
    "UNSUPPORTED_PROTOCOL",
    "NO_PROTOCOLS_AVAILABLE",
    "TLSV1_ALERT_PROTOCOL_VERSION",
    "WRONG_SSL_VERSION",
    "VERSION_TOO_LOW",
    "VERSION_TOO_HIGH",
    "TLSV1_ALERT_INAPPROPRIATE_FALLBACK",
}
# ... and those that mean "the peer's key, DH group or signature is below our security level",
# matched by part of the name: DH_KEY_TOO_SMALL, EE_KEY_TOO_SMALL, CA_MD_TOO_WEAK, and for an
# SHA-1 (or no acceptable) handshake signature LEGACY_SIGALG_DISALLOWED_OR_UNSUPPORTED,
# WRONG_SIGNATURE_TYPE, NO_SUITABLE_SIGNATURE_ALGORITHM.
_WEAK_CRYPTO_MARKERS = ("KEY_TOO_SMALL", "TOO_WEAK", "LEGACY_SIGALG", "WRONG_SIGNATURE_TYPE",
                        "NO_SUITABLE_SIGNATURE_ALGORITHM")
# ... and those that mean "this is not TLS at all".
_NOT_TLS_REASONS = {
    "WRONG_VERSION_NUMBER",
    "PACKET_LENGTH_TOO_LONG",
    "RECORD_LAYER_FAILURE",
    "UNKNOWN_PROTOCOL",
    "HTTP_REQUEST",
    "HTTPS_PROXY_REQUEST",
    "RECORD_LENGTH_MISMATCH",
    "WRONG_VERSION",
    "UNEXPECTED_MESSAGE",
    "UNEXPECTED_RECORD",
}


# OpenSSL refuses a handshake message over its own limit (100 KiB for a certificate
# list, SSL_CTX_set_max_cert_list) before reading it: the same cap as ours, applied earlier.
_OVERSIZED_REASONS = {"EXCESSIVE_MESSAGE_SIZE"}


def _ssl_reason(exc: ssl.SSLError) -> str:
    # Only errors raised by the _ssl module carry .reason; one raised in Python (ssl.py,
    # asyncio) has none.
    name = getattr(exc, "reason", None) or ""
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return "closed"
    if name in _OVERSIZED_REASONS:
        return "oversized"
    if not name and "ASN1" in str(exc):
        # "[SSL] ASN1 lib": OpenSSL could not decode a certificate the server sent (bad
        # DER, a UTF8String that is not UTF-8); CPython leaves the reason empty for it.
        return "bad_certificate"
    if name in _VERSION_REASONS:
        return "protocol_version"
    if any(marker in name for marker in _WEAK_CRYPTO_MARKERS):
        return "weak_crypto"
    if "ALERT" in name:
        return "handshake_failure"
    if name in _NOT_TLS_REASONS or name.startswith(("BAD_", "WRONG_", "INVALID_", "LENGTH_")):
        return "tls_protocol"
    if name in {"NO_SHARED_CIPHER", "NO_CIPHERS_AVAILABLE"}:
        return "handshake_failure"
    return "tls_error"  # not a guess: an error we do not know says so


# Handshake failures that are a matter of protocol or crypto policy: the peer speaks TLS, only
# not at our security level. For these the tcp prober may make one permissive handshake to
# read the certificates all the same (tls_config.fallback_handshake, docs/metrics.md).
POLICY_REASONS = frozenset({"protocol_version", "handshake_failure", "weak_crypto"})


_ERRNO_REASONS = {
    errno.ECONNREFUSED: "refused",
    errno.ECONNRESET: "reset",
    errno.EPIPE: "reset",
    errno.ECONNABORTED: "reset",
    errno.ENETUNREACH: "unreachable",
    errno.EHOSTUNREACH: "unreachable",
    errno.EADDRNOTAVAIL: "unreachable",
    errno.ETIMEDOUT: "timeout",
}


class ProbeAborted(Exception):
    """Not a probe failure: the request must not be answered with probe metrics at all
    (a target the policy refuses is HTTP 403). Passes through the probe runner unchanged."""


class OutOfResources(ProbeAborted):
    """The exporter itself ran out of file descriptors (EMFILE/ENFILE) during a probe: its own
    failure, never the target's, so the answer is HTTP 503 rather than ``ssl_probe_success 0``."""


# The exporter's own exhaustion, whatever it was doing when it met it.
EXHAUSTION_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})


class ProbeFailure(Exception):
    """Raised inside a prober when it already knows the documented reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail


def classify(exc: BaseException, stage: str) -> ProbeError:
    """Map an exception met during ``stage`` to a ProbeError with a documented reason."""
    detail = describe(exc)  # one line: errors become log fields and must not break logfmt
    if isinstance(exc, ProbeFailure):
        reason = exc.reason
    elif isinstance(exc, TimeoutError):
        reason = "timeout"
    elif isinstance(exc, socket.gaierror):
        reason = "dns"
    elif isinstance(exc, ssl.SSLError):
        reason = _ssl_reason(exc)
    elif isinstance(exc, EOFError | ConnectionAbortedError) or (
        isinstance(exc, OSError) and exc.errno is None and "closed" in str(exc)
    ):
        reason = "closed"
    elif isinstance(exc, OSError):
        reason = _ERRNO_REASONS.get(exc.errno or 0, "network_error")
    else:
        reason = "internal_error"
    return ProbeError(stage=stage, reason=reason, detail=detail)
