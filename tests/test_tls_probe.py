"""TLS probes against real servers on loopback: a Python TLS server and nginx.

Each scenario asserts the values of the contract metrics, not only their presence.
"""

from __future__ import annotations

import asyncio
import ssl
import time

import pytest

from ssl_exporter import certs, describe, metrics, tls
from ssl_exporter.probers.base import ProbeRecorder
from ssl_exporter.probers.tcp import _analyse
from tests.conftest import PKI, Samples, probe
from tests.pki import DAY, NOW, Cert, make_cert
from tests.servers import pytls
from tests.servers.nginx import Site, run_nginx

HOST = "www.example.test"


def assert_cert(samples: Samples, position: int, cert: Cert) -> None:
    labels = {"position": str(position), "serial": cert.serial}
    assert samples.get("ssl_cert_not_after_timestamp_seconds", **labels) == cert.not_after
    assert samples.get("ssl_cert_not_before_timestamp_seconds", **labels) == cert.not_before
    cn = cert.cert.subject.rfc4514_string().removeprefix("CN=")
    issuer_cn = cert.cert.issuer.rfc4514_string().removeprefix("CN=")
    assert samples.get("ssl_cert_info", **labels, subject_cn=cn, issuer_cn=issuer_cn) == 1


def assert_failed(samples: Samples, *errors: tuple[str, str]) -> None:
    assert samples.get("ssl_probe_success") == 0
    assert samples.errors() == set(errors)


# --- Python TLS server scenarios ---------------------------------------------------------


async def serve_and_probe(client, pki: PKI, name: str, leaf: Cert, chain: tuple[Cert, ...],
                          hostname: str = HOST, module: str = "test", **server_args) -> Samples:
    cert_path, key_path = pki.chain_files(name, leaf, *chain)
    with pytls.tls_server(cert_path, key_path, **server_args) as (port, _server):
        return await probe(client, f"127.0.0.1:{port}", hostname=hostname, module=module)


async def test_valid_chain(client, pki: PKI) -> None:
    leaf = pki.inter.issue(HOST, dns=(HOST,), not_after=NOW + 30 * DAY)
    s = await serve_and_probe(client, pki, "valid", leaf, (pki.inter,))
    assert s.get("ssl_probe_success") == 1
    assert s.get("ssl_handshake_success") == 1
    assert s.get("ssl_chain_valid") == 1
    assert s.get("ssl_hostname_valid") == 1
    assert s.errors() == set()
    # The leaf expires first on the verified path leaf -> intermediate -> root.
    assert s.get("ssl_verified_chain_expiry_timestamp_seconds") == leaf.not_after
    assert_cert(s, 0, leaf)
    assert_cert(s, 1, pki.inter)
    assert len(s.series("ssl_cert_not_after_timestamp_seconds")) == 2
    assert s.get("ssl_tls_version_info", version="TLS 1.3") == 1
    assert s.get("ssl_tls_cipher_info", cipher="TLS_AES_256_GCM_SHA384") == 1
    info = s.series("ssl_cert_info")[0]
    assert info["sans"] == HOST
    assert info["key_algorithm"] == "EC secp256r1" and info["key_bits"] == "256"
    assert info["signature_algorithm"] == "ecdsa-with-SHA256"
    phases = {labels["phase"] for labels in s.series("ssl_probe_phase_duration_seconds")}
    assert phases == {"resolve", "connect", "handshake", "verify"}


async def test_verified_expiry_is_the_intermediate_when_it_expires_first(client, pki: PKI) -> None:
    inter = pki.root.issue("Short Intermediate", ca=True, not_after=NOW + 10 * DAY)
    leaf = inter.issue(HOST, dns=(HOST,), not_after=NOW + 60 * DAY)
    s = await serve_and_probe(client, pki, "short-inter", leaf, (inter,))
    assert s.get("ssl_probe_success") == 1
    assert s.get("ssl_verified_chain_expiry_timestamp_seconds") == inter.not_after


async def test_expired_leaf_keeps_certificate_data_and_tls_facts(client, pki: PKI) -> None:
    leaf = pki.inter.issue(HOST, dns=(HOST,), not_before=NOW - 60 * DAY, not_after=NOW - 2 * DAY)
    s = await serve_and_probe(client, pki, "expired", leaf, (pki.inter,),
                              max_version=ssl.TLSVersion.TLSv1_2)
    assert_failed(s, ("verify", "expired"))
    assert s.get("ssl_handshake_success") == 1
    assert s.get("ssl_chain_valid") == 0
    assert s.get("ssl_hostname_valid") == 1
    assert s.get("ssl_verified_chain_expiry_timestamp_seconds") is None
    assert_cert(s, 0, leaf)
    assert_cert(s, 1, pki.inter)
    # OpenSSL forgets the version after a failed verification; the ServerHello has it.
    assert s.get("ssl_tls_version_info", version="TLS 1.2") == 1
    assert s.get("ssl_tls_cipher_info", cipher="ECDHE-ECDSA-AES256-GCM-SHA384") == 1


async def test_expired_leaf_on_wrong_host_reports_both(client, pki: PKI) -> None:
    leaf = pki.inter.issue("old.example.test", dns=("old.example.test",), not_after=NOW - DAY,
                           not_before=NOW - 30 * DAY)
    s = await serve_and_probe(client, pki, "expired-wronghost", leaf, (pki.inter,))
    assert_failed(s, ("verify", "expired"), ("verify", "hostname_mismatch"))
    assert s.get("ssl_chain_valid") == 0
    assert s.get("ssl_hostname_valid") == 0
    assert s.get("ssl_tls_version_info", version="TLS 1.3") == 1


async def test_not_yet_valid_leaf(client, pki: PKI) -> None:
    leaf = pki.inter.issue(HOST, dns=(HOST,), not_before=NOW + 2 * DAY, not_after=NOW + 90 * DAY)
    s = await serve_and_probe(client, pki, "future", leaf, (pki.inter,))
    assert_failed(s, ("verify", "not_yet_valid"))
    assert s.get("ssl_chain_valid") == 0
    assert_cert(s, 0, leaf)


async def test_expired_intermediate(client, pki: PKI) -> None:
    inter = pki.root.issue("Expired Intermediate", ca=True, not_before=NOW - 400 * DAY,
                           not_after=NOW - DAY)
    leaf = inter.issue(HOST, dns=(HOST,), not_after=NOW + 60 * DAY)
    s = await serve_and_probe(client, pki, "expired-inter", leaf, (inter,))
    assert_failed(s, ("verify", "expired"))
    assert s.get("ssl_chain_valid") == 0
    assert s.get("ssl_hostname_valid") == 1
    assert_cert(s, 1, inter)


async def test_wrong_host(client, pki: PKI) -> None:
    leaf = pki.inter.issue("other.example.test", dns=("other.example.test",))
    s = await serve_and_probe(client, pki, "wronghost", leaf, (pki.inter,))
    assert_failed(s, ("verify", "hostname_mismatch"))
    assert s.get("ssl_chain_valid") == 1
    assert s.get("ssl_hostname_valid") == 0
    # The chain verified, so its expiry is known even though the probe failed.
    assert s.get("ssl_verified_chain_expiry_timestamp_seconds") == leaf.not_after


@pytest.mark.parametrize(
    ("hostname", "valid"),
    [("a.wild.example.test", 1), ("A.Wild.Example.Test", 1), ("wild.example.test", 0),
     ("a.b.wild.example.test", 0), ("a.wild.example.testx", 0)],
)
async def test_wildcard(client, pki: PKI, hostname: str, valid: int) -> None:
    leaf = pki.inter.issue("*.wild.example.test", dns=("*.wild.example.test",))
    s = await serve_and_probe(client, pki, "wildcard", leaf, (pki.inter,), hostname=hostname)
    assert s.get("ssl_hostname_valid") == valid
    assert s.get("ssl_probe_success") == valid


async def test_ip_san_matches_and_no_sni_is_sent(client, pki: PKI) -> None:
    leaf = pki.inter.issue("ip leaf", ips=("127.0.0.1",), dns=("ip.example.test",))
    cert_path, key_path = pki.chain_files("ip", leaf, pki.inter)
    with pytls.tls_server(cert_path, key_path) as (port, server):
        s = await probe(client, f"127.0.0.1:{port}")
        wrong = await probe(client, f"127.0.0.1:{port}", hostname="127.0.0.2")
    assert s.get("ssl_probe_success") == 1
    assert s.get("ssl_hostname_valid") == 1
    assert server.server_names[0] is None  # an IP address is not sent as SNI
    assert wrong.get("ssl_hostname_valid") == 0


async def test_dns_only_leaf_does_not_match_an_ip(client, pki: PKI) -> None:
    leaf = pki.inter.issue("127.0.0.1", dns=("dns.example.test",))  # CN is not looked at
    s = await serve_and_probe(client, pki, "dns-only", leaf, (pki.inter,), hostname="127.0.0.1")
    assert s.get("ssl_hostname_valid") == 0


async def test_sni_is_the_verified_name(client, pki: PKI) -> None:
    leaf = pki.inter.issue(HOST, dns=(HOST,))
    cert_path, key_path = pki.chain_files("sni", leaf, pki.inter)
    with pytls.tls_server(cert_path, key_path) as (port, server):
        s = await probe(client, f"127.0.0.1:{port}", hostname=HOST)
        configured = await probe(client, f"127.0.0.1:{port}", module="named")
    assert s.get("ssl_probe_success") == 1
    assert server.server_names == [HOST, "configured.example.test"]
    assert configured.get("ssl_hostname_valid") == 0


async def test_self_signed(client, pki: PKI) -> None:
    leaf = make_cert(HOST, dns=(HOST,))
    s = await serve_and_probe(client, pki, "selfsigned", leaf, ())
    assert_failed(s, ("verify", "self_signed"))
    assert s.get("ssl_chain_valid") == 0
    assert s.get("ssl_hostname_valid") == 1
    assert_cert(s, 0, leaf)


async def test_insecure_skip_verify_succeeds_but_reports_honestly(client, pki: PKI) -> None:
    leaf = make_cert(HOST, dns=(HOST,))
    s = await serve_and_probe(client, pki, "insecure", leaf, (), module="insecure")
    assert s.get("ssl_probe_success") == 1
    assert s.get("ssl_chain_valid") == 0
    assert s.errors() == {("verify", "self_signed")}


async def test_unknown_ca(client, pki: PKI) -> None:
    leaf = pki.other_inter.issue(HOST, dns=(HOST,))
    s = await serve_and_probe(client, pki, "unknownca", leaf, (pki.other_inter,))
    assert_failed(s, ("verify", "unknown_issuer"))
    assert s.get("ssl_hostname_valid") == 1
    assert_cert(s, 0, leaf)
    assert_cert(s, 1, pki.other_inter)


async def test_untrusted_root_sent_by_server(client, pki: PKI) -> None:
    leaf = pki.other_inter.issue(HOST, dns=(HOST,))
    s = await serve_and_probe(client, pki, "untrustedroot", leaf, (pki.other_inter, pki.other_root))
    assert_failed(s, ("verify", "unknown_issuer"))
    assert len(s.series("ssl_cert_not_after_timestamp_seconds")) == 3


async def test_server_omits_intermediate(client, pki: PKI) -> None:
    leaf = pki.inter.issue(HOST, dns=(HOST,))
    s = await serve_and_probe(client, pki, "nointer", leaf, ())
    assert_failed(s, ("verify", "incomplete_chain"))
    assert s.get("ssl_hostname_valid") == 1
    assert len(s.series("ssl_cert_not_after_timestamp_seconds")) == 1


async def test_extra_unrelated_expired_cert_does_not_count_as_expiry(client, pki: PKI) -> None:
    leaf = pki.inter.issue(HOST, dns=(HOST,), not_after=NOW + 40 * DAY)
    stale = make_cert("Stale Unrelated", ca=True, not_before=NOW - 90 * DAY, not_after=NOW - 30 * DAY)
    s = await serve_and_probe(client, pki, "extra", leaf, (pki.inter, stale, pki.inter))
    assert s.get("ssl_probe_success") == 1
    assert s.get("ssl_chain_valid") == 1
    assert s.get("ssl_verified_chain_expiry_timestamp_seconds") == leaf.not_after
    # Every distinct presented certificate is exported, duplicates dropped.
    assert_cert(s, 2, stale)
    assert len(s.series("ssl_cert_not_after_timestamp_seconds")) == 3


async def test_tls12_only_server(client, pki: PKI) -> None:
    leaf = pki.inter.issue(HOST, dns=(HOST,))
    s = await serve_and_probe(client, pki, "tls12", leaf, (pki.inter,),
                              max_version=ssl.TLSVersion.TLSv1_2)
    assert s.get("ssl_probe_success") == 1
    assert s.get("ssl_tls_version_info", version="TLS 1.2") == 1
    assert s.get("ssl_tls_cipher_info", cipher="ECDHE-ECDSA-AES256-GCM-SHA384") == 1
    assert s.series("ssl_tls_version_info") == [{"version": "TLS 1.2"}]


async def test_client_certificate_required_but_not_configured(client, pki: PKI) -> None:
    leaf = pki.inter.issue(HOST, dns=(HOST,))
    s = await serve_and_probe(client, pki, "mtls", leaf, (pki.inter,),
                              max_version=ssl.TLSVersion.TLSv1_2, client_ca=pki.root_file)
    assert_failed(s, ("handshake", "handshake_failure"))
    assert s.get("ssl_handshake_success") == 0


async def test_client_certificate_is_sent_and_its_expiry_exported(client, pki: PKI) -> None:
    leaf = pki.inter.issue(HOST, dns=(HOST,))
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        s = await serve_and_probe(client, pki, "mtls", leaf, (pki.inter,), module="mtls",
                                  max_version=version, client_ca=pki.root_file)
        assert s.get("ssl_probe_success") == 1
        assert s.get("ssl_cert_not_after_timestamp_seconds", position="client",
                     subject_cn="probe client") == pki.client.not_after
        assert s.get("ssl_cert_not_after_timestamp_seconds", position="0", file="") == leaf.not_after


async def test_client_certificate_expiry_is_exported_when_the_server_is_down(client, pki) -> None:
    with pytls.refused_port() as port:
        s = await probe(client, f"127.0.0.1:{port}", module="mtls")
    assert_failed(s, ("connect", "refused"))
    assert s.get("ssl_cert_not_after_timestamp_seconds", position="client") == pki.client.not_after


# --- misbehaving servers -----------------------------------------------------------------


def assert_no_tls_series(s: Samples) -> None:
    assert s.get("ssl_handshake_success") == 0
    for name in ("ssl_chain_valid", "ssl_hostname_valid", "ssl_cert_not_after_timestamp_seconds",
                 "ssl_tls_version_info", "ssl_verified_chain_expiry_timestamp_seconds"):
        assert s.series(name) == [], name


async def test_refused_port(client) -> None:
    with pytls.refused_port() as port:
        s = await probe(client, f"127.0.0.1:{port}")
    assert_failed(s, ("connect", "refused"))
    assert s.get("ssl_handshake_success") == 0
    assert_no_tls_series(s)


async def test_silent_server_times_out_at_the_module_deadline(client) -> None:
    with pytls.serve(pytls.silent) as port:
        started = time.monotonic()
        s = await probe(client, f"127.0.0.1:{port}", module="fast")
        elapsed = time.monotonic() - started
    assert_failed(s, ("handshake", "timeout"))
    assert_no_tls_series(s)
    assert 1.0 <= s.get("ssl_probe_duration_seconds") < 1.2
    assert 1.0 <= elapsed < 1.2


async def test_scrape_timeout_header_shortens_the_deadline(client) -> None:
    with pytls.serve(pytls.silent) as port:
        s = await probe(client, f"127.0.0.1:{port}",
                        headers={"X-Prometheus-Scrape-Timeout-Seconds": "1.2"})
    assert_failed(s, ("handshake", "timeout"))
    # min(module 5 s, 1.2 s - 0.5 s offset) = 0.7 s
    assert 0.7 <= s.get("ssl_probe_duration_seconds") < 0.9


async def test_garbage_server(client) -> None:
    with pytls.serve(pytls.garbage) as port:
        s = await probe(client, f"127.0.0.1:{port}")
    assert_failed(s, ("handshake", "tls_protocol"))
    assert_no_tls_series(s)


async def test_plain_http_server(client) -> None:
    with pytls.serve(pytls.plain_http) as port:
        s = await probe(client, f"127.0.0.1:{port}")
    assert_failed(s, ("handshake", "tls_protocol"))
    assert_no_tls_series(s)


async def test_unresolvable_name(client) -> None:
    s = await probe(client, "no-such-host.invalid:443")
    assert_failed(s, ("resolve", "dns"))
    assert_no_tls_series(s)


async def test_ipv6_loopback_target(client, pki: PKI) -> None:
    leaf = pki.inter.issue(HOST, dns=(HOST,), ips=("::1",))
    cert_path, key_path = pki.chain_files("v6", leaf, pki.inter)
    server = pytls.TLSServer(cert_path, key_path)
    with pytls.serve(server.handle, host="::1") as port:
        s = await probe(client, f"[::1]:{port}")
    assert s.get("ssl_probe_success") == 1
    assert s.get("ssl_hostname_valid") == 1


# --- nginx --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nginx_sites(pki: PKI, tmp_path_factory: pytest.TempPathFactory):
    leaf = pki.inter.issue(HOST, dns=(HOST,), not_after=NOW + 45 * DAY)
    expired = pki.inter.issue(HOST, dns=(HOST,), not_before=NOW - 60 * DAY, not_after=NOW - 3 * DAY)
    tls13 = ["ssl_protocols TLSv1.2 TLSv1.3;"]  # nginx before 1.23.4 leaves TLS 1.3 off
    sites = {
        "valid": Site(*pki.chain_files("ng-valid", leaf, pki.inter), tls13),
        "expired": Site(*pki.chain_files("ng-expired", expired, pki.inter), tls13),
        "nointer": Site(*pki.chain_files("ng-nointer", leaf)),
        "tls12": Site(*pki.chain_files("ng-tls12", leaf, pki.inter), ["ssl_protocols TLSv1.2;"]),
    }
    with run_nginx(tmp_path_factory.mktemp("nginx"), sites) as ports:
        yield ports, leaf, expired


async def test_nginx_valid(client, nginx_sites, pki: PKI) -> None:
    ports, leaf, _ = nginx_sites
    s = await probe(client, f"127.0.0.1:{ports['valid']}", hostname=HOST)
    assert s.get("ssl_probe_success") == 1
    assert s.get("ssl_chain_valid") == 1 and s.get("ssl_hostname_valid") == 1
    assert s.get("ssl_verified_chain_expiry_timestamp_seconds") == leaf.not_after
    assert_cert(s, 0, leaf)
    assert_cert(s, 1, pki.inter)
    assert s.get("ssl_tls_version_info", version="TLS 1.3") == 1


async def test_nginx_expired(client, nginx_sites) -> None:
    ports, _, expired = nginx_sites
    s = await probe(client, f"127.0.0.1:{ports['expired']}", hostname=HOST)
    assert_failed(s, ("verify", "expired"))
    assert_cert(s, 0, expired)
    assert s.get("ssl_tls_version_info", version="TLS 1.3") == 1


async def test_nginx_omitted_intermediate(client, nginx_sites) -> None:
    ports, leaf, _ = nginx_sites
    s = await probe(client, f"127.0.0.1:{ports['nointer']}", hostname=HOST)
    assert_failed(s, ("verify", "incomplete_chain"))
    assert_cert(s, 0, leaf)


async def test_nginx_tls12_wrong_host(client, nginx_sites) -> None:
    ports, _, _ = nginx_sites
    s = await probe(client, f"127.0.0.1:{ports['tls12']}", hostname="wrong.example.test")
    assert_failed(s, ("verify", "hostname_mismatch"))
    assert s.get("ssl_tls_version_info", version="TLS 1.2") == 1
    assert s.get("ssl_chain_valid") == 1


async def test_expired_leaf_from_unknown_ca_reports_both(client, pki: PKI) -> None:
    leaf = pki.other_inter.issue(HOST, dns=(HOST,), not_before=NOW - 9 * DAY, not_after=NOW - DAY)
    s = await serve_and_probe(client, pki, "expired-unknown", leaf, (pki.other_inter,))
    assert_failed(s, ("verify", "unknown_issuer"), ("verify", "expired"))
    assert_cert(s, 0, leaf)


async def test_identical_concurrent_probes_share_one_connection(client, pki: PKI) -> None:
    leaf = pki.inter.issue(HOST, dns=(HOST,))
    cert_path, key_path = pki.chain_files("coalesce", leaf, pki.inter)
    with pytls.tls_server(cert_path, key_path) as (port, server):
        target = f"127.0.0.1:{port}"
        same = await asyncio.gather(*(probe(client, target, hostname=HOST) for _ in range(4)))
        other = await asyncio.gather(probe(client, target, hostname=HOST),
                                     probe(client, target, hostname="other.example.test"))
    assert [s.get("ssl_probe_success") for s in same] == [1, 1, 1, 1]
    # One run, one result (ssl_probe_duration_seconds differs: it includes rendering each answer).
    assert len({s.get("ssl_probe_phase_duration_seconds", phase="handshake") for s in same}) == 1
    assert [s.get("ssl_hostname_valid") for s in other] == [1, 0]
    # Four identical probes made one handshake; then one per distinct verified name.
    # (The second gather's two handshakes may reach the server in either order.)
    assert sorted(server.server_names) == sorted([HOST, HOST, "other.example.test"])


# --- positions when a presented certificate cannot be parsed -------------------------------


def test_unparsable_presented_certificate_keeps_the_positions_of_the_others(pki: PKI) -> None:
    garbage = b"\x30\x82\x01\x00 not DER at all"
    outcome = tls.HandshakeOutcome(presented=[garbage, pki.inter.der, pki.root.der], verified=None, tried=[],
                                   verify_code=20, verify_message="unable to get local issuer certificate",
                                   version="TLS 1.3", cipher="TLS_AES_256_GCM_SHA384", dropped_certs=0)
    rec = ProbeRecorder()
    _analyse(rec, outcome, HOST, certs.new_presented_cache())
    result = rec.result()
    assert [(position, cert.der) for position, cert in result.placed_certs()] == [
        ("1", pki.inter.der), ("2", pki.root.der)]
    assert ("verify", "bad_certificate") in {(e.stage, e.reason) for e in result.errors}
    assert result.hostname_valid is None  # the leaf is unknown, not the intermediate
    s = Samples(metrics.encode(metrics.probe_families(result), None)[0].decode())
    for name in ("ssl_cert_info", "ssl_cert_not_after_timestamp_seconds", "ssl_cert_not_before_timestamp_seconds"):
        assert sorted(labels["position"] for labels in s.series(name)) == ["1", "2"]
    assert s.get("ssl_cert_not_after_timestamp_seconds", position="1", serial=pki.inter.serial) == pki.inter.not_after
    # The debug output and the recent-probes page place them alike; the leaf is unknown there too.
    assert list(describe.positions(result)) == ["1", "2"]
    assert describe.leaf_or_soonest(result) is None
