"""One probe, whoever asked for it: the service under the HTTP face and the check command.

:func:`parse_probe_request` validates the input (module, target, name to verify) the same
way for ``/probe`` and ``ssl-exporter check``, :func:`run_request` runs it under the module's
``target_policy`` and returns the :class:`~ssl_exporter.result.ProbeResult`, and
:mod:`ssl_exporter.describe` says what the result means in words. Nothing here knows HTTP,
HTML or Nagios: :mod:`ssl_exporter.server` turns :class:`BadRequest` into a 400 and
:mod:`ssl_exporter.check` into UNKNOWN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ssl_exporter import prepare
from ssl_exporter.probers import PROBERS
from ssl_exporter.probers.base import Prober, run_probe
from ssl_exporter.redact import redact_urls
from ssl_exporter.result import ProbeResult
from ssl_exporter.targets import TargetError, echo, parse_hostname


class BadRequest(ValueError):
    """Bad input to a probe: HTTP 400 (UNKNOWN for the check command) with this one-line message."""


@dataclass(frozen=True)
class ProbeRequest:
    """A validated probe request: what to probe, how, and which name to verify."""

    module: prepare.PreparedModule
    prober: Prober
    target: Any  # the prober's parsed target
    server_name: str


def parse_probe_request(cfg: prepare.PreparedConfig, module_name: str | None, raw_target: str | None,
                        hostname: str | None) -> ProbeRequest:
    """Validate probe input the same way for /probe and the check command; BadRequest if bad."""
    name = module_name or cfg.default_module
    module = cfg.modules.get(name)
    if module is None:
        raise BadRequest(f"unknown module {echo(name)}")
    if raw_target is None:
        raise BadRequest("target parameter is missing")
    prober = PROBERS[module.prober]
    try:
        target = prober.parse_target(raw_target, module)
        if hostname is not None:
            server_name = parse_hostname(hostname)
        else:
            server_name = module.tls_config.server_name or prober.default_server_name(target)
    except TargetError as exc:
        raise BadRequest(str(exc)) from None
    return ProbeRequest(module, prober, target, server_name)


async def run_request(req: ProbeRequest, timeout: float) -> ProbeResult:
    """Run a validated probe under its module's target_policy; TargetRefused if refused.

    The one place both faces run a probe. The policy is checked here for what needs no
    resolution (name globs, an IP-address target), and by the tcp prober on the addresses
    it resolved, just before it connects to them; a refusal there passes through
    :func:`run_probe` as the exception it is.
    """
    if req.module.policy is not None:
        req.module.policy.check_target(req.target)
    return await run_probe(req.prober, req.module, req.target, req.server_name, timeout)


def display_target(raw: str) -> str:
    """The target as given, for logs and pages, without a URL's password."""
    return redact_urls(raw)  # cheap for a target without "://" and "@": this runs on every probe
