"""The HTTP side: /probe, /probe/log, /metrics, /, /-/healthy, /-/ready, /-/reload and /config.

Before a probe runs: 400 for bad input, 403 for a target the ``target_policy`` refuses
(:mod:`ssl_exporter.access`), 503 beyond ``--probe.max-concurrent`` probes in flight. With a
``--web.config.file``, basic auth and the configured headers apply to every endpoint
(:mod:`ssl_exporter.webconfig`).
"""

from __future__ import annotations

import asyncio
import logging
import platform
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import yaml
from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest

from ssl_exporter import __version__, config, lru, metrics, prepare, yamlrules
from ssl_exporter.access import TargetRefused
from ssl_exporter.errors import OutOfResources
from ssl_exporter.history import History, ProbeRecord
from ssl_exporter.probers.base import ReadPoolCollector
from ssl_exporter.result import ProbeResult, all_errors
from ssl_exporter.service import BadRequest, display_target, parse_probe_request, run_request
from ssl_exporter.targets import echo
from ssl_exporter.web import SECURITY_HEADERS, debug_text, landing_page, log_page
from ssl_exporter.webconfig import AuthBusy, BasicAuth, WebConfig

if TYPE_CHECKING:
    from ssl_exporter.workers import Pool

log = logging.getLogger(__name__)

EXPORTER: web.AppKey[Exporter] = web.AppKey("exporter")
# How long POST /-/reload waits for the load it asked for before answering 503.
RELOAD_ANSWER_SECONDS = 30.0
SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
# A 400 answer is one line of our words around clipped echoes of the input (targets.echo);
# this bounds it whatever a prober's message quotes.
MAX_ERROR_LINE = 1024
# /probe/log?id=N: probe ids are counters, far below 20 digits.
MAX_PROBE_ID_DIGITS = 20


class Overloaded(Exception):
    """--probe.max-concurrent probes are in flight: HTTP 503 at once, rather than queueing."""


class Exporter:
    """The running exporter's state: its config, how to reload it, its own metrics and history."""

    def __init__(self, config_file: str | None, timeout_offset: float = 0.5,
                 history: History | None = None, max_concurrent: int = 0, pool: Pool | None = None) -> None:
        self.config_file = config_file
        # --web.workers > 1: loads go through the pool, which reads the file once and has every
        # worker load the same text before the new config is used (ssl_exporter.workers).
        self.pool = pool
        self.timeout_offset = timeout_offset
        self.max_concurrent = max_concurrent  # 0: no limit
        self.active = 0
        self.history = history if history is not None else History()
        self.caches = prepare.PROCESS_CACHES  # what probes and answers remember; every load gets it
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        build = Gauge("ssl_exporter_build_info", "Version of the exporter, Python and OpenSSL.",
                      ["version", "python_version", "openssl_version"], registry=self.registry)
        build.labels(__version__, platform.python_version(), ssl.OPENSSL_VERSION).set(1)
        self.reload_ok = Gauge("ssl_exporter_config_last_reload_successful",
                               "1 when the last configuration load succeeded.", registry=self.registry)
        self.reload_time = Gauge("ssl_exporter_config_last_reload_success_timestamp_seconds",
                                 "When the configuration was last loaded successfully.",
                                 registry=self.registry)
        self.in_flight = Gauge("ssl_exporter_probes_in_flight", "Probes running now.",
                               registry=self.registry)
        self.probes = Counter("ssl_exporter_probes", "Probes run, by module and result.",
                              ["module", "result"], registry=self.registry)
        self.refused = Counter("ssl_exporter_probes_refused", "Probes refused by target_policy (HTTP 403).",
                               ["module", "reason"], registry=self.registry)
        self.rejected = Counter("ssl_exporter_probes_rejected",
                                "Probes answered 503: --probe.max-concurrent were in flight, or the exporter "
                                "ran out of file descriptors.",
                                ["module"], registry=self.registry)
        self.registry.register(ReadPoolCollector())  # ssl_exporter_read_threads_stuck
        # Reloads (docs/configuration.md): the one running, and the one that requests arriving
        # meanwhile wait for (it starts when the running one ends).
        self._running_reload: asyncio.Task[str | None] | None = None
        self._next_reload: asyncio.Task[str | None] | None = None
        self.registry.register(_CacheCollector(self))
        self._use(self._load())  # raises ConfigError at start-up

    def _load(self) -> prepare.PreparedConfig:
        if self.pool is not None:
            return self.pool.load(self.config_file)
        if self.config_file is None:
            return prepare.load_default()
        return prepare.load_file(self.config_file)

    def _use(self, cfg: prepare.PreparedConfig) -> None:
        # Redacted once per load: every probe's history record shares its module's dict.
        # Before anything changes, so that a failure here keeps the old config whole.
        redacted = cfg.redacted()
        self.config, self.redacted_config = cfg, redacted
        self.reload_ok.set(1)
        self.reload_time.set(time.time())

    async def reload(self, via: str = "http") -> str | None:
        """Load the config again and use it; on failure keep the old one and return the error.

        The load runs in a thread of its own, so the event loop keeps answering (a load reads
        files and trust stores, and one file may be slow). Requests are coalesced: one that
        arrives while a load runs waits for the next load, which starts when the running one
        ends and serves every request that arrived meanwhile. Each request is thus answered by
        a load that read the file after it arrived, and requests arriving during one load
        (200 POST /-/reload, a storm of SIGHUPs) make one more load, not one each.
        """
        log.debug("config reload requested", extra={"fields": {"via": via}})
        if self._next_reload is None:
            self._next_reload = asyncio.ensure_future(self._reload_after(self._running_reload))
        # Shielded: a client that hangs up must not cancel the load the others wait for.
        return await asyncio.shield(self._next_reload)

    async def _reload_after(self, previous: asyncio.Task[str | None] | None) -> str | None:
        if previous is not None:
            await asyncio.wait([previous])
        # This load starts now: a request from here on needs a load that starts after it.
        self._running_reload, self._next_reload = self._next_reload, None
        try:
            new = await _in_thread(self._load)
            if self.pool is not None:
                await self.pool.commit(new)  # ConfigError when a worker cannot load it
            self._use(new)
        except config.ConfigError as exc:
            error = str(exc)
        except Exception as exc:  # a bug must not leave the gauge at 1, nor escape as a 500 page
            log.exception("config reload crashed")
            error = f"internal error: {type(exc).__name__}: {yamlrules.clip(str(exc))}"
        else:
            log.info("config reloaded", extra={"fields": {"source": new.source, "modules": len(new.modules)}})
            return None
        self.reload_ok.set(0)
        log.error("config reload failed, keeping the previous config", extra={"fields": {"err": error}})
        return error

    def probe_timeout(self, module: prepare.PreparedModule, header: str | None) -> float:
        """min(module timeout, scrape timeout - offset); the module's alone without header."""
        if header is None:
            return module.timeout
        try:
            scrape_timeout = float(header)
        except ValueError:
            raise BadRequest(f"{SCRAPE_TIMEOUT_HEADER}: {echo(header)} is not a number") from None
        if not scrape_timeout > 0:
            raise BadRequest(f"{SCRAPE_TIMEOUT_HEADER}: {echo(header)} must be positive")
        # An offset as large as the scrape timeout itself would leave no time at all.
        budget = scrape_timeout - self.timeout_offset
        return min(module.timeout, budget if budget > 0 else scrape_timeout)

    async def probe(self, request: web.Request) -> ProbeRecord:
        query = request.query
        # One config for the whole probe, even if a reload happens meanwhile.
        cfg, redacted = self.config, self.redacted_config
        req = parse_probe_request(cfg, query.get("module"), query.get("target"), query.get("hostname"))
        timeout = self.probe_timeout(req.module, request.headers.get(SCRAPE_TIMEOUT_HEADER))
        if self.max_concurrent and self.active >= self.max_concurrent:
            self.rejected.labels(req.module.name).inc()
            raise Overloaded(f"{self.active} probes in flight, the --probe.max-concurrent limit")
        self.active += 1
        self.in_flight.inc()
        try:
            result = await run_request(req, timeout)
        except OutOfResources as exc:
            self.rejected.labels(req.module.name).inc()
            log.error("probe not run: the exporter is out of file descriptors", extra={
                "fields": {"module": req.module.name, "err": str(exc)}, "rate_limited": True})
            raise Overloaded(f"the exporter is out of file descriptors ({exc})") from None
        except TargetRefused as exc:
            self.refused.labels(req.module.name, exc.reason).inc()
            log.warning("probe refused", extra={"fields": {
                "target": display_target(query["target"]), "module": req.module.name, "reason": exc.reason,
                "err": exc.detail}})
            raise
        finally:
            self.active -= 1
            self.in_flight.dec()
        self.probes.labels(req.module.name, "success" if result.success else "failure").inc()
        record = self.history.add(req.module.name, display_target(query["target"]), req.server_name,
                                  redacted["modules"][req.module.name], result)
        if not result.success:
            log_failure(record)
        return record


async def _in_thread(work: Callable[[], prepare.PreparedConfig]) -> prepare.PreparedConfig:
    """``work()`` in a daemon thread: one that never ends (a FIFO nobody writes to) must not
    keep the process from exiting, as a thread of an executor would."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[prepare.PreparedConfig] = loop.create_future()

    def settle(result: prepare.PreparedConfig | None, error: BaseException | None) -> None:
        if future.done():  # the reload was cancelled meanwhile (shutdown)
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        result, error = None, None
        try:
            result = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            error = exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    threading.Thread(target=run, name="config-load", daemon=True).start()
    return await future
class _CacheCollector:
    """What each cache of probe data holds now, against its share of --cache.max-bytes."""

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter

    def collect(self) -> list[GaugeMetricFamily]:
        held = GaugeMetricFamily("ssl_exporter_cache_bytes",
                                 "Estimated bytes held by each cache of probe data.", labels=["cache"])
        budget = GaugeMetricFamily("ssl_exporter_cache_budget_bytes",
                                   "Each cache's share of --cache.max-bytes.", labels=["cache"])
        used: dict[str, int] = {}
        for cache in lru.caches():
            used[cache.name] = used.get(cache.name, 0) + cache.bytes
        used["history"] = self.exporter.history.bytes
        for name in sorted(used):
            held.add_metric([name], used[name])
            budget.add_metric([name], lru.share(name))
        return [held, budget]


# Answers with more certificates than this are rendered in a thread of their own, so that a
# file glob's hundred thousand certificates do not stop the event loop (and every other
# request) for seconds; a TLS chain (at most 32) is cheaper to render than to hand over.
ENCODE_IN_THREAD_ABOVE = 64
_ENCODER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ssl-exporter-encode")


async def encode_answer(result: ProbeResult, accept_header: str | None,
                        cert_lines: metrics.CertLines | None = None) -> tuple[bytes, str]:
    """The probe's answer; its ssl_probe_duration_seconds includes rendering it."""
    begin = time.perf_counter()

    def render() -> tuple[bytes, str]:
        families = metrics.probe_families(result, lambda: time.perf_counter() - begin, cert_lines)
        return metrics.encode(families, accept_header)

    if len(result.certs) <= ENCODE_IN_THREAD_ABOVE:
        return render()
    return await asyncio.get_running_loop().run_in_executor(_ENCODER, render)


def log_failure(record: ProbeRecord) -> None:
    """One line per failed probe: where it failed, why, and OpenSSL's (or the OS's) words."""
    errors = all_errors(record.result)  # with tcp.all_addresses, each address's too
    address, first = errors[0] if errors else ("", None)
    fields: dict[str, Any] = {
        "probe_id": record.id,  # the same id as /probe/log?id=N
        "target": record.target,
        "module": record.module,
        "hostname": record.server_name,
        "stage": first.stage if first else "",
        "reason": first.reason if first else "",
        "err": first.detail if first else "",
    }
    if address:
        fields["address"] = address
    if len(errors) > 1:
        fields["more_errors"] = "; ".join(f"{a + ' ' if a else ''}{e.stage}/{e.reason}: {e.detail}"
                                          for a, e in errors[1:])
    fields["duration_seconds"] = round(record.result.duration, 3)
    log.warning("probe failed", extra={"fields": fields})


# --- handlers ---------------------------------------------------------------------------


def make_app(exporter: Exporter, telemetry_path: str = "/metrics",
             web_config: WebConfig | None = None, enable_lifecycle: bool = False) -> web.Application:
    app = web.Application(middlewares=_access_middlewares(web_config))
    app[EXPORTER] = exporter

    async def no_sniffing(request: web.Request, response: web.StreamResponse) -> None:
        # Every answer is what its Content-Type says: a browser must not guess HTML from the
        # text of a 400 that echoes input, or from a probe's certificate names.
        response.headers.setdefault("X-Content-Type-Options", "nosniff")

    app.on_response_prepare.append(no_sniffing)
    if web_config is not None and web_config.headers:
        headers = dict(web_config.headers)

        async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
            # An endpoint's own header wins (the pages' stricter Content-Security-Policy), as a
            # handler's does in exporter-toolkit, which sets these before calling it.
            for name, value in headers.items():
                response.headers.setdefault(name, value)

        app.on_response_prepare.append(add_headers)

    async def probe(request: web.Request) -> web.Response:
        try:
            record = await exporter.probe(request)
        except BadRequest as exc:
            return _bad_request(str(exc))
        except TargetRefused as exc:
            return web.Response(status=403, text=f"target refused: {exc.message}\n")
        except Overloaded as exc:
            return web.Response(status=503, text=f"too many probes: {exc}\n")
        if request.query.get("debug", "").lower() == "true":
            return web.Response(text=debug_text(record), headers={"X-Content-Type-Options": "nosniff"})
        body, content_type = await encode_answer(record.result, request.headers.get("Accept"),
                                                 exporter.caches.cert_lines)
        return _raw(body, content_type)

    async def probe_log(request: web.Request) -> web.Response:
        text = request.query.get("id", "")
        # ASCII digits only: str.isdigit() is true for "²" (int() refuses it: a 500) and for
        # "١" (int() reads it as 1), and int() refuses more than 4,300 digits.
        if not (text.isascii() and text.isdigit()) or len(text) > MAX_PROBE_ID_DIGITS:
            return _bad_request("id must be the number of a recent probe")
        record = exporter.history.get(int(text))
        if record is None:
            return web.Response(status=404, text=f"probe {text} is not in the recent-probes history\n")
        return _html(log_page(record))

    async def own_metrics(request: web.Request) -> web.Response:
        return _raw(generate_latest(exporter.registry), "text/plain; version=0.0.4; charset=utf-8")

    async def healthy(request: web.Request) -> web.Response:
        return web.Response(text="Healthy\n")

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="Ready\n")

    async def reload(request: web.Request) -> web.Response:
        if not enable_lifecycle:  # as Prometheus does: the endpoint is off unless asked for
            return web.Response(status=403, text="the lifecycle API is not enabled: start the exporter with "
                                                 "--web.enable-lifecycle to reload over HTTP, or send SIGHUP\n")
        try:
            # The load goes on (shielded) when this answer gives up waiting for it: a load that
            # never ends (a configuration file on a FIFO nobody writes) must not hold every
            # later request, and its connection, for ever.
            error = await asyncio.wait_for(exporter.reload(), RELOAD_ANSWER_SECONDS)
        except TimeoutError:
            return web.Response(status=503, text=f"the reload is still running after {RELOAD_ANSWER_SECONDS:g}s; "
                                                 "ssl_exporter_config_last_reload_successful tells when it ends\n")
        if error is not None:
            return web.Response(status=500, text=f"failed to reload config: {error}\n")
        return web.Response(text="config reloaded\n")

    async def show_config(request: web.Request) -> web.Response:
        text = yaml.safe_dump(exporter.redacted_config, sort_keys=False)
        return web.Response(text=f"# source: {exporter.config.source}\n{text}")

    async def landing(request: web.Request) -> web.Response:
        history = exporter.history
        return _html(landing_page(__version__, exporter.config.settings, telemetry_path, history.records(),
                                  history.limit, history.failure_limit))

    app.router.add_get("/probe", probe)
    app.router.add_get("/probe/log", probe_log)
    app.router.add_get(telemetry_path, own_metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    app.router.add_put("/-/reload", reload)
    app.router.add_get("/config", show_config)
    app.router.add_get("/", landing)
    return app


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _access_middlewares(web_config: WebConfig | None) -> list[Any]:
    """Basic auth on every endpoint, health checks included, as exporter-toolkit does."""
    if web_config is None or not web_config.users:
        return []
    auth = BasicAuth(web_config.users)

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            allowed = await auth.check(request.headers.get("Authorization"))
        except AuthBusy:  # the bcrypt queue is full: say so now rather than queue without end
            return web.Response(status=429, text="Too many password checks in progress\n",
                                headers={"Retry-After": "1"})
        if not allowed:
            return web.Response(status=401, text="Unauthorized\n", headers={"WWW-Authenticate": "Basic"})
        return await handler(request)

    return [authenticate]


def _bad_request(message: str) -> web.Response:
    line = "".join(ch if ch.isprintable() else " " for ch in message)  # one line, whatever it quoted
    if len(line) > MAX_ERROR_LINE:
        line = line[: MAX_ERROR_LINE - 3] + "..."
    return web.Response(status=400, text=f"{line}\n")


def _raw(body: bytes, content_type: str) -> web.Response:
    # aiohttp refuses a content_type with parameters; set the header as is.
    return web.Response(body=body, headers={"Content-Type": content_type})


def _html(page: str) -> web.Response:
    return web.Response(text=page, content_type="text/html", headers=SECURITY_HEADERS)


# --- client connections -------------------------------------------------------------------

# Connections accepted per wake-up of a listening socket, so that a flood cannot hold the loop.
_ACCEPT_BATCH = 64
# A new connection is not closed to make room for the next in its first moments, which are
# enough to send a request head: under a flood of reconnecting clients, every connection gets
# at least this long, and the rest wait in the listen queue.
_EVICTION_GRACE = 0.1
# After accept() failed for lack of descriptors (a limit we did not foresee: other processes
# under the same user, the system's table), how long to leave the queue to the kernel.
_ACCEPT_RETRY = 0.1


class Connections:
    """The open client connections: at most ``limit``, each with a deadline for its request head.

    A connection must send a complete request head within ``header_timeout`` seconds of
    opening, or of its first byte after an answer (a slowloris sending a byte now and then is
    closed); aiohttp closes a keep-alive connection idle for ``--web.idle-timeout``. At the
    limit, a new connection closes the oldest one that is idle after an answer or still sending
    its head (and open for more than a moment) to make room; otherwise the exporter stops
    accepting until a connection ends, and new connections wait in the kernel's listen queue,
    holding no descriptor. So the descriptors that probes need are never spent on clients.
    A client that stops reading its answer is cut off after ``write_timeout`` seconds without
    progress, so it cannot hold a connection (and a place under the limit) forever.
    """

    def __init__(self, limit: int, header_timeout: float, registry: CollectorRegistry | None = None,
                 write_timeout: float = 30.0) -> None:
        self.limit = limit
        self.header_timeout = header_timeout
        self.write_timeout = write_timeout
        self._open: dict[_Guard, None] = {}  # insertion order: oldest first
        self._handshaking = 0  # accepted, TLS handshake under way
        self._empty = asyncio.Event()
        self._empty.set()
        self._on_free: Callable[[], None] = lambda: None
        open_gauge = Gauge("ssl_exporter_connections_open", "Client connections open now.", registry=registry)
        open_gauge.set_function(lambda: len(self._open) + self._handshaking)
        limit_gauge = Gauge("ssl_exporter_connections_limit",
                            "Client connections allowed at once, derived from the open-files limit.",
                            registry=registry)
        limit_gauge.set(limit)
        self.closed = Counter("ssl_exporter_connections_closed_early",
                              "Client connections the exporter closed early: the oldest idle one at the "
                              "connection limit, one without a complete request head in time, or one that "
                              "did not read its answer in time.",
                              ["reason"], registry=registry)

    def make_room(self) -> bool:
        """Whether one more connection may be accepted now, closing the oldest idle one if need be."""
        if len(self._open) + self._handshaking < self.limit:
            return True
        settled = asyncio.get_running_loop().time() - _EVICTION_GRACE
        victim = None
        for guard in self._open:  # oldest first
            if guard.opened > settled:
                break
            if guard.evictable():
                victim = guard
                break
        if victim is None:
            return False
        self.closed.labels("limit").inc()
        victim.abort()  # idle or mid-head: nothing to lose, and the descriptor goes at once
        self._forget(victim)  # its descriptor closes on the loop's next turn; counted free now
        return True

    def _add(self, guard: _Guard) -> None:
        self._open[guard] = None
        self._empty.clear()

    def _forget(self, guard: _Guard) -> None:
        if self._open.pop(guard, False) is None:
            self._freed()

    def _freed(self) -> None:
        if not self._open and not self._handshaking:
            self._empty.set()
        self._on_free()

    def close_idle(self) -> None:
        """At shutdown: close every connection waiting for a request now, and every busy one
        after the answer in progress (not kept alive for more requests)."""
        for guard in list(self._open):
            if guard.waiting_for_request():
                guard.close()
            else:
                guard.close_after_answer()

    def abort_all(self) -> None:
        for guard in list(self._open):
            guard.abort()

    async def wait_empty(self) -> None:
        await self._empty.wait()

    def __len__(self) -> int:
        return len(self._open) + self._handshaking


class _Guard(asyncio.Protocol):
    """aiohttp's protocol for one connection, with a deadline for each request head.

    It reads two private attributes of aiohttp's RequestHandler, ``_waiter`` (pending while
    the handler waits for the next request) and ``_request_count`` (requests parsed so far);
    tests/test_resources.py fails if a new aiohttp changes them.
    """

    def __init__(self, connections: Connections, inner: Any) -> None:
        self.connections = connections
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None  # armed while the client reads nothing
        self.opened = asyncio.get_running_loop().time()
        self._partial_head = False  # bytes of a request head received, not the whole head

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connections._add(self)
        self.inner.connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        parsed = self.inner._request_count
        if self._head_timer is None:
            self._arm_head_timer()  # the first byte of the next request
        self.inner.data_received(data)
        self._partial_head = self.inner._request_count == parsed
        if not self._partial_head and self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def eof_received(self) -> bool | None:
        keep_open: bool | None = self.inner.eof_received()  # aiohttp's protocol is untyped here
        return keep_open

    def pause_writing(self) -> None:
        # The client's buffers are full: it must read some of its answer within the deadline.
        loop = asyncio.get_running_loop()
        self._write_timer = loop.call_later(self.connections.write_timeout, self._write_timeout)
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self._cancel_write_timer()
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._cancel_write_timer()
        self.transport = None
        self.connections._forget(self)
        self.inner.connection_lost(exc)

    def waiting_for_request(self) -> bool:
        waiter = self.inner._waiter
        return self.transport is not None and waiter is not None and not waiter.done()

    def evictable(self) -> bool:
        """Idle after an answer, or sending its head piecemeal. Not a connection that has sent
        nothing yet: its request may be waiting unread while the loop is busy."""
        return self.waiting_for_request() and (self._partial_head or self.inner._request_count > 0)

    def close(self) -> None:
        if self.transport is not None:
            self.inner.force_close()

    def close_after_answer(self) -> None:
        """aiohttp's graceful close: end the connection once the answer in progress is sent."""
        if self.transport is not None:
            self.inner.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _arm_head_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self._head_timer = loop.call_later(self.connections.header_timeout, self._head_timeout)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport is None:
            return
        if self.waiting_for_request():
            self.connections.closed.labels("header_timeout").inc()
            self.abort()  # mid-head: nothing to lose; close() would wait for a peer that may not read
        else:  # busy with an earlier request: the next head's clock starts over
            self._arm_head_timer()

    def _cancel_write_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_timeout(self) -> None:
        self._write_timer = None
        if self.transport is not None:
            self.connections.closed.labels("write_timeout").inc()
            self.abort()


def listening_sockets(host: str | None, port: int, backlog: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for ``host`` (None: every address, IPv6 and IPv4)."""
    if host is None:
        try:
            sockets = [socket.create_server(("::", port), family=socket.AF_INET6, backlog=backlog,
                                            dualstack_ipv6=True)]
        except (OSError, ValueError):  # no IPv6 on this host
            sockets = [socket.create_server(("", port), backlog=backlog)]
    else:
        sockets = []
        seen = set()
        for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                            flags=socket.AI_PASSIVE):
            if (family, sockaddr[:2]) in seen:
                continue
            seen.add((family, sockaddr[:2]))
            sockets.append(socket.create_server(sockaddr[:2], family=family, backlog=backlog))
    for sock in sockets:
        sock.setblocking(False)
    return sockets


class Listener:
    """Accepts connections for aiohttp's ``server`` within the limits of :class:`Connections`.

    Its own accept loop rather than asyncio's, to stop accepting while every connection is
    busy (asyncio's retries accept() and logs an error each time it fails) and to count a
    TLS connection from accept() on, its handshake included (bounded by the head deadline).
    """

    def __init__(self, server: web.Server, connections: Connections, sockets: list[socket.socket],
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.server = server
        self.connections = connections
        self.sockets = sockets
        self.ssl_context = ssl_context
        self._loop = asyncio.get_running_loop()
        self._paused = True
        self._handshakes: set[asyncio.Task[Any]] = set()
        connections._on_free = self._resume

    def start(self) -> None:
        self._resume()

    def close(self) -> None:
        """Stop listening: new connections are refused from now on."""
        self._pause()
        self.connections._on_free = lambda: None
        for sock in self.sockets:
            sock.close()
        self.sockets = []
        for task in self._handshakes:
            task.cancel()

    def _resume(self) -> None:
        if self._paused and self.sockets:
            self._paused = False
            for sock in self.sockets:
                self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            for sock in self.sockets:
                self._loop.remove_reader(sock.fileno())

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(_ACCEPT_BATCH):
            if not self.connections.make_room():
                self._pause()  # until a connection ends (Connections._on_free) or one settles
                self._loop.call_later(_EVICTION_GRACE, self._resume)
                return
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                log.error("cannot accept connections", extra={
                    "fields": {"err": exc.strerror or str(exc)}, "rate_limited": True})
                self._pause()
                self._loop.call_later(_ACCEPT_RETRY, self._resume)
                return
            conn.setblocking(False)
            self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        # Counted from now: the guard takes the slot over once the transport is made (after
        # the TLS handshake, bounded by the head deadline, when the exporter serves TLS).
        self.connections._handshaking += 1
        task = self._loop.create_task(self._loop.connect_accepted_socket(
            lambda: _Guard(self.connections, self.server()), conn, ssl=self.ssl_context,
            ssl_handshake_timeout=self.connections.header_timeout if self.ssl_context else None))
        self._handshakes.add(task)
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[Any]) -> None:
        self._handshakes.discard(task)
        self.connections._handshaking -= 1
        if not task.cancelled() and task.exception() is not None:
            log.debug("a client connection failed before its first request",
                      extra={"fields": {"err": str(task.exception())}})
        self.connections._freed()
