#!/usr/bin/env python3
"""Micro-benchmark: CPU to turn one probe result into the bytes of its answer.

What the server does per probe after the probe itself (ssl_exporter.server.encode_answer):
metrics.probe_families then metrics.encode. Two results: a typical successful TLS probe
(leaf + intermediate, four phases, TLS version and cipher) and the rich result of
tests/test_exposition.py (every family, odd label values). Certificate lines are cached
across answers as in the server (a chain seen before). Median over --rounds of --count
answers, µs per answer.

    .venv/bin/python bench/render.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ssl_exporter import metrics  # noqa: E402
from ssl_exporter.certs import parse_der  # noqa: E402
from ssl_exporter.result import ProbeResult, TLSInfo  # noqa: E402
from tests.pki import make_root  # noqa: E402
from tests.test_exposition import _rich_result  # noqa: E402

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,"
                     "*/*;q=0.1")  # what Prometheus 2.x sends (it asks for text/plain first in scrape_protocols)


def typical() -> ProbeResult:
    root = make_root("bench root CA")
    inter = root.issue("bench intermediate CA", ca=True)
    leaf = inter.issue("bench.example.test", dns=("bench.example.test", "*.bench.example.test"))
    return ProbeResult(
        success=True, duration=0.0042,
        phases={"resolve": 1.2e-05, "connect": 0.00021, "handshake": 0.0031, "verify": 0.00042},
        certs=(parse_der(leaf.der), parse_der(inter.der)), handshake_success=True, chain_valid=True,
        hostname_valid=True, verified_chain_expiry=leaf.not_after, tls=TLSInfo("TLS 1.3", "TLS_AES_256_GCM_SHA384"))


def per_answer_us(result: ProbeResult, accept: str | None, count: int) -> float:
    started = time.process_time()
    for _ in range(count):
        begin = time.perf_counter()
        metrics.encode(metrics.probe_families(result, lambda begin=begin: time.perf_counter() - begin), accept)
    return (time.process_time() - started) * 1e6 / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print("| result | format | µs per answer |")
    print("|---|---|---:|")
    for name, result, count in (("typical TLS probe", typical(), args.count),
                                ("rich (every family)", _rich_result(), args.count // 10)):
        for label, accept in (("text", None), ("OpenMetrics", OPENMETRICS), ("text, Prometheus' Accept",
                                                                             PROMETHEUS_ACCEPT)):
            per_answer_us(result, accept, 100)  # warm the caches
            runs = [per_answer_us(result, accept, count) for _ in range(args.rounds)]
            print(f"| {name} | {label} | {statistics.median(runs):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
