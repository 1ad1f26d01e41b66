"""Revocation checks: OCSP (queried or stapled) and CRLs, verified, cached and bounded.

For every certificate the server presented that lies on the verified path (the leaf and the
intermediates, not the trust anchor), each method the module names gives one
:class:`~ssl_exporter.result.RevocationCheck`: good, revoked, or unknown with a reason from
:data:`UNKNOWN_REASONS`. Answers are verified, not just parsed (``cryptography.x509.ocsp``
parses a response but does not check its signature):

- OCSP: signed by the issuer, or by a delegated responder that the issuer certified with the
  OCSPSigning extended key usage and that is valid now (RFC 6960 4.2.2.2); the single
  response's CertID matches the certificate (issuer name hash, issuer key hash, serial); its
  thisUpdate is not in the future and its nextUpdate not in the past, give or take
  :data:`CLOCK_SKEW`.
- CRL: issued and signed by the issuer, nextUpdate not in the past (same skew).

An answer that fails any of these is ``unknown`` with the reason, never ``good``. Good and
revoked answers are cached until their nextUpdate, keyed by (issuer key hash, serial,
method), so a busy exporter asks a responder once per certificate and update period.

Fetches use plain ``http://`` (the norm for OCSP and CRLs, whose answers are signed), read
at most :data:`MAX_OCSP_BYTES` / :data:`MAX_CRL_BYTES`, follow no redirects, and run
concurrently within the probe's deadline minus :data:`DEADLINE_MARGIN`: a slow or dead
responder costs at most that, and what it leaves unanswered is ``unknown``/``timeout``
while the probe's certificate metrics are returned as usual.

A URL given by name is resolved like a probe's target, and the module's ``target_policy`` is
applied to every address it resolves to before any connection (:func:`_guarded_resolver`).
Identical fetches in flight at the same time are made once and shared
(:func:`_shared_fetch`). A downloaded CRL is parsed, and the digest of its signed part
computed, in a thread (hashing releases the GIL; cryptography's own check re-encodes the
whole list while holding it); it is kept, verified, until its nextUpdate, or for
:data:`CRL_TTL_WITHOUT_NEXT_UPDATE` when it has none, within the ``crls`` share of ``--cache.max-bytes``.
Answers, CRLs and fetches in flight live in a :class:`RevocationCache` the caller passes in
(the process's one is ``ssl_exporter.prepare.PROCESS_CACHES.revocation``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa, utils
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, SignatureAlgorithmOID

from ssl_exporter import lru, reasons
from ssl_exporter.access import TargetRefused
from ssl_exporter.certs import distinct
from ssl_exporter.der import tlv
from ssl_exporter.lru import ByteLRU, text_size
from ssl_exporter.printable import shorten
from ssl_exporter.result import CertInfo, RevocationCheck
from ssl_exporter.sources import read_regular
from ssl_exporter.targets import parse_target
from ssl_exporter.within import run_within

if TYPE_CHECKING:  # types only: the runtime imports would be unused
    from ssl_exporter.access import Policy
    from ssl_exporter.tls import HandshakeOutcome

log = logging.getLogger(__name__)

# Why a status is unknown: the `reason` label of ssl_revocation_status_info (docs/revocation.md).
UNKNOWN_REASONS = reasons.REVOCATION  # the registry lives in reasons.py

CLOCK_SKEW = 300.0  # seconds of clock difference tolerated on thisUpdate/nextUpdate
MAX_OCSP_BYTES = 64 * 1024
MAX_CRL_BYTES = 10 * 1024 * 1024
CACHE_SIZE = 10_000  # verified answers (a few hundred bytes each)
CRL_CACHE_SIZE = 32  # downloaded CRLs (up to MAX_CRL_BYTES each)
# How long a CRL without nextUpdate (which RFC 5280 requires) is kept and trusted before it is
# downloaded again. Without a bound it was fetched and verified again on every probe.
CRL_TTL_WITHOUT_NEXT_UPDATE = 900.0
DEADLINE_MARGIN = 0.1  # seconds kept from the probe's deadline to build its answer


# --- verdicts --------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """The answer about one certificate by one method, before it gets its position."""

    status: str
    reason: str = ""
    detail: str = ""
    next_update: float | None = None
    revocation_time: float | None = None
    revocation_reason: str = ""
    # Until when the answer may be cached when it has no nextUpdate (a CRL without one).
    cache_until: float | None = None


def _unknown(reason: str, detail: str) -> Verdict:
    assert reason in UNKNOWN_REASONS, reason
    return Verdict("unknown", reason, detail)


def evaluate_ocsp(der: bytes, cert: x509.Certificate, issuer: x509.Certificate, now: float) -> Verdict:
    """Verify a DER OCSP response about ``cert`` (issued by ``issuer``) and read its status."""
    try:
        response = ocsp.load_der_ocsp_response(der)
    except Exception as exc:  # bytes from the network: anything cryptography raises means "bad"
        return _unknown("bad_response", f"not a DER OCSP response: {exc}")
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return _unknown("bad_response", f"responder answered {response.response_status.name}")
    try:
        problem = _check_ocsp_signature(response, issuer, now)
        if problem:
            return _unknown("bad_signature", problem)
        single = _matching_single(response, cert, issuer)
        if single is None:
            return _unknown("no_match", f"no single response for serial {cert.serial_number:x} of this issuer")
        this_update = single.this_update_utc.timestamp()
        next_update = single.next_update_utc.timestamp() if single.next_update_utc else None
        status = single.certificate_status
        revocation_time = single.revocation_time_utc.timestamp() if single.revocation_time_utc else None
        reason_flag = single.revocation_reason
    except Exception as exc:  # a response that parses but breaks on a field
        return _unknown("bad_response", f"unreadable OCSP response: {type(exc).__name__}: {exc}")
    stale = _stale(this_update, next_update, now, "thisUpdate")
    if stale:
        return _unknown("stale", stale)
    if status == ocsp.OCSPCertStatus.UNKNOWN:
        return _unknown("responder_unknown", "the responder does not know this certificate")
    if status == ocsp.OCSPCertStatus.REVOKED:
        return Verdict("revoked", next_update=next_update, revocation_time=revocation_time,
                       revocation_reason=reason_flag.name if reason_flag else "")
    return Verdict("good", next_update=next_update)


def evaluate_crl(crl: x509.CertificateRevocationList, cert: x509.Certificate, issuer: x509.Certificate,
                 now: float, signed: Callable[[], bool] | None = None) -> Verdict:
    """Verify a CRL against ``issuer`` and look ``cert`` up in it.

    ``signed`` answers whether the issuer's key verifies the CRL's signature, when the caller
    knows a cheaper way than cryptography's (:meth:`LoadedCRL.evaluate`).
    """
    try:
        if crl.issuer != issuer.subject:
            return _unknown("no_match", f"CRL issued by {crl.issuer.rfc4514_string()}, "
                                        f"not {issuer.subject.rfc4514_string()}")
        if not (signed() if signed else crl.is_signature_valid(issuer.public_key())):  # type: ignore[arg-type]
            return _unknown("bad_signature", "the CRL's signature does not verify with the issuer's key")
        last_update = crl.last_update_utc.timestamp()
        next_update = crl.next_update_utc.timestamp() if crl.next_update_utc else None
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is None:
            revoked = None
        else:
            revoked = (entry.revocation_date_utc.timestamp(), _crl_entry_reason(entry))
    except Exception as exc:
        return _unknown("bad_response", f"unreadable CRL: {type(exc).__name__}: {exc}")
    stale = _stale(last_update, next_update, now, "thisUpdate")
    if stale:
        return _unknown("stale", stale)
    if revoked is not None:
        return Verdict("revoked", next_update=next_update, revocation_time=revoked[0], revocation_reason=revoked[1])
    return Verdict("good", next_update=next_update)


def _stale(this_update: float, next_update: float | None, now: float, name: str) -> str:
    if this_update > now + CLOCK_SKEW:
        return f"{name} is {this_update - now:.0f}s in the future"
    if next_update is not None and next_update < now - CLOCK_SKEW:
        return f"nextUpdate passed {now - next_update:.0f}s ago"
    return ""


def _crl_entry_reason(entry: x509.RevokedCertificate) -> str:
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
    except (x509.ExtensionNotFound, ValueError):
        return ""


def _check_ocsp_signature(response: ocsp.OCSPResponse, issuer: x509.Certificate, now: float) -> str:
    """Empty when an authorized signer's key verifies the response, else what went wrong."""
    problems = []
    candidates = [issuer, *response.certificates]
    for signer in candidates:
        if not _is_responder(response, signer):
            continue
        if signer is not issuer:
            problem = _delegation_problem(signer, issuer, now)
            if problem:
                problems.append(problem)
                continue
        try:
            _verify_signature(signer.public_key(), response.signature, response.tbs_response_bytes,
                              response.signature_hash_algorithm, response.signature_algorithm_oid)
        except (InvalidSignature, ValueError, TypeError) as exc:
            who = "the issuer" if signer is issuer else f"responder {signer.subject.rfc4514_string()}"
            problems.append(f"signature does not verify with {who}'s key ({type(exc).__name__})")
            continue
        return ""
    return "; ".join(problems) or "signed by a responder that is neither the issuer nor a certificate it sent"


def _is_responder(response: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    if response.responder_name is not None:
        return bool(response.responder_name == cert.subject)
    return response.responder_key_hash == hashlib.sha1(_spki_bits(cert)).digest()


def _delegation_problem(responder: x509.Certificate, issuer: x509.Certificate, now: float) -> str:
    name = responder.subject.rfc4514_string()
    try:
        responder.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return f"responder {name} is not issued by the certificate's issuer"
    try:
        usages = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        usages = None
    if usages is None or ExtendedKeyUsageOID.OCSP_SIGNING not in usages:
        return f"responder {name} lacks the OCSPSigning extended key usage"
    if not (responder.not_valid_before_utc.timestamp() - CLOCK_SKEW <= now
            <= responder.not_valid_after_utc.timestamp() + CLOCK_SKEW):
        return f"responder {name} is outside its validity period"
    return ""


def _verify_signature(key: Any, signature: bytes, data: bytes, hash_algorithm: hashes.HashAlgorithm | None,
                      oid: x509.ObjectIdentifier) -> None:
    if isinstance(key, rsa.RSAPublicKey):
        assert hash_algorithm is not None
        if oid == SignatureAlgorithmOID.RSASSA_PSS:
            pad: padding.AsymmetricPadding = padding.PSS(mgf=padding.MGF1(hash_algorithm),
                                                         salt_length=padding.PSS.AUTO)
        else:
            pad = padding.PKCS1v15()
        key.verify(signature, data, pad, hash_algorithm)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        assert hash_algorithm is not None
        key.verify(signature, data, ec.ECDSA(hash_algorithm))
    elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        key.verify(signature, data)
    elif isinstance(key, dsa.DSAPublicKey):
        assert hash_algorithm is not None
        key.verify(signature, data, hash_algorithm)
    else:
        raise TypeError(f"unsupported responder key {type(key).__name__}")


def _matching_single(response: ocsp.OCSPResponse, cert: x509.Certificate,
                     issuer: x509.Certificate) -> ocsp.OCSPSingleResponse | None:
    name_der = issuer.subject.public_bytes()
    key_bits = _spki_bits(issuer)
    for single in response.responses:
        if single.serial_number != cert.serial_number:
            continue
        algorithm = single.hash_algorithm
        if (single.issuer_name_hash == _digest(algorithm, name_der)
                and single.issuer_key_hash == _digest(algorithm, key_bits)):
            return single
    return None


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


def _spki_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING's bits, as OCSP key hashes take them (RFC 6960 4.1.1).

    Read from the certificate's own bytes rather than re-encoded from a loaded key, so an
    issuer whose key type cryptography cannot load still gets its CertID.
    """
    _, tbs, _ = tlv(cert.tbs_certificate_bytes)
    fields: list[tuple[int, bytes]] = []
    while tbs and len(fields) < 8:
        tag, value, tbs = tlv(tbs)
        fields.append((tag, value))
    if fields and fields[0][0] == 0xA0:  # explicit version
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
    _, spki = fields[5]
    _, _algorithm, rest = tlv(spki)
    tag, bits, _ = tlv(rest)
    if tag != 0x03 or not bits:
        raise ValueError("no subjectPublicKey BIT STRING")
    return bits[1:]  # drop the unused-bits count


def _issuer_key_hash(issuer: x509.Certificate) -> str:
    return hashlib.sha1(_spki_bits(issuer)).hexdigest()


# --- caches ----------------------------------------------------------------------------


class RevocationCache:
    """What revocation checks remember between probes: verified answers, downloaded CRLs and
    the fetches in flight. One per process (ssl_exporter.prepare.Caches), handed to every
    load, so a reload keeps them as it always did; a test makes its own for fresh state."""

    def __init__(self) -> None:
        self.results: ByteLRU[Verdict] = lru.budgeted("ocsp", CACHE_SIZE)  # (issuer key hash, serial, method)
        self.crls: ByteLRU[LoadedCRL] = lru.budgeted("crls", CRL_CACHE_SIZE)  # (CRL URL, proxy, policy)
        # Fetches in flight, by what makes them identical (URL, body, proxy, policy): shared by all.
        self.in_flight: dict[Hashable, asyncio.Task[Any]] = {}

    def clear(self) -> None:
        self.results.clear()
        self.crls.clear()
        self.in_flight.clear()

    def keep(self, key: tuple[str, int, str], verdict: Verdict, now: float) -> None:
        """Keep a verified answer until its nextUpdate (or cache_until).

        Only verified answers with a nextUpdate are kept; without one, RFC 5019 says newer
        information is always available, and an unknown answer is worth asking again."""
        until = verdict.next_update if verdict.next_update is not None else verdict.cache_until
        if verdict.status != "unknown" and until is not None and until > now:
            self.results.put(key, verdict, _verdict_size(verdict), until)


def _verdict_size(verdict: Verdict) -> int:
    return 200 + text_size(verdict.status, verdict.reason, verdict.detail, verdict.revocation_reason)


# --- downloaded CRLs ---------------------------------------------------------------------


class LoadedCRL:
    """A CRL (downloaded or from a file), with what checking it costs done once: parsed, the
    digest of its signed part computed (in a thread, by :func:`_load_crl`), and each issuer's
    verdict on its signature remembered."""

    def __init__(self, crl: x509.CertificateRevocationList, tbs_digest: bytes | None, size: int) -> None:
        self.crl = crl
        self.tbs_digest = tbs_digest  # None: a signature scheme that signs the whole message
        self.size = size
        self._signers: dict[str, bool] = {}
        self._lock = threading.Lock()

    def evaluate(self, cert: x509.Certificate, issuer: x509.Certificate, now: float) -> Verdict:
        """:func:`evaluate_crl`, in a thread, one at a time: looking a serial up scans the
        list holding the GIL (30-70 ms for 300,000 entries), so the event loop waits for at
        most one such scan, and the signature is checked once per issuer."""
        with self._lock:
            return evaluate_crl(self.crl, cert, issuer, now, signed=lambda: self._signed_by(issuer))

    def _signed_by(self, issuer: x509.Certificate) -> bool:
        key = _issuer_key_hash(issuer)
        if key not in self._signers:
            self._signers[key] = self._verify(issuer)
        return self._signers[key]

    def _verify(self, issuer: x509.Certificate) -> bool:
        crl, key = self.crl, issuer.public_key()
        algorithm = crl.signature_hash_algorithm
        if self.tbs_digest is None or algorithm is None:
            return crl.is_signature_valid(key)  # type: ignore[arg-type]
        prehashed = utils.Prehashed(algorithm)
        try:
            if isinstance(key, rsa.RSAPublicKey):
                pad: padding.AsymmetricPadding = (
                    padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.AUTO)
                    if crl.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS else padding.PKCS1v15())
                key.verify(crl.signature, self.tbs_digest, pad, prehashed)
            elif isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(crl.signature, self.tbs_digest, ec.ECDSA(prehashed))
            elif isinstance(key, dsa.DSAPublicKey):
                key.verify(crl.signature, self.tbs_digest, prehashed)
            else:
                return crl.is_signature_valid(key)  # type: ignore[arg-type]
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True


def _load_crl(data: bytes) -> LoadedCRL:
    """Parse a downloaded CRL (PEM or DER) and hash its signed part; run in a thread."""
    crl = load_crls(data)[0]
    algorithm = crl.signature_hash_algorithm
    digest = None
    if algorithm is not None and algorithm.name in hashlib.algorithms_available:
        try:
            digest = hashlib.new(algorithm.name, _signed_part(_first_der(data))).digest()  # releases the GIL
        except ValueError:  # leave it to cryptography's own check
            digest = None
    return LoadedCRL(crl, digest, 2 * len(data))


def _first_der(data: bytes) -> bytes:
    """The DER of the first CRL in PEM data (as load_crls reads it), or the DER data itself."""
    marker = b"-----BEGIN X509 CRL-----"
    if marker not in data:
        return data
    body = data.split(marker, 1)[1].split(b"-----END X509 CRL-----", 1)[0]
    try:
        return base64.b64decode(b"".join(body.split()), validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


def _signed_part(der: bytes) -> memoryview:
    """The tbsCertList of a DER CRL, as it was signed (SEQUENCE { tbsCertList, ... })."""
    _, body, _ = tlv(memoryview(der))
    _, _, rest = tlv(body)
    return body[: len(body) - len(rest)]


# --- CRL files from the configuration ---------------------------------------------------


class CRLFileError(ValueError):
    """A configured CRL file that is not a CRL."""


class CRLFiles:
    """The module's ``crl_files``: parsed at load, re-read when a file changes on disk.

    A file that cannot be re-read keeps its last good contents (and is logged), as a failed
    configuration reload keeps the last good configuration. Each CRL is held as a
    :class:`LoadedCRL`, so its signature is checked once per issuer, not on every probe.
    """

    def __init__(self, paths: Sequence[str]) -> None:
        self._files: dict[str, tuple[float, list[LoadedCRL]]] = {}
        for path in paths:
            try:
                self._files[path] = (os.stat(path).st_mtime, _load_all(_read(path)))
            except (OSError, ValueError) as exc:
                raise CRLFileError(f"{path}: {exc}") from None

    def __bool__(self) -> bool:
        return bool(self._files)

    def crls(self) -> list[x509.CertificateRevocationList]:
        return [loaded.crl for loaded in self.loaded()]

    def loaded(self) -> list[LoadedCRL]:
        """The CRLs, re-read from files that changed (call it in a thread: it may read)."""
        out = []
        for path, (mtime, crls) in list(self._files.items()):
            try:
                current = os.stat(path).st_mtime
                if current != mtime:
                    crls = _load_all(_read(path))
                    self._files[path] = (current, crls)
            except (OSError, ValueError) as exc:
                log.warning("CRL file %s could not be re-read, keeping its last contents: %s", path, exc)
            out.extend(crls)
        return out


def _load_all(data: bytes) -> list[LoadedCRL]:
    """Every CRL in PEM data (one or more blocks), or the one DER CRL, as LoadedCRLs."""
    marker = b"-----BEGIN X509 CRL-----"
    if marker not in data:
        return [_load_crl(data)]
    return [_load_crl(marker + part) for part in data.split(marker)[1:]]


def _read(path: str) -> bytes:
    """A CRL file's bytes: a regular file only, bounded (SourceError, a ValueError, if not).
    A FIFO or a device would hold a thread of the default executor, shared with getaddrinfo."""
    data, _ = read_regular(path, MAX_CRL_BYTES)
    return data


def load_crls(data: bytes) -> list[x509.CertificateRevocationList]:
    """Every CRL in PEM data (one or more blocks), or the one DER CRL."""
    marker = b"-----BEGIN X509 CRL-----"
    try:
        if marker in data:
            blocks = [marker + part for part in data.split(marker)[1:]]
            return [x509.load_pem_x509_crl(block) for block in blocks]
        return [x509.load_der_x509_crl(data)]
    except Exception:
        raise ValueError("not a CRL in PEM or DER") from None


# --- which certificates, and their issuers ----------------------------------------------


@dataclass(frozen=True)
class Subject:
    """A certificate whose revocation is checked, with its position label and issuer."""

    position: str
    cert: x509.Certificate
    issuer: x509.Certificate | None


def subjects(outcome: HandshakeOutcome, placed: Sequence[tuple[str, CertInfo]]) -> list[Subject]:
    """The presented certificates on the verified path, trust anchor excluded.

    When verification failed there is no verified path; the presented certificates that are
    not self-signed are taken, each with the issuer found among the certificates at hand
    (:func:`check` fetches nothing for them: ``unverified_chain``).
    Certificates the server did not present (an intermediate from the trust store) have no
    position label and are not checked.
    """
    positions = {c.der: position for position, c in placed}
    if outcome.verified:
        chain = [_load(der) for der in outcome.verified]
        out = []
        for i, der in enumerate(outcome.verified[:-1]):
            cert, issuer = chain[i], chain[i + 1]
            if der in positions and cert is not None:
                out.append(Subject(positions[der], cert, issuer))
        return out
    pool = [c for c in (_load(der) for der in distinct([*outcome.presented, *outcome.tried])) if c is not None]
    out = []
    for der, position in positions.items():
        cert = _load(der)
        if cert is None or _issued_by(cert, cert):
            continue  # unreadable, or a self-signed root: nobody to ask
        issuer = next((c for c in pool if c is not cert and _issued_by(cert, c)), None)
        out.append(Subject(position, cert, issuer))
    return out


def _load(der: bytes) -> x509.Certificate | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)  # negative serials
        try:
            return x509.load_der_x509_certificate(der)
        except Exception:
            return None


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:
        return False
    return True


def _http_urls(urls: Iterable[str]) -> list[str]:
    return [u for u in urls if u.lower().startswith("http://")]


def ocsp_urls(cert: x509.Certificate) -> list[str]:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except (x509.ExtensionNotFound, ValueError):
        return []
    return [d.access_location.value for d in aia
            if d.access_method == AuthorityInformationAccessOID.OCSP
            and isinstance(d.access_location, x509.UniformResourceIdentifier)]


def crl_urls(cert: x509.Certificate) -> list[str]:
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except (x509.ExtensionNotFound, ValueError):
        return []
    return [name.value for point in points for name in point.full_name or ()
            if isinstance(name, x509.UniformResourceIdentifier)]


# --- fetching --------------------------------------------------------------------------


class _FetchFailed(Exception):
    pass


def _guarded_resolver(policy: Policy) -> Any:
    """An aiohttp resolver that resolves as a probe's target is resolved (``getaddrinfo``) and
    applies the module's target_policy to every address before aiohttp connects to any of
    them: a denied address is refused whichever way the URL writes it (``localhost``, ``0x7f000001``),
    and the addresses checked are the ones used (no second lookup that could differ)."""
    class GuardedResolver(aiohttp.ThreadedResolver):
        async def resolve(self, host: str, port: int = 0,
                          family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
            results = await super().resolve(host, port, family)
            policy.check_addresses(parse_target(host, port or 80), [r["host"] for r in results])
            return results

    return GuardedResolver()


async def _fetch(url: str, limit: int, proxy: str | None, policy: Policy | None, body: bytes | None = None) -> bytes:
    """GET (or POST ``body`` to) ``url``; at most ``limit`` bytes; TargetRefused when the
    policy refuses an address the URL's host resolves to."""
    headers = {"Content-Type": "application/ocsp-request"} if body is not None else {}
    # Through a proxy the proxy resolves the name: only the name and a literal address are
    # checked then (_refusal), as for a probe's target.
    resolver = _guarded_resolver(policy) if policy is not None and proxy is None else None
    connector = aiohttp.TCPConnector(limit=1, force_close=True, resolver=resolver)
    try:
        async with aiohttp.ClientSession(connector=connector, trust_env=False,
                                         timeout=aiohttp.ClientTimeout(total=None)) as session:
            async with session.request("POST" if body is not None else "GET", url, data=body, headers=headers,
                                       allow_redirects=False, proxy=proxy) as response:
                if response.status != 200:
                    raise _FetchFailed(f"{url} answered HTTP {response.status}")
                if response.content_length is not None and response.content_length > limit:
                    raise _FetchFailed(f"{url} announced {response.content_length} bytes, more than {limit}")
                data = bytearray()
                async for chunk in response.content.iter_chunked(65536):
                    data += chunk
                    if len(data) > limit:
                        raise _FetchFailed(f"{url} sent more than {limit} bytes")
                return bytes(data)
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise _FetchFailed(f"{url}: {type(exc).__name__}: {shorten(exc)}") from None


async def _shared_fetch(in_flight: dict[Hashable, asyncio.Task[Any]], key: Hashable, budget: float,
                        start: Callable[[], Awaitable[Any]]) -> Any:
    """``start()``'s result, shared by every caller with the same ``key`` while it runs.

    Forty probes that need the same CRL at the same moment make one download. The work runs
    as a task of its own, bounded by the first caller's ``budget``; a caller that gives up
    (its own deadline) does not cancel it for the others.
    """
    loop = asyncio.get_running_loop()
    task = in_flight.get(key)
    if task is None or task.get_loop() is not loop:
        async def bounded() -> Any:
            async with asyncio.timeout(budget):
                return await start()

        task = asyncio.ensure_future(bounded())
        in_flight[key] = task

        def forget(done: asyncio.Task[Any], key: Hashable = key) -> None:
            if in_flight.get(key) is done:
                del in_flight[key]
            if not done.cancelled():
                done.exception()  # retrieved: a failure nobody waited for is not logged as lost

        task.add_done_callback(forget)
    return await asyncio.shield(task)


def _refusal(url: str, policy: Policy | None) -> Verdict | None:
    """``refused_by_policy`` when the module's target_policy refuses the URL's host, else None.

    Names and literal addresses are checked here, as for a probe's target, before anything
    is resolved; the addresses a name resolves to are checked by :func:`_guarded_resolver`.
    """
    if policy is None:
        return None
    try:
        parts = urlsplit(url)
        policy.check_target(parse_target(parts.hostname or "", parts.port or 80))
    except TargetRefused as exc:
        return _refused(url, exc)
    except ValueError as exc:  # TargetError too: no host the policy can check
        return _unknown("refused_by_policy", f"{url}: {exc}")
    return None


def _refused(url: str, exc: TargetRefused) -> Verdict:
    # The message, not the detail: the detail names a resolved address, which the probe's
    # debug output would show to whoever may call /probe (docs/security.md).
    return _unknown("refused_by_policy", f"{url}: {exc.message}")


async def _ask_ocsp(cache: RevocationCache, subject: Subject, proxy: str | None, policy: Policy | None,
                    budget: float) -> Verdict:
    assert subject.issuer is not None
    urls = _http_urls(ocsp_urls(subject.cert))
    if not urls:
        return _unknown("no_responder", "no http:// OCSP responder in the certificate's AIA")
    request = (ocsp.OCSPRequestBuilder().add_certificate(subject.cert, subject.issuer, hashes.SHA1())
               .build().public_bytes(Encoding.DER))
    verdict = _unknown("no_responder", "")
    for url in urls:
        refused = _refusal(url, policy)
        if refused is not None:
            verdict = refused
            continue
        try:
            der = await _shared_fetch(cache.in_flight, ("ocsp", url, request, proxy, policy), budget,
                                      partial(_fetch, url, MAX_OCSP_BYTES, proxy, policy, body=request))
        except _FetchFailed as exc:
            verdict = _unknown("fetch_failed", str(exc))
            continue
        except TargetRefused as exc:
            verdict = _refused(url, exc)
            continue
        verdict = evaluate_ocsp(der, subject.cert, subject.issuer, time.time())
        return replace(verdict, detail=f"{url}: {verdict.detail}" if verdict.detail else url)
    return verdict


async def _download_crl(url: str, proxy: str | None, policy: Policy | None) -> LoadedCRL:
    data = await _fetch(url, MAX_CRL_BYTES, proxy, policy)
    return await asyncio.to_thread(_load_crl, data)


async def _ask_crl(cache: RevocationCache, subject: Subject, proxy: str | None, files: CRLFiles | None,
                   policy: Policy | None, budget: float) -> Verdict:
    assert subject.issuer is not None
    issuer = subject.issuer
    verdicts = []
    for loaded in await asyncio.to_thread(files.loaded) if files else []:
        if loaded.crl.issuer == issuer.subject:
            verdict = await asyncio.to_thread(loaded.evaluate, subject.cert, issuer, time.time())
            verdicts.append(replace(verdict, detail="configured CRL file"))
    for url in _http_urls(crl_urls(subject.cert)):
        if any(v.status != "unknown" for v in verdicts):
            break
        refused = _refusal(url, policy)
        if refused is not None:
            verdicts.append(refused)
            continue
        key = (url, proxy, policy)
        crl = cache.crls.get(key, time.time())
        if crl is None:
            try:
                crl = await _shared_fetch(cache.in_flight, ("crl", *key), budget,
                                          partial(_download_crl, url, proxy, policy))
            except _FetchFailed as exc:
                verdicts.append(_unknown("fetch_failed", str(exc)))
                continue
            except TargetRefused as exc:
                verdicts.append(_refused(url, exc))
                continue
            except ValueError as exc:
                verdicts.append(_unknown("bad_response", f"{url}: {exc}"))
                continue
        fetched = time.time()
        verdict = await asyncio.to_thread(crl.evaluate, subject.cert, issuer, fetched)
        if verdict.status != "unknown":  # verified: kept until its nextUpdate, or for a while
            until = verdict.next_update
            if until is None:
                until = fetched + CRL_TTL_WITHOUT_NEXT_UPDATE
                verdict = replace(verdict, cache_until=until)
            if key not in cache.crls:
                cache.crls.put(key, crl, crl.size, until)
        verdicts.append(replace(verdict, detail=f"{url}: {verdict.detail}" if verdict.detail else url))
    if not verdicts:
        return _unknown("no_responder", "no http:// CRL distribution point and no configured CRL file "
                                        "from this issuer")
    return combine(verdicts)


def combine(verdicts: Sequence[Verdict]) -> Verdict:
    """Several answers by one method: any revoked wins, then any good, else the first unknown."""
    for status in ("revoked", "good"):
        for verdict in verdicts:
            if verdict.status == status:
                return verdict
    return verdicts[0]


# --- the probe's entry point -------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """What the revocation checks of one probe found; the prober records it."""

    checks: tuple[RevocationCheck, ...]
    stapled: bool | None  # whether the server stapled a response; None: stapling not asked for

    @property
    def revoked(self) -> tuple[RevocationCheck, ...]:
        """The checks that found a certificate revoked: what fails a probe that enforces revocation."""
        return tuple(c for c in self.checks if c.status == "revoked")

    def revoked_detail(self) -> str:
        """One line naming each revoked position, method and CRL reason."""
        return "; ".join(
            f"position {c.position} revoked ({c.method}{', ' + c.revocation_reason if c.revocation_reason else ''})"
            for c in self.revoked)


async def check(
    outcome: HandshakeOutcome,
    placed: Sequence[tuple[str, CertInfo]],
    methods: Sequence[str],
    deadline: float,
    cache: RevocationCache,
    *,
    crl_files: CRLFiles | None = None,
    proxy: str | None = None,
    policy: Policy | None = None,
    note: Callable[[str], None] = lambda _message: None,
) -> Report:
    """Check every certificate of the path by every method, within ``deadline`` (loop time).

    ``placed`` pairs the presented certificates with their position labels. When the chain
    did not verify nothing is fetched: the URLs in the certificates come from whoever
    answered, and fetching them would let a server steer the exporter's requests (and read
    their outcome back). Those checks are ``unverified_chain``; a stapled response, which
    needs no fetch, is still checked. ``cache`` holds what earlier probes learnt (the
    process's, through the module: ``module.caches.revocation``).
    """
    loop = asyncio.get_running_loop()
    staple = getattr(outcome, "ocsp_staple", None)
    stapled = bool(staple) if "stapling" in methods else None
    jobs: dict[tuple[str, str], Any] = {}  # (position, method) -> Verdict or coroutine
    verified = bool(outcome.verified)
    for subject in subjects(outcome, placed):
        for method in methods:
            if method == "stapling" and subject.position != "0":
                continue  # a staple is about the leaf
            if method == "stapling" and not staple:
                jobs[subject.position, method] = _unknown(
                    "not_stapled", "no stapled OCSP response" if staple is not None else "stapling handshake not used")
                continue
            if method != "stapling" and not verified:
                jobs[subject.position, method] = _unknown(
                    "unverified_chain", "the chain did not verify: its responders and CRL locations are not fetched")
                continue
            if subject.issuer is None:
                jobs[subject.position, method] = _unknown("no_issuer", "the issuer is not among the certificates")
                continue
            if method == "stapling":
                assert staple
                jobs[subject.position, method] = evaluate_ocsp(staple, subject.cert, subject.issuer, time.time())
                continue
            key = (_issuer_key_hash(subject.issuer), subject.cert.serial_number, method)
            # Answers from the module's own CRL files are not cached: the files are read anew
            # when they change, and they must not leak into modules that do not name them.
            cacheable = not (method == "crl" and crl_files)
            cached = cache.results.get(key, time.time()) if cacheable else None
            if cached is not None:
                note(f"revocation: position {subject.position} {method} from cache")
                jobs[subject.position, method] = cached
            else:
                jobs[subject.position, method] = (key if cacheable else None, subject, method)

    pending = {k: v for k, v in jobs.items() if isinstance(v, tuple)}
    if pending:
        budget = deadline - DEADLINE_MARGIN - loop.time()
        verdicts = await _run_fetches(cache, pending, budget, crl_files, proxy, policy)
        now = time.time()
        for job, verdict in verdicts.items():
            if pending[job][0] is not None:
                cache.keep(pending[job][0], verdict, now)
            jobs[job] = verdict
    checks = []
    for (position, method), verdict in jobs.items():
        checks.append(RevocationCheck(position=position, method=method, status=verdict.status,
                                      reason=verdict.reason, detail=verdict.detail,
                                      next_update=verdict.next_update, revocation_time=verdict.revocation_time,
                                      revocation_reason=verdict.revocation_reason))
        note(f"revocation: position {position} {method} {verdict.status}"
             + (f" ({verdict.reason})" if verdict.reason else "")
             + (f": {verdict.detail}" if verdict.detail else ""))
    return Report(tuple(checks), stapled)


async def _run_fetches(cache: RevocationCache, pending: dict[tuple[str, str], Any], budget: float,
                       crl_files: CRLFiles | None, proxy: str | None,
                       policy: Policy | None = None) -> dict[tuple[str, str], Verdict]:
    """Run the network checks concurrently; what is not done within ``budget`` is a timeout."""
    timed_out = _unknown("timeout", f"no answer within the probe's deadline ({max(budget, 0):.2f}s left)")
    if budget <= 0:
        return dict.fromkeys(pending, timed_out)
    results: dict[tuple[str, str], Verdict] = {}
    outcomes = await run_within({job: _ask_ocsp(cache, subject, proxy, policy, budget) if method == "ocsp"
                                 else _ask_crl(cache, subject, proxy, crl_files, policy, budget)
                                 for job, (_key, subject, method) in pending.items()}, budget)
    for job, outcome in outcomes.items():
        if outcome is None or isinstance(outcome, TimeoutError):  # TimeoutError: a shared fetch's own bound
            results[job] = timed_out
        elif isinstance(outcome, BaseException):
            log.error("revocation check crashed", exc_info=outcome)
            results[job] = _unknown("internal_error", f"{type(outcome).__name__}: {outcome}")
        else:
            results[job] = outcome
    return results
