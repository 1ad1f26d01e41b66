"""Serve an aiohttp application over HTTPS on a free loopback port: the test doubles' runner."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web


@asynccontextmanager
async def serve_https(app: web.Application, cert: str, key: str) -> AsyncIterator[int]:
    """Yield the port ``app`` listens on at 127.0.0.1 with ``cert``/``key``; clean up after."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()
