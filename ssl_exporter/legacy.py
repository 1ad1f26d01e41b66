"""The legacy-TLS-version check: which old TLS versions a server still accepts.

:func:`legacy_versions` makes one extra handshake per legacy version a module asks about
(``legacy_versions: [TLS10, TLS11]``), restricted to that version. OpenSSL 3 refuses TLS 1.0
and 1.1 at its default security level (their signature algorithms use SHA-1), so those
handshakes use ``@SECLEVEL=0``: the question is what the server accepts, not what we would
trust. Verification is off for them; the main handshake already judged the certificates.
"""

from __future__ import annotations

import asyncio
import ssl
import warnings
from collections.abc import Awaitable, Callable, Sequence

from ssl_exporter import tls
from ssl_exporter.errors import ProbeFailure

LEGACY = {"TLS10": ("TLS 1.0", ssl.TLSVersion.TLSv1), "TLS11": ("TLS 1.1", ssl.TLSVersion.TLSv1_1)}
# Built once per version and never changed after: they depend on no setting (verification
# off, only the version), so they are neither probe state nor per load, and stay here rather
# than in prepare.Caches or a PreparedModule.
_contexts: dict[str, ssl.SSLContext] = {}


def legacy_context(version: str) -> ssl.SSLContext:
    """A client context that offers only ``version`` (``TLS10``/``TLS11``), built once."""
    if version not in _contexts:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # "ssl.TLSVersion.TLSv1 is deprecated"
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
            context.minimum_version = context.maximum_version = LEGACY[version][1]
        _contexts[version] = context
    return _contexts[version]


Connector = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def legacy_versions(versions: Sequence[str], connect: Connector, server_name: str | None,
                          note: Callable[[str], None] = lambda _m: None) -> dict[str, bool]:
    """Whether the server completes a handshake restricted to each version.

    ``connect`` opens a connection ready for the handshake (proxy and STARTTLS done). A
    version whose answer is not clear (the connection failed, the deadline passed: the
    caller cancels) is left out: unknown is absent.
    """

    async def one(version: str) -> bool | None:
        label = LEGACY[version][0]
        try:
            context = legacy_context(version)
        except (ValueError, ssl.SSLError) as exc:  # an OpenSSL built without this version
            note(f"legacy {label}: cannot be offered by this OpenSSL: {exc}")
            return None
        try:
            reader, writer = await connect()
        except (OSError, ssl.SSLError, ProbeFailure, EOFError, asyncio.IncompleteReadError) as exc:
            note(f"legacy {label}: could not connect: {exc}")
            return None
        try:
            outcome = await tls.handshake(reader, writer, context, server_name)
        except ssl.SSLError as exc:
            note(f"legacy {label}: refused ({exc.reason or exc})")
            return False
        except (OSError, ProbeFailure, EOFError) as exc:
            note(f"legacy {label}: no answer: {exc}")
            return None
        finally:
            await tls.close_stream(writer)
        accepted = outcome.version == label
        note(f"legacy {label}: {'accepted' if accepted else 'refused'} (negotiated {outcome.version})")
        return accepted

    results = await asyncio.gather(*(one(v) for v in versions))
    return {LEGACY[v][0]: r for v, r in zip(versions, results, strict=True) if r is not None}
