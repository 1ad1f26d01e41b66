"""The runner every probe goes through, and what probers record on.

A prober is a coroutine ``probe(recorder, module, target, server_name)`` that records what
it learns on a :class:`ProbeRecorder` and lets expected exceptions propagate; the runner
applies the deadline and maps those exceptions, once, to ``(stage, reason)``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ssl_exporter.config import Module
from ssl_exporter.errors import EXHAUSTION_ERRNOS, OutOfResources, ProbeAborted, ProbeFailure, classify
from ssl_exporter.result import CertInfo, ProbeError, ProbeResult, ReadError, RevocationCheck, TLSInfo

log = logging.getLogger(__name__)


class ProbeRecorder:
    """Mutable notes of one probe in progress; :meth:`result` freezes them."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.stage = "resolve"
        self.phases: dict[str, float] = {}
        self.log: list[str] = []
        self.errors: list[ProbeError] = []
        self.success = False
        self.certs: tuple[CertInfo, ...] = ()
        self.positions: tuple[str, ...] = ()
        self.read_errors: tuple[ReadError, ...] = ()
        self.handshake_success: bool | None = None
        self.chain_valid: bool | None = None
        self.hostname_valid: bool | None = None
        self.verified_chain_expiry: float | None = None
        self.tls: TLSInfo | None = None
        self.client_cert: CertInfo | None = None
        # Revocation and depth checks (docs/revocation.md). When the probe must be done, in
        # loop time (set by run_probe): revocation fetches and legacy-version handshakes stop
        # a little before it, so that the certificate data survives.
        self.deadline: float | None = None
        self.revocation: tuple[RevocationCheck, ...] = ()
        self.ocsp_stapled: bool | None = None
        self.legacy_versions: dict[str, bool] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase; the time counts even when the phase ends in an error or timeout."""
        self.stage = name
        begin = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - begin

    def note(self, message: str) -> None:
        self.log.append(f"{time.perf_counter() - self.started:7.3f}s {message}")

    def fail(self, stage: str, reason: str, detail: str = "") -> None:
        error = ProbeError(stage, reason, detail)
        if all((e.stage, e.reason) != (stage, reason) for e in self.errors):
            self.errors.append(error)
        self.note(f"FAILED stage={stage} reason={reason}" + (f": {detail}" if detail else ""))

    def result(self) -> ProbeResult:
        return ProbeResult(
            success=self.success and not self._enforced_errors(),
            duration=time.perf_counter() - self.started,
            phases=dict(self.phases),
            errors=tuple(self.errors),
            certs=self.certs,
            positions=self.positions,
            read_errors=self.read_errors,
            handshake_success=self.handshake_success,
            chain_valid=self.chain_valid,
            hostname_valid=self.hostname_valid,
            verified_chain_expiry=self.verified_chain_expiry,
            tls=self.tls,
            client_cert=self.client_cert,
            log=tuple(self.log),
            revocation=self.revocation,
            ocsp_stapled=self.ocsp_stapled,
            legacy_versions=dict(self.legacy_versions),
        )

    def _enforced_errors(self) -> bool:
        # Verification errors are reported but only fail the probe when the prober says so
        # (insecure_skip_verify); any other error always fails it.
        return any(e.stage != "verify" for e in self.errors)


ProbeFn = Callable[[ProbeRecorder, Module, Any, str], Awaitable[None]]
TargetParser = Callable[[str, Module], Any]


@dataclass(frozen=True)
class Prober:
    parse_target: TargetParser  # raises targets.TargetError on bad input (HTTP 400)
    probe: ProbeFn
    default_server_name: Callable[[Any], str]


# Exceptions a prober may let through; anything else is a bug, logged with its traceback.
_EXPECTED = (OSError, ssl.SSLError, ProbeFailure, EOFError, asyncio.IncompleteReadError)


# Probes running now, by what makes them identical: a second request for the same probe
# (an HA pair of Prometheus servers scrapes every target twice) waits for the first one's
# answer instead of opening another connection.
_IN_FLIGHT: dict[tuple[int, str, str, float], asyncio.Task[ProbeResult]] = {}


async def run_probe(
    prober: Prober, module: Module, target: Any, server_name: str, timeout: float
) -> ProbeResult:
    """Run one probe within ``timeout`` seconds, from resolution to the answer.

    Identical concurrent probes (same module object — so the same config load —, target,
    name and timeout) share one run. The run is a task of its own and shielded, so a
    caller that goes away does not cancel it for the others.
    """
    key = (id(module), str(target), server_name, timeout)
    task = _IN_FLIGHT.get(key)
    if task is None:
        task = asyncio.create_task(_run_probe(prober, module, target, server_name, timeout))
        _IN_FLIGHT[key] = task
        task.add_done_callback(lambda done: _forget(key, done))
    return await asyncio.shield(task)


def cancel_all() -> int:
    """Cancel every probe in flight (shutdown); how many there were."""
    tasks = [task for task in _IN_FLIGHT.values() if not task.done()]
    for task in tasks:
        task.cancel()
    return len(tasks)


def _forget(key: tuple[int, str, str, float], task: asyncio.Task[ProbeResult]) -> None:
    _IN_FLIGHT.pop(key, None)
    if not task.cancelled():
        task.exception()  # retrieved here too, in case every caller went away


async def _run_probe(
    prober: Prober, module: Module, target: Any, server_name: str, timeout: float
) -> ProbeResult:
    recorder = ProbeRecorder()
    recorder.deadline = asyncio.get_running_loop().time() + timeout  # for checks that must end before it
    recorder.note(f"probe module={module.name} target={target} name={server_name} timeout={timeout:g}s")
    try:
        async with asyncio.timeout(timeout):
            await prober.probe(recorder, module, target, server_name)
    except ProbeAborted:
        raise
    except TimeoutError:
        recorder.fail(recorder.stage, "timeout", f"deadline of {timeout:g}s passed")
    except _EXPECTED as exc:
        if isinstance(exc, OSError) and exc.errno in EXHAUSTION_ERRNOS:
            raise OutOfResources(f"{recorder.stage}: {exc.strerror or exc}") from None
        error = classify(exc, recorder.stage)
        recorder.fail(error.stage, error.reason, error.detail)
    except Exception as exc:  # a bug must cost one probe, not the exporter
        log.exception("probe crashed", extra={"fields": {"target": str(target), "module": module.name}})
        recorder.fail(recorder.stage, "internal_error", f"{type(exc).__name__}: {exc}")
    return recorder.result()
