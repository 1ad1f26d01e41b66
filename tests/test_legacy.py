"""Old and weak servers (issue 19): OpenSSL's cipher list, the fallback handshake, reasons.

Real nginx on loopback serves the legacy material: RSA key exchange only, TLS 1.0 only,
TLS 1.1 only, DHE with a 1024-bit group only, an SHA-1-signed leaf, a 512-bit RSA leaf.
cryptography refuses to make the last two, so the openssl CLI makes them.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import textwrap
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from ssl_exporter import chainverify, config, errors, stapling, tls
from tests.conftest import PKI, Samples, probe, serve_exporter
from tests.pki import DAY, NOW, Cert
from tests.servers import pytls
from tests.servers.nginx import Site, run_nginx

HOST = "legacy.example.test"
SECLEVEL0 = "ssl_ciphers DEFAULT:@SECLEVEL=0;"  # nginx must load and offer the old material


@dataclass
class Leaf:
    """A leaf whose key may be one cryptography would not make (pki.Cert holds EC keys)."""

    cert: x509.Certificate
    key_pem: bytes

    @property
    def serial(self) -> str:
        return f"{self.cert.serial_number:x}"

    @property
    def not_after(self) -> float:
        return self.cert.not_valid_after_utc.timestamp()

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path, name: str, chain: tuple[Cert, ...]) -> tuple[Path, Path]:
        cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
        cert_path.write_bytes(self.pem + b"".join(c.pem for c in chain))
        key_path.write_bytes(self.key_pem)
        return cert_path, key_path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def _rsa_key(directory: Path, bits: int) -> bytes:
    if bits >= 1024:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    path = directory / f"rsa{bits}.key"  # cryptography makes no RSA key under 1024 bits
    _openssl("genrsa", "-out", path, bits)
    return path.read_bytes()


def rsa_leaf(issuer: Cert, directory: Path, *, bits: int = 2048, not_after=None) -> Leaf:
    key_pem = _rsa_key(directory, bits)
    key = serialization.load_pem_private_key(key_pem, None)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
            .issuer_name(issuer.cert.subject)
            .public_key(key.public_key())  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - DAY)
            .not_valid_after(not_after or NOW + 30 * DAY)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
            .sign(issuer.key, hashes.SHA256()))
    return Leaf(cert, key_pem)


def sha1_leaf(issuer: Cert, directory: Path) -> Leaf:
    """An RSA leaf signed with ecdsa-with-SHA1 by ``issuer`` (cryptography refuses SHA-1)."""
    key_pem = _rsa_key(directory, 2048)
    files = {name: directory / f"sha1-{name}" for name in ("key", "csr", "ca.crt", "ca.key", "ext", "crt")}
    files["key"].write_bytes(key_pem)
    files["ca.crt"].write_bytes(issuer.pem)
    files["ca.key"].write_bytes(issuer.key_pem)
    files["ext"].write_text(f"subjectAltName=DNS:{HOST}\n")
    _openssl("req", "-new", "-key", files["key"], "-subj", f"/CN={HOST}", "-out", files["csr"])
    _openssl("x509", "-req", "-in", files["csr"], "-CA", files["ca.crt"], "-CAkey", files["ca.key"],
             "-set_serial", "0x5a1", "-sha1", "-days", "30", "-extfile", files["ext"], "-out", files["crt"])
    return Leaf(x509.load_pem_x509_certificate(files["crt"].read_bytes()), key_pem)


@dataclass
class Legacy:
    ports: dict[str, int]
    leaves: dict[str, Leaf | Cert]


@pytest.fixture(scope="module")
def legacy(pki: PKI, tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("legacy")
    dhparam = directory / "dh1024.pem"
    _openssl("dhparam", "-dsaparam", "-out", dhparam, "1024")
    ec_leaf = pki.inter.issue(HOST, dns=(HOST,), not_after=NOW + 40 * DAY)
    leaves: dict[str, Leaf | Cert] = {
        "rsa_kx": rsa_leaf(pki.inter, directory),
        "tls10": ec_leaf,
        "tls11": ec_leaf,
        "dhe1024": rsa_leaf(pki.inter, directory),
        "sha1": sha1_leaf(pki.inter, directory),
        "sha1_handshake": rsa_leaf(pki.inter, directory),
        "rsa512": rsa_leaf(pki.inter, directory, bits=512),
        "tls10_rsa512": rsa_leaf(pki.inter, directory, bits=512),
        "tls10_expired": pki.inter.issue(HOST, dns=(HOST,), not_before=NOW - 40 * DAY, not_after=NOW - 2 * DAY),
    }
    directives = {
        "rsa_kx": ["ssl_protocols TLSv1.2;", "ssl_ciphers AES256-GCM-SHA384;"],
        "tls10": ["ssl_protocols TLSv1;", SECLEVEL0],
        "tls11": ["ssl_protocols TLSv1.1;", SECLEVEL0],
        "dhe1024": ["ssl_protocols TLSv1.2;", "ssl_ciphers DHE-RSA-AES256-GCM-SHA384:@SECLEVEL=0;",
                    f"ssl_dhparam {dhparam};"],
        "sha1": ["ssl_protocols TLSv1.2 TLSv1.3;", SECLEVEL0],
        # Signs its key exchange with SHA-1 only, as old stacks do.
        "sha1_handshake": ["ssl_protocols TLSv1.2;", SECLEVEL0, "ssl_conf_command SignatureAlgorithms RSA+SHA1;"],
        "rsa512": ["ssl_protocols TLSv1.2;", SECLEVEL0],
        "tls10_rsa512": ["ssl_protocols TLSv1;", SECLEVEL0],
        "tls10_expired": ["ssl_protocols TLSv1;", SECLEVEL0],
    }
    sites = {name: Site(*leaf.write(directory, name, (pki.inter,)), directives[name])
             for name, leaf in leaves.items()}
    with run_nginx(directory / "nginx", sites) as ports:
        yield Legacy(ports, leaves)


@pytest.fixture(scope="module")
def no_fallback_config(pki: PKI, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "config.yml"
    path.write_text(textwrap.dedent(f"""\
        modules:
          strict:
            prober: tcp
            timeout: 5s
            tls_config: {{ca_file: {pki.root_file}, fallback_handshake: false}}
        """))
    return path


def assert_leaf(s: Samples, leaf: Leaf | Cert, pki: PKI) -> None:
    assert s.get("ssl_cert_not_after_timestamp_seconds", position="0", serial=leaf.serial) == leaf.not_after
    assert s.get("ssl_cert_not_after_timestamp_seconds", position="1", serial=pki.inter.serial) == pki.inter.not_after


def assert_no_certificates(s: Samples) -> None:
    for name in ("ssl_chain_valid", "ssl_hostname_valid", "ssl_cert_not_after_timestamp_seconds",
                 "ssl_verified_chain_expiry_timestamp_seconds", "ssl_fallback_tls_version_info"):
        assert s.series(name) == [], name


# --- 1. OpenSSL's cipher list ---------------------------------------------------------------


async def test_rsa_key_exchange_only_server_is_probed_like_openssl_does(client, legacy: Legacy, pki: PKI) -> None:
    s = await probe(client, f"127.0.0.1:{legacy.ports['rsa_kx']}", hostname=HOST)
    assert s.get("ssl_probe_success") == 1 and s.errors() == set()
    assert s.get("ssl_handshake_success") == 1 and s.get("ssl_fallback_handshake") == 0
    assert s.get("ssl_tls_version_info", version="TLS 1.2") == 1
    assert s.get("ssl_tls_cipher_info", cipher="AES256-GCM-SHA384") == 1
    assert s.get("ssl_chain_valid") == 1 and s.get("ssl_hostname_valid") == 1
    assert_leaf(s, legacy.leaves["rsa_kx"], pki)


def test_probe_offers_openssls_default_list_at_the_default_level() -> None:
    offered = {c["name"] for c in tls.build_client_context(config.TLSConfig()).get_ciphers()}
    reference = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    reference.set_ciphers("DEFAULT:@SECLEVEL=2")
    assert offered == {c["name"] for c in reference.get_ciphers()}
    assert {"AES256-GCM-SHA384", "AES128-SHA", "ECDHE-RSA-AES128-SHA"} <= offered  # RSA kx, SHA-1 CBC
    assert not any("RC4" in name or "NULL" in name for name in offered)


@pytest.mark.parametrize(("site", "expected"), [
    ("rsa_kx", "AES256-GCM-SHA384"),
    ("tls10", "protocol_version"),
    ("dhe1024", "weak_crypto"),
    ("sha1_handshake", "handshake_failure"),
    ("rsa512", "ECDHE-RSA-AES256-GCM-SHA384"),
])
async def test_stapling_handshake_agrees_with_the_standard_one(legacy: Legacy, pki: PKI, site: str,
                                                               expected: str) -> None:
    # The pyOpenSSL handshake (another OpenSSL) offers the same list at the same level.
    tls_config = config.TLSConfig(ca_file=str(pki.root_file))
    outcomes = []
    for run in (lambda r, w: tls.handshake(r, w, tls.build_client_context(tls_config), HOST),
                lambda r, w: stapling.handshake(r, w, stapling.build_context(tls_config), HOST)):
        reader, writer = await asyncio.open_connection("127.0.0.1", legacy.ports[site])
        try:
            outcomes.append(await run(reader, writer))
        except ssl.SSLError as exc:
            outcomes.append(errors.classify(exc, "handshake").reason)
        finally:
            await tls.close_stream(writer)
    standard, stapled = outcomes
    if isinstance(standard, str):
        assert standard == stapled == expected
        return
    assert standard.cipher == stapled.cipher == expected
    assert standard.version == stapled.version == "TLS 1.2"
    assert standard.verify_code == stapled.verify_code
    assert standard.presented == stapled.presented


async def test_stapling_module_falls_back_too(legacy: Legacy, pki: PKI, tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text(textwrap.dedent(f"""\
        modules:
          stapled:
            prober: tcp
            timeout: 5s
            tls_config: {{ca_file: {pki.root_file}}}
            revocation: {{methods: [stapling]}}
        """))
    async with serve_exporter(path) as client:
        s = await probe(client, f"127.0.0.1:{legacy.ports['tls11']}", hostname=HOST, module="stapled")
    assert s.errors() == {("handshake", "protocol_version")}
    assert s.get("ssl_fallback_handshake") == 1 and s.get("ssl_chain_valid") == 1
    assert_leaf(s, legacy.leaves["tls11"], pki)
    assert s.series("ssl_ocsp_stapled") == []  # no revocation checks after a fallback


# --- 2. the fallback handshake ----------------------------------------------------------------


@pytest.mark.parametrize(("site", "reason", "version", "cipher", "server_hello"), [
    ("tls10", "protocol_version", "TLS 1.0", "ECDHE-ECDSA-AES256-SHA", None),
    ("tls11", "protocol_version", "TLS 1.1", "ECDHE-ECDSA-AES256-SHA", None),
    # The ServerHello came before the client refused the DH group: the probe's own
    # handshake has a version and cipher too.
    ("dhe1024", "weak_crypto", "TLS 1.2", "DHE-RSA-AES256-GCM-SHA384", ("TLS 1.2", "DHE-RSA-AES256-GCM-SHA384")),
    ("sha1_handshake", "handshake_failure", "TLS 1.2", "ECDHE-RSA-AES256-GCM-SHA384", None),
])
async def test_policy_failure_still_reads_the_certificates(client, legacy: Legacy, pki: PKI, site: str, reason: str,
                                                           version: str, cipher: str, server_hello) -> None:
    s = await probe(client, f"127.0.0.1:{legacy.ports[site]}", hostname=HOST)
    assert s.errors() == {("handshake", reason)}
    assert s.get("ssl_probe_success") == 0 and s.get("ssl_handshake_success") == 0
    assert s.get("ssl_fallback_handshake") == 1
    assert s.get("ssl_fallback_tls_version_info", version=version) == 1
    assert s.get("ssl_fallback_tls_cipher_info", cipher=cipher) == 1
    assert_leaf(s, legacy.leaves[site], pki)
    assert s.get("ssl_chain_valid") == 1 and s.get("ssl_hostname_valid") == 1
    assert s.get("ssl_verified_chain_expiry_timestamp_seconds") == legacy.leaves[site].not_after
    if server_hello is None:
        assert s.series("ssl_tls_version_info") == [] and s.series("ssl_tls_cipher_info") == []
    else:
        assert s.get("ssl_tls_version_info", version=server_hello[0]) == 1
        assert s.get("ssl_tls_cipher_info", cipher=server_hello[1]) == 1
    assert s.get("ssl_probe_phase_duration_seconds", phase="fallback") > 0


@pytest.mark.parametrize(("site", "key_bits"), [("sha1", "2048"), ("rsa512", "512")])
async def test_weak_certificate_completes_the_handshake_and_fails_verification(
        client, legacy: Legacy, pki: PKI, site: str, key_bits: str) -> None:
    # OpenSSL judges these in verification, which a handshake survives: no fallback needed.
    s = await probe(client, f"127.0.0.1:{legacy.ports[site]}", hostname=HOST)
    assert s.errors() == {("verify", "weak_crypto")}
    assert s.get("ssl_handshake_success") == 1 and s.get("ssl_fallback_handshake") == 0
    assert s.get("ssl_chain_valid") == 0 and s.get("ssl_hostname_valid") == 1
    assert s.series("ssl_verified_chain_expiry_timestamp_seconds") == []
    assert_leaf(s, legacy.leaves[site], pki)
    [leaf_info] = [labels for labels in s.series("ssl_cert_info") if labels["position"] == "0"]
    assert leaf_info["key_bits"] == key_bits
    assert leaf_info["weak_signature"] == ("true" if site == "sha1" else "false")


async def test_fallback_chain_is_judged_at_the_probes_security_level(client, legacy: Legacy, pki: PKI) -> None:
    # The fallback handshake runs at level 0, which accepts a 512-bit key; the verdict is level 2's.
    s = await probe(client, f"127.0.0.1:{legacy.ports['tls10_rsa512']}", hostname=HOST)
    assert s.errors() == {("handshake", "protocol_version"), ("verify", "weak_crypto")}
    assert s.get("ssl_fallback_handshake") == 1 and s.get("ssl_handshake_success") == 0
    assert s.get("ssl_chain_valid") == 0 and s.get("ssl_hostname_valid") == 1
    assert s.series("ssl_verified_chain_expiry_timestamp_seconds") == []
    assert_leaf(s, legacy.leaves["tls10_rsa512"], pki)


async def test_fallback_reports_an_expired_certificate(client, legacy: Legacy, pki: PKI) -> None:
    s = await probe(client, f"127.0.0.1:{legacy.ports['tls10_expired']}", hostname=HOST)
    assert s.errors() == {("handshake", "protocol_version"), ("verify", "expired")}
    assert s.get("ssl_fallback_handshake") == 1 and s.get("ssl_chain_valid") == 0
    assert_leaf(s, legacy.leaves["tls10_expired"], pki)


async def test_fallback_matches_the_name(client, legacy: Legacy) -> None:
    s = await probe(client, f"127.0.0.1:{legacy.ports['tls10']}", hostname="other.example.test")
    assert s.errors() == {("handshake", "protocol_version"), ("verify", "hostname_mismatch")}
    assert s.get("ssl_chain_valid") == 1 and s.get("ssl_hostname_valid") == 0


async def test_fallback_can_be_turned_off(legacy: Legacy, no_fallback_config: Path) -> None:
    async with serve_exporter(no_fallback_config) as client:
        s = await probe(client, f"127.0.0.1:{legacy.ports['tls10']}", hostname=HOST, module="strict")
    assert s.errors() == {("handshake", "protocol_version")}
    assert s.get("ssl_handshake_success") == 0 and s.get("ssl_fallback_handshake") == 0
    assert_no_certificates(s)
    assert s.get("ssl_probe_phase_duration_seconds", phase="fallback") is None


def _counting(handler, connections: list[int]):
    def handle(conn: socket.socket) -> None:
        connections.append(1)
        handler(conn)
    return handle


@pytest.mark.parametrize(("handler", "module", "error"), [
    (pytls.plain_http, "test", ("handshake", "tls_protocol")),
    (pytls.garbage, "test", ("handshake", "tls_protocol")),
    (pytls.silent, "fast", ("handshake", "timeout")),
])
async def test_non_tls_peers_and_timeouts_get_no_fallback(client, handler, module: str, error) -> None:
    connections: list[int] = []
    with pytls.serve(_counting(handler, connections)) as port:
        s = await probe(client, f"127.0.0.1:{port}", module=module)
    assert s.errors() == {error}
    assert s.get("ssl_fallback_handshake") == 0
    assert_no_certificates(s)
    assert len(connections) == 1


async def test_refused_connection_gets_no_fallback(client) -> None:
    with pytls.refused_port() as port:
        s = await probe(client, f"127.0.0.1:{port}")
    assert s.errors() == {("connect", "refused")} and s.get("ssl_fallback_handshake") == 0


_PROTOCOL_VERSION_ALERT = bytes([21, 3, 1, 0, 2, 2, 70])  # fatal protocol_version, TLS 1.0 record


async def test_fallback_ends_within_the_probe_deadline(client) -> None:
    # Refuses the probe's version, then holds the fallback's connection without a word.
    connections: list[int] = []

    def refuse_then_stall(conn: socket.socket) -> None:
        connections.append(1)
        conn.settimeout(10)
        conn.recv(4096)
        if len(connections) == 1:
            conn.sendall(_PROTOCOL_VERSION_ALERT)
        pytls.silent(conn)

    with pytls.serve(refuse_then_stall) as port:
        started = time.monotonic()
        s = await probe(client, f"127.0.0.1:{port}", module="fast")
        elapsed = time.monotonic() - started
    assert len(connections) == 2
    assert s.errors() == {("handshake", "protocol_version")}  # the fallback's timeout is no failure
    assert s.get("ssl_fallback_handshake") == 0
    assert_no_certificates(s)
    assert 0.8 <= s.get("ssl_probe_duration_seconds") < 1.1
    assert elapsed < 1.3


async def test_fallback_sends_no_application_data(client, pki: PKI, tmp_path: Path) -> None:
    leaf = pki.inter.issue(HOST, dns=(HOST,))
    cert_path, key_path = leaf.write(tmp_path, "tls10", (pki.inter,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(cert_path, key_path)
    after_handshake: list[bytes] = []

    def tls10_only(conn: socket.socket) -> None:
        conn.settimeout(5)
        with context.wrap_socket(conn, server_side=True) as server:
            try:
                after_handshake.append(server.recv(4096))  # b"" or a reset: the client left
            except OSError:
                after_handshake.append(b"")

    with pytls.serve(tls10_only) as port:
        s = await probe(client, f"127.0.0.1:{port}", hostname=HOST)
    assert s.get("ssl_fallback_handshake") == 1 and s.get("ssl_chain_valid") == 1
    assert after_handshake == [b""]  # one completed handshake (the fallback's), no data after it


# --- chain verification without a handshake ---------------------------------------------------


@pytest.mark.parametrize("site", ["rsa_kx", "sha1", "rsa512"])
async def test_offline_verification_agrees_with_openssls_handshake(legacy: Legacy, pki: PKI, site: str) -> None:
    context = tls.build_client_context(config.TLSConfig(ca_file=str(pki.root_file)))
    reader, writer = await asyncio.open_connection("127.0.0.1", legacy.ports[site])
    try:
        outcome = await tls.handshake(reader, writer, context, HOST)
    finally:
        await tls.close_stream(writer)
    verdict = chainverify.verify(outcome.presented, str(pki.root_file), context.verify_flags, tls.SECURITY_LEVEL)
    assert verdict is not None
    assert (verdict.verify_code, verdict.verify_message) == (outcome.verify_code, outcome.verify_message)
    assert verdict.verified == outcome.verified
    if outcome.verify_code is not None:
        assert verdict.tried == outcome.tried


def test_offline_verification_reports_the_first_error(pki: PKI) -> None:
    expired = pki.inter.issue(HOST, dns=(HOST,), not_before=NOW - 9 * DAY, not_after=NOW - DAY)
    root = str(pki.root_file)
    verdicts = {
        "valid": chainverify.verify([pki.inter.issue(HOST).der, pki.inter.der], root, 0, 2),
        "expired": chainverify.verify([expired.der, pki.inter.der], root, 0, 2),
        "incomplete": chainverify.verify([expired.der], root, 0, 2),
        "system store": chainverify.verify([pki.inter.issue(HOST).der, pki.inter.der], None, 0, 2),
    }
    assert {name: v.verify_code if v else "unknown" for name, v in verdicts.items()} == {
        "valid": None, "expired": 10, "incomplete": 20, "system store": 20}
    assert verdicts["valid"].verified == [verdicts["valid"].verified[0], pki.inter.der, pki.root.der]
    assert chainverify.verify([b"not DER"], root, 0, 2) is None  # OpenSSL could not read it either
    assert chainverify.verify([], root, 0, 2) is None


# --- 3. reasons -------------------------------------------------------------------------------


def _ssl_error(reason: str) -> ssl.SSLError:
    error = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower().replace('_', ' ')}")
    error.reason = reason  # type: ignore[misc]  # as _ssl sets it
    return error


@pytest.mark.parametrize(("openssl_reason", "reason"), [
    ("DH_KEY_TOO_SMALL", "weak_crypto"),
    ("EE_KEY_TOO_SMALL", "weak_crypto"),
    ("CA_MD_TOO_WEAK", "weak_crypto"),
    ("LEGACY_SIGALG_DISALLOWED_OR_UNSUPPORTED", "weak_crypto"),
    ("TLSV1_ALERT_PROTOCOL_VERSION", "protocol_version"),
    ("UNSUPPORTED_PROTOCOL", "protocol_version"),
    ("VERSION_TOO_LOW", "protocol_version"),
    ("SSLV3_ALERT_HANDSHAKE_FAILURE", "handshake_failure"),
    ("WRONG_VERSION_NUMBER", "tls_protocol"),
    ("SOMETHING_OPENSSL_ADDS_NEXT_YEAR", "tls_error"),
])
def test_handshake_reasons(openssl_reason: str, reason: str) -> None:
    assert errors.classify(_ssl_error(openssl_reason), "handshake").reason == reason


def test_fallback_follows_policy_reasons_only() -> None:
    assert errors.POLICY_REASONS == {"protocol_version", "handshake_failure", "weak_crypto"}
    assert errors.POLICY_REASONS <= set(errors.REASONS)



async def test_chain_verdict_is_unknown_without_the_system_libcrypto(client, legacy: Legacy, pki: PKI,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # As on a Python whose ssl module links OpenSSL statically: unknown is absent, never 0.
    monkeypatch.setattr(chainverify, "_libcrypto", lambda: None)
    s = await probe(client, f"127.0.0.1:{legacy.ports['tls10']}", hostname=HOST)
    assert s.errors() == {("handshake", "protocol_version")}
    assert s.get("ssl_fallback_handshake") == 1
    assert s.series("ssl_chain_valid") == [] and s.series("ssl_verified_chain_expiry_timestamp_seconds") == []
    assert s.get("ssl_hostname_valid") == 1
    assert_leaf(s, legacy.leaves["tls10"], pki)
