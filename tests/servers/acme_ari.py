"""A loopback ACME stand-in for ACME Renewal Information (RFC 9773): directory + renewalInfo.

Debian's pebble (2.4) predates ARI and answers 404 to every renewalInfo path, so the tests
that need windows ask this server instead. It speaks HTTPS with a certificate of the test
PKI for 127.0.0.1, serves ``/directory`` (a JSON object naming ``renewalInfo``) and
``/renewal-info/<certID>``, and answers per certificate what the test set with
:meth:`AriServer.set`: a window (future or past), a malformed body, a slow answer (held until
the test ends), a 404 or an error, with or without ``Retry-After``. An unknown certificate
gets 404, as from a real CA.

The certificate ID is decoded here independently of the exporter (base64url without padding,
the serial as a signed big-endian DER INTEGER), so an exporter that built it wrongly gets 404.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import ssl
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509


@dataclass(frozen=True)
class Reply:
    """What renewalInfo answers for one certificate."""

    status: int = 200
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    body: bytes | None = None  # sent as is (malformed answers)
    retry_after: str | None = None
    slow: bool = False  # hold the answer until the server stops


def window(start: dt.datetime, end: dt.datetime, retry_after: str | None = None) -> Reply:
    return Reply(start=start, end=end, retry_after=retry_after)


def _decode(part: str) -> bytes:
    if "=" in part:
        raise ValueError("padding is not allowed in an ARI certificate ID")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def identify(cert: x509.Certificate) -> tuple[bytes, int]:
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    assert aki is not None
    return aki, cert.serial_number


@dataclass
class AriServer:
    port: int = 0
    replies: dict[tuple[bytes, int], Reply] = field(default_factory=dict)
    renewal_info: bool = True  # False: the directory names no renewalInfo (a CA without ARI)
    requests: Counter[str] = field(default_factory=Counter)  # path kind -> count
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/directory"

    def set(self, cert: x509.Certificate, reply: Reply) -> None:
        with self.lock:
            self.replies[identify(cert)] = reply

    def count(self, kind: str) -> int:
        with self.lock:
            return self.requests[kind]

    def reply_for(self, cert_id: str) -> Reply:
        try:
            key_part, serial_part = cert_id.split(".")
            key = (_decode(key_part), int.from_bytes(_decode(serial_part), "big", signed=True))
        except (ValueError, binascii.Error):
            return Reply(status=400, body=b'{"type":"urn:ietf:params:acme:error:malformed"}')
        with self.lock:
            return self.replies.get(key, Reply(status=404, body=b'{"type":"urn:ietf:params:acme:error:notFound"}'))


@contextmanager
def ari_server(cert_file: Path, key_file: Path) -> Iterator[AriServer]:
    state = AriServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/directory":
                state.requests["directory"] += 1
                base = f"https://127.0.0.1:{state.port}"
                directory: dict[str, Any] = {"newNonce": f"{base}/nonce", "newAccount": f"{base}/account",
                                             "newOrder": f"{base}/order"}
                if state.renewal_info:
                    directory["renewalInfo"] = f"{base}/renewal-info"
                self._send(200, json.dumps(directory).encode())
                return
            if not self.path.startswith("/renewal-info/"):
                self._send(404, b"")
                return
            with state.lock:
                state.requests["renewal-info"] += 1
            reply = state.reply_for(self.path.removeprefix("/renewal-info/"))
            if reply.slow:
                state.release.wait(timeout=60)
            body = reply.body
            if body is None:
                assert reply.start is not None and reply.end is not None
                body = json.dumps({"suggestedWindow": {"start": _rfc3339(reply.start), "end": _rfc3339(reply.end)},
                                   "explanationURL": "https://127.0.0.1/explanation"}).encode()
            self._send(reply.status, body, reply.retry_after)

        def _send(self, status: int, body: bytes, retry_after: str | None = None) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up (a slow answer past its deadline)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
