"""The data contract between probers and metrics.

Probers return a :class:`ProbeResult`; :mod:`ssl_exporter.metrics` turns it into metric
families. Nothing here does I/O, and nothing here knows a metric name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProbeError:
    """One failure of a probe.

    ``stage`` and ``reason`` come from the finite sets in :mod:`ssl_exporter.errors` and
    become labels; ``detail`` is free text (OpenSSL's message, errno text) for logs only.
    """

    stage: str
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class CertInfo:
    """What we export about one certificate, parsed once from its DER bytes."""

    der: bytes
    subject_cn: str
    issuer_cn: str
    subject: str
    issuer: str
    serial: str
    not_before: float
    not_after: float
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    fingerprint_sha256: str
    key_algorithm: str
    key_bits: int
    signature_algorithm: str
    is_ca: bool
    self_issued: bool
    # Labels that say where the certificate came from (file, namespace/secret/key);
    # empty for certificates presented in a handshake.
    source: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReadError:
    """A source (file, kubeconfig entry, Secret key) that could not be read.

    ``source`` holds the labels naming it, as on CertInfo; ``reason`` is a documented
    read reason.
    """

    source: Mapping[str, str]
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class TLSInfo:
    version: str  # "TLS 1.3"
    cipher: str  # OpenSSL's name, e.g. "TLS_AES_256_GCM_SHA384"


@dataclass(frozen=True)
class RevocationCheck:
    """The revocation status of one certificate by one method (``revocation:`` modules).

    ``status`` is good, revoked or unknown; an answer that could not be verified is unknown
    with a ``reason`` from :data:`ssl_exporter.revocation.UNKNOWN_REASONS`, never good.
    """

    position: str  # the certificate's position label, "0" the leaf
    method: str  # ocsp | crl | stapling
    status: str  # good | revoked | unknown
    reason: str = ""  # unknown only: a documented reason (a label)
    detail: str = ""  # free text for logs and debug output, never a label
    next_update: float | None = None  # the verified answer's nextUpdate
    revocation_time: float | None = None  # revoked only
    revocation_reason: str = ""  # revoked only, when given: RFC 5280 CRLReason, snake_case


@dataclass(frozen=True)
class CAARecord:
    """One CAA record (RFC 8659): flags, tag (lower case) and value as text."""

    flags: int
    tag: str
    value: str


@dataclass(frozen=True)
class CAAResult:
    """The CAA check of a module with ``caa:`` (ssl_exporter.caa); ``issuer_allowed`` None
    means unknown."""

    lookup_success: bool
    name: str = ""  # the name looked up: the verified name, or *.parent for a wildcard leaf
    domain: str = ""  # where the relevant record set was found; "" when there is none
    records: tuple[CAARecord, ...] = ()
    issuer_allowed: bool | None = None
    reason: str = ""  # why the lookup failed (servfail, refused, timeout, dns)


@dataclass(frozen=True)
class AriCheck:
    """The renewal window the CA suggests for one certificate (RFC 9773, ``ari:`` modules).

    ``status`` is ok or unknown; unknown carries a ``reason`` from
    :data:`ssl_exporter.ari.REASONS` and no window.
    """

    position: str
    cert: CertInfo  # whose labels the ARI series carry
    status: str  # ok | unknown
    reason: str = ""
    window_start: float | None = None
    window_end: float | None = None
    detail: str = ""  # free text for logs and debug output, never a label


@dataclass(frozen=True)
class CertLint:
    """Certificate-depth facts computed from DER (:mod:`ssl_exporter.lint`)."""

    validity_seconds: float  # not-after minus not-before
    weak_signature: bool  # signed with MD5 or SHA-1 (a self-signed CA's own signature aside)
    sct_count: int  # embedded precertificate SCTs (RFC 6962)
    must_staple: bool  # TLS feature extension with status_request (RFC 7633)
    self_signed: bool  # subject equals issuer and the certificate's own key verifies it


@dataclass(frozen=True)
class DomainInfo:
    """A domain's registration data (the ``rdap`` prober, docs/domains.md); None is unknown."""

    domain: str  # the registrable domain the target was reduced to
    source: str  # "rdap", or "expiry_override" when the expiry comes from the config
    expiry: float | None = None
    registration: float | None = None
    statuses: tuple[str, ...] = ()  # RDAP status values, lower case ("client hold", ...)
    registrar: str | None = None
    lookup_time: float | None = None  # when the data was fetched from the registry
    server: str = ""  # the RDAP URL(s) that answered, for logs and debug output


@dataclass(frozen=True)
class ProbeResult:
    """Everything one probe learned. ``None`` means "not known", never "bad"."""

    success: bool
    duration: float
    phases: Mapping[str, float] = field(default_factory=dict)
    errors: tuple[ProbeError, ...] = ()
    certs: tuple[CertInfo, ...] = ()
    # The position label of each certificate: its index within its own file or Secret key
    # for sources at rest, its index in the presented chain (duplicates dropped) for a
    # handshake; empty means "the index in certs". Read it through placed_certs().
    positions: tuple[str, ...] = ()
    read_errors: tuple[ReadError, ...] = ()
    handshake_success: bool | None = None
    chain_valid: bool | None = None
    hostname_valid: bool | None = None
    verified_chain_expiry: float | None = None
    tls: TLSInfo | None = None
    # The client certificate the probe presented (mTLS), exported with position "client".
    client_cert: CertInfo | None = None
    # Step-by-step log of the probe, for debug output and the recent-probes page.
    log: tuple[str, ...] = ()
    # Revocation (modules with ``revocation:``): one entry per certificate and method.
    revocation: tuple[RevocationCheck, ...] = ()
    # Whether the server stapled an OCSP response; None when stapling was not requested.
    ocsp_stapled: bool | None = None
    # Legacy TLS versions checked (modules with ``legacy_versions:``): "TLS 1.0" -> accepted.
    legacy_versions: Mapping[str, bool] = field(default_factory=dict)
    # TLS probes: whether the certificates came from the permissive fallback handshake made
    # after the probe's handshake failed for policy reasons, and what that one negotiated.
    fallback_handshake: bool | None = None
    fallback_tls: TLSInfo | None = None
    # Domain registration data (rdap prober).
    domain: DomainInfo | None = None
    # tcp modules with all_addresses (docs/metrics.md, "Every address behind a name"): one
    # result per address probed, in resolution order; None for a probe of one address. The
    # fields above then hold what concerns the whole target only (resolution, success).
    addresses: tuple[AddressResult, ...] | None = None
    addresses_resolved: int = 0  # how many addresses the name had (more than probed when capped)
    # Modules with caa: whether the leaf's issuer may issue again (RFC 8659).
    caa: CAAResult | None = None
    # ACME renewal windows (modules with ``ari:``): one entry per end-entity certificate.
    ari: tuple[AriCheck, ...] = ()

    def placed_certs(self) -> list[tuple[str, CertInfo]]:
        """Each certificate with its position label, as the metrics export it."""
        return placed(self.certs, self.positions)


@dataclass(frozen=True)
class AddressResult:
    """What the probe of one address of a name learned: its own handshake, chain and verdicts."""

    address: str
    result: ProbeResult


def address_views(result: ProbeResult) -> list[tuple[str, ProbeResult]]:
    """``("", result)`` for a probe of one address; else ``(address, its result)`` for each
    address probed. What the pages and ``check`` iterate on to show every handshake."""
    if result.addresses is None:
        return [("", result)]
    return [(a.address, a.result) for a in result.addresses]


def all_errors(result: ProbeResult) -> list[tuple[str, ProbeError]]:
    """Every failure of a probe with the address it concerns ("" for the whole target)."""
    found = [("", error) for error in result.errors]
    return found + [(a.address, error) for a in result.addresses or () for error in a.result.errors]


def placed(certs: Sequence[CertInfo], positions: Sequence[str]) -> list[tuple[str, CertInfo]]:
    """Pair certificates with their position labels; no labels means their indexes.

    A presented certificate that could not be parsed is missing from ``certs`` but keeps
    its place: the ones after it keep their own positions rather than moving up.
    """
    labels = positions or [str(i) for i in range(len(certs))]
    return list(zip(labels, certs, strict=True))
