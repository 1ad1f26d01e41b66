"""The ``ari:`` settings of a module (docs/renewal.md): which ACME CAs to ask, and how.

Pure values: config.py parses ``ari:`` with :func:`parse_config`; the HTTPS context for
the CA's servers and the module's target policy are built per load by ssl_exporter.prepare
into an :class:`ssl_exporter.ari.AriClient`.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ssl_exporter.yamlrules import redact_url


@dataclass(frozen=True)
class CertFacts:
    """What in a certificate says which CA issued it (ssl_exporter.ari reads them)."""

    key_id: bytes | None
    serial: int
    ca_issuers_hosts: tuple[str, ...]


@dataclass(frozen=True)
class CAEntry:
    """One CA: what in a certificate identifies it, and its ACME directory URL."""

    directory: str
    ca_issuers_hosts: tuple[str, ...] = ()  # globs on the AIA caIssuers URL's host
    key_ids: tuple[bytes, ...] = ()  # authority key identifiers (the issuing CA keys)

    def matches(self, facts: CertFacts) -> bool:
        if facts.key_id is not None and facts.key_id in self.key_ids:
            return True
        return any(fnmatch.fnmatchcase(host, glob) for host in facts.ca_issuers_hosts for glob in self.ca_issuers_hosts)


# The big public ACME CAs that answer renewalInfo, matched on the host of the AIA caIssuers
# URL of the certificates they issue. Only entries whose directory and hosts are certain:
# Let's Encrypt's production intermediates (R3, R10, R11, E5, E6, ...) are published under
# http://<name>.i.lencr.org/. Staging ("stg-...") certificates do not match on purpose.
BUILTIN_CAS: tuple[CAEntry, ...] = (
    CAEntry(directory="https://acme-v02.api.letsencrypt.org/directory",
            ca_issuers_hosts=("r*.i.lencr.org", "e*.i.lencr.org")),
)


@dataclass(frozen=True)
class AriConfig:
    """``ari:`` of a module (docs/configuration.md); absent means no ARI requests."""

    cas: tuple[CAEntry, ...] = ()  # configured entries, tried before the built-in ones
    builtin: bool = True  # use BUILTIN_CAS too
    ca_file: str | None = None  # trust for the ACME servers' HTTPS; None: the system's
    proxy_url: str | None = None  # None: the module's tcp.proxy_url, if any

    def find(self, facts: CertFacts) -> CAEntry | None:
        for entry in (*self.cas, *(BUILTIN_CAS if self.builtin else ())):
            if entry.matches(facts):
                return entry
        return None


class AriConfigError(ValueError):
    """An ``ari:`` block that cannot be used; the message starts with its key path."""


def parse_config(raw: Any, path: str, base_dir: str) -> AriConfig:
    """Parse ``ari:`` (``ari: {}`` or ``ari:`` alone enables it with the built-in CAs)."""
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise AriConfigError(f"{path}: expected a mapping")
    known = {"cas", "builtin_cas", "ca_file", "proxy_url"}
    for key in raw:
        if key not in known:
            raise AriConfigError(f"{path}.{key}: unknown key (expected one of {', '.join(sorted(known))})")
    builtin = raw.get("builtin_cas", True)
    if not isinstance(builtin, bool):
        raise AriConfigError(f"{path}.builtin_cas: expected bool")
    cas_raw = raw.get("cas") or []
    if not isinstance(cas_raw, list):
        raise AriConfigError(f"{path}.cas: expected a list")
    cas = tuple(_parse_ca(item, f"{path}.cas[{i}]") for i, item in enumerate(cas_raw))
    ca_file = raw.get("ca_file")
    if ca_file is not None:  # loaded (and refused if unusable) with the module's runtime
        if not isinstance(ca_file, str):
            raise AriConfigError(f"{path}.ca_file: expected string")
        ca_file = os.path.join(base_dir, ca_file)
    proxy_url = raw.get("proxy_url")
    if proxy_url is not None and not isinstance(proxy_url, str):
        raise AriConfigError(f"{path}.proxy_url: expected string")
    return AriConfig(cas=cas, builtin=builtin, ca_file=ca_file, proxy_url=proxy_url)


def _parse_ca(raw: Any, path: str) -> CAEntry:
    if not isinstance(raw, Mapping):
        raise AriConfigError(f"{path}: expected a mapping")
    known = {"directory", "ca_issuers_hosts", "key_ids"}
    for key in raw:
        if key not in known:
            raise AriConfigError(f"{path}.{key}: unknown key (expected one of {', '.join(sorted(known))})")
    directory = raw.get("directory")
    if not isinstance(directory, str) or urlsplit(directory).scheme != "https" or not urlsplit(directory).hostname:
        raise AriConfigError(f"{path}.directory: expected an https:// ACME directory URL")
    hosts = raw.get("ca_issuers_hosts") or []
    if not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
        raise AriConfigError(f"{path}.ca_issuers_hosts: expected a list of host name patterns")
    ids_raw = raw.get("key_ids") or []
    if not isinstance(ids_raw, list) or not all(isinstance(k, str) for k in ids_raw):
        raise AriConfigError(f"{path}.key_ids: expected a list of hex key identifiers")
    key_ids = []
    for text in ids_raw:
        try:
            key_ids.append(bytes.fromhex(text.replace(":", "")))
        except ValueError:
            raise AriConfigError(f"{path}.key_ids: {text!r} is not hex (like 'a1:b2:...' or 'a1b2...')") from None
    if not hosts and not key_ids:
        raise AriConfigError(f"{path}: give ca_issuers_hosts or key_ids, or the entry matches nothing")
    return CAEntry(directory=directory, ca_issuers_hosts=tuple(h.lower() for h in hosts), key_ids=tuple(key_ids))


def as_dict(config: AriConfig) -> dict[str, Any]:
    """The block as configuration, for /config."""
    out: dict[str, Any] = {"builtin_cas": config.builtin}
    if config.cas:
        out["cas"] = [{"directory": c.directory,
                       **({"ca_issuers_hosts": list(c.ca_issuers_hosts)} if c.ca_issuers_hosts else {}),
                       **({"key_ids": [k.hex(":") for k in c.key_ids]} if c.key_ids else {})} for c in config.cas]
    if config.ca_file:
        out["ca_file"] = config.ca_file
    if config.proxy_url:
        out["proxy_url"] = redact_url(config.proxy_url)
    return out
