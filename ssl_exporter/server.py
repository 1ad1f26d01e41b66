"""The HTTP side: /probe, /metrics, /, /-/healthy, /-/ready, /-/reload and /config."""

from __future__ import annotations

import html
import logging
import platform
import ssl
import time

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
from ssl_exporter.probers import PROBERS
from ssl_exporter.probers.base import run_probe
from ssl_exporter.result import ProbeResult
from ssl_exporter.targets import TargetError, parse_hostname

log = logging.getLogger(__name__)

EXPORTER: web.AppKey[Exporter] = web.AppKey("exporter")
SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"


class BadRequest(ValueError):
    """Bad input to /probe: HTTP 400 with this one-line message."""


class Exporter:
    """The running exporter's state: its config, how to reload it, and its own metrics."""

    def __init__(self, config_file: str | None, timeout_offset: float = 0.5) -> None:
        self.config_file = config_file
        self.timeout_offset = timeout_offset
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
        self.config = self._load()  # raises ConfigError at start-up
        self._loaded()

    def _load(self) -> config.Config:
        if self.config_file is None:
            return config.load_default()
        return config.load_file(self.config_file)

    def _loaded(self) -> None:
        self.reload_ok.set(1)
        self.reload_time.set(time.time())

    def reload(self) -> str | None:
        """Load the config again; on failure keep the old one and return the error."""
        try:
            new = self._load()
        except config.ConfigError as exc:
            self.reload_ok.set(0)
            log.error("config reload failed, keeping the previous config", extra={"fields": {"err": str(exc)}})
            return str(exc)
        self.config = new
        self._loaded()
        log.info("config reloaded", extra={"fields": {"source": new.source, "modules": len(new.modules)}})
        return None

    def probe_timeout(self, module: config.Module, header: str | None) -> float:
        """min(module timeout, scrape timeout - offset); the module's alone without header."""
        if header is None:
            return module.timeout
        try:
            scrape_timeout = float(header)
        except ValueError:
            raise BadRequest(f"{SCRAPE_TIMEOUT_HEADER}: {header!r} is not a number") from None
        if not scrape_timeout > 0:
            raise BadRequest(f"{SCRAPE_TIMEOUT_HEADER}: {header!r} must be positive")
        # An offset as large as the scrape timeout itself would leave no time at all.
        budget = scrape_timeout - self.timeout_offset
        return min(module.timeout, budget if budget > 0 else scrape_timeout)

    async def probe(self, request: web.Request) -> tuple[config.Module, str, ProbeResult]:
        query = request.query
        cfg = self.config  # one config for the whole probe, even if a reload happens meanwhile
        module_name = query.get("module") or cfg.default_module
        module = cfg.modules.get(module_name)
        if module is None:
            raise BadRequest(f"unknown module {module_name!r}")
        raw_target = query.get("target")
        if raw_target is None:
            raise BadRequest("target parameter is missing")
        prober = PROBERS[module.prober]
        try:
            target = prober.parse_target(raw_target, module)
            if "hostname" in query:
                server_name = parse_hostname(query["hostname"])
            else:
                server_name = module.tls_config.server_name or prober.default_server_name(target)
        except TargetError as exc:
            raise BadRequest(str(exc)) from None
        timeout = self.probe_timeout(module, request.headers.get(SCRAPE_TIMEOUT_HEADER))
        self.in_flight.inc()
        try:
            result = await run_probe(prober, module, target, server_name, timeout)
        finally:
            self.in_flight.dec()
        self.probes.labels(module.name, "success" if result.success else "failure").inc()
        if not result.success:
            _log_failure(module.name, raw_target, result)
        return module, raw_target, result


def _log_failure(module: str, target: str, result: ProbeResult) -> None:
    for error in result.errors:
        log.warning("probe failed", extra={"fields": {
            "target": target, "module": module, "stage": error.stage,
            "reason": error.reason, "detail": error.detail}})


# --- handlers ---------------------------------------------------------------------------


def make_app(exporter: Exporter, telemetry_path: str = "/metrics") -> web.Application:
    app = web.Application()
    app[EXPORTER] = exporter

    async def probe(request: web.Request) -> web.Response:
        try:
            module, target, result = await exporter.probe(request)
        except BadRequest as exc:
            return web.Response(status=400, text=f"{exc}\n")
        families = metrics.probe_families(result)
        if request.query.get("debug", "").lower() == "true":
            return web.Response(text=debug_text(module, result, families))
        body, content_type = metrics.encode(families, request.headers.get("Accept"))
        return _raw(body, content_type)

    async def own_metrics(request: web.Request) -> web.Response:
        return _raw(generate_latest(exporter.registry), "text/plain; version=0.0.4; charset=utf-8")

    async def healthy(request: web.Request) -> web.Response:
        return web.Response(text="Healthy\n")

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="Ready\n")

    async def reload(request: web.Request) -> web.Response:
        error = exporter.reload()
        if error is not None:
            return web.Response(status=500, text=f"failed to reload config: {error}\n")
        return web.Response(text="config reloaded\n")

    async def show_config(request: web.Request) -> web.Response:
        text = yaml.safe_dump(exporter.config.redacted(), sort_keys=False)
        return web.Response(text=f"# source: {exporter.config.source}\n{text}")

    async def landing(request: web.Request) -> web.Response:
        return web.Response(text=landing_page(exporter, telemetry_path), content_type="text/html")

    app.router.add_get("/probe", probe)
    app.router.add_get(telemetry_path, own_metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    app.router.add_put("/-/reload", reload)
    app.router.add_get("/config", show_config)
    app.router.add_get("/", landing)
    return app


def _raw(body: bytes, content_type: str) -> web.Response:
    # aiohttp refuses a content_type with parameters; set the header as is.
    return web.Response(body=body, headers={"Content-Type": content_type})


def debug_text(module: config.Module, result: ProbeResult, families: list) -> str:
    body, _ = metrics.encode(families, None)
    module_yaml = yaml.safe_dump({module.name: config.module_dict(module)}, sort_keys=False)
    return (
        "Logs for the probe:\n" + "\n".join(result.log) + "\n\n"
        "Module configuration:\n" + module_yaml + "\n"
        "Metrics that would have been returned:\n" + body.decode()
    )


def landing_page(exporter: Exporter, telemetry_path: str) -> str:
    cfg = exporter.config
    rows = "\n".join(
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(m.prober)}</td>"
        f"<td>{html.escape(m.tcp.starttls or 'implicit TLS')}</td><td>{m.default_port}</td>"
        f"<td>{m.timeout:g}s</td></tr>"
        for name, m in cfg.modules.items()
    )
    default = html.escape(cfg.default_module)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>SSL Exporter</title>
<style>body{{font-family:system-ui,sans-serif;margin:1rem;max-width:60rem}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}}</style>
</head><body>
<h1>SSL Exporter</h1>
<p>Version {html.escape(__version__)}. Configuration: {html.escape(cfg.source)}.</p>
<form action="/probe"><label>Target <input name="target" placeholder="example.com:443"></label>
<label>Module <input name="module" value="{default}"></label>
<label><input type="checkbox" name="debug" value="true"> debug</label>
<button>Probe</button></form>
<h2>Modules</h2>
<table><tr><th>name</th><th>prober</th><th>STARTTLS</th><th>default port</th><th>timeout</th></tr>
{rows}</table>
<h2>Endpoints</h2>
<ul>
<li><a href="/probe?target=example.com:443&amp;module={default}">/probe?target=&hellip;&amp;module=&hellip;</a></li>
<li><a href="{html.escape(telemetry_path)}">{html.escape(telemetry_path)}</a>: the exporter's own metrics</li>
<li><a href="/config">/config</a>: effective configuration, secrets redacted</li>
<li><a href="/-/healthy">/-/healthy</a>, <a href="/-/ready">/-/ready</a>; POST /-/reload reloads the configuration</li>
</ul>
</body></html>
"""
