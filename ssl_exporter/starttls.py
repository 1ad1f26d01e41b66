"""STARTTLS dialogues: data, one table, run by one runner.

Each protocol's dialogue is a :class:`Dialogue` in :data:`DIALOGUES`; :func:`negotiate`
runs it over an open connection before the TLS handshake. Reads are bounded in line
length and total bytes; the probe's deadline bounds time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Dialogue:
    default_port: int


DIALOGUES: dict[str, Dialogue] = {}


async def negotiate(
    protocol: str,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    server_name: str,
    note: Callable[[str], None],
) -> None:
    """Run ``protocol``'s dialogue until the server is ready for the TLS handshake.

    Raises ``ProbeFailure`` with a starttls_* reason, or OSError/EOF on network trouble.
    """
    raise NotImplementedError(protocol)
