"""Hostile TLS servers and malformed certificates, for the robustness suite.

Two kinds of servers live here:

- Socket handlers for :func:`tests.servers.pytls.serve` (a thread per connection), each
  misbehaving in one way: silent, drip-feeding, oversized, garbage, alerts, resets, early
  close. The TLS 1.2 ones write their records by hand, so they can send what no TLS library
  would: a ServerHello the client accepts followed by a Certificate message of arbitrary
  bytes (malformed DER, a 2 MB message, hundreds of certificates).
- :func:`main`: an asyncio server process (``python -m tests.servers.hostile``) for the leak
  test, so that the thousands of server-side sockets it handles are neither in the test
  process's file-descriptor table nor competing for its GIL.

Certificates with contents a builder refuses (negative or 30-byte serials, names that are
not UTF-8) are made by patching the DER of a real certificate and signing it again, so that
they still verify where the point is what the exporter reports about their contents.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

# --- DER ------------------------------------------------------------------------------------


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element (single-byte tag) with a definite length."""
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def elements(der: bytes) -> list[tuple[int, bytes]]:
    """The (tag, content) elements of a DER sequence's content, in order."""
    out = []
    pos = 0
    while pos < len(der):
        tag, first = der[pos], der[pos + 1]
        pos += 2
        if first & 0x80:
            count = first & 0x7F
            length = int.from_bytes(der[pos : pos + count], "big")
            pos += count
        else:
            length = first
        out.append((tag, der[pos : pos + length]))
        pos += length
    return out


def encode(items: list[tuple[int, bytes]]) -> bytes:
    return b"".join(tlv(tag, content) for tag, content in items)


# TBSCertificate fields by index (with the explicit [0] version present).
SERIAL, ISSUER, VALIDITY, SUBJECT = 1, 3, 4, 5


def patch_certificate(
    der: bytes, issuer_key: ec.EllipticCurvePrivateKey, **fields: bytes
) -> bytes:
    """Replace TBSCertificate fields (DER elements, by name: serial, issuer, subject, ...)
    and sign the result again with ``issuer_key`` (ECDSA with SHA-256, as tests.pki signs).
    """
    (_, cert_content), = elements(der)
    (_, tbs), (alg_tag, alg), _signature = elements(cert_content)
    tbs_items = elements(tbs)
    index = {"serial": SERIAL, "issuer": ISSUER, "validity": VALIDITY, "subject": SUBJECT}
    for name, value in fields.items():
        (tbs_items[index[name]],) = elements(value)
    new_tbs = tlv(0x30, encode(tbs_items))
    signature = issuer_key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    return tlv(0x30, new_tbs + tlv(alg_tag, alg) + tlv(0x03, b"\x00" + signature))


def der_integer(value: int, length: int | None = None) -> bytes:
    """An INTEGER; with ``length``, exactly that many content bytes (two's complement)."""
    size = length or max(1, (value.bit_length() + 8) // 8)
    return tlv(0x02, value.to_bytes(size, "big", signed=True))


def der_name_cn(value: bytes, string_tag: int = 0x0C) -> bytes:
    """A Name with one CN whose string bytes are ``value`` as given (UTF8String by default)."""
    oid_cn = tlv(0x06, bytes([0x55, 0x04, 0x03]))
    return tlv(0x30, tlv(0x31, tlv(0x30, oid_cn + tlv(string_tag, value))))


EMPTY_NAME = tlv(0x30, b"")


# --- TLS 1.2 records, written by hand ---------------------------------------------------------

HANDSHAKE, ALERT = 22, 21
TLS12 = b"\x03\x03"
# ECDHE-ECDSA-AES128-GCM-SHA256: offered by Python's default client context.
CIPHER = 0xC02B


def record(content_type: int, payload: bytes) -> bytes:
    """``payload`` as records of ``content_type``, fragmented at 16 KiB."""
    out = []
    for start in range(0, max(len(payload), 1), 16384):
        fragment = payload[start : start + 16384]
        out.append(bytes([content_type]) + TLS12 + struct.pack(">H", len(fragment)) + fragment)
    return b"".join(out)


def handshake_message(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def server_hello(session_id: bytes = b"", cipher: int = CIPHER) -> bytes:
    """A TLS 1.2 ServerHello choosing ``cipher``, with secure renegotiation (OpenSSL 3
    insists on it)."""
    # The random must not end in the TLS 1.3 downgrade sentinel; os.urandom never will.
    extensions = struct.pack(">HH", 0xFF01, 1) + b"\x00"
    body = (TLS12 + os.urandom(32) + bytes([len(session_id)]) + session_id
            + struct.pack(">H", cipher) + b"\x00" + struct.pack(">H", len(extensions)) + extensions)
    return handshake_message(2, body)


def certificate_message(ders: list[bytes]) -> bytes:
    chain = b"".join(len(d).to_bytes(3, "big") + d for d in ders)
    return handshake_message(11, len(chain).to_bytes(3, "big") + chain)


def read_client_hello(conn: socket.socket, timeout: float = 5.0) -> bytes:
    """Read one whole TLS record (the ClientHello) from ``conn``."""
    conn.settimeout(timeout)
    data = b""
    while len(data) < 5 or len(data) < 5 + struct.unpack(">H", data[3:5])[0]:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("client left before its ClientHello")
        data += chunk
    return data


def wait_for_hangup(conn: socket.socket, timeout: float = 30.0) -> None:
    """Hold the connection until the client closes it (its probe ended)."""
    conn.settimeout(timeout)
    while conn.recv(65536):
        pass


# --- the hostile handlers ------------------------------------------------------------------------

Handler = Callable[[socket.socket], None]


def silent(conn: socket.socket) -> None:
    """Accept and never speak."""
    wait_for_hangup(conn)


def drip_feed(conn: socket.socket) -> None:
    """One byte a second of a plausible TLS handshake record, forever."""
    read_client_hello(conn)
    payload = record(HANDSHAKE, server_hello())
    conn.settimeout(5)
    for i in range(10**6):
        conn.sendall(payload[i % len(payload) : i % len(payload) + 1])
        time.sleep(1.0)  # the server's behaviour, not synchronisation


def huge_certificate_message(size: int = 2 * 1024 * 1024) -> Handler:
    """ServerHello, then a Certificate message of ``size`` bytes (one real certificate
    repeated would be the same to the client: it must not read it all)."""
    body = os.urandom(size)
    message = record(HANDSHAKE, server_hello() + handshake_message(11, body))

    def handle(conn: socket.socket) -> None:
        read_client_hello(conn)
        conn.settimeout(10)
        conn.sendall(message)
        wait_for_hangup(conn)

    return handle


def endless_hello_requests(conn: socket.socket) -> None:
    """HelloRequest messages without end: OpenSSL ignores them during a handshake, so only
    the exporter's own byte cap stops a client from reading forever."""
    read_client_hello(conn)
    chunk = record(HANDSHAKE, handshake_message(0, b"") * 4096)  # 16 KiB of HelloRequests
    conn.settimeout(5)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        conn.sendall(chunk)


def certificates(ders: list[bytes], then: str = "hangup") -> Handler:
    """ServerHello + a Certificate message holding ``ders`` as they are (any bytes)."""
    flight = record(HANDSHAKE, server_hello() + certificate_message(ders))

    def handle(conn: socket.socket) -> None:
        read_client_hello(conn)
        conn.settimeout(10)
        conn.sendall(flight)
        wait_for_hangup(conn)

    return handle


def garbage(conn: socket.socket) -> None:
    """Bytes that are not TLS, after reading the ClientHello."""
    read_client_hello(conn)
    conn.sendall(b"\x00\xff garbage \x17\x03" + os.urandom(4096))
    wait_for_hangup(conn)


def garbage_looking_like_tls(conn: socket.socket) -> None:
    """A handshake record whose ServerHello is truncated nonsense."""
    read_client_hello(conn)
    conn.sendall(record(HANDSHAKE, handshake_message(2, b"\x03\x03\xff")))
    wait_for_hangup(conn)


def alert_at_once(conn: socket.socket) -> None:
    """A fatal handshake_failure alert as soon as the client connects."""
    conn.sendall(bytes([ALERT]) + TLS12 + b"\x00\x02" + b"\x02\x28")
    wait_for_hangup(conn)


def reset_after_client_hello(conn: socket.socket) -> None:
    """Read the ClientHello, then close with SO_LINGER 0: the kernel sends a RST."""
    read_client_hello(conn)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def close_after_server_hello(conn: socket.socket) -> None:
    """Send a ServerHello, then close cleanly (FIN)."""
    read_client_hello(conn)
    conn.sendall(record(HANDSHAKE, server_hello()))
    conn.shutdown(socket.SHUT_WR)
    wait_for_hangup(conn)


# --- the leak-test server process ------------------------------------------------------------


async def _serve_many(cert_file: str, key_file: str) -> None:
    """Serve the leak test's failure kinds on loopback; print their ports as one JSON line."""

    async def garbage_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(4096)
            writer.write(b"\x00\xff not TLS at all\r\n" * 8)
            await writer.drain()
            await reader.read(4096)
        except OSError:
            pass
        finally:
            writer.close()

    async def close_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def tls_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(4096)
        except OSError:
            pass
        finally:
            writer.close()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    loop = asyncio.get_running_loop()
    # The client aborts every handshake (its verification fails): not worth a log line.
    loop.set_exception_handler(lambda loop, ctx: None)
    servers = {
        "garbage": await asyncio.start_server(garbage_handler, "127.0.0.1", 0, backlog=1024),
        "close": await asyncio.start_server(close_handler, "127.0.0.1", 0, backlog=1024),
        "self_signed": await asyncio.start_server(tls_handler, "127.0.0.1", 0, ssl=context, backlog=1024),
    }
    ports = {name: s.sockets[0].getsockname()[1] for name, s in servers.items()}
    print(json.dumps(ports), flush=True)
    # Serve until the test closes our stdin (or dies).
    await loop.run_in_executor(None, sys.stdin.read)


def main() -> None:
    asyncio.run(_serve_many(sys.argv[1], sys.argv[2]))


if __name__ == "__main__":
    main()
