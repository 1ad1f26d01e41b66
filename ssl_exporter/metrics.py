"""ProbeResult -> metric families. The only place probe metric names and labels live.

Unknown is absent, never 0-as-good: a gauge whose fact the probe did not learn (no
handshake, no verified chain) is left out rather than reported as 0 or 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from ssl_exporter import lint
from ssl_exporter.result import CertInfo, CertLint, ProbeResult, ReadError, RevocationCheck

CERT_LABELS = ("position", "subject_cn", "issuer_cn", "serial")
# Descriptive labels on ssl_cert_info only: they would multiply series on the timestamps.
CERT_INFO_LABELS = (
    "subject",
    "issuer",
    "sans",
    "fingerprint_sha256",
    "key_algorithm",
    "key_bits",
    "signature_algorithm",
    # Certificate-depth facts (ssl_exporter.lint, docs/revocation.md): "true"/"false", a count;
    # empty when the certificate could not be read that deep.
    "weak_signature",
    "sct_count",
    "must_staple",
    "self_signed",
)
# A certificate with thousands of SANs must not make a megabyte label.
MAX_SANS_LABEL = 1024


def probe_families(result: ProbeResult) -> list[Metric]:
    families: list[Metric] = [
        _gauge("ssl_probe_success", "1 when the certificates were obtained and every enforced check held.",
               float(result.success)),
        _gauge("ssl_probe_duration_seconds", "How long the whole probe took.", result.duration),
    ]
    phases = GaugeMetricFamily("ssl_probe_phase_duration_seconds",
                               "Duration of each phase of the probe that ran.", labels=["phase"])
    for phase, seconds in result.phases.items():
        phases.add_metric([phase], seconds)
    families.append(phases)
    errors = GaugeMetricFamily("ssl_probe_error_info",
                               "1 per failure of the probe, by stage and documented reason.",
                               labels=["stage", "reason"])
    for error in result.errors:
        errors.add_metric([error.stage, error.reason], 1.0)
    families.append(errors)

    optional = [
        ("ssl_handshake_success", "1 when connect, STARTTLS and the TLS handshake completed.",
         result.handshake_success),
        ("ssl_chain_valid", "1 when the presented chain verifies against the module's trust store.",
         result.chain_valid),
        ("ssl_hostname_valid", "1 when the leaf certificate matches the verified name.",
         result.hostname_valid),
        ("ssl_verified_chain_expiry_timestamp_seconds",
         "Earliest not-after on the verified path, root included.", result.verified_chain_expiry),
    ]
    for name, doc, value in optional:
        if value is not None:
            families.append(_gauge(name, doc, float(value)))
    if result.tls is not None:
        families.append(_info("ssl_tls_version_info", "Negotiated TLS version.", "version",
                              result.tls.version))
        families.append(_info("ssl_tls_cipher_info", "Negotiated cipher suite.", "cipher",
                              result.tls.cipher))
    positions = result.positions or [str(i) for i in range(len(result.certs))]
    client = [("client", result.client_cert)] if result.client_cert else []
    families.extend(cert_families([*zip(positions, result.certs), *client]))
    if result.read_errors:
        families.append(read_error_family(result.read_errors))
    families.extend(revocation_families(result))
    if result.legacy_versions:
        legacy = GaugeMetricFamily("ssl_tls_legacy_version_accepted",
                                   "1 when the server completes a handshake restricted to this legacy TLS version.",
                                   labels=["version"])
        for version, accepted in result.legacy_versions.items():
            legacy.add_metric([version], float(accepted))
        families.append(legacy)
    return families


def revocation_families(result: ProbeResult) -> list[Metric]:
    """Revocation series (modules with ``revocation:``); unknown is absent from the 1/0 gauges."""
    families: list[Metric] = []
    if result.ocsp_stapled is not None:
        families.append(_gauge("ssl_ocsp_stapled", "1 when the server stapled an OCSP response to the handshake.",
                               float(result.ocsp_stapled)))
    checks: tuple[RevocationCheck, ...] = result.revocation
    if not checks:
        return families
    info = GaugeMetricFamily("ssl_revocation_status_info",
                             "Revocation status of each certificate by each method: good, revoked or unknown.",
                             labels=["position", "method", "status", "reason", "revocation_reason"])
    revoked = GaugeMetricFamily("ssl_cert_revoked", "1 when the certificate is revoked, 0 when it is good; "
                                "absent when unknown.", labels=["position", "method"])
    revoked_at = GaugeMetricFamily("ssl_cert_revocation_timestamp_seconds",
                                   "When a revoked certificate was revoked, as a Unix timestamp.",
                                   labels=["position", "method"])
    ocsp_next = GaugeMetricFamily("ssl_ocsp_next_update_timestamp_seconds",
                                  "nextUpdate of the verified OCSP answer (queried or stapled).",
                                  labels=["position", "method"])
    crl_next = GaugeMetricFamily("ssl_crl_next_update_timestamp_seconds",
                                 "nextUpdate of the verified CRL that answered for the certificate.",
                                 labels=["position"])
    for check in checks:
        info.add_metric([check.position, check.method, check.status, check.reason, check.revocation_reason], 1.0)
        if check.status == "unknown":
            continue
        revoked.add_metric([check.position, check.method], float(check.status == "revoked"))
        if check.revocation_time is not None:
            revoked_at.add_metric([check.position, check.method], check.revocation_time)
        if check.next_update is not None:
            if check.method == "crl":
                crl_next.add_metric([check.position], check.next_update)
            else:
                ocsp_next.add_metric([check.position, check.method], check.next_update)
    families.append(info)
    families.extend(f for f in (revoked, revoked_at, ocsp_next, crl_next) if f.samples)
    return families


def cert_families(certs: Iterable[tuple[str, CertInfo]]) -> list[Metric]:
    """Certificate series; ``certs`` pairs each certificate with its position label."""
    certs = list(certs)
    source_keys = sorted({key for _, cert in certs for key in cert.source})
    labels = [*CERT_LABELS, *source_keys]
    not_after = GaugeMetricFamily("ssl_cert_not_after_timestamp_seconds",
                                  "Not-after of each distinct certificate, as a Unix timestamp.",
                                  labels=labels)
    not_before = GaugeMetricFamily("ssl_cert_not_before_timestamp_seconds",
                                   "Not-before of each distinct certificate, as a Unix timestamp.",
                                   labels=labels)
    info = GaugeMetricFamily("ssl_cert_info", "Descriptive facts of each distinct certificate.",
                             labels=[*labels, *CERT_INFO_LABELS])
    validity = GaugeMetricFamily("ssl_cert_validity_period_seconds",
                                 "Not-after minus not-before of each distinct certificate.", labels=labels)
    for position, cert in certs:
        values = [str(position), cert.subject_cn, cert.issuer_cn, cert.serial,
                  *(cert.source.get(key, "") for key in source_keys)]
        not_after.add_metric(values, cert.not_after)
        not_before.add_metric(values, cert.not_before)
        facts = lint.facts(cert.der)
        info.add_metric([*values, cert.subject, cert.issuer, _sans_label(cert),
                         cert.fingerprint_sha256, cert.key_algorithm, str(cert.key_bits),
                         cert.signature_algorithm, *_lint_labels(facts)], 1.0)
        if facts is not None:
            validity.add_metric(values, facts.validity_seconds)
    if not certs:
        return []
    return [not_after, not_before, info, validity]


def _lint_labels(facts: CertLint | None) -> list[str]:
    if facts is None:
        return ["", "", "", ""]
    return [_bool(facts.weak_signature), str(facts.sct_count), _bool(facts.must_staple), _bool(facts.self_signed)]


def _bool(value: bool) -> str:
    return "true" if value else "false"


def read_error_family(errors: Iterable[ReadError]) -> Metric:
    """One series per source that could not be read, naming it (file, Secret key, ...)."""
    errors = list(errors)
    source_keys = sorted({key for error in errors for key in error.source})
    family = GaugeMetricFamily("ssl_source_error_info",
                               "1 per certificate source that could not be read, by reason.",
                               labels=[*source_keys, "reason"])
    for error in errors:
        family.add_metric([*(error.source.get(key, "") for key in source_keys), error.reason], 1.0)
    return family


def _sans_label(cert: CertInfo) -> str:
    names = [*cert.dns_names, *cert.ip_addresses]
    text = ",".join(names)
    if len(text) <= MAX_SANS_LABEL:
        return text
    kept = text[:MAX_SANS_LABEL].rsplit(",", 1)[0]
    return f"{kept},...(+{len(names) - kept.count(',') - 1} more)"


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _info(name: str, documentation: str, label: str, value: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    family.add_metric([value], 1.0)
    return family


class _Families:
    """The minimal collector interface the exposition encoders need."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def encode(families: list[Metric], accept_header: str | None) -> tuple[bytes, str]:
    """Text format, or OpenMetrics when the Accept header asks for it."""
    encoder, content_type = choose_encoder(accept_header or "")
    return encoder(_Families(families)), content_type  # type: ignore[arg-type]
