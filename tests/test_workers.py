"""--web.workers: real exporter processes with two workers, probing real TLS servers on loopback."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import PKI, Samples
from tests.pki import DAY, NOW
from tests.servers import pytls

WAIT = 20.0  # seconds any awaited condition may take on a loaded machine


class Exporter:
    """`python -m ssl_exporter --web.workers=2`; its log lines collected by a thread."""

    def __init__(self, *args: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ssl_exporter", f"--web.listen-address=127.0.0.1:{self.port}",
             "--web.workers=2", *args],
            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._collect, daemon=True).start()
        started = self.wait_for_log("workers started")
        self.worker_pids = [int(p) for p in re.search(r"pids=([\d,]+)", started).group(1).split(",")]  # type: ignore[union-attr]
        self.wait_for_log("listening")

    def _collect(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.lines.append("<exit>")
            self._changed.notify_all()

    def wait_for_log(self, needle: str, after: int = 0) -> str:
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((line for line in self.lines[after:] if needle in line or line == "<exit>"), None),
                timeout=WAIT)
        assert found is not None and (found != "<exit>" or needle == "<exit>"), f"no {needle!r} in {self.lines}"
        return found

    def get(self, path: str, method: str = "GET") -> tuple[int, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=WAIT) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self) -> Samples:
        return Samples(self.get("/metrics")[1])

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=WAIT)
        self.wait_for_log("<exit>")  # the log thread is done with the pipe
        assert self.process.stderr is not None
        self.process.stderr.close()
        return code


@pytest.fixture
def leaf_files(pki: PKI, tmp_path: Path) -> tuple[Path, Path]:
    leaf = pki.inter.issue("localhost", dns=("localhost", "*.workers.test"), not_after=NOW + 12 * DAY)
    return pki.chain_files("workers", leaf, pki.inter)


@pytest.fixture
def config(pki: PKI, tmp_path: Path) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(f"modules:\n  test:\n    prober: tcp\n    timeout: 10s\n"
                    f"    tls_config: {{ca_file: {pki.root_file}}}\n")
    return path


@contextmanager
def gated_tls_server(cert: Path, key: Path, before_handshake: Callable[[socket.socket], None]
                     ) -> Iterator[tuple[int, list[int]]]:
    """A TLS server that calls ``before_handshake(conn)`` first; yields its port and the
    client ports of its connections."""
    server = pytls.TLSServer(cert, key)
    ports: list[int] = []

    def handle(conn: socket.socket) -> None:
        ports.append(conn.getpeername()[1])
        before_handshake(conn)
        server.handle(conn)

    with pytls.serve(handle) as port:
        yield port, ports


def socket_owner(client_port: int, pids: list[int]) -> int | None:
    """Which of ``pids`` holds the loopback TCP socket bound to ``client_port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == client_port:
                    inodes.add(fields[9])
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except FileNotFoundError:  # a worker killed earlier
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return pid
    return None


def probe_path(port: int, name: str = "localhost") -> str:
    return f"/probe?module=test&target=127.0.0.1:{port}&hostname={name}"


def test_probes_run_in_both_workers_and_one_process_shows_them(leaf_files: tuple[Path, Path], config: Path) -> None:
    exporter = Exporter(f"--config.file={config}")
    owners: list[int | None] = []
    arrived = threading.Barrier(4, timeout=WAIT)  # all four probes in flight at once

    def note_owner(conn: socket.socket) -> None:
        owners.append(socket_owner(conn.getpeername()[1], exporter.worker_pids))
        arrived.wait()

    try:
        with gated_tls_server(*leaf_files, note_owner) as (port, _), ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda i: exporter.get(probe_path(port, f"n{i}.workers.test")), range(4)))
        assert [status for status, _ in answers] == [200] * 4
        assert [Samples(text).get("ssl_probe_success") for _, text in answers] == [1] * 4
        # Each worker ran two of them (the least busy worker gets the next probe) ...
        assert sorted(owners) == sorted(exporter.worker_pids * 2)  # type: ignore[arg-type]
        # ... and the parent's one registry and one history show all four.
        assert exporter.metrics().get("ssl_exporter_probes_total", module="test", result="success") == 4
        assert exporter.metrics().get("ssl_exporter_workers") == 2
        page = exporter.get("/")[1]
        assert all(f"n{i}.workers.test" in page for i in range(4))
        assert [exporter.get(f"/probe/log?id={i}")[0] for i in range(1, 5)] == [200] * 4
    finally:
        assert exporter.stop() == 0


def test_identical_concurrent_probes_share_one_connection_across_the_pool(
        leaf_files: tuple[Path, Path], config: Path) -> None:
    exporter = Exporter(f"--config.file={config}")
    release = threading.Event()
    try:
        with gated_tls_server(*leaf_files, lambda conn: release.wait(WAIT)) as (port, connections), \
                ThreadPoolExecutor(6) as pool:
            answers = [pool.submit(exporter.get, probe_path(port)) for _ in range(6)]
            deadline = time.monotonic() + WAIT
            while exporter.metrics().get("ssl_exporter_probes_in_flight") != 6:  # every request arrived
                assert time.monotonic() < deadline, "six requests never were in flight together"
            release.set()
            results = [answer.result() for answer in answers]
        assert [Samples(text).get("ssl_probe_success") for _, text in results] == [1] * 6
        assert len(connections) == 1
        assert exporter.metrics().get("ssl_exporter_probes_total", module="test", result="success") == 6
    finally:
        release.set()
        assert exporter.stop() == 0


def _unread_bytes(pid: int) -> int:
    """Bytes waiting unread on the Unix sockets of process ``pid`` (ss -x)."""
    out = subprocess.run(["ss", "-xpn"], capture_output=True, text=True, check=True).stdout
    return sum(int(line.split()[2]) for line in out.splitlines() if f"pid={pid}," in line)


def test_a_worker_that_cannot_load_keeps_the_old_config_everywhere(
        leaf_files: tuple[Path, Path], config: Path) -> None:
    exporter = Exporter(f"--config.file={config}", "--web.enable-lifecycle")
    old = config.read_text()
    stuck = exporter.worker_pids[1]
    try:
        config.write_text(old.replace("  test:", "  renamed:"))
        os.kill(stuck, signal.SIGSTOP)
        with ThreadPoolExecutor(1) as pool:
            reload = pool.submit(exporter.get, "/-/reload", "POST")
            deadline = time.monotonic() + WAIT
            while _unread_bytes(stuck) == 0:  # the new config's text reached the stopped worker
                assert time.monotonic() < deadline, "the reload never reached the stopped worker"
            os.kill(stuck, signal.SIGKILL)  # it dies during the load
            status, text = reload.result()
        assert status == 500
        assert text.startswith("failed to reload config: worker 1:") and "exited during the load" in text
        exporter.wait_for_log("worker started again")
        samples = exporter.metrics()
        assert samples.get("ssl_exporter_config_last_reload_successful") == 0
        assert "renamed" not in exporter.get("/config")[1]
        with pytls.tls_server(*leaf_files) as (port, _), ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda i: exporter.get(probe_path(port, f"r{i}.workers.test")), range(4)))
        assert [Samples(text).get("ssl_probe_success") for _, text in answers] == [1] * 4
        # The next reload loads in every worker, the restarted one included.
        assert exporter.get("/-/reload", "POST") == (200, "config reloaded\n")
        assert exporter.get(probe_path(port).replace("module=test", "module=renamed"))[0] == 200
    finally:
        assert exporter.stop() == 0


def test_a_killed_worker_answers_its_probe_and_is_started_again(
        leaf_files: tuple[Path, Path], config: Path) -> None:
    exporter = Exporter(f"--config.file={config}")
    victim: list[int | None] = []
    held = threading.Event()
    try:
        def kill_owner(conn: socket.socket) -> None:
            owner = socket_owner(conn.getpeername()[1], exporter.worker_pids)
            victim.append(owner)
            if owner is not None and len(victim) == 1:
                os.kill(owner, signal.SIGKILL)
            held.set()

        with gated_tls_server(*leaf_files, kill_owner) as (port, _):
            status, text = exporter.get(probe_path(port))
            assert status == 200
            samples = Samples(text)
            assert samples.get("ssl_probe_success") == 0
            assert samples.errors() == {("resolve", "internal_error")}
            line = exporter.wait_for_log("worker exited")
            assert f"pid={victim[0]}" in line and "status=\"signal 9\"" in line
            exporter.wait_for_log("worker started again")
            assert exporter.metrics().get("ssl_exporter_worker_restarts_total") == 1
            assert exporter.metrics().get("ssl_exporter_workers") == 2
            status, text = exporter.get(probe_path(port, "again.workers.test"))
            assert Samples(text).get("ssl_probe_success") == 1
    finally:
        assert exporter.stop() == 0


def test_sigterm_lets_a_probe_in_a_worker_finish_then_every_process_exits(
        leaf_files: tuple[Path, Path], config: Path) -> None:
    exporter = Exporter(f"--config.file={config}")
    release = threading.Event()
    arrived = threading.Event()

    def hold(conn: socket.socket) -> None:
        arrived.set()
        release.wait(WAIT)

    try:
        with gated_tls_server(*leaf_files, hold) as (port, _), ThreadPoolExecutor(1) as pool:
            answer = pool.submit(exporter.get, probe_path(port))
            assert arrived.wait(WAIT)
            exporter.process.send_signal(signal.SIGTERM)
            exporter.wait_for_log("shutting down")
            release.set()
            status, text = answer.result()
        assert status == 200 and Samples(text).get("ssl_probe_success") == 1
        assert exporter.process.wait(timeout=WAIT) == 0
        exporter.wait_for_log("msg=stopped")
        for pid in exporter.worker_pids:
            assert not os.path.exists(f"/proc/{pid}") or "zombie" in Path(f"/proc/{pid}/status").read_text()
    finally:
        release.set()
        exporter.stop()


def test_workers_flag_must_be_at_least_one() -> None:
    run = subprocess.run([sys.executable, "-m", "ssl_exporter", "--web.workers=0"],
                         capture_output=True, text=True, timeout=WAIT)
    assert run.returncode == 2
    assert "--web.workers must be at least 1" in run.stderr


def test_the_default_is_the_usable_cpus() -> None:
    from ssl_exporter import cli

    assert cli.parse_args([]).workers == len(os.sched_getaffinity(0))


def test_a_stuck_worker_does_not_hold_its_probe_past_the_timeout(
        pki: PKI, leaf_files: tuple[Path, Path], tmp_path: Path) -> None:
    # A worker that is alive but never answers (stopped here; a blocked loop alike): the parent
    # answers the probe when its timeout and a second have passed, and the next probe of the
    # same target is not joined to the stuck one.
    config = tmp_path / "short.yml"
    config.write_text(f"modules:\n  test:\n    prober: tcp\n    timeout: 1s\n"
                      f"    tls_config: {{ca_file: {pki.root_file}}}\n")
    exporter = Exporter(f"--config.file={config}")
    stopped: list[int] = []
    try:
        def stop_owner(conn: socket.socket) -> None:
            owner = socket_owner(conn.getpeername()[1], exporter.worker_pids)
            if owner is not None and not stopped:
                stopped.append(owner)
                os.kill(owner, signal.SIGSTOP)

        with gated_tls_server(*leaf_files, stop_owner) as (port, _):
            started = time.monotonic()
            status, text = exporter.get(probe_path(port))
            waited = time.monotonic() - started
            assert status == 200 and stopped
            samples = Samples(text)
            assert samples.get("ssl_probe_success") == 0
            assert samples.errors() == {("resolve", "internal_error")}
            assert waited < WAIT  # answered, not left to the client's own timeout
            status, text = exporter.get("/probe/log?id=1")
            assert f"pid {stopped[0]}) did not answer within 2s" in text
            assert f"pid={stopped[0]}" in exporter.wait_for_log("worker missed a probe's deadline")
            exporter.wait_for_log("worker exited")  # replaced: killed, reported, forked again
            status, text = exporter.get(probe_path(port))
            assert Samples(text).get("ssl_probe_success") == 1
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:  # killed, as it should be
                pass
        assert exporter.stop() == 0
