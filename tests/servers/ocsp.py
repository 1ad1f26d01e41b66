"""Revocation fixtures: `openssl ocsp` as a responder, an HTTP server for CRLs and canned
OCSP answers, and certificates that name them (AIA, CRL distribution points).

The certificates must name the responder's URL before the responder starts (its index holds
their serials), so the port is chosen first with :func:`free_port`; openssl prints
``ACCEPT [::]:PORT`` once it listens, which is our readiness signal (read with a deadline).
Do not poll it with a bare TCP connect: the responder serves one connection at a time and a
connection that closes without a request wedges it (OpenSSL 3.0.19). OpenSSL 3.0 cannot bind
the responder to one address (``-port 127.0.0.1:N`` is refused): it listens on every
interface, and answers only from its index file.
"""

from __future__ import annotations

import datetime as dt
import http.server
import re
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from tests.pki import DAY, NOW, Cert, make_cert

# --- certificates ----------------------------------------------------------------------


def issue(
    issuer: Cert,
    cn: str,
    *,
    dns: tuple[str, ...] = (),
    ca: bool = False,
    ocsp_url: str | None = None,
    crl_url: str | None = None,
    must_staple: bool = False,
    eku: tuple[x509.ObjectIdentifier, ...] | None = None,
    subject: x509.Name | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    extra: tuple[x509.ExtensionType, ...] = (),
) -> Cert:
    """A certificate from ``issuer`` naming an OCSP responder and/or a CRL, P-256 key."""
    extensions: list[x509.ExtensionType] = []
    if ocsp_url:
        extensions.append(x509.AuthorityInformationAccess([
            x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))
        ]))
    if crl_url:
        extensions.append(x509.CRLDistributionPoints([
            x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url)], None, None, None)
        ]))
    if must_staple:
        extensions.append(x509.TLSFeature([x509.TLSFeatureType.status_request]))
    return make_cert(cn, issuer=issuer, dns=dns, ca=ca, not_before=not_before, not_after=not_after,
                     eku=eku if eku is not None else (() if ca else (ExtendedKeyUsageOID.SERVER_AUTH,)),
                     subject=subject, extensions=(*extensions, *extra))


def responder_cert(issuer: Cert, cn: str = "OCSP Responder", *, ocsp_signing: bool = True) -> Cert:
    """A delegated OCSP responder certificate issued by ``issuer``."""
    eku = (ExtendedKeyUsageOID.OCSP_SIGNING,) if ocsp_signing else (ExtendedKeyUsageOID.CLIENT_AUTH,)
    return issue(issuer, cn, eku=eku)


def openssl_serial(cert: Cert) -> str:
    """The serial as OpenSSL's index.txt holds it: upper-case hex, whole bytes."""
    text = f"{cert.cert.serial_number:X}"
    return text if len(text) % 2 == 0 else "0" + text


# --- openssl ocsp ------------------------------------------------------------------------


@dataclass
class Entry:
    cert: Cert
    revoked_at: dt.datetime | None = None
    reason: str | None = None  # openssl's name: keyCompromise, superseded, ...


@dataclass
class Responder:
    url: str
    port: int
    respout: Path  # the last response the responder sent (openssl -respout)
    process: subprocess.Popen[bytes] = field(repr=False)

    def last_response(self) -> ocsp.OCSPResponse:
        return ocsp.load_der_ocsp_response(self.respout.read_bytes())


def _asn1_time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%y%m%d%H%M%SZ")


@contextmanager
def openssl_responder(directory: Path, ca: Cert, signer: Cert, entries: list[Entry], *, port: int = 0,
                      nmin: int | None = 60, extra_args: tuple[str, ...] = ()) -> Iterator[Responder]:
    """``openssl ocsp`` answering for certificates of ``ca``, signing as ``signer``.

    ``port`` 0 lets openssl choose; certificates that must name the responder are made
    first with a port from :func:`free_port`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for entry in entries:
        expiry = _asn1_time(entry.cert.cert.not_valid_after_utc)
        if entry.revoked_at is None:
            status, revoked = "V", ""
        else:
            status = "R"
            revoked = _asn1_time(entry.revoked_at) + (f",{entry.reason}" if entry.reason else "")
        subject = "/" + "/".join(entry.cert.cert.subject.rfc4514_string().split(","))
        lines.append(f"{status}\t{expiry}\t{revoked}\t{openssl_serial(entry.cert)}\tunknown\t{subject}\n")
    (directory / "index.txt").write_text("".join(lines))
    (directory / "ca.pem").write_bytes(ca.pem)
    (directory / "signer.pem").write_bytes(signer.pem)
    (directory / "signer.key").write_bytes(signer.key_pem)
    respout = directory / "last-response.der"
    args = ["openssl", "ocsp", "-index", str(directory / "index.txt"), "-port", str(port),
            "-rsigner", str(directory / "signer.pem"), "-rkey", str(directory / "signer.key"),
            "-CA", str(directory / "ca.pem"), "-respout", str(respout), "-ignore_err", *extra_args]
    if nmin is not None:
        args += ["-nmin", str(nmin)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        port = _accept_port(process)  # printed once it listens: ready
        yield Responder(f"http://127.0.0.1:{port}/", port, respout, process)
    finally:
        process.terminate()
        process.communicate(timeout=10)


def free_port() -> int:
    """A port that was free a moment ago (openssl ocsp cannot take a bound socket)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accept_port(process: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """Read openssl's "ACCEPT [::]:PORT PID=..." line, with a deadline."""
    assert process.stdout is not None
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    line = result[0].decode() if result else ""
    match = re.search(r"ACCEPT .*:(\d+)", line)
    if not match:
        process.kill()
        _, err = process.communicate(timeout=5)
        raise RuntimeError(f"openssl ocsp did not start: {line!r} {err.decode()[-500:]}")
    return int(match.group(1))


def openssl_response(directory: Path, ca: Cert, signer: Cert, entries: list[Entry], cert: Cert,
                     *, nmin: int = 60) -> bytes:
    """A DER OCSP response made by ``openssl ocsp`` without a server (for ssl_stapling_file)."""
    directory.mkdir(parents=True, exist_ok=True)
    with openssl_responder(directory, ca, signer, entries, nmin=nmin) as responder:
        (directory / "cert.pem").write_bytes(cert.pem)
        subprocess.run(["openssl", "ocsp", "-issuer", str(directory / "ca.pem"), "-cert", str(directory / "cert.pem"),
                        "-url", responder.url, "-noverify", "-respout", str(directory / "staple.der")],
                       check=True, capture_output=True, timeout=20)
    return (directory / "staple.der").read_bytes()


# --- canned answers (what openssl cannot be made to say) ---------------------------------


def ocsp_response(cert: Cert, issuer: Cert, *, signer: Cert | None = None, status: str = "good",
                  this_update: dt.datetime | None = None, next_update: dt.datetime | None = None,
                  revoked_at: dt.datetime | None = None) -> bytes:
    """An OCSP response built with cryptography, e.g. one whose nextUpdate has passed."""
    signer = signer or issuer
    statuses = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
                "unknown": ocsp.OCSPCertStatus.UNKNOWN}
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=cert.cert, issuer=issuer.cert, algorithm=hashes.SHA1(), cert_status=statuses[status],
        this_update=this_update or NOW, next_update=next_update or NOW + DAY,
        revocation_time=revoked_at if status == "revoked" else None,
        revocation_reason=x509.ReasonFlags.key_compromise if status == "revoked" else None,
    ).responder_id(ocsp.OCSPResponderEncoding.HASH, signer.cert)
    if signer is not issuer:
        builder = builder.certificates([signer.cert])
    return builder.sign(signer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def crl(issuer: Cert, revoked: list[tuple[Cert, dt.datetime, x509.ReasonFlags | None]] = (),  # type: ignore[assignment]
        *, last_update: dt.datetime | None = None, next_update: dt.datetime | None = None,
        signer: Cert | None = None, pem: bool = False) -> bytes:
    """A CRL naming ``issuer`` as its issuer, signed by ``signer`` (the issuer by default)."""
    builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
               .last_update(last_update or NOW - dt.timedelta(hours=1))
               .next_update(next_update or NOW + DAY))
    for cert, when, reason in revoked:
        entry = x509.RevokedCertificateBuilder().serial_number(cert.cert.serial_number).revocation_date(when)
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    signed = builder.sign((signer or issuer).key, hashes.SHA256())
    return signed.public_bytes(serialization.Encoding.PEM if pem else serialization.Encoding.DER)


# --- a plain HTTP server -------------------------------------------------------------------


@dataclass
class HTTPServer:
    base: str
    routes: dict[str, bytes | Callable[[bytes], bytes]]
    requests: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base + path


@contextmanager
def http_server(routes: dict[str, bytes | Callable[[bytes], bytes]] | None = None) -> Iterator[HTTPServer]:
    """Serve fixed bodies (or ``f(request_body)``) by path on 127.0.0.1; 404 otherwise."""
    state = HTTPServer("", dict(routes or {}))

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, body_in: bytes) -> None:
            state.requests.append(self.path)
            route = state.routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            body = route(body_in) if callable(route) else route
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            self._answer(b"")

        def do_POST(self) -> None:  # noqa: N802
            self._answer(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
