"""TLS client contexts, the one handshake a probe makes, and the one loop every handshake runs.

The handshake is driven over ``ssl.MemoryBIO`` rather than ``asyncio``'s SSL transport:
that way one handshake yields both OpenSSL's verification verdict and the whole presented
chain, also when verification fails (``asyncio.open_connection(ssl=...)`` loses the SSL
object on failure), and the ServerHello passes through our hands, so the negotiated version
and cipher are known for broken certificates too (after a failed verification
``SSLObject.version()`` is None).

:func:`drive` is that loop, shared with pyOpenSSL's handshake (ssl_exporter.stapling);
:func:`attempt` returns the outcome, or a :class:`HandshakeFailure` that carries the
ServerHello's version and cipher when the handshake failed after it.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from ssl_exporter.errors import ProbeFailure
from ssl_exporter.printable import shorten
from ssl_exporter.result import TLSInfo
from ssl_exporter.tlssettings import TLS_VERSIONS, TLSConfig

# Bytes a handshake may read before the probe gives up: a real chain is a few KiB, and
# OpenSSL itself refuses certificate messages over 100 KiB.
MAX_HANDSHAKE_BYTES = 256 * 1024
# How many presented certificates we keep; the rest are counted in the log.
MAX_CHAIN_CERTS = 32

# The security level verdicts are given at: the default of OpenSSL 3 as Debian, Ubuntu and
# Fedora build it, and the level CPython sets on every context it creates.
SECURITY_LEVEL = 2
# The probe offers what `openssl s_client` offers: OpenSSL's DEFAULT list at that level.
# CPython's own default string has no RSA key exchange and no SHA-1 CBC suites, which older
# servers still need. Shared with the pyOpenSSL handshake (ssl_exporter.stapling).
PROBE_CIPHERS = f"DEFAULT:@SECLEVEL={SECURITY_LEVEL}"
# The fallback handshake (read_certificates_permissively) offers everything that can carry a
# certificate: anonymous suites cannot, so they are left out.
FALLBACK_CIPHERS = "ALL:!aNULL:@SECLEVEL=0"

_VERSIONS = {0x0304: "TLS 1.3", 0x0303: "TLS 1.2", 0x0302: "TLS 1.1", 0x0301: "TLS 1.0"}
_OPENSSL_VERSIONS = {"TLSv1.3": "TLS 1.3", "TLSv1.2": "TLS 1.2", "TLSv1.1": "TLS 1.1", "TLSv1": "TLS 1.0"}


class ContextError(ValueError):
    """A TLS setting that cannot be loaded; ``key`` names the tls_config key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def build_client_context(config: TLSConfig) -> ssl.SSLContext:
    """The SSL context for one module, built once per config load.

    Verification is always on (CERT_REQUIRED) so that ``ssl_chain_valid`` is honest even
    with ``insecure_skip_verify``, which only stops the verdict from failing the probe.
    OpenSSL's own hostname check is off: we match the name ourselves from the leaf, so that
    a chain error does not hide a hostname error (OpenSSL reports only its first error).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_ciphers(PROBE_CIPHERS)
    if config.ca_file:
        try:
            context.load_verify_locations(cafile=config.ca_file)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ContextError("ca_file", f"no usable CA certificate in {config.ca_file}: {_short(exc)}") from None
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    _load_client_cert(context, config)
    with warnings.catch_warnings():
        # Python deprecates TLS 1.0/1.1; a module that names them asks for them on purpose.
        warnings.simplefilter("ignore", DeprecationWarning)
        if config.min_version:
            context.minimum_version = TLS_VERSIONS[config.min_version]
        if config.max_version:
            context.maximum_version = TLS_VERSIONS[config.max_version]
    return context


def _load_client_cert(context: ssl.SSLContext, config: TLSConfig) -> None:
    if config.cert_file:
        try:
            context.load_cert_chain(config.cert_file, config.key_file)
        except (ssl.SSLError, OSError, ValueError) as exc:
            key = "key_file" if config.key_file else "cert_file"
            raise ContextError(key, f"cannot load client certificate and key: {_short(exc)}") from None


def build_fallback_context(config: TLSConfig) -> ssl.SSLContext:
    """The context of the fallback handshake, which only reads the presented certificates.

    TLS 1.0 and up, every cipher that carries a certificate, security level 0, servers
    without secure renegotiation accepted: what an old server needs. No verification here:
    the chain is judged afterwards at the probe's own level (ssl_exporter.chainverify).
    The module's client certificate is sent as in the probe, since a server may require it.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers(FALLBACK_CIPHERS)
    context.options |= getattr(ssl, "OP_LEGACY_SERVER_CONNECT", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0 is what it is for
        context.minimum_version = ssl.TLSVersion.TLSv1
    _load_client_cert(context, config)
    return context


def _short(exc: BaseException) -> str:
    # "[X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl found (_ssl.c:4149)"
    # -> "no certificate or crl found": the rest changes between Python builds.
    return re.sub(r"^\[[^\]]*\]\s*|\s*\(_ssl\.c:\d+\)$", "", shorten(exc)) or type(exc).__name__


@dataclass
class HandshakeOutcome:
    presented: list[bytes]  # DER, in the order the server sent them
    verified: list[bytes] | None  # the path OpenSSL built, leaf to root; None if it failed
    tried: list[bytes]  # on failure, the path OpenSSL tried (leaf first)
    verify_code: int | None  # X509_V_ERR_* when verification failed
    verify_message: str
    version: str | None
    cipher: str | None
    dropped_certs: int  # presented certificates beyond MAX_CHAIN_CERTS


@dataclass(frozen=True)
class HandshakeFailure:
    """A handshake that failed otherwise than in verification.

    ``error`` is what failed it (``ssl.SSLError``, ``OSError``, ``ProbeFailure``, ...), as
    errors.classify reads it; ``server_hello`` the version and cipher of the ServerHello
    received before the failure, if one was.
    """

    error: Exception
    server_hello: TLSInfo | None = None


async def attempt(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    context: ssl.SSLContext,
    server_name: str | None,
) -> HandshakeOutcome | HandshakeFailure:
    """Run one TLS handshake over an open connection.

    The outcome when the handshake completed or failed only in verification; otherwise
    the failure, with the ServerHello's version and cipher when it came before.
    """
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=False, server_hostname=server_name)
    hello = ServerHelloSniffer()
    verify_error: ssl.SSLCertVerificationError | None = None

    def step() -> bool:
        nonlocal verify_error
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLCertVerificationError as exc:
            verify_error = exc  # the handshake is over; the verdict and the chain are known
        return True

    try:
        await drive(reader, writer, step, incoming.write, incoming.write_eof, outgoing.read, hello)
    except Exception as exc:  # the exception itself is unchanged: errors.classify reads it alike
        return HandshakeFailure(exc, _server_hello(hello, context))

    presented_all = _unverified_chain(tls)
    presented = presented_all[:MAX_CHAIN_CERTS]
    negotiated = tls.cipher()
    cipher = negotiated[0] if negotiated else None
    if verify_error is None:
        return HandshakeOutcome(
            presented=presented,
            verified=_verified_chain(tls),
            tried=[],
            verify_code=None,
            verify_message="",
            version=_OPENSSL_VERSIONS.get(tls.version() or "", tls.version()),
            cipher=cipher,
            dropped_certs=len(presented_all) - len(presented),
        )
    # After a failed verification OpenSSL forgets the version, and the cipher too below
    # TLS 1.3; the ServerHello we passed through still has both.
    if cipher is None and hello.cipher_id is not None:
        cipher = cipher_name(context, hello.cipher_id)
    return HandshakeOutcome(
        presented=presented,
        verified=None,
        tried=_verified_chain(tls),
        verify_code=verify_error.verify_code,
        verify_message=verify_error.verify_message or str(verify_error),
        version=_VERSIONS.get(hello.version) if hello.version else None,
        cipher=cipher,
        dropped_certs=len(presented_all) - len(presented),
    )


def _server_hello(hello: ServerHelloSniffer, context: ssl.SSLContext) -> TLSInfo | None:
    if hello.version is None or hello.cipher_id is None:
        return None
    return TLSInfo(_VERSIONS.get(hello.version, f"0x{hello.version:04X}"), cipher_name(context, hello.cipher_id))


async def handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    context: ssl.SSLContext,
    server_name: str | None,
) -> HandshakeOutcome:
    """:func:`attempt`, raising the failure's error: for callers that do not need the ServerHello."""
    result = await attempt(reader, writer, context, server_name)
    if isinstance(result, HandshakeFailure):
        raise result.error
    return result


async def drive(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    step: Callable[[], bool],
    receive: Callable[[bytes], object],
    receive_eof: Callable[[], object],
    pending: Callable[[], bytes],
    hello: ServerHelloSniffer | None = None,
) -> None:
    """Drive one client handshake over memory BIOs: the one loop of every handshake we make
    (this module's, and pyOpenSSL's in ssl_exporter.stapling).

    ``step`` advances the TLS engine: True once the handshake is over (the caller's step
    notes a verification failure it let through), False when it needs the peer's bytes; it
    raises when the handshake failed, and what the engine has to send then (its alert, as a
    client would) is sent, best effort. ``receive``/``receive_eof`` give the engine the
    peer's bytes or end, ``pending`` takes what it has to send. At most MAX_HANDSHAKE_BYTES
    are read; ``hello`` sees them first.
    """
    received = 0
    while True:
        try:
            if step():
                break
        except Exception:
            _send_quietly(writer, pending)
            raise
        await _send(writer, pending)
        data = await reader.read(16384)
        if not data:
            receive_eof()
            continue
        received += len(data)
        if received > MAX_HANDSHAKE_BYTES:
            raise ProbeFailure("oversized", f"handshake exceeded {MAX_HANDSHAKE_BYTES} bytes")
        if hello is not None:
            hello.feed(data)
        receive(data)
    _send_quietly(writer, pending)


async def close_stream(writer: asyncio.StreamWriter) -> None:
    """Close a probe's connection at once and collect its error.

    abort(), not close(): the handshake has flushed what we had to send, and close() would
    wait for a peer that never reads. Awaiting wait_closed() marks asyncio's stored error
    (a RST, a broken pipe while sending our alert) as retrieved; left alone, the garbage
    collector logs it as "Future exception was never retrieved", one line per such probe.
    """
    writer.transport.abort()
    try:
        await writer.wait_closed()
    except Exception:  # noqa: BLE001 - the connection's fate is already recorded
        pass


async def _send(writer: asyncio.StreamWriter, pending: Callable[[], bytes]) -> None:
    data = pending()
    if data:
        writer.write(data)
        await writer.drain()


def _send_quietly(writer: asyncio.StreamWriter, pending: Callable[[], bytes]) -> None:
    # Best effort: the peer may already be gone, and the probe's verdict does not depend on it.
    try:
        data = pending()
        if data and not writer.is_closing():
            writer.write(data)
    except (OSError, RuntimeError):
        pass


def _der_list(certs: object) -> list[bytes]:
    if not certs:
        return []
    return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in certs]  # type: ignore[attr-defined]


def _unverified_chain(tls: ssl.SSLObject) -> list[bytes]:
    # Public from 3.13; the same method on the private _sslobj on 3.10-3.12.
    getter = getattr(tls, "get_unverified_chain", None) or tls._sslobj.get_unverified_chain  # type: ignore[attr-defined]
    return _der_list(getter())


def _verified_chain(tls: ssl.SSLObject) -> list[bytes]:
    getter = getattr(tls, "get_verified_chain", None) or tls._sslobj.get_verified_chain  # type: ignore[attr-defined]
    return _der_list(getter())


def cipher_name(context: ssl.SSLContext, cipher_id: int) -> str:
    """OpenSSL's name for an IANA cipher-suite number, or its hex code if unknown."""
    for entry in context.get_ciphers():
        if entry["id"] & 0xFFFF == cipher_id:
            return str(entry["name"])
    return f"0x{cipher_id:04X}"


class ServerHelloSniffer:
    """Reads the negotiated version and cipher suite from the plaintext ServerHello.

    Only the first handshake records are looked at; everything after the ServerHello is
    ignored (in TLS 1.3 it is encrypted anyway).
    """

    _LIMIT = 64 * 1024

    def __init__(self) -> None:
        self.version: int | None = None
        self.cipher_id: int | None = None
        self._records = b""
        self._handshake = b""
        self._done = False

    def feed(self, data: bytes) -> None:
        if self._done:
            return
        self._records += data
        while len(self._records) >= 5 and not self._done:
            content_type, length = self._records[0], struct.unpack(">H", self._records[3:5])[0]
            if len(self._records) < 5 + length:
                break
            fragment, self._records = self._records[5 : 5 + length], self._records[5 + length :]
            if content_type != 22:  # not a handshake record: no ServerHello coming in clear
                self._done = True
                break
            self._handshake += fragment
            self._parse_handshake()
        if len(self._records) + len(self._handshake) > self._LIMIT:
            self._done = True

    def _parse_handshake(self) -> None:
        buf = self._handshake
        if len(buf) < 4:
            return
        msg_type, length = buf[0], int.from_bytes(buf[1:4], "big")
        if len(buf) < 4 + length:
            return
        self._done = True
        if msg_type == 2:
            self._parse_server_hello(buf[4 : 4 + length])

    def _parse_server_hello(self, body: bytes) -> None:
        try:
            legacy_version = struct.unpack(">H", body[0:2])[0]
            pos = 2 + 32
            pos += 1 + body[pos]  # session id
            self.cipher_id = struct.unpack(">H", body[pos : pos + 2])[0]
            pos += 2 + 1  # cipher suite, compression method
            version = legacy_version
            if pos + 2 <= len(body):
                end = pos + 2 + struct.unpack(">H", body[pos : pos + 2])[0]
                pos += 2
                while pos + 4 <= end:
                    ext_type, ext_len = struct.unpack(">HH", body[pos : pos + 4])
                    if ext_type == 43 and ext_len == 2:  # supported_versions
                        version = struct.unpack(">H", body[pos + 4 : pos + 6])[0]
                    pos += 4 + ext_len
            self.version = version
        except (struct.error, IndexError):
            self.version = self.cipher_id = None
