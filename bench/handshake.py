#!/usr/bin/env python3
"""Micro-benchmark: client CPU per full TLS 1.3 handshake, the system OpenSSL (the ssl
module, what the exporter uses) against cryptography's bundled OpenSSL (through pyOpenSSL).

Starts the bench's nginx (bench/run.py: no session cache, no tickets, so every handshake is
full) and does --count handshakes with each library in turn (A B A B ..., --rounds), the way
the exporter drives one: a memory BIO pair over a blocking loopback socket, SNI, chain
verification against the bench root (VERIFY_PEER), then close. The CPU time of this process
(user + system, so the socket calls are counted for both alike) per handshake; medians over
the rounds. Measures only: the exporter is not changed by it.

    .venv/bin/python bench/handshake.py
    .venv/bin/python bench/handshake.py --count 2000 --rounds 5
"""

from __future__ import annotations

import argparse
import socket
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from cryptography.hazmat.backends.openssl.backend import backend
from OpenSSL import SSL

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py)


def stdlib(port: int, root: Path) -> Callable[[], str]:
    context = ssl.create_default_context(cafile=str(root))
    context.minimum_version = ssl.TLSVersion.TLSv1_3

    def handshake() -> str:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_hostname=bench.HOSTNAME)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    sock.sendall(outgoing.read())
                    data = sock.recv(65536)
                    if not data:
                        raise ConnectionError("closed during the handshake") from None
                    incoming.write(data)
            sock.sendall(outgoing.read())
            return f"{tls.version()} {tls.cipher()[0]}"  # type: ignore[index]

    return handshake


def pyopenssl(port: int, root: Path) -> Callable[[], str]:
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    context.load_verify_locations(str(root))
    context.set_verify(SSL.VERIFY_PEER, lambda *args: bool(args[-1]))  # OpenSSL's verdict

    def handshake() -> str:
        tls = SSL.Connection(context, None)  # memory BIOs
        tls.set_tlsext_host_name(bench.HOSTNAME.encode())
        tls.set_connect_state()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            while True:
                try:
                    tls.do_handshake()
                    break
                except SSL.WantReadError:
                    sock.sendall(tls.bio_read(65536))
                    data = sock.recv(65536)
                    if not data:
                        raise ConnectionError("closed during the handshake") from None
                    tls.bio_write(data)
            try:
                sock.sendall(tls.bio_read(65536))
            except SSL.WantReadError:
                pass  # nothing left to send
            return f"{tls.get_protocol_version_name()} {tls.get_cipher_name()}"

    return handshake


def cpu_ms_per_handshake(handshake: Callable[[], str], count: int) -> tuple[float, str]:
    seen = handshake()  # warm: contexts, trust store, first-use code paths
    started = time.process_time()
    for _ in range(count):
        handshake()
    return (time.process_time() - started) * 1000 / count, seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="handshakes per library per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bench.raise_nofile()
    with tempfile.TemporaryDirectory(prefix="ssl-exporter-handshake-") as tmp, ExitStack() as stack:
        directory = Path(tmp)
        pki = bench.make_pki(directory)
        _, port = stack.enter_context(bench.nginx_target(directory, pki))
        libraries = {f"ssl module ({ssl.OPENSSL_VERSION})": stdlib(port, pki.root),
                     f"pyOpenSSL ({backend.openssl_version_text()}, cryptography's)": pyopenssl(port, pki.root)}
        results: dict[str, list[float]] = {name: [] for name in libraries}
        negotiated = {}
        for _ in range(args.rounds):
            for name, handshake in libraries.items():
                ms, negotiated[name] = cpu_ms_per_handshake(handshake, args.count)
                results[name].append(ms)
    print(f"{args.rounds} rounds x {args.count} full TLS 1.3 handshakes per library; client CPU-ms per "
          "handshake, median (min-max)\n")
    print("| library | negotiated | CPU-ms per handshake |")
    print("|---|---|---:|")
    for name, values in results.items():
        print(f"| {name} | {negotiated[name]} | {statistics.median(values):.3f} "
              f"({min(values):.3f}-{max(values):.3f}) |")
    first, second = (statistics.median(v) for v in results.values())
    print(f"\npyOpenSSL / ssl module: {second / first:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
