"""Bounded resources on the real process: memory per answer and in total, file descriptors,
connections, shutdown (docs/robustness.md, "Resource limits")."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import errno
import hashlib
import itertools
import os
import resource
import signal
import socket
import ssl
import string
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ssl_exporter import cli, lru, metrics
from ssl_exporter.exposition import encode
from ssl_exporter.history import History
from ssl_exporter.result import CertInfo, ProbeResult
from tests.command import exporter_command
from tests.conftest import PKI, Samples, serve_exporter
from tests.servers import nginx, pytls

MiB = 1024 * 1024


class Exporter:
    """``python -m ssl_exporter`` as a child with its log in a file (a pipe nobody reads
    would fill up and block it), optionally under a limit of open files."""

    def __init__(self, tmp_path: Path, *args: str, nofile: int | None = None) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.log_path = tmp_path / f"exporter-{self.port}.log"
        self._log = self.log_path.open("w")

        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.process = subprocess.Popen(
            exporter_command(f"--web.listen-address=127.0.0.1:{self.port}", *args),
            stderr=self._log, env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=limit)
        try:
            self.wait_for_log("listening")
        except BaseException:
            self.process.kill()
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, needle: str, limit: float = 20.0) -> str:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            for line in self.log().splitlines():
                if needle in line:
                    return line
            if self.process.poll() is not None:
                raise AssertionError(f"exporter exited ({self.process.returncode}) before logging {needle!r}")
            time.sleep(0.02)  # polling a file: there is no event to wait on
        raise AssertionError(f"exporter did not log {needle!r} within {limit} s")

    def rss(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        finally:
            self._log.close()


# --- memory: byte-bounded caches and capped labels ---------------------------------------


class FreshLargeCertificates:
    """A certificate of about 93 KB DER (17,000 three-letter SANs, a 4,000-character CN) that is
    new on every connection: its serial changes, so every probe parses a certificate no cache
    has seen. The signature no longer matches once the serial is patched; the probe reports
    that, and the certificate's series all the same."""

    SANS = 17_000

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        alphabet = string.ascii_lowercase + string.digits
        names = ["".join(p) for p in itertools.islice(itertools.product(alphabet, repeat=3), self.SANS)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a CN over 64 characters, on purpose
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "c" * 4000, _validate=False)])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(self.key.public_key()).serial_number(2**150 + 1)
                .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
                .sign(self.key, hashes.SHA256()))
        self.template = cert.public_bytes(serialization.Encoding.DER)
        self.serial = (2**150 + 1).to_bytes(19, "big")
        assert self.template.count(self.serial) == 1
        (directory / "key.pem").write_bytes(self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        self.counter = itertools.count(2)
        self.lock = threading.Lock()

    def next_context(self) -> ssl.SSLContext:
        with self.lock:
            n = next(self.counter)
        der = self.template.replace(self.serial, (2**150 + n).to_bytes(19, "big"))
        pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\n"
        path = self.directory / f"cert-{threading.get_ident()}.pem"
        path.write_bytes(pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(path, self.directory / "key.pem")
        return context

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        with self.next_context().wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)


def _rss_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yml"
    path.write_text("modules:\n  big: {prober: tcp, timeout: 5s}\n")
    return path


async def _probe_many(url: str, count: int, concurrency: int, check_every: int,
                      check: object) -> list[int]:
    """``count`` probes of ``url``, ``concurrency`` at a time; ``check()`` every ``check_every``."""
    sizes: list[int] = []
    done = itertools.count(1)
    async with aiohttp.ClientSession() as session:
        async def worker(todo: Iterator[int]) -> None:
            for _ in todo:
                async with session.get(url) as response:
                    body = await response.read()
                    assert response.status == 200, body[:200]
                sizes.append(len(body))
                if next(done) % check_every == 0:
                    check()  # type: ignore[operator]

        todo = iter(range(count))
        await asyncio.gather(*(worker(todo) for _ in range(concurrency)))
    return sizes


def test_fresh_large_certificates_keep_memory_within_the_cache_budget(tmp_path: Path) -> None:
    """2,000 probes, each of a new 93 KB certificate that costs about 1.5 MB once parsed:
    RSS stays within the cache budget plus a fixed margin (before the caches were bounded in
    bytes, it grew by ~1.5 MB a probe), and each answer stays small (capped labels)."""
    server = FreshLargeCertificates(tmp_path)
    budget = 32 * MiB
    exporter = Exporter(tmp_path, f"--config.file={_rss_config(tmp_path)}",
                        f"--cache.max-bytes={budget}")
    margin = 64 * MiB  # the interpreter's own growth: arenas, the parser's buffers, fragmentation
    try:
        with pytls.serve(server.handle) as port:
            url = f"{exporter.url}/probe?module=big&target=127.0.0.1:{port}"
            first = Samples(asyncio.run(_fetch(url)))
            baseline = exporter.rss()
            peak = [baseline]

            def check() -> None:
                rss = exporter.rss()
                peak[0] = max(peak[0], rss)
                assert rss < baseline + budget + margin, f"RSS {rss / MiB:.0f} MiB from {baseline / MiB:.0f} MiB"

            sizes = asyncio.run(_probe_many(url, 2000, 4, 50, check))
            check()
            own = Samples(asyncio.run(_fetch(f"{exporter.url}/metrics")))
    finally:
        assert exporter.stop() == 0
    print(f"RSS {baseline / MiB:.1f} MiB -> peak {peak[0] / MiB:.1f} MiB; answers {min(sizes)}-{max(sizes)} bytes")
    # The labels are cut: the 4,000-character CN, the 17,000 names.
    info = first.series("ssl_cert_info")[0]
    assert info["subject_cn"] == "c" * 232 + "...(+3768 chars)"
    assert info["subject"] == "CN=" + "c" * 485 + "...(+3515 chars)"
    assert first.get("ssl_handshake_success") == 1 and first.get("ssl_chain_valid") == 0
    assert max(sizes) < 8 * 1024, max(sizes)
    held = sum(s.value for s in own.samples if s.name == "ssl_exporter_cache_bytes")
    assert 0 < held <= budget
    assert own.get("ssl_exporter_cache_budget_bytes", cache="certs") == int(budget * lru.SHARES["certs"])


async def _fetch(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return await response.text()


def _huge_cert(text: str, source: dict[str, str] | None = None) -> CertInfo:
    """A CertInfo whose every text is ``text`` (already far over every cap)."""
    return CertInfo(der=b"\x30" * 100, subject_cn=text, issuer_cn=text, subject=text, issuer=text, serial=text,
                    not_before=0.0, not_after=1.0, dns_names=tuple(text[:50] + str(i) for i in range(2000)),
                    ip_addresses=(), fingerprint_sha256=hashlib.sha256(text.encode()).hexdigest(),
                    key_algorithm=text, key_bits=4096,
                    signature_algorithm=text, is_ca=False, self_issued=False, source=source or {})


def test_every_label_from_a_certificate_or_source_is_capped() -> None:
    # A 4-byte UTF-8 character, and characters the exposition escapes to two bytes: the worst.
    caps = {"subject": metrics.MAX_DN_LABEL, "issuer": metrics.MAX_DN_LABEL,
            "sans": metrics.MAX_SANS_LABEL + 20, "file": metrics.MAX_SOURCE_LABEL}
    for char in ("\U0001f512", '"', "\\", "\n", "a"):
        for source in ({}, {"file": "/" + char * 10_000}):
            families = metrics.cert_families([("0", _huge_cert(char * 90_000, source))])
            body, _ = encode(families, None)
            for sample in Samples(body.decode()).samples:
                for name, value in sample.labels.items():
                    assert len(value) <= caps.get(name, metrics.MAX_NAME_LABEL), (name, len(value))
            # The bounds docs/robustness.md states for one certificate's four series.
            bound = PER_CERT_BYTES_ASCII if char == "a" else PER_CERT_BYTES_WORST
            assert len(body) <= bound + (4 * 4 * metrics.MAX_SOURCE_LABEL if source else 0), len(body)
    assert metrics.clip_label("x" * 300) == "x" * 232 + "...(+68 chars)"
    assert metrics.clip_label("x" * 256) == "x" * 256


# One certificate's four series, labels at their caps, without source labels: every
# character a 4-byte UTF-8 one (or escaped), and plain ASCII. docs/robustness.md cites these.
PER_CERT_BYTES_WORST = 20 * 1024
PER_CERT_BYTES_ASCII = 6 * 1024


def test_history_is_bounded_in_bytes_keeping_the_newest() -> None:
    history = History(limit=100, failure_limit=100, max_bytes=4 * MiB)
    big = _huge_cert("n" * 1000)
    result = ProbeResult(success=False, duration=0.1, certs=(big,) * 5)
    for i in range(60):
        history.add("m", f"t{i}", "", {}, result)
    kept = history.records()
    assert history.bytes <= 4 * MiB and 0 < len(kept) < 60
    assert kept[0].target == "t59" and history.get(kept[-1].id) is not None
    assert history.get(1) is None  # the oldest went first


# --- descriptors and connections ---------------------------------------------------------


def _raise_own_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < min(hard, 8192):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))


def _healthy_config(tmp_path: Path, pki: PKI) -> tuple[Path, Path, Path]:
    leaf = pki.inter.issue("healthy", ips=("127.0.0.1",))
    cert, key = pki.chain_files("healthy", leaf, pki.inter)
    path = tmp_path / "config.yml"
    path.write_text(f"modules:\n  ok: {{prober: tcp, timeout: 5s, tls_config: {{ca_file: {pki.root_file}}}}}\n")
    return path, cert, key


async def _timed_get(session: aiohttp.ClientSession, url: str) -> tuple[int, str, float]:
    begin = time.monotonic()
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
        return response.status, await response.text(), time.monotonic() - begin


def test_a_slowloris_of_1100_connections_under_1024_open_files_keeps_the_exporter_answering(
        tmp_path: Path, pki: PKI) -> None:
    _raise_own_open_files_limit()
    config, cert, key = _healthy_config(tmp_path, pki)
    exporter = Exporter(tmp_path, f"--config.file={config}", nofile=1024)
    try:
        limit_line = exporter.wait_for_log("listening")
        assert "open_files_limit=1024" in limit_line
        with pytls.tls_server(cert, key) as (port, _):
            results = asyncio.run(_under_slowloris(exporter, port))
        own = Samples(asyncio.run(_fetch(f"{exporter.url}/metrics")))
        log = exporter.log()
        fds = exporter.open_fds()
    finally:
        assert exporter.stop() == 0
    healthy, probes, opened = results
    latencies = [elapsed for status, _, elapsed in healthy]
    print(f"slowloris: {opened} connections opened; /-/healthy {len(healthy)} times, "
          f"max {max(latencies) * 1000:.0f} ms; connections limit {own.get('ssl_exporter_connections_limit')}")
    assert opened >= 1100
    assert all(status == 200 for status, _, _ in healthy) and max(latencies) < 1.0
    assert all(status == 200 and Samples(text).get("ssl_probe_success") == 1 for status, text, _ in probes)
    assert own.get("ssl_exporter_connections_closed_early_total", reason="limit") > 0
    assert own.get("ssl_exporter_connections_open") <= own.get("ssl_exporter_connections_limit") < 1024 - 64
    assert "Too many open files" not in log and "Traceback" not in log
    assert fds < 1024


async def _under_slowloris(exporter: Exporter, target_port: int
                           ) -> tuple[list[tuple[int, str, float]], list[tuple[int, str, float]], int]:
    attacker = subprocess.Popen([sys.executable, "-m", "tests.servers.slowloris", str(exporter.port), "1100"],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert attacker.stdout is not None
        opened = int(attacker.stdout.readline().split()[1])  # blocks until 1,100 were opened
        healthy: list[tuple[int, str, float]] = []
        probes: list[tuple[int, str, float]] = []
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(20):
                healthy.append(await _timed_get(session, f"{exporter.url}/-/healthy"))
                probe_url = f"{exporter.url}/probe?module=ok&target=127.0.0.1:{target_port}"
                probes.extend(await asyncio.gather(*(_timed_get(session, probe_url) for _ in range(3))))
                await asyncio.sleep(0.2)  # a health checker's pace
    finally:
        attacker.kill()
        attacker.wait()
        if attacker.stdout is not None:
            attacker.stdout.close()
    return healthy, probes, opened


def test_a_probe_flood_under_1024_open_files_reports_no_healthy_target_failed(tmp_path: Path, pki: PKI) -> None:
    """1,500 probes at once: each answers 200 with success, or 503 (too many in flight);
    never ssl_probe_success 0 for lack of descriptors, and /-/healthy answers meanwhile."""
    _raise_own_open_files_limit()
    config, cert, key = _healthy_config(tmp_path, pki)
    exporter = Exporter(tmp_path, f"--config.file={config}", "--probe.max-concurrent=200", nofile=1024)
    try:
        with nginx.run_nginx(tmp_path / "nginx", {"ok": nginx.Site(cert, key)}) as ports:
            answers, healthy = asyncio.run(_flood(exporter, ports["ok"], 1500))
        log = exporter.log()
    finally:
        assert exporter.stop() == 0
    statuses = [status for status, _, _ in answers]
    print(f"flood: {statuses.count(200)} answered 200, {statuses.count(503)} 503; "
          f"/-/healthy max {max(e for _, _, e in healthy) * 1000:.0f} ms")
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 200
    failed = [text for status, text, _ in answers if status == 200 and Samples(text).get("ssl_probe_success") != 1]
    assert failed == []
    assert all(status == 200 for status, _, _ in healthy) and max(e for _, _, e in healthy) < 1.0
    assert "Too many open files" not in log


async def _flood(exporter: Exporter, port: int, count: int
                 ) -> tuple[list[tuple[int, str, float]], list[tuple[int, str, float]]]:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = f"{exporter.url}/probe?module=ok&target=127.0.0.1:{port}"
        flood = asyncio.gather(*(_timed_get(session, url) for _ in range(count)))
        healthy = []
        while not flood.done():
            healthy.append(await _timed_get(session, f"{exporter.url}/-/healthy"))
            await asyncio.sleep(0.1)
        return await flood, healthy


def test_a_client_without_a_whole_request_head_in_time_is_closed(tmp_path: Path) -> None:
    exporter = Exporter(tmp_path, f"--config.file={_rss_config(tmp_path)}", "--web.read-header-timeout=1",
                        "--web.idle-timeout=3")
    try:
        closed_after = asyncio.run(_drip(exporter.port, b"GET /-/healthy HTTP/1.1\r\n"))
        silent_after = asyncio.run(_drip(exporter.port, b""))
        idle_after = asyncio.run(_idle_after_answer(exporter.port))
        own = Samples(asyncio.run(_fetch(f"{exporter.url}/metrics")))
    finally:
        assert exporter.stop() == 0
    assert 0.9 < closed_after < 2.0, closed_after  # not after the 3 s idle timeout
    assert 0.9 < silent_after < 2.0, silent_after
    assert 2.9 < idle_after < 4.0, idle_after  # an idle keep-alive connection: the idle timeout
    assert own.get("ssl_exporter_connections_closed_early_total", reason="header_timeout") == 2


async def _drip(port: int, first: bytes) -> float:
    """Send ``first``, then a byte every 0.2 s; how long until the exporter closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    begin = time.monotonic()
    writer.write(first)
    try:
        while True:
            try:
                if await asyncio.wait_for(reader.read(1024), 0.2) == b"":
                    return time.monotonic() - begin
            except TimeoutError:
                if first:
                    writer.write(b"X")
            if time.monotonic() - begin > 10:
                raise AssertionError("not closed within 10 s")
    finally:
        writer.close()


async def _idle_after_answer(port: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"Healthy\n")
        assert head.startswith(b"HTTP/1.1 200")
        begin = time.monotonic()
        assert await asyncio.wait_for(reader.read(1), 10) == b""
        return time.monotonic() - begin
    finally:
        writer.close()


def test_an_overlong_request_line_logs_one_warning_without_traceback(tmp_path: Path) -> None:
    exporter = Exporter(tmp_path, f"--config.file={_rss_config(tmp_path)}")
    try:
        statuses = [asyncio.run(_raw_status(exporter.port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n"))
                    for _ in range(5)]
        assert asyncio.run(_fetch(f"{exporter.url}/-/healthy")) == "Healthy\n"
        log = exporter.log()
    finally:
        assert exporter.stop() == 0
    assert statuses == [400] * 5
    lines = [line for line in log.splitlines() if "malformed HTTP request" in line]
    assert len(lines) == 1, log  # rate-limited: the other four within the interval are counted
    assert "level=warn" in lines[0] and "LineTooLong" in lines[0] and "remote=127.0.0.1" in lines[0]
    assert "Traceback" not in log and "level=error" not in log


async def _raw_status(port: int, request: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        return int((await reader.readline()).split()[1])
    finally:
        writer.close()


# --- shutdown -----------------------------------------------------------------------------


def _slow_config(tmp_path: Path, timeout: str) -> Path:
    path = tmp_path / "slow.yml"
    path.write_text(f"modules:\n  slow: {{prober: tcp, timeout: {timeout}}}\n")
    return path


async def _probes_then_sigterm(exporter: Exporter, port: int, count: int
                               ) -> tuple[list[BaseException | tuple[int, str, float]], float]:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = f"{exporter.url}/probe?module=slow&target=127.0.0.1:{port}"
        probes = [asyncio.create_task(_timed_get(session, url)) for _ in range(count)]
        while Samples(await _fetch(f"{exporter.url}/metrics")).get("ssl_exporter_probes_in_flight") != count:
            await asyncio.sleep(0.02)
        begin = time.monotonic()
        exporter.process.send_signal(signal.SIGTERM)
        results = await asyncio.gather(*probes, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, exporter.process.wait, 20)
        return results, time.monotonic() - begin


def test_shutdown_timeout_0_cancels_in_flight_probes_at_once(tmp_path: Path) -> None:
    exporter = Exporter(tmp_path, f"--config.file={_slow_config(tmp_path, '30s')}", "--web.shutdown-timeout=0")
    try:
        with pytls.serve(pytls.silent) as port:
            results, took = asyncio.run(_probes_then_sigterm(exporter, port, 3))
    finally:
        assert exporter.stop() == 0
    assert took < 1.0, took  # before: it waited for the probes' 30 s
    assert all(isinstance(r, aiohttp.ClientError) for r in results), results
    # Identical probes share one run (probers/base.py): one probe was cancelled.
    assert "probes_cancelled=1" in exporter.wait_for_log("msg=stopped")


def test_shutdown_timeout_bounds_the_total_wait_and_lets_quicker_probes_answer(tmp_path: Path) -> None:
    exporter = Exporter(tmp_path, f"--config.file={_slow_config(tmp_path, '1s')}", "--web.shutdown-timeout=5")
    try:
        with pytls.serve(pytls.silent) as port:
            results, took = asyncio.run(_probes_then_sigterm(exporter, port, 3))
    finally:
        assert exporter.stop() == 0
    assert took < 3.0, took  # the probes' 1 s, not the 5 s allowed
    for result in results:
        assert not isinstance(result, BaseException), result
        assert result[0] == 200 and Samples(result[1]).errors() == {("handshake", "timeout")}

    exporter = Exporter(tmp_path, f"--config.file={_slow_config(tmp_path, '30s')}", "--web.shutdown-timeout=1.5")
    try:
        with pytls.serve(pytls.silent) as port:
            results, took = asyncio.run(_probes_then_sigterm(exporter, port, 3))
    finally:
        assert exporter.stop() == 0
    assert 1.4 < took < 2.5, took  # at most 1.5 s in total (before: twice that, ~3 s)
    assert all(isinstance(r, aiohttp.ClientError) for r in results), results


# --- large answers ------------------------------------------------------------------------


async def test_a_large_answer_is_rendered_off_the_loop_and_counted_in_the_duration(
        tmp_path: Path, pki: PKI, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(300):
        (tmp_path / f"c{i:03d}.pem").write_bytes(pki.inter.pem)
    config = tmp_path / "files.yml"
    config.write_text("modules:\n  files: {prober: file}\n")
    threads: list[str] = []
    original = metrics.probe_families

    def spy(result: ProbeResult, answer_time: object = None, cert_lines: object = None) -> list[object]:
        threads.append(threading.current_thread().name)
        families = original(result, answer_time, cert_lines)  # type: ignore[arg-type]
        time.sleep(0.3)  # stands for rendering a very large answer
        return families  # type: ignore[return-value]

    monkeypatch.setattr(metrics, "probe_families", spy)
    async with serve_exporter(config) as client:
        response = await client.get("/probe", params={"module": "files", "target": f"{tmp_path}/*.pem"})
        text = await response.text()
    s = Samples(text)
    assert threads == ["ssl-exporter-encode_0"]
    assert len(s.series("ssl_cert_not_after_timestamp_seconds")) == 300
    assert s.get("ssl_probe_duration_seconds") >= 0.3 + s.get("ssl_probe_phase_duration_seconds", phase="read")
    assert text.rstrip().splitlines()[-1].startswith("ssl_probe_duration_seconds ")


def test_the_connection_limit_keeps_descriptors_for_the_probes() -> None:
    # 1,024 files, 15 open at start, 64 reserved: 945 left.
    assert cli.connection_limit(1024, 15, 200) == 945 - 2 * 200
    assert cli.connection_limit(1024, 15, 500) == 945 // 3  # each connection keeps room for its probe
    assert cli.connection_limit(1024, 15, 0) == 945 // 3
    assert cli.connection_limit(1_048_576, 15, 500) == 1_048_576 - 15 - 64 - 1000
    assert cli.connection_limit(50, 15, 500) == 1  # a tiny limit still serves one at a time


def test_resource_flags_refuse_nonsense(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.parse_args(["--cache.max-bytes=256MiB"]).cache_max_bytes == 256 * MiB
    for bad in ("--cache.max-bytes=lots", "--web.read-header-timeout=0", "--web.idle-timeout=inf",
                "--web.shutdown-timeout=nan", "--web.max-connections=-1"):
        with pytest.raises(SystemExit):
            cli.parse_args([bad])
        assert bad.split("=")[0] in capsys.readouterr().err


async def test_running_out_of_descriptors_while_probing_answers_503_not_a_failed_target(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    # What connect() says when the process has no descriptor left (provoking it for real
    # would starve the test's own client and server of descriptors too).
    async def exhausted(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(asyncio, "open_connection", exhausted)
    response = await client.get("/probe", params={"target": "127.0.0.1:443"})
    assert response.status == 503
    assert "out of file descriptors" in await response.text()
    own = Samples(await (await client.get("/metrics")).text())
    assert own.get("ssl_exporter_probes_rejected_total", module="test") == 1
    assert own.get("ssl_exporter_probes_total", module="test", result="failure") is None


def test_ari_series_carry_the_same_capped_labels_as_the_certificate() -> None:
    """The ARI families took names, serial and sources raw: past the caps, and no longer
    joining with the certificate's own (capped) series."""
    from ssl_exporter.result import AriCheck

    cert = _huge_cert("c" * 5000, {"file": "/" + "f" * 5000})
    check = AriCheck(position="0", cert=cert, status="ok", window_start=10.0, window_end=20.0)
    ari_body, _ = encode(metrics.ari_families(ProbeResult(True, 0.1, ari=(check,))), None)
    cert_body, _ = encode(metrics.cert_families([("0", cert)]), None)
    joined = ("position", "subject_cn", "issuer_cn", "serial", "file")
    ari_labels = {tuple(s.labels[k] for k in joined) for s in Samples(ari_body.decode()).samples}
    cert_labels = {tuple(s.labels[k] for k in joined) for s in Samples(cert_body.decode()).samples}
    assert len(ari_labels) == 1 and ari_labels == cert_labels
    assert max(len(value) for value in next(iter(ari_labels))) <= metrics.MAX_SOURCE_LABEL
# --- connections that stop reading, and keep-alive at shutdown ----------------------------


def _many_files_config(tmp_path: Path, pki: PKI, count: int) -> tuple[Path, str]:
    directory = tmp_path / "many"
    directory.mkdir()
    for i in range(count):
        (directory / f"c{i:04d}.pem").write_bytes(pki.inter.pem)
    config = tmp_path / "files.yml"
    config.write_text("modules:\n  files: {prober: file}\n")
    return config, f"{directory}/*.pem"


def test_a_client_that_never_reads_its_answer_loses_its_connection_after_the_write_timeout(
        tmp_path: Path, pki: PKI) -> None:
    config, pattern = _many_files_config(tmp_path, pki, 5000)
    exporter = Exporter(tmp_path, f"--config.file={config}", "--web.max-connections=1",
                        "--web.write-timeout=1")
    try:
        size = len(asyncio.run(_fetch(f"{exporter.url}/probe?module=files&target={pattern}")))
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        try:
            stuck.connect(("127.0.0.1", exporter.port))
            stuck.sendall(f"GET /probe?module=files&target={pattern} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            begin = time.monotonic()
            # The only slot is the stuck client's; this waits in the listen queue until it is freed.
            healthy = asyncio.run(asyncio.wait_for(_fetch(f"{exporter.url}/-/healthy"), 15))
            waited = time.monotonic() - begin
            own = Samples(asyncio.run(_fetch(f"{exporter.url}/metrics")))
        finally:
            stuck.close()
    finally:
        assert exporter.stop() == 0
    assert size > 5 * MiB, size  # beyond the kernel send buffer (tcp_wmem at most 4 MiB) and asyncio's 64 KiB
    assert healthy == "Healthy\n"
    assert waited < 10, waited  # before: never (the stuck client kept the only slot)
    assert own.get("ssl_exporter_connections_closed_early_total", reason="write_timeout") == 1


def test_at_shutdown_a_busy_keep_alive_connection_gets_its_answer_then_is_closed(tmp_path: Path) -> None:
    exporter = Exporter(tmp_path, f"--config.file={_slow_config(tmp_path, '1s')}", "--web.shutdown-timeout=10")
    try:
        with pytls.serve(pytls.silent) as port:
            answer, after, took = asyncio.run(_keep_alive_at_sigterm(exporter, port))
    finally:
        assert exporter.stop() == 0
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b'ssl_probe_success{' in answer or b"ssl_probe_success 0" in answer, answer[-500:]
    assert after == b""  # closed by the exporter: the second request was not served
    assert took < 5, took  # the probe's 1 s; before: the whole 10 s shutdown timeout


async def _keep_alive_at_sigterm(exporter: Exporter, port: int) -> tuple[bytes, bytes, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", exporter.port)
    try:
        request = f"GET /probe?module=slow&target=127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        writer.write(request)
        while Samples(await _fetch(f"{exporter.url}/metrics")).get("ssl_exporter_probes_in_flight") != 1:
            await asyncio.sleep(0.02)
        begin = time.monotonic()
        exporter.process.send_signal(signal.SIGTERM)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        answer = head + await reader.readexactly(length)
        try:
            writer.write(request)
            await writer.drain()
            after = await asyncio.wait_for(reader.read(), 10)
        except ConnectionError:
            after = b""
        await asyncio.get_running_loop().run_in_executor(None, exporter.process.wait, 20)
        return answer, after, time.monotonic() - begin
    finally:
        writer.close()


def test_the_write_timeout_flag_refuses_nonsense(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.parse_args([]).write_timeout == 30.0
    assert cli.parse_args(["--web.write-timeout=2.5"]).write_timeout == 2.5
    for bad in ("--web.write-timeout=0", "--web.write-timeout=-1", "--web.write-timeout=inf"):
        with pytest.raises(SystemExit):
            cli.parse_args([bad])
        assert "--web.write-timeout" in capsys.readouterr().err
