"""Certificates at rest: decode PEM, DER, PKCS#7 and PKCS#12 containers into DER certificates.

Only certificates leave this module. Private keys in the same file or bundle are skipped
without being decoded, and never logged.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import deque
from collections.abc import Iterator

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7, pkcs12

# PEM labels that hold a certificate (RFC 7468; "TRUSTED CERTIFICATE" is OpenSSL's, with
# trust settings after the certificate).
_CERT_LABELS = {"CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"}
_PKCS7_LABELS = {"PKCS7", "CMS", "PKCS #7 SIGNED DATA"}
_PEM_LABEL = re.compile(rb"[A-Z0-9 #]+")
_PKCS12_SUFFIXES = (".p12", ".pfx")


class SourceError(ValueError):
    """A container that yields no certificate; ``reason`` is a documented read reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def decode_certificates(data: bytes, name: str = "", password: bytes | None = None) -> list[bytes]:
    """DER certificates in ``data``, in file order; SourceError when there are none.

    ``name`` (a file name) only decides which error to report for undecodable binary data:
    a ``.p12``/``.pfx`` file is PKCS#12, anything else is taken for DER.
    """
    if b"-----BEGIN " in data:
        return _from_pem(data)
    if name.lower().endswith(_PKCS12_SUFFIXES):
        return _from_pkcs12(data, password)
    for decode in (_der_certificate, _pkcs7_der):
        found = decode(data)
        if found:
            return found
    if _looks_like_pkcs12(data):
        return _from_pkcs12(data, password)
    raise SourceError("bad_der", "not a DER certificate, PKCS#7 or PKCS#12 structure")


def _from_pem(data: bytes) -> list[bytes]:
    certs: list[bytes] = []
    for label, body in _pem_blocks(data):
        kind = label.decode()
        if kind not in _CERT_LABELS and kind not in _PKCS7_LABELS:
            continue  # private keys, parameters, CSRs: not ours to read
        try:
            der = base64.b64decode(b"".join(body.split()), validate=True)
        except (binascii.Error, ValueError):
            raise SourceError("bad_pem", f"{kind} block is not valid base64") from None
        if kind in _PKCS7_LABELS:
            found = _pkcs7_der(der)
            if not found:
                raise SourceError("bad_pem", f"{kind} block is not a PKCS#7 certificate bundle")
            certs.extend(found)
        else:
            certs.append(_first_tlv(der) if kind == "TRUSTED CERTIFICATE" else der)
    if not certs:
        raise SourceError("no_certificate", "no CERTIFICATE or PKCS7 block")
    return certs


def _pem_blocks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(label, body) of each ``-----BEGIN label----- ... -----END label-----`` block, in order.

    A linear scan, where a regex would rescan the rest of the data for every BEGIN marker
    without an END (quadratic in the data's size): END markers are indexed once, by label,
    and each BEGIN takes the first END of its label after it.
    """
    ends: dict[bytes, deque[int]] = {}
    for position, label, _after in _markers(data, b"-----END "):
        ends.setdefault(label, deque()).append(position)
    blocks: list[tuple[bytes, bytes]] = []
    pos = 0
    for begin, label, body_start in _markers(data, b"-----BEGIN "):
        if begin < pos:
            continue  # inside the block just read
        candidates = ends.get(label)
        while candidates and candidates[0] < body_start:
            candidates.popleft()
        if not candidates:
            continue  # no END for this label after here
        end = candidates.popleft()
        blocks.append((label, data[body_start:end]))
        pos = end + len(b"-----END ") + len(label) + len(b"-----")
    return blocks


def _markers(data: bytes, marker: bytes) -> Iterator[tuple[int, bytes, int]]:
    """(position, label, position after the marker) of each ``marker + label + -----``."""
    pos = 0
    while True:
        at = data.find(marker, pos)
        if at < 0:
            return
        start = at + len(marker)
        label_end = data.find(b"-----", start)
        if label_end < 0:
            return
        label = data[start:label_end]
        if _PEM_LABEL.fullmatch(label):
            yield at, label, label_end + 5
        pos = start


def _der_certificate(data: bytes) -> list[bytes]:
    try:
        x509.load_der_x509_certificate(data)
    except ValueError:
        return []
    return [data]


def _pkcs7_der(data: bytes) -> list[bytes]:
    try:
        return [c.public_bytes(Encoding.DER) for c in pkcs7.load_der_pkcs7_certificates(data)]
    except ValueError:
        return []


def _from_pkcs12(data: bytes, password: bytes | None) -> list[bytes]:
    try:
        bundle = pkcs12.load_pkcs12(data, password)
    except ValueError as exc:
        text = str(exc).lower()
        if "password" in text or "mac" in text or "decrypt" in text:
            return _raise("bad_password", "PKCS#12 password is wrong or missing")
        return _raise("bad_pkcs12", "not a decodable PKCS#12 file")
    certs = [bundle.cert.certificate] if bundle.cert else []
    certs += [c.certificate for c in bundle.additional_certs]
    if not certs:
        raise SourceError("no_certificate", "PKCS#12 file holds no certificate")
    return [c.public_bytes(Encoding.DER) for c in certs]


def _raise(reason: str, detail: str) -> list[bytes]:
    raise SourceError(reason, detail)


def _looks_like_pkcs12(data: bytes) -> bool:
    # PFX ::= SEQUENCE { version INTEGER (3), ... }: after the outer header, 02 01 03.
    return data[:1] == b"\x30" and b"\x02\x01\x03" in data[2:8]


def _first_tlv(der: bytes) -> bytes:
    """The first DER element of ``der`` (a TRUSTED CERTIFICATE has trust data after it)."""
    if len(der) < 2 or der[0] != 0x30:
        return der
    length = der[1]
    if length < 0x80:
        return der[: 2 + length]
    size = length & 0x7F
    if size == 0 or size > 4 or len(der) < 2 + size:
        return der
    return der[: 2 + size + int.from_bytes(der[2 : 2 + size], "big")]
