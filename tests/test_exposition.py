"""The exporter's own encoder writes exactly the bytes prometheus_client's encoders write.

ssl_exporter.exposition renders sample lines itself (no per-sample validation, cached
lines, pre-rendered headers: bench/, docs/performance.md). Here a rich answer (every family
the metrics module makes, label values with quotes, backslashes, line breaks and non-ASCII
text, values from 0 to 1e21) is encoded by it, read back with prometheus_client's parser
and encoded again by prometheus_client's own encoder: the bytes must be identical, in the
text format and in OpenMetrics, for one address and for every address of a name, but for
one documented difference: prometheus_client sorts label names, ours keep their declared
order (position first), so each of our sample lines is compared with its labels sorted.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator

import pytest
from prometheus_client import exposition as text_exposition
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.registry import CollectorRegistry

from ssl_exporter import lru, metrics
from ssl_exporter.certs import parse_der
from ssl_exporter.result import (
    AddressResult,
    AriCheck,
    CAARecord,
    CAAResult,
    DomainInfo,
    ProbeError,
    ProbeResult,
    ReadError,
    RevocationCheck,
    TLSInfo,
)
from tests.pki import make_root

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
ODD = 'quote " backslash \\ line\nbreak, ünïcödé ✓ 𝄞'
SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>.*)\} (?P<value>\S+)$')
PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _rich_result() -> ProbeResult:
    root = make_root(f"Root {ODD}")
    inter = root.issue("Intermediate \\ CA", ca=True)
    leaf = inter.issue(f"leaf {ODD}", dns=("a.example.test", "*.b.example.test"), ips=("127.0.0.1", "::1"))
    client = inter.issue("client")
    certs = tuple(parse_der(c.der) for c in (leaf, inter, root))
    at_rest = parse_der(leaf.der, source={"file": f"/etc/ssl/{ODD}.pem"})
    return ProbeResult(
        success=False, duration=0.123456789,
        phases={"resolve": 1e-06, "connect": 0.000123, "handshake": 0.5, "verify": 12.0},
        errors=(ProbeError("verify", "expired", "detail is never a label"), ProbeError("handshake", "timeout")),
        certs=certs, positions=("0", "1", "3"),
        handshake_success=True, chain_valid=False, hostname_valid=True, verified_chain_expiry=1.7e9 + 0.5,
        tls=TLSInfo("TLS 1.3", "TLS_AES_256_GCM_SHA384"), client_cert=parse_der(client.der),
        revocation=(RevocationCheck("0", "ocsp", "revoked", revocation_time=1.6e9, next_update=1.8e9,
                                    revocation_reason="key_compromise"),
                    RevocationCheck("1", "crl", "good", next_update=1.9e9),
                    RevocationCheck("0", "stapling", "unknown", reason="no_staple")),
        ocsp_stapled=False, legacy_versions={"TLS 1.0": False, "TLS 1.1": True},
        fallback_handshake=True, fallback_tls=TLSInfo("TLS 1.2", f"cipher {ODD}"),
        domain=DomainInfo("example.test", "rdap", expiry=2e9, registration=1e21, statuses=("client hold", ODD),
                          registrar=ODD, lookup_time=1.75e9),
        caa=CAAResult(True, name="a.example.test", domain="example.test", issuer_allowed=False,
                      records=(CAARecord(0, "issue", f'ca.example; {ODD}'), CAARecord(128, "iodef", "x"))),
        ari=(AriCheck("0", certs[0], "ok", window_start=1.71e9, window_end=1.72e9),
             AriCheck("0", at_rest, "unknown", reason="no_ari")),
        read_errors=(ReadError({"file": f"/tmp/{ODD}"}, "unreadable"),),
    )


def _results() -> Iterator[ProbeResult]:
    rich = _rich_result()
    yield rich
    yield ProbeResult(success=False, duration=0.0)  # nothing learned: the empty families
    yield dataclasses.replace(
        rich, certs=(), positions=(), addresses_resolved=3,
        addresses=(AddressResult("127.0.0.1", rich), AddressResult("::1", ProbeResult(False, 1.0))))


class _Parsed:
    """A collector that yields already-built families, for prometheus_client's encoders."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def _reencoded(ours: bytes, openmetrics: bool, label_order: dict[str, tuple[str, ...]]) -> bytes:
    """``ours`` read back by prometheus_client's parser and written by its encoder; the
    parser sorts label names, so each family's declared order is put back."""
    parsed = (parse_openmetrics if openmetrics else parse_text)(ours.decode("utf-8"))
    families = []
    for family in parsed:
        labels = label_order[family.name]
        gauge = GaugeMetricFamily(family.name, family.documentation, labels=list(labels))
        for sample in family.samples:
            assert set(sample.labels) == set(labels), (family.name, sample)
            gauge.add_metric([sample.labels[name] for name in labels], sample.value)
        families.append(gauge)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Parsed(families))  # type: ignore[arg-type]
    return (om_exposition if openmetrics else text_exposition).generate_latest(registry)


def _labels_sorted(text: bytes) -> bytes:
    """Each sample line with its label pairs in name order, as prometheus_client writes them."""
    lines = []
    for line in text.decode("utf-8").split("\n"):
        match = SAMPLE.match(line)
        if match:
            pairs = PAIR.findall(match["labels"])
            assert ",".join(f'{k}="{v}"' for k, v in pairs) == match["labels"], line  # nothing skipped
            line = f"{match['name']}{{{','.join(f'{k}={chr(34)}{v}{chr(34)}' for k, v in sorted(pairs))}}} " \
                   f"{match['value']}"
        lines.append(line)
    return "\n".join(lines).encode("utf-8")


@pytest.mark.parametrize("accept", [None, OPENMETRICS])
@pytest.mark.parametrize("result", list(_results()), ids=["rich", "empty", "every_address"])
def test_bytes_equal_prometheus_client_encoder(result: ProbeResult, accept: str | None) -> None:
    families = metrics.probe_families(result)
    ours, content_type = metrics.encode(families, accept)
    openmetrics = accept is not None
    assert content_type.startswith("application/openmetrics-text" if openmetrics else "text/plain")
    assert _labels_sorted(ours) == _reencoded(ours, openmetrics, {f.name: f.labels for f in families})


def test_rich_answer_holds_what_the_comparison_needs() -> None:
    """The comparison above means something only if the answer holds the hard cases."""
    ours, _ = metrics.encode(metrics.probe_families(_rich_result()), None)
    text = ours.decode("utf-8")
    assert '\\"' in text and "\\\\" in text and "\\n" in text and "ünïcödé ✓ 𝄞" in text
    assert "1e+21" in text and "1e-06" in text
    families = {f.name: f for f in parse_text(text)}
    assert len(families) >= 30
    assert families["ssl_cert_info"].samples[0].labels["subject_cn"] == f"leaf {ODD}"
    assert [s.labels["position"] for s in families["ssl_cert_not_after_timestamp_seconds"].samples] == \
        ["0", "1", "3", "client"]


def test_encoding_twice_gives_the_same_bytes() -> None:
    """Cached lines and headers give the bytes a first rendering gives."""
    result = _rich_result()
    lines: metrics.CertLines = lru.budgeted("cert_lines")
    for accept in (None, OPENMETRICS, None):
        first, _ = metrics.encode(metrics.probe_families(result, cert_lines=lines), accept)
        again, _ = metrics.encode(metrics.probe_families(result, cert_lines=lines), accept)
        assert first == again
        assert metrics.encode(metrics.probe_families(result), accept)[0] == first  # no cache: the same bytes
    assert len(lines) == 4  # positions 0, 1, 3 and the client certificate, rendered once each
