"""DNS-aware probing against a real DNS server: Unbound on loopback (tests/servers/dns.py).

Every address behind a name (``tcp.all_addresses``), each an nginx with its own certificate,
one of them stale; resolution through chosen DNS servers (``tcp.dns_servers``,
``--dns.server``) with precise reasons; target_policy on every resolved address. Only
loopback is ever queried or connected to.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ssl_exporter import config, prepare, resolve
from tests.conftest import PKI, Samples, probe, serve_exporter
from tests.pki import DAY, NOW
from tests.servers.daemons import free_ports
from tests.servers.dns import run_unbound
from tests.servers.nginx import Site, run_nginx
from tests.test_legacy import SECLEVEL0

NAME = "multi.test"
GOOD = ("127.0.0.2", "127.0.0.3")
STALE = "127.0.0.4"
SILENT = "127.0.0.5"  # accepts connections (the kernel does) but never speaks TLS
LEGACY = "127.0.0.6"  # speaks only TLS 1.0: the probe's handshake fails, the fallback reads its leaf
V6 = "::1"

RECORDS = [
    *(f"multi A {a}" for a in (*GOOD, STALE)),
    f"multi AAAA {V6}",
    *(f"good A {a}" for a in GOOD),
    "good AAAA ::1",
    *(f"many A 127.0.0.{i}" for i in range(2, 7)),
    *(f"hang A {a}" for a in (GOOD[0], SILENT)),
    *(f"mixed A {a}" for a in (GOOD[0], LEGACY)),
    "v4only A 127.0.0.2",
    "empty TXT \"no address here\"",
    "alias CNAME good",
]


class World:
    """The DNS server, the TLS servers behind the names, and the certificates they serve."""

    def __init__(self, dns_port: int, tls_port: int, leaves: dict[str, object]) -> None:
        self.dns_port = dns_port
        self.tls_port = tls_port
        self.leaves = leaves


@pytest.fixture(scope="module")
def world(pki: PKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("dns-world")
    names = ("multi.test", "good.test", "many.test", "hang.test", "alias.test", "v4only.test", "mixed.test")
    leaves = {
        **{a: pki.inter.issue(f"fresh {a}", dns=names) for a in (*GOOD, V6)},
        # The stale backend: last year's certificate, expired since.
        STALE: pki.inter.issue("stale", dns=names, not_before=NOW - 400 * DAY, not_after=NOW - 10 * DAY),
        LEGACY: pki.inter.issue("legacy", dns=names),
    }
    port = free_ports("tls")["tls"]
    sites = {}
    for address, leaf in leaves.items():
        cert, key = pki.chain_files(f"dns-{address}", leaf, pki.inter)
        directives = ["ssl_protocols TLSv1;", SECLEVEL0] if address == LEGACY else []
        sites[address] = Site(cert, key, directives, address=address, port=port)
    with socket.socket() as silent:
        silent.bind((SILENT, port))
        silent.listen(16)
        with run_unbound(root / "unbound", RECORDS) as dns_port, run_nginx(root / "nginx", sites):
            yield World(dns_port, port, leaves)


def module_config(pki: PKI, world: World, path: Path, **tcp: object) -> Path:
    options = {"dns_servers": [f"127.0.0.1:{world.dns_port}"], "preferred_ip_protocol": "ip4", **tcp}
    path.write_text(textwrap.dedent(f"""\
        modules:
          all:
            prober: tcp
            timeout: 3s
            tls_config: {{ca_file: {pki.root_file}}}
            tcp: {json.dumps({**options, "all_addresses": True})}
          one:
            prober: tcp
            timeout: 3s
            tls_config: {{ca_file: {pki.root_file}}}
            tcp: {json.dumps(options)}
        """))
    return path


@pytest.fixture
def config_path(pki: PKI, world: World, tmp_path: Path) -> Path:
    return module_config(pki, world, tmp_path / "dns.yml")


def addresses_of(s: Samples, metric: str, **labels: str) -> set[str]:
    return {series["address"] for series in s.series(metric)
            if all(series.get(k) == v for k, v in labels.items())}


# --- every address behind a name ------------------------------------------------------


async def test_every_address_probed_and_the_stale_one_named(world: World, config_path: Path) -> None:
    async with serve_exporter(config_path) as client:
        s = await probe(client, f"{NAME}:{world.tls_port}", module="all")
    everyone = {*GOOD, STALE, V6}
    assert s.get("ssl_probe_success") == 0  # one stale backend fails the whole target
    assert s.get("ssl_probe_addresses_resolved") == 4
    for address in everyone:
        assert s.get("ssl_probe_address_success", address=address) == float(address != STALE)
        assert s.get("ssl_handshake_success", address=address) == 1
        leaf = world.leaves[address]
        assert s.get("ssl_cert_not_after_timestamp_seconds", address=address, position="0") == leaf.not_after
        assert s.get("ssl_hostname_valid", address=address) == 1
        assert addresses_of(s, "ssl_tls_version_info", address=address) == {address}
    # The verdicts are per address: only the stale one has an expired leaf.
    assert addresses_of(s, "ssl_probe_error_info", stage="verify", reason="expired") == {STALE}
    assert s.get("ssl_chain_valid", address=STALE) == 0
    assert s.get("ssl_chain_valid", address=GOOD[0]) == 1
    fingerprints = {series["fingerprint_sha256"] for series in s.series("ssl_cert_info") if series["position"] == "0"}
    assert len(fingerprints) == 4  # four backends, four leaves
    # Whole-target series have no address label; resolution is the target's (address="").
    assert "address" not in s.series("ssl_probe_success")[0]
    assert [p["address"] for p in s.series("ssl_probe_phase_duration_seconds") if p["phase"] == "resolve"] == [""]
    assert addresses_of(s, "ssl_probe_phase_duration_seconds", phase="handshake") == everyone


async def test_every_address_good_is_success_and_single_mode_keeps_its_shape(world: World,
                                                                             config_path: Path) -> None:
    async with serve_exporter(config_path) as client:
        every = await probe(client, f"good.test:{world.tls_port}", module="all")
        one = await probe(client, f"good.test:{world.tls_port}", module="one")
    assert every.get("ssl_probe_success") == 1
    assert addresses_of(every, "ssl_probe_address_success") == {*GOOD, V6}
    assert every.errors() == set()
    # Without all_addresses: one handshake (the preferred family's first address), no address label.
    assert one.get("ssl_probe_success") == 1
    assert one.series("ssl_probe_address_success") == []
    assert all("address" not in series for series in one.series("ssl_cert_info"))
    assert one.get("ssl_cert_not_after_timestamp_seconds", position="0") == world.leaves[GOOD[0]].not_after


async def test_each_address_gets_the_fallback_handshake_of_its_own(world: World, config_path: Path) -> None:
    async with serve_exporter(config_path) as client:
        s = await probe(client, f"mixed.test:{world.tls_port}", module="all")
    assert s.get("ssl_probe_success") == 0
    assert s.get("ssl_probe_address_success", address=GOOD[0]) == 1
    assert s.get("ssl_fallback_handshake", address=GOOD[0]) == 0
    # The TLS 1.0 backend: its handshake fails for policy reasons, the fallback reads its leaf.
    assert s.get("ssl_handshake_success", address=LEGACY) == 0
    assert s.get("ssl_fallback_handshake", address=LEGACY) == 1
    assert s.get("ssl_fallback_tls_version_info", address=LEGACY, version="TLS 1.0") == 1
    assert s.get("ssl_cert_not_after_timestamp_seconds", address=LEGACY, position="0") == world.leaves[LEGACY].not_after
    assert addresses_of(s, "ssl_probe_error_info", stage="handshake", reason="protocol_version") == {LEGACY}
    assert addresses_of(s, "ssl_probe_phase_duration_seconds", phase="fallback") == {LEGACY}


async def test_a_cname_is_followed_to_its_addresses(world: World, config_path: Path) -> None:
    async with serve_exporter(config_path) as client:
        s = await probe(client, f"alias.test:{world.tls_port}", module="all")
    assert addresses_of(s, "ssl_probe_address_success") == {*GOOD, V6}
    assert s.get("ssl_probe_success") == 1


async def test_max_addresses_caps_the_probed_addresses(pki: PKI, world: World, tmp_path: Path) -> None:
    path = module_config(pki, world, tmp_path / "cap.yml", max_addresses=2)
    async with serve_exporter(path) as client:
        s = await probe(client, f"many.test:{world.tls_port}", module="all")
    assert s.get("ssl_probe_addresses_resolved") == 5
    assert addresses_of(s, "ssl_probe_address_success") == set(GOOD)  # the lowest two: the same two every time
    assert s.get("ssl_probe_success") == 1


async def test_a_silent_address_times_out_alone_within_the_deadline(world: World, config_path: Path) -> None:
    begin = time.monotonic()
    async with serve_exporter(config_path) as client:
        s = await probe(client, f"hang.test:{world.tls_port}", module="all")
    elapsed = time.monotonic() - begin
    assert elapsed < 3 + 1  # the module's timeout, plus time to answer
    assert s.get("ssl_probe_success") == 0
    assert s.get("ssl_probe_address_success", address=GOOD[0]) == 1
    assert s.get("ssl_probe_address_success", address=SILENT) == 0
    assert addresses_of(s, "ssl_probe_error_info", stage="handshake", reason="timeout") == {SILENT}
    # The good address's certificate is in the answer although another address hung.
    assert s.get("ssl_cert_not_after_timestamp_seconds", address=GOOD[0], position="0") is not None


async def test_target_policy_applies_to_every_resolved_address(pki: PKI, world: World, tmp_path: Path) -> None:
    path = module_config(pki, world, tmp_path / "policy.yml")
    path.write_text(path.read_text() + f"target_policy: {{deny_cidrs: [{STALE}/32]}}\n")
    async with serve_exporter(path) as client:
        refused = await client.get("/probe", params={"target": f"{NAME}:{world.tls_port}", "module": "all"})
        allowed = await probe(client, f"good.test:{world.tls_port}", module="all")
        assert refused.status == 403
        assert STALE in await refused.text() or "deny_cidrs" in await refused.text()
    assert allowed.get("ssl_probe_success") == 1


# --- choose the resolver ------------------------------------------------------------


@pytest.mark.parametrize(("target", "reason"), [
    ("missing.test", "nxdomain"),
    ("x.servfail.test", "servfail"),
    ("x.refused.test", "refused"),
    ("empty.test", "no_address"),
])
async def test_resolution_failures_have_precise_reasons(world: World, config_path: Path, target: str,
                                                       reason: str) -> None:
    async with serve_exporter(config_path) as client:
        for module in ("all", "one"):
            s = await probe(client, f"{target}:{world.tls_port}", module=module)
            assert s.errors() == {("resolve", reason)}, module
            assert s.get("ssl_probe_success") == 0
            assert [p["phase"] for p in s.series("ssl_probe_phase_duration_seconds")] == ["resolve"]
            assert s.get("ssl_handshake_success", **({"address": ""} if module == "all" else {})) == 0


async def test_no_address_of_the_wanted_family(pki: PKI, world: World, tmp_path: Path) -> None:
    path = module_config(pki, world, tmp_path / "v6.yml", preferred_ip_protocol="ip6", ip_protocol_fallback=False)
    async with serve_exporter(path) as client:
        s = await probe(client, f"v4only.test:{world.tls_port}", module="one")
    assert s.errors() == {("resolve", "no_address")}


async def test_a_slow_zone_times_out_after_dns_timeout(pki: PKI, world: World, tmp_path: Path) -> None:
    path = module_config(pki, world, tmp_path / "slow.yml", dns_timeout="500ms")
    async with serve_exporter(path) as client:
        s = await probe(client, f"x.slow.test:{world.tls_port}", module="one")
    assert s.errors() == {("resolve", "timeout")}
    resolve_seconds = s.get("ssl_probe_phase_duration_seconds", phase="resolve")
    assert resolve_seconds is not None and 0.5 <= resolve_seconds < 2.5  # dns_timeout, not the probe's 3 s


async def test_the_probe_deadline_bounds_a_slow_resolution(pki: PKI, world: World, tmp_path: Path) -> None:
    path = module_config(pki, world, tmp_path / "slow.yml")  # dns_timeout 5s, module timeout 3s
    begin = time.monotonic()
    async with serve_exporter(path) as client:
        s = await probe(client, f"x.slow.test:{world.tls_port}", module="all")
    assert time.monotonic() - begin < 3 + 1
    assert s.errors() == {("resolve", "timeout")}


def test_dns_server_option_is_validated(tmp_path: Path) -> None:
    for servers, message in (([".example"], "IP address"), (["127.0.0.1:0"], "1-65535"), ([53], "expected")):
        with pytest.raises(config.ConfigError, match=rf"modules\.m\.tcp\.dns_servers: .*{message}"):
            prepare.load_text(f"modules: {{m: {{prober: tcp, tcp: {{dns_servers: {json.dumps(servers)}}}}}}}", "t")
    with pytest.raises(config.ConfigError, match=r"max_addresses: 0 is out of range"):
        prepare.load_text("modules: {m: {prober: tcp, tcp: {all_addresses: true, max_addresses: 0}}}", "t")
    with pytest.raises(config.ConfigError, match=r"all_addresses: cannot be combined with a proxy"):
        prepare.load_text("modules: {m: {prober: tcp, tcp: {all_addresses: true, proxy_url: 'http://127.0.0.1:1'}}}",
                         "t")
    assert resolve.parse_server("[::1]:5353") == resolve.Server("::1", 5353)
    assert resolve.parse_server("127.0.0.1") == resolve.Server("127.0.0.1", 53)


def test_dns_server_flag_resolves_for_modules_without_their_own(pki: PKI, world: World, tmp_path: Path) -> None:
    """``ssl-exporter check --dns.server``: the flag's servers serve a module that names none."""
    path = tmp_path / "flag.yml"
    path.write_text(textwrap.dedent(f"""\
        modules:
          plain: {{prober: tcp, timeout: 3s, tls_config: {{ca_file: {pki.root_file}}},
                  tcp: {{preferred_ip_protocol: ip4, all_addresses: true}}}}
        """))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    argv = [sys.executable, "-m", "ssl_exporter", "check", f"good.test:{world.tls_port}", "--config.file", str(path),
            "--format", "json", "--dns.server", f"127.0.0.1:{world.dns_port}"]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)
    doc = json.loads(result.stdout)
    assert doc["status"] == "OK", result.stdout
    assert sorted(a["address"] for a in doc["addresses"]) == sorted([*GOOD, V6])
    bad = subprocess.run([*argv[:-1], "ns.example"], capture_output=True, text=True, env=env, timeout=30)
    assert bad.returncode == 3 and "--dns.server" in bad.stdout



async def test_pages_and_debug_output_show_every_address(world: World, config_path: Path) -> None:
    async with serve_exporter(config_path) as client:
        await probe(client, f"{NAME}:{world.tls_port}", module="all")
        landing = await (await client.get("/")).text()
        log_page = await (await client.get("/probe/log", params={"id": "1"})).text()
        debug = await (await client.get("/probe", params={"target": f"{NAME}:{world.tls_port}", "module": "all",
                                                          "debug": "true"})).text()
    assert f"{STALE} verify/expired" in landing  # the reason cell names the stale address
    assert "(soonest of 4 addresses)" in landing and "expired 10d" in landing
    for text in (log_page, debug):
        assert f"address {STALE}: FAILED" in text
        assert f"address {GOOD[0]}: OK" in text
        assert f"[{STALE}] connected to {STALE}:{world.tls_port}" in text  # the log names each address
        assert f"{STALE} 0] stale" in text  # the stale leaf, described under its address


def test_check_reports_the_stale_address(pki: PKI, world: World, config_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    base = [sys.executable, "-m", "ssl_exporter", "check", f"{NAME}:{world.tls_port}", "--config.file",
            str(config_path), "--module", "all"]
    text = subprocess.run(base, capture_output=True, text=True, env=env, timeout=30)
    assert text.returncode == 2, text.stdout  # CRITICAL: one address serves an expired certificate
    status = text.stdout.splitlines()[0]
    assert f"{STALE} verify/expired" in status and "expired 10d" in status
    assert f"Address {STALE}: FAILED" in text.stdout and f"Address {GOOD[1]}: OK" in text.stdout
    doc = json.loads(subprocess.run([*base, "--format", "json"], capture_output=True, text=True, env=env,
                                    timeout=30).stdout)
    stale = next(a for a in doc["addresses"] if a["address"] == STALE)
    assert stale["success"] is False and stale["chain_valid"] is False
    assert stale["certificates"][0]["subject_cn"] == "stale"
    assert doc["days_left"] < 0  # the soonest expiry of all addresses: the stale leaf's


def test_dashboard_queries_answer_for_every_address(tmp_path: Path) -> None:
    """The certificate table and expiry tiles, evaluated by promtool on a multi-address
    answer: one row per address, no many-to-many match error on the shared leaf."""
    from tests.test_deploy_manifests import _panel, substitute

    base = 'job="ssl",instance="www.example:443",module="all"'
    leaves = {"192.0.2.1": ("0a", "aa", 864000), "192.0.2.2": ("0a", "aa", 864000), "192.0.2.3": ("0b", "bb", 86400)}
    series = []
    for address, (serial, fingerprint, not_after) in leaves.items():
        cert = f'{base},address="{address}",position="0",subject_cn="www.example",issuer_cn="R10",serial="{serial}"'
        series += [
            {"series": f"ssl_cert_not_after_timestamp_seconds{{{cert}}}", "values": f"{not_after}x5"},
            {"series": f'ssl_cert_info{{{cert},fingerprint_sha256="{fingerprint}",sans="www.example"}}',
             "values": "1x5"},
            {"series": f'ssl_tls_version_info{{{base},address="{address}",version="TLS 1.3"}}', "values": "1x5"},
            {"series": f'ssl_probe_success{{{base}}}', "values": "0x5"} if address == "192.0.2.3" else None,
        ]
    time_left = substitute(_panel("Certificates by time left")["targets"][0]["expr"])
    soon = substitute(_panel("Expiring within $critical_days days")["targets"][0]["expr"])
    expected_rows = [
        {"labels": f'{{{base},address="{address}",position="0",subject_cn="www.example",issuer_cn="R10",'
                   f'serial="{serial}",sans="www.example",version="TLS 1.3"}}', "value": not_after - 60}
        for address, (serial, _, not_after) in leaves.items()
    ]
    doc = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [s for s in series if s],
            "promql_expr_test": [
                {"expr": time_left, "eval_time": "1m", "exp_samples": expected_rows},
                {"expr": soon, "eval_time": "1m", "exp_samples": [{"labels": "{}", "value": 1}]},  # the stale one
            ],
        }],
    }
    path = tmp_path / "dashboard.yml"
    path.write_text(json.dumps(doc))
    result = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


async def test_caa_speaks_for_the_whole_target(pki: PKI, world: World, tmp_path: Path) -> None:
    path = module_config(pki, world, tmp_path / "caa.yml")
    text = path.read_text()
    assert "  all:\n    prober: tcp\n" in text
    path.write_text(text.replace("  all:\n    prober: tcp\n", "  all:\n    prober: tcp\n    caa: {}\n"))
    async with serve_exporter(path) as client:
        s = await probe(client, f"{NAME}:{world.tls_port}", module="all")
    # No CAA record set under .test: any CA may issue; judged once for the name, not per address.
    assert s.series("ssl_caa_issuer_allowed") == [{}]
    assert s.get("ssl_caa_issuer_allowed") == 1 and s.get("ssl_caa_lookup_success") == 1
    assert s.get("ssl_probe_phase_duration_seconds", phase="caa", address="") is not None


def test_history_keeps_a_bounded_share_of_every_address(pki: PKI) -> None:
    from ssl_exporter.certs import parse_der
    from ssl_exporter.history import MAX_CERTS_KEPT, History
    from ssl_exporter.result import AddressResult, ProbeResult

    chain = tuple(parse_der(c.der) for c in (pki.inter.issue("a", dns=("a.test",)), pki.inter, pki.root))
    one = ProbeResult(success=True, duration=0.1, certs=chain, positions=("0", "1", "2"))
    result = ProbeResult(success=True, duration=0.1,
                         addresses=tuple(AddressResult(f"127.0.0.{i}", one) for i in range(2, 2 + 20)))
    record = History().add("m", "t", "t", {}, result)
    assert record.result is result  # the answer being sent keeps everything
    kept = History(limit=1)
    kept.add("m", "t", "t", {}, result)
    [stored] = kept.records()
    assert [len(a.result.certs) for a in stored.result.addresses or ()] == [MAX_CERTS_KEPT // 20] * 20
    assert stored.certs_dropped == 20 * 3 - MAX_CERTS_KEPT // 20 * 20
    with pytest.raises(config.ConfigError, match=r"max_addresses: 65 is out of range 1-64"):
        prepare.load_text("modules: {m: {prober: tcp, tcp: {all_addresses: true, max_addresses: 65}}}", "t")


def test_dns_server_flag_of_the_exporter() -> None:
    from ssl_exporter import cli

    try:
        cli.parse_args(["--dns.server", "127.0.0.1:5353", "--dns.server", "[::1]"])
        assert resolve.servers_for(()) == (resolve.Server("127.0.0.1", 5353), resolve.Server("::1", 53))
        assert resolve.servers_for(["127.0.0.9"]) == (resolve.Server("127.0.0.9", 53),)  # the module's own win
        with pytest.raises(SystemExit):
            cli.parse_args(["--dns.server", "dns.example"])
    finally:
        resolve.set_default_servers([])
    assert resolve.servers_for(()) == ()


def test_dns_timeout_bounds_the_system_resolver(pki: PKI, tmp_path: Path) -> None:
    """tcp.dns_timeout did nothing without dns_servers: getaddrinfo waited as long as the
    system resolver's own timeout. The check runs in a mount namespace of its own whose
    /etc/resolv.conf names a loopback server that never answers (its timeout 4 s)."""
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("nameserver 127.0.0.77\noptions timeout:4 attempts:1\n")
    path = tmp_path / "system.yml"
    path.write_text(textwrap.dedent(f"""\
        modules:
          plain: {{prober: tcp, timeout: 10s, tls_config: {{ca_file: {pki.root_file}}},
                  tcp: {{preferred_ip_protocol: ip4, dns_timeout: 500ms}}}}
        """))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    argv = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv_conf),
            sys.executable, "-m", "ssl_exporter", "check", "x.slow.test:443", "--module", "plain",
            "--config.file", str(path), "--format", "json"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blackhole:
        blackhole.bind(("127.0.0.77", 53))  # receives the queries, answers none
        result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    doc = json.loads(result.stdout)
    assert [(e["stage"], e["reason"]) for e in doc["errors"]] == [("resolve", "timeout")], result.stdout
    assert 0.5 <= doc["duration_seconds"] < 2.5  # dns_timeout, not the resolver's 4 s


def test_dns_timeout_is_shown_and_ports_are_ascii_digits() -> None:
    shown = prepare.load_text("modules: {m: {prober: tcp, tcp: {dns_timeout: 2s}}}", "t").redacted()
    assert shown["modules"]["m"]["tcp"]["dns_timeout"] == "2s"
    default = prepare.load_text("modules: {m: {prober: tcp}}", "t").redacted()
    assert "dns_timeout" not in default["modules"]["m"]["tcp"]
    with pytest.raises(ValueError, match="is not in 1-65535"):
        resolve.parse_server("127.0.0.1:\u0665\u0663")  # Arabic-Indic digits "53"


def test_check_and_debug_output_name_the_fallback_handshake(pki: PKI, world: World, config_path: Path) -> None:
    """check's JSON and text reports and the debug summary left out the fallback handshake."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    base = [sys.executable, "-m", "ssl_exporter", "check", "--config.file", str(config_path)]
    every = [*base, f"mixed.test:{world.tls_port}", "--module", "all"]
    doc = json.loads(subprocess.run([*every, "--format", "json"], capture_output=True, text=True, env=env,
                                    timeout=30).stdout)
    by_address = {a["address"]: a for a in doc["addresses"]}
    assert by_address[LEGACY]["fallback_handshake"] is True
    assert by_address[LEGACY]["fallback_tls"]["version"] == "TLS 1.0"
    assert by_address[GOOD[0]]["fallback_handshake"] is False and by_address[GOOD[0]]["fallback_tls"] is None
    text = subprocess.run(every, capture_output=True, text=True, env=env, timeout=30).stdout
    assert f"Address {LEGACY}: FAILED, handshake failed, chain verified, name matches, certificates from the " \
           "fallback handshake (TLS 1.0, " in text
    one = [*base, f"{LEGACY}:{world.tls_port}", "--module", "one", "--hostname", "mixed.test"]
    doc = json.loads(subprocess.run([*one, "--format", "json"], capture_output=True, text=True, env=env,
                                    timeout=30).stdout)
    assert doc["fallback_handshake"] is True and doc["fallback_tls"]["version"] == "TLS 1.0"
    text = subprocess.run(one, capture_output=True, text=True, env=env, timeout=30).stdout
    assert "Fallback:   certificates read by the fallback handshake: TLS 1.0, " in text


async def test_debug_summary_names_the_fallback_of_an_address(world: World, config_path: Path) -> None:
    async with serve_exporter(config_path) as client:
        debug = await (await client.get("/probe", params={"target": f"mixed.test:{world.tls_port}",
                                                          "module": "all", "debug": "true"})).text()
    [line] = [line for line in debug.splitlines() if line.startswith(f"address {LEGACY}:")]
    assert "certificates read by the fallback handshake: TLS 1.0, cipher " in line
