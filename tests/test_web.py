"""The recent-probes history and the pages rendered from it, without a server."""

from __future__ import annotations

import html
import re
import ssl

import pytest

from ssl_exporter import prepare
from ssl_exporter.certs import parse_der
from ssl_exporter.describe import describe_expiry
from ssl_exporter.durations import format_span
from ssl_exporter.history import MAX_CERTS_KEPT, History, ProbeRecord
from ssl_exporter.result import CertInfo, ProbeError, ProbeResult, TLSInfo
from ssl_exporter.web import debug_text, landing_page, log_page
from tests.conftest import PKI
from tests.pki import DAY, NOW

HOSTILE_CN = '<script>alert("cn")</script>'
HOSTILE_PATH = '/etc/ssl/<img src=x onerror=alert(1)>.pem'  # the file prober accepts any path


def _result(success: bool, certs: tuple[CertInfo, ...] = (), **kwargs: object) -> ProbeResult:
    errors = () if success else (ProbeError("verify", "expired", "OpenSSL: certificate has expired (code 10)"),)
    return ProbeResult(success=success, duration=0.0123, errors=errors, certs=certs, **kwargs)  # type: ignore[arg-type]


def _add(history: History, success: bool, target: str = "example.test:443", **kwargs: object) -> ProbeRecord:
    return history.add("test", target, "example.test", {"prober": "tcp"}, _result(success, **kwargs))


# --- history ------------------------------------------------------------------------------


def test_failures_survive_a_flood_of_successes() -> None:
    history = History(limit=5, failure_limit=2)
    old_failure = _add(history, False)
    failures = [_add(history, False) for _ in range(2)]
    successes = [_add(history, True) for _ in range(50)]
    kept = history.records()
    # The last 5 probes, plus the last 2 failures however long ago; newest first, each once.
    assert [r.id for r in kept] == [r.id for r in reversed(successes[-5:])] + [r.id for r in reversed(failures)]
    assert history.get(failures[0].id) is failures[0]
    assert history.get(old_failure.id) is None  # pushed out by newer failures
    assert history.get(successes[0].id) is None  # pushed out by newer probes


def test_recent_failure_is_listed_once() -> None:
    history = History(limit=3, failure_limit=3)
    failure = _add(history, False)
    assert history.records() == [failure]


def test_zero_limits_keep_nothing_and_still_number_probes() -> None:
    history = History(limit=0, failure_limit=0)
    first, second = _add(history, False), _add(history, True)
    assert (first.id, second.id) == (1, 2)
    assert history.records() == []
    with pytest.raises(ValueError):
        History(limit=-1)


def test_record_keeps_a_bounded_number_of_certificates(pki: PKI) -> None:
    cert = parse_der(pki.inter.der, {"file": "/etc/ssl/bundle.pem"})
    many = (cert,) * (MAX_CERTS_KEPT + 8)
    positions = tuple(str(i) for i in range(len(many)))
    history = History()
    answered = history.add("files", "/etc/ssl/*.pem", "", {}, _result(True, certs=many, positions=positions))
    assert len(answered.result.certs) == len(many)  # the probe's own answer has them all
    kept = history.get(answered.id)
    assert kept is not None and kept.id == answered.id
    assert len(kept.result.certs) == len(kept.result.positions) == MAX_CERTS_KEPT
    assert kept.certs_dropped == 8
    assert "... and 8 more certificate(s), not kept in the probe history" in debug_text(kept)


# --- text -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(3 * 86400 + 4 * 3600 + 59, "3d 4h"), (5 * 3600 + 12 * 60, "5h 12m"), (125, "2m 5s"), (42, "42s"),
     (-(2 * 86400 + 3600), "2d 1h")],
)
def test_format_span(seconds: float, text: str) -> None:
    assert format_span(seconds) == text


def test_describe_expiry_in_both_directions() -> None:
    assert describe_expiry(1000 + 3 * 86400, 1000) == "expires in 3d 0h"
    assert describe_expiry(1000, 1000 + 90) == "expired 1m 30s ago"


def test_debug_text_decodes_every_certificate_and_gives_its_pem(pki: PKI) -> None:
    leaf = pki.inter.issue("debug.example.test", dns=("debug.example.test",), ips=("192.0.2.7",),
                           not_after=NOW + 30 * DAY)
    certs = (parse_der(leaf.der), parse_der(pki.inter.der))
    result = _result(False, certs=certs, handshake_success=True, chain_valid=False, hostname_valid=True,
                     tls=TLSInfo("TLS 1.3", "TLS_AES_256_GCM_SHA384"), log=("  0.001s connected to 192.0.2.7:443",))
    record = History().add("test", "192.0.2.7:443", "debug.example.test", {"prober": "tcp", "timeout": "5s"}, result)
    text = debug_text(record)
    assert text.startswith("Logs for the probe:\n  0.001s connected to 192.0.2.7:443\n")
    assert "error verify/expired: OpenSSL: certificate has expired (code 10)" in text
    assert "handshake yes, chain valid no, hostname valid yes" in text
    assert "negotiated TLS 1.3, cipher TLS_AES_256_GCM_SHA384" in text
    assert "[0] debug.example.test\n    subject:    CN=debug.example.test\n" in text
    assert "    SANs:       DNS:debug.example.test, IP:192.0.2.7\n" in text
    assert "    key:        EC secp256r1 256 bits\n" in text
    assert f"    serial:     {leaf.serial}\n" in text
    assert "(expires in 29d 23h)" in text or "(expires in 30d 0h)" in text
    fingerprint = certs[0].fingerprint_sha256.upper()
    assert ":".join(re.findall("..", fingerprint)) in text
    pems = re.findall(r"-----BEGIN CERTIFICATE-----\n.*?-----END CERTIFICATE-----\n", text, re.DOTALL)
    assert [ssl.PEM_cert_to_DER_cert(pem) for pem in pems] == [leaf.der, pki.inter.der]
    assert "Module configuration:\ntest:\n  prober: tcp\n  timeout: 5s\n" in text
    assert "ssl_probe_success 0.0" in text.partition("Metrics that would have been returned:\n")[2]


# --- HTML ---------------------------------------------------------------------------------


def _landing(history: History) -> str:
    cfg = prepare.load_text("modules:\n  test: {}\n  files: {prober: file}\n", source="test.yml")
    return landing_page("9.9.9", cfg, "/metrics", history.records(), history.limit, history.failure_limit)


def test_landing_page_lists_recent_probes(pki: PKI) -> None:
    history = History()
    leaf = pki.inter.issue("ok.example.test", not_after=NOW + 10 * DAY)
    ok = _add(history, True, target="ok.example.test:443", certs=(parse_der(leaf.der),))
    failed = _add(history, False, target="127.0.0.1:1")
    page = _landing(history)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "Version 9.9.9. Configuration: test.yml." in page
    assert "<td>test</td><td>tcp</td>" in page and "<td>files</td><td>file</td>" in page
    rows = re.findall(r'<tr class="(ok|failed)" data-probe-id="(\d+)">(.*?)</tr>', page)
    assert [(cls, int(i)) for cls, i, _ in rows] == [("failed", failed.id), ("ok", ok.id)]
    failed_row, ok_row = rows[0][2], rows[1][2]
    assert 'data-label="result">FAILED<' in failed_row and 'data-label="reason">verify/expired<' in failed_row
    assert f'<a href="/probe/log?id={failed.id}">log</a>' in failed_row
    assert 'data-label="result">OK<' in ok_row and 'data-label="duration">12 ms<' in ok_row
    assert re.search(r'data-label="leaf">expires in (9d 23h|10d 0h)<br><small>ok.example.test</small>', ok_row)
    # Every cell carries its label, which the narrow-screen layout shows instead of the header.
    assert ok_row.count("data-label=") == 8
    assert "@media (max-width:40rem)" in page and "content:attr(data-label)" in page


def test_landing_page_without_probes() -> None:
    assert "<p>No probes yet.</p>" in _landing(History())


def test_landing_page_says_reload_needs_the_lifecycle_flag() -> None:
    page = _landing(History())
    assert "POST /-/reload reloads the configuration\nwhen the exporter runs with <code>--web.enable-lifecycle</code>" \
        in page


def test_hostile_certificate_and_target_text_is_escaped(pki: PKI) -> None:
    leaf = pki.inter.issue(HOSTILE_CN, not_after=NOW + 10 * DAY)
    history = History()
    record = history.add("files", HOSTILE_PATH, '"><b>name', {"prober": "file"},
                         _result(False, certs=(parse_der(leaf.der, {"file": HOSTILE_PATH}),),
                                 positions=("0",), log=(f"read {HOSTILE_PATH}",)))
    for page in (_landing(history), log_page(record)):
        assert "<script>" not in page and "<img" not in page and "<b>name" not in page
    assert html.escape(HOSTILE_CN) in _landing(history)
    log_html = log_page(record)
    assert html.escape(f"[0] {HOSTILE_CN}\n") in log_html
    assert html.escape(f"read {HOSTILE_PATH}") in log_html
    assert f"<title>Probe {record.id}: {html.escape(HOSTILE_PATH)}</title>" in log_html
    # The text itself is still all there for whoever reads the page.
    assert html.unescape(re.search(r"<pre>(.*)</pre>", log_html, re.DOTALL)[1]) == debug_text(record)
