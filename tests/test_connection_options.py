"""Connection options of the tcp prober: a real CONNECT proxy (tinyproxy), proxies from the
environment, the source address, IP family preference and fallback, TLS version bounds."""

from __future__ import annotations

import asyncio
import socket
import ssl
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import PKI, Samples, serve_exporter
from tests.pki import DAY, NOW
from tests.servers import pytls
from tests.servers.proxy import run_tinyproxy

HOST = "options.example.test"


@pytest.fixture(scope="module")
def proxies() -> AsyncIterator[tuple[int, int]]:
    with run_tinyproxy() as open_port, run_tinyproxy("alice", "s3cret") as auth_port:
        yield open_port, auth_port


@pytest.fixture
async def options_client(pki: PKI, proxies, tmp_path: Path, monkeypatch) -> AsyncIterator[TestClient]:
    open_port, auth_port = proxies
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    ca = f"tls_config: {{ca_file: {pki.root_file}}}"
    config = tmp_path / "config.yml"
    config.write_text(textwrap.dedent(f"""\
        modules:
          proxied:    {{timeout: 5s, {ca}, tcp: {{proxy_url: 'http://127.0.0.1:{open_port}'}}}}
          auth_proxy: {{timeout: 5s, {ca}, tcp: {{proxy_url: 'http://alice:s3cret@127.0.0.1:{auth_port}'}}}}
          bad_auth:   {{timeout: 5s, {ca}, tcp: {{proxy_url: 'http://alice:wrong@127.0.0.1:{auth_port}'}}}}
          env_proxy:  {{timeout: 5s, {ca}, tcp: {{proxy_from_environment: true}}}}
          from_127_0_0_2: {{timeout: 5s, {ca}, tcp: {{source_ip_address: 127.0.0.2}}}}
          prefer_v6:  {{timeout: 5s, {ca}, tcp: {{preferred_ip_protocol: ip6}}}}
          only_v6:    {{timeout: 5s, {ca}, tcp: {{preferred_ip_protocol: ip6, ip_protocol_fallback: false}}}}
          prefer_v4:  {{timeout: 5s, {ca}, tcp: {{preferred_ip_protocol: ip4}}}}
          tls13_only: {{timeout: 5s, tls_config: {{ca_file: {pki.root_file}, min_version: TLS13}}}}
          tls12_max:  {{timeout: 5s, tls_config: {{ca_file: {pki.root_file}, max_version: TLS12}}}}
        """))
    async with serve_exporter(config) as client:
        yield client


@pytest.fixture
def server(pki: PKI):
    leaf = pki.inter.issue(HOST, dns=(HOST, "localhost"), not_after=NOW + 33 * DAY)
    cert, key = pki.chain_files("options", leaf, pki.inter)
    with pytls.tls_server(cert, key) as (port, tls_server):
        yield port, tls_server, leaf


async def probe(client: TestClient, target: str, module: str, **params: str) -> tuple[Samples, str]:
    query = {"target": target, "module": module, **params}
    response = await client.get("/probe", params=query)
    assert response.status == 200, await response.text()
    debug = await (await client.get("/probe", params={**query, "debug": "true"})).text()
    return Samples(await response.text()), debug


async def test_through_a_connect_proxy(options_client, server) -> None:
    port, tls_server, leaf = server
    s, log = await probe(options_client, f"127.0.0.1:{port}", "proxied", hostname=HOST)
    assert s.get("ssl_probe_success") == 1
    assert s.get("ssl_cert_not_after_timestamp_seconds", position="0") == leaf.not_after
    assert f"proxy: CONNECT 127.0.0.1:{port}" in log
    assert "proxy: HTTP/1.0 200 Connection established" in log
    assert tls_server.server_names[0] == HOST  # SNI passes through the tunnel


async def test_proxy_with_basic_auth(options_client, server) -> None:
    port, _, leaf = server
    ok, _ = await probe(options_client, f"127.0.0.1:{port}", "auth_proxy", hostname=HOST)
    assert ok.get("ssl_probe_success") == 1
    refused, log = await probe(options_client, f"127.0.0.1:{port}", "bad_auth", hostname=HOST)
    assert refused.errors() == {("connect", "proxy_error")}
    assert refused.get("ssl_handshake_success") == 0
    assert "proxy: HTTP/1.0 401 Unauthorized" in log  # tinyproxy answers 401, not 407
    assert "wrong" not in log and "s3cret" not in log


async def test_proxy_from_environment_and_no_proxy(options_client, server, proxies, monkeypatch) -> None:
    port, _, _ = server
    monkeypatch.setenv("https_proxy", f"127.0.0.1:{proxies[0]}")
    via, log = await probe(options_client, f"127.0.0.1:{port}", "env_proxy", hostname=HOST)
    assert via.get("ssl_probe_success") == 1
    assert "proxy: HTTP/1.0 200 Connection established" in log
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    direct, log = await probe(options_client, f"127.0.0.1:{port}", "env_proxy", hostname=HOST)
    assert direct.get("ssl_probe_success") == 1
    assert "proxy: CONNECT" not in log


async def test_source_address(options_client, server) -> None:
    port, tls_server, _ = server
    s, _ = await probe(options_client, f"127.0.0.1:{port}", "from_127_0_0_2", hostname=HOST)
    assert s.get("ssl_probe_success") == 1
    assert tls_server.peers == ["127.0.0.2"] * 2  # the answer and its debug twin


async def test_ip_family_preference_and_fallback(options_client, server, monkeypatch) -> None:
    """A name with an IPv6 and an IPv4 address, the server on 127.0.0.1 only.

    This machine's /etc/hosts gives no name an IPv6 address, so the resolver's answer for
    dual.example.test is stubbed; the connections are real.
    """
    port, _, _ = server
    loop = asyncio.get_running_loop()
    real_getaddrinfo = loop.getaddrinfo

    async def getaddrinfo(host, *args, **kwargs):
        if host == "dual.example.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
                    (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0))]
        return await real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    target = f"dual.example.test:{port}"
    fallback, log = await probe(options_client, target, "prefer_v6", hostname=HOST)
    assert fallback.get("ssl_probe_success") == 1
    assert "resolved dual.example.test to ::1, 127.0.0.1" in log  # preferred family first
    assert log.index(f"connect to [::1]:{port} failed") < log.index(f"connected to 127.0.0.1:{port}")
    only, log = await probe(options_client, target, "only_v6", hostname=HOST)
    assert only.errors() == {("connect", "refused")}
    assert "resolved dual.example.test to ::1\n" in log
    v4, log = await probe(options_client, target, "prefer_v4", hostname=HOST)
    assert v4.get("ssl_probe_success") == 1
    assert "resolved dual.example.test to 127.0.0.1, ::1" in log
    assert "[::1]" not in log.split("Module configuration:")[0]


async def test_tls_version_bounds(options_client, pki: PKI) -> None:
    leaf = pki.inter.issue(HOST, dns=(HOST,))
    cert, key = pki.chain_files("versions", leaf, pki.inter)
    with pytls.tls_server(cert, key, max_version=ssl.TLSVersion.TLSv1_2) as (port, _):
        refused, _ = await probe(options_client, f"127.0.0.1:{port}", "tls13_only", hostname=HOST)
    assert refused.errors() == {("handshake", "protocol_version")}
    with pytls.tls_server(cert, key) as (port, _):
        capped, _ = await probe(options_client, f"127.0.0.1:{port}", "tls12_max", hostname=HOST)
    assert capped.get("ssl_tls_version_info", version="TLS 1.2") == 1
    assert capped.get("ssl_probe_success") == 1
