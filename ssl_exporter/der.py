"""The one reader of DER (and definite-length BER) element headers: tag and length.

Used where the exporter reads ASN.1 structure by hand rather than through ``cryptography``:
a certificate's first element in a file (ssl_exporter.sources), OCSP key hashes and the
signed part of a CRL (ssl_exporter.revocation), LDAP's StartTLS answer (ssl_exporter.starttls).
Lengths take at most four octets (4 GiB): anything longer is not something we read.
"""

from __future__ import annotations

from typing import TypeVar

MAX_LENGTH_OCTETS = 4

_Bytes = TypeVar("_Bytes", bytes, memoryview)


class DERError(ValueError):
    """Bytes that are not the DER element they should be (truncated, or a length we do not read)."""


class Truncated(DERError):
    """The bytes end inside the element's header or content."""


def length_octets(first: int) -> int:
    """How many length octets follow the first length octet ``first``: 0 in the short form.

    DERError for the indefinite form (0x80) and for lengths over MAX_LENGTH_OCTETS octets.
    """
    if not first & 0x80:
        return 0
    count = first & 0x7F
    if not 1 <= count <= MAX_LENGTH_OCTETS:
        raise DERError(f"unsupported length form ({first:#04x})")
    return count


def header(data: bytes | memoryview, at: int = 0, end: int | None = None) -> tuple[int, int, int]:
    """The element starting at ``data[at]``: (tag, content length, where the content starts).

    Only the header, which must end before ``end`` (default: the end of ``data``), is
    checked; the content may lie past it.
    """
    end = len(data) if end is None else end
    if end < at + 2:
        raise Truncated("truncated DER")
    tag, first = data[at], data[at + 1]
    count = length_octets(first)
    if count == 0:
        return tag, first, at + 2
    if end < at + 2 + count:
        raise Truncated("truncated DER")
    return tag, int.from_bytes(data[at + 2 : at + 2 + count], "big"), at + 2 + count


def tlv(data: _Bytes) -> tuple[int, _Bytes, _Bytes]:
    """The first element of ``data``: (tag, content, the bytes after it)."""
    tag, length, start = header(data)
    if len(data) < start + length:
        raise Truncated("truncated DER")
    return tag, data[start : start + length], data[start + length :]
