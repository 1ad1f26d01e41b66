"""Certificates at rest: decode PEM, DER, PKCS#7 and PKCS#12 containers into DER certificates.

Only certificates leave this module. Private keys in the same file or bundle are skipped
without being decoded, and never logged.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from collections import deque
from collections.abc import Iterator

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7, pkcs12

from ssl_exporter.der import DERError, header

# PEM labels that hold a certificate (RFC 7468; "TRUSTED CERTIFICATE" is OpenSSL's, with
# trust settings after the certificate).
_CERT_LABELS = {"CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"}
_PKCS7_LABELS = {"PKCS7", "CMS", "PKCS #7 SIGNED DATA"}
_PEM_LABEL = re.compile(rb"[A-Z0-9 #]+")
_PKCS12_SUFFIXES = (".p12", ".pfx")

# PKCS#12 key derivations and MACs cost one hash per iteration, holding the GIL: a file asking
# for 2^31 iterations would freeze the exporter for minutes. Real files use 2,048 (OpenSSL)
# to 600,000 (OWASP's advice for PBKDF2-SHA256); anything above these caps is refused
# before deriving anything (docs/robustness.md).
MAX_PKCS12_ITERATIONS = 1_000_000
MAX_PKCS12_TOTAL_ITERATIONS = 2 * MAX_PKCS12_ITERATIONS  # all derivations of one file together


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
    check_pkcs12_iterations(data)
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
    if der[:1] != b"\x30":
        return der
    try:
        _tag, length, start = header(der)
    except DERError:
        return der
    return der[: start + length]


# --- reading a container from disk ---------------------------------------------------------


def read_regular(path: str, max_bytes: int, inside: tuple[str, ...] = ()) -> tuple[bytes, os.stat_result]:
    """The content of the regular file at ``path`` (at most ``max_bytes``), and its fstat.

    Opened with O_NONBLOCK and checked on the open descriptor, so that a FIFO, a terminal
    (``/dev/ptmx``) or a device put there, even in a race after a ``stat``, is refused
    instead of blocking a read thread for good; ``/dev/zero`` is refused the same way, and
    a regular file that grows while read stops at the cap. SourceError with a read reason.
    With ``inside`` (resolved folders), the file opened must lie under one of them: checked
    on the descriptor, so that a symlink swapped in after a check cannot lead out.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SourceError("not_found", "no such file (or a dangling symlink)") from None
    except PermissionError:
        raise SourceError("permission_denied", "cannot open for reading") from None
    except OSError as exc:
        raise SourceError("not_found", exc.strerror or str(exc)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SourceError("not_found", "not a regular file")
        if inside:
            opened = os.readlink(f"/proc/self/fd/{fd}")
            if not any(opened == root or opened.startswith(root.rstrip("/") + "/") for root in inside):
                raise SourceError("permission_denied", "a symlink leads outside file.roots")
        if info.st_size > max_bytes:
            raise SourceError("oversized", f"{info.st_size} bytes, over {max_bytes}")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise SourceError("oversized", f"over {max_bytes} bytes")
        return b"".join(chunks), info
    except OSError as exc:
        raise SourceError("not_found", exc.strerror or str(exc)) from None
    finally:
        os.close(fd)


# --- PKCS#12 work limits -----------------------------------------------------------------------

# Algorithm identifiers whose parameters are SEQUENCE { salt OCTET STRING, iterations INTEGER, ... }:
# pkcs-12PbeIds (1.2.840.113549.1.12.1.*) and PKCS#5 (1.2.840.113549.1.5.*: PBES1, PBKDF2).
# PBES2 (1.5.13) has other parameters and holds a PBKDF2 identifier, found by the walk.
_PKCS12_PBE_PREFIX = bytes.fromhex("2a864886f70d010c01")
_PKCS5_PREFIX = bytes.fromhex("2a864886f70d0105")
_PKCS7_DATA = bytes.fromhex("2a864886f70d010701")  # ContentInfo type "data": its content is DER to read
_MAX_DER_DEPTH = 32
_MAX_DER_NODES = 100_000


class _DER:
    """One element: tag, content, and its children when constructed (or an OCTET STRING
    that holds DER, as PKCS#12's contents do)."""

    __slots__ = ("tag", "content", "children")

    def __init__(self, tag: int, content: bytes, children: list[_DER] | None) -> None:
        self.tag, self.content, self.children = tag, content, children


def check_pkcs12_iterations(data: bytes) -> None:
    """Refuse a PKCS#12 file whose derivations would cost more than the caps, before any.

    Reads the iteration counts the structure shows without decrypting: the MAC's, and those
    of every PBE, PBES1 and PBKDF2 identifier (encrypted SafeContents and shrouded key
    bags outside them). BER with indefinite lengths is read too.
    """
    counts: list[int] = []
    try:
        pfx = _der_parse(data, 0, len(data), 0, [0])[0]
        top = pfx.children or []
        if len(top) >= 3 and top[2].children is not None:  # MacData { mac, macSalt, iterations DEFAULT 1 }
            mac_data = top[2].children
            if len(mac_data) >= 3 and mac_data[2].tag == 0x02:
                counts.append(_der_integer(mac_data[2].content))
        _pbe_counts(pfx, counts)
    except (ValueError, IndexError):
        raise SourceError("bad_pkcs12", "not a decodable PKCS#12 file") from None
    for count in counts:
        if count < 0 or count > MAX_PKCS12_ITERATIONS:
            raise SourceError("excessive_iterations",
                              f"PKCS#12 asks for {_clip_count(count)} iterations (over {MAX_PKCS12_ITERATIONS})")
    if sum(counts) > MAX_PKCS12_TOTAL_ITERATIONS:
        raise SourceError("excessive_iterations", f"PKCS#12 asks for {sum(counts)} iterations in all "
                                                  f"(over {MAX_PKCS12_TOTAL_ITERATIONS})")


def _clip_count(count: int) -> str:
    return str(count) if count < 10**18 else "more than 10^18"


def _pbe_counts(node: _DER, counts: list[int]) -> None:
    children = node.children
    if children is None:
        return
    if (node.tag == 0x30 and len(children) >= 2 and children[0].tag == 0x06
            and children[0].content.startswith((_PKCS12_PBE_PREFIX, _PKCS5_PREFIX))
            and children[1].tag == 0x30 and children[1].children is not None
            and len(children[1].children) >= 2 and children[1].children[1].tag == 0x02):
        counts.append(_der_integer(children[1].children[1].content))
    if (node.tag == 0x30 and len(children) == 2 and children[0].tag == 0x06 and children[0].content == _PKCS7_DATA
            and children[1].tag == 0xA0 and children[1].children):
        content = children[1].children[0]
        if content.tag != 0x04 or content.children is None:
            # What OpenSSL would read here and this walk could not, counts could hide in.
            raise ValueError("data content that is not DER")
    for child in children:
        _pbe_counts(child, counts)


def _der_integer(content: bytes) -> int:
    if len(content) > 8:  # no real count needs more than 64 bits: "huge" is enough to say
        return 2**63 if content[0] < 0x80 else -1
    return int.from_bytes(content, "big", signed=True)


def _der_parse(data: bytes, pos: int, end: int, depth: int, nodes: list[int]) -> tuple[_DER, int]:
    """The element at ``pos`` (before ``end``) and the position after it; ValueError if malformed."""
    if depth > _MAX_DER_DEPTH:
        raise ValueError("nested too deeply")
    nodes[0] += 1
    if nodes[0] > _MAX_DER_NODES:
        raise ValueError("too many elements")
    if end - pos < 2:
        raise ValueError("truncated")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise ValueError("high tag numbers do not occur in PKCS#12")
    indefinite = data[pos + 1] == 0x80  # BER: the content ends with two zero octets
    if indefinite:
        if not tag & 0x20:
            raise ValueError("indefinite length on a primitive element")
        length, pos = -1, pos + 2
    else:
        _tag, length, pos = header(data, pos, end)  # DERError is a ValueError
    if not indefinite and length > end - pos:
        raise ValueError("length past the end")
    if tag & 0x20:  # constructed: SEQUENCE, SET, [n] EXPLICIT, BER constructed strings
        children: list[_DER] = []
        stop = end if indefinite else pos + length
        start = pos
        while True:
            if indefinite and data[pos : pos + 2] == b"\x00\x00":
                pos += 2
                break
            if not indefinite and pos >= stop:
                break
            child, pos = _der_parse(data, pos, stop, depth + 1, nodes)
            children.append(child)
        if tag == 0x24:  # a BER constructed OCTET STRING: its fragments, joined
            joined = b"".join(c.content for c in children if c.tag == 0x04)
            return _DER(0x04, joined, _maybe_der(joined, depth, nodes)), pos
        return _DER(tag, data[start:pos], children), pos
    content = data[pos : pos + length]
    children_of_string = _maybe_der(content, depth, nodes) if tag == 0x04 else None
    return _DER(tag, content, children_of_string), pos + length


def _maybe_der(content: bytes, depth: int, nodes: list[int]) -> list[_DER] | None:
    """An OCTET STRING that holds one DER SEQUENCE (PKCS#12's AuthenticatedSafe, SafeContents)."""
    if content[:1] != b"\x30":
        return None
    try:
        node, after = _der_parse(content, 0, len(content), depth + 1, nodes)
    except (ValueError, IndexError):
        return None
    return [node] if after == len(content) else None
