"""ProbeResult -> metric families. The only place probe metric names and labels live.

Unknown is absent, never 0-as-good: a gauge whose fact the probe did not learn (no
handshake, no verified chain) is left out rather than reported as 0 or 1.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Sequence

from ssl_exporter import caa, lint, lru
from ssl_exporter.exposition import GaugeFamily, LateGauge, encode, gauge, sample_line, with_label
from ssl_exporter.result import CertInfo, CertLint, DomainInfo, ProbeResult, ReadError, RevocationCheck

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
    # A digest of the end-entity certificate's sorted name set (names_digest()), to join a
    # served certificate with a renewed one at rest (SSLCertificateNotDeployed).
    "names_digest",
)
# A certificate with thousands of SANs must not make a megabyte label.
MAX_SANS_LABEL = 1024
# Every other label value taken from a certificate, a server or a source is cut too, with a
# visible marker (clip_label), so that one certificate's series stay a few KiB whatever it
# holds (docs/robustness.md states the resulting bound on an answer).
MAX_NAME_LABEL = 256  # subject_cn, issuer_cn, serial, key and signature algorithm, TLS cipher
MAX_DN_LABEL = 512  # subject, issuer (whole distinguished names)
MAX_SOURCE_LABEL = 1024  # file path, namespace, secret, key: long paths are legitimate
_CLIP_MARKER_ROOM = 24  # "...(+N chars)" for any N below 10**16


def clip_label(text: str, limit: int = MAX_NAME_LABEL) -> str:
    """``text`` cut to at most ``limit`` characters, ending in ``...(+N chars)`` when cut."""
    if len(text) <= limit:
        return text
    keep = limit - _CLIP_MARKER_ROOM
    return f"{text[:keep]}...(+{len(text) - keep} chars)"


_DURATION_HELP = "How long the whole probe took."


def probe_families(result: ProbeResult, answer_time: Callable[[], float] | None = None,
                   cert_lines: CertLines | None = None) -> list[GaugeFamily]:
    """The families of one probe's answer.

    ``cert_lines`` remembers rendered certificate lines between answers (the exporter passes
    the process's, ``prepare.Caches.cert_lines``); without it every line is rendered anew,
    to the same bytes.

    With ``answer_time`` (seconds spent on the answer so far), ssl_probe_duration_seconds
    comes last and is rendered last, so that it includes rendering the answer: a large
    answer is part of the probe's cost, and must show up against the scrape timeout.
    """
    families = (every_address_families(result, cert_lines) if result.addresses is not None
                else _families(result, cert_lines))
    if answer_time is None:
        return families
    return [*(f for f in families if f.name != "ssl_probe_duration_seconds"),
            LateGauge("ssl_probe_duration_seconds", _DURATION_HELP, lambda: result.duration + answer_time())]


def _families(result: ProbeResult, cert_lines: CertLines | None) -> list[GaugeFamily]:
    families: list[GaugeFamily] = [
        gauge("ssl_probe_success", "1 when the certificates were obtained and every enforced check held.",
               float(result.success)),
        gauge("ssl_probe_duration_seconds", _DURATION_HELP, result.duration),
    ]
    phases = GaugeFamily("ssl_probe_phase_duration_seconds",
                               "Duration of each phase of the probe that ran.", ["phase"])
    for phase, seconds in result.phases.items():
        phases.add([phase], seconds)
    families.append(phases)
    errors = GaugeFamily("ssl_probe_error_info",
                               "1 per failure of the probe, by stage and documented reason.",
                               ["stage", "reason"])
    for error in result.errors:
        errors.add([error.stage, error.reason], 1.0)
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
        ("ssl_fallback_handshake", "1 when the certificates came from the permissive fallback handshake.",
         result.fallback_handshake),
    ]
    for name, doc, value in optional:
        if value is not None:
            families.append(gauge(name, doc, float(value)))
    if result.tls is not None:
        families.append(_info("ssl_tls_version_info", "Negotiated TLS version.", "version",
                              result.tls.version))
        families.append(_info("ssl_tls_cipher_info", "Negotiated cipher suite.", "cipher",
                              clip_label(result.tls.cipher)))
    if result.fallback_tls is not None:
        families.append(_info("ssl_fallback_tls_version_info", "TLS version the fallback handshake negotiated.",
                              "version", result.fallback_tls.version))
        families.append(_info("ssl_fallback_tls_cipher_info", "Cipher suite the fallback handshake negotiated.",
                              "cipher", clip_label(result.fallback_tls.cipher)))
    positions = [position for position, _cert in result.placed_certs()]
    client = [("client", result.client_cert)] if result.client_cert else []
    families.extend(cert_families([*zip(positions, result.certs, strict=True), *client], cert_lines))
    if result.read_errors:
        families.append(read_error_family(result.read_errors))
    families.extend(revocation_families(result))
    if result.domain is not None:
        families.extend(domain_families(result.domain))
    families.extend(ari_families(result))
    if result.legacy_versions:
        legacy = GaugeFamily("ssl_tls_legacy_version_accepted",
                                   "1 when the server completes a handshake restricted to this legacy TLS version.",
                                   ["version"])
        for version, accepted in result.legacy_versions.items():
            legacy.add([version], float(accepted))
        families.append(legacy)
    families.extend(caa_families(result))
    return families


def caa_families(result: ProbeResult) -> list[GaugeFamily]:
    """CAA series of modules with ``caa:`` (docs/metrics.md, "CAA"); the whole target's."""
    check = result.caa
    if check is None:
        return []
    families = [gauge("ssl_caa_lookup_success", "1 when the CAA lookup for the verified name was answered.",
                      float(check.lookup_success))]
    if check.issuer_allowed is not None:
        families.append(gauge("ssl_caa_issuer_allowed", "1 when CAA lets the leaf's issuer issue again, "
                              "0 when it forbids it; absent when unknown.", float(check.issuer_allowed)))
    info = GaugeFamily("ssl_caa_info", "1 per record of the relevant CAA record set.",
                       ["domain", "flags", "tag", "value"])
    for record in check.records[: caa.MAX_RECORDS]:
        info.add([check.domain, str(record.flags), caa.exported_value(record.tag),
                  caa.exported_value(record.value)], 1.0)
    families.append(info)
    return families


# Series of a probe of every address (tcp.all_addresses) that speak for the whole target;
# every other series is per handshake and carries the address label (docs/metrics.md).
WHOLE_TARGET = ("ssl_probe_success", "ssl_probe_duration_seconds", "ssl_caa_lookup_success",
                "ssl_caa_issuer_allowed", "ssl_caa_info")


def every_address_families(result: ProbeResult, cert_lines: CertLines | None = None) -> list[GaugeFamily]:
    """The answer of a probe of every address: the whole target's success and duration, then
    each series of each address's probe with ``address`` added; what concerns the target as
    a whole (resolution, its phase and errors) has ``address=""``, as Prometheus reads an
    absent label."""
    views = [("", dataclasses.replace(result, addresses=None)),
             *((a.address, a.result) for a in result.addresses or ())]
    merged: dict[str, GaugeFamily] = {}
    for address, view in views:
        for family in probe_families(view, cert_lines=cert_lines):
            if family.name in WHOLE_TARGET:
                if not address:
                    merged[family.name] = family
                continue
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = GaugeFamily(family.name, family.documentation, ["address", *family.labels])
            into.lines.extend(with_label(line, family.name, "address", address) for line in family.lines)
    resolved = gauge("ssl_probe_addresses_resolved", "Addresses the name resolved to (tcp.all_addresses).",
                     float(result.addresses_resolved))
    success = GaugeFamily("ssl_probe_address_success",
                          "1 when the probe of this address succeeded (tcp.all_addresses).", ["address"])
    for item in result.addresses or ():
        success.add([item.address], float(item.result.success))
    whole = [merged.pop(name) for name in WHOLE_TARGET if name in merged]
    return [*whole, resolved, success, *merged.values()]


def revocation_families(result: ProbeResult) -> list[GaugeFamily]:
    """Revocation series (modules with ``revocation:``); unknown is absent from the 1/0 gauges."""
    families: list[GaugeFamily] = []
    if result.ocsp_stapled is not None:
        families.append(gauge("ssl_ocsp_stapled", "1 when the server stapled an OCSP response to the handshake.",
                               float(result.ocsp_stapled)))
    checks: tuple[RevocationCheck, ...] = result.revocation
    if not checks:
        return families
    info = GaugeFamily("ssl_revocation_status_info",
                             "Revocation status of each certificate by each method: good, revoked or unknown.",
                             ["position", "method", "status", "reason", "revocation_reason"])
    revoked = GaugeFamily("ssl_cert_revoked", "1 when the certificate is revoked, 0 when it is good; "
                                "absent when unknown.", ["position", "method"])
    revoked_at = GaugeFamily("ssl_cert_revocation_timestamp_seconds",
                                   "When a revoked certificate was revoked, as a Unix timestamp.",
                                   ["position", "method"])
    ocsp_next = GaugeFamily("ssl_ocsp_next_update_timestamp_seconds",
                                  "nextUpdate of the verified OCSP answer (queried or stapled).",
                                  ["position", "method"])
    crl_next = GaugeFamily("ssl_crl_next_update_timestamp_seconds",
                                 "nextUpdate of the verified CRL that answered for the certificate.",
                                 ["position"])
    for check in checks:
        info.add([check.position, check.method, check.status, check.reason, check.revocation_reason], 1.0)
        if check.status == "unknown":
            continue
        revoked.add([check.position, check.method], float(check.status == "revoked"))
        if check.revocation_time is not None:
            revoked_at.add([check.position, check.method], check.revocation_time)
        if check.next_update is not None:
            if check.method == "crl":
                crl_next.add([check.position], check.next_update)
            else:
                ocsp_next.add([check.position, check.method], check.next_update)
    families.append(info)
    families.extend(f for f in (revoked, revoked_at, ocsp_next, crl_next) if f.lines)
    return families


def domain_families(domain: DomainInfo) -> list[GaugeFamily]:
    """Registration series of the rdap prober (docs/domains.md); unknown dates are absent.

    Status and registrar values are capped in length where they are read (ssl_exporter.rdap)
    and escaped by the encoder.
    """
    families = [_info_pairs("ssl_domain_info", "The registrable domain probed and where its expiry comes from "
                                               "(rdap or expiry_override).",
                            ("domain", "source"), (domain.domain, domain.source))]
    dated = [
        ("ssl_domain_expiry_timestamp_seconds", "Registration expiry, as a Unix timestamp.", domain.expiry),
        ("ssl_domain_registration_timestamp_seconds", "Registration date, as a Unix timestamp.",
         domain.registration),
        ("ssl_domain_lookup_timestamp_seconds", "When the data shown was fetched from the registry.",
         domain.lookup_time),
    ]
    for name, doc, value in dated:
        if value is not None:
            families.append(gauge(name, doc, value))
    if domain.statuses:
        status = GaugeFamily("ssl_domain_status_info", "1 per RDAP status of the domain.", ["status"])
        for domain_status in domain.statuses:
            status.add([domain_status], 1.0)
        families.append(status)
    if domain.registrar:
        families.append(_info("ssl_domain_registrar_info", "The domain's registrar.", "registrar",
                              domain.registrar))
    return families


def _info_pairs(name: str, documentation: str, labels: tuple[str, ...], values: tuple[str, ...]) -> GaugeFamily:
    family = GaugeFamily(name, documentation, labels)
    family.add(values, 1.0)
    return family


def cert_families(certs: Iterable[tuple[str, CertInfo]], cert_lines: CertLines | None = None) -> list[GaugeFamily]:
    """Certificate series; ``certs`` pairs each certificate with its position label.
    ``cert_lines``: the lines rendered before, reused (see probe_families)."""
    certs = list(certs)
    if not certs:
        return []
    source_keys = tuple(sorted({key for _, cert in certs for key in cert.source}))
    labels = [*CERT_LABELS, *source_keys]
    not_after = GaugeFamily("ssl_cert_not_after_timestamp_seconds",
                            "Not-after of each distinct certificate, as a Unix timestamp.", labels)
    not_before = GaugeFamily("ssl_cert_not_before_timestamp_seconds",
                             "Not-before of each distinct certificate, as a Unix timestamp.", labels)
    info = GaugeFamily("ssl_cert_info", "Descriptive facts of each distinct certificate.",
                       [*labels, *CERT_INFO_LABELS])
    validity = GaugeFamily("ssl_cert_validity_period_seconds",
                           "Not-after minus not-before of each distinct certificate.", labels)
    for position, cert in certs:
        lines = _cert_lines(position, cert, source_keys, cert_lines)
        for family, line in zip((not_after, not_before, info, validity), lines, strict=True):
            if line:
                family.lines.append(line)
    return [not_after, not_before, info, validity]


# Rendered sample lines of a certificate, by (fingerprint, position, source labels): a scrape
# of unchanged files, or of a server presenting the same chain, renders nothing again.
# Bounded in bytes (its ``cert_lines`` share of --cache.max-bytes); the key holds no
# certificate text, the fingerprint stands for it. The cache is the caller's (one per process:
# ssl_exporter.prepare.Caches), so that nothing global changes per answer.
CertLines = lru.ByteLRU[tuple[str, str, str, str]]
_CERT_LINES_KEY_BYTES = 300  # the key tuple and the fingerprint


def _cert_label_values(position: str, cert: CertInfo, source_keys: Sequence[str]) -> tuple[str, ...]:
    """The values of CERT_LABELS and the source labels, capped: the same on every series of a
    certificate, so that they join."""
    return (position, clip_label(cert.subject_cn), clip_label(cert.issuer_cn), clip_label(cert.serial),
            *(clip_label(cert.source.get(k, ""), MAX_SOURCE_LABEL) for k in source_keys))


def _cert_lines(position: str, cert: CertInfo, source_keys: tuple[str, ...],
                memo: CertLines | None) -> tuple[str, str, str, str]:
    # Keyed by the source labels as read: the capped values are a function of them, worked
    # out only when the lines are rendered.
    source = tuple(cert.source.get(k, "") for k in source_keys)
    key = (cert.fingerprint_sha256, position, source_keys, source)
    lines = memo.get(key) if memo is not None else None
    if lines is not None:
        return lines
    values = _cert_label_values(position, cert, source_keys)
    labels = (*CERT_LABELS, *source_keys)
    facts = lint.facts(cert.der)
    info_values = (*values, clip_label(cert.subject, MAX_DN_LABEL), clip_label(cert.issuer, MAX_DN_LABEL),
                   _sans_label(cert), cert.fingerprint_sha256, clip_label(cert.key_algorithm), str(cert.key_bits),
                   clip_label(cert.signature_algorithm), *_lint_labels(facts), names_digest(cert))
    lines = (
        sample_line("ssl_cert_not_after_timestamp_seconds", labels, values, cert.not_after),
        sample_line("ssl_cert_not_before_timestamp_seconds", labels, values, cert.not_before),
        sample_line("ssl_cert_info", (*labels, *CERT_INFO_LABELS), info_values, 1.0),
        sample_line("ssl_cert_validity_period_seconds", labels, values, facts.validity_seconds) if facts else "",
    )
    if memo is not None:
        memo.put(key, lines, _CERT_LINES_KEY_BYTES + lru.text_size(*lines, *source))
    return lines


def _lint_labels(facts: CertLint | None) -> list[str]:
    if facts is None:
        return ["", "", "", ""]
    return [_bool(facts.weak_signature), str(facts.sct_count), _bool(facts.must_staple), _bool(facts.self_signed)]


def _bool(value: bool) -> str:
    return "true" if value else "false"


def read_error_family(errors: Iterable[ReadError]) -> GaugeFamily:
    """One series per source that could not be read, naming it (file, Secret key, ...)."""
    errors = list(errors)
    source_keys = sorted({key for error in errors for key in error.source})
    family = GaugeFamily("ssl_source_error_info",
                               "1 per certificate source that could not be read, by reason.",
                               [*source_keys, "reason"])
    for error in errors:
        family.add([*(clip_label(error.source.get(key, ""), MAX_SOURCE_LABEL) for key in source_keys),
                    error.reason], 1.0)
    return family


def names_digest(cert: CertInfo) -> str:
    """16 hex digits of SHA-256 over the sorted, lower-cased, distinct SAN names and
    addresses, one per line; "" for a CA certificate or one without SANs.

    Equal for every certificate of one name set whatever its order or source, so rules can
    join a served certificate with its renewal at rest exactly (docs/renewal.md).
    """
    if cert.is_ca:
        return ""
    names = sorted({*(n.lower() for n in cert.dns_names), *cert.ip_addresses})
    if not names:
        return ""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def ari_families(result: ProbeResult) -> list[GaugeFamily]:
    """ACME renewal windows (modules with ``ari:``), with the certificate's labels."""
    if not result.ari:
        return []
    source_keys = tuple(sorted({key for check in result.ari for key in check.cert.source}))
    labels = [*CERT_LABELS, *source_keys]
    start = GaugeFamily("ssl_cert_ari_window_start_timestamp_seconds",
                        "Start of the renewal window the CA suggests (RFC 9773), as a Unix timestamp.", labels)
    end = GaugeFamily("ssl_cert_ari_window_end_timestamp_seconds",
                      "End of the renewal window the CA suggests (RFC 9773), as a Unix timestamp.", labels)
    status = GaugeFamily("ssl_cert_ari_status_info",
                         "1 per certificate asked about: ok, or unknown with a documented reason.",
                         [*labels, "status", "reason"])
    for check in result.ari:
        cert = check.cert
        values = list(_cert_label_values(check.position, cert, source_keys))
        status.add([*values, check.status, check.reason], 1.0)
        if check.window_start is not None and check.window_end is not None:
            start.add(values, check.window_start)
            end.add(values, check.window_end)
    return [f for f in (start, end, status) if f.lines]


def _sans_label(cert: CertInfo) -> str:
    names = [*cert.dns_names, *cert.ip_addresses]
    text = ",".join(names)
    if len(text) <= MAX_SANS_LABEL:
        return text
    kept = text[:MAX_SANS_LABEL].rsplit(",", 1)[0]
    return f"{kept},...(+{len(names) - kept.count(',') - 1} more)"


def _info(name: str, documentation: str, label: str, value: str) -> GaugeFamily:
    family = GaugeFamily(name, documentation, [label])
    family.add([value], 1.0)
    return family


__all__ = ["probe_families", "encode"]
