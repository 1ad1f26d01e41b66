"""Overload, SIGTERM and reload under load, on the real process with slow probes in flight."""

from __future__ import annotations

import signal
import socket
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from tests.conftest import Samples
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
    exporter = ExporterProcess(f"--config.file={path}")
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
