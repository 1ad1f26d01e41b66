"""Certificate-depth facts from DER, and the legacy-TLS-version check.

:func:`facts` reads what operators audit beyond the dates: a weak (MD5/SHA-1) signature, the
validity period, embedded SCTs (Certificate Transparency), OCSP must-staple, a self-signed
certificate. Like :func:`ssl_exporter.certs.parse_der` it takes DER from whoever answers a
probe, so it never raises: an unreadable certificate has no facts (``None``) and an
unreadable extension counts as absent.

:func:`legacy_versions` makes one extra handshake per legacy version a module asks about
(``legacy_versions: [TLS10, TLS11]``), restricted to that version. OpenSSL 3 refuses TLS 1.0
and 1.1 at its default security level (their signature algorithms use SHA-1), so those
handshakes use ``@SECLEVEL=0``: the question is what the server accepts, not what we would
trust. Verification is off for them; the main handshake already judged the certificates.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import warnings
from collections.abc import Awaitable, Callable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ObjectIdentifier

from ssl_exporter import lru, tls
from ssl_exporter.errors import ProbeFailure
from ssl_exporter.result import CertLint

# Signature algorithms with a broken hash: md2, md4, md5 and sha1 with RSA (two OIDs for
# sha1WithRSA), ecdsa-with-SHA1, dsa-with-sha1.
_WEAK_SIGNATURES = {
    ObjectIdentifier(oid)
    for oid in ("1.2.840.113549.1.1.2", "1.2.840.113549.1.1.3", "1.2.840.113549.1.1.4",
                "1.2.840.113549.1.1.5", "1.3.14.3.2.29", "1.2.840.10045.4.1", "1.2.840.10040.4.3")
}
# Facts by certificate digest, each wrapped in a 1-tuple so that "unreadable" (None) is cached
# too. A small entry (digest, CertLint), counted generously.
_cache: lru.ByteLRU[tuple[CertLint | None]] = lru.budgeted("lint")
_ENTRY_BYTES = 400


def facts(der: bytes) -> CertLint | None:
    """The facts of one certificate, or None when its DER cannot be read. Cached by digest:
    the same certificates come back on every scrape."""
    digest = hashlib.sha256(der).digest()
    cached = _cache.get(digest)
    if cached is not None:
        return cached[0]
    result = _facts(der)
    _cache.put(digest, (result,), _ENTRY_BYTES)
    return result


def _facts(der: bytes) -> CertLint | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)  # negative serials
        try:
            cert = x509.load_der_x509_certificate(der)
            validity = cert.not_valid_after_utc.timestamp() - cert.not_valid_before_utc.timestamp()
        except Exception:
            return None
        self_signed = _self_signed(cert)
        return CertLint(
            validity_seconds=validity,
            weak_signature=_weak_signature(cert) and not self_signed,
            sct_count=_sct_count(cert),
            must_staple=_must_staple(cert),
            self_signed=self_signed,
        )


def _self_signed(cert: x509.Certificate) -> bool:
    try:
        if cert.subject.public_bytes() != cert.issuer.public_bytes():
            return False
        cert.verify_directly_issued_by(cert)
    except Exception:
        return False
    return True


def _weak_signature(cert: x509.Certificate) -> bool:
    try:
        if cert.signature_algorithm_oid in _WEAK_SIGNATURES:
            return True
        # RSASSA-PSS names its hash in the parameters.
        return isinstance(cert.signature_hash_algorithm, hashes.MD5 | hashes.SHA1)
    except Exception:
        return False


def _extension(cert: x509.Certificate, kind: type) -> object | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except Exception:  # absent, duplicated, or not decodable: counted as absent
        return None


def _sct_count(cert: x509.Certificate) -> int:
    scts = _extension(cert, x509.PrecertificateSignedCertificateTimestamps)
    return len(scts) if isinstance(scts, x509.PrecertificateSignedCertificateTimestamps) else 0


def _must_staple(cert: x509.Certificate) -> bool:
    feature = _extension(cert, x509.TLSFeature)
    return isinstance(feature, x509.TLSFeature) and x509.TLSFeatureType.status_request in feature


# --- legacy TLS versions -----------------------------------------------------------------

LEGACY = {"TLS10": ("TLS 1.0", ssl.TLSVersion.TLSv1), "TLS11": ("TLS 1.1", ssl.TLSVersion.TLSv1_1)}
_contexts: dict[str, ssl.SSLContext] = {}


def legacy_context(version: str) -> ssl.SSLContext:
    """A client context that offers only ``version`` (``TLS10``/``TLS11``), built once."""
    if version not in _contexts:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # "ssl.TLSVersion.TLSv1 is deprecated"
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
            context.minimum_version = context.maximum_version = LEGACY[version][1]
        _contexts[version] = context
    return _contexts[version]


Connector = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def legacy_versions(versions: Sequence[str], connect: Connector, server_name: str | None,
                          note: Callable[[str], None] = lambda _m: None) -> dict[str, bool]:
    """Whether the server completes a handshake restricted to each version.

    ``connect`` opens a connection ready for the handshake (proxy and STARTTLS done). A
    version whose answer is not clear (the connection failed, the deadline passed: the
    caller cancels) is left out: unknown is absent.
    """

    async def one(version: str) -> bool | None:
        label = LEGACY[version][0]
        try:
            context = legacy_context(version)
        except (ValueError, ssl.SSLError) as exc:  # an OpenSSL built without this version
            note(f"legacy {label}: cannot be offered by this OpenSSL: {exc}")
            return None
        try:
            reader, writer = await connect()
        except (OSError, ssl.SSLError, ProbeFailure, EOFError, asyncio.IncompleteReadError) as exc:
            note(f"legacy {label}: could not connect: {exc}")
            return None
        try:
            outcome = await tls.handshake(reader, writer, context, server_name)
        except ssl.SSLError as exc:
            note(f"legacy {label}: refused ({exc.reason or exc})")
            return False
        except (OSError, ProbeFailure, EOFError) as exc:
            note(f"legacy {label}: no answer: {exc}")
            return None
        finally:
            await tls.close_stream(writer)
        accepted = outcome.version == label
        note(f"legacy {label}: {'accepted' if accepted else 'refused'} (negotiated {outcome.version})")
        return accepted

    results = await asyncio.gather(*(one(v) for v in versions))
    return {LEGACY[v][0]: r for v, r in zip(versions, results, strict=True) if r is not None}
