"""A scripted dialogue server: canned replies and expected client lines, over raw sockets.

For NNTP (no Debian NNTP server offers STARTTLS without a news spool to set up) and for
servers that misbehave in ways a real daemon will not: no STARTTLS, refusals, malformed
or endless replies, stalls, hang-ups. A script is a sequence of steps run for every
connection; when it ends the server holds the connection until the client leaves.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.servers import pytls

MAX_LINE = 64 * 1024  # a longer client line is judged by its first 64 KiB


@dataclass(frozen=True)
class Send:
    data: bytes


@dataclass(frozen=True)
class Expect:
    """The client's next line must start with ``prefix``; otherwise the server hangs up."""

    prefix: bytes


@dataclass(frozen=True)
class ExpectBytes:
    """The client's next ``data`` bytes must be exactly these (binary protocols)."""

    data: bytes


@dataclass(frozen=True)
class StartTLS:
    """Run the server side of a TLS handshake, then hold the connection."""

    context: ssl.SSLContext


@dataclass(frozen=True)
class Close:
    pass


Step = Send | Expect | ExpectBytes | StartTLS | Close


class ScriptedServer:
    """Plays ``script`` to every client and records where a client went off script."""

    def __init__(self, *script: Step) -> None:
        self.script = script
        self.mismatches: list[str] = []

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        with ExitStack() as tls:  # closes the TLS socket; pytls.serve closes the plain one
            for step in self.script:
                if isinstance(step, Send):
                    conn.sendall(step.data)
                elif isinstance(step, Expect):
                    line = _read_line(conn)
                    if not line.startswith(step.prefix):
                        self.mismatches.append(f"expected {step.prefix!r}, got {line!r}")
                        return
                elif isinstance(step, ExpectBytes):
                    data = _read_exactly(conn, len(step.data))
                    if data != step.data:
                        self.mismatches.append(f"expected {step.data!r}, got {data!r}")
                        return
                elif isinstance(step, StartTLS):
                    conn = tls.enter_context(step.context.wrap_socket(conn, server_side=True))
                else:
                    return
            while conn.recv(4096):  # hold until the client leaves
                pass


def _read_line(conn: socket.socket) -> bytes:
    # Byte by byte, so nothing after the line (a ClientHello) is taken from the socket.
    line = b""
    while not line.endswith(b"\n") and len(line) < MAX_LINE:
        byte = conn.recv(1)
        if not byte:
            break
        line += byte
    return line


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size and (chunk := conn.recv(size - len(data))):
        data += chunk
    return data


@contextmanager
def serve_script(*script: Step) -> Iterator[tuple[int, ScriptedServer]]:
    """Serve ``script`` on a loopback port; yield (port, server)."""
    server = ScriptedServer(*script)
    with pytls.serve(server.handle) as port:
        yield port, server


@contextmanager
def nntp(directory: Path, cert: Path, key: Path) -> Iterator[dict[str, int]]:
    """An NNTP server as far as STARTTLS (RFC 4642), then TLS with ``cert``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    script = (
        Send(b"200 news.example.test InterNetNews server ready (posting ok)\r\n"),
        Expect(b"CAPABILITIES"),
        Send(b"101 Capability list:\r\nVERSION 2\r\nREADER\r\nSTARTTLS\r\nLIST ACTIVE NEWSGROUPS\r\n.\r\n"),
        Expect(b"STARTTLS"),
        Send(b"382 Begin TLS negotiation now\r\n"),
        StartTLS(context),
    )
    with serve_script(*script) as (port, _server):
        yield {"nntp": port}
