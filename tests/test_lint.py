"""Certificate-depth facts (ssl_exporter.lint) and the legacy-TLS-version check.

The weak fixtures (SHA-1 signature, RSA-1024 key) are made with the openssl CLI and served by
``openssl s_server`` at ``@SECLEVEL=0``: the exporter's own OpenSSL refuses them in
verification, and their facts must still be reported from the presented certificate.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from ssl_exporter import lint, metrics
from ssl_exporter.certs import parse_der
from ssl_exporter.result import ProbeResult
from tests.conftest import PKI, Samples, probe, serve_exporter
from tests.pki import DAY, NOW, make_cert
from tests.servers import ocsp as rev

HOST = "www.example.test"


def _sct_list(count: int) -> bytes:
    """A TLS-encoded SignedCertificateTimestampList (RFC 6962 3.3) with ``count`` entries."""
    entries = b""
    for i in range(count):
        sct = (b"\x00" + bytes([i]) * 32 + (1_700_000_000_000 + i).to_bytes(8, "big") + b"\x00\x00"
               + b"\x04\x03" + (8).to_bytes(2, "big") + b"\x30\x06\x02\x01\x01\x02\x01\x01")
        entries += len(sct).to_bytes(2, "big") + sct
    return len(entries).to_bytes(2, "big") + entries


def _sct_extension(count: int) -> x509.UnrecognizedExtension:
    data = _sct_list(count)
    # The extension's value is an OCTET STRING holding the TLS-encoded list.
    return x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2"),
                                      b"\x04" + _der_length(len(data)) + data)


def _der_length(n: int) -> bytes:
    if n < 128:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")  # DER: the shortest long form
    return bytes([0x80 | len(body)]) + body


def test_facts_of_a_modern_leaf(pki: PKI) -> None:
    leaf = rev.issue(pki.inter, HOST, dns=(HOST,), must_staple=True, extra=(_sct_extension(3),),
                     not_before=NOW - DAY, not_after=NOW + 89 * DAY)
    facts = lint.facts(leaf.der)
    assert facts is not None
    assert facts.sct_count == 3
    assert facts.must_staple is True
    assert facts.self_signed is False
    assert facts.weak_signature is False
    assert facts.validity_seconds == 90 * 86400


def test_facts_of_a_plain_and_a_self_signed_leaf(pki: PKI) -> None:
    plain = lint.facts(pki.inter.issue(HOST, dns=(HOST,)).der)
    assert plain is not None
    assert (plain.sct_count, plain.must_staple, plain.self_signed) == (0, False, False)
    own = lint.facts(make_cert(HOST, dns=(HOST,)).der)
    assert own is not None and own.self_signed is True
    assert lint.facts(b"\x30\x03\x02\x01\x01") is None  # not a certificate: no facts, no exception


def test_lint_labels_on_cert_info_and_validity_gauge(pki: PKI) -> None:
    leaf = rev.issue(pki.inter, HOST, dns=(HOST,), must_staple=True, extra=(_sct_extension(2),))
    result = ProbeResult(success=True, duration=0.1, certs=(parse_der(leaf.der), parse_der(pki.root.der)))
    s = Samples(metrics.encode(metrics.probe_families(result), None)[0].decode())
    info = {labels["position"]: labels for labels in s.series("ssl_cert_info")}
    assert (info["0"]["weak_signature"], info["0"]["sct_count"], info["0"]["must_staple"],
            info["0"]["self_signed"]) == ("false", "2", "true", "false")
    assert info["1"]["self_signed"] == "true"
    assert s.get("ssl_cert_validity_period_seconds", position="0") == leaf.not_after - leaf.not_before


# --- weak certificates made by the openssl CLI, served by openssl s_server ---------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def weak_chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("weak")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-subj", "/CN=Weak Test CA", "-days", "30", "-sha256",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=d)
    _openssl("req", "-new", "-newkey", "rsa:1024", "-nodes", "-keyout", "leaf.key", "-subj", f"/CN={HOST}",
             "-out", "leaf.csr", cwd=d)
    (d / "ext.cnf").write_text(f"subjectAltName=DNS:{HOST}\n")
    _openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-sha1", "-days", "30",
             "-out", "leaf.pem", "-extfile", "ext.cnf", cwd=d)
    return d


@contextmanager
def s_server(d: Path, *extra: str) -> Iterator[int]:
    """``openssl s_server`` on 127.0.0.1 (it picks the port and prints it); yields the port."""
    process = subprocess.Popen(
        ["openssl", "s_server", "-accept", "127.0.0.1:0", "-cert", str(d / "leaf.pem"), "-key", str(d / "leaf.key"),
         "-cipher", "DEFAULT:@SECLEVEL=0", *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    found: list[int] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:  # keep draining so s_server never blocks on its output
            match = re.match(rb"ACCEPT .*:(\d+)", line)
            if match and not found:
                found.append(int(match.group(1)))
                ready.set()

    ready = threading.Event()
    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(10), "openssl s_server did not start"
        yield found[0]
    finally:
        process.kill()
        process.wait(10)
        assert process.stdin is not None
        process.stdin.close()
        process.stdout.close()


async def _probe(tmp_path: Path, port: int, modules: dict[str, dict[str, Any]], name: str) -> Samples:
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump({"modules": modules}))
    async with serve_exporter(path) as client:
        return await probe(client, f"127.0.0.1:{port}", hostname=HOST, module=name)


async def test_sha1_rsa1024_facts_are_reported_though_verification_refuses(tmp_path: Path,
                                                                           weak_chain: Path) -> None:
    modules = {"weak": {"prober": "tcp", "timeout": "5s", "tls_config": {"ca_file": str(weak_chain / "ca.pem")}}}
    with s_server(weak_chain) as port:
        s = await _probe(tmp_path, port, modules, "weak")
    assert s.get("ssl_chain_valid") == 0
    assert s.errors() == {("verify", "weak_crypto")}
    info = s.series("ssl_cert_info")[0]
    assert info["signature_algorithm"] == "sha1WithRSAEncryption"
    assert info["key_algorithm"] == "RSA" and info["key_bits"] == "1024"
    assert info["weak_signature"] == "true"
    assert info["self_signed"] == "false"
    assert s.get("ssl_cert_validity_period_seconds", position="0") == 30 * 86400


async def test_legacy_versions_accepted_and_refused(tmp_path: Path, weak_chain: Path) -> None:
    modules = {"legacy": {"prober": "tcp", "timeout": "5s", "legacy_versions": ["TLS10", "TLS11"],
                          "tls_config": {"insecure_skip_verify": True, "ca_file": str(weak_chain / "ca.pem")}},
               "plain": {"prober": "tcp", "timeout": "5s",
                         "tls_config": {"insecure_skip_verify": True, "ca_file": str(weak_chain / "ca.pem")}}}
    with s_server(weak_chain, "-min_protocol", "TLSv1") as port:
        old = await _probe(tmp_path, port, modules, "legacy")
        plain = await _probe(tmp_path, port, modules, "plain")
    assert old.get("ssl_tls_legacy_version_accepted", version="TLS 1.0") == 1
    assert old.get("ssl_tls_legacy_version_accepted", version="TLS 1.1") == 1
    assert old.get("ssl_probe_success") == 1
    assert old.series("ssl_tls_version_info") == [{"version": "TLS 1.3"}]  # the main handshake is unchanged
    assert old.get("ssl_probe_phase_duration_seconds", phase="legacy_versions") is not None
    assert plain.series("ssl_tls_legacy_version_accepted") == []  # not asked: absent
    with s_server(weak_chain, "-min_protocol", "TLSv1.2") as port:
        modern = await _probe(tmp_path, port, modules, "legacy")
    assert modern.get("ssl_tls_legacy_version_accepted", version="TLS 1.0") == 0
    assert modern.get("ssl_tls_legacy_version_accepted", version="TLS 1.1") == 0
    assert modern.get("ssl_probe_success") == 1  # a fact, not a failure
