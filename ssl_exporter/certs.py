"""Certificate analysis from DER bytes, whatever their source.

Parsing never raises for a malformed certificate's optional parts: a field that cannot be
decoded is reported empty, so one odd extension does not hide a certificate's dates. The
bytes come from whoever answers a probe, so :func:`parse_der` raises nothing but
:class:`CertificateError`, whatever ``cryptography`` throws, and every text it returns can be
encoded as UTF-8 (a label value must be).
"""

from __future__ import annotations

import hashlib
import ipaddress
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from ssl_exporter import lru
from ssl_exporter.result import CertInfo


class CertificateError(ValueError):
    """DER bytes that are not a certificate we can read."""


def parse_der(der: bytes, source: Mapping[str, str] | None = None,
              presented: lru.ByteLRU[CertInfo] | None = None) -> CertInfo:
    """Analyse one certificate; raise CertificateError when its DER, dates or serial
    cannot be read. Optional parts that cannot be decoded are reported empty.

    ``presented`` (:func:`new_presented_cache`) remembers certificates parsed without a
    source, by DER, for the next probe."""
    if source or presented is None:
        return _parse_der(der, source)
    return _parse_presented(der, presented)


def new_presented_cache() -> lru.ByteLRU[CertInfo]:
    """Parsed presented certificates by DER: a server presents the same chain on every probe,
    so it is analysed once. One per process (ssl_exporter.prepare.Caches.presented). Bounded
    in bytes: a hostile server can present a new large certificate every time."""
    return lru.budgeted("certs")


def _parse_presented(der: bytes, presented: lru.ByteLRU[CertInfo]) -> CertInfo:
    # CertInfo is frozen, so sharing it is safe; a failure raises and is not cached.
    cert = presented.get(der)
    if cert is None:
        cert = _parse_der(der, None)
        presented.put(der, cert, size_of(cert))
    return cert


# What a CertInfo costs beyond its strings: the object, its tuples' headers, the source dict.
_CERT_OVERHEAD = 1024


def size_of(cert: CertInfo) -> int:
    """An estimate of the memory one CertInfo holds (its DER counted once), for byte budgets."""
    return (_CERT_OVERHEAD
            + lru.text_size(cert.der, cert.subject_cn, cert.issuer_cn, cert.subject, cert.issuer, cert.serial,
                            cert.fingerprint_sha256, cert.signature_algorithm, *cert.dns_names,
                            *cert.ip_addresses, *cert.source.keys(), *cert.source.values())
            + sys.getsizeof(cert.dns_names) + sys.getsizeof(cert.ip_addresses))


def _parse_der(der: bytes, source: Mapping[str, str] | None) -> CertInfo:
    with warnings.catch_warnings():
        # A serial that is negative or zero is malformed but seen in the field, and OpenSSL
        # accepts it; cryptography warns on every load (an error under -W error). We
        # export it with a "-" sign instead. (catch_warnings is process-wide; the file
        # prober's worker thread may interleave with the event loop, which at worst leaves
        # this one filter installed.)
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        try:
            cert = x509.load_der_x509_certificate(der)
            not_before = cert.not_valid_before_utc.timestamp()
            not_after = cert.not_valid_after_utc.timestamp()
            serial = _serial_hex(cert)
        except Exception as exc:  # hostile bytes: anything cryptography raises means "bad"
            raise CertificateError(f"cannot decode certificate: {type(exc).__name__}: {exc}") from None
        no_names: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
        dns_names, ip_addresses = _optional(_subject_alt_names, cert, no_names)
        key_algorithm, key_bits = _optional(_key_facts, cert, ("unknown", 0))
        return CertInfo(
            der=der,
            subject_cn=_text(_optional(_common_name, cert, "", "subject")),
            issuer_cn=_text(_optional(_common_name, cert, "", "issuer")),
            subject=_text(_optional(_rfc4514, cert, "", "subject")),
            issuer=_text(_optional(_rfc4514, cert, "", "issuer")),
            serial=serial,
            not_before=not_before,
            not_after=not_after,
            dns_names=tuple(_text(n) for n in dns_names),
            ip_addresses=ip_addresses,
            fingerprint_sha256=hashlib.sha256(der).hexdigest(),
            key_algorithm=key_algorithm,
            key_bits=key_bits,
            signature_algorithm=_text(_optional(_signature_algorithm, cert, "unknown")),
            is_ca=_optional(_is_ca, cert, False),
            self_issued=_optional(_raw_name, cert, b"?s", "subject")
            == _optional(_raw_name, cert, b"?i", "issuer"),
            source=dict(source or {}),
        )


_T = TypeVar("_T")


def _optional(getter: Callable[..., _T], cert: x509.Certificate, default: _T, *args: str) -> _T:
    # The helpers catch what cryptography documents; this catches what it does not (a
    # hostile certificate reaches code paths nobody lists), so that one odd field costs
    # that field and not the certificate's dates.
    try:
        return getter(cert, *args)
    except Exception:
        return default


def _text(value: str) -> str:
    """``value`` with anything UTF-8 cannot encode (lone surrogates) replaced."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8")
    return value


def distinct(ders: Iterable[bytes]) -> list[bytes]:
    """The certificates in their order, duplicates dropped (position is an index into this)."""
    seen: set[bytes] = set()
    unique = []
    for der in ders:
        if der not in seen:
            seen.add(der)
            unique.append(der)
    return unique


def matches_hostname(cert: CertInfo, name: str) -> bool:
    """Whether ``cert`` is valid for ``name`` as OpenSSL's X509_check_host/_ip decide it.

    IP addresses match IP SANs only. DNS names match DNS SANs, the subject CN only when
    there is no DNS SAN. A wildcard matches only as the whole left-most label, for one
    label, and only with at least two labels after it (CPython sets OpenSSL's
    X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, so "f*.example.com" never matches).
    """
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        ip = None
    if ip is not None:
        return any(_same_ip(ip, candidate) for candidate in cert.ip_addresses)
    patterns = cert.dns_names or ((cert.subject_cn,) if cert.subject_cn else ())
    host = name.rstrip(".").lower()
    return any(_match_pattern(pattern.lower(), host) for pattern in patterns)


def _same_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, candidate: str) -> bool:
    try:
        return ipaddress.ip_address(candidate) == ip
    except ValueError:
        return False


def _match_pattern(pattern: str, host: str) -> bool:
    pattern = pattern.rstrip(".")
    if not pattern or not host:
        return False
    if "*" not in pattern:
        return pattern == host
    first, _, rest = pattern.partition(".")
    # The wildcard must be the whole first label, with at least two labels after it.
    if first != "*" or "*" in rest or rest.count(".") < 1:
        return False
    host_first, _, host_rest = host.partition(".")
    return bool(host_first) and host_rest == rest


def _common_name(cert: x509.Certificate, which: str) -> str:
    try:
        name = cert.subject if which == "subject" else cert.issuer
        attributes = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return ""
    if not attributes:
        return ""
    value = attributes[-1].value  # OpenSSL shows the most specific (last) CN
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _rfc4514(cert: x509.Certificate, which: str) -> str:
    try:
        return (cert.subject if which == "subject" else cert.issuer).rfc4514_string()
    except (ValueError, UnicodeDecodeError):
        return ""


def _raw_name(cert: x509.Certificate, which: str) -> bytes:
    try:
        return (cert.subject if which == "subject" else cert.issuer).public_bytes()
    except ValueError:
        return b"?" + which.encode()


def _serial_hex(cert: x509.Certificate) -> str:
    serial = cert.serial_number
    return f"-{-serial:x}" if serial < 0 else f"{serial:x}"


def _subject_alt_names(cert: x509.Certificate) -> tuple[tuple[str, ...], tuple[str, ...]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (), ()
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        return (), ()
    dns = tuple(str(n) for n in san.get_values_for_type(x509.DNSName))
    ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    return dns, ips


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension):
        return False


def _key_facts(cert: x509.Certificate) -> tuple[str, int]:
    try:
        key = cert.public_key()
    except (ValueError, TypeError, NotImplementedError):
        return "unknown", 0
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}", key.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size
    return type(key).__name__, 0


def _signature_algorithm(cert: x509.Certificate) -> str:
    oid = cert.signature_algorithm_oid
    name = getattr(oid, "_name", "")
    return name if name and name != "Unknown OID" else oid.dotted_string
