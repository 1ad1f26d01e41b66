"""Shared fixtures: a test PKI with every chain the scenarios need, and the exporter app."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from ssl_exporter.server import Exporter, make_app
from tests.pki import DAY, NOW, Cert, make_root


@dataclass
class PKI:
    """Certificates for the scenarios, written to ``dir``; each chain is leaf-first."""

    dir: Path
    root: Cert
    inter: Cert
    other_root: Cert
    other_inter: Cert
    client: Cert

    def chain_files(self, name: str, leaf: Cert, *chain: Cert) -> tuple[Path, Path]:
        return leaf.write(self.dir, name, chain)

    @property
    def root_file(self) -> Path:
        return self.dir / "root.pem"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    directory = tmp_path_factory.mktemp("pki")
    root = make_root("Test Root CA")
    inter = root.issue("Test Intermediate CA", ca=True, not_after=NOW + 1000 * DAY)
    other_root = make_root("Other Root CA")
    other_inter = other_root.issue("Other Intermediate CA", ca=True)
    (directory / "root.pem").write_bytes(root.pem)
    client = inter.issue("probe client", not_after=NOW + 20 * DAY)
    client.write(directory, "client", (inter,))
    return PKI(directory, root, inter, other_root, other_inter, client)


@pytest.fixture(scope="session")
def config_file(pki: PKI, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "config.yml"
    path.write_text(textwrap.dedent(f"""\
        default_module: test
        modules:
          test:
            prober: tcp
            timeout: 5s
            tls_config: {{ca_file: {pki.root_file}}}
          insecure:
            prober: tcp
            timeout: 5s
            tls_config: {{ca_file: {pki.root_file}, insecure_skip_verify: true}}
          fast:
            prober: tcp
            timeout: 1s
            tls_config: {{ca_file: {pki.root_file}}}
          mtls:
            prober: tcp
            tls_config:
              ca_file: {pki.root_file}
              cert_file: {pki.dir / "client.crt"}
              key_file: {pki.dir / "client.key"}
          named:
            prober: tcp
            tls_config: {{ca_file: {pki.root_file}, server_name: configured.example.test}}
        """))
    return path


@pytest.fixture
def exporter(config_file: Path) -> Exporter:
    return Exporter(str(config_file), timeout_offset=0.5)


@pytest.fixture
async def client(exporter: Exporter) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(make_app(exporter))) as test_client:
        yield test_client


@asynccontextmanager
async def serve_exporter(config_path: Path | str) -> AsyncIterator[TestClient]:
    """The exporter, loaded from ``config_path``, on a loopback test server."""
    async with TestClient(TestServer(make_app(Exporter(str(config_path))))) as test_client:
        yield test_client


class Samples:
    """The samples of one exposition, looked up by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def get(self, metric: str, /, **labels: str) -> float | None:
        found = [s.value for s in self.samples
                 if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(found) <= 1, f"{metric}{labels} matches {len(found)} series"
        return found[0] if found else None

    def series(self, name: str) -> list[dict[str, str]]:
        return [s.labels for s in self.samples if s.name == name]

    def errors(self) -> set[tuple[str, str]]:
        return {(s["stage"], s["reason"]) for s in self.series("ssl_probe_error_info")}


async def probe(client: TestClient, target: str, headers: dict[str, str] | None = None,
                **params: str) -> Samples:
    response = await client.get("/probe", params={"target": target, **params}, headers=headers)
    text = await response.text()
    assert response.status == 200, text
    return Samples(text)


def call_beside_fifo(fifo: Path, fn: Any, *args: Any, limit: float = 10.0) -> Any:
    """``fn(*args)`` in a thread, which must finish within ``limit`` seconds. A call stuck
    opening ``fifo`` for reading is released (its writing end is opened) and fails the test."""
    import os
    import threading

    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(("value", fn(*args)))
        except BaseException as exc:  # handed to the test below
            outcome.append(("raised", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass  # no reader waits on the FIFO: the thread is stuck elsewhere
        thread.join(limit)
        raise AssertionError(f"{fn!r} did not finish within {limit}s: it waited on the FIFO {fifo}")
    kind, value = outcome[0]
    if kind == "raised":
        raise value
    return value
