"""Command line: flags in the Prometheus exporter style, logging, and the server's life.

``ssl-exporter check TARGET ...`` is the one subcommand (:mod:`ssl_exporter.check`); any
other command line runs the server, so the exporter's flag-style CLI stays as it was.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from aiohttp import web

from ssl_exporter import __version__, check, config, logs, resolve, webconfig
from ssl_exporter.history import History
from ssl_exporter.server import Exporter, make_app

# Probes in flight beyond which /probe answers 503 at once. Each probe holds a socket and the
# scrape's own connection another: 500 stays inside the common soft limit of 1024 open files
# (more probes would fail with EMFILE, and the exporter could no longer accept connections),
# and is far above what a healthy setup needs (targets x probe duration / scrape interval).
DEFAULT_MAX_CONCURRENT = 500

log = logging.getLogger("ssl_exporter")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ssl-exporter",
        description="Prometheus exporter for TLS certificates: /probe?target=host:port&module=name",
        epilog="Also: ssl-exporter check TARGET [...] runs one probe as a Nagios plugin "
               "(ssl-exporter check --help).",
    )
    parser.add_argument("--config.file", dest="config_file", metavar="PATH",
                        help="YAML configuration file (default: the embedded default config)")
    parser.add_argument("--web.listen-address", dest="listen_address", default=":9219",
                        metavar="[HOST]:PORT", help="address to listen on (default :9219)")
    parser.add_argument("--web.telemetry-path", dest="telemetry_path", default="/metrics",
                        metavar="PATH", help="path of the exporter's own metrics (default /metrics)")
    parser.add_argument("--web.config.file", dest="web_config_file", metavar="PATH",
                        help="exporter-toolkit web configuration: TLS, basic auth and headers for every endpoint")
    parser.add_argument("--web.shutdown-timeout", dest="shutdown_timeout", type=float, default=15.0,
                        metavar="SECONDS",
                        help="on SIGTERM, how long in-flight probes may take to finish (default 15)")
    parser.add_argument("--probe.max-concurrent", dest="max_concurrent", type=int,
                        default=DEFAULT_MAX_CONCURRENT, metavar="N",
                        help=f"probes in flight beyond which /probe answers 503; 0: no limit "
                             f"(default {DEFAULT_MAX_CONCURRENT})")
    parser.add_argument("--timeout-offset", dest="timeout_offset", type=float, default=0.5,
                        metavar="SECONDS",
                        help="subtracted from Prometheus' scrape timeout to leave time to answer (default 0.5)")
    parser.add_argument("--log.level", dest="log_level", default="info", choices=list(logs.LEVELS))
    parser.add_argument("--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"])
    parser.add_argument("--history.limit", dest="history_limit", type=int, default=100, metavar="N",
                        help="recent probes kept for the landing page (default 100)")
    parser.add_argument("--history.failure-limit", dest="history_failure_limit", type=int, default=100,
                        metavar="N",
                        help="failed probes kept besides, however many succeed since (default 100)")
    parser.add_argument("--dns.server", dest="dns_servers", action="append", default=[], metavar="ADDRESS[:PORT]",
                        help="DNS server to resolve targets through instead of the system resolver, for modules "
                             "without tcp.dns_servers; repeat for more")
    parser.add_argument("--web.enable-lifecycle", dest="enable_lifecycle", action="store_true",
                        help="let POST /-/reload reload the configuration (without --web.config.file it "
                             "needs no authentication); SIGHUP always works")
    parser.add_argument("--config.check", dest="config_check", action="store_true",
                        help="validate the configuration and exit (0 valid, 1 invalid)")
    parser.add_argument("--version", action="version", version=f"ssl_exporter {__version__}")
    args = parser.parse_args(argv)
    if args.timeout_offset < 0:
        parser.error("--timeout-offset must not be negative")
    if args.max_concurrent < 0:
        parser.error("--probe.max-concurrent must not be negative (0: no limit)")
    if not args.shutdown_timeout >= 0:
        parser.error("--web.shutdown-timeout must not be negative")
    if args.history_limit < 0 or args.history_failure_limit < 0:
        parser.error("--history.limit and --history.failure-limit must not be negative")
    if not args.telemetry_path.startswith("/") or args.telemetry_path in {"/", "/probe", "/probe/log"}:
        parser.error("--web.telemetry-path must start with / and not be /, /probe or /probe/log")
    try:
        args.host, args.port = parse_listen_address(args.listen_address)
    except ValueError as exc:
        parser.error(f"--web.listen-address: {exc}")
    try:
        resolve.set_default_servers(args.dns_servers)
    except ValueError as exc:
        parser.error(f"--dns.server: {exc}")
    return args


def parse_listen_address(text: str) -> tuple[str | None, int]:
    """':9219' -> (None, 9219): every interface; '[::1]:9219' -> ('::1', 9219)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not [host]:port")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return (host or None), int(port)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check"]:
        return check.main(argv[1:])
    args = parse_args(argv)
    logs.setup(args.log_level, args.log_format)
    web_config = None
    if args.web_config_file:
        try:
            web_config = webconfig.load(args.web_config_file)
        except webconfig.WebConfigError as exc:
            print(f"ssl-exporter: invalid web configuration: {exc}", file=sys.stderr)
            return 1
    try:
        history = History(args.history_limit, args.history_failure_limit)
        exporter = Exporter(args.config_file, args.timeout_offset, history, args.max_concurrent)
    except config.ConfigError as exc:
        print(f"ssl-exporter: invalid configuration: {exc}", file=sys.stderr)
        return 1
    if args.config_check:
        cfg = exporter.config
        print(f"config OK: {cfg.source}: {len(cfg.modules)} module(s): {', '.join(cfg.modules)}")
        if web_config is not None:
            print(f"web config OK: {web_config.source}: TLS {'on' if web_config.tls else 'off'}, "
                  f"{len(web_config.users)} basic auth user(s)")
        return 0
    try:
        asyncio.run(serve(exporter, args, web_config))
    except KeyboardInterrupt:
        pass
    return 0


async def serve(exporter: Exporter, args: argparse.Namespace,
                web_config: webconfig.WebConfig | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then drain: stop listening, let in-flight requests end.

    aiohttp's cleanup closes the listening socket and idle keep-alive connections at once,
    waits up to ``--web.shutdown-timeout`` for the requests being handled (probes end by
    their own deadline), then cancels what is left.
    """
    app = make_app(exporter, args.telemetry_path, web_config, args.enable_lifecycle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=args.shutdown_timeout)
    await runner.setup()
    server_tls = webconfig.ServerTLS(web_config.tls) if web_config and web_config.tls else None
    # A backlog of 4,096 rather than aiohttp's 128: thousands of scrapes can arrive in the
    # same second, and a full backlog turns them into retransmits seconds later (bench/).
    site = web.TCPSite(runner, args.host, args.port, reuse_address=True, backlog=4096,
                       ssl_context=server_tls.context if server_tls else None)
    try:
        await site.start()
    except OSError as exc:
        log.error("cannot listen", extra={"fields": {"address": args.listen_address, "err": exc.strerror}})
        await runner.cleanup()
        raise SystemExit(1) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[str | None]] = set()  # referenced until done, as asyncio asks

    def reload_on_signal() -> None:
        task = asyncio.ensure_future(exporter.reload(via="SIGHUP"))  # coalesced with the others
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload_on_signal)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    fields = {"address": args.listen_address, "version": __version__, "config": exporter.config.source,
              "tls": server_tls is not None, "basic_auth": bool(web_config and web_config.users)}
    if web_config is not None and web_config.users and server_tls is None:
        log.warning("basic auth without TLS: passwords cross the network in clear text")
    log.info("listening", extra={"fields": fields})
    await stop.wait()
    log.info("shutting down", extra={"fields": {"probes_in_flight": exporter.active,
                                                "shutdown_timeout_seconds": args.shutdown_timeout}})
    await runner.cleanup()
    log.info("stopped", extra={"fields": {"probes_in_flight": exporter.active}})
