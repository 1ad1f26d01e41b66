#!/usr/bin/env python3
"""Profile ssl_exporter under load: where the CPU goes per probe.

Starts nginx (as bench/run.py does) and ssl_exporter, loads it with wrk at a fixed
concurrency and samples it with py-spy (``pip install py-spy`` into .venv): a raw
collapsed-stack profile (summarised here: top functions by own and by inclusive time, and
CPU-ms per probe by the exporter's own function that was running) and a flame graph.

    .venv/bin/python bench/profile.py                    # 15 s at concurrency 64
    .venv/bin/python bench/profile.py --native           # include C frames (OpenSSL, ...)
    .venv/bin/python bench/profile.py --ours-arg=--web.workers=2

Writes bench/results/profile.svg, profile.txt (collapsed stacks) and profile-summary.md.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py)

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")
PACKAGE = "ssl_exporter/"
# Frames on every stack (the server's main loop): not where a probe spends its time.
OUTER = ("ssl_exporter/cli.py", "ssl_exporter/__main__.py")


def _frames(stack: str) -> list[tuple[str, str]]:
    out = []
    for frame in stack.split(";"):
        m = FRAME.match(frame)
        out.append((m.group("func"), m.group("file")) if m else (frame, ""))
    return out


def _short(func: str, file: str) -> str:
    if PACKAGE in file:
        module = file.split(PACKAGE, 1)[1].removesuffix(".py").replace("/", ".")
        return f"ssl_exporter.{module}.{func}"
    if "site-packages/" in file:
        file = file.split("site-packages/", 1)[1]
    elif "/lib/python3" in file:
        file = "stdlib/" + file.split("/lib/python3", 1)[1].split("/", 1)[-1]
    return f"{func} ({file})" if file else func


def bucket(frames: list[tuple[str, str]]) -> str:
    """The innermost ssl_exporter function on the stack, else the library that ran."""
    for func, file in reversed(frames):
        if PACKAGE in file and not file.endswith(OUTER):
            return _short(func, file)
    files = " ".join(file for _, file in frames)
    if "aiohttp/" in files:
        return "(aiohttp: HTTP parsing, routing, response writing)"
    if "asyncio/" in files:
        return "(asyncio: event loop, selector, transports)"
    return "(other)"


def summarize(raw: Path, cpu_ms_per_probe: float, top: int = 25) -> str:
    total = 0
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    buckets: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = _frames(stack)
        own[_short(*frames[-1])] += n
        for name in {_short(*f) for f in frames}:
            inclusive[name] += n
        buckets[bucket(frames)] += n
    if not total:
        return "no samples\n"

    def table(title: str, counter: collections.Counter[str], n: int) -> list[str]:
        rows = [f"### {title}", "", "| share | CPU-ms per probe | function |", "|---:|---:|---|"]
        for name, count in counter.most_common(n + 12):
            share = count / total
            if title.startswith("Inclusive") and (share > 0.985 or name.startswith("process ")):
                continue  # the main loop and runpy: on every stack
            rows.append(f"| {share:6.1%} | {share * cpu_ms_per_probe:.3f} | `{name}` |")
        return [*rows, ""]

    lines = [f"{total} samples; {cpu_ms_per_probe:.3f} CPU-ms per probe measured in the same window.", ""]
    lines += table("By the innermost ssl_exporter function running (or the library, outside it)", buckets, top)
    lines += table("Own time (the function at the top of the stack)", own, top)
    lines += table("Inclusive time (the function anywhere on the stack)", inclusive, top)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=15, help="seconds of sampling (default 15)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--native", action="store_true", help="also sample C frames (py-spy --native)")
    parser.add_argument("--no-svg", action="store_true", help="skip the flame graph (a second load run)")
    parser.add_argument("--out", type=Path, default=bench.BENCH / "results")
    parser.add_argument("--ours-arg", action="append", default=[], metavar="ARG")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("profile: py-spy not found: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    bench.ensure_tools(install=False)
    bench.raise_nofile()
    args.out.mkdir(parents=True, exist_ok=True)
    settings = bench.Settings()
    with tempfile.TemporaryDirectory(prefix="ssl-exporter-profile-") as tmp, ExitStack() as stack:
        directory = Path(tmp)
        pki = bench.make_pki(directory)
        nginx_pid, nginx_port = stack.enter_context(bench.nginx_target(directory, pki))
        ours = bench.make_exporters(directory, pki, settings, args.ours_arg)[0]
        running, _ = bench.launch(ours, directory)
        path = ours.probe_path(f"127.0.0.1:{nginx_port}")
        try:
            bench.run_wrk(running, path, args.concurrency, 2)  # warm-up
            outputs = [("raw", args.out / "profile.txt")]
            if not args.no_svg:
                outputs.append(("flamegraph", args.out / "profile.svg"))
            cpu_ms = 0.0
            for fmt, out in outputs:
                load = subprocess.Popen(
                    ["wrk", "-t", "1", "-c", str(args.concurrency), "-d", f"{args.duration + 3}s", "--timeout",
                     "10s", "-s", str(bench.BENCH / "probe.lua"), f"http://127.0.0.1:{running.port}{path}",
                     "--", ours.marker], stdout=subprocess.PIPE, text=True)
                time.sleep(1)
                cpu0 = bench.tree_cpu_seconds(running.pid)
                argv = [py_spy, "record", "--pid", str(running.pid), "--duration", str(args.duration),
                        "--rate", str(args.rate), "--format", fmt, "-o", str(out), "--subprocesses"]
                if args.native:
                    argv.append("--native")
                subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                cpu = bench.tree_cpu_seconds(running.pid) - cpu0
                stdout, _ = load.communicate(timeout=args.duration + 60)
                match = re.search(r"^WRK_RESULT (\{.*\})$", stdout, re.MULTILINE)
                if fmt == "raw" and match:
                    result = bench.json.loads(match.group(1))
                    # Probes during the sampling window, estimated from wrk's overall rate.
                    rate = result["ok"] / (result["duration_us"] / 1e6)
                    cpu_ms = cpu * 1000 / (rate * args.duration)
                    print(f"profile: {rate:.0f} probes/s, {cpu_ms:.3f} CPU-ms per probe while sampled",
                          file=sys.stderr)
        finally:
            bench.stop(running.proc)
    summary = summarize(args.out / "profile.txt", cpu_ms)
    (args.out / "profile-summary.md").write_text(summary)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
