"""Revocation: OCSP (openssl ocsp as the responder), CRLs (a local HTTP server), stapling
(nginx with ssl_stapling_file), each answer verified; and the handshake that asks for a
staple, compared with the standard one on the same servers.

Every scenario asserts values: statuses and reasons, next-update timestamps equal to the
answer's nextUpdate, the probe's success, and that certificate metrics survive.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from ssl_exporter import config, lru, prepare, revocation, stapling, tls
from ssl_exporter.der import tlv
from ssl_exporter.errors import classify
from ssl_exporter.probers import PROBERS
from ssl_exporter.probers.base import run_probe
from ssl_exporter.server import Exporter, make_app
from ssl_exporter.targets import parse_target
from tests.conftest import Samples, probe, serve_exporter
from tests.pki import DAY, NOW, Cert, make_cert, make_root
from tests.servers import ocsp as rev
from tests.servers import pytls
from tests.servers.nginx import Site, run_nginx

HOST = "www.example.test"


@dataclass
class RevPKI:
    dir: Path
    root: Cert
    inter: Cert

    @property
    def root_file(self) -> Path:
        return self.dir / "root.pem"


@pytest.fixture(scope="module")
def rpki(tmp_path_factory: pytest.TempPathFactory) -> RevPKI:
    directory = tmp_path_factory.mktemp("revpki")
    root = make_root("Revocation Root")
    inter = rev.issue(root, "Revocation Intermediate", ca=True, not_after=NOW + 1000 * DAY)
    (directory / "root.pem").write_bytes(root.pem)
    return RevPKI(directory, root, inter)


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    prepare.PROCESS_CACHES.revocation.clear()


@asynccontextmanager
async def exporter_client(tmp_path: Path, modules: dict[str, dict[str, Any]]) -> AsyncIterator[TestClient]:
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump({"modules": modules}))
    async with serve_exporter(path) as client:
        yield client


def module(rpki: RevPKI, timeout: str = "5s", **extra: Any) -> dict[str, Any]:
    return {"prober": "tcp", "timeout": timeout, "tls_config": {"ca_file": str(rpki.root_file)}, **extra}


async def probe_chain(tmp_path: Path, rpki: RevPKI, leaf: Cert, chain: tuple[Cert, ...] | None = None,
                      **modules: dict[str, Any]) -> dict[str, Samples]:
    """Serve ``leaf`` + ``chain`` with the Python TLS server; probe it once with each module."""
    cert_path, key_path = leaf.write(tmp_path, "leaf", chain if chain is not None else (rpki.inter,))
    out = {}
    async with exporter_client(tmp_path, modules) as client:
        with pytls.tls_server(cert_path, key_path) as (port, _server):
            for name in modules:
                out[name] = await probe(client, f"127.0.0.1:{port}", hostname=HOST, module=name)
    return out


def status(s: Samples, position: str, method: str) -> tuple[str, str]:
    series = [labels for labels in s.series("ssl_revocation_status_info")
              if labels["position"] == position and labels["method"] == method]
    assert len(series) == 1, series
    return series[0]["status"], series[0]["reason"]


def assert_cert_metrics_intact(s: Samples, leaf: Cert) -> None:
    assert s.get("ssl_cert_not_after_timestamp_seconds", position="0", serial=leaf.serial) == leaf.not_after
    assert s.get("ssl_handshake_success") == 1
    assert s.get("ssl_chain_valid") == 1


# --- OCSP against openssl ocsp -------------------------------------------------------------


async def test_ocsp_good_with_next_update_from_the_responder(tmp_path: Path, rpki: RevPKI) -> None:
    port = rev.free_port()
    leaf = rev.issue(rpki.inter, HOST, dns=(HOST,), ocsp_url=f"http://127.0.0.1:{port}/")
    with rev.openssl_responder(tmp_path / "ocsp", rpki.inter, rpki.inter, [rev.Entry(leaf)], port=port) as r:
        s = (await probe_chain(tmp_path, rpki, leaf, ocsp=module(rpki, revocation={"methods": ["ocsp"]})))["ocsp"]
        answer = r.last_response()
    assert s.get("ssl_probe_success") == 1
    assert s.errors() == set()
    assert status(s, "0", "ocsp") == ("good", "")
    assert s.get("ssl_cert_revoked", position="0", method="ocsp") == 0
    assert answer.next_update_utc is not None
    assert s.get("ssl_ocsp_next_update_timestamp_seconds", position="0",
                 method="ocsp") == answer.next_update_utc.timestamp()
    # The intermediate is on the verified path too; it names no responder: unknown, and the
    # 1/0 gauge is absent rather than 0-as-good.
    assert status(s, "1", "ocsp") == ("unknown", "no_responder")
    assert s.get("ssl_cert_revoked", position="1", method="ocsp") is None
    assert s.get("ssl_ocsp_stapled") is None  # stapling was not requested
    assert_cert_metrics_intact(s, leaf)
    assert s.get("ssl_probe_phase_duration_seconds", phase="revocation") is not None


async def test_ocsp_revoked_fails_the_probe_unless_not_enforced(tmp_path: Path, rpki: RevPKI) -> None:
    port = rev.free_port()
    leaf = rev.issue(rpki.inter, HOST, dns=(HOST,), ocsp_url=f"http://127.0.0.1:{port}/")
    revoked_at = NOW - 2 * DAY
    entries = [rev.Entry(leaf, revoked_at=revoked_at, reason="keyCompromise")]
    with rev.openssl_responder(tmp_path / "ocsp", rpki.inter, rpki.inter, entries, port=port):
        out = await probe_chain(
            tmp_path, rpki, leaf,
            enforced=module(rpki, revocation={"methods": ["ocsp"]}),
            lenient=module(rpki, revocation={"methods": ["ocsp"], "enforce": False}))
    s = out["enforced"]
    assert s.get("ssl_probe_success") == 0
    assert s.errors() == {("verify", "revoked")}
    assert status(s, "0", "ocsp") == ("revoked", "")
    assert s.get("ssl_revocation_status_info", position="0", method="ocsp", status="revoked",
                 revocation_reason="key_compromise") == 1
    assert s.get("ssl_cert_revoked", position="0", method="ocsp") == 1
    assert s.get("ssl_cert_revocation_timestamp_seconds", position="0", method="ocsp") == revoked_at.timestamp()
    assert_cert_metrics_intact(s, leaf)  # a revoked certificate still shows its dates
    lenient = out["lenient"]
    assert lenient.get("ssl_probe_success") == 1
    assert lenient.errors() == {("verify", "revoked")}  # reported, not enforced
    assert lenient.get("ssl_cert_revoked", position="0", method="ocsp") == 1


async def test_ocsp_responder_does_not_know_the_certificate(tmp_path: Path, rpki: RevPKI) -> None:
    port = rev.free_port()
    leaf = rev.issue(rpki.inter, HOST, dns=(HOST,), ocsp_url=f"http://127.0.0.1:{port}/")
    other = rev.issue(rpki.inter, "other")
    with rev.openssl_responder(tmp_path / "ocsp", rpki.inter, rpki.inter, [rev.Entry(other)], port=port):
        s = (await probe_chain(tmp_path, rpki, leaf, m=module(rpki, revocation={"methods": ["ocsp"]})))["m"]
    assert status(s, "0", "ocsp") == ("unknown", "responder_unknown")
    assert s.get("ssl_cert_revoked", position="0", method="ocsp") is None
    assert s.get("ssl_probe_success") == 1  # unknown is reported, never enforced


async def test_ocsp_signed_by_an_impostor_with_the_issuers_name(tmp_path: Path, rpki: RevPKI) -> None:
    port = rev.free_port()
    leaf = rev.issue(rpki.inter, HOST, dns=(HOST,), ocsp_url=f"http://127.0.0.1:{port}/")
    impostor = make_cert("Revocation Intermediate", ca=True)  # same name, another key
    with rev.openssl_responder(tmp_path / "ocsp", rpki.inter, impostor, [rev.Entry(leaf)], port=port) as r:
        s = (await probe_chain(tmp_path, rpki, leaf, m=module(rpki, revocation={"methods": ["ocsp"]})))["m"]
        answer = r.last_response()
    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD  # what it claims...
    assert status(s, "0", "ocsp") == ("unknown", "bad_signature")  # ...is not believed
    assert s.get("ssl_ocsp_next_update_timestamp_seconds", position="0", method="ocsp") is None


async def test_ocsp_delegated_responder_needs_the_ocsp_signing_usage(tmp_path: Path, rpki: RevPKI) -> None:
    port = rev.free_port()
    leaf = rev.issue(rpki.inter, HOST, dns=(HOST,), ocsp_url=f"http://127.0.0.1:{port}/")
    delegated = rev.responder_cert(rpki.inter, "Delegated Responder")
    with rev.openssl_responder(tmp_path / "ok", rpki.inter, delegated, [rev.Entry(leaf)], port=port):
        good = (await probe_chain(tmp_path, rpki, leaf, m=module(rpki, revocation={"methods": ["ocsp"]})))["m"]
    assert status(good, "0", "ocsp") == ("good", "")

    prepare.PROCESS_CACHES.revocation.clear()
    no_eku = rev.responder_cert(rpki.inter, "Not A Responder", ocsp_signing=False)
    with rev.openssl_responder(tmp_path / "no-eku", rpki.inter, no_eku, [rev.Entry(leaf)], port=port):
        bad = (await probe_chain(tmp_path, rpki, leaf, m=module(rpki, revocation={"methods": ["ocsp"]})))["m"]
    assert status(bad, "0", "ocsp") == ("unknown", "bad_signature")

    # A responder with the right usage but certified by another CA is not authorized either.
    prepare.PROCESS_CACHES.revocation.clear()
    foreign = rev.responder_cert(make_root("Foreign Root"), "Foreign Responder")
    with rev.openssl_responder(tmp_path / "foreign", rpki.inter, foreign, [rev.Entry(leaf)], port=port):
        other = (await probe_chain(tmp_path, rpki, leaf, m=module(rpki, revocation={"methods": ["ocsp"]})))["m"]
    assert status(other, "0", "ocsp") == ("unknown", "bad_signature")


async def test_ocsp_intermediate_is_checked_against_its_own_issuer(tmp_path: Path, rpki: RevPKI) -> None:
    root_port, inter_port = rev.free_port(), rev.free_port()
    inter = rev.issue(rpki.root, "Checked Intermediate", ca=True, ocsp_url=f"http://127.0.0.1:{root_port}/")
    leaf = rev.issue(inter, HOST, dns=(HOST,), ocsp_url=f"http://127.0.0.1:{inter_port}/")
    revoked_at = NOW - DAY
    with (rev.openssl_responder(tmp_path / "root", rpki.root, rpki.root,
                                [rev.Entry(inter, revoked_at=revoked_at, reason="cACompromise")], port=root_port),
          rev.openssl_responder(tmp_path / "inter", inter, inter, [rev.Entry(leaf)], port=inter_port)):
        s = (await probe_chain(tmp_path, rpki, leaf, (inter,), m=module(rpki, revocation={"methods": ["ocsp"]})))["m"]
    assert status(s, "0", "ocsp") == ("good", "")
    assert status(s, "1", "ocsp") == ("revoked", "")
    assert s.get("ssl_revocation_status_info", position="1", method="ocsp", status="revoked",
                 revocation_reason="ca_compromise") == 1
    assert s.get("ssl_probe_success") == 0  # a revoked intermediate breaks the chain too
    assert s.errors() == {("verify", "revoked")}


# --- OCSP answers openssl cannot be made to give ---------------------------------------------


async def test_ocsp_stale_answer_and_answer_about_another_certificate(tmp_path: Path, rpki: RevPKI) -> None:
    with rev.http_server() as server:
        stale_leaf = rev.issue(rpki.inter, HOST, dns=(HOST,), ocsp_url=server.url("/stale"))
        other_leaf = rev.issue(rpki.inter, HOST, dns=(HOST,), ocsp_url=server.url("/other"))
        server.routes["/stale"] = rev.ocsp_response(stale_leaf, rpki.inter, this_update=NOW - 3 * DAY,
                                                    next_update=NOW - DAY)
        server.routes["/other"] = rev.ocsp_response(stale_leaf, rpki.inter)  # good, but about another serial
        stale = (await probe_chain(tmp_path, rpki, stale_leaf, m=module(rpki, revocation={"methods": ["ocsp"]})))["m"]
        other = (await probe_chain(tmp_path, rpki, other_leaf, m=module(rpki, revocation={"methods": ["ocsp"]})))["m"]
    assert status(stale, "0", "ocsp") == ("unknown", "stale")
    assert status(other, "0", "ocsp") == ("unknown", "no_match")
    assert stale.get("ssl_ocsp_next_update_timestamp_seconds", position="0", method="ocsp") is None


async def test_verified_answers_are_cached_until_next_update(tmp_path: Path, rpki: RevPKI) -> None:
    with rev.http_server() as server:
        leaf = rev.issue(rpki.inter, HOST, dns=(HOST,), ocsp_url=server.url("/ocsp"))
        server.routes["/ocsp"] = rev.ocsp_response(leaf, rpki.inter, next_update=NOW + 2 * DAY)
        out = await probe_chain(tmp_path, rpki, leaf, a=module(rpki, revocation={"methods": ["ocsp"]}),
                                b=module(rpki, revocation={"methods": ["ocsp"]}))
    assert server.requests == ["/ocsp"]  # the second probe asked nobody
    for s in out.values():
        assert status(s, "0", "ocsp") == ("good", "")
        assert s.get("ssl_ocsp_next_update_timestamp_seconds", position="0",
                     method="ocsp") == (NOW + 2 * DAY).timestamp()


async def test_oversized_answer_is_not_read(tmp_path: Path, rpki: RevPKI) -> None:
    with rev.http_server() as server:
        leaf = rev.issue(rpki.inter, HOST, dns=(HOST,), ocsp_url=server.url("/big"))
        server.routes["/big"] = b"\x30" * (revocation.MAX_OCSP_BYTES + 1)
        s = (await probe_chain(tmp_path, rpki, leaf, m=module(rpki, revocation={"methods": ["ocsp"]})))["m"]
    assert status(s, "0", "ocsp") == ("unknown", "fetch_failed")


async def test_dead_responder_costs_nothing_but_its_status(tmp_path: Path, rpki: RevPKI) -> None:
    with pytls.refused_port() as port:
        leaf = rev.issue(rpki.inter, HOST, dns=(HOST,), ocsp_url=f"http://127.0.0.1:{port}/",
                         crl_url=f"http://127.0.0.1:{port}/ca.crl")
        s = (await probe_chain(tmp_path, rpki, leaf, m=module(rpki, revocation={"methods": ["ocsp", "crl"]})))["m"]
    assert status(s, "0", "ocsp") == ("unknown", "fetch_failed")
    assert status(s, "0", "crl") == ("unknown", "fetch_failed")
    assert s.get("ssl_probe_success") == 1
    assert s.errors() == set()
    assert_cert_metrics_intact(s, leaf)


async def test_silent_responder_costs_one_bounded_probe(tmp_path: Path, rpki: RevPKI) -> None:
    with pytls.serve(pytls.silent) as port:
        leaf = rev.issue(rpki.inter, HOST, dns=(HOST,), ocsp_url=f"http://127.0.0.1:{port}/",
                         crl_url=f"http://127.0.0.1:{port}/ca.crl")
        begin = time.monotonic()
        s = (await probe_chain(tmp_path, rpki, leaf, m=module(rpki, "1.5s",
                                                              revocation={"methods": ["ocsp", "crl"]})))["m"]
        elapsed = time.monotonic() - begin
    assert elapsed < 1.5 + 1.0  # one probe's deadline, plus the test's own set-up
    assert s.get("ssl_probe_duration_seconds") < 1.5
    assert status(s, "0", "ocsp") == ("unknown", "timeout")
    assert status(s, "0", "crl") == ("unknown", "timeout")
    # The probe did not time out: its certificate data and verdict are all there.
    assert s.get("ssl_probe_success") == 1
    assert s.errors() == set()
    assert_cert_metrics_intact(s, leaf)


# --- what is not fetched ------------------------------------------------------------------


async def test_unverified_chain_fetches_nothing(tmp_path: Path, rpki: RevPKI) -> None:
    # An untrusted chain's AIA and CRL locations come from whoever answered: a hostile server
    # could aim them at internal addresses and read the outcome back. Nothing is fetched.
    untrusted = make_root("Untrusted Root")
    with rev.http_server() as server:
        inter = rev.issue(untrusted, "Untrusted Intermediate", ca=True, ocsp_url=server.url("/inter-ocsp"),
                          crl_url=server.url("/root.crl"))
        leaf = rev.issue(inter, HOST, dns=(HOST,), ocsp_url=server.url("/ocsp"), crl_url=server.url("/inter.crl"))
        server.routes["/ocsp"] = rev.ocsp_response(leaf, inter)
        server.routes["/inter.crl"] = rev.crl(inter)
        s = (await probe_chain(tmp_path, rpki, leaf, (inter,),
                               m=module(rpki, revocation={"methods": ["ocsp", "crl"]})))["m"]
    assert server.requests == []
    assert s.get("ssl_chain_valid") == 0
    for position in ("0", "1"):
        for method in ("ocsp", "crl"):
            assert status(s, position, method) == ("unknown", "unverified_chain")
    assert s.get("ssl_cert_not_after_timestamp_seconds", position="0", serial=leaf.serial) == leaf.not_after


async def test_responder_hosts_refused_by_the_target_policy_are_not_fetched(tmp_path: Path, rpki: RevPKI) -> None:
    leaf = rev.issue(rpki.inter, HOST, dns=(HOST,), ocsp_url="http://169.254.169.254/latest/meta-data",
                     crl_url="http://crl.internal.test/ca.crl")
    policy = {"deny_link_local": True, "deny_hosts": ["*.internal.test"]}
    s = (await probe_chain(tmp_path, rpki, leaf, m=module(rpki, "2s", target_policy=policy,
                                                          revocation={"methods": ["ocsp", "crl"]})))["m"]
    assert status(s, "0", "ocsp") == ("unknown", "refused_by_policy")
    assert status(s, "0", "crl") == ("unknown", "refused_by_policy")
    assert s.get("ssl_probe_success") == 1
    assert_cert_metrics_intact(s, leaf)


# --- CRLs ---------------------------------------------------------------------------------


async def test_crl_good_revoked_and_intermediate(tmp_path: Path, rpki: RevPKI) -> None:
    with rev.http_server() as server:
        inter = rev.issue(rpki.root, "CRL Intermediate", ca=True, crl_url=server.url("/root.crl"))
        good = rev.issue(inter, HOST, dns=(HOST,), crl_url=server.url("/inter.crl"))
        bad = rev.issue(inter, HOST, dns=(HOST,), crl_url=server.url("/inter.crl"))
        revoked_at = NOW - 3 * DAY
        server.routes["/inter.crl"] = rev.crl(inter, [(bad, revoked_at, x509.ReasonFlags.superseded)],
                                              next_update=NOW + 2 * DAY)
        server.routes["/root.crl"] = rev.crl(rpki.root, next_update=NOW + 7 * DAY, pem=True)
        m = module(rpki, revocation={"methods": ["crl"]})
        ok = (await probe_chain(tmp_path, rpki, good, (inter,), m=m))["m"]
        revoked = (await probe_chain(tmp_path, rpki, bad, (inter,), m=m))["m"]
    assert status(ok, "0", "crl") == ("good", "")
    assert ok.get("ssl_cert_revoked", position="0", method="crl") == 0
    assert ok.get("ssl_crl_next_update_timestamp_seconds", position="0") == (NOW + 2 * DAY).timestamp()
    assert status(ok, "1", "crl") == ("good", "")  # the intermediate, from the root's (PEM) CRL
    assert ok.get("ssl_crl_next_update_timestamp_seconds", position="1") == (NOW + 7 * DAY).timestamp()
    assert ok.get("ssl_probe_success") == 1
    assert status(revoked, "0", "crl") == ("revoked", "")
    assert revoked.get("ssl_cert_revocation_timestamp_seconds", position="0", method="crl") == revoked_at.timestamp()
    assert revoked.get("ssl_revocation_status_info", position="0", method="crl", status="revoked",
                       revocation_reason="superseded") == 1
    assert revoked.get("ssl_probe_success") == 0
    assert revoked.errors() == {("verify", "revoked")}
    # One download of each CRL served both probes.
    assert sorted(server.requests) == ["/inter.crl", "/root.crl"]


async def test_crl_stale_and_wrong_signer_are_unknown(tmp_path: Path, rpki: RevPKI) -> None:
    with rev.http_server() as server:
        stale_leaf = rev.issue(rpki.inter, HOST, dns=(HOST,), crl_url=server.url("/stale.crl"))
        forged_leaf = rev.issue(rpki.inter, HOST, dns=(HOST,), crl_url=server.url("/forged.crl"))
        garbage_leaf = rev.issue(rpki.inter, HOST, dns=(HOST,), crl_url=server.url("/garbage.crl"))
        server.routes["/stale.crl"] = rev.crl(rpki.inter, last_update=NOW - 10 * DAY, next_update=NOW - DAY)
        impostor = make_cert("Revocation Intermediate", ca=True)
        server.routes["/forged.crl"] = rev.crl(rpki.inter, signer=impostor)  # the issuer's name, not its key
        server.routes["/garbage.crl"] = b"not a CRL"
        m = module(rpki, revocation={"methods": ["crl"]})
        stale = (await probe_chain(tmp_path, rpki, stale_leaf, m=m))["m"]
        forged = (await probe_chain(tmp_path, rpki, forged_leaf, m=m))["m"]
        garbage = (await probe_chain(tmp_path, rpki, garbage_leaf, m=m))["m"]
    assert status(stale, "0", "crl") == ("unknown", "stale")
    assert stale.get("ssl_crl_next_update_timestamp_seconds", position="0") is None
    assert status(forged, "0", "crl") == ("unknown", "bad_signature")
    assert status(garbage, "0", "crl") == ("unknown", "bad_response")
    for s in (stale, forged, garbage):
        assert s.get("ssl_probe_success") == 1


async def test_crl_file_from_the_module(tmp_path: Path, rpki: RevPKI) -> None:
    leaf = rev.issue(rpki.inter, HOST, dns=(HOST,))  # names no CRL
    crl_path = tmp_path / "inter.crl"
    crl_path.write_bytes(rev.crl(rpki.inter, [(leaf, NOW - DAY, None)], pem=True))
    m = module(rpki, revocation={"methods": ["crl"], "crl_files": [str(crl_path)]})
    s = (await probe_chain(tmp_path, rpki, leaf, m=m, plain=module(rpki, revocation={"methods": ["crl"]})))
    assert status(s["m"], "0", "crl") == ("revoked", "")
    assert s["m"].get("ssl_probe_success") == 0
    assert status(s["plain"], "0", "crl") == ("unknown", "no_responder")


def test_crl_file_is_reread_when_it_changes(tmp_path: Path, rpki: RevPKI) -> None:
    leaf = rev.issue(rpki.inter, HOST)
    path = tmp_path / "inter.crl"
    path.write_bytes(rev.crl(rpki.inter))
    files = revocation.CRLFiles([str(path)])
    assert files.crls()[0].get_revoked_certificate_by_serial_number(leaf.cert.serial_number) is None
    path.write_bytes(rev.crl(rpki.inter, [(leaf, NOW, None)]))
    later = time.time() + 5
    import os

    os.utime(path, (later, later))
    assert files.crls()[0].get_revoked_certificate_by_serial_number(leaf.cert.serial_number) is not None


def test_a_crl_file_that_is_a_fifo_holds_no_thread(tmp_path: Path, rpki: RevPKI) -> None:
    # CRL files are read in asyncio's default executor, shared with getaddrinfo: a FIFO
    # there held a thread for good, at every probe.
    import os

    from tests.conftest import call_beside_fifo

    path = tmp_path / "inter.crl"
    path.write_bytes(rev.crl(rpki.inter))
    files = revocation.CRLFiles([str(path)])
    path.unlink()
    os.mkfifo(path)
    later = time.time() + 5
    os.utime(path, (later, later))
    crls = call_beside_fifo(path, files.crls)
    assert [c.issuer for c in crls] == [rpki.inter.cert.subject]  # the last good contents are kept
    with pytest.raises(revocation.CRLFileError, match="not a regular file"):
        call_beside_fifo(path, revocation.CRLFiles, [str(path)])


# --- stapling with nginx -------------------------------------------------------------------


async def test_stapling_with_nginx(tmp_path: Path, rpki: RevPKI) -> None:
    good_leaf = rev.issue(rpki.inter, HOST, dns=(HOST,), must_staple=True)
    revoked_leaf = rev.issue(rpki.inter, HOST, dns=(HOST,))
    plain_leaf = rev.issue(rpki.inter, HOST, dns=(HOST,))
    entries = [rev.Entry(good_leaf), rev.Entry(revoked_leaf, revoked_at=NOW - DAY, reason="keyCompromise")]
    good_der = rev.openssl_response(tmp_path / "staple-good", rpki.inter, rpki.inter, entries, good_leaf, nmin=90)
    revoked_der = rev.openssl_response(tmp_path / "staple-revoked", rpki.inter, rpki.inter, entries, revoked_leaf)
    (tmp_path / "good.der").write_bytes(good_der)
    (tmp_path / "revoked.der").write_bytes(revoked_der)
    sites = {}
    for name, leaf, staple in (("good", good_leaf, "good.der"), ("revoked", revoked_leaf, "revoked.der"),
                               ("plain", plain_leaf, None)):
        cert_path, key_path = leaf.write(tmp_path, name, (rpki.inter,))
        directives = ["ssl_protocols TLSv1.2 TLSv1.3;"]  # nginx before 1.23.4 leaves TLS 1.3 off
        if staple is not None:
            directives += ["ssl_stapling on;", f"ssl_stapling_file {tmp_path / staple};"]
        sites[name] = Site(cert_path, key_path, directives)
    modules = {"stapling": module(rpki, revocation={"methods": ["stapling"]}),
               "tls12": module(rpki, revocation={"methods": ["stapling"]},
                               tls_config={"ca_file": str(rpki.root_file), "max_version": "TLS12"})}
    async with exporter_client(tmp_path, modules) as client:
        with run_nginx(tmp_path / "nginx", sites) as ports:
            good = await probe(client, f"127.0.0.1:{ports['good']}", hostname=HOST, module="stapling")
            good12 = await probe(client, f"127.0.0.1:{ports['good']}", hostname=HOST, module="tls12")
            revoked = await probe(client, f"127.0.0.1:{ports['revoked']}", hostname=HOST, module="stapling")
            plain = await probe(client, f"127.0.0.1:{ports['plain']}", hostname=HOST, module="stapling")
    next_update = ocsp.load_der_ocsp_response(good_der).next_update_utc
    assert next_update is not None
    for s, version in ((good, "TLS 1.3"), (good12, "TLS 1.2")):
        assert s.get("ssl_probe_success") == 1
        assert s.get("ssl_ocsp_stapled") == 1
        assert status(s, "0", "stapling") == ("good", "")
        assert s.get("ssl_ocsp_next_update_timestamp_seconds", position="0",
                     method="stapling") == next_update.timestamp()
        assert s.series("ssl_tls_version_info") == [{"version": version}]
        assert s.series("ssl_cert_info")[0]["must_staple"] == "true"
        assert_cert_metrics_intact(s, good_leaf)
    assert status(revoked, "0", "stapling") == ("revoked", "")
    assert revoked.get("ssl_cert_revoked", position="0", method="stapling") == 1
    assert revoked.get("ssl_probe_success") == 0
    assert revoked.errors() == {("verify", "revoked")}
    assert plain.get("ssl_ocsp_stapled") == 0
    assert status(plain, "0", "stapling") == ("unknown", "not_stapled")
    assert plain.get("ssl_cert_revoked", position="0", method="stapling") is None
    assert plain.get("ssl_probe_success") == 1


# --- the stapling handshake is the same handshake ---------------------------------------------


async def _both_handshakes(port: int, context: ssl.SSLContext, pyopenssl_context: Any,
                           name: str | None) -> tuple[Any, Any]:
    outcomes = []
    for run in (lambda r, w: tls.handshake(r, w, context, name),
                lambda r, w: stapling.handshake(r, w, pyopenssl_context, name)):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            outcomes.append(await run(reader, writer))
        except Exception as exc:  # compared as the probe would classify it
            outcomes.append(classify(exc, "handshake"))
        finally:
            writer.close()
    return outcomes[0], outcomes[1]


@pytest.mark.parametrize("scenario", ["valid", "expired", "unknown_ca", "self_signed", "no_intermediate",
                                      "tls12", "wrong_host"])
async def test_stapling_handshake_matches_the_standard_one(tmp_path: Path, rpki: RevPKI, scenario: str) -> None:
    other_root = make_root("Unrelated Root")
    other_inter = other_root.issue("Unrelated Intermediate", ca=True)
    leaf, chain, server_args = {
        "valid": (rpki.inter.issue(HOST, dns=(HOST,)), (rpki.inter,), {}),
        "expired": (rpki.inter.issue(HOST, dns=(HOST,), not_before=NOW - 30 * DAY, not_after=NOW - DAY),
                    (rpki.inter,), {"max_version": ssl.TLSVersion.TLSv1_2}),
        "unknown_ca": (other_inter.issue(HOST, dns=(HOST,)), (other_inter,), {}),
        "self_signed": (make_cert(HOST, dns=(HOST,)), (), {}),
        "no_intermediate": (rpki.inter.issue(HOST, dns=(HOST,)), (), {}),
        "tls12": (rpki.inter.issue(HOST, dns=(HOST,)), (rpki.inter,), {"max_version": ssl.TLSVersion.TLSv1_2}),
        "wrong_host": (rpki.inter.issue("other.test", dns=("other.test",)), (rpki.inter,), {}),
    }[scenario]
    tls_config = config.TLSConfig(ca_file=str(rpki.root_file))
    context = tls.build_client_context(tls_config)
    pyopenssl_context = stapling.build_context(tls_config)
    cert_path, key_path = leaf.write(tmp_path, scenario, chain)
    with pytls.tls_server(cert_path, key_path, **server_args) as (port, _server):
        standard, stapled = await _both_handshakes(port, context, pyopenssl_context, HOST)
    assert isinstance(stapled, stapling.StapledOutcome)
    assert stapled.ocsp_staple == b""  # the Python server does not staple
    for field in ("presented", "verified", "verify_code", "verify_message", "version", "cipher", "dropped_certs"):
        assert getattr(stapled, field) == getattr(standard, field), field
    if standard.verify_code is not None:
        assert stapled.tried == standard.tried


@pytest.mark.parametrize("handler", [pytls.plain_http, pytls.garbage])
async def test_stapling_handshake_errors_classify_alike(rpki: RevPKI, handler: Any) -> None:
    tls_config = config.TLSConfig(ca_file=str(rpki.root_file))
    with pytls.serve(handler) as port:
        standard, stapled = await _both_handshakes(port, tls.build_client_context(tls_config),
                                                   stapling.build_context(tls_config), HOST)
    assert stapled.reason == standard.reason == "tls_protocol"


async def test_stapling_handshake_refused_version_classifies_alike(tmp_path: Path, rpki: RevPKI) -> None:
    leaf = rpki.inter.issue(HOST, dns=(HOST,))
    cert_path, key_path = leaf.write(tmp_path, "v12", (rpki.inter,))
    tls_config = config.TLSConfig(ca_file=str(rpki.root_file), min_version="TLS13")
    with pytls.tls_server(cert_path, key_path, max_version=ssl.TLSVersion.TLSv1_2) as (port, _server):
        standard, stapled = await _both_handshakes(port, tls.build_client_context(tls_config),
                                                   stapling.build_context(tls_config), HOST)
    assert stapled.reason == standard.reason == "protocol_version"


def test_stapling_context_offers_what_the_standard_context_offers(rpki: RevPKI) -> None:
    from OpenSSL import SSL

    tls_config = config.TLSConfig(ca_file=str(rpki.root_file))
    standard = [c["name"] for c in tls.build_client_context(tls_config).get_ciphers()]
    assert SSL.Connection(stapling.build_context(tls_config), None).get_cipher_list() == standard


# --- verification units --------------------------------------------------------------------


def test_ocsp_answer_within_clock_skew_is_fresh(rpki: RevPKI) -> None:
    leaf = rev.issue(rpki.inter, HOST)
    now = time.time()
    just_past = rev.ocsp_response(leaf, rpki.inter, this_update=NOW - DAY,
                                  next_update=dt.datetime.fromtimestamp(now - 60, dt.UTC))
    assert revocation.evaluate_ocsp(just_past, leaf.cert, rpki.inter.cert, now).status == "good"
    future = rev.ocsp_response(leaf, rpki.inter, this_update=dt.datetime.fromtimestamp(now + 3600, dt.UTC))
    assert revocation.evaluate_ocsp(future, leaf.cert, rpki.inter.cert, now).reason == "stale"
    assert revocation.evaluate_ocsp(b"junk", leaf.cert, rpki.inter.cert, now).reason == "bad_response"
    unauthorized = ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
    der = unauthorized.public_bytes(serialization.Encoding.DER)
    assert revocation.evaluate_ocsp(der, leaf.cert, rpki.inter.cert, now).reason == "bad_response"


def test_caches_are_bounded_in_bytes_and_expire() -> None:
    """One shared LRU helper (ssl_exporter.lru), bounded in bytes as well as entries, on the
    one --cache.max-bytes budget (64 MiB of CRLs at the default)."""
    cache = prepare.PROCESS_CACHES.revocation
    assert (cache.results.max_bytes, cache.results.max_entries) == (lru.share("ocsp"), 10_000)
    assert (cache.crls.max_bytes, cache.crls.max_entries) == (lru.share("crls"), 32)
    assert {cache.results, cache.crls} <= set(lru.caches())  # resized with the budget
    assert int(lru.DEFAULT_BUDGET * lru.SHARES["crls"]) == 64 * 2**20
    verdict = revocation.Verdict("good", next_update=100.0)
    cache.keep(("k", 1, "ocsp"), verdict, now=50.0)
    assert cache.results.get(("k", 1, "ocsp"), now=99.0) == verdict
    assert cache.results.get(("k", 1, "ocsp"), now=100.0) is None  # expired at its nextUpdate
    cache.keep(("k", 2, "ocsp"), revocation.Verdict("good"), now=50.0)
    assert ("k", 2, "ocsp") not in cache.results  # no nextUpdate, no cache_until: asked again


def test_module_without_revocation_is_unchanged() -> None:
    cfg = prepare.load_text("modules:\n  m: {prober: tcp}\n", source="test")
    m = cfg.modules["m"]
    assert m.revocation is None and m.stapling_context is None and m.legacy_versions == ()
    assert "revocation" not in config.module_dict(m)


def test_revocation_config_defaults_and_redaction(tmp_path: Path) -> None:
    cfg = prepare.load_text("modules:\n  m:\n    revocation:\n", source="test")
    rev_config = cfg.modules["m"].revocation
    assert rev_config is not None
    assert rev_config.methods == ("ocsp", "crl") and rev_config.enforce is True
    assert cfg.modules["m"].stapling_context is None  # only stapling modules use pyOpenSSL
    assert config.module_dict(cfg.modules["m"])["revocation"] == {"methods": ["ocsp", "crl"], "enforce": True}
    staple = prepare.load_text("modules:\n  m: {revocation: {methods: [stapling], enforce: false}}\n", source="t")
    assert staple.modules["m"].stapling_context is not None


# --- shared, bounded CRL downloads (issue 20 item 5) ------------------------------------------


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _children(der: bytes) -> list[bytes]:
    """The DER elements inside one SEQUENCE, each with its header."""
    _, body, _ = tlv(der)
    out = []
    while body:
        _, _, rest = tlv(body)
        out.append(body[: len(body) - len(rest)])
        body = rest
    return out


def crl_without_next_update(issuer: Cert, revoked: list[tuple[Cert, dt.datetime, Any]] = ()) -> bytes:  # type: ignore[assignment]
    """A CRL that omits nextUpdate (cryptography will not build one): a normal one, with the
    field cut out of its signed part and the part signed again."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    outer = _children(rev.crl(issuer, revoked))
    tbs = _children(outer[0])
    # version, signature, issuer, thisUpdate, nextUpdate, ...: drop nextUpdate (a UTCTime)
    assert tbs[4][0] == 0x17
    signed = _der(0x30, b"".join(tbs[:4] + tbs[5:]))
    signature = issuer.key.sign(signed, ec.ECDSA(hashes.SHA256()))
    der = _der(0x30, signed + outer[1] + _der(0x03, b"\x00" + signature))
    assert x509.load_der_x509_crl(der).next_update_utc is None
    return der


async def test_concurrent_probes_share_one_crl_download(tmp_path: Path, rpki: RevPKI) -> None:
    """40 probes needing the same slow CRL made 40 parallel downloads; now one, shared."""
    release = __import__("threading").Event()
    with rev.http_server() as server:
        # Forty names: identical probes are shared already (probers.base), these are not.
        leaf = rev.issue(rpki.inter, HOST, dns=("*.example.test",), crl_url=server.url("/slow.crl"))
        body = rev.crl(rpki.inter, next_update=NOW + DAY)

        def slow(_request: bytes) -> bytes:
            release.wait(20)
            return body

        server.routes["/slow.crl"] = slow
        cert_path, key_path = leaf.write(tmp_path, "leaf", (rpki.inter,))
        async with exporter_client(tmp_path, {"m": module(rpki, "10s", revocation={"methods": ["crl"]})}) as client:
            with pytls.tls_server(cert_path, key_path) as (port, tls_server):
                probes = [asyncio.ensure_future(probe(client, f"127.0.0.1:{port}", hostname=f"n{i}.example.test",
                                                      module="m")) for i in range(40)]
                deadline = time.monotonic() + 20
                while not (len(tls_server.peers) == 40 and server.requests):  # all handshakes, a download
                    assert time.monotonic() < deadline, (len(tls_server.peers), server.requests)
                    await asyncio.sleep(0.01)
                # Each probe would now send its own request; with sharing, none but the first comes.
                # Give the 39 others a bounded while to show up (they did, before).
                deadline = time.monotonic() + 2
                while len(server.requests) < 40 and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                release.set()
                results = await asyncio.gather(*probes)
    assert server.requests == ["/slow.crl"]
    for s in results:
        assert s.get("ssl_probe_success") == 1
        assert status(s, "0", "crl") == ("good", "")
        assert s.get("ssl_crl_next_update_timestamp_seconds", position="0") == (NOW + DAY).timestamp()


async def test_a_crl_without_next_update_is_kept_for_a_documented_time(tmp_path: Path, rpki: RevPKI) -> None:
    """It was downloaded and verified again on every probe."""
    with rev.http_server() as server:
        url = server.url("/no-next-update.crl")
        leaves = [rev.issue(rpki.inter, HOST, dns=(HOST,), crl_url=url) for _ in range(3)]
        server.routes["/no-next-update.crl"] = crl_without_next_update(rpki.inter, [(leaves[2], NOW - DAY, None)])
        m = module(rpki, revocation={"methods": ["crl"]})
        before = time.time()
        results = [(await probe_chain(tmp_path, rpki, leaf, m=m))["m"] for leaf in leaves]
    assert server.requests == ["/no-next-update.crl"]  # one download for three certificates
    assert [status(s, "0", "crl") for s in results] == [("good", ""), ("good", ""), ("revoked", "")]
    assert results[0].get("ssl_crl_next_update_timestamp_seconds", position="0") is None
    key = (url, None, None)
    ttl = revocation.CRL_TTL_WITHOUT_NEXT_UPDATE
    assert ttl == 900
    assert prepare.PROCESS_CACHES.revocation.crls.get(key, now=before + ttl - 60) is not None
    assert prepare.PROCESS_CACHES.revocation.crls.get(key, now=time.time() + ttl + 1) is None


async def test_crls_held_are_bounded_in_bytes(tmp_path: Path, rpki: RevPKI, monkeypatch: pytest.MonkeyPatch) -> None:
    from ssl_exporter.lru import ByteLRU

    with rev.http_server() as server:
        leaves = [rev.issue(rpki.inter, HOST, dns=(HOST,), crl_url=server.url(f"/{i}.crl")) for i in range(3)]
        for i in range(3):
            server.routes[f"/{i}.crl"] = rev.crl(rpki.inter, next_update=NOW + DAY)
        size = 2 * len(server.routes["/0.crl"])  # type: ignore[arg-type]
        budget = ByteLRU(2 * size + size // 2)  # room for two
        monkeypatch.setattr(prepare.PROCESS_CACHES.revocation, "crls", budget)
        m = module(rpki, revocation={"methods": ["crl"]})
        for leaf in leaves:
            assert status((await probe_chain(tmp_path, rpki, leaf, m=m))["m"], "0", "crl") == ("good", "")
    held = [path for path in ("/0.crl", "/1.crl", "/2.crl") if (server.url(path), None, None) in budget]
    assert held == ["/1.crl", "/2.crl"]  # the least recently used went first
    assert budget.bytes == sum(2 * len(server.routes[path]) for path in held) <= budget.max_bytes  # type: ignore[arg-type]


async def test_revocation_urls_given_by_name_are_checked_on_their_addresses(tmp_path: Path, rpki: RevPKI) -> None:
    """A name that resolves into a denied range was fetched: only names and literal addresses
    were checked. Now every resolved address is, before connecting."""
    with rev.http_server() as server:
        port = server.base.rpartition(":")[2]
        urls = [f"http://localhost:{port}/a.crl", f"http://0x7f000001:{port}/b.crl"]  # written two ways
        ocsp_url = f"http://localhost:{port}/ocsp"
        leaves = [rev.issue(rpki.inter, HOST, dns=(HOST,), crl_url=url, ocsp_url=ocsp_url) for url in urls]
        for path in ("/a.crl", "/b.crl"):
            server.routes[path] = rev.crl(rpki.inter, next_update=NOW + DAY)
        denied = module(rpki, target_policy={"deny_cidrs": ["127.0.0.0/8"]}, revocation={"methods": ["crl", "ocsp"]})
        allowed = module(rpki, revocation={"methods": ["crl"]})
        for url, leaf in zip(urls, leaves, strict=True):
            cert_path, key_path = leaf.write(tmp_path, "leaf", (rpki.inter,))
            tls_server = pytls.TLSServer(cert_path, key_path)
            async with exporter_client(tmp_path, {"denied": denied, "allowed": allowed}) as client:
                with pytls.serve(tls_server.handle, host="::1") as tls_port:  # the probe itself is allowed
                    s = await probe(client, f"[::1]:{tls_port}", hostname=HOST, module="denied")
                    assert status(s, "0", "crl") == ("unknown", "refused_by_policy")
                    assert status(s, "0", "ocsp") == ("unknown", "refused_by_policy")
                    debug = await (await client.get("/probe", params={
                        "target": f"[::1]:{tls_port}", "hostname": HOST, "module": "denied", "debug": "true"})).text()
                    assert "resolves to an address that is in modules.denied.target_policy.deny_cidrs" in debug
                    # A resolved address is not shown; a literal one (0x7f000001 is read as
                    # 127.0.0.1, targets.py) is, as for any target written as an address.
                    assert ("target 127.0.0.1 is in" in debug) == ("0x7f000001" in url)
                    assert s.get("ssl_probe_success") == 1
                    assert server.requests == []  # refused before connecting
                    s = await probe(client, f"[::1]:{tls_port}", hostname=HOST, module="allowed")
                    assert status(s, "0", "crl") == ("good", "")  # the same URL, without the policy
                    server.requests.clear()


async def test_a_configured_crl_file_is_verified_once_not_on_every_probe(
        tmp_path: Path, rpki: RevPKI, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each probe checked the file's signature again on the event loop (0.27 s for 8 MB)."""
    verified: list[str] = []
    real = revocation.LoadedCRL._verify

    def counted(self: revocation.LoadedCRL, issuer: x509.Certificate) -> bool:
        verified.append(issuer.subject.rfc4514_string())
        return real(self, issuer)

    monkeypatch.setattr(revocation.LoadedCRL, "_verify", counted)
    leaves = [rev.issue(rpki.inter, HOST, dns=(HOST,)) for _ in range(3)]
    crl_path = tmp_path / "inter.crl"
    crl_path.write_bytes(rev.crl(rpki.inter, [(leaves[2], NOW - DAY, None)]))
    m = module(rpki, revocation={"methods": ["crl"], "crl_files": [str(crl_path)]})
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump({"modules": {"m": m}}))
    async with serve_exporter(path) as client:
        results = []
        for i, leaf in enumerate(leaves):
            cert_path, key_path = leaf.write(tmp_path, f"leaf{i}", (rpki.inter,))
            with pytls.tls_server(cert_path, key_path) as (port, _):
                results.append(await probe(client, f"127.0.0.1:{port}", hostname=HOST, module="m"))
    assert [status(s, "0", "crl") for s in results] == [("good", ""), ("good", ""), ("revoked", "")]
    assert verified == ["CN=Revocation Intermediate"]


# --- who owns the caches (issue 14) --------------------------------------------------------


async def test_each_caches_instance_remembers_for_itself(tmp_path: Path, rpki: RevPKI) -> None:
    """Revocation answers, CRLs and parsed certificates live in a prepare.Caches, not in module
    globals: a probe with a fresh Caches downloads the CRL and parses the chain again, a
    second probe with the same one is answered from it."""
    with rev.http_server() as server:
        url = server.url("/owned.crl")
        server.routes["/owned.crl"] = rev.crl(rpki.inter, next_update=NOW + DAY)
        leaf = rev.issue(rpki.inter, HOST, dns=(HOST,), crl_url=url)
        cert_path, key_path = leaf.write(tmp_path, "leaf", (rpki.inter,))
        text = yaml.safe_dump({"modules": {"m": module(rpki, revocation={"methods": ["crl"]})}})
        first, second = prepare.Caches(), prepare.Caches()
        with pytls.tls_server(cert_path, key_path) as (port, _server):
            for caches, downloads in ((first, 1), (first, 1), (second, 2)):
                prepared = prepare.load_text(text, "c.yml", caches=caches).modules["m"]
                result = await run_probe(PROBERS["tcp"], prepared, parse_target(f"127.0.0.1:{port}", 443), HOST, 5.0)
                assert [(c.position, c.status) for c in result.revocation if c.method == "crl"][0] == ("0", "good")
                assert server.requests == ["/owned.crl"] * downloads
    for caches in (first, second):
        assert len(caches.revocation.crls) == 1 and caches.revocation.in_flight == {}
        assert caches.presented.peek(leaf.der) is not None
    assert first.presented.peek(leaf.der) is not second.presented.peek(leaf.der)
    assert leaf.der not in prepare.PROCESS_CACHES.presented and len(prepare.PROCESS_CACHES.revocation.crls) == 0


async def test_the_process_caches_survive_a_reload(tmp_path: Path, rpki: RevPKI) -> None:
    """The exporter hands prepare.PROCESS_CACHES to every load: after a reload a verified
    answer is still remembered, and the CRL is not downloaded again."""
    with rev.http_server() as server:
        url = server.url("/kept.crl")
        server.routes["/kept.crl"] = rev.crl(rpki.inter, next_update=NOW + DAY)
        leaf = rev.issue(rpki.inter, HOST, dns=(HOST,), crl_url=url)
        cert_path, key_path = leaf.write(tmp_path, "leaf", (rpki.inter,))
        config_path = tmp_path / "config.yml"
        config_path.write_text(yaml.safe_dump({"modules": {"m": module(rpki, revocation={"methods": ["crl"]})}}))
        exporter = Exporter(str(config_path))
        before = exporter.config
        async with TestClient(TestServer(make_app(exporter, enable_lifecycle=True))) as client:
            with pytls.tls_server(cert_path, key_path) as (port, _server):
                assert status(await probe(client, f"127.0.0.1:{port}", hostname=HOST, module="m"), "0", "crl") == \
                    ("good", "")
                assert (await client.post("/-/reload")).status == 200
                assert exporter.config is not before
                assert exporter.config.modules["m"].caches is exporter.caches is prepare.PROCESS_CACHES
                assert status(await probe(client, f"127.0.0.1:{port}", hostname=HOST, module="m"), "0", "crl") == \
                    ("good", "")
    assert server.requests == ["/kept.crl"]
