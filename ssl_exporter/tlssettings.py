"""The TLS settings of a module (``tls_config:``): a pure value, next to the TLS code.

tls.py and stapling.py build their contexts from a :class:`TLSConfig`; config.py parses it.
Kept in a module of its own, importing nothing of the exporter, so that the settings
(config.py) and the mechanisms (tls.py, stapling.py) both depend on it and not on each other.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}


@dataclass(frozen=True)
class TLSConfig:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False
    min_version: str | None = None
    max_version: str | None = None
    # A failed handshake for policy reasons is followed by one permissive handshake that only
    # reads the certificates (docs/metrics.md, "Fallback handshake").
    fallback_handshake: bool = True
