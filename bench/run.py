#!/usr/bin/env python3
"""Side-by-side benchmark: ssl_exporter against blackbox_exporter, on loopback only.

Generates an EC P-256 chain, starts nginx as the TLS target (no session cache, no tickets:
every probe is a full handshake) and a silent TCP server, then starts each exporter in turn
(A B A B ..., a fresh process per round) and measures the same things on both:

  startup     time from exec to ready, idle RSS
  throughput  successful probes/s at concurrency 8 and 64 (wrk), CPU-ms per probe of the
              exporter's process tree, p50/p99 latency
  silent      N concurrent probes of a server that accepts and never speaks: how many were
              answered, when the last answer came, peak RSS of the process tree
  file        (ssl_exporter only) cold and warm scrape of a glob over many certificate files

Medians over the rounds, ratios this/blackbox, a JSON file and a markdown table in
bench/results/. See bench/README.md.

    .venv/bin/python bench/run.py                  # the full run (about 5 minutes)
    .venv/bin/python bench/run.py --quick          # a few seconds per measurement
    .venv/bin/python bench/run.py --only throughput --rounds 5
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import datetime as dt
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# One PKI and one nginx launcher for the tests and the bench: tests/pki.py, tests/servers/.
sys.path.insert(0, str(ROOT))
from tests.pki import DAY, NOW, Cert, make_root  # noqa: E402
from tests.servers.nginx import Site, run_nginx  # noqa: E402

BENCH = ROOT / "bench"
DOC = ROOT / "docs" / "performance.md"
BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
# binary -> the Debian package that provides it
TOOLS = {"nginx": "nginx", "wrk": "wrk", BLACKBOX: "prometheus-blackbox-exporter"}
HOSTNAME = "bench.example.test"
MEASUREMENTS = ("startup", "throughput", "silent", "file")
OURS, BLACKBOX_KEY = "ssl_exporter", "blackbox"
MIB = 1024 * 1024
DOC_BEGIN, DOC_END = "<!-- bench:begin -->", "<!-- bench:end -->"


class BenchError(RuntimeError):
    """Something the benchmark cannot go on without."""


# --- settings -----------------------------------------------------------------------------


@dataclass
class Settings:
    rounds: int = 3
    duration: int = 10  # seconds per throughput measurement (wrk takes whole seconds)
    warmup: int = 1  # seconds of load before each throughput measurement, not counted
    concurrency: tuple[int, ...] = (8, 64)
    silent_sizes: tuple[int, ...] = (2000, 10000)
    timeout: float = 5.0  # the probe timeout of both exporters' modules
    file_count: int = 10000
    file_warm_scrapes: int = 5
    idle_settle: float = 1.0  # seconds between ready and the idle RSS sample
    quick: bool = False
    only: tuple[str, ...] = MEASUREMENTS

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        s = cls()
        if args.quick:
            s = cls(rounds=1, duration=1, warmup=0, silent_sizes=(200, 1000), timeout=1.0,
                    file_count=200, file_warm_scrapes=2, idle_settle=0.3, quick=True)
        if args.rounds is not None:
            s.rounds = args.rounds
        if args.duration is not None:
            s.duration = args.duration
        if args.only:
            s.only = tuple(dict.fromkeys(args.only))
        return s


# --- processes and /proc ------------------------------------------------------------------

_STARTED: list[subprocess.Popen[bytes]] = []
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: our servers must not outlive the benchmark, however it ends.
    _libc.prctl(1, signal.SIGTERM, 0, 0, 0)


def start(argv: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent, **kwargs)
    _STARTED.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc in _STARTED:
        _STARTED.remove(proc)


@atexit.register
def _stop_all() -> None:
    for proc in list(_STARTED):
        stop(proc)


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return text[text.rindex(")") + 2:].split()  # fields from 3 (state) on


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (CONFIG_PROC_CHILDREN may be off: scan /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(_stat_fields(int(entry))[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, ()))
    return tree


CLK_TCK = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """utime+stime of the tree, plus what its reaped children used (cutime+cstime)."""
    ticks = 0
    for p in process_tree(pid):
        try:
            fields = _stat_fields(p)
        except OSError:
            continue
        ticks += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all CPUs), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK  # user..steal; guest time is inside user


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


def pss_bytes(pids: list[int]) -> int:
    """Total PSS (proportional set size) of ``pids``: pages shared between them (forked
    workers, shared libraries) are counted once in the sum, unlike RSS."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


class RSSSampler:
    """Peak VmRSS and peak total PSS of a process tree, sampled every 50 ms in a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval, self.peak, self.peak_pss = pid, interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RSSSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        pids, rescan = process_tree(self.pid), time.monotonic() + 1.0
        while not self._stop.is_set():
            if time.monotonic() > rescan:
                pids, rescan = process_tree(self.pid), time.monotonic() + 1.0
            self.peak = max(self.peak, rss_bytes(pids))
            self.peak_pss = max(self.peak_pss, pss_bytes(pids))
            self._stop.wait(self.interval)


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE as far as allowed; children (exporters, wrk) inherit it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted in (262144, 65536):
        if hard >= wanted:
            break
        try:  # only with CAP_SYS_RESOURCE
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            hard = wanted
            break
        except (ValueError, OSError):
            pass
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(port: int, path: str, timeout: float = 30.0) -> tuple[int, bytes, float]:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    return response.status, body, time.perf_counter() - started


def wait_ready(port: int, path: str, proc: subprocess.Popen[bytes], started: float,
               limit: float = 60.0) -> float:
    """Seconds from ``started`` until ``path`` answers 200; polls every 5 ms."""
    while time.perf_counter() - started < limit:
        if proc.poll() is not None:
            raise BenchError(f"exited with {proc.returncode} before it was ready")
        try:
            status, _, _ = http_get(port, path, timeout=2)
            if status == 200:
                return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.005)
    raise BenchError(f"not ready after {limit:g}s")


# --- set-up: tools, certificates, nginx, the silent server -------------------------------


def ensure_tools(install: bool) -> None:
    missing = sorted({pkg for binary, pkg in TOOLS.items() if not shutil.which(binary)})
    if missing and install:
        print(f"installing Debian packages: {' '.join(missing)}", file=sys.stderr)
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        shim = Path("/usr/sbin/policy-rc.d")
        made_shim = False
        if not shim.exists():  # keep the packages' own services from starting
            subprocess.run([*sudo, "sh", "-c", f"printf '#!/bin/sh\\nexit 101\\n' > {shim} && chmod +x {shim}"],
                           check=True)
            made_shim = True
        try:
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            result = subprocess.run([*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install",
                                     "-y", "-q", "--no-install-recommends", *missing], env=env)
            if result.returncode != 0:
                subprocess.run([*sudo, "apt-get", "update", "-q"], env=env)
                subprocess.run([*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install",
                                "-y", "-q", "--no-install-recommends", *missing], env=env)
        finally:
            if made_shim:
                subprocess.run([*sudo, "rm", "-f", str(shim)])
        missing = sorted({pkg for binary, pkg in TOOLS.items() if not shutil.which(binary)})
    if missing:
        raise BenchError(f"missing Debian package(s): {' '.join(missing)} "
                         f"(apt-get install {' '.join(missing)}, or run without --no-install)")


@dataclass
class PKI:
    root: Path
    chain: Path  # leaf + intermediate, what nginx serves
    key: Path
    inter: Cert = field(repr=False)


def make_pki(directory: Path) -> PKI:
    """An EC P-256 chain from the tests' PKI: root -> intermediate -> leaf for HOSTNAME."""
    root = make_root("bench root CA")
    inter = root.issue("bench intermediate CA", ca=True)
    # The wildcard lets every probe of ours verify a distinct name (see make_exporters).
    leaf = inter.issue(HOSTNAME, dns=(HOSTNAME, f"*.{HOSTNAME}"))
    (directory / "root.pem").write_bytes(root.pem)
    chain, key = leaf.write(directory, "leaf", chain=(inter,))
    return PKI(directory / "root.pem", chain, key, inter)


def make_cert_files(directory: Path, pki: PKI, count: int) -> Path:
    """``count`` distinct leaf certificates, 100 per folder; returns the glob for them."""
    for i in range(count):
        folder = directory / f"d{i // 100:04d}"
        if i % 100 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        name = f"host{i:05d}.bench.example.test"
        cert = pki.inter.issue(name, dns=(name,), not_after=NOW + (30 + i % 365) * DAY)
        (folder / f"{name}.pem").write_bytes(cert.pem)
    return directory / "**" / "*.pem"


@contextmanager
def nginx_target(directory: Path, pki: PKI) -> Iterator[tuple[int, int]]:
    """nginx (the tests' launcher) serving the bench chain with no session cache and no
    tickets, so that every probe is a full handshake; yields (master pid, port) once a
    verified handshake works."""
    # nginx before 1.23.4 offers TLS 1.2 at most unless told otherwise: name TLS 1.3.
    site = Site(pki.chain, pki.key, ["ssl_protocols TLSv1.2 TLSv1.3;", "ssl_session_cache off;",
                                     "ssl_session_tickets off;"])
    # Thousands of concurrent handshakes: room for them in nginx and in its accept queue.
    with run_nginx(directory / "nginx", {"bench": site}, worker_connections=8192, backlog=4096) as ports:
        port = ports["bench"]
        context = ssl.create_default_context(cafile=str(pki.root))
        deadline = time.monotonic() + 20
        while True:  # the socket accepts at once; nginx answers once it runs
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as raw, \
                        context.wrap_socket(raw, server_hostname=HOSTNAME):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    log = directory / "nginx" / "error.log"
                    raise BenchError(f"nginx did not start: {log.read_text()[-500:] if log.exists() else ''}") \
                        from None
                time.sleep(0.05)
        yield int((directory / "nginx" / "nginx.pid").read_text()), port


def start_silent(directory: Path, budget: float) -> tuple[subprocess.Popen[bytes], int]:
    log = directory / "silent.log"
    proc = start([sys.executable, str(BENCH / "silent.py"), "--max-seconds", str(int(budget))], log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        match = re.search(r"PORT (\d+)", log.read_text())
        if match:
            return proc, int(match.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    raise BenchError(f"silent server did not start: {log.read_text()[-500:]}")


# --- the two exporters --------------------------------------------------------------------


@dataclass
class Exporter:
    key: str
    name: str
    argv: Callable[[int], list[str]]  # port -> command line
    ready_path: str
    probe_path: Callable[[str], str]  # target -> /probe?...
    marker: str  # the success line
    cwd: Path | None = None
    env: dict[str, str] | None = None


def make_exporters(directory: Path, pki: PKI, settings: Settings, extra_args: list[str]) -> list[Exporter]:
    timeout = f"{int(settings.timeout * 1000)}ms"
    ours_conf = directory / "ssl_exporter.yml"
    ours_conf.write_text(
        "modules:\n"
        "  tcp:\n"
        "    prober: tcp\n"
        f"    timeout: {timeout}\n"
        f"    tls_config: {{ca_file: {pki.root}}}\n")
    blackbox_conf = directory / "blackbox.yml"
    blackbox_conf.write_text(
        "modules:\n"
        "  tls:\n"  # TLS handshake only: the tcp prober with tls, no query/response, no HTTP
        "    prober: tcp\n"
        f"    timeout: {timeout}\n"
        "    tcp:\n"
        "      tls: true\n"
        "      tls_config:\n"
        f"        ca_file: {pki.root}\n"
        f"        server_name: {HOSTNAME}\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # ssl_exporter coalesces identical concurrent probes, and every probe here would be
    # identical: each request verifies its own name ("{n}" becomes a per-request number in
    # probe.lua and burst.py), so every probe is a handshake of its own, as blackbox's are.
    # --probe.max-concurrent=0: the bench measures capacity, not the default safety limit.
    ours = Exporter(
        OURS, "ssl_exporter",
        lambda port: [sys.executable, "-m", "ssl_exporter", f"--config.file={ours_conf}",
                      f"--web.listen-address=127.0.0.1:{port}", "--log.level=error",
                      "--probe.max-concurrent=0", *extra_args],
        "/-/ready",
        lambda target: f"/probe?module=tcp&target={target}&hostname=n{{n}}.{HOSTNAME}",
        "ssl_probe_success 1", cwd=ROOT, env=env)
    blackbox = Exporter(
        BLACKBOX_KEY, "blackbox_exporter",
        lambda port: [BLACKBOX, f"--config.file={blackbox_conf}", f"--web.listen-address=127.0.0.1:{port}",
                      "--log.level=error"],
        "/",
        lambda target: f"/probe?module=tls&target={target}",
        "probe_success 1")
    return [ours, blackbox]


@dataclass
class Running:
    exporter: Exporter
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def pid(self) -> int:
        return self.proc.pid


def launch(exporter: Exporter, directory: Path) -> tuple[Running, float]:
    port = free_port()
    started = time.perf_counter()
    proc = start(exporter.argv(port), directory / f"{exporter.key}.log", cwd=exporter.cwd, env=exporter.env)
    try:
        ready = wait_ready(port, exporter.ready_path, proc, started)
    except BenchError as exc:
        stop(proc)
        log = (directory / f"{exporter.key}.log").read_text()[-1000:]
        raise BenchError(f"{exporter.name}: {exc}\n{log}") from None
    return Running(exporter, proc, port), ready


# --- measurements -------------------------------------------------------------------------


def run_wrk(run: Running, path: str, concurrency: int, seconds: int) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    argv = ["wrk", "-t", "1", "-c", str(concurrency), "-d", f"{max(1, seconds)}s", "--timeout", "10s",
            "-s", str(BENCH / "probe.lua"), f"http://127.0.0.1:{run.port}{path}", "--", run.exporter.marker]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    match = re.search(r"^WRK_RESULT (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or not match:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stdout[-500:]} {done.stderr[-500:]}")
    result: dict[str, Any] = json.loads(match.group(1))
    result["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


def measure_throughput(run: Running, target: str, concurrency: int, settings: Settings,
                       nginx_pid: int) -> dict[str, Any]:
    path = run.exporter.probe_path(target)
    if settings.warmup:
        run_wrk(run, path, concurrency, settings.warmup)
    busy_before, nginx_before = machine_busy_seconds(), tree_cpu_seconds(nginx_pid)
    cpu_before, wall_before = tree_cpu_seconds(run.pid), time.perf_counter()
    res = run_wrk(run, path, concurrency, settings.duration)
    cpu = tree_cpu_seconds(run.pid) - cpu_before
    wall = time.perf_counter() - wall_before
    nginx_cpu = tree_cpu_seconds(nginx_pid) - nginx_before
    busy = machine_busy_seconds() - busy_before
    seconds = res["duration_us"] / 1e6
    errors = sum(v for k, v in res.items() if k.startswith("errors_"))
    c = f"c{concurrency}"
    return {
        f"{c}_probes_per_s": res["ok"] / seconds,
        f"{c}_cpu_ms_per_probe": cpu * 1000 / res["ok"] if res["ok"] else None,
        f"{c}_p50_ms": res["latency_p50_us"] / 1000,
        f"{c}_p99_ms": res["latency_p99_us"] / 1000,
        f"{c}_failed": res["bad"] + errors,
        f"{c}_exporter_cores": cpu / wall,  # CPU the exporter's tree used, in cores
        f"{c}_loadgen_cores": res["cpu_s"] / wall,  # and wrk: it must stay far below 1
        f"{c}_nginx_cores": nginx_cpu / wall,
        # Everything else on the machine (other users, this script): noise when well above 0.
        f"{c}_other_cores": max(0.0, busy - cpu - nginx_cpu - res["cpu_s"]) / wall,
    }


def measure_silent(run: Running, target: str, n: int, settings: Settings, directory: Path) -> dict[str, Any]:
    path = run.exporter.probe_path(target)
    argv = [sys.executable, str(BENCH / "burst.py"), "--port", str(run.port), "--path", path,
            "-n", str(n), "--deadline", str(settings.timeout + 20), "--marker", run.exporter.marker]
    cpu_before = tree_cpu_seconds(run.pid)
    with RSSSampler(run.pid) as sampler:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=settings.timeout + 60)
    cpu = tree_cpu_seconds(run.pid) - cpu_before
    if done.returncode != 0:
        raise BenchError(f"burst failed: {done.stderr[-1000:]}")
    res = json.loads(done.stdout.strip().splitlines()[-1])
    # Let the exporter close its side of the silent connections before the next test.
    time.sleep(min(1.0, settings.timeout))
    s = f"silent{n}"
    return {
        f"{s}_answered": res["answered"],
        f"{s}_last_answer_s": res["last_answer_s"],
        f"{s}_slowest_probe_s": res["slowest_probe_s"],
        f"{s}_peak_rss_mib": sampler.peak / MIB,
        f"{s}_peak_pss_mib": sampler.peak_pss / MIB,
        f"{s}_cpu_ms_per_probe": cpu * 1000 / n,  # accepting, starting and timing out each probe
        f"{s}_loadgen_cpu_s": res["loadgen_cpu_s"],
        f"{s}_detail": {k: res[k] for k in ("success", "median_probe_s", "tasks_created_s", "statuses", "errors")},
    }


def runtime(exporter: Exporter, pid: int) -> dict[str, str]:
    """Which event loop and TLS library the running exporter uses, read from what its
    processes have mapped (so an import that failed and fell back is seen as such)."""
    if exporter.key != OURS:
        return {"event_loop": "Go runtime", "tls_library": "Go crypto/tls"}
    maps = ""
    for p in process_tree(pid):
        try:
            maps += Path(f"/proc/{p}/maps").read_text()
        except OSError:
            continue
    loop = "uvloop" if re.search(r"/uvloop/loop\.[^/]*\.so", maps) else "asyncio"
    tls = "ssl module" if re.search(r"/_ssl\.[^/]*\.so|libssl\.so", maps) else "unknown"
    libssl = re.search(r"\S*libssl\.so\S*", maps)
    if libssl:
        tls += f", {ssl.OPENSSL_VERSION} ({libssl.group(0)})"  # the interpreter that runs it
    if re.search(r"/cryptography/hazmat/bindings/_rust", maps):
        from cryptography.hazmat.backends.openssl.backend import backend  # the same wheel as the exporter's
        tls += f"; cryptography's bundled {backend.openssl_version_text()} for certificates and stapling"
    return {"event_loop": loop, "tls_library": tls}


def session(exporter: Exporter, settings: Settings, directory: Path, nginx: tuple[int, int],
            silent_port: int | None) -> dict[str, Any]:
    """One fresh process of one exporter, every selected measurement on it."""
    out: dict[str, Any] = {}
    nginx_pid, nginx_port = nginx
    run, ready = launch(exporter, directory)
    try:
        time.sleep(settings.idle_settle)
        if "startup" in settings.only:
            out["ready_s"] = ready
            tree = process_tree(run.pid)
            out["idle_rss_mib"] = rss_bytes(tree) / MIB
            out["idle_pss_mib"] = pss_bytes(tree) / MIB
            out["processes"] = len(tree)
        out.update(runtime(exporter, run.pid))
        target = f"127.0.0.1:{nginx_port}"
        status, body, _ = http_get(run.port, exporter.probe_path(target).replace("{n}", "0"))
        if status != 200 or f"\n{exporter.marker}".encode() not in b"\n" + body:
            raise BenchError(f"{exporter.name}: a probe of nginx did not succeed ({status}): {body[:800]!r}")
        version = re.search(rb'^\w*tls_version_info\{version="([^"]*)"', body, re.MULTILINE)
        out["tls_version"] = version.group(1).decode() if version else "unknown"
        if "throughput" in settings.only:
            for concurrency in settings.concurrency:
                out.update(measure_throughput(run, target, concurrency, settings, nginx_pid))
                time.sleep(0.5)
        if "silent" in settings.only and silent_port is not None:
            for n in settings.silent_sizes:
                out.update(measure_silent(run, f"127.0.0.1:{silent_port}", n, settings, directory))
        if run.proc.poll() is not None:
            raise BenchError(f"{exporter.name} died during the measurements (exit {run.proc.returncode})")
    finally:
        stop(run.proc)
    return out


def measure_file(settings: Settings, directory: Path, pki: PKI, files_glob: Path,
                 extra_args: list[str]) -> dict[str, Any]:
    """Cold (first scrape of a fresh process) and warm scrape of the file prober."""
    conf = directory / "ssl_exporter-file.yml"
    conf.write_text("modules:\n  file:\n    prober: file\n    timeout: 120s\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    check = subprocess.run([sys.executable, "-m", "ssl_exporter", f"--config.file={conf}", "--config.check"],
                           capture_output=True, text=True, cwd=ROOT, env=env)
    if check.returncode != 0:
        return {"file_status": "n/a: file prober not available",
                "file_detail": (check.stderr or check.stdout).strip()[-300:]}
    exporter = Exporter(
        OURS, "ssl_exporter (file)",
        lambda port: [sys.executable, "-m", "ssl_exporter", f"--config.file={conf}",
                      f"--web.listen-address=127.0.0.1:{port}", "--log.level=error", *extra_args],
        "/-/ready", lambda target: "/probe?" + urllib.parse.urlencode({"module": "file", "target": target}),
        "ssl_probe_success 1", cwd=ROOT, env=env)
    run, _ = launch(exporter, directory)
    try:
        path = exporter.probe_path(str(files_glob))
        status, body, cold = http_get(run.port, path, timeout=180)
        if status == 400:
            return {"file_status": "n/a: file prober not available", "file_detail": body.decode()[:300]}
        if status != 200:
            return {"file_status": f"error: HTTP {status}", "file_detail": body.decode()[:300]}
        warm = []
        for _ in range(settings.file_warm_scrapes):
            status, body, seconds = http_get(run.port, path, timeout=180)
            warm.append(seconds)
        series = len(re.findall(rb"^ssl_cert_not_after_timestamp_seconds\{", body, re.MULTILINE))
        return {
            "file_status": "ok",
            "file_cold_s": cold,
            "file_warm_s": statistics.median(warm),
            "file_series": series,
            "file_success": 1 if re.search(rb"^ssl_probe_success 1", body, re.MULTILINE) else 0,
            "file_response_kib": len(body) / 1024,
            "file_rss_mib": rss_bytes(process_tree(run.pid)) / MIB,
        }
    finally:
        stop(run.proc)


# --- summary, goals, table ----------------------------------------------------------------


def _numbers(rows: list[dict[str, Any]]) -> dict[str, float]:
    keys = dict.fromkeys(k for row in rows for k, v in row.items()
                         if isinstance(v, int | float) and not isinstance(v, bool))
    return {k: statistics.median([row[k] for row in rows if isinstance(row.get(k), int | float)])
            for k in keys}


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    ours = _numbers([r[OURS] for r in rounds if OURS in r])
    blackbox = _numbers([r[BLACKBOX_KEY] for r in rounds if BLACKBOX_KEY in r])
    ratio = {k: ours[k] / blackbox[k] for k in ours if k in blackbox and blackbox[k]}
    file_rows = [r["file"] for r in rounds if "file" in r]
    file: dict[str, Any] = {}
    if file_rows:
        ok = [row for row in file_rows if row.get("file_status") == "ok"]
        file = {"file_status": "ok", **_numbers(ok)} if ok else dict(file_rows[-1])
    runtime = {key: {k: r[key][k] for k in ("event_loop", "tls_library", "tls_version") if k in r[key]}
               for r in rounds for key in (OURS, BLACKBOX_KEY) if key in r}
    return {OURS: ours, BLACKBOX_KEY: blackbox, "ratio": ratio, "file": file, "runtime": runtime}


def goals(summary: dict[str, Any], settings: Settings) -> list[dict[str, Any]]:
    """The goals of issue 15 (ratios this/blackbox of one run, every probe distinct), then
    issue 7's file-scrape goal. The "2,000" and "10,000" silent goals use the smaller and
    the larger burst of the run (200 and 1,000 with --quick)."""
    ours, theirs, ratio, file = summary[OURS], summary[BLACKBOX_KEY], summary["ratio"], summary["file"]
    small, big = min(settings.silent_sizes), max(settings.silent_sizes)
    c_lo, c_hi = min(settings.concurrency), max(settings.concurrency)
    out = []

    def goal(name: str, target: str, value: Any, met: bool | None) -> None:
        out.append({"goal": name, "target": target, "measured": value, "met": met})

    def at_most(name: str, value: float | None, bound: float) -> None:
        goal(name, f"ratio <= {bound:g}", value, None if value is None else value <= bound)

    r = ratio.get(f"c{c_hi}_probes_per_s")
    goal(f"probes/s at concurrency {c_hi}", "ratio >= 1", r, None if r is None else r >= 1.0)
    for c in (c_lo, c_hi):
        at_most(f"CPU-ms per probe at concurrency {c}", ratio.get(f"c{c}_cpu_ms_per_probe"), 1.0)
    at_most(f"p50 latency at concurrency {c_lo}", ratio.get(f"c{c_lo}_p50_ms"), 1.3)
    at_most(f"p99 latency at concurrency {c_lo}", ratio.get(f"c{c_lo}_p99_ms"), 1.0)
    pss, rss = ours.get("idle_pss_mib"), theirs.get("idle_rss_mib")
    at_most("idle memory: total PSS of the exporter's processes / blackbox's idle RSS",
            pss / rss if pss is not None and rss else None, 1.5)
    at_most(f"{small} silent targets: peak memory (total PSS)", ratio.get(f"silent{small}_peak_pss_mib"), 0.7)
    answered, slowest = ours.get(f"silent{small}_answered"), ours.get(f"silent{small}_slowest_probe_s")
    goal(f"{small} silent targets: every probe answered within timeout + 1 s",
         f"{small} answered, slowest <= {settings.timeout + 1:g} s",
         None if answered is None else f"{answered:.0f} answered, slowest {slowest:.2f} s",
         None if answered is None or slowest is None else answered == small and slowest <= settings.timeout + 1)
    at_most(f"{big} silent targets: slowest answer", ratio.get(f"silent{big}_slowest_probe_s"), 1.0)
    ready = ours.get("ready_s")
    goal("start to ready", "<= 0.3 s", ready, None if ready is None else ready <= 0.3)
    warm = file.get("file_warm_s")
    goal(f"warm file scrape of {settings.file_count} files (issue 7)", "< 0.2 s",
         warm if warm is not None else file.get("file_status"), None if warm is None else warm < 0.2)
    return out


ROWS = [  # key, label, format
    ("ready_s", "start to ready (s)", "{:.3f}"),
    ("idle_rss_mib", "idle RSS (MiB)", "{:.1f}"),
    ("idle_pss_mib", "idle PSS, all processes (MiB)", "{:.1f}"),
    ("processes", "processes", "{:.0f}"),
    ("c8_probes_per_s", "probes/s, concurrency 8", "{:.0f}"),
    ("c64_probes_per_s", "probes/s, concurrency 64", "{:.0f}"),
    ("c8_cpu_ms_per_probe", "CPU-ms per probe, concurrency 8", "{:.3f}"),
    ("c64_cpu_ms_per_probe", "CPU-ms per probe, concurrency 64", "{:.3f}"),
    ("c8_p50_ms", "p50 latency, concurrency 8 (ms)", "{:.2f}"),
    ("c8_p99_ms", "p99 latency, concurrency 8 (ms)", "{:.2f}"),
    ("c64_p50_ms", "p50 latency, concurrency 64 (ms)", "{:.2f}"),
    ("c64_p99_ms", "p99 latency, concurrency 64 (ms)", "{:.2f}"),
    ("c8_exporter_cores", "exporter CPU, concurrency 8 (cores)", "{:.2f}"),
    ("c64_exporter_cores", "exporter CPU, concurrency 64 (cores)", "{:.2f}"),
    ("c64_nginx_cores", "nginx CPU, concurrency 64 (cores)", "{:.2f}"),
    ("c64_loadgen_cores", "wrk CPU, concurrency 64 (cores)", "{:.2f}"),
    ("c64_other_cores", "other processes' CPU, concurrency 64 (cores)", "{:.2f}"),
]


def _silent_rows(settings: Settings) -> list[tuple[str, str, str]]:
    rows = []
    for n in settings.silent_sizes:
        rows += [
            (f"silent{n}_answered", f"{n} silent targets: answered", "{:.0f}"),
            (f"silent{n}_last_answer_s", f"{n} silent targets: last answer after (s)", "{:.2f}"),
            (f"silent{n}_slowest_probe_s", f"{n} silent targets: slowest probe (s)", "{:.2f}"),
            (f"silent{n}_peak_rss_mib", f"{n} silent targets: peak RSS (MiB)", "{:.1f}"),
            (f"silent{n}_peak_pss_mib", f"{n} silent targets: peak PSS (MiB)", "{:.1f}"),
            (f"silent{n}_cpu_ms_per_probe", f"{n} silent targets: CPU-ms per probe", "{:.3f}"),
        ]
    return rows


def _fmt(fmt: str, value: Any) -> str:
    return "–" if value is None else fmt.format(value)


def markdown(result: dict[str, Any]) -> str:
    settings = Settings(**{**result["settings"], "concurrency": tuple(result["settings"]["concurrency"]),
                           "silent_sizes": tuple(result["settings"]["silent_sizes"]),
                           "only": tuple(result["settings"]["only"])})
    s = result["summary"]
    lines = [
        f"Run {result['started']} on {result['machine']['cpu_model']} ({result['machine']['nproc']} CPUs), "
        f"{settings.rounds} round(s) A B, {settings.duration} s per throughput measurement, "
        f"probe timeout {settings.timeout:g} s{' (--quick: not comparable)' if settings.quick else ''}. "
        "Medians over the rounds.",
        "",
        "| measurement | ssl_exporter | blackbox_exporter | ratio this/blackbox |",
        "|---|---:|---:|---:|",
    ]
    for key, label, fmt in ROWS + _silent_rows(settings):
        a, b = s[OURS].get(key), s[BLACKBOX_KEY].get(key)
        if a is None and b is None:
            continue
        ratio = s["ratio"].get(key)
        if key.endswith(("_nginx_cores", "_loadgen_cores", "_other_cores", "processes")):
            ratio = None  # conditions of the run, not a comparison
        lines.append(f"| {label} | {_fmt(fmt, a)} | {_fmt(fmt, b)} | {_fmt('{:.2f}', ratio)} |")
    f = s["file"]
    if f:
        if f.get("file_status") == "ok":
            lines.append(f"| file prober, {settings.file_count} files: cold scrape (s) | {f['file_cold_s']:.2f} "
                         "| n/a | |")
            lines.append(f"| file prober, {settings.file_count} files: warm scrape (s) | {f['file_warm_s']:.3f} "
                         "| n/a | |")
        else:
            lines.append(f"| file prober, {settings.file_count} files | {f.get('file_status')} | n/a | |")
    lines.append("")
    for key, rt in s.get("runtime", {}).items():
        lines.append(f"- {key}: event loop {rt.get('event_loop')}; TLS {rt.get('tls_library')}; "
                     f"negotiated {rt.get('tls_version')}")
    lines += ["", "| goal | target | measured | met |", "|---|---|---|---|"]
    for g in result["goals"]:
        value = g["measured"]
        shown = f"{value:.3f}" if isinstance(value, float) else str(value if value is not None else "not measured")
        met = {True: "met", False: "**missed**", None: "–"}[g["met"]]
        lines.append(f"| {g['goal']} | {g['target']} | {shown} | {met} |")
    return "\n".join(lines) + "\n"


# --- machine and versions -----------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) // 1024
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "memory_mib": mem,
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
    }


def _version(argv: list[str], **kwargs: Any) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, **kwargs)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def versions() -> dict[str, str]:
    import aiohttp
    import cryptography
    import prometheus_client

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return {
        "ssl_exporter": _version([sys.executable, "-m", "ssl_exporter", "--version"], cwd=ROOT, env=env),
        "blackbox_exporter": _version([BLACKBOX, "--version"]),
        "nginx": _version([shutil.which("nginx") or "/usr/sbin/nginx", "-v"]),
        "wrk": _version(["wrk", "-v"]).split(" [")[0],
        "aiohttp": aiohttp.__version__,
        "cryptography": cryptography.__version__,
        "prometheus_client": getattr(prometheus_client, "__version__", "?"),
    }


# --- main ---------------------------------------------------------------------------------


def update_doc(table: str, result: dict[str, Any]) -> None:
    m = result["machine"]
    block = (f"{DOC_BEGIN}\n"
             f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['memory_mib']} MiB, Linux {m['kernel']}, "
             f"Python {m['python']}, {m['openssl']}; "
             f"{result['versions']['blackbox_exporter']}; {result['versions']['nginx']}; "
             f"{result['versions']['wrk']}.\n\n{table}{DOC_END}")
    text = DOC.read_text() if DOC.exists() else f"# Performance\n\n{DOC_BEGIN}\n{DOC_END}\n"
    if DOC_BEGIN not in text:
        text += f"\n{DOC_BEGIN}\n{DOC_END}\n"
    head, rest = text.split(DOC_BEGIN, 1)
    _, tail = rest.split(DOC_END, 1)
    DOC.write_text(head + block + tail)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="one round, 1 s per throughput measurement, 200/1000 silent probes with a 1 s "
                             "timeout, 200 files: checks the bench works, numbers not comparable")
    parser.add_argument("--rounds", type=int, help="rounds of A B (default 3)")
    parser.add_argument("--duration", type=int, help="seconds per throughput measurement (default 10)")
    parser.add_argument("--only", action="append", choices=MEASUREMENTS,
                        help="run only this measurement (repeatable)")
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="where results go")
    parser.add_argument("--update-docs", action="store_true",
                        help="write the table into docs/performance.md")
    parser.add_argument("--no-install", action="store_true",
                        help="fail instead of installing missing Debian packages")
    parser.add_argument("--ours-arg", action="append", default=[], metavar="ARG",
                        help="extra command-line argument for ssl_exporter (repeatable)")
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.duration is not None and args.duration < 1:
        parser.error("--duration must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings.from_args(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        ensure_tools(install=not args.no_install)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    nofile = raise_nofile()
    args.out.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC).replace(microsecond=0)
    result: dict[str, Any] = {
        "schema": 1,
        "started": started.isoformat().replace("+00:00", "Z"),
        "settings": asdict(settings),
        "machine": {**machine(), "rlimit_nofile": nofile},
        "versions": versions(),
        "rounds": [],
    }
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ssl-exporter-bench-") as tmp, ExitStack() as stack:
        directory = Path(tmp)
        pki = make_pki(directory)
        nginx_pid, nginx_port = stack.enter_context(nginx_target(directory, pki))
        silent_port = None
        if "silent" in settings.only:
            silent, silent_port = start_silent(directory, budget=3600)
            stack.callback(stop, silent)
        files_glob = None
        if "file" in settings.only:
            t = time.perf_counter()
            files_glob = make_cert_files(directory / "certs", pki, settings.file_count)
            print(f"bench: {settings.file_count} certificate files in {time.perf_counter() - t:.1f} s",
                  file=sys.stderr)
        exporters = make_exporters(directory, pki, settings, args.ours_arg)
        try:
            for i in range(settings.rounds):
                row: dict[str, Any] = {"round": i + 1}
                for exporter in exporters:
                    if set(settings.only) - {"file"}:
                        t = time.perf_counter()
                        row[exporter.key] = session(exporter, settings, directory, (nginx_pid, nginx_port), silent_port)
                        print(f"bench: round {i + 1} {exporter.name}: {time.perf_counter() - t:.0f} s",
                              file=sys.stderr)
                if files_glob is not None:
                    row["file"] = measure_file(settings, directory, pki, files_glob, args.ours_arg)
                result["rounds"].append(row)
        except BenchError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
    result["elapsed_s"] = round(time.perf_counter() - t0, 1)
    result["summary"] = summarize(result["rounds"])
    result["goals"] = goals(result["summary"], settings)
    table = markdown(result)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    for name in (f"bench-{stamp}", "latest"):
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        (args.out / f"{name}.md").write_text(table)
    if args.update_docs:
        update_doc(table, result)
    print(table)
    print(f"bench: {result['elapsed_s']} s; results in {args.out / 'latest.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
