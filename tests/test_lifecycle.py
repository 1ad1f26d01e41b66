"""Overload, SIGTERM and reload under load, on the real process with slow probes in flight."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ssl_exporter import cli
from ssl_exporter.server import Exporter, make_app
from tests.conftest import PKI, Samples
from tests.servers import pytls
from tests.test_server import ExporterProcess


def wait_until(condition: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    """Poll ``condition`` until true; fail after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def in_flight(exporter: ExporterProcess) -> float | None:
    return Samples(exporter.get("/metrics")[1]).get("ssl_exporter_probes_in_flight")


def start_probes(pool: ThreadPoolExecutor, exporter: ExporterProcess, count: int, path: str
                 ) -> list[Future[tuple[int, str]]]:
    futures = [pool.submit(exporter.get, path) for _ in range(count)]
    wait_until(lambda: in_flight(exporter) == count, f"{count} probes in flight")
    return futures


def config(tmp_path: Path, timeout: str, name: str = "slow") -> Path:
    path = tmp_path / "config.yml"
    path.write_text(f"modules:\n  {name}: {{prober: tcp, timeout: {timeout}}}\n")
    return path


def test_probes_over_the_limit_answer_503_at_once_and_are_counted(tmp_path: Path) -> None:
    exporter = ExporterProcess(f"--config.file={config(tmp_path, '2s')}", "--probe.max-concurrent=3")
    try:
        with pytls.serve(pytls.silent) as port, ThreadPoolExecutor(4) as pool:
            futures = start_probes(pool, exporter, 3, f"/probe?module=slow&target=127.0.0.1:{port}")
            begin = time.monotonic()
            status, text = exporter.get(f"/probe?module=slow&target=127.0.0.1:{port}")
            elapsed = time.monotonic() - begin
            assert (status, text) == (503, "too many probes: 3 probes in flight, the --probe.max-concurrent limit\n")
            assert elapsed < 1.0  # at once, not after a probe slot frees up
            own = Samples(exporter.get("/metrics")[1])
            assert own.get("ssl_exporter_probes_rejected_total", module="slow") == 1
            assert own.get("ssl_exporter_probes_in_flight") == 3
            for future in futures:  # the probes in flight are unaffected
                status, text = future.result(timeout=10)
                assert status == 200
                assert Samples(text).errors() == {("handshake", "timeout")}
        with pytls.refused_port() as refused:  # the slots are free again
            assert exporter.get(f"/probe?module=slow&target=127.0.0.1:{refused}")[0] == 200
        own = Samples(exporter.get("/metrics")[1])
        assert own.get("ssl_exporter_probes_total", module="slow", result="failure") == 4
        assert own.get("ssl_exporter_probes_rejected_total", module="slow") == 1
    finally:
        assert exporter.stop() == 0


def _refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def test_sigterm_lets_in_flight_probes_finish_then_exits_0(tmp_path: Path) -> None:
    exporter = ExporterProcess(f"--config.file={config(tmp_path, '2s')}")
    with pytls.serve(pytls.silent) as port, ThreadPoolExecutor(5) as pool:
        futures = start_probes(pool, exporter, 5, f"/probe?module=slow&target=127.0.0.1:{port}")
        exporter.process.send_signal(signal.SIGTERM)
        line = exporter.wait_for_log("shutting down")
        assert "probes_in_flight=5 shutdown_timeout_seconds=15.0" in line
        # It stops listening at once, while the probes still run (each takes its 2 s).
        wait_until(lambda: _refuses_connections(exporter.port), "the listening socket to close")
        assert not all(f.done() for f in futures)
        for future in futures:
            status, text = future.result(timeout=15)
            assert status == 200
            s = Samples(text)
            assert s.errors() == {("handshake", "timeout")}
            assert 1.9 < s.get("ssl_probe_duration_seconds") < 5
        assert "probes_in_flight=0" in exporter.wait_for_log('msg=stopped')
        assert exporter.process.wait(timeout=10) == 0
    assert exporter.process.stderr is not None
    exporter.process.stderr.close()


def test_shutdown_timeout_bounds_the_drain(tmp_path: Path) -> None:
    exporter = ExporterProcess(f"--config.file={config(tmp_path, '60s')}", "--web.shutdown-timeout=0.5")
    with pytls.serve(pytls.silent) as port, ThreadPoolExecutor(2) as pool:
        futures = start_probes(pool, exporter, 2, f"/probe?module=slow&target=127.0.0.1:{port}")
        begin = time.monotonic()
        exporter.process.send_signal(signal.SIGTERM)
        assert exporter.process.wait(timeout=20) == 0
        assert time.monotonic() - begin < 10  # not the probes' 60 s
        for future in futures:  # cut off: the connection closes without an answer
            assert future.exception(timeout=10) is not None
    assert exporter.process.stderr is not None
    exporter.process.stderr.close()


def _post(exporter: ExporterProcess, path: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{exporter.port}{path}", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def test_a_reload_under_load_loses_no_probe_and_each_keeps_its_config(tmp_path: Path) -> None:
    path = config(tmp_path, "1.5s")
    exporter = ExporterProcess(f"--config.file={path}", "--web.enable-lifecycle")
    try:
        with pytls.serve(pytls.silent) as port, ThreadPoolExecutor(20) as pool:
            futures = start_probes(pool, exporter, 20, f"/probe?module=slow&target=127.0.0.1:{port}")
            # The module the probes use is gone from the new config: each must finish with the
            # module (timeout, history entry) it started with.
            path.write_text("modules:\n  fast: {prober: tcp, timeout: 30s}\n")
            assert _post(exporter, "/-/reload") == 200
            assert exporter.get(f"/probe?module=slow&target=127.0.0.1:{port}") == (400, "unknown module 'slow'\n")
            for future in futures:
                status, text = future.result(timeout=15)
                assert status == 200
                s = Samples(text)
                assert s.errors() == {("handshake", "timeout")}
                assert 1.4 < s.get("ssl_probe_duration_seconds") < 5
        own = Samples(exporter.get("/metrics")[1])
        assert own.get("ssl_exporter_probes_total", module="slow", result="failure") == 20
        assert own.get("ssl_exporter_config_last_reload_successful") == 1
        assert own.get("ssl_exporter_probes_in_flight") == 0
    finally:
        assert exporter.stop() == 0


# --- reload: off the event loop, coalesced, and only with --web.enable-lifecycle ---------------


class LogLines(threading.Thread):
    """Collects the exporter's log lines as they come, for counting."""

    def __init__(self, exporter: ExporterProcess) -> None:
        super().__init__(daemon=True)
        assert exporter.process.stderr is not None
        self.stream = exporter.process.stderr
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.start()

    def run(self) -> None:
        for line in self.stream:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()

    def close(self) -> None:
        """After the process exited: the stream has ended."""
        self.join(timeout=10)
        self.stream.close()

    def count(self, needle: str) -> int:
        with self.changed:
            return sum(needle in line for line in self.lines)

    def wait_for(self, needle: str, count: int, limit: float = 30.0) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: sum(needle in line for line in self.lines) >= count, limit):
                raise AssertionError(f"timed out waiting for {count} lines with {needle!r}")


class FifoFeeder:
    """A file that is slow to read, for exactly as long as the test wants: a FIFO whose data
    comes when :meth:`feed` is called. Used for the configuration file itself: files the
    configuration names must be regular files (a FIFO there is refused at once)."""

    def __init__(self, path: Path, data: bytes) -> None:
        os.mkfifo(path)
        self.path, self.data = path, data
        self.threads: list[threading.Thread] = []

    def feed(self) -> None:
        """Serve the next reader that opens the FIFO (now or later) with the data."""

        def write() -> None:
            with open(self.path, "wb") as fifo:  # blocks until a reader opens it
                fifo.write(self.data)

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        self.threads.append(thread)

    def close(self) -> None:
        """Release a writer still waiting for a reader (a test that failed early)."""
        for thread in self.threads:
            if thread.is_alive():
                os.close(os.open(self.path, os.O_RDONLY | os.O_NONBLOCK))
            thread.join(timeout=10)


def _healthy_latency(exporter: ExporterProcess) -> float:
    begin = time.monotonic()
    assert exporter.get("/-/healthy") == (200, "Healthy\n")
    return time.monotonic() - begin


def _config_on_fifo(path: Path, pki: PKI) -> FifoFeeder:
    """Put a FIFO in place of the configuration file: the next load waits for :meth:`feed`."""
    path.unlink()
    return FifoFeeder(path, f"modules:\n  slow: {{prober: tcp, tls_config: {{ca_file: {pki.root_file}}}}}\n".encode())


def test_200_concurrent_reloads_make_two_loads_while_health_answers(tmp_path: Path, pki: PKI) -> None:
    """Reload ran on the event loop, one load per request: 200 POSTs took 76 s and stalled
    /-/healthy for up to 19 s. Now the load runs in a thread, and requests arriving while one
    runs share the next: the first load, held on a FIFO, and one more for the other 199."""
    path = config(tmp_path, "2s")
    exporter = ExporterProcess(f"--config.file={path}", "--web.enable-lifecycle", "--log.level=debug")
    logs = LogLines(exporter)
    fifo = _config_on_fifo(path, pki)
    try:
        with ThreadPoolExecutor(200) as pool:
            answers = [pool.submit(_post, exporter, "/-/reload") for _ in range(200)]
            latencies = []
            while logs.count("config reload requested") < 200:  # the first load waits on the FIFO
                latencies.append(_healthy_latency(exporter))
            assert logs.count('msg="config reloaded"') == 0
            latencies += [_healthy_latency(exporter) for _ in range(5)]
            assert max(latencies) < 1.0, latencies
            fifo.feed()  # the first load ends; the second, for the 199 others, reads the file anew
            logs.wait_for('msg="config reloaded"', 1)
            fifo.feed()
            assert [a.result(timeout=30) for a in answers] == [200] * 200
        assert logs.count('msg="config reloaded"') == 2
        assert "  slow:\n" in exporter.get("/config")[1]
        assert Samples(exporter.get("/metrics")[1]).get("ssl_exporter_config_last_reload_successful") == 1
    finally:
        fifo.close()
        exporter.process.send_signal(signal.SIGTERM)
        assert exporter.process.wait(timeout=10) == 0
        logs.close()


def test_a_slow_sighup_reload_does_not_block_the_exporter(tmp_path: Path, pki: PKI) -> None:
    path = config(tmp_path, "2s")
    exporter = ExporterProcess(f"--config.file={path}", "--log.level=debug")
    logs = LogLines(exporter)
    fifo = _config_on_fifo(path, pki)
    try:
        exporter.process.send_signal(signal.SIGHUP)
        logs.wait_for("config reload requested", 1)
        assert max(_healthy_latency(exporter) for _ in range(10)) < 1.0
        with pytls.refused_port() as port:  # probes run meanwhile, with the config they had
            status, text = exporter.get(f"/probe?module=slow&target=127.0.0.1:{port}")
        assert status == 200 and Samples(text).errors() == {("connect", "refused")}
        assert logs.count('msg="config reloaded"') == 0
        fifo.feed()
        logs.wait_for('msg="config reloaded"', 1)
        assert "  slow:\n" in exporter.get("/config")[1]
    finally:
        fifo.close()
        exporter.process.send_signal(signal.SIGTERM)
        assert exporter.process.wait(timeout=10) == 0
        logs.close()


def test_a_load_that_never_ends_does_not_keep_the_process_from_exiting(tmp_path: Path) -> None:
    path = config(tmp_path, "2s")
    exporter = ExporterProcess(f"--config.file={path}", "--log.level=debug")
    logs = LogLines(exporter)
    path.unlink()
    FifoFeeder(path, b"")  # nobody ever writes to it
    exporter.process.send_signal(signal.SIGHUP)
    logs.wait_for("config reload requested", 1)
    exporter.process.send_signal(signal.SIGTERM)
    assert exporter.process.wait(timeout=10) == 0
    logs.close()


async def test_http_reload_is_off_without_the_lifecycle_flag(tmp_path: Path) -> None:
    """POST /-/reload needs no authentication without a web config: like Prometheus, it is
    off unless --web.enable-lifecycle turns it on."""
    path = tmp_path / "c.yml"
    path.write_text("modules:\n  first: {}\n")
    exporter = Exporter(str(path))
    path.write_text("modules:\n  second: {}\n")
    async with TestClient(TestServer(make_app(exporter))) as c:
        response = await c.post("/-/reload")
        assert response.status == 403
        assert await response.text() == ("the lifecycle API is not enabled: start the exporter with "
                                         "--web.enable-lifecycle to reload over HTTP, or send SIGHUP\n")
        assert list(exporter.config.modules) == ["first"]
    async with TestClient(TestServer(make_app(exporter, enable_lifecycle=True))) as c:
        assert (await c.post("/-/reload")).status == 200
        assert list(exporter.config.modules) == ["second"]


def test_the_lifecycle_flag_is_off_by_default() -> None:
    assert cli.parse_args([]).enable_lifecycle is False
    assert cli.parse_args(["--web.enable-lifecycle"]).enable_lifecycle is True


@pytest.mark.parametrize("text", [
    "modules:\n  web:\n    timeout: " + "[" * 5000 + "]" * 5000 + "\n",
    "modules:\n  web:\n    timeout: [&a [x, x, x, x, x, x, x, x, x, x], " + ", ".join(
        f"&a{i} [{', '.join(['*a' if i == 1 else f'*a{i - 1}'] * 10)}]" for i in range(1, 10)) + "]\n",
], ids=["deep", "alias-bomb"])
async def test_a_hostile_config_fails_the_reload_in_one_line(tmp_path: Path, text: str) -> None:
    """Deep nesting answered "500 Server got itself in trouble" and left the gauge at 1."""
    path = tmp_path / "c.yml"
    path.write_text("modules:\n  first: {}\n")
    exporter = Exporter(str(path))
    path.write_text(text)
    async with TestClient(TestServer(make_app(exporter, enable_lifecycle=True))) as c:
        response = await c.post("/-/reload")
        body = await response.text()
        assert response.status == 500
        assert body.startswith(f"failed to reload config: {path}: ")
        assert body.endswith(" levels (line 3, column 75)\n" if "[[[" in text else " nodes (line 3, column 248)\n")
        own = Samples(await (await c.get("/metrics")).text())
        assert own.get("ssl_exporter_config_last_reload_successful") == 0
        assert list(exporter.config.modules) == ["first"]


async def test_a_crash_while_loading_fails_the_reload_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    """Anything but a ConfigError escaped as aiohttp's 500 page with the gauge still at 1."""
    from ssl_exporter import config as config_module

    path = tmp_path / "c.yml"
    path.write_text("modules:\n  first: {}\n")
    exporter = Exporter(str(path))

    def crash(_path: str) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(config_module, "load_file", crash)
    async with TestClient(TestServer(make_app(exporter, enable_lifecycle=True))) as c:
        response = await c.post("/-/reload")
        assert (response.status, await response.text()) == (
            500, "failed to reload config: internal error: RecursionError: maximum recursion depth exceeded\n")
        own = Samples(await (await c.get("/metrics")).text())
        assert own.get("ssl_exporter_config_last_reload_successful") == 0
        assert list(exporter.config.modules) == ["first"]


async def test_a_reload_request_gives_up_waiting_for_a_load_that_does_not_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each POST /-/reload waited for ever behind a load that never ended, holding its
    connection; now it answers 503 after RELOAD_ANSWER_SECONDS while the load goes on."""
    from ssl_exporter import server

    monkeypatch.setattr(server, "RELOAD_ANSWER_SECONDS", 0.3)
    path = tmp_path / "c.yml"
    path.write_text("modules:\n  first: {}\n")
    exporter = Exporter(str(path))
    path.unlink()
    fifo = FifoFeeder(path, b"modules:\n  second: {}\n")
    try:
        async with TestClient(TestServer(make_app(exporter, enable_lifecycle=True))) as c:
            response = await c.post("/-/reload")
            assert response.status == 503
            assert (await response.text()).startswith("the reload is still running after 0.3s")
            assert list(exporter.config.modules) == ["first"]
            fifo.feed()  # the load that was asked for goes on, and ends now
            deadline = time.monotonic() + 10
            while list(exporter.config.modules) != ["second"]:  # polled: the load runs in a thread
                assert time.monotonic() < deadline, "the load never ended"
                await asyncio.sleep(0.01)
            fifo.feed()  # a new request waits for a load of its own, which ends at once
            assert (await c.post("/-/reload")).status == 200
    finally:
        fifo.close()
