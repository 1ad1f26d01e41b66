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
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

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
from prometheus_client.exposition import generate_latest

from ssl_exporter import __version__, config, metrics
from ssl_exporter.access import TargetRefused
from ssl_exporter.history import History, ProbeRecord
from ssl_exporter.probers import PROBERS
from ssl_exporter.probers.base import Prober, ReadPoolCollector, run_probe
from ssl_exporter.result import ProbeResult
from ssl_exporter.targets import TargetError, echo, parse_hostname
from ssl_exporter.web import SECURITY_HEADERS, debug_text, landing_page, log_page
from ssl_exporter.webconfig import AuthBusy, BasicAuth, WebConfig

log = logging.getLogger(__name__)

EXPORTER: web.AppKey[Exporter] = web.AppKey("exporter")
SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
# A 400 answer is one line of our words around clipped echoes of the input (targets.echo);
# this bounds it whatever a prober's message quotes.
MAX_ERROR_LINE = 1024
# /probe/log?id=N: probe ids are counters, far below 20 digits.
MAX_PROBE_ID_DIGITS = 20


class BadRequest(ValueError):
    """Bad input to a probe: HTTP 400 (UNKNOWN for the check command) with this one-line message."""


class Overloaded(Exception):
    """--probe.max-concurrent probes are in flight: HTTP 503 at once, rather than queueing."""


@dataclass(frozen=True)
class ProbeRequest:
    """A validated probe request: what to probe, how, and which name to verify."""

    module: config.Module
    prober: Prober
    target: Any  # the prober's parsed target
    server_name: str


def parse_probe_request(cfg: config.Config, module_name: str | None, raw_target: str | None,
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

    The policy is checked here for what needs no resolution (name globs, an IP-address
    target), and by the tcp prober on the addresses it resolved, just before it connects to
    them; a refusal there passes through :func:`run_probe` as the exception it is.
    """
    if req.module.policy is not None:
        req.module.policy.check_target(req.target)
    return await run_probe(req.prober, req.module, req.target, req.server_name, timeout)


def display_target(raw: str) -> str:
    """The target as given, for logs and pages, without a URL's password."""
    if "@" not in raw:  # a cheap test first: this runs on every probe
        return raw
    try:
        return config.redact_url(raw) or raw
    except ValueError:  # not a URL after all (parse_target accepted it as something else)
        return raw


class Exporter:
    """The running exporter's state: its config, how to reload it, its own metrics and history."""

    def __init__(self, config_file: str | None, timeout_offset: float = 0.5,
                 history: History | None = None, max_concurrent: int = 0) -> None:
        self.config_file = config_file
        self.timeout_offset = timeout_offset
        self.max_concurrent = max_concurrent  # 0: no limit
        self.active = 0
        self.history = history if history is not None else History()
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
                                "Probes rejected because --probe.max-concurrent were in flight (HTTP 503).",
                                ["module"], registry=self.registry)
        self.registry.register(ReadPoolCollector())  # ssl_exporter_read_threads_stuck
        # Reloads (docs/configuration.md): the one running, and the one that requests arriving
        # meanwhile wait for (it starts when the running one ends).
        self._running_reload: asyncio.Task[str | None] | None = None
        self._next_reload: asyncio.Task[str | None] | None = None
        self._use(self._load())  # raises ConfigError at start-up

    def _load(self) -> config.Config:
        if self.config_file is None:
            return config.load_default()
        return config.load_file(self.config_file)

    def _use(self, cfg: config.Config) -> None:
        self.config = cfg
        # Redacted once per load: every probe's history record shares its module's dict.
        self.redacted_config = cfg.redacted()
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
        except config.ConfigError as exc:
            error = str(exc)
        except Exception as exc:  # a bug must not leave the gauge at 1, nor escape as a 500 page
            log.exception("config reload crashed")
            error = f"internal error: {type(exc).__name__}: {config.clip(str(exc))}"
        else:
            self._use(new)
            log.info("config reloaded", extra={"fields": {"source": new.source, "modules": len(new.modules)}})
            return None
        self.reload_ok.set(0)
        log.error("config reload failed, keeping the previous config", extra={"fields": {"err": error}})
        return error

    def probe_timeout(self, module: config.Module, header: str | None) -> float:
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


async def _in_thread(work: Callable[[], config.Config]) -> config.Config:
    """``work()`` in a daemon thread: one that never ends (a FIFO nobody writes to) must not
    keep the process from exiting, as a thread of an executor would."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[config.Config] = loop.create_future()

    def settle(result: config.Config | None, error: BaseException | None) -> None:
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


def log_failure(record: ProbeRecord) -> None:
    """One line per failed probe: where it failed, why, and OpenSSL's (or the OS's) words."""
    errors = record.result.errors
    first = errors[0] if errors else None
    fields: dict[str, Any] = {
        "probe_id": record.id,  # the same id as /probe/log?id=N
        "target": record.target,
        "module": record.module,
        "hostname": record.server_name,
        "stage": first.stage if first else "",
        "reason": first.reason if first else "",
        "err": first.detail if first else "",
    }
    if len(errors) > 1:
        fields["more_errors"] = "; ".join(f"{e.stage}/{e.reason}: {e.detail}" for e in errors[1:])
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
        body, content_type = metrics.encode(metrics.probe_families(record.result), request.headers.get("Accept"))
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
        error = await exporter.reload()
        if error is not None:
            return web.Response(status=500, text=f"failed to reload config: {error}\n")
        return web.Response(text="config reloaded\n")

    async def show_config(request: web.Request) -> web.Response:
        text = yaml.safe_dump(exporter.redacted_config, sort_keys=False)
        return web.Response(text=f"# source: {exporter.config.source}\n{text}")

    async def landing(request: web.Request) -> web.Response:
        history = exporter.history
        return _html(landing_page(__version__, exporter.config, telemetry_path, history.records(),
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
