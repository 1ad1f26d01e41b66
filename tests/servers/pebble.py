"""Debian's pebble (a real ACME CA for tests) and certbot on loopback, for the renewal tests.

Pebble listens on 127.0.0.1 with a certificate of the test PKI (Debian ships none), validates
nothing (``PEBBLE_VA_ALWAYS_VALID``), never sleeps or rejects nonces on purpose, and is given
a dead loopback DNS server so that nothing is ever resolved. Its issuing root is created at
each start and read from the management endpoint ``/roots/0``.

certbot keeps its configuration, work and log folders under the test's directory, trusts
pebble through ``REQUESTS_CA_BUNDLE``, binds its http-01 listener to 127.0.0.1 only (pebble
never connects to it) and never sleeps before a renewal (``--no-random-sleep-on-renew``).
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers.promstack import Daemon, free_port

PEBBLE = "/usr/bin/pebble"
CERTBOT = "/usr/bin/certbot"


def _binary(path: str, package: str) -> str:
    found = path if Path(path).exists() else shutil.which(Path(path).name)
    if not found:
        pytest.fail(f"{path} is not installed (apt-get install {package})")
    return found


@dataclass
class Pebble:
    daemon: Daemon
    directory: str  # the ACME directory URL
    root_pem: bytes  # the root pebble issues under (changes at every start)
    tls_ca: Path  # trust for pebble's own HTTPS listener


@contextmanager
def run_pebble(folder: Path, tls_cert: Path, tls_key: Path, tls_ca: Path,
               validity_seconds: int = 90 * 86400) -> Iterator[Pebble]:
    exe = _binary(PEBBLE, "pebble")
    folder.mkdir(parents=True, exist_ok=True)
    management = free_port()
    dead_dns = free_port()  # nothing listens there: any lookup fails at once

    def argv(port: int) -> list[str]:
        config = folder / f"pebble-{port}.json"
        config.write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{port}", "managementListenAddress": f"127.0.0.1:{management}",
            "certificate": str(tls_cert), "privateKey": str(tls_key),
            "httpPort": free_port(), "tlsPort": free_port(), "ocspResponderURL": "",
            "externalAccountBindingRequired": False, "certificateValidityPeriod": validity_seconds,
        }}))
        return [exe, "-config", str(config), "-dnsserver", f"127.0.0.1:{dead_dns}"]

    env = dict(os.environ, PEBBLE_VA_ALWAYS_VALID="1", PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
    context = ssl.create_default_context(cafile=str(tls_ca))
    daemon = _PebbleDaemon(argv, folder / "pebble.log", env, context)
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{management}/roots/0", context=context, timeout=10) as r:
            root = r.read()
        yield Pebble(daemon, f"https://127.0.0.1:{daemon.port}/dir", root, tls_ca)
    finally:
        daemon.stop()


class _PebbleDaemon(Daemon):
    """Ready when the ACME directory answers over HTTPS."""

    def __init__(self, argv, log, env, context) -> None:  # type: ignore[no-untyped-def]
        self._context = context
        super().__init__("pebble", argv, log, ready_path="/dir", env=env)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _wait_ready(self, path: str, timeout: float) -> bool:
        from tests.servers.promstack import wait_until

        def ready() -> tuple[bool, str]:
            if self.process.poll() is not None:
                return True, "exited"
            try:
                with urllib.request.urlopen(self.url + path, context=self._context, timeout=2) as r:
                    return r.status == 200, f"HTTP {r.status}"
            except OSError as exc:
                return False, str(exc)

        return wait_until(ready, f"pebble at {self.url}{path}", timeout,
                          details=lambda: self.log_tail()) != "exited"


@dataclass
class Certbot:
    folder: Path
    pebble: Pebble

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        exe = _binary(CERTBOT, "certbot")
        env = dict(os.environ, REQUESTS_CA_BUNDLE=str(self.pebble.tls_ca))
        result = subprocess.run(
            [exe, *args, "--config-dir", str(self.folder / "config"), "--work-dir", str(self.folder / "work"),
             "--logs-dir", str(self.folder / "logs"), "--server", self.pebble.directory, "--non-interactive"],
            capture_output=True, text=True, env=env, timeout=120, check=False)
        if result.returncode != 0:
            pytest.fail(f"certbot {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def certonly(self, name: str) -> Path:
        """Obtain a certificate for ``name``; return the lineage folder (live/NAME)."""
        self.run("certonly", "--standalone", "--http-01-address", "127.0.0.1", "--http-01-port", str(free_port()),
                 "--register-unsafely-without-email", "--agree-tos", "-d", name)
        return self.folder / "config" / "live" / name

    def force_renew(self) -> None:
        """Renew every lineage now, without reloading anything."""
        self.run("renew", "--force-renewal", "--no-random-sleep-on-renew",
                 "--http-01-address", "127.0.0.1", "--http-01-port", str(free_port()))
