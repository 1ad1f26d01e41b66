"""The ``rdap`` prober: a domain's registration expiry, status and registrar (docs/domains.md).

The target is a domain name, or any name under it, or a URL: ``www.example.co.uk`` is
reduced to the registrable domain ``example.co.uk`` with the ICANN section of the Public
Suffix List (the ``publicsuffixlist`` package, which ships it). Private suffixes such as
``github.io`` are not registries, so they are not used: ``user.github.io`` is ``github.io``.
The lookup itself, its cache and its bounds live in :mod:`ssl_exporter.rdap`.
"""

from __future__ import annotations

from functools import lru_cache

from publicsuffixlist import PublicSuffixList

from ssl_exporter import rdap, rdapsettings
from ssl_exporter.prepare import PreparedModule
from ssl_exporter.probers.base import Prober, ProbeRecorder
from ssl_exporter.targets import Target, TargetError, echo, parse_target


@lru_cache(maxsize=1)
def _suffix_list() -> PublicSuffixList:
    return PublicSuffixList(only_icann=True)  # reads the list shipped with the package once


def registrable_domain(raw: str) -> str:
    """The registrable domain of a target (ASCII, lower case); TargetError when there is none."""
    target = parse_target(raw, 443)
    if target.ip is not None:
        raise TargetError(f"target {echo(raw)}: an IP address has no domain registration")
    domain = _suffix_list().privatesuffix(target.host)
    if domain is None:
        raise TargetError(f"target {echo(raw)}: {target.host} is a public suffix, not a registrable domain")
    return str(domain)


async def probe(rec: ProbeRecorder, module: PreparedModule, target: Target, server_name: str) -> None:
    cfg = module.rdap
    assert cfg is not None and module.ssl_context is not None and rec.deadline is not None
    with rec.phase("rdap"):
        outcome = await rdap.lookup(target.host, cfg, module.ssl_context, module.policy, module.timeout,
                                    rec.deadline, rec.note, module.caches.rdap,
                                    trust=module.tls_config)
    rec.domain = outcome.info
    info = outcome.info
    if info is not None:
        rec.note(f"domain {info.domain}: expiry {_when(info.expiry)}, registrar {info.registrar or 'unknown'}, "
                 f"status {', '.join(info.statuses) or 'none'}" + (f", from {info.server}" if info.server else ""))
        trouble = rdap.trouble(info.statuses)
        if trouble:
            rec.note(f"domain {info.domain}: trouble status {', '.join(trouble)}")
    if outcome.reason:
        if info is not None and info.lookup_time is not None:
            rec.note(f"serving the last good answer, fetched {_when(info.lookup_time)}")
        rec.fail("rdap", outcome.reason, outcome.detail)


def _when(timestamp: float | None) -> str:
    return "unknown" if timestamp is None else rdapsettings.iso_time(timestamp)


PROBER = Prober(
    parse_target=lambda raw, module: Target(registrable_domain(raw), 443),
    probe=probe,
    default_server_name=lambda target: target.host,
    rule="lookup",
)
