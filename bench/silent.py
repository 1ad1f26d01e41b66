#!/usr/bin/env python3
"""A TCP server on loopback that accepts every connection and never says a word.

Used by bench/run.py for the "many concurrent probes against a silent target" measurement:
every probe connects, sends its ClientHello and waits for its timeout. Connections are
closed when the peer closes them, so nothing piles up between measurements. Prints
``PORT <n>`` once listening; stops on SIGTERM or after --max-seconds.
"""

from __future__ import annotations

import argparse
import resource
import selectors
import signal
import socket
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=3600.0,
                        help="stop by itself after this long (default 3600)")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(65535)  # the kernel caps it at net.core.somaxconn
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    deadline = time.monotonic() + args.max_seconds
    while running and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            if key.data is None:
                _accept_all(listener, sel)
                continue
            conn = key.fileobj
            try:
                data = conn.recv(65536)  # type: ignore[union-attr]
            except OSError:
                data = b""
            if not data:  # the peer gave up: forget the connection
                sel.unregister(conn)
                conn.close()  # type: ignore[union-attr]
    return 0


def _accept_all(listener: socket.socket, sel: selectors.BaseSelector) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        except OSError as exc:  # EMFILE: leave the rest in the backlog for now
            print(f"accept: {exc}", file=sys.stderr, flush=True)
            time.sleep(0.01)
            return
        conn.setblocking(False)
        sel.register(conn, selectors.EVENT_READ, True)


if __name__ == "__main__":
    sys.exit(main())
