#!/usr/bin/env python3
"""A/B two or more builds of ssl_exporter (e.g. a copy with a proposed change), alternately.

Each build is a directory holding an ``ssl_exporter/`` package, run with this interpreter
(``PYTHONPATH`` set to the directory), optionally with extra flags after commas:

    .venv/bin/python bench/compare.py base=/tmp/base cache=/tmp/cache \\
        workers=/tmp/workers,--web.workers=2 --rounds 3 --duration 4 --concurrency 64

For each round, each build in turn: a fresh process, wrk at each concurrency (throughput,
CPU-ms per probe of the process tree, latency), exactly as bench/run.py measures them,
after its start to ready and idle total PSS (``--concurrency none``: only those two).
Prints the medians per build.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py)

SHOWN = ("ready_s", "idle_pss_mib",
         "probes_per_s", "cpu_ms_per_probe", "p50_ms", "p99_ms", "exporter_cores", "other_cores")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("builds", nargs="+", metavar="NAME=DIR[,ARG...]")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=4)
    parser.add_argument("--concurrency", default="64",
                        help="comma-separated (default 64); none: start to ready and idle PSS only")
    args = parser.parse_args()
    builds = []
    for spec in args.builds:
        name, _, rest = spec.partition("=")
        directory, *extra = rest.split(",")
        if not name or not (Path(directory) / "ssl_exporter").is_dir():
            parser.error(f"{spec!r}: expected NAME=DIR with DIR/ssl_exporter")
        builds.append((name, Path(directory).resolve(), extra))
    concurrency = [] if args.concurrency == "none" else [int(c) for c in args.concurrency.split(",")]
    bench.ensure_tools(install=False)
    bench.raise_nofile()
    settings = bench.Settings(duration=args.duration, warmup=1)
    rows: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in builds}
    with tempfile.TemporaryDirectory(prefix="ssl-exporter-compare-") as tmp, ExitStack() as stack:
        directory = Path(tmp)
        pki = bench.make_pki(directory)
        nginx_pid, port = stack.enter_context(bench.nginx_target(directory, pki))
        for i in range(args.rounds):
            for name, root, extra in builds:
                exporter = bench.make_exporters(directory, pki, settings, extra)[0]
                exporter.cwd, exporter.env = root, dict(exporter.env or {}, PYTHONPATH=str(root))
                running, ready = bench.launch(exporter, directory)
                row = {"ready_s": ready}
                try:
                    time.sleep(settings.idle_settle)  # as bench/run.py samples idle memory
                    row["idle_pss_mib"] = bench.pss_bytes(bench.process_tree(running.pid)) / bench.MIB
                    for c in concurrency:
                        row.update(bench.measure_throughput(running, f"127.0.0.1:{port}", c, settings,
                                                            nginx_pid))
                finally:
                    bench.stop(running.proc)
                rows[name].append(row)
                print(f"round {i + 1} {name}: " + ", ".join(
                    f"{k} {v:.3f}" for k, v in row.items() if k.endswith(SHOWN)), file=sys.stderr)
    keys = [k for k in rows[builds[0][0]][0] if k.endswith(SHOWN)]
    print("| build | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for name, _, _ in builds:
        medians = [statistics.median(r[k] for r in rows[name]) for k in keys]
        print(f"| {name} | " + " | ".join(f"{m:.3f}" for m in medians) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
