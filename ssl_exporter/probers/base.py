"""The runner every probe goes through, and what probers record on.

A prober is a coroutine ``probe(recorder, module, target, server_name)`` that records what
it learns on a :class:`ProbeRecorder` and lets expected exceptions propagate; the runner
applies the deadline, maps those exceptions, once, to ``(stage, reason)``, and has
:mod:`ssl_exporter.success` decide the probe's success from the facts recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client.core import GaugeMetricFamily

from ssl_exporter import ari, success
from ssl_exporter.errors import EXHAUSTION_ERRNOS, OutOfResources, ProbeAborted, ProbeFailure, classify
from ssl_exporter.prepare import PreparedModule as Module
from ssl_exporter.redact import redact_urls
from ssl_exporter.result import (
    AddressResult,
    AriCheck,
    CAAResult,
    CertInfo,
    DomainInfo,
    ProbeError,
    ProbeResult,
    ReadError,
    RevocationCheck,
    TLSInfo,
)
from ssl_exporter.success import Enforcement, Rule

log = logging.getLogger(__name__)


class ProbeRecorder:
    """Mutable notes of one probe in progress; :meth:`result` freezes them."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.stage = "resolve"
        self.phases: dict[str, float] = {}
        self.log: list[str] = []
        self.errors: list[ProbeError] = []
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
        self.fallback_handshake: bool | None = None
        self.fallback_tls: TLSInfo | None = None
        self.domain: DomainInfo | None = None  # rdap prober
        # tcp.all_addresses: each address's own result (ssl_exporter.probers.tcp).
        self.addresses: tuple[AddressResult, ...] | None = None
        self.addresses_resolved = 0
        self.caa: CAAResult | None = None  # modules with caa: (ssl_exporter.caa)
        self.ari: tuple[AriCheck, ...] = ()

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
        message = redact_urls(message)  # debug output and the log page show notes
        self.log.append(f"{time.perf_counter() - self.started:7.3f}s {message}")

    def fail(self, stage: str, reason: str, detail: str = "") -> None:
        detail = redact_urls(detail)  # shown in debug output, pages, logs and check output
        error = ProbeError(stage, reason, detail)
        if all((e.stage, e.reason) != (stage, reason) for e in self.errors):
            self.errors.append(error)
        self.note(f"FAILED stage={stage} reason={reason}" + (f": {detail}" if detail else ""))

    def result(self) -> ProbeResult:
        """The facts recorded, frozen; ``success`` is not decided here (False) but by
        ssl_exporter.success at the end of run_probe."""
        return ProbeResult(
            success=False,
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
            fallback_handshake=self.fallback_handshake,
            fallback_tls=self.fallback_tls,
            domain=self.domain,
            addresses=self.addresses,
            addresses_resolved=self.addresses_resolved,
            caa=self.caa,
            ari=self.ari,
        )


ProbeFn = Callable[[ProbeRecorder, Module, Any, str], Awaitable[None]]
TargetParser = Callable[[str, Module], Any]


@dataclass(frozen=True)
class Prober:
    parse_target: TargetParser  # raises targets.TargetError on bad input (HTTP 400)
    probe: ProbeFn
    default_server_name: Callable[[Any], str]
    # Which row of ssl_exporter.success's table decides the probe's success from its facts:
    # "handshake" (tcp), "lookup" (rdap), or "certificates" for the probers that read them
    # at rest (file, and kube's two, which keep the default).
    rule: Rule = "certificates"


def enforcement(prober: Prober, module: Module) -> Enforcement:
    """The settings of ``module`` that decide what fails a probe by ``prober``."""
    return Enforcement(
        rule=prober.rule,
        insecure_skip_verify=module.tls_config.insecure_skip_verify,
        revocation=module.revocation is not None and module.revocation.enforce,
    )


# Exceptions a prober may let through; anything else is a bug, logged with its traceback.
_EXPECTED = (OSError, ssl.SSLError, ProbeFailure, EOFError, asyncio.IncompleteReadError)
EXPECTED_ERRORS = _EXPECTED  # for probers that record a part's failure themselves (tcp.all_addresses)


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
        task = asyncio.create_task(runner(prober, module, target, server_name, timeout))
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
    # ARI (docs/renewal.md), for every prober in this one place: within what is left of the
    # deadline, from cache otherwise; it never fails the probe.
    await ari.apply(recorder, module.ari_client, served=module.prober == "tcp", proxy=module.tcp.proxy_url)
    # The one place ssl_probe_success is decided, from the facts the prober recorded.
    result = success.decided(recorder.result(), enforcement(prober, module), recorder.note)
    return dataclasses.replace(result, log=tuple(recorder.log))  # with the decision's notes


# Where a probe runs: in this process, or in a worker process while --web.workers > 1 runs a
# pool (ssl_exporter.workers sets it); coalescing above stays in this process either way.
runner: Callable[[Prober, Module, Any, str, float], Coroutine[Any, Any, ProbeResult]] = _run_probe


# --- worker threads for the at-rest probers ----------------------------------------------------

_T = TypeVar("_T")


class ReadAbandoned(Exception):
    """Raised in a read thread at a checkpoint once its probe is cancelled or past its deadline."""


class _Job:
    __slots__ = ("deadline", "cancelled")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline  # time.monotonic()
        self.cancelled = False


_current = threading.local()


def checkpoint() -> None:
    """In a read thread: stop (ReadAbandoned) if the probe it works for has been given up.

    Long loops (walks, many files, many Secrets) call this as they go, so that a timed-out
    probe frees its thread at the next step instead of running on for minutes. Outside a
    ReadPool thread it does nothing.
    """
    job: _Job | None = getattr(_current, "job", None)
    if job is not None and (job.cancelled or time.monotonic() > job.deadline):
        raise ReadAbandoned("the probe was given up (deadline passed)")


class ReadPool:
    """The worker threads of one at-rest prober (file, kubeconfig, kubernetes).

    Blocking work (walks, reads, parsing) runs here, never on the event loop nor in the
    default executor (which resolves names). Each prober has its own few threads, so that
    slow reads of one cannot starve the others; a probe that times out marks its job
    cancelled and the thread stops at its next :func:`checkpoint`. A thread that is still
    busy past its job's deadline (a read stuck in the kernel, e.g. on a dead NFS server)
    is counted in ``ssl_exporter_read_threads_stuck``.
    """

    ALL: list[ReadPool] = []

    def __init__(self, prober: str, workers: int = 4) -> None:
        self.prober = prober
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"ssl-exporter-read-{prober}")
        self._running: set[_Job] = set()
        self._lock = threading.Lock()
        ReadPool.ALL.append(self)

    async def run(self, deadline: float | None, func: Callable[..., _T], *args: object) -> _T:
        """``func(*args)`` in one of this pool's threads; ``deadline`` in event-loop time."""
        loop = asyncio.get_running_loop()
        remaining = 3600.0 if deadline is None else deadline - loop.time()
        job = _Job(time.monotonic() + remaining)
        try:
            return await loop.run_in_executor(self._executor, self._call, job, func, args)
        finally:
            job.cancelled = True  # done, timed out or cancelled: any later checkpoint stops

    def _call(self, job: _Job, func: Callable[..., _T], args: tuple[object, ...]) -> _T:
        _current.job = job
        with self._lock:
            self._running.add(job)
        try:
            checkpoint()  # given up while queued: do not start
            return func(*args)
        finally:
            with self._lock:
                self._running.discard(job)
            _current.job = None

    def busy(self) -> int:
        """Threads working now."""
        with self._lock:
            return len(self._running)

    def stuck(self) -> int:
        """Threads still working for a probe whose deadline has passed."""
        now = time.monotonic()
        with self._lock:
            return sum(1 for job in self._running if now > job.deadline)


class ReadPoolCollector:
    """``ssl_exporter_read_threads_stuck{prober}`` for the exporter's own /metrics."""

    def collect(self) -> Iterable[Any]:
        family = GaugeMetricFamily("ssl_exporter_read_threads_stuck",
                                   "Read threads of an at-rest prober still busy past their probe's deadline.",
                                   labels=["prober"])
        for pool in ReadPool.ALL:
            family.add_metric([pool.prober], float(pool.stuck()))
        yield family
