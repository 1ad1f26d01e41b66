#!/usr/bin/env python3
"""Load generator for bench/run.py: N probes sent at once, each on its own connection.

Every request is a plain HTTP/1.1 GET with ``Connection: close``; the answer is read to its
end. Prints one JSON object: how many answered (HTTP 200 with a ``*probe_success`` line),
how many of those were successes, the time from the start of the burst until the last
answer, the slowest single probe, the errors by kind, and this process's own CPU time (so
the caller can check the load generator was not the bottleneck). Stops by itself after
--deadline seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import resource
import sys
import time


async def one(host: str, port: int, request: bytes, marker: bytes, t0: float,
              out: dict[str, object]) -> None:
    start = time.perf_counter()
    writer = None
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        body = await reader.read()  # Connection: close: the answer ends at EOF
        status = head.split(b" ", 2)[1].decode()
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        out["errors"][type(exc).__name__] += 1  # type: ignore[index]
        return
    finally:
        if writer is not None:
            writer.close()
    end = time.perf_counter()
    out["statuses"][status] += 1  # type: ignore[index]
    if status == "200" and b"probe_success" in body:
        out["answered"] += 1  # type: ignore[operator]
        out["last"] = max(out["last"], end - t0)  # type: ignore[call-overload]
        out["slowest"] = max(out["slowest"], end - start)  # type: ignore[call-overload]
        out["latencies"].append(end - start)  # type: ignore[union-attr]
        if marker in body:
            out["success"] += 1  # type: ignore[operator]


async def run(args: argparse.Namespace) -> dict[str, object]:
    # "{n}" in the path becomes the request's number: no two probes are identical.
    requests = [(f"GET {args.path.replace('{n}', str(i))} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
                 "Connection: close\r\n\r\n").encode() for i in range(args.n)]
    out: dict[str, object] = {"answered": 0, "success": 0, "last": 0.0, "slowest": 0.0,
                              "latencies": [], "errors": collections.Counter(),
                              "statuses": collections.Counter()}
    marker = b"\n" + args.marker.encode()
    t0 = time.perf_counter()
    tasks = [asyncio.ensure_future(one(args.host, args.port, request, marker, t0, out))
             for request in requests]
    started = time.perf_counter() - t0
    done, pending = await asyncio.wait(tasks, timeout=args.deadline)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
        out["errors"]["unanswered_at_deadline"] += len(pending)  # type: ignore[index]
    latencies = sorted(out.pop("latencies"))  # type: ignore[arg-type]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "n": args.n,
        "answered": out["answered"],
        "success": out["success"],
        "last_answer_s": round(out["last"], 4),  # type: ignore[arg-type]
        "slowest_probe_s": round(out["slowest"], 4),  # type: ignore[arg-type]
        "median_probe_s": round(latencies[len(latencies) // 2], 4) if latencies else None,
        "tasks_created_s": round(started, 4),
        "statuses": dict(out["statuses"]),  # type: ignore[call-overload]
        "errors": dict(out["errors"]),  # type: ignore[call-overload]
        "loadgen_cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "wall_s": round(time.perf_counter() - t0, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True, help="/probe?... to request")
    parser.add_argument("-n", type=int, required=True, help="concurrent probes")
    parser.add_argument("--deadline", type=float, default=30.0, help="give up after this long")
    parser.add_argument("--marker", default="probe_success 1", help="line that means success")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("loopback only")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.n + 64:
        print(f"warning: RLIMIT_NOFILE {hard} < {args.n} connections", file=sys.stderr)
    print(json.dumps(asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
