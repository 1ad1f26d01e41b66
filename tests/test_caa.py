"""CAA (RFC 8659, RFC 8657): would the served leaf's issuer be allowed to issue again?

Probes go to an nginx on 127.0.0.1 with ``hostname=`` set; the CAA lookups go to Unbound on
loopback (tests/servers/dns.py), which serves record sets that allow, forbid, use
``issuewild``, carry a critical unknown tag, sit behind a CNAME chain or fail (SERVFAIL).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from ssl_exporter import caa, config, prepare, resolve
from ssl_exporter.certs import parse_der
from ssl_exporter.result import CAARecord
from tests.conftest import PKI, Samples, probe, serve_exporter
from tests.pki import make_cert
from tests.servers.dns import run_unbound
from tests.servers.nginx import Site, run_nginx

LONG_VALUE = "ca.test; note=" + "x" * 400
RECORDS = [
    'allow CAA 0 issue "ca.test"',
    'allow CAA 0 iodef "mailto:security@allow.test"',
    'forbid CAA 0 issue "other-ca.test"',
    'wild CAA 0 issue "other-ca.test"',
    'wild CAA 0 issuewild "ca.test"',
    'nowild CAA 0 issue "ca.test"',
    'nowild CAA 0 issuewild ";"',
    'crit CAA 0 issue "ca.test"',
    'crit CAA 128 tbs "unknown"',
    "alias CNAME alias2",
    "alias2 CNAME forbid",
    'acct CAA 0 issue "ca.test; accounturi=https://ca.test/acct/1"',
    'quoted CAA 0 issue "ca.test; x=\\"}\\" \\\\"',
    f'long CAA 0 issue "{LONG_VALUE}"',
    "nocaa A 127.0.0.1",
]
NAMES = ("allow.test", "sub.allow.test", "deep.sub.allow.test", "forbid.test", "wild.test", "*.wild.test",
         "nowild.test", "*.nowild.test", "crit.test", "alias.test", "acct.test", "quoted.test", "long.test",
         "nocaa.test", "x.servfail.test")


@pytest.fixture(scope="module")
def servers(pki: PKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    root = tmp_path_factory.mktemp("caa-world")
    leaf = pki.inter.issue("caa test leaf", dns=NAMES)
    cert, key = pki.chain_files("caa", leaf, pki.inter)
    with run_unbound(root / "unbound", RECORDS) as dns_port, \
            run_nginx(root / "nginx", {"caa": Site(cert, key)}) as ports:
        yield dns_port, ports["caa"]


def write_config(pki: PKI, dns_port: int, path: Path, caa_block: dict[str, object]) -> Path:
    path.write_text(textwrap.dedent(f"""\
        modules:
          caa:
            prober: tcp
            timeout: 3s
            tls_config: {{ca_file: {pki.root_file}}}
            tcp: {{dns_servers: ["127.0.0.1:{dns_port}"], dns_timeout: 1s}}
            caa: {json.dumps(caa_block)}
        """))
    return path


@pytest.fixture
def known_issuer(pki: PKI, servers: tuple[int, int], tmp_path: Path) -> Path:
    """The test CA's CAA identity is ca.test, from the module's configuration."""
    return write_config(pki, servers[0], tmp_path / "caa.yml", {"identities": {"Test Intermediate CA": ["ca.test"]}})


async def caa_probe(config_path: Path, port: int, name: str) -> Samples:
    async with serve_exporter(config_path) as client:
        s = await probe(client, f"127.0.0.1:{port}", module="caa", hostname=name)
    assert s.get("ssl_probe_success") == 1  # CAA never fails the probe: the certificate is fine
    return s


@pytest.mark.parametrize(("name", "allowed"), [
    ("allow.test", 1),
    ("sub.allow.test", 1),  # NXDOMAIN at the name: the CA climbs to allow.test
    ("deep.sub.allow.test", 1),
    ("forbid.test", 0),
    ("wild.test", 0),  # issue names another CA; issuewild is for wildcard names only
    ("www.wild.test", 1),  # covered by *.wild.test: issuewild counts
    ("nowild.test", 1),
    ("www.nowild.test", 0),  # issuewild ";": no CA may issue wildcards
    ("crit.test", 0),  # a critical tag the CA does not know forbids all issuance
    ("alias.test", 0),  # CNAME chain to forbid.test: its record set counts
    ("nocaa.test", 1),  # no record set up to the TLD: any CA
    ("long.test", 1),
    ("quoted.test", 1),
])
async def test_issuer_allowed_by_record_set(pki: PKI, servers: tuple[int, int], known_issuer: Path,
                                            name: str, allowed: int) -> None:
    s = await caa_probe(known_issuer, servers[1], name)
    assert s.get("ssl_caa_lookup_success") == 1
    assert s.get("ssl_caa_issuer_allowed") == allowed


async def test_record_set_exported_escaped_and_capped(pki: PKI, servers: tuple[int, int], known_issuer: Path) -> None:
    s = await caa_probe(known_issuer, servers[1], "sub.allow.test")
    assert {(r["domain"], r["flags"], r["tag"], r["value"]) for r in s.series("ssl_caa_info")} == {
        ("allow.test", "0", "issue", "ca.test"), ("allow.test", "0", "iodef", "mailto:security@allow.test")}
    long = await caa_probe(known_issuer, servers[1], "long.test")
    [value] = [r["value"] for r in long.series("ssl_caa_info")]
    assert len(value) == caa.MAX_VALUE_CHARS and value.endswith("…") and value.startswith("ca.test; note=xxx")
    quoted = await caa_probe(known_issuer, servers[1], "quoted.test")
    assert [r["value"] for r in quoted.series("ssl_caa_info")] == ['ca.test; x="}" \\']
    crit = await caa_probe(known_issuer, servers[1], "crit.test")
    assert ("128", "tbs", "unknown") in {(r["flags"], r["tag"], r["value"]) for r in crit.series("ssl_caa_info")}
    none = await caa_probe(known_issuer, servers[1], "nocaa.test")
    assert none.series("ssl_caa_info") == []


async def test_lookup_failure_is_not_a_verdict(pki: PKI, servers: tuple[int, int], known_issuer: Path) -> None:
    s = await caa_probe(known_issuer, servers[1], "x.servfail.test")
    assert s.get("ssl_caa_lookup_success") == 0
    assert s.get("ssl_caa_issuer_allowed") is None  # unknown is absent
    assert s.series("ssl_caa_info") == []
    assert s.get("ssl_probe_phase_duration_seconds", phase="caa") is not None


async def test_no_system_resolver_is_a_failed_lookup_not_a_crash(pki: PKI, servers: tuple[int, int],
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # A minimal container: /etc/resolv.conf empty or missing. The resolver was built outside
    # the try: the whole probe failed with internal_error.
    empty = tmp_path / "resolv.conf"
    empty.write_text("# no nameserver lines\n")
    path = tmp_path / "system.yml"
    path.write_text(textwrap.dedent(f"""\
        modules:
          caa:
            prober: tcp
            tls_config: {{ca_file: {pki.root_file}}}
            caa: {{identities: {{"Test Intermediate CA": [ca.test]}}}}
        """))
    for resolv_conf in (empty, tmp_path / "missing.conf"):
        monkeypatch.setattr(resolve, "RESOLV_CONF", str(resolv_conf))
        async with serve_exporter(path) as client:
            debug = await client.get("/probe", params={"target": f"127.0.0.1:{servers[1]}", "module": "caa",
                                                       "hostname": "allow.test", "debug": "true"})
            text = await debug.text()
        assert "CAA lookup for allow.test failed: no_resolver" in text
        assert "internal_error" not in text
        s = await caa_probe(path, servers[1], "allow.test")
        assert s.get("ssl_caa_lookup_success") == 0
        assert s.get("ssl_caa_issuer_allowed") is None
        assert s.errors() == set()


async def test_account_uri_decides_rfc8657_records(pki: PKI, servers: tuple[int, int], tmp_path: Path) -> None:
    identities = {"Test Intermediate CA": ["ca.test"]}
    unknown_account = await caa_probe(write_config(pki, servers[0], tmp_path / "a.yml", {"identities": identities}),
                                      servers[1], "acct.test")
    assert unknown_account.get("ssl_caa_issuer_allowed") is None  # which account renews is not known
    for account, allowed in (("https://ca.test/acct/1", 1), ("https://ca.test/acct/2", 0)):
        path = write_config(pki, servers[0], tmp_path / "b.yml", {"identities": identities, "account_uri": account})
        assert (await caa_probe(path, servers[1], "acct.test")).get("ssl_caa_issuer_allowed") == allowed


async def test_unknown_issuer_is_unknown_unless_the_set_decides_alone(pki: PKI, servers: tuple[int, int],
                                                                     tmp_path: Path) -> None:
    path = write_config(pki, servers[0], tmp_path / "builtin.yml", {})  # only the built-in public CAs
    assert (await caa_probe(path, servers[1], "allow.test")).get("ssl_caa_issuer_allowed") is None
    assert (await caa_probe(path, servers[1], "crit.test")).get("ssl_caa_issuer_allowed") == 0
    assert (await caa_probe(path, servers[1], "nocaa.test")).get("ssl_caa_issuer_allowed") == 1


def test_builtin_identity_matches_the_issuer_organization() -> None:
    root = make_cert("ISRG Root X1 (test)", ca=True)
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Let's Encrypt"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "R10")])
    inter = make_cert("R10", issuer=root, ca=True, subject=subject)
    leaf = parse_der(inter.issue("www.example.test", dns=("www.example.test",)).der)
    assert caa.issuer_identities(leaf, {}) == ("letsencrypt.org",)
    assert caa.issuer_identities(leaf, {"R10": ["ca.test"]}) == ("ca.test",)  # configured wins
    other = parse_der(make_cert("leaf", issuer=make_cert("Some CA", ca=True)).der)
    assert caa.issuer_identities(other, {}) == ()


def test_decide_rules() -> None:
    def rec(flags: int, tag: str, value: str) -> CAARecord:
        return CAARecord(flags, tag, value)

    cfg = caa.CAAConfig(validation_methods=("dns-01",))
    ids = ["ca.test"]
    assert caa.decide([], False, ids, cfg) is True
    assert caa.decide([rec(0, "iodef", "mailto:x@y")], False, ids, cfg) is True  # no issue property
    assert caa.decide([rec(0, "issue", "CA.TEST")], False, ids, cfg) is True  # domains compare case-blind
    assert caa.decide([rec(0, "issue", "ca.test; validationmethods=http-01")], False, ids, cfg) is False
    assert caa.decide([rec(0, "issue", "ca.test; validationmethods=http-01,dns-01")], False, ids, cfg) is True
    assert caa.decide([rec(0, "issue", "ca.test; broken")], False, ids, cfg) is False  # malformed parameter
    assert caa.decide([rec(0, "issue", "other.test"), rec(0, "issue", "ca.test")], False, ids, cfg) is True
    assert caa.decide([rec(128, "issue", "ca.test")], False, ids, cfg) is True  # critical but known
    assert caa.decide([rec(0, "issue", ";")], False, [], cfg) is False  # no CA at all, whoever issued
    assert caa.candidates("*.a.b.test") == ["a.b.test", "b.test", "test"]


def test_caa_config_is_validated() -> None:
    with pytest.raises(config.ConfigError, match=r"modules\.m\.caa\.identities: expected issuer name"):
        prepare.load_text("modules: {m: {prober: tcp, caa: {identities: {X: []}}}}", "t")
    with pytest.raises(config.ConfigError, match=r"modules\.m\.caa\.color: unknown key"):
        prepare.load_text("modules: {m: {prober: tcp, caa: {color: red}}}", "t")
    loaded = prepare.load_text("modules: {m: {prober: tcp, caa: }}", "t")
    assert loaded.modules["m"].caa == caa.CAAConfig()
    assert config.module_dict(loaded.modules["m"])["caa"] == {}


def test_a_huge_issuer_name_is_clipped_in_the_error() -> None:
    issuer = "Evil CA " * 120  # YAML allows simple keys up to 1024 characters
    with pytest.raises(config.ConfigError) as error:
        prepare.load_text(json.dumps({"modules": {"m": {"prober": "tcp", "caa": {"identities": {issuer: []}}}}}), "t")
    message = str(error.value)
    assert message.startswith("modules.m.caa.identities: expected issuer name: [CAA domain, ...], got 'Evil CA")
    assert len(message) < 300 and "..." in message
