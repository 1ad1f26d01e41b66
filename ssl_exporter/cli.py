"""Command line: flags in the Prometheus exporter style, logging, and the server's life.

``ssl-exporter check TARGET ...`` is the one subcommand (:mod:`ssl_exporter.check`); any
other command line runs the server, so the exporter's flag-style CLI stays as it was.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import signal
import sys
from typing import Any

from aiohttp import web

from ssl_exporter import __version__, check, config, logs, lru, resolve, webconfig, workers
from ssl_exporter.history import History
from ssl_exporter.probers import base
from ssl_exporter.server import Connections, Exporter, Listener, listening_sockets, make_app

# Probes in flight beyond which /probe answers 503 at once. Each probe holds a socket and the
# scrape's own connection another: 500 stays inside the common soft limit of 1024 open files
# (more probes would fail with EMFILE, and the exporter could no longer accept connections),
# and is far above what a healthy setup needs (targets x probe duration / scrape interval).
DEFAULT_MAX_CONCURRENT = 500

# Descriptors kept for everything but client connections and probes: listening sockets, log
# files, config and CA files being read, the event loop's own, DNS lookups.
RESERVED_FDS = 64
# Descriptors one probe may hold at once: its connection, plus a revocation fetch or a
# legacy-version handshake.
FDS_PER_PROBE = 2

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
                        help="on SIGTERM, how long in-flight probes may take to finish, in total; "
                             "0 cancels them at once (default 15)")
    parser.add_argument("--web.read-header-timeout", dest="read_header_timeout", type=float, default=10.0,
                        metavar="SECONDS",
                        help="a client must send a whole request head within this time of connecting, or "
                             "of its first byte after an answer (default 10)")
    parser.add_argument("--web.write-timeout", dest="write_timeout", type=float, default=30.0, metavar="SECONDS",
                        help="close a connection whose client reads nothing of its answer for this long "
                             "(default 30)")
    parser.add_argument("--web.idle-timeout", dest="idle_timeout", type=float, default=75.0, metavar="SECONDS",
                        help="close a keep-alive connection idle this long (default 75)")
    parser.add_argument("--web.max-connections", dest="max_connections", type=int, default=0, metavar="N",
                        help="client connections open at once; 0: derived from the open-files limit, keeping "
                             "descriptors for --probe.max-concurrent probes (default 0)")
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
    parser.add_argument("--cache.max-bytes", dest="cache_max_bytes", type=_size, default=lru.DEFAULT_BUDGET,
                        metavar="SIZE",
                        help="memory for everything kept from probes (parsed certificates, rendered lines, "
                             "parsed files, recent probes, revocation, RDAP and ARI answers), e.g. 64MiB "
                             "(default 256MiB)")
    parser.add_argument("--web.workers", dest="workers", type=int, default=workers.usable_cpus(), metavar="N",
                        help="processes that run TLS probes, this one serving HTTP for all of them; 1: probes "
                             "run in this process (default: the usable CPUs, here %(default)s)")
    parser.add_argument("--config.check", dest="config_check", action="store_true",
                        help="validate the configuration and exit (0 valid, 1 invalid)")
    parser.add_argument("--version", action="version", version=f"ssl_exporter {__version__}")
    args = parser.parse_args(argv)
    if args.timeout_offset < 0:
        parser.error("--timeout-offset must not be negative")
    if args.max_concurrent < 0:
        parser.error("--probe.max-concurrent must not be negative (0: no limit)")
    for flag, value in (("--web.shutdown-timeout", args.shutdown_timeout),
                        ("--web.read-header-timeout", args.read_header_timeout),
                        ("--web.idle-timeout", args.idle_timeout),
                        ("--web.write-timeout", args.write_timeout)):
        if not 0 <= value < float("inf"):
            parser.error(f"{flag} must be a finite number of seconds, not negative")
    if args.read_header_timeout == 0 or args.idle_timeout == 0:
        parser.error("--web.read-header-timeout and --web.idle-timeout must be positive")
    if args.write_timeout == 0:
        parser.error("--web.write-timeout must be positive")
    if args.workers < 1:
        parser.error("--web.workers must be at least 1")
    if args.max_connections < 0:
        parser.error("--web.max-connections must not be negative (0: derived from the open-files limit)")
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


def raise_open_files_limit() -> int:
    """Raise the soft limit of open files to the hard limit, as Go programs do; the new soft limit.

    The soft limit (often 1,024) is a default for programs that use select(); the event loop
    uses epoll and can serve as many descriptors as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit", extra={"fields": {"err": str(exc), "limit": soft}})
    return soft


def connection_limit(open_files: int, in_use: int, max_concurrent: int) -> int:
    """Client connections to allow so that every probe they can start has its descriptors.

    Each probe runs for one client connection and holds up to FDS_PER_PROBE descriptors. With
    room for --probe.max-concurrent probes besides, connections may use the rest; otherwise
    each connection keeps room for its own probe."""
    available = max(open_files - in_use - RESERVED_FDS, 1 + FDS_PER_PROBE)
    per_connection = available // (1 + FDS_PER_PROBE)
    if max_concurrent:
        return max(available - FDS_PER_PROBE * max_concurrent, per_connection)
    return per_connection


def _open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 16  # no /proc: a start-up's usual count


def _size(text: str) -> int:
    try:
        return lru.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    args.open_files = raise_open_files_limit()
    web_config = None
    if args.web_config_file:
        try:
            web_config = webconfig.load(args.web_config_file)
        except webconfig.WebConfigError as exc:
            print(f"ssl-exporter: invalid web configuration: {exc}", file=sys.stderr)
            return 1
    lru.set_budget(args.cache_max_bytes)
    try:
        history = History(args.history_limit, args.history_failure_limit)
        pool = workers.Pool(args.workers, args.cache_max_bytes) if args.workers > 1 and not args.config_check else None
        exporter = Exporter(args.config_file, args.timeout_offset, history, args.max_concurrent, pool)
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
    if pool is not None:
        pool.fork_zygote()  # before asyncio.run: no thread, no event loop yet
    try:
        with asyncio.Runner(loop_factory=workers.event_loop_factory()) as runner:
            runner.run(serve(exporter, args, web_config))
    except KeyboardInterrupt:
        pass
    return 0


async def serve(exporter: Exporter, args: argparse.Namespace,
                web_config: webconfig.WebConfig | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then drain: stop listening, close idle connections (busy
    ones after their answer), let
    the requests in flight end within ``--web.shutdown-timeout`` seconds in total, then cancel
    what is left (at once with 0).
    """
    app = make_app(exporter, args.telemetry_path, web_config, args.enable_lifecycle)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_loop_exception)
    if exporter.pool is not None:  # first, so that its sockets count among the descriptors in use
        # (the workers load the config meanwhile; until one is ready, probes run here)
        await exporter.pool.start(exporter.config, exporter.registry)
    open_files = getattr(args, "open_files", None) or resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limit = connection_limit(open_files, _open_descriptors(), args.max_concurrent)
    if args.max_connections:
        limit = min(limit, args.max_connections)
    connections = Connections(limit, args.read_header_timeout, exporter.registry, args.write_timeout)
    # Our own drain does the waiting (see below); aiohttp's cleanup then finds nothing left.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1,
                           keepalive_timeout=args.idle_timeout)
    await runner.setup()
    server_tls = webconfig.ServerTLS(web_config.tls) if web_config and web_config.tls else None
    # A backlog of 4,096 rather than 128: thousands of scrapes can arrive in the same second,
    # and a full backlog turns them into retransmits seconds later (bench/). It is also where
    # connections wait, holding no descriptor, while every allowed connection is busy.
    try:
        sockets = listening_sockets(args.host, args.port, backlog=4096)
    except OSError as exc:
        log.error("cannot listen", extra={"fields": {"address": args.listen_address,
                                                     "err": exc.strerror or str(exc)}})
        await runner.cleanup()
        raise SystemExit(1) from None
    assert runner.server is not None
    listener = Listener(runner.server, connections, sockets, server_tls.context if server_tls else None)
    listener.start()
    stop = asyncio.Event()
    reloads: set[asyncio.Task[str | None]] = set()  # referenced until done, as asyncio asks

    def reload_on_signal() -> None:
        task = asyncio.ensure_future(exporter.reload(via="SIGHUP"))  # coalesced with the others
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload_on_signal)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    fields = {"address": args.listen_address, "version": __version__, "config": exporter.config.source,
              "tls": server_tls is not None, "basic_auth": bool(web_config and web_config.users),
              "open_files_limit": open_files, "max_connections": limit,
              "event_loop": type(loop).__module__.split(".")[0]}
    if web_config is not None and web_config.users and server_tls is None:
        log.warning("basic auth without TLS: passwords cross the network in clear text")
    log.info("listening", extra={"fields": fields})
    await stop.wait()
    log.info("shutting down", extra={"fields": {"probes_in_flight": exporter.active,
                                                "shutdown_timeout_seconds": args.shutdown_timeout}})
    listener.close()  # no new connections
    connections.close_idle()
    if args.shutdown_timeout > 0:
        try:
            async with asyncio.timeout(args.shutdown_timeout):
                await connections.wait_empty()
        except TimeoutError:
            pass
    cancelled = base.cancel_all()
    connections.abort_all()
    await runner.cleanup()
    if exporter.pool is not None:
        await exporter.pool.stop()
    log.info("stopped", extra={"fields": {"probes_in_flight": exporter.active, "probes_cancelled": cancelled}})


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """An OSError the loop meets (accept() out of descriptors) is one rate-limited line, not a
    traceback per attempt; anything else goes to asyncio's default handler."""
    exc = context.get("exception")
    if isinstance(exc, OSError):
        log.error(context.get("message", "event loop error"), extra={
            "fields": {"err": exc.strerror or str(exc)}, "rate_limited": True})
        return
    loop.default_exception_handler(context)
