"""ACME Renewal Information (RFC 9773) against the loopback ACME stand-in
(tests/servers/acme_ari.py): windows, failures with their reasons, the cache and
Retry-After, the deadline, the proxy and target_policy, for tcp and file sources; the
certificate ID and the name-set digest that joins renewed certificates with served ones.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID

from ssl_exporter import ari, config, prepare
from ssl_exporter.certs import parse_der
from ssl_exporter.metrics import names_digest
from tests.conftest import PKI, Samples, probe, serve_exporter
from tests.pki import DAY, NOW, Cert, make_cert
from tests.servers import pytls
from tests.servers.acme_ari import AriServer, Reply, ari_server, window
from tests.servers.proxy import run_tinyproxy

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    prepare.PROCESS_CACHES.ari.clear()


@pytest.fixture
def acme(pki: PKI, tmp_path: Path) -> Iterator[AriServer]:
    server_cert = pki.inter.issue("acme.test", ips=("127.0.0.1",))
    cert, key = server_cert.write(tmp_path, "acme", (pki.inter,))
    with ari_server(cert, key) as server:
        yield server


def ari_block(pki: PKI, acme: AriServer, **extra: Any) -> dict[str, Any]:
    """ARI for the test intermediate's certificates, trusting the test root for HTTPS."""
    key_id = pki.inter.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    return {"cas": [{"directory": acme.directory, "key_ids": [key_id.hex(":")]}],
            "ca_file": str(pki.root_file), **extra}


@asynccontextmanager
async def exporter(tmp_path: Path, modules: dict[str, Any], **top: Any) -> AsyncIterator[TestClient]:
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump({"modules": modules, **top}))
    async with serve_exporter(path) as client:
        yield client


def tcp_module(pki: PKI, ari_config: dict[str, Any] | None, timeout: str = "5s") -> dict[str, Any]:
    body: dict[str, Any] = {"prober": "tcp", "timeout": timeout, "tls_config": {"ca_file": str(pki.root_file)}}
    if ari_config is not None:
        body["ari"] = ari_config
    return body


async def probe_leaf(tmp_path: Path, pki: PKI, leaf: Cert, modules: dict[str, Any], module: str = "ari",
                     **top: Any) -> Samples:
    cert, key = leaf.write(tmp_path, "leaf", (pki.inter,))
    with pytls.tls_server(cert, key) as (port, _):
        async with exporter(tmp_path, modules, **top) as client:
            return await probe(client, f"127.0.0.1:{port}", module=module)


def new_leaf(pki: PKI, name: str = "ari.example.test") -> Cert:
    return pki.inter.issue(name, dns=(name,), ips=("127.0.0.1",))


def leaf_labels(leaf: Cert) -> dict[str, str]:
    return {"position": "0", "subject_cn": leaf.cert.subject.rfc4514_string().removeprefix("CN="),
            "serial": leaf.serial}


# ---- the certificate ID -----------------------------------------------------------------


def test_cert_id_matches_the_rfc_example() -> None:
    # RFC 9773 section 4.1: keyIdentifier 69:88:5B:...:D4, serial 00:87:65:43:21.
    key_id = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    assert ari.cert_id(key_id, 0x87654321) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
    # A serial without its top bit set takes no leading zero byte.
    assert ari.cert_id(b"\x01", 0x7F) == "AQ.fw"


# ---- windows and reasons, tcp ----------------------------------------------------------


async def test_future_and_past_windows_with_the_certificates_labels(tmp_path: Path, pki: PKI,
                                                                    acme: AriServer) -> None:
    start, end = NOW + 50 * DAY, NOW + 52 * DAY
    leaf = new_leaf(pki)
    acme.set(leaf.cert, window(start, end))
    s = await probe_leaf(tmp_path, pki, leaf, {"ari": tcp_module(pki, ari_block(pki, acme))})
    labels = leaf_labels(leaf)
    assert s.get("ssl_cert_ari_window_start_timestamp_seconds", **labels) == start.timestamp()
    assert s.get("ssl_cert_ari_window_end_timestamp_seconds", **labels) == end.timestamp()
    assert s.get("ssl_cert_ari_status_info", **labels, status="ok", reason="") == 1
    assert s.get("ssl_probe_success") == 1
    # Only the leaf of a handshake is asked about, never the intermediate.
    assert [x["position"] for x in s.series("ssl_cert_ari_status_info")] == ["0"]

    past = new_leaf(pki, "revoke-early.example.test")
    acme.set(past.cert, window(NOW - 3 * DAY, NOW - 2 * DAY))
    s = await probe_leaf(tmp_path, pki, past, {"ari": tcp_module(pki, ari_block(pki, acme))})
    assert s.get("ssl_cert_ari_window_end_timestamp_seconds", **leaf_labels(past)) == (NOW - 2 * DAY).timestamp()


@pytest.mark.parametrize(("reply", "reason"), [
    (Reply(status=200, body=b'{"suggestedWindow": {"start": "yesterday"}}'), "bad_response"),
    (Reply(status=200, body=b"\xff not json"), "bad_response"),
    (Reply(start=NOW + 2 * DAY, end=NOW + DAY), "bad_response"),  # ends before it starts
    (Reply(status=404, body=b"{}"), "not_found"),
    (Reply(status=500, body=b"{}"), "fetch_failed"),
    (Reply(status=200, body=b"[" * 20_000), "fetch_failed"),  # more than the exporter reads
])
async def test_failures_are_unknown_with_a_reason_and_never_fail_the_probe(
        tmp_path: Path, pki: PKI, acme: AriServer, reply: Reply, reason: str) -> None:
    leaf = new_leaf(pki)
    acme.set(leaf.cert, reply)
    s = await probe_leaf(tmp_path, pki, leaf, {"ari": tcp_module(pki, ari_block(pki, acme))})
    assert s.get("ssl_cert_ari_status_info", **leaf_labels(leaf), status="unknown", reason=reason) == 1
    assert s.series("ssl_cert_ari_window_end_timestamp_seconds") == []
    assert s.get("ssl_probe_success") == 1
    assert s.get("ssl_cert_not_after_timestamp_seconds", position="0") == leaf.not_after


async def test_a_certificate_of_no_known_ca_and_a_ca_without_ari(tmp_path: Path, pki: PKI, acme: AriServer) -> None:
    other = make_cert("other.example.test", issuer=pki.other_inter, dns=("other.example.test",))
    cert, key = other.write(tmp_path, "other", (pki.other_inter,))
    with pytls.tls_server(cert, key) as (port, _):
        async with exporter(tmp_path, {"ari": tcp_module(pki, ari_block(pki, acme))}) as client:
            s = await probe(client, f"127.0.0.1:{port}", module="ari")
    assert s.get("ssl_cert_ari_status_info", position="0", status="unknown", reason="no_ca") == 1
    assert acme.count("directory") == 0  # nothing is asked about a certificate of another CA

    acme.renewal_info = False
    leaf = new_leaf(pki)
    s = await probe_leaf(tmp_path, pki, leaf, {"ari": tcp_module(pki, ari_block(pki, acme))})
    assert s.get("ssl_cert_ari_status_info", position="0", status="unknown", reason="no_renewal_info") == 1


async def test_off_by_default(tmp_path: Path, pki: PKI, acme: AriServer) -> None:
    leaf = new_leaf(pki)
    acme.set(leaf.cert, window(NOW + DAY, NOW + 2 * DAY))
    s = await probe_leaf(tmp_path, pki, leaf, {"ari": tcp_module(pki, None)})
    assert s.series("ssl_cert_ari_status_info") == []
    assert acme.count("directory") == acme.count("renewal-info") == 0


# ---- cache, Retry-After, deadline ------------------------------------------------------


async def test_answers_are_cached_per_certificate_for_retry_after(tmp_path: Path, pki: PKI, acme: AriServer,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [time.time()]
    monkeypatch.setattr(ari, "_clock", lambda: clock[0])
    leaf = new_leaf(pki)
    acme.set(leaf.cert, window(NOW + DAY, NOW + 2 * DAY, retry_after="600"))
    cert, key = leaf.write(tmp_path, "leaf", (pki.inter,))
    with pytls.tls_server(cert, key) as (port, _):
        async with exporter(tmp_path, {"ari": tcp_module(pki, ari_block(pki, acme))}) as client:
            target = f"127.0.0.1:{port}"
            first = await probe(client, target, module="ari")
            assert (acme.count("directory"), acme.count("renewal-info")) == (1, 1)
            clock[0] += 599  # within Retry-After: from cache, nothing asked
            again = await probe(client, target, module="ari")
            assert (acme.count("directory"), acme.count("renewal-info")) == (1, 1)
            assert again.get("ssl_cert_ari_window_end_timestamp_seconds", position="0") == \
                first.get("ssl_cert_ari_window_end_timestamp_seconds", position="0") == (NOW + 2 * DAY).timestamp()
            acme.set(leaf.cert, window(NOW - 2 * DAY, NOW - DAY))  # the CA moves the window
            clock[0] += 2  # Retry-After passed: asked again (the directory is kept 6 h)
            moved = await probe(client, target, module="ari")
            assert (acme.count("directory"), acme.count("renewal-info")) == (1, 2)
            assert moved.get("ssl_cert_ari_window_end_timestamp_seconds", position="0") == (NOW - DAY).timestamp()


def test_retry_after_forms_and_clamping() -> None:
    now = 1_700_000_000.0
    assert ari.retry_seconds(None, now) == ari.DEFAULT_RETRY == 6 * 3600
    assert ari.retry_seconds("3600", now) == 3600
    assert ari.retry_seconds("0", now) == ari.MIN_RETRY  # no hammering the CA
    assert ari.retry_seconds("31536000", now) == ari.MAX_RETRY
    assert ari.retry_seconds("Wed, 15 Nov 2023 00:13:20 GMT", now) == 7200  # an HTTP-date
    assert ari.retry_seconds("soon", now) == ari.DEFAULT_RETRY


async def test_a_slow_ca_costs_no_more_than_the_deadline_and_is_asked_again(tmp_path: Path, pki: PKI,
                                                                           acme: AriServer) -> None:
    leaf = new_leaf(pki)
    acme.set(leaf.cert, Reply(start=NOW, end=NOW + DAY, slow=True))
    cert, key = leaf.write(tmp_path, "leaf", (pki.inter,))
    with pytls.tls_server(cert, key) as (port, _):
        async with exporter(tmp_path, {"ari": tcp_module(pki, ari_block(pki, acme), timeout="1s")}) as client:
            began = time.monotonic()
            s = await probe(client, f"127.0.0.1:{port}", module="ari")
            assert time.monotonic() - began < 2.0  # timeout + 1 s
            assert s.get("ssl_cert_ari_status_info", position="0", status="unknown", reason="timeout") == 1
            assert s.get("ssl_probe_success") == 1
            assert s.get("ssl_cert_not_after_timestamp_seconds", position="0") == leaf.not_after
            await probe(client, f"127.0.0.1:{port}", module="ari")  # a timeout is not cached
            assert acme.count("renewal-info") == 2
            # The connections cut at the deadline are closed at once, not left waiting for
            # a close_notify from a CA that never answers.
            assert _sockets_to(acme.port) == []


def _sockets_to(port: int) -> list[str]:
    """This process's TCP sockets whose remote port is ``port`` (from /proc), as hex states."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    states = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
            states.append(fields[3])
    return states


# ---- proxy and target_policy ----------------------------------------------------------


async def test_through_the_configured_proxy(tmp_path: Path, pki: PKI, acme: AriServer) -> None:
    leaf = new_leaf(pki)
    acme.set(leaf.cert, window(NOW + DAY, NOW + 2 * DAY))
    with run_tinyproxy() as proxy_port:
        modules = {
            "ari": tcp_module(pki, ari_block(pki, acme, proxy_url=f"http://127.0.0.1:{proxy_port}")),
            "deadproxy": tcp_module(pki, ari_block(pki, acme, proxy_url="http://127.0.0.1:9")),
        }
        s = await probe_leaf(tmp_path, pki, leaf, modules)
        # The same certificate through another proxy: not served the first module's answer
        # (cached answers are kept per trust store, proxy and target policy).
        dead = await probe_leaf(tmp_path, pki, leaf, modules, module="deadproxy")
    assert s.get("ssl_cert_ari_status_info", position="0", status="ok", reason="") == 1
    assert dead.get("ssl_cert_ari_status_info", position="0", status="unknown", reason="fetch_failed") == 1


async def test_target_policy_refuses_the_ca_before_connecting(tmp_path: Path, pki: PKI, acme: AriServer) -> None:
    leaf = new_leaf(pki)
    acme.set(leaf.cert, window(NOW + DAY, NOW + 2 * DAY))
    path = tmp_path / "live.pem"
    path.write_bytes(leaf.pem + pki.inter.pem)
    modules = {"files": {"prober": "file", "ari": ari_block(pki, acme)}}
    async with exporter(tmp_path, modules, target_policy={"deny_cidrs": ["127.0.0.0/8"]}) as client:
        s = await probe(client, str(path), module="files")
    assert s.get("ssl_cert_ari_status_info", position="0", status="unknown", reason="refused_by_policy") == 1
    assert acme.count("directory") == 0
    assert s.get("ssl_probe_success") == 1


# ---- certificates at rest -------------------------------------------------------------


async def test_file_source_asks_about_each_end_entity_certificate(tmp_path: Path, pki: PKI, acme: AriServer) -> None:
    leaf = new_leaf(pki, "stored.example.test")
    acme.set(leaf.cert, window(NOW + 10 * DAY, NOW + 11 * DAY))
    path = tmp_path / "fullchain.pem"
    path.write_bytes(leaf.pem + pki.inter.pem)
    async with exporter(tmp_path, {"files": {"prober": "file", "ari": ari_block(pki, acme)}}) as client:
        s = await probe(client, str(path), module="files")
    assert s.get("ssl_cert_ari_window_start_timestamp_seconds", position="0", file=str(path),
                 serial=leaf.serial) == (NOW + 10 * DAY).timestamp()
    assert [x["position"] for x in s.series("ssl_cert_ari_status_info")] == ["0"]  # not the intermediate


# ---- configuration --------------------------------------------------------------------


@pytest.mark.parametrize(("block", "message"), [
    ({"bogus": 1}, "modules.m.ari.bogus: unknown key"),
    ({"cas": [{"directory": "http://acme.test/dir", "key_ids": ["01"]}]},
     "modules.m.ari.cas[0].directory: expected an https:// ACME directory URL"),
    ({"cas": [{"directory": "https://acme.test/dir"}]}, "modules.m.ari.cas[0]: give ca_issuers_hosts or key_ids"),
    ({"cas": [{"directory": "https://acme.test/dir", "key_ids": ["zz"]}]},
     "modules.m.ari.cas[0].key_ids: 'zz' is not hex"),
    ({"proxy_url": "socks5://127.0.0.1:1"}, "modules.m.ari.proxy_url: scheme 'socks5' is not supported"),
    ({"ca_file": "/nonexistent/ca.pem"}, "modules.m.ari.ca_file: cannot load /nonexistent/ca.pem"),
])
def test_config_errors_name_the_key(block: dict[str, Any], message: str) -> None:
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        prepare.load_text(yaml.safe_dump({"modules": {"m": {"prober": "file", "ari": block}}}), "test")


def test_config_shows_the_block_and_builtins() -> None:
    loaded = prepare.load_text("modules:\n  m: {prober: tcp, ari: }\n", "test")
    module = loaded.modules["m"]
    assert module.ari is not None and module.ari.builtin
    assert loaded.redacted()["modules"]["m"]["ari"] == {"builtin_cas": True}
    with pytest.raises(config.ConfigError, match="modules.k.ari: unknown key for prober kubeconfig"):
        prepare.load_text("modules:\n  k: {prober: kubeconfig, ari: {}}\n", "test")


def test_builtin_lets_encrypt_matches_production_intermediates_only(pki: PKI) -> None:
    def issued_with(url: str) -> bytes:
        access = x509.AuthorityInformationAccess([x509.AccessDescription(
            AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(url))])
        return make_cert("x.test", issuer=pki.inter, dns=("x.test",), extensions=(access,)).der

    builtin = ari.AriConfig()
    for url, expected in [("http://r11.i.lencr.org/", "https://acme-v02.api.letsencrypt.org/directory"),
                          ("http://e6.i.lencr.org/", "https://acme-v02.api.letsencrypt.org/directory"),
                          ("http://stg-r11.i.lencr.org/", None), ("http://lencr.org.evil.test/", None)]:
        entry = builtin.find(ari._facts(issued_with(url)))  # type: ignore[arg-type]
        assert (entry.directory if entry else None) == expected, url
    assert ari.AriConfig(builtin=False).find(ari._facts(issued_with("http://r11.i.lencr.org/"))) is None  # type: ignore[arg-type]


# ---- the join label and the documentation -----------------------------------------------


def test_names_digest_is_the_same_for_the_same_name_set_only(pki: PKI) -> None:
    def digest(cert: Cert) -> str:
        return names_digest(parse_der(cert.der))

    a = pki.inter.issue("a.test", dns=("a.test", "www.a.test"), ips=("127.0.0.1",))
    renewed = pki.inter.issue("www.a.test", dns=("WWW.a.test", "a.test"), ips=("127.0.0.1",))
    other = pki.inter.issue("a.test", dns=("a.test",), ips=("127.0.0.1",))
    assert digest(a) == digest(renewed) != digest(other)
    assert re.fullmatch(r"[0-9a-f]{16}", digest(a))
    assert digest(pki.inter) == ""  # a CA certificate joins nothing


def test_every_ari_reason_is_documented() -> None:
    text = (ROOT / "docs" / "metrics.md").read_text()
    section = text.split("### ACME renewal information", 1)[1]
    documented = dict(re.findall(r"^- `([a-z_]+)`: (.+)$", section, re.MULTILINE))
    assert documented == ari.REASONS


async def test_kubernetes_secret_windows_and_the_join_label_across_sources(tmp_path: Path, pki: PKI,
                                                                        acme: AriServer) -> None:
    """A Secret cert-manager renewed and the old certificate a server still presents: both
    carry the same names_digest, and ARI answers for the Secret's certificate."""
    import base64

    from tests.servers import kubeapi

    served = pki.inter.issue("shop.test", dns=("shop.test", "www.shop.test"), ips=("127.0.0.1",))
    renewed = pki.inter.issue("shop.test", dns=("www.shop.test", "shop.test"), ips=("127.0.0.1",))
    acme.set(renewed.cert, window(NOW + 30 * DAY, NOW + 32 * DAY))
    api = kubeapi.FakeAPI([kubeapi.secret("prod", "shop-tls", {"tls.crt": renewed.pem + pki.inter.pem})], "t0ken")
    api_cert, api_key = pki.inter.issue("kubernetes", ips=("127.0.0.1",)).write(tmp_path, "api", (pki.inter,))
    async with kubeapi.serve(api, str(api_cert), str(api_key)) as port:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "t",
            "clusters": [{"name": "t", "cluster": {
                "server": f"https://127.0.0.1:{port}",
                "certificate-authority-data": base64.b64encode(pki.root.pem).decode()}}],
            "users": [{"name": "u", "user": {"token": "t0ken"}}],
            "contexts": [{"name": "t", "context": {"cluster": "t", "user": "u"}}]}))
        modules = {"secrets": {"prober": "kubernetes", "kubernetes": {"kubeconfig": str(kubeconfig)},
                               "ari": ari_block(pki, acme)},
                   "ari": tcp_module(pki, None)}
        cert, key = served.write(tmp_path, "served", (pki.inter,))
        with pytls.tls_server(cert, key) as (tls_port, _):
            async with exporter(tmp_path, modules) as client:
                at_rest = await probe(client, "prod/shop-tls", module="secrets")
                on_wire = await probe(client, f"127.0.0.1:{tls_port}", module="ari")
    secret = {"namespace": "prod", "secret": "shop-tls", "key": "tls.crt", "position": "0"}
    assert at_rest.get("ssl_cert_ari_window_end_timestamp_seconds", **secret) == (NOW + 32 * DAY).timestamp()
    stored_digest = at_rest.series("ssl_cert_info")[0]["names_digest"]
    served_digest = next(s for s in on_wire.series("ssl_cert_info") if s["position"] == "0")["names_digest"]
    assert stored_digest == served_digest == names_digest(parse_der(served.der)) != ""
