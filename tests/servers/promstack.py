"""The real Prometheus and Alertmanager (Debian packages) on loopback, for end-to-end tests.

Each daemon runs as a child process with its data in a temporary directory and its log in
a file there (never a pipe nobody reads), listens on 127.0.0.1 only, and counts as started
once its ``/-/ready`` endpoint answers 200. A daemon that exits while starting fails the
test with the tail of its log; one that lost the race for its port ("address already in
use": ports are picked free, then bound by the child) is started again on another port.

``Webhook`` is the receiver Alertmanager notifies: a thread recording every POSTed JSON
body, with a wait on a condition instead of a sleep.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"

T = TypeVar("T")


def binary(path: str, package: str) -> str:
    """The daemon's path; the test fails (not skips) without it."""
    found = path if Path(path).exists() else shutil.which(Path(path).name)
    if not found:
        pytest.fail(f"{path} is not installed (apt-get install {package})")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], tuple[bool, T]], what: str, timeout: float = 60.0,
               interval: float = 0.2, details: Callable[[], str] | None = None) -> T:
    """Poll ``check() -> (done, seen)`` until done; fail after ``timeout`` s showing ``seen``
    (and ``details()``, e.g. the daemons' logs)."""
    deadline = time.monotonic() + timeout
    while True:
        done, seen = check()
        if done:
            return seen
        if time.monotonic() > deadline:
            more = f"\n{details()}" if details else ""
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {seen!r}{more}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    """(status, body); (0, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


class Daemon:
    """A child process started by ``argv_for(port)``, ready when ``ready_path`` answers 200."""

    def __init__(self, name: str, argv_for: Callable[[int], list[str]], log: Path,
                 ready_path: str = "/-/ready", env: dict[str, str] | None = None,
                 cwd: Path | None = None, timeout: float = 60.0) -> None:
        self.name = name
        self.log = log
        for attempt in range(3):
            self.port = free_port()
            with log.open("ab") as out:
                start = out.tell()
                self.process = subprocess.Popen(argv_for(self.port), stdin=subprocess.DEVNULL,
                                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
            try:
                if self._wait_ready(ready_path, timeout):
                    return
            except BaseException:  # not ready in time: stop it rather than leak it
                self.stop()
                raise
            this_attempt = log.read_bytes()[start:].decode(errors="replace")
            if attempt < 2 and re.search(r"address already in use", this_attempt, re.I):
                continue  # another process took the free port first: pick another
            break
        pytest.fail(f"{name} exited ({self.process.returncode}) while starting:\n{self.log_tail()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self, path: str, timeout: float) -> bool:
        def ready() -> tuple[bool, str]:
            if self.process.poll() is not None:
                return True, "exited"
            status, body = http_get(self.url + path, timeout=2)
            return status == 200, f"HTTP {status} {body[:200]}"

        seen = wait_until(ready, f"{self.name} at {self.url}{path}", timeout,
                          details=lambda: f"{self.name} log (tail):\n{self.log_tail()}")
        return seen != "exited"

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def get(self, path: str, **params: str) -> tuple[int, Any]:
        """GET a JSON API path; (status, decoded body or raw text)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = http_get(f"{self.url}{path}{query}")
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return self.process.returncode


# ---- Copies of the shipped configuration, changed only where a test must ---------------


def rules_with_short_for(shipped: Path, out: Path, for_: str = "2s") -> Path:
    """Copy the shipped rules, every ``for:`` set to ``for_``; nothing else changes.

    A text edit (comments and expressions stay byte for byte); the parsed copy is then
    compared with the parsed original so that only ``for`` can differ.
    """
    text = shipped.read_text()
    changed, count = re.subn(r"(?m)^(\s+)for:\s*\S+\s*$", rf"\g<1>for: {for_}", text)
    assert count > 0, f"no for: clause in {shipped}"
    header = (f"# TEST COPY of {shipped.name} for tests/test_e2e.py: every `for:` shortened to {for_}\n"
              f"# (the shipped minutes would make the test wait minutes). Expressions, labels,\n"
              f"# annotations and keep_firing_for are the shipped ones, unchanged.\n")
    out.write_text(header + changed)
    original, copy = yaml.safe_load(text), yaml.safe_load(out.read_text())
    fors = 0
    for group_o, group_c in zip(original["groups"], copy["groups"], strict=True):
        for rule_o, rule_c in zip(group_o["rules"], group_c["rules"], strict=True):
            if "for" in rule_o:
                fors += 1
                assert rule_c.pop("for") == for_
                rule_o = {k: v for k, v in rule_o.items() if k != "for"}
            assert rule_o == rule_c, f"the copy changed more than for: {rule_o} != {rule_c}"
    assert fors == count
    return out


def alertmanager_for_test(shipped: Path, out: Path, webhook_base: str, group_wait: str = "1s",
                          group_interval: str = "1s") -> Path:
    """Copy the shipped Alertmanager config: webhook URLs to ``webhook_base`` (same paths),
    shorter group_wait and group_interval; routing, receivers and inhibitions as shipped."""
    original = yaml.safe_load(shipped.read_text())
    config = yaml.safe_load(shipped.read_text())
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            path = urllib.parse.urlsplit(webhook["url"]).path
            webhook["url"] = webhook_base.rstrip("/") + path
    config["route"]["group_wait"] = group_wait
    config["route"]["group_interval"] = group_interval
    assert config["inhibit_rules"] == original["inhibit_rules"]
    assert config["route"]["routes"] == original["route"]["routes"]
    header = (f"# TEST COPY of {shipped.name} for tests/test_e2e.py: webhook URLs point at the\n"
              f"# test's receiver; group_wait {group_wait} and group_interval {group_interval} instead of\n"
              f"# the shipped ones. Routing, grouping and inhibitions are the shipped ones.\n")
    out.write_text(header + yaml.safe_dump(config, sort_keys=False))
    return out


# ---- Daemons -----------------------------------------------------------------------------


@contextmanager
def run_alertmanager(directory: Path, config: Path) -> Iterator[Daemon]:
    exe = binary(ALERTMANAGER, "prometheus-alertmanager")
    (directory / "data").mkdir(parents=True, exist_ok=True)
    daemon = Daemon("Alertmanager", lambda port: [
        exe, f"--config.file={config}", f"--storage.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
        "--log.level=info",
    ], directory / "alertmanager.log")
    try:
        yield daemon
    finally:
        daemon.stop()


@contextmanager
def run_prometheus(directory: Path, config: dict[str, Any]) -> Iterator[Daemon]:
    """Prometheus with ``config`` (a dict, written as YAML)."""
    exe = binary(PROMETHEUS, "prometheus")
    (directory / "data").mkdir(parents=True, exist_ok=True)
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    daemon = Daemon("Prometheus", lambda port: [
        exe, f"--config.file={path}", f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        # A firing alert is sent when it starts firing; resend quickly too, so a first
        # send that Alertmanager missed is not a minute late.
        "--rules.alert.resend-delay=1s",
        "--log.level=info",
    ], directory / "prometheus.log")
    try:
        yield daemon
    finally:
        daemon.stop()


# ---- The webhook receiver ----------------------------------------------------------------


@dataclass
class Webhook:
    """Records ``(path, JSON body)`` of every POST; ``url`` is the base to give Alertmanager."""

    port: int = 0
    posts: list[tuple[str, Any]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def record(self, path: str, body: Any) -> None:
        with self.changed:
            self.posts.append((path, body))
            self.changed.notify_all()

    def wait_for(self, match: Callable[[str, Any], bool], what: str, timeout: float = 60.0,
                 details: Callable[[], str] | None = None) -> tuple[str, Any]:
        """The first POST ``match(path, body)`` accepts, waiting up to ``timeout`` s for it."""
        with self.changed:
            found: list[tuple[str, Any]] = []

            def seen() -> bool:
                found[:] = [p for p in self.posts if match(*p)]
                return bool(found)

            if not self.changed.wait_for(seen, timeout):
                more = f"\n{details()}" if details else ""
                pytest.fail(f"timed out after {timeout:.0f}s waiting for a webhook POST with {what}; "
                            f"received: {json.dumps(self.posts, indent=1)[:4000]}{more}")
            return found[0]


@contextmanager
def webhook_receiver() -> Iterator[Webhook]:
    hook = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                data: Any = json.loads(body)
            except ValueError:
                data = body.decode(errors="replace")
            hook.record(self.path, data)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    hook.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
