"""Hostile servers on loopback: every probe ends by its deadline with its documented reason.

Each case runs through the whole app (GET /probe) with the ``fast`` module (1 s deadline),
while a valid probe runs alongside it: the exporter must keep serving. Per probe we also
count the bytes the handshake read (``tls.MAX_HANDSHAKE_BYTES`` bounds them) and the
certificates kept (``tls.MAX_CHAIN_CERTS``). docs/robustness.md lists the same table.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID, ObjectIdentifier

from ssl_exporter import metrics, tls
from ssl_exporter.certs import CertificateError, parse_der
from ssl_exporter.result import ProbeResult
from tests.conftest import PKI, Samples, probe
from tests.pki import DAY, NOW, Cert, make_cert
from tests.servers import hostile, pytls

HOST = "www.example.test"
DEADLINE = 1.0  # the "fast" module's timeout
# Bytes the handshake may read: the cap, plus the one read (16 KiB) that crosses it.
READ_BOUND = tls.MAX_HANDSHAKE_BYTES + 16384


# --- what the probe read ---------------------------------------------------------------------


class _CountingReader:
    def __init__(self, reader: asyncio.StreamReader, counts: list[int]) -> None:
        self._reader = reader
        self._counts = counts
        self._counts.append(0)
        self._index = len(counts) - 1

    async def read(self, n: int = -1) -> bytes:
        data = await self._reader.read(n)
        self._counts[self._index] += len(data)
        return data


@pytest.fixture
def bytes_read(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes each handshake read from its server, in the order the handshakes started."""
    counts: list[int] = []
    original = tls.attempt  # every handshake of the standard library's ssl goes through it

    async def counting_handshake(reader, writer, context, server_name):  # type: ignore[no-untyped-def]
        return await original(_CountingReader(reader, counts), writer, context, server_name)

    monkeypatch.setattr(tls, "attempt", counting_handshake)
    return counts


# --- servers ------------------------------------------------------------------------------


def _pem(der: bytes) -> bytes:
    return b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\n"


def _write_chain(directory: Path, name: str, ders: list[bytes], key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(b"".join(_pem(d) for d in ders))
    key_path.write_bytes(Cert(None, key).key_pem)  # type: ignore[arg-type]
    return cert_path, key_path


@contextmanager
def _tracked(handler: Callable) -> Iterator[tuple[int, threading.Event]]:
    """Serve ``handler``; the event is set once a connection is accepted."""
    accepted = threading.Event()

    def handle(conn):  # type: ignore[no-untyped-def]
        accepted.set()
        handler(conn)

    with pytls.serve(handle) as port:
        yield port, accepted


def _builder_leaf(issuer: Cert, configure: Callable[[x509.CertificateBuilder], x509.CertificateBuilder],
                  dates: tuple[dt.datetime, dt.datetime] | None = None) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = dates or (NOW - DAY, NOW + 90 * DAY)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
    )
    cert = configure(builder).sign(issuer.key, hashes.SHA256())
    return cert.public_bytes(Encoding.DER), key


@dataclass
class Case:
    """A hostile server and what the probe must report about it."""

    server: Callable[[PKI, Path], Callable]  # -> a socket handler
    errors: set[tuple[str, str]]
    handshake_success: float = 0
    max_seconds: float = 0.5  # ends by then; timeouts end at DEADLINE
    checks: Callable[[Samples], None] | None = None
    extra: dict = field(default_factory=dict)


def _raw(handler: Callable) -> Callable[[PKI, Path], Callable]:
    return lambda pki, directory: handler


_ChainMaker = Callable[[PKI], tuple[list[bytes], ec.EllipticCurvePrivateKey]]


def _python_tls(make: _ChainMaker) -> Callable[[PKI, Path], Callable]:
    """A Python ssl server presenting the chain ``make`` returns (leaf first) with its key."""
    def build(pki: PKI, directory: Path) -> Callable:
        ders, key = make(pki)
        cert_path, key_path = _write_chain(directory, "hostile", ders, key)
        return pytls.TLSServer(cert_path, key_path).handle
    return build


def _patched_leaf(**fields: bytes) -> Callable[[PKI], tuple[list[bytes], ec.EllipticCurvePrivateKey]]:
    """A leaf for HOST issued by the trusted intermediate, with TBS fields replaced and
    signed again, so that only the replaced contents are odd."""
    def make(pki: PKI) -> tuple[list[bytes], ec.EllipticCurvePrivateKey]:
        leaf = pki.inter.issue(HOST, dns=(HOST,))
        return [hostile.patch_certificate(leaf.der, pki.inter.key, **fields), pki.inter.der], leaf.key
    return make


def _built_leaf(configure: Callable[[x509.CertificateBuilder], x509.CertificateBuilder],
                dates: tuple[dt.datetime, dt.datetime] | None = None) -> Callable:
    def make(pki: PKI) -> tuple[list[bytes], ec.EllipticCurvePrivateKey]:
        der, key = _builder_leaf(pki.inter, configure, dates)
        return [der, pki.inter.der], key
    return make


def _padded_chain(pki: PKI) -> tuple[list[bytes], ec.EllipticCurvePrivateKey]:
    leaf = pki.inter.issue(HOST, dns=(HOST,))
    pads = [make_cert(f"pad {i}").der for i in range(198)]
    return [leaf.der, pki.inter.der, *pads], leaf.key


def _deep_chain(pki: PKI) -> tuple[list[bytes], ec.EllipticCurvePrivateKey]:
    cas = [pki.root]
    for i in range(199):
        cas.append(cas[-1].issue(f"CA level {i}", ca=True))
    leaf = cas[-1].issue(HOST, dns=(HOST,))
    return [leaf.der, *(c.der for c in reversed(cas[1:]))], leaf.key


def _many_sans(count: int) -> Callable:
    def make(pki: PKI) -> tuple[list[bytes], ec.EllipticCurvePrivateKey]:
        leaf = pki.inter.issue(HOST, dns=(HOST, *(f"n{i}.example.test" for i in range(count))))
        return [leaf.der, pki.inter.der], leaf.key
    return make


def _serial(expected: str) -> Callable[[Samples], None]:
    def check(s: Samples) -> None:
        assert s.series("ssl_cert_info")[0]["serial"] == expected
    return check


def _leaf_labels(**expected: str) -> Callable[[Samples], None]:
    def check(s: Samples) -> None:
        info = s.series("ssl_cert_info")[0]
        assert {k: info[k] for k in expected} == expected
    return check


def _dates(not_before: float, not_after: float) -> Callable[[Samples], None]:
    def check(s: Samples) -> None:
        assert s.get("ssl_cert_not_before_timestamp_seconds", position="0") == not_before
        assert s.get("ssl_cert_not_after_timestamp_seconds", position="0") == not_after
    return check


def _cert_count(n: int) -> Callable[[Samples], None]:
    def check(s: Samples) -> None:
        assert len(s.series("ssl_cert_not_after_timestamp_seconds")) == n
    return check


def _sans_capped(s: Samples) -> None:
    sans = s.series("ssl_cert_info")[0]["sans"]
    assert sans.startswith(HOST + ",n0.example.test,")
    assert sans.endswith(" more)") and ",...(+" in sans
    assert len(sans) <= metrics.MAX_SANS_LABEL + len(",...(+3001 more)")
    kept = sans.count(",")  # names before the marker
    assert sans.endswith(f",...(+{3001 - kept} more)")


def _printable_star(s: Samples) -> None:
    # OpenSSL verified the chain, but cryptography refuses the leaf: the leaf's series are
    # absent (unknown), the intermediate's remain, and the hostname verdict is unknown.
    assert s.get("ssl_chain_valid") == 1
    assert s.series("ssl_hostname_valid") == []
    assert [labels["subject_cn"] for labels in s.series("ssl_cert_info")] == ["Test Intermediate CA"]
    assert s.series("ssl_verified_chain_expiry_timestamp_seconds") == []
    # The intermediate keeps its presented position: "0" is the leaf, which is unknown here.
    for name in ("ssl_cert_info", "ssl_cert_not_after_timestamp_seconds", "ssl_cert_not_before_timestamp_seconds"):
        assert [labels["position"] for labels in s.series(name)] == ["1"]


def _server_hello_known(s: Samples) -> None:
    # The handshake failed after the ServerHello: its version and cipher are still exported.
    assert s.get("ssl_tls_version_info", version="TLS 1.2") == 1
    assert s.get("ssl_tls_cipher_info", cipher="ECDHE-ECDSA-AES128-GCM-SHA256") == 1
    assert s.series("ssl_cert_info") == []


DATE_1950 = dt.datetime(1950, 1, 1, tzinfo=dt.UTC)
DATE_1951 = dt.datetime(1951, 1, 1, tzinfo=dt.UTC)
DATE_9999 = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
SERIAL_30_BYTES = 2**235 + 5  # 30 content bytes as a signed INTEGER
UNKNOWN_CRITICAL = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")

HANDSHAKE_OK = {"handshake_success": 1}

CASES: dict[str, Case] = {
    # --- the connection misbehaves
    "silent": Case(_raw(hostile.silent), {("handshake", "timeout")}, max_seconds=DEADLINE),
    "drip_feed": Case(_raw(hostile.drip_feed), {("handshake", "timeout")}, max_seconds=DEADLINE),
    "certificate_message_2mb": Case(lambda pki, d: hostile.huge_certificate_message(),
                                    {("handshake", "oversized")}),
    "endless_hello_requests": Case(_raw(hostile.endless_hello_requests), {("handshake", "oversized")}),
    "garbage": Case(_raw(hostile.garbage), {("handshake", "tls_protocol")}),
    "garbage_handshake_record": Case(_raw(hostile.garbage_looking_like_tls), {("handshake", "tls_protocol")}),
    # A handshake_failure alert may be a policy refusal: the fallback handshake tries once more.
    "alert_at_once": Case(_raw(hostile.alert_at_once), {("handshake", "handshake_failure")},
                          extra={"handshakes": 3}),
    "reset_after_client_hello": Case(_raw(hostile.reset_after_client_hello), {("handshake", "reset")}),
    "close_after_server_hello": Case(_raw(hostile.close_after_server_hello), {("handshake", "closed")},
                                     checks=_server_hello_known),
    # --- certificate bytes OpenSSL cannot decode (hand-written Certificate message)
    "bad_der": Case(_raw(hostile.certificates([b"\x30\x82\x01\x00 not DER at all"])),
                    {("handshake", "bad_certificate")}, checks=_server_hello_known),
    "truncated_der": Case(lambda pki, d: hostile.certificates([pki.inter.der[:200]]),
                          {("handshake", "bad_certificate")}),
    "utf8string_not_utf8": Case(
        lambda pki, d: hostile.certificates([hostile.patch_certificate(
            pki.inter.issue(HOST).der, pki.inter.key, subject=hostile.der_name_cn(b"\xff\xfe bad"))]),
        {("handshake", "bad_certificate")}),
    "empty_certificate_list": Case(_raw(hostile.certificates([])), {("handshake", "tls_protocol")}),
    # --- chains too long or too large
    "chain_of_200_certificates": Case(_python_tls(_padded_chain), set(), checks=_cert_count(tls.MAX_CHAIN_CERTS),
                                      extra=HANDSHAKE_OK),
    "chain_200_deep": Case(_python_tls(_deep_chain), {("verify", "bad_certificate")},
                           checks=_cert_count(tls.MAX_CHAIN_CERTS), extra=HANDSHAKE_OK),
    "sans_10000": Case(_python_tls(_many_sans(10000)), {("handshake", "oversized")}),
    "sans_3000": Case(_python_tls(_many_sans(3000)), set(), checks=_sans_capped, extra=HANDSHAKE_OK),
    # --- odd contents OpenSSL accepts (Python ssl server, chain to the trusted root)
    "negative_serial": Case(_python_tls(_patched_leaf(serial=hostile.der_integer(-12345))), set(),
                            checks=_serial("-3039"), extra=HANDSHAKE_OK),
    "serial_30_bytes": Case(_python_tls(_patched_leaf(serial=hostile.der_integer(SERIAL_30_BYTES, 30))), set(),
                            checks=_serial(f"{SERIAL_30_BYTES:x}"), extra=HANDSHAKE_OK),
    "t61string_not_utf8_cn": Case(
        _python_tls(_patched_leaf(subject=hostile.der_name_cn(b"\xff\xfe bad", 0x14))), set(),
        checks=_leaf_labels(subject_cn="", subject="", sans=HOST), extra=HANDSHAKE_OK),
    "cn_with_control_characters": Case(
        _python_tls(_patched_leaf(subject=hostile.der_name_cn(b'a"b\\c\nd\x00e'))), set(),
        checks=_leaf_labels(subject_cn='a"b\\c\nd\x00e'), extra=HANDSHAKE_OK),
    "empty_subject": Case(_python_tls(_patched_leaf(subject=hostile.EMPTY_NAME)), set(),
                          checks=_leaf_labels(subject_cn="", subject="", sans=HOST), extra=HANDSHAKE_OK),
    "printable_string_with_star": Case(
        _python_tls(_patched_leaf(subject=hostile.der_name_cn(b"*.example.test", 0x13))),
        {("verify", "bad_certificate")}, checks=_printable_star, extra=HANDSHAKE_OK),
    "dates_1950": Case(_python_tls(_built_leaf(lambda b: b, (DATE_1950, DATE_1951))), {("verify", "expired")},
                       checks=_dates(DATE_1950.timestamp(), DATE_1951.timestamp()), extra=HANDSHAKE_OK),
    "not_after_9999": Case(_python_tls(_built_leaf(lambda b: b, (DATE_1950, DATE_9999))), set(),
                           checks=_dates(DATE_1950.timestamp(), DATE_9999.timestamp()), extra=HANDSHAKE_OK),
    "unknown_critical_extension": Case(
        _python_tls(_built_leaf(lambda b: b.add_extension(UNKNOWN_CRITICAL, critical=True))),
        {("verify", "bad_certificate")}, extra=HANDSHAKE_OK),
}


@pytest.fixture
def valid_port(pki: PKI, tmp_path: Path) -> Iterator[int]:
    leaf = pki.inter.issue(HOST, dns=(HOST,))
    cert_path, key_path = pki.chain_files("hostile-valid", leaf, pki.inter)
    with pytls.tls_server(cert_path, key_path) as (port, _server):
        yield port


@pytest.mark.parametrize("name", list(CASES))
async def test_hostile_server(name: str, client, pki: PKI, tmp_path: Path, valid_port: int,
                              bytes_read: list[int]) -> None:
    case = CASES[name]
    handler = case.server(pki, tmp_path)
    tracemalloc.start()
    try:
        with _tracked(handler) as (port, accepted):
            tracemalloc.reset_peak()
            started = time.monotonic()
            hostile_request = asyncio.create_task(client.get(
                "/probe", params={"target": f"127.0.0.1:{port}", "module": "fast", "hostname": HOST}))
            for _ in range(400):  # bounded wait until the hostile server holds the connection
                if accepted.is_set() or hostile_request.done():
                    break
                await asyncio.sleep(0.005)
            assert accepted.is_set()

            # The exporter keeps serving: a valid probe alongside completes, fast.
            valid_started = time.monotonic()
            valid = await probe(client, f"127.0.0.1:{valid_port}", hostname=HOST, module="fast")
            valid_seconds = time.monotonic() - valid_started
            slow = case.max_seconds >= DEADLINE
            if slow:  # the hostile probe was still running the whole time
                assert not hostile_request.done()

            response = await hostile_request
            text = await response.text()
            elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert valid.get("ssl_probe_success") == 1
    assert valid_seconds < 0.5
    assert response.status == 200, text
    assert "Traceback" not in text and "internal_error" not in text
    s = Samples(text)
    assert s.errors() == case.errors
    assert s.get("ssl_probe_success") == (0 if case.errors else 1)
    assert s.get("ssl_handshake_success") == case.extra.get("handshake_success", 0)
    duration = s.get("ssl_probe_duration_seconds")
    assert duration is not None
    print(f"hostile {name}: {sorted(s.errors())} {duration:.3f}s read={bytes_read} peak={peak}")
    if slow:
        assert DEADLINE <= duration < DEADLINE + 0.2
    else:
        assert duration < case.max_seconds
    assert elapsed < DEADLINE + 0.5
    # Bounded per probe: bytes read, certificates kept, and the Python heap.
    # hostile (and its fallback) and valid
    assert len(bytes_read) == case.extra.get("handshakes", 2) and max(bytes_read) <= READ_BOUND, bytes_read
    assert len(s.series("ssl_cert_not_after_timestamp_seconds")) <= tls.MAX_CHAIN_CERTS
    assert peak < 4 * 1024 * 1024, f"traced heap peak {peak} bytes"  # measured under 1 MiB
    if case.checks:
        case.checks(s)


async def test_oversized_handshakes_stop_at_the_cap(client, bytes_read: list[int]) -> None:
    """The caps, not the deadline, end these: the probe reads a bounded number of bytes."""
    for handler, bound in ((hostile.endless_hello_requests, READ_BOUND),
                           (hostile.huge_certificate_message(), 2 * 16384)):
        bytes_read.clear()
        with _tracked(handler) as (port, _accepted):
            s = await probe(client, f"127.0.0.1:{port}", module="fast")
        assert s.errors() == {("handshake", "oversized")}
        # OpenSSL refuses the 2 MB message from its header; our cap stops the endless stream.
        (read,) = bytes_read
        assert read <= bound
        if handler is hostile.endless_hello_requests:
            assert read > tls.MAX_HANDSHAKE_BYTES


# --- certificates that never reach a handshake: files, Kubernetes ---------------------------------


def _result_with(*ders: bytes) -> ProbeResult:
    certs = []
    for der in ders:
        certs.append(parse_der(der))
    return ProbeResult(success=False, duration=0.1, certs=tuple(certs), handshake_success=True)


@pytest.mark.parametrize("accept", [None, "application/openmetrics-text; version=1.0.0"])
def test_odd_certificate_contents_never_break_the_exposition(pki: PKI, accept: str | None) -> None:
    leaf = pki.inter.issue(HOST, dns=(HOST,))
    odd = {
        # OpenSSL refuses these in a handshake, but a file or a Secret can hold them.
        "utf8": hostile.der_name_cn(b"\xff\xfe\xc3( bad"),
        "bmp": hostile.der_name_cn("\ufffe\u2062".encode("utf-16-be"), 0x1E),
        "controls": hostile.der_name_cn(b'q"u\\o\nte\x00'),
        "empty": hostile.EMPTY_NAME,
    }
    ders = [hostile.patch_certificate(leaf.der, pki.inter.key, subject=name) for name in odd.values()]
    result = _result_with(*ders)
    for fmt in ("text", "openmetrics"):
        body, _ = metrics.encode(metrics.probe_families(result), accept if fmt == "openmetrics" else None)
        body.decode("utf-8")
    text, _ = metrics.encode(metrics.probe_families(result), None)
    s = Samples(text.decode())
    cns = [labels["subject_cn"] for labels in s.series("ssl_cert_info")]
    assert cns == ["", "\ufffe\u2062", 'q"u\\o\nte\x00', ""]


def test_ten_thousand_sans_are_kept_for_matching_and_capped_in_the_label(pki: PKI) -> None:
    names = tuple(f"n{i}.example.test" for i in range(10000))
    leaf = pki.inter.issue(HOST, dns=(*names, HOST))
    info = parse_der(leaf.der)
    assert len(info.dns_names) == 10001  # all kept: the last one is the one that matches
    s = Samples(metrics.encode(metrics.probe_families(_result_with(leaf.der)), None)[0].decode())
    sans = s.series("ssl_cert_info")[0]["sans"]
    assert len(sans) <= metrics.MAX_SANS_LABEL + len(",...(+10001 more)")
    kept = sans.count(",")
    assert sans.endswith(f",...(+{10001 - kept} more)")


@pytest.mark.parametrize("der", [b"", b"\x30", b"\x30\x82\xff\xff", b"\x30\x00", b"\x02\x01\x05", b"\x00" * 64])
def test_bad_der_is_a_certificate_error(der: bytes) -> None:
    with pytest.raises(CertificateError):
        parse_der(der)


def test_negative_serial_is_exported_with_a_sign_and_no_warning(pki: PKI) -> None:
    # pytest runs with -W error: a CryptographyDeprecationWarning would fail this test.
    leaf = pki.inter.issue(HOST, dns=(HOST,))
    for value, expected in ((-12345, "-3039"), (0, "0"), (-(2**150), f"-{2**150:x}")):
        der = hostile.patch_certificate(leaf.der, pki.inter.key, serial=hostile.der_integer(value))
        assert parse_der(der).serial == expected


# --- a bug in a prober costs one probe, not the request ------------------------------------------


async def test_a_crashing_prober_reports_internal_error(pki: PKI) -> None:
    from ssl_exporter import prepare
    from ssl_exporter.probers.base import Prober, run_probe

    async def crash(rec, module, target, server_name):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug")

    module = prepare.load_default().modules["tcp"]
    prober = Prober(parse_target=lambda raw, m: raw, probe=crash, default_server_name=str)
    result = await run_probe(prober, module, "example.test:443", "example.test", 1.0)
    assert [(e.stage, e.reason) for e in result.errors] == [("resolve", "internal_error")]
    assert result.errors[0].detail == "RuntimeError: a bug"
