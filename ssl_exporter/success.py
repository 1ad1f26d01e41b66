"""The one place that decides ``ssl_probe_success``.

Probers record facts (errors with their stage, certificates, verdicts, revocation answers,
each address's own facts); :func:`decide` turns them into the probe's success under the
module's enforce settings (:class:`Enforcement`). It is called once per probe, at the end of
:func:`ssl_exporter.probers.base.run_probe`, and decides each address of an
``all_addresses`` probe the same way before the whole.

The decision table (docs/metrics.md, ``ssl_probe_success``):

- Any error outside the ``verify`` stage fails the probe: a verification error is reported
  and only fails the probe through the verdicts below.
- ``handshake`` probers (tcp): the probe's own handshake completed (not only the fallback
  one), the leaf was read, and the chain and the name verified unless
  ``insecure_skip_verify``; a revoked certificate fails it when revocation is enforced.
  With ``all_addresses``: at least one address was probed and every address succeeded.
- ``certificates`` probers (file, kubeconfig, kubernetes): at least one certificate read.
- ``lookup`` probers (rdap): no error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ssl_exporter.result import AddressResult, ProbeResult

# What a prober's facts are about, and so which row of the table decides its success.
Rule = Literal["handshake", "certificates", "lookup"]


@dataclass(frozen=True)
class Enforcement:
    """The settings of a module that decide what fails its probes."""

    rule: Rule
    insecure_skip_verify: bool = False  # verification failures reported, not enforced
    revocation: bool = False  # a module with revocation checks and revocation.enforce


@dataclass(frozen=True)
class Decision:
    success: bool
    notes: tuple[str, ...] = ()  # why a reported failure did not fail the probe, for its log


def decide(facts: ProbeResult, settings: Enforcement) -> Decision:
    """The success of one probe (or of one address of it) from what it learned."""
    if any(error.stage != "verify" for error in facts.errors):
        return Decision(False)
    if settings.rule == "certificates":
        return Decision(bool(facts.certs))
    if settings.rule == "lookup":
        return Decision(True)
    if facts.addresses is not None:
        return Decision(bool(facts.addresses) and all(a.result.success for a in facts.addresses))
    return _decide_handshake(facts, settings)


def _decide_handshake(facts: ProbeResult, settings: Enforcement) -> Decision:
    # Certificates from the fallback handshake never make a success: the probe's own
    # handshake failed (and said why, in a handshake-stage error).
    if not facts.handshake_success or facts.fallback_handshake or facts.positions[:1] != ("0",):
        return Decision(False)
    verified = bool(facts.chain_valid and facts.hostname_valid)
    revoked = any(check.status == "revoked" for check in facts.revocation)
    notes: list[str] = []  # every failure reported but not enforced, whatever else failed
    if not verified and settings.insecure_skip_verify:
        notes.append("insecure_skip_verify: verification failures reported but not enforced")
    if revoked and not settings.revocation:
        notes.append("revocation.enforce is false: revoked certificates reported but not enforced")
    enforced_failure = (not verified and not settings.insecure_skip_verify) or (revoked and settings.revocation)
    return Decision(not enforced_failure, tuple(notes))


def decided(facts: ProbeResult, settings: Enforcement, note: Callable[[str], None]) -> ProbeResult:
    """``facts`` with ``success`` decided, for each address first; the decisions' notes go
    to ``note`` (the probe's log), each address's naming it."""
    if facts.addresses is not None:
        addresses = [AddressResult(item.address, decided(item.result, settings, _naming(item.address, note)))
                     for item in facts.addresses]
        facts = dataclasses.replace(facts, addresses=tuple(addresses))
    decision = decide(facts, settings)
    for message in decision.notes:
        note(message)
    return dataclasses.replace(facts, success=decision.success)


def _naming(address: str, note: Callable[[str], None]) -> Callable[[str], None]:
    """``note`` with each line naming the address, as the address's own notes do (tcp)."""
    host = f"[{address}]" if ":" in address else address

    def named(message: str) -> None:
        note(f"[{host}] {message}")

    return named
