"""The handshake of modules that check OCSP stapling: the same handshake, asking for a staple.

CPython's ``ssl`` can neither send the status_request extension nor hand back the OCSP
response a server staples (https://github.com/python/cpython/issues/88946). pyOpenSSL can
(``Connection.request_ocsp``, ``Context.set_ocsp_client_callback``); it is maintained by
PyCA next to ``cryptography``, which we already depend on, and it runs over memory BIOs, so
this handshake keeps the shape of :func:`ssl_exporter.tls.handshake`: one connection, one
handshake, and the same :class:`~ssl_exporter.tls.HandshakeOutcome` (presented chain,
verified chain or the path tried, OpenSSL's verify code and message, version, cipher), plus
the staple. The rest of the prober does not know which handshake ran.

Two differences worth knowing, both documented in docs/revocation.md:

- pyOpenSSL runs on the OpenSSL that ``cryptography``'s wheel bundles, not the system's. The
  context mirrors the standard probe context (the same cipher policy, OpenSSL's ``DEFAULT``
  at ``tls.SECURITY_LEVEL``; CPython's TLS 1.2 minimum; the system trust store files CPython
  uses), so verdicts agree in practice; the test suite compares both handshakes on the same
  servers.
- To learn OpenSSL's first verification error and still get the chain, the verify callback
  records the first failure and lets the handshake finish, where CPython aborts it with an
  alert. The outcome is the same; the server sees a completed handshake.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import dataclass
from typing import Any

from ssl_exporter import tls
from ssl_exporter.printable import describe
from ssl_exporter.tlssettings import TLS_VERSIONS, TLSConfig


class StaplingUnavailable(RuntimeError):
    """pyOpenSSL is not installed."""


@dataclass
class StapledOutcome(tls.HandshakeOutcome):
    # The DER OCSPResponse the server stapled; b"" when it sent none.
    ocsp_staple: bytes = b""


@dataclass
class _State:
    """What the callbacks learn about one connection (the context is shared)."""

    verify_code: int | None = None
    staple: bytes = b""


def build_context(config: TLSConfig) -> Any:
    """A pyOpenSSL client context equivalent to :func:`tls.build_client_context`'s."""
    try:
        from OpenSSL import SSL
    except ImportError:  # pragma: no cover - pyOpenSSL is a dependency
        raise StaplingUnavailable("stapling needs pyOpenSSL (pip install pyOpenSSL)") from None

    versions = {
        ssl.TLSVersion.TLSv1: SSL.TLS1_VERSION,
        ssl.TLSVersion.TLSv1_1: SSL.TLS1_1_VERSION,
        ssl.TLSVersion.TLSv1_2: SSL.TLS1_2_VERSION,
        ssl.TLSVersion.TLSv1_3: SSL.TLS1_3_VERSION,
    }
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_options(SSL.OP_NO_COMPRESSION)
    context.set_cipher_list(tls.PROBE_CIPHERS.encode("ascii"))  # the standard handshake's policy
    low = TLS_VERSIONS[config.min_version] if config.min_version else ssl.TLSVersion.TLSv1_2
    context.set_min_proto_version(versions[low])
    if config.max_version:
        context.set_max_proto_version(versions[TLS_VERSIONS[config.max_version]])
    try:
        if config.ca_file:
            context.load_verify_locations(config.ca_file)
        else:
            # The files CPython's load_default_certs() uses (the system OpenSSL's defaults),
            # not those of the OpenSSL bundled with cryptography.
            paths = ssl.get_default_verify_paths()
            cafile = paths.cafile if paths.cafile and os.path.exists(paths.cafile) else None
            capath = paths.capath if paths.capath and os.path.isdir(paths.capath) else None
            if cafile or capath:
                context.load_verify_locations(cafile, capath)
            else:
                context.set_default_verify_paths()
    except SSL.Error as exc:
        raise tls.ContextError("ca_file", f"no usable CA certificate in {config.ca_file}: {_describe(exc)}") from None
    if config.cert_file:
        try:
            context.use_certificate_chain_file(config.cert_file)
            context.use_privatekey_file(config.key_file or config.cert_file)
            context.check_privatekey()
        except SSL.Error as exc:
            key = "key_file" if config.key_file else "cert_file"
            raise tls.ContextError(key, f"cannot load client certificate and key: {_describe(exc)}") from None
    context.set_verify(SSL.VERIFY_PEER, _verify_callback)
    context.set_ocsp_client_callback(_ocsp_callback)
    return context


def _verify_callback(conn: Any, _cert: Any, errnum: int, _depth: int, ok: int) -> bool:
    state: _State = conn.get_app_data()
    if not ok and state.verify_code is None:
        state.verify_code = errnum  # OpenSSL's first error, the one CPython would report
    return True  # finish the handshake: we want the chain, version and cipher either way


def _ocsp_callback(conn: Any, ocsp_data: bytes, _data: Any) -> bool:
    state: _State = conn.get_app_data()
    state.staple = bytes(ocsp_data)
    return True  # judged later, with the verified chain in hand (ssl_exporter.revocation)


async def attempt(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    context: Any,
    server_name: str | None,
) -> StapledOutcome | tls.HandshakeFailure:
    """Run one TLS handshake that requests a stapled OCSP response.

    Same contract as :func:`ssl_exporter.tls.attempt`, over the same loop
    (:func:`ssl_exporter.tls.drive`): the outcome when the handshake completed
    (verification aside), else the failure, whose error is an ``ssl.SSLError`` (mapped from
    pyOpenSSL's errors, so that errors.classify reads them alike), ``OSError`` or
    ``ProbeFailure``. The failure names no ServerHello: cipher names come from the
    standard library's OpenSSL, which this context does not use.
    """
    from OpenSSL import SSL, crypto

    state = _State()
    conn = SSL.Connection(context, None)  # None: memory BIOs
    conn.set_app_data(state)
    conn.set_connect_state()
    if server_name:
        conn.set_tlsext_host_name(server_name.encode("ascii"))
    conn.request_ocsp()

    def step() -> bool:
        try:
            conn.do_handshake()
        except SSL.WantReadError:
            return False
        except SSL.Error as exc:
            raise as_ssl_error(exc) from None
        return True

    try:
        await tls.drive(reader, writer, step, conn.bio_write, conn.bio_shutdown, lambda: _pending(conn))
    except Exception as exc:
        return tls.HandshakeFailure(exc)

    presented_all = [crypto.dump_certificate(crypto.FILETYPE_ASN1, c) for c in conn.get_peer_cert_chain() or []]
    presented = presented_all[: tls.MAX_CHAIN_CERTS]
    path = [crypto.dump_certificate(crypto.FILETYPE_ASN1, c) for c in conn.get_verified_chain() or []]
    raw_version = conn.get_protocol_version_name()
    version = tls._OPENSSL_VERSIONS.get(raw_version, raw_version)
    failed = state.verify_code is not None
    return StapledOutcome(
        presented=presented,
        verified=None if failed else path,
        tried=path if failed else [],
        verify_code=state.verify_code,
        verify_message=_verify_message(state.verify_code) if failed else "",
        version=version,
        cipher=conn.get_cipher_name(),
        dropped_certs=len(presented_all) - len(presented),
        ocsp_staple=state.staple,
    )


async def handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    context: Any,
    server_name: str | None,
) -> StapledOutcome:
    """:func:`attempt`, raising the failure's error."""
    result = await attempt(reader, writer, context, server_name)
    if isinstance(result, tls.HandshakeFailure):
        raise result.error
    return result


def _pending(conn: Any) -> bytes:
    from OpenSSL import SSL

    chunks = []
    while True:
        try:
            chunk = conn.bio_read(65536)
        except SSL.WantReadError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _verify_message(code: int | None) -> str:
    # X509_verify_cert_error_string(), the text CPython puts in verify_message.
    try:
        from OpenSSL._util import ffi, lib

        return str(ffi.string(lib.X509_verify_cert_error_string(code)).decode("ascii", "replace"))
    except Exception:  # private API: fall back to the code alone
        return f"certificate verify error {code}"


def as_ssl_error(exc: Exception) -> ssl.SSLError:
    """pyOpenSSL's error as the ``ssl.SSLError`` CPython would raise, for errors.classify.

    pyOpenSSL gives OpenSSL's reason as text ("tlsv1 alert protocol version"); CPython's
    ``SSLError.reason`` is the same reason's name ("TLSV1_ALERT_PROTOCOL_VERSION").
    """
    from OpenSSL import SSL

    text = _describe(exc)
    if isinstance(exc, SSL.ZeroReturnError):
        return ssl.SSLZeroReturnError(6, text)
    if isinstance(exc, SSL.SysCallError) or "unexpected eof" in text.lower():
        return ssl.SSLEOFError(8, text or "EOF occurred in violation of protocol")
    reason = ""
    library = ""
    details = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    if details and isinstance(details[-1], tuple) and len(details[-1]) == 3:
        library, _function, reason_text = details[-1]
        reason = "_".join(str(reason_text).upper().split())
    error = ssl.SSLError(1, f"[{reason or 'SSL'}] {text}")
    error.reason = reason or None  # type: ignore[assignment]
    error.library = library or None  # type: ignore[assignment]
    return error


def _describe(exc: BaseException) -> str:
    args = exc.args[0] if exc.args else ""
    if isinstance(args, list):
        return "; ".join(str(part[-1]) for part in args if isinstance(part, tuple) and part) or type(exc).__name__
    return describe(exc)
