"""Leak test: 10,000 failing probes through the app leave nothing behind.

Five kinds of failure, 2,000 each, through GET /probe with bounded concurrency: a refused
port, a garbage-speaking server, a server that closes at once, a self-signed server (the
handshake fails verification) and a malformed target (HTTP 400). The servers run in a child
process (tests/servers/hostile.py), so the file descriptors counted are the exporter's own.

After a warm-up, the open file descriptors and asyncio tasks must return to their baseline
(each request closes its connection, so no keep-alive pool can hold a varying number of
sockets; descriptors may only fall, as earlier tests' server threads finish), and RSS may
grow by at most RSS_BOUND.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import PKI
from tests.pki import make_cert
from tests.servers import pytls

ROOT = Path(__file__).parent.parent
HOST = "www.example.test"
PROBES = 10_000
WARMUP = 500
CONCURRENCY = 50
RSS_BOUND = 30 * 1024 * 1024
WALL_BOUND = 90.0  # seconds; measured about 25 s on the 2-core reference machine


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[dict[str, int]]:
    """The child process's ports, plus a refused port held here."""
    leaf = make_cert(HOST, dns=(HOST,))
    cert_path, key_path = leaf.write(tmp_path, "self-signed")
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.hostile", str(cert_path), str(key_path)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        ports = json.loads(child.stdout.readline())
        with pytls.refused_port() as refused:
            yield {**ports, "refused": refused}
    finally:
        child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()


# kind -> (query parameters, HTTP status, a byte string the answer must contain)
def _kinds(ports: dict[str, int]) -> dict[str, tuple[dict[str, str], int, bytes]]:
    def target(name: str) -> dict[str, str]:
        return {"target": f"127.0.0.1:{ports[name]}", "module": "fast", "hostname": HOST}

    return {
        "refused": (target("refused"), 200, b'ssl_probe_error_info{stage="connect",reason="refused"} 1.0'),
        "garbage": (target("garbage"), 200, b'ssl_probe_error_info{stage="handshake",reason="tls_protocol"} 1.0'),
        # Closed at once: the ClientHello may meet the FIN ("closed") or, written after
        # it, draw a RST ("reset"); both are the handshake stage.
        "close": (target("close"), 200, b'ssl_probe_error_info{stage="handshake",reason="'),
        "self_signed": (target("self_signed"), 200, b'ssl_probe_error_info{stage="verify",reason="self_signed"} 1.0'),
        "bad_target": ({"target": "bad host:443", "module": "fast"}, 400, b"contains whitespace"),
    }


async def _run(client, kinds: dict, count: int, failures: list[bytes] | None = None) -> Counter:
    """``count`` probes, the kinds interleaved, CONCURRENCY at a time; returns outcomes.

    Requests go through a plain ClientSession to the app's test server: aiohttp's
    TestClient keeps every response it made until it closes (about 8 KiB each), which
    would read as the exporter's growth."""
    names = list(kinds)
    outcomes: Counter = Counter()
    next_index = 0
    url = client.make_url("/probe")

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_index
        while next_index < count:
            kind = names[next_index % len(names)]
            next_index += 1
            params, status, expected = kinds[kind]
            # Connection: close, so that no keep-alive pool holds a varying number of sockets.
            async with session.get(url, params=params, headers={"Connection": "close"}) as response:
                body = await response.read()
            ok = response.status == status and expected in body and b"Traceback" not in body
            outcomes[(kind, ok)] += 1
            if not ok and failures is not None and len(failures) < 5:
                failures.append(kind.encode() + b": " + body)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
    return outcomes


async def _settle(baseline_fds: int, baseline_tasks: int) -> tuple[int, int]:
    """Poll (bounded) until the closes in flight are done; return fds and tasks then."""
    for _ in range(500):
        gc.collect()
        fds, tasks = open_fds(), len(asyncio.all_tasks())
        if fds <= baseline_fds and tasks <= baseline_tasks:
            break
        await asyncio.sleep(0.01)
    return fds, tasks


async def test_ten_thousand_failing_probes_leak_nothing(client, servers, pki: PKI, caplog) -> None:
    # One warning line per failed probe would be kept by pytest's log capture: not ours.
    caplog.set_level(logging.ERROR, logger="ssl_exporter")
    caplog.set_level(logging.ERROR, logger="aiohttp")
    kinds = _kinds(servers)

    warm = await _run(client, kinds, WARMUP)
    assert all(ok for (_, ok) in warm), warm
    fds_before, tasks_before = await _settle(10**9, 10**9)
    fds_before, tasks_before = await _settle(fds_before, tasks_before)
    rss_before = rss_bytes()

    # What asyncio would log: "Future exception was never retrieved", "Task was destroyed
    # but it is pending", "Unclosed connection"... none may appear.
    loop = asyncio.get_running_loop()
    loop_errors: list[str] = []
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda loop, context: loop_errors.append(str(context.get("message"))))
    try:
        started = time.monotonic()
        failures: list[bytes] = []
        outcomes = await _run(client, kinds, PROBES, failures)
        wall = time.monotonic() - started

        fds_after, tasks_after = await _settle(fds_before, tasks_before)
        gc.collect()
        rss_after = rss_bytes()
    finally:
        loop.set_exception_handler(previous_handler)
    report = (f"{PROBES} probes in {wall:.1f}s; fds {fds_before} -> {fds_after}; "
              f"tasks {tasks_before} -> {tasks_after}; RSS {rss_before / 2**20:.1f} MiB -> "
              f"{rss_after / 2**20:.1f} MiB")
    print(report)

    # Every probe failed in its documented way.
    assert outcomes == Counter({(kind, True): PROBES // len(kinds) for kind in kinds}), (outcomes, failures)
    assert loop_errors == [], loop_errors[:5]
    # Exact, except that sockets of earlier tests' servers (their daemon handler threads end
    # on their own) may close during the run: the count may fall, never rise.
    assert fds_after <= fds_before, report
    assert tasks_after == tasks_before, report
    assert rss_after - rss_before < RSS_BOUND, report
    assert wall < WALL_BOUND, report
