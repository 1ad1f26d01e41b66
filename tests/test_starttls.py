"""STARTTLS probes against real servers from Debian packages, and a scripted server.

The daemons (Postfix, Dovecot, PostgreSQL, MariaDB, slapd, vsftpd, Prosody) run on loopback
as this module's child processes, each started once, each with a leaf of its own lifetime
so that a probe that reached the wrong server could not pass. NNTP and the misbehaving
servers are scripted (tests/servers/dialogue.py).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from ssl_exporter import starttls
from ssl_exporter.prepare import load_default
from ssl_exporter.server import Exporter, make_app
from tests.conftest import PKI, Samples, probe
from tests.pki import DAY, NOW, Cert
from tests.servers import daemons, dialogue
from tests.servers.dialogue import Close, Expect, ExpectBytes, Send

HOST = "starttls.example.test"

Start = Callable[..., AbstractContextManager[dict[str, int]]]


@dataclass
class Served:
    ports: dict[str, int]
    leaf: Cert


# --- servers, one of each per module ------------------------------------------------------


@pytest.fixture(scope="module")
def daemon_root() -> Iterator[Path]:
    with daemons.base_directory() as path:
        yield path


def _serve(pki: PKI, root: Path, name: str, lifetime_days: int, start: Start, **options: str) -> Iterator[Served]:
    """Start one server with a leaf for HOST valid ``lifetime_days``; yield its ports and leaf."""
    leaf = pki.inter.issue(HOST, dns=(HOST,), not_after=NOW + lifetime_days * DAY)
    directory = root / name
    directory.mkdir()
    cert, key = leaf.write(directory, "server", (pki.inter,))
    with start(directory, cert, key, **options) as ports:
        yield Served(ports, leaf)


@pytest.fixture(scope="module")
def postfix(pki: PKI, daemon_root: Path) -> Iterator[Served]:
    yield from _serve(pki, daemon_root, "postfix", 31, daemons.postfix, hostname=HOST)


@pytest.fixture(scope="module")
def dovecot(pki: PKI, daemon_root: Path) -> Iterator[Served]:
    yield from _serve(pki, daemon_root, "dovecot", 32, daemons.dovecot)


@pytest.fixture(scope="module")
def postgresql(pki: PKI, daemon_root: Path) -> Iterator[Served]:
    yield from _serve(pki, daemon_root, "postgresql", 33, daemons.postgresql)


@pytest.fixture(scope="module")
def mariadb(pki: PKI, daemon_root: Path) -> Iterator[Served]:
    yield from _serve(pki, daemon_root, "mariadb", 34, daemons.mariadb)


@pytest.fixture(scope="module")
def slapd(pki: PKI, daemon_root: Path) -> Iterator[Served]:
    yield from _serve(pki, daemon_root, "slapd", 35, daemons.slapd)


@pytest.fixture(scope="module")
def vsftpd(pki: PKI, daemon_root: Path) -> Iterator[Served]:
    yield from _serve(pki, daemon_root, "vsftpd", 36, daemons.vsftpd)


@pytest.fixture(scope="module")
def prosody(pki: PKI, daemon_root: Path) -> Iterator[Served]:
    yield from _serve(pki, daemon_root, "prosody", 37, daemons.prosody, hostname=HOST)


@pytest.fixture(scope="module")
def scripted_nntp(pki: PKI, daemon_root: Path) -> Iterator[Served]:
    yield from _serve(pki, daemon_root, "nntp", 38, dialogue.nntp)


# --- exporters ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def starttls_config(pki: PKI, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One module per STARTTLS protocol, named after it, trusting the test root."""
    def module(protocol: str, timeout: str = "5s") -> dict[str, object]:
        return {"prober": "tcp", "timeout": timeout, "tls_config": {"ca_file": str(pki.root_file)},
                "tcp": {"starttls": protocol}}

    modules = {protocol: module(protocol) for protocol in starttls.DIALOGUES}
    modules["smtp-fast"] = module("smtp", timeout="1s")
    path = tmp_path_factory.mktemp("starttls-config") / "config.yml"
    path.write_text(yaml.safe_dump({"modules": modules}))
    return path


@pytest.fixture(scope="module")
def starttls_exporter(starttls_config: Path) -> Exporter:
    return Exporter(str(starttls_config))


@pytest.fixture(scope="module")
def default_exporter() -> Exporter:
    """The exporter with its embedded default config (system trust store).

    Built once: each module loads the system trust store, which takes a while.
    """
    return Exporter(None)


@pytest.fixture
async def starttls_client(starttls_exporter: Exporter) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(make_app(starttls_exporter))) as client:
        yield client


@pytest.fixture
async def default_client(default_exporter: Exporter) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(make_app(default_exporter))) as client:
        yield client


def assert_leaf(samples: Samples, leaf: Cert) -> None:
    assert samples.get("ssl_cert_not_after_timestamp_seconds", position="0", serial=leaf.serial) == leaf.not_after


# --- every protocol against a real server ---------------------------------------------------

REAL_SERVERS = [  # (STARTTLS protocol, server fixture, listener)
    ("smtp", "postfix", "smtp"),
    ("imap", "dovecot", "imap"),
    ("pop3", "dovecot", "pop3"),
    ("sieve", "dovecot", "sieve"),
    ("ftp", "vsftpd", "ftp"),
    ("postgres", "postgresql", "postgres"),
    ("mysql", "mariadb", "mysql"),
    ("ldap", "slapd", "ldap"),
    ("xmpp", "prosody", "xmpp"),
    ("xmpp-server", "prosody", "xmpp-server"),
    ("nntp", "scripted_nntp", "nntp"),
]


@pytest.mark.parametrize(("protocol", "server", "listener"), REAL_SERVERS, ids=[c[0] for c in REAL_SERVERS])
async def test_starttls_against_real_server(starttls_client, request, protocol, server, listener) -> None:
    served: Served = request.getfixturevalue(server)
    s = await probe(starttls_client, f"127.0.0.1:{served.ports[listener]}", module=protocol, hostname=HOST)
    assert s.errors() == set()
    assert s.get("ssl_probe_success") == 1
    assert s.get("ssl_handshake_success") == 1
    assert s.get("ssl_chain_valid") == 1 and s.get("ssl_hostname_valid") == 1
    assert_leaf(s, served.leaf)
    assert s.get("ssl_probe_phase_duration_seconds", phase="starttls") is not None


async def test_debug_log_shows_the_dialogue(starttls_client, postfix: Served) -> None:
    response = await starttls_client.get("/probe", params={
        "target": f"127.0.0.1:{postfix.ports['smtp']}", "module": "smtp", "hostname": HOST, "debug": "true"})
    text = await response.text()
    for line in (f"S: 220 {HOST} ESMTP Postfix", f"C: EHLO {starttls.CLIENT_NAME}", "S: 250-STARTTLS",
                 "C: STARTTLS", "S: 220 2.0.0 Ready to start TLS", "server ready for the TLS handshake"):
        assert line in text, line


# --- the embedded default modules -----------------------------------------------------------

EMBEDDED = {  # module: (STARTTLS protocol or None for implicit TLS, default port)
    "smtp": ("smtp", 25), "submission": ("smtp", 587), "imap": ("imap", 143), "pop3": ("pop3", 110),
    "ftp": ("ftp", 21), "postgres": ("postgres", 5432), "mysql": ("mysql", 3306), "ldap": ("ldap", 389),
    "xmpp": ("xmpp", 5222), "xmpp-server": ("xmpp-server", 5269), "nntp": ("nntp", 119), "sieve": ("sieve", 4190),
    "smtps": (None, 465), "imaps": (None, 993), "pop3s": (None, 995), "ldaps": (None, 636), "ftps": (None, 990),
}


def test_embedded_modules_speak_the_right_protocol_on_the_right_port() -> None:
    modules = load_default().modules
    assert set(EMBEDDED) <= set(modules), f"missing from the embedded config: {set(EMBEDDED) - set(modules)}"
    assert {name: (modules[name].tcp.starttls, modules[name].default_port) for name in EMBEDDED} == EMBEDDED


EMBEDDED_AGAINST_SERVERS = [  # (embedded module, server fixture, listener)
    ("smtp", "postfix", "smtp"), ("submission", "postfix", "smtp"), ("smtps", "postfix", "smtps"),
    ("imap", "dovecot", "imap"), ("imaps", "dovecot", "imaps"), ("pop3", "dovecot", "pop3"),
    ("pop3s", "dovecot", "pop3s"), ("sieve", "dovecot", "sieve"), ("ftp", "vsftpd", "ftp"),
    ("ftps", "vsftpd", "ftps"), ("postgres", "postgresql", "postgres"), ("mysql", "mariadb", "mysql"),
    ("ldap", "slapd", "ldap"), ("ldaps", "slapd", "ldaps"), ("xmpp", "prosody", "xmpp"),
    ("xmpp-server", "prosody", "xmpp-server"), ("nntp", "scripted_nntp", "nntp"),
]


@pytest.mark.parametrize(("module", "server", "listener"), EMBEDDED_AGAINST_SERVERS,
                         ids=[c[0] for c in EMBEDDED_AGAINST_SERVERS])
async def test_embedded_module_gets_the_certificate(default_client, request, module, server, listener) -> None:
    served: Served = request.getfixturevalue(server)
    s = await probe(default_client, f"127.0.0.1:{served.ports[listener]}", module=module, hostname=HOST)
    # The test root is not in the system trust store: the chain fails, the data is there.
    assert s.errors() == {("verify", "unknown_issuer")}
    assert s.get("ssl_probe_success") == 0
    assert s.get("ssl_handshake_success") == 1
    assert s.get("ssl_chain_valid") == 0 and s.get("ssl_hostname_valid") == 1
    assert_leaf(s, served.leaf)


# --- servers that do not go ahead -----------------------------------------------------------

SMTP_GREETING = Send(b"220 mx.example.test ESMTP\r\n")
IMAP_GREETING = Send(b"* OK IMAP4rev1 ready\r\n")
POP3_GREETING = Send(b"+OK POP3 ready\r\n")
PG_SSL_REQUEST = bytes.fromhex("0000000804d2162f")  # length 8, code 80877103
LDAP_START_TLS = bytes.fromhex("301d02010177188016") + b"1.3.6.1.4.1.1466.20037"
XMPP_HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
               b"xmlns:stream='http://etherx.jabber.org/streams' from='example.test' id='x' version='1.0'>")


def mysql_handshake(capabilities: int) -> bytes:
    """A HandshakeV10 packet (sequence 0) offering ``capabilities``."""
    payload = (b"\x0a" + b"8.0.36-test\x00" + (7).to_bytes(4, "little") + b"abcdefgh\x00"
               + (capabilities & 0xFFFF).to_bytes(2, "little") + b"\x21" + b"\x02\x00"
               + (capabilities >> 16).to_bytes(2, "little") + b"\x15" + bytes(10) + b"ijklmnopqrst\x00"
               + b"caching_sha2_password\x00")
    return len(payload).to_bytes(3, "little") + b"\x00" + payload


def mysql_error(code: int, message: bytes) -> bytes:
    payload = b"\xff" + code.to_bytes(2, "little") + message
    return len(payload).to_bytes(3, "little") + b"\x00" + payload


def ldap_extended_response(result_code: int, diagnostic: bytes) -> bytes:
    fields = b"\x0a\x01" + bytes([result_code]) + b"\x04\x00" + b"\x04" + bytes([len(diagnostic)]) + diagnostic
    body = b"\x02\x01\x01" + b"\x78" + bytes([len(fields)]) + fields
    return b"\x30" + bytes([len(body)]) + body


REFUSALS = [  # (id, protocol, script, reason)
    ("smtp-no-starttls-capability", "smtp",
     [SMTP_GREETING, Expect(b"EHLO "), Send(b"250-mx.example.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")],
     "starttls_unsupported"),
    ("smtp-starttls-refused", "smtp",
     [SMTP_GREETING, Expect(b"EHLO "), Send(b"250-mx.example.test\r\n250 STARTTLS\r\n"), Expect(b"STARTTLS"),
      Send(b"454 4.7.0 TLS not available due to local problem\r\n")],
     "starttls_refused"),
    ("smtp-greeting-refused", "smtp", [Send(b"554 5.3.2 mx.example.test no SMTP service here\r\n")],
     "starttls_refused"),
    ("smtp-closed-after-greeting", "smtp", [SMTP_GREETING, Expect(b"EHLO "), Close()], "closed"),
    ("imap-not-imap", "imap", [Send(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")], "starttls_protocol"),
    ("imap-no-starttls-capability", "imap",
     [IMAP_GREETING, Expect(b"a1 CAPABILITY"), Send(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\na1 OK done\r\n")],
     "starttls_unsupported"),
    ("imap-starttls-refused", "imap",
     [IMAP_GREETING, Expect(b"a1 CAPABILITY"), Send(b"* CAPABILITY IMAP4rev1 STARTTLS\r\na1 OK done\r\n"),
      Expect(b"a2 STARTTLS"), Send(b"a2 NO TLS is not configured\r\n")],
     "starttls_refused"),
    ("pop3-no-stls-capability", "pop3",
     [POP3_GREETING, Expect(b"CAPA"), Send(b"+OK\r\nUSER\r\nUIDL\r\n.\r\n")], "starttls_unsupported"),
    ("pop3-stls-refused", "pop3",
     [POP3_GREETING, Expect(b"CAPA"), Send(b"+OK\r\nSTLS\r\n.\r\n"), Expect(b"STLS"), Send(b"-ERR not now\r\n")],
     "starttls_refused"),
    ("ftp-auth-tls-not-implemented", "ftp",
     [Send(b"220 ftp.example.test\r\n"), Expect(b"AUTH TLS"), Send(b"502 Command not implemented.\r\n")],
     "starttls_unsupported"),
    ("nntp-starttls-refused", "nntp",
     [Send(b"200 news ready\r\n"), Expect(b"CAPABILITIES"), Send(b"101 list\r\nVERSION 2\r\nSTARTTLS\r\n.\r\n"),
      Expect(b"STARTTLS"), Send(b"580 Can not initiate TLS negotiation\r\n")],
     "starttls_refused"),
    ("sieve-no-starttls-capability", "sieve",
     [Send(b'"IMPLEMENTATION" "Example"\r\n"SASL" "PLAIN"\r\n"VERSION" "1.0"\r\nOK "ready"\r\n')],
     "starttls_unsupported"),
    ("postgres-ssl-off", "postgres", [ExpectBytes(PG_SSL_REQUEST), Send(b"N")], "starttls_unsupported"),
    ("postgres-not-postgres", "postgres", [ExpectBytes(PG_SSL_REQUEST), Send(b"H")], "starttls_protocol"),
    ("mysql-no-client-ssl", "mysql", [Send(mysql_handshake(0xF7FF & ~0x0800))], "starttls_unsupported"),
    ("mysql-host-not-allowed", "mysql", [Send(mysql_error(1130, b"Host '10.1.2.3' is not allowed to connect"))],
     "starttls_refused"),
    ("ldap-start-tls-unknown", "ldap",
     [ExpectBytes(LDAP_START_TLS), Send(ldap_extended_response(2, b"unsupported extended operation"))],
     "starttls_unsupported"),
    ("ldap-start-tls-unavailable", "ldap",
     [ExpectBytes(LDAP_START_TLS), Send(ldap_extended_response(52, b"Could not initialize TLS"))],
     "starttls_refused"),
    ("ldap-huge-message", "ldap", [ExpectBytes(LDAP_START_TLS), Send(b"\x30\x84\x7f\xff\xff\xff")], "oversized"),
    ("xmpp-no-starttls-feature", "xmpp",
     [Send(XMPP_HEADER + b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
           b"<mechanism>PLAIN</mechanism></mechanisms></stream:features>")],
     "starttls_unsupported"),
    ("xmpp-starttls-failure", "xmpp",
     [Send(XMPP_HEADER + b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
           b"</stream:features>"),
      Send(b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>")],
     "starttls_refused"),
    ("xmpp-host-unknown", "xmpp",
     [Send(XMPP_HEADER + b"<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
           b"</stream:error></stream:stream>")],
     "starttls_refused"),
]


@pytest.mark.parametrize(("protocol", "script", "reason"), [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS])
async def test_server_that_does_not_go_ahead(starttls_client, protocol, script, reason) -> None:
    with dialogue.serve_script(*script) as (port, server):
        s = await probe(starttls_client, f"127.0.0.1:{port}", module=protocol, hostname=HOST)
    assert server.mismatches == []  # the probe said what the protocol expects
    assert s.errors() == {("starttls", reason)}
    assert s.get("ssl_probe_success") == 0
    assert s.get("ssl_handshake_success") == 0
    assert s.series("ssl_cert_not_after_timestamp_seconds") == []


async def test_stalled_dialogue_ends_at_the_module_deadline(starttls_client) -> None:
    with dialogue.serve_script(SMTP_GREETING, Expect(b"EHLO ")) as (port, _server):
        started = time.monotonic()
        s = await probe(starttls_client, f"127.0.0.1:{port}", module="smtp-fast", hostname=HOST)
        elapsed = time.monotonic() - started
    assert s.errors() == {("starttls", "timeout")}
    assert s.get("ssl_probe_success") == 0
    assert 1.0 <= s.get("ssl_probe_duration_seconds") < 1.3
    assert elapsed < 1.5


async def test_megabyte_greeting_line_is_cut_short(starttls_client) -> None:
    greeting = Send(b"* OK " + b"x" * 1_000_000 + b"\r\n")
    with dialogue.serve_script(greeting) as (port, _server):
        s = await probe(starttls_client, f"127.0.0.1:{port}", module="imap", hostname=HOST)
    assert s.errors() == {("starttls", "oversized")}
    # Stopped after at most the stream's 64 KiB buffer, long before the 5 s deadline.
    assert s.get("ssl_probe_duration_seconds") < 1
