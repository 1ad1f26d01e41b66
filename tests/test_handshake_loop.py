"""One handshake loop (tls.drive) for the standard and the stapling handshake; a failed
handshake returns its ServerHello in a HandshakeFailure, not on the exception."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

import pytest

from ssl_exporter import config, stapling, tls
from ssl_exporter.errors import ProbeFailure, classify
from ssl_exporter.result import TLSInfo
from tests.conftest import PKI
from tests.servers import hostile, pytls

HOST = "loop.example.test"


async def _attempt(port: int, run: Any) -> tls.HandshakeOutcome | tls.HandshakeFailure:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        result: tls.HandshakeOutcome | tls.HandshakeFailure = await run(reader, writer)
        return result
    finally:
        await tls.close_stream(writer)


def _contexts(pki: PKI) -> tuple[Any, Any]:
    tls_config = config.TLSConfig(ca_file=str(pki.root_file))
    return tls.build_client_context(tls_config), stapling.build_context(tls_config)


async def test_a_failure_after_the_server_hello_carries_it(pki: PKI) -> None:
    context, _ = _contexts(pki)
    with pytls.serve(hostile.close_after_server_hello) as port:
        failure = await _attempt(port, lambda r, w: tls.attempt(r, w, context, HOST))
    assert isinstance(failure, tls.HandshakeFailure)
    assert classify(failure.error, "handshake").reason == "closed"
    assert failure.server_hello == TLSInfo("TLS 1.2", tls.cipher_name(context, hostile.CIPHER))
    assert not hasattr(failure.error, "server_hello")  # nothing rides on the exception any more
    # The raising form, for callers that need no ServerHello, raises that same error.
    with pytls.serve(hostile.close_after_server_hello) as port, pytest.raises(type(failure.error)):
        await _attempt(port, lambda r, w: tls.handshake(r, w, context, HOST))


async def test_a_failure_before_any_server_hello_has_none(pki: PKI) -> None:
    context, _ = _contexts(pki)
    with pytls.serve(pytls.garbage) as port:
        failure = await _attempt(port, lambda r, w: tls.attempt(r, w, context, HOST))
    assert isinstance(failure, tls.HandshakeFailure)
    assert failure.server_hello is None
    assert classify(failure.error, "handshake").reason == "tls_protocol"


async def test_both_handshakes_stop_at_the_same_byte_cap(pki: PKI) -> None:
    """The cap lives in the one loop, so the pyOpenSSL handshake has it too."""
    context, pyopenssl_context = _contexts(pki)
    for run in (lambda r, w: tls.attempt(r, w, context, HOST),
                lambda r, w: stapling.attempt(r, w, pyopenssl_context, HOST)):
        with pytls.serve(hostile.endless_hello_requests) as port:
            failure = await _attempt(port, run)
        assert isinstance(failure, tls.HandshakeFailure)
        assert isinstance(failure.error, ProbeFailure) and failure.error.reason == "oversized"


def test_only_the_loop_reads_from_the_peer() -> None:
    """No second handshake loop: in tls.py and stapling.py, only tls.drive reads the stream."""
    readers = []
    for module in (tls, stapling):
        tree = ast.parse(Path(module.__file__ or "").read_text())
        for function in ast.walk(tree):
            if isinstance(function, ast.AsyncFunctionDef | ast.FunctionDef):
                for node in ast.walk(function):
                    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                            and node.func.attr == "read" and ast.unparse(node.func.value) == "reader"):
                        readers.append(f"{module.__name__}.{function.name}")
    assert readers == ["ssl_exporter.tls.drive"]
