"""Certificate-depth facts from DER (no I/O: the legacy-TLS-version handshakes are in
:mod:`ssl_exporter.legacy`).

:func:`facts` reads what operators audit beyond the dates: a weak (MD5/SHA-1) signature, the
validity period, embedded SCTs (Certificate Transparency), OCSP must-staple, a self-signed
certificate. Like :func:`ssl_exporter.certs.parse_der` it takes DER from whoever answers a
probe, so it never raises: an unreadable certificate has no facts (``None``) and an
unreadable extension counts as absent.
"""

from __future__ import annotations

import hashlib
import warnings

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ObjectIdentifier

from ssl_exporter import lru
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
