"""A Python TLS server on loopback that serves a given chain, and raw misbehaving servers.

Listening sockets are bound and listening before the fixture returns, so a probe can
connect at once: no waiting for readiness.
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False


@contextmanager
def serve(handle: Callable[[socket.socket], None], host: str = "127.0.0.1") -> Iterator[int]:
    """Serve ``handle(conn)`` for each connection on ``host``; yield the port."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                handle(self.request)
            except (OSError, ssl.SSLError):
                pass  # probes hang up as they please

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("S", (_Server,), {"address_family": family})
    with server_class((host, 0), Handler) as server:
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            thread.join()


class TLSServer:
    """Records what it saw (SNI per connection) so tests can assert on it."""

    def __init__(self, cert_path: Path, key_path: Path, max_version: ssl.TLSVersion | None = None,
                 client_ca: Path | None = None) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert_path, key_path)
        if max_version is not None:
            self.context.maximum_version = max_version
        if client_ca is not None:
            self.context.load_verify_locations(client_ca)
            self.context.verify_mode = ssl.CERT_REQUIRED
        self.server_names: list[str | None] = []
        self.peers: list[str] = []  # the client address of each connection
        self.context.sni_callback = self._sni

    def _sni(self, sslobj: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        self.server_names.append(name)

    def handle(self, conn: socket.socket) -> None:
        self.peers.append(conn.getpeername()[0])
        conn.settimeout(5)
        with self.context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)  # until the client hangs up


@contextmanager
def tls_server(cert_path: Path, key_path: Path, **kwargs: object) -> Iterator[tuple[int, TLSServer]]:
    server = TLSServer(cert_path, key_path, **kwargs)  # type: ignore[arg-type]
    with serve(server.handle) as port:
        yield port, server


def silent(conn: socket.socket) -> None:
    """Accept and never speak; hold the connection until the client leaves."""
    conn.settimeout(30)
    while conn.recv(4096):
        pass


def garbage(conn: socket.socket) -> None:
    conn.sendall(bytes(range(256)) * 4)
    conn.settimeout(5)
    conn.recv(4096)


def plain_http(conn: socket.socket) -> None:
    """What a plain-HTTP server answers to a ClientHello."""
    conn.settimeout(5)
    conn.recv(4096)
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


@contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that is bound but not listening: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def http_proxy_answering(status_line: bytes, requests: list[bytes]) -> Callable[[socket.socket], None]:
    """A stand-in HTTP proxy that records each request head and answers ``status_line``."""
    def handle(conn: socket.socket) -> None:
        conn.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data and (chunk := conn.recv(4096)):
            data += chunk
        requests.append(data)
        conn.sendall(status_line + b"\r\nContent-Length: 0\r\n\r\n")
    return handle
