"""ACME Renewal Information (RFC 9773): the renewal window a CA suggests for a certificate.

Modules with ``ari:`` ask the CA that issued each end-entity certificate of a probe (the
served leaf, or each certificate at rest) when it wants the certificate renewed. A CA moves
the window into the past when it plans to revoke early, so an alert on the window sees a
mass revocation days before the expiry alerts would (docs/renewal.md).

The steps, per certificate:

1. Which CA: the configured ``ari.cas`` entries first, then :data:`~ssl_exporter.arisettings.BUILTIN_CAS`; each entry
   matches on something stable in the certificate (the host of its AIA caIssuers URL, or its
   authority key identifier) and names the CA's ACME directory URL.
2. The directory (a JSON object) gives the ``renewalInfo`` URL.
3. GET ``renewalInfo/<certID>`` without authentication, where certID is base64url(AKI
   keyIdentifier) "." base64url(the serial's DER integer bytes).

Nothing but that certificate ID goes to the CA. Answers are cached per certificate for as
long as ``Retry-After`` says (:data:`DEFAULT_RETRY`) within a byte budget; a fetch runs only
within the probe's deadline, and a failure never fails the probe: the check is ``unknown``
with a reason from :data:`REASONS`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email.utils
import json
import logging
import math
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID

from ssl_exporter import lru, reasons
from ssl_exporter.access import Policy, TargetRefused
from ssl_exporter.arisettings import AriConfig, AriConfigError, CAEntry, CertFacts
from ssl_exporter.lru import ByteLRU, text_size
from ssl_exporter.result import AriCheck, CertInfo, placed
from ssl_exporter.targets import parse_target
from ssl_exporter.within import run_within

log = logging.getLogger(__name__)

# Why a window is unknown: the ``reason`` label of ssl_cert_ari_status_info (docs/metrics.md).
REASONS = reasons.ARI  # the registry lives in reasons.py

DEFAULT_RETRY = 6 * 3600.0  # seconds an answer is kept when the CA sends no Retry-After
MIN_RETRY = 60.0  # RFC 9773 4.3: clients clamp Retry-After to a reasonable range
MAX_RETRY = 24 * 3600.0
ERROR_RETRY = 15 * 60.0  # a failed answer (404, malformed, unreachable) is asked again after this
MAX_DIRECTORY_BYTES = 64 * 1024
MAX_RENEWAL_INFO_BYTES = 16 * 1024
DEADLINE_MARGIN = 0.1  # seconds kept from the probe's deadline to build its answer


# --- the runtime of one module's ``ari:`` --------------------------------------------------


@dataclass(frozen=True)
class AriClient:
    """What a module's ARI requests need besides its settings, built once per load
    (ssl_exporter.prepare): the HTTPS context for the CA's servers and the module's target
    policy (the global block included)."""

    settings: AriConfig
    # The answers and directories of every module, kept for the life of the process
    # (ssl_exporter.prepare.Caches): a reload must not ask the CAs again.
    cache: AriCache
    ssl_context: ssl.SSLContext | None = None  # None: the system's trust store
    policy: Policy | None = None


def client(settings: AriConfig, policy: Policy | None, path: str, cache: AriCache) -> AriClient:
    """The module's AriClient; AriConfigError (naming ``path``.ca_file) if the CA file is unusable."""
    context = None
    if settings.ca_file is not None:
        try:
            context = ssl.create_default_context(cafile=settings.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise AriConfigError(f"{path}.ca_file: cannot load {settings.ca_file}: {exc}") from None
    return AriClient(settings, cache, context, policy)


# --- the certificate's facts --------------------------------------------------------------


def _facts(der: bytes) -> CertFacts | None:
    try:
        cert = x509.load_der_x509_certificate(der)
        serial = cert.serial_number
    except ValueError:
        return None
    key_id = None
    try:
        key_id = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except (x509.ExtensionNotFound, ValueError):
        pass
    hosts = []
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        for desc in aia:
            if desc.access_method == AuthorityInformationAccessOID.CA_ISSUERS and isinstance(
                    desc.access_location, x509.UniformResourceIdentifier):
                host = urlsplit(desc.access_location.value).hostname
                if host:
                    hosts.append(host.lower())
    except (x509.ExtensionNotFound, ValueError):
        pass
    return CertFacts(key_id or None, serial, tuple(hosts))


def cert_id(key_id: bytes, serial: int) -> str:
    """RFC 9773 4.1: base64url(AKI keyIdentifier) "." base64url(serial as DER INTEGER content)."""
    # The DER content octets of a positive INTEGER: big-endian, with a leading zero byte
    # when the top bit would otherwise make it negative.
    serial_bytes = serial.to_bytes(serial.bit_length() // 8 + 1, "big")
    return f"{_b64url(key_id)}.{_b64url(serial_bytes)}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- answers and their cache -------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What the CA said about one certificate (or why it is unknown)."""

    reason: str = ""  # "" when the window is known
    start: float | None = None
    end: float | None = None
    detail: str = ""


# _key(...) -> a renewalInfo URL or an Answer; one per process (ssl_exporter.prepare.Caches).
AriCache = ByteLRU[str | Answer]


def new_cache() -> AriCache:
    return lru.budgeted("ari")


def _key(kind: str, config: AriClient, proxy: str | None, directory: str, ident: str = "") -> tuple[object, ...]:
    """What a cached answer depends on besides the CA: a module with another trust store,
    proxy or target policy must not be served an answer (or a failure) fetched for another."""
    return (kind, config.settings.ca_file, proxy, config.policy, directory, ident)
_clock: Callable[[], float] = time.time  # replaced by tests that let an answer expire


def retry_seconds(header: str | None, now: float, default: float = DEFAULT_RETRY) -> float:
    """Seconds to keep an answer: Retry-After (delta-seconds or HTTP-date), clamped."""
    seconds = default
    if header:
        text = header.strip()
        if text.isdigit():
            seconds = float(text)
        else:
            try:
                seconds = email.utils.parsedate_to_datetime(text).timestamp() - now
            except (TypeError, ValueError, IndexError):
                seconds = default
    return min(max(seconds, MIN_RETRY), MAX_RETRY)


def parse_renewal_info(body: bytes) -> Answer:
    """A renewalInfo body -> the window, or ``bad_response``."""
    try:
        data = json.loads(body)
        window = data["suggestedWindow"]
        start, end = _rfc3339(window["start"]), _rfc3339(window["end"])
    except (ValueError, TypeError, KeyError) as exc:
        return Answer("bad_response", detail=f"renewalInfo is not RFC 9773 JSON: {type(exc).__name__}: {exc}"[:300])
    if end <= start:
        return Answer("bad_response", detail="suggestedWindow ends before it starts")
    return Answer(start=start, end=end)


def _rfc3339(value: Any) -> float:
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError("not an RFC 3339 timestamp")
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    stamp = parsed.timestamp()
    if not math.isfinite(stamp):
        raise ValueError(f"{value!r} is out of range")
    return stamp


class _Failed(Exception):
    def __init__(self, reason: str, detail: str, retry_after: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after


async def _get(session: Any, url: str, limit: int, proxy: str | None, context: Any) -> tuple[bytes, str | None]:
    """GET ``url`` (no redirects, at most ``limit`` bytes) -> (body, Retry-After)."""
    try:
        async with session.get(url, allow_redirects=False, proxy=proxy,
                               ssl=context if context is not None else True) as response:
            retry_after = response.headers.get("Retry-After")
            if response.status == 404:
                raise _Failed("not_found", f"{url} answered HTTP 404", retry_after)
            if response.status != 200:
                raise _Failed("fetch_failed", f"{url} answered HTTP {response.status}", retry_after)
            data = bytearray()
            async for chunk in response.content.iter_chunked(16384):
                data += chunk
                if len(data) > limit:
                    raise _Failed("fetch_failed", f"{url} sent more than {limit} bytes", retry_after)
            return bytes(data), retry_after
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise _Failed("fetch_failed", f"{url}: {type(exc).__name__}: {' '.join(str(exc).split())}"[:300]) from None


def _refusal(url: str, policy: Policy | None) -> str:
    """Why the module's target_policy refuses the URL's host ("" when it does not)."""
    if policy is None:
        return ""
    try:
        parts = urlsplit(url)
        policy.check_target(parse_target(parts.hostname or "", parts.port or 443))
    except TargetRefused as exc:
        return f"{url}: {exc.detail}"
    except ValueError as exc:
        return f"{url}: {exc}"
    return ""


async def _renewal_info_url(session: Any, directory: str, proxy: str | None, config: AriClient) -> str:
    now = _clock()
    key = _key("dir", config, proxy, directory)
    cached = config.cache.get(key, now)
    if isinstance(cached, str):
        return cached
    if isinstance(cached, Answer):
        raise _Failed(cached.reason, cached.detail + " (cached)")
    try:
        body, retry_after = await _get(session, directory, MAX_DIRECTORY_BYTES, proxy, config.ssl_context)
        try:
            url = json.loads(body).get("renewalInfo")
        except (ValueError, AttributeError):
            raise _Failed("bad_response", f"{directory}: the directory is not a JSON object", retry_after) from None
        if url is None:
            raise _Failed("no_renewal_info", f"{directory} names no renewalInfo URL", retry_after)
        if not isinstance(url, str) or urlsplit(url).scheme not in ("https", "http") or len(url) > 2048:
            raise _Failed("bad_response", f"{directory}: renewalInfo is not a URL", retry_after)
    except _Failed as exc:
        failed = Answer(exc.reason, detail=exc.detail)
        config.cache.put(key, failed, text_size(exc.detail) + 200,
                   now + retry_seconds(exc.retry_after, now, ERROR_RETRY))
        raise
    config.cache.put(key, url, text_size(url) + 200, now + retry_seconds(retry_after, now))
    return url


async def _ask(session: Any, entry: CAEntry, ident: str, config: AriClient, proxy: str | None) -> Answer:
    now = _clock()
    key = _key("info", config, proxy, entry.directory, ident)
    try:
        base = await _renewal_info_url(session, entry.directory, proxy, config)
        refused = _refusal(base, config.policy)
        if refused:
            return Answer("refused_by_policy", detail=refused)
        url = f"{base.rstrip('/')}/{ident}"
        body, retry_after = await _get(session, url, MAX_RENEWAL_INFO_BYTES, proxy, config.ssl_context)
    except _Failed as exc:
        answer = Answer(exc.reason, detail=exc.detail)
        if not exc.detail.endswith("(cached)"):
            config.cache.put(key, answer, text_size(exc.detail) + 200,
                       now + retry_seconds(exc.retry_after, now, ERROR_RETRY))
        return answer
    answer = parse_renewal_info(body)
    default = DEFAULT_RETRY if not answer.reason else ERROR_RETRY
    answer = Answer(answer.reason, answer.start, answer.end, answer.detail or url)
    config.cache.put(key, answer, text_size(answer.detail) + 200,
               now + retry_seconds(retry_after, now, default))
    return answer


# --- the probe's entry point --------------------------------------------------------------


def _subjects(certs: Sequence[tuple[str, CertInfo]], served: bool) -> list[tuple[str, CertInfo]]:
    """The certificates ARI is about: the leaf of a handshake, every end-entity one at rest."""
    if served:
        return [(p, c) for p, c in certs if p == "0" and not c.is_ca][:1]
    return [(p, c) for p, c in certs if not c.is_ca]


async def check(certs: Sequence[tuple[str, CertInfo]], config: AriClient, deadline: float, *,
                served: bool, proxy: str | None = None,
                note: Callable[[str], None] = lambda _m: None) -> tuple[AriCheck, ...]:
    """The ARI window of each certificate ARI is about, within ``deadline`` (loop time)."""
    loop = asyncio.get_running_loop()
    results: dict[int, Answer] = {}
    pending: dict[int, tuple[CAEntry, str]] = {}
    subjects = _subjects(certs, served)
    now = _clock()
    for index, (_position, cert) in enumerate(subjects):
        facts = _facts(cert.der)
        entry = config.settings.find(facts) if facts else None
        if facts is None or entry is None:
            results[index] = Answer("no_ca", detail="no configured or built-in ACME CA matches the issuer")
            continue
        if facts.key_id is None:
            results[index] = Answer("no_key_id", detail="no authority key identifier")
            continue
        refused = _refusal(entry.directory, config.policy)
        if refused:
            results[index] = Answer("refused_by_policy", detail=refused)
            continue
        ident = cert_id(facts.key_id, facts.serial)
        cached = config.cache.get(_key("info", config, proxy, entry.directory, ident), now)
        if isinstance(cached, Answer):
            results[index] = Answer(cached.reason, cached.start, cached.end, f"{cached.detail} (from cache)")
        else:
            pending[index] = (entry, ident)
    if pending:
        budget = deadline - DEADLINE_MARGIN - loop.time()
        results.update(await _run(pending, budget, config, proxy))
    checks = []
    for index, (position, cert) in enumerate(subjects):
        answer = results[index]
        status = "unknown" if answer.reason else "ok"
        checks.append(AriCheck(position=position, cert=cert, status=status, reason=answer.reason,
                               window_start=answer.start, window_end=answer.end, detail=answer.detail))
        note(f"ari: position {position} {status}" + (f" ({answer.reason})" if answer.reason else "")
             + (f": {answer.detail}" if answer.detail else ""))
    return tuple(checks)


async def _run(pending: dict[int, tuple[CAEntry, str]], budget: float, config: AriClient,
               proxy: str | None) -> dict[int, Answer]:
    timed_out = Answer("timeout", detail=f"no answer within the probe's deadline ({max(budget, 0):.2f}s left)")
    if budget <= 0:
        return dict.fromkeys(pending, timed_out)
    results: dict[int, Answer] = {}
    # A request cut at the deadline closes its TLS connection gracefully, waiting for a CA
    # that may never answer; on the Pythons that need it (3.11, 3.12 < 3.12.8), cleanup_closed
    # makes closing the session abort such connections instead of leaving their sockets open.
    connector = aiohttp.TCPConnector(limit=8, force_close=True,
                                     enable_cleanup_closed=getattr(aiohttp.connector, "NEEDS_CLEANUP_CLOSED", False))
    async with aiohttp.ClientSession(connector=connector, trust_env=False,
                                     timeout=aiohttp.ClientTimeout(total=None)) as session:
        outcomes = await run_within({index: _ask(session, entry, ident, config, proxy)
                                     for index, (entry, ident) in pending.items()}, budget)
    for index, outcome in outcomes.items():
        if outcome is None:
            results[index] = timed_out
        elif isinstance(outcome, BaseException):
            log.error("ARI request crashed", exc_info=outcome)
            results[index] = Answer("internal_error", detail=f"{type(outcome).__name__}: {outcome}")
        else:
            results[index] = outcome
    return results


class Recorder(Protocol):
    """What :func:`apply` reads and writes: a probe's recorder (ssl_exporter.probers.base),
    named by its shape so that this module stays below the probers."""

    certs: tuple[CertInfo, ...]
    positions: tuple[str, ...]
    deadline: float | None
    ari: tuple[AriCheck, ...]

    def note(self, message: str) -> None: ...


async def apply(rec: Recorder, config: AriClient | None, served: bool, proxy: str | None) -> None:
    """Record the ARI windows of a probe's certificates; never raises (a failure here must
    not cost the certificate metrics already recorded)."""
    if config is None or not rec.certs or rec.deadline is None:
        return
    try:
        rec.ari = await check(placed(rec.certs, rec.positions), config, rec.deadline, served=served,
                              proxy=config.settings.proxy_url or proxy, note=rec.note)
    except Exception as exc:
        log.exception("ARI checks crashed")
        rec.note(f"ari: checks crashed: {type(exc).__name__}: {exc}")
