"""Domain registration data over RDAP (RFC 9082/9083), for the ``rdap`` prober.

A lookup finds the registry's RDAP server through the IANA bootstrap registry (RFC 9224)
or a configured per-TLD server, asks it for the domain, and follows the registry's
referral to the registrar's RDAP server when the registry's answer has no expiration
(thin registries). Everything a server sends is hostile: answers are read up to
``max_response_bytes``, redirects up to ``max_redirects``, only ``https://`` URLs are asked
unless ``allow_http`` is set, every URL's host passes the module's ``target_policy`` (the
name before connecting, the resolved addresses in the resolver the connection uses), and
dates, statuses and names are checked before they become metrics.

Registries rate-limit and the data changes rarely, so lookups are cached per domain for
``cache_ttl`` and never asked per scrape: a failed lookup is retried after ``error_retry``
(or the server's ``Retry-After``, which also holds back every other lookup on that host),
the last good answer is served meanwhile with the time it was fetched, requests to one
RDAP host are limited to ``host_concurrency`` at a time, and concurrent probes of one
domain share one lookup. The cache is a :class:`~ssl_exporter.lru.ByteLRU`.

Why not a client library: whoisit, whodap and asyncwhois fetch with requests/httpx under
their own timeouts and redirect rules, with no hook for a byte bound, the module's TLS
trust store, its HTTP proxy or a check of every connected address against the target
policy (docs/domains.md). None of them ships the bootstrap registry either.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from ssl_exporter import lru, tls
from ssl_exporter.access import Policy, TargetRefused
from ssl_exporter.errors import classify, verify_reason
from ssl_exporter.lru import ByteLRU, text_size
from ssl_exporter.printable import printable
from ssl_exporter.rdapsettings import MAX_BOOTSTRAP_BYTES, Bootstrap, RDAPConfig, bootstrap_from, parse_time
from ssl_exporter.result import DomainInfo
from ssl_exporter.targets import TargetError, parse_target
from ssl_exporter.tlssettings import TLSConfig

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 86400.0  # a Retry-After beyond a day is read as a day
MAX_STATUSES = 32  # status values kept per domain (RFC 9083 defines about 30)
MAX_LABEL = 128  # characters of a status or registrar label value
CACHE_ENTRIES = 100_000
DEADLINE_MARGIN = 0.1  # seconds kept from the probe's deadline to build its answer
ACCEPT = "application/rdap+json, application/json;q=0.9"
TROUBLE_STATUSES = ("client hold", "server hold", "redemption period", "pending delete", "pending restore")


class LookupFailed(Exception):
    """A lookup that cannot give an answer; ``reason`` is a documented ``rdap`` reason."""

    def __init__(self, reason: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = printable(" ".join(detail.split()))
        self.retry_after = retry_after


# --- configuration ---------------------------------------------------------------------


def client_context(tls_config: TLSConfig) -> ssl.SSLContext:
    """The TLS context for RDAP servers: the module's trust store, with the hostname checked."""
    context = tls.build_client_context(tls_config)
    if tls_config.insecure_skip_verify:
        context.verify_mode = ssl.CERT_NONE
    else:
        context.check_hostname = True
    return context


# --- RDAP documents ---------------------------------------------------------------------


@dataclass(frozen=True)
class DomainDocument:
    """The facts read from one RDAP domain object."""

    expiry: float | None
    registration: float | None
    statuses: tuple[str, ...]
    registrar: str | None
    referral: str | None  # the registrar's RDAP URL for this domain, when given


def parse_domain(doc: Any, domain: str) -> DomainDocument:
    """Read an RFC 9083 domain object; LookupFailed(bad_response) when it is not one."""
    if not isinstance(doc, dict) or doc.get("objectClassName") != "domain":
        raise LookupFailed("bad_response", "the answer is not an RDAP domain object")
    name = doc.get("ldhName")
    if isinstance(name, str) and name.lower().rstrip(".") != domain:
        raise LookupFailed("bad_response", f"the answer is about {name[:100]!r}, not {domain}")
    dates: dict[str, float] = {}
    events = doc.get("events")
    events = events if isinstance(events, list) else []
    for event in events:
        if not isinstance(event, dict) or event.get("eventAction") not in ("registration", "expiration"):
            continue
        action = event["eventAction"]
        stamp = parse_time(event.get("eventDate"))
        if stamp is None:
            raise LookupFailed("bad_response", f"{action} date {str(event.get('eventDate'))[:40]!r} is not RFC 3339")
        dates.setdefault(action, stamp)
    raw_status = doc.get("status")
    raw_status = raw_status if isinstance(raw_status, list) else []
    statuses = tuple(dict.fromkeys(_label(s.lower()) for s in raw_status if isinstance(s, str) and s.strip()))
    return DomainDocument(dates.get("expiration"), dates.get("registration"), statuses[:MAX_STATUSES],
                          _registrar(doc.get("entities")), _referral(doc.get("links"), domain))


def _registrar(entities: Any) -> str | None:
    for entity in entities if isinstance(entities, list) else []:
        if not isinstance(entity, dict) or "registrar" not in (entity.get("roles") or []):
            continue
        vcard = entity.get("vcardArray")
        if isinstance(vcard, list) and len(vcard) == 2 and isinstance(vcard[1], list):
            for item in vcard[1]:
                if isinstance(item, list) and len(item) >= 4 and item[0] == "fn" and isinstance(item[3], str):
                    if item[3].strip():
                        return _label(item[3])
        handle = entity.get("handle")
        if isinstance(handle, str) and handle.strip():
            return _label(handle)
    return None


def _referral(links: Any, domain: str) -> str | None:
    """The registrar's RDAP URL: a "related" link of type application/rdap+json to this domain."""
    for link in links if isinstance(links, list) else []:
        if not isinstance(link, dict) or link.get("rel") != "related":
            continue
        href = link.get("href")
        if (isinstance(href, str) and len(href) <= 2048 and "rdap" in str(link.get("type", "")).lower()
                and href.lower().rstrip("/").endswith(f"/domain/{domain}")):
            return href
    return None


def _label(text: str) -> str:
    """A label value: whitespace collapsed, unprintables escaped, at most MAX_LABEL characters."""
    text = printable(" ".join(text.split()))
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


# --- fetching ---------------------------------------------------------------------------


class _PolicyResolver:
    """aiohttp resolver that checks the addresses it returns against the target policy, so
    the connection goes to the very addresses that were checked (no second resolution)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.inner = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> Any:
        results = await self.inner.resolve(host, port, family)
        self.policy.check_addresses(parse_target(host, port or 443), [r["host"] for r in results])
        return results

    async def close(self) -> None:
        await self.inner.close()


class _HostLimits:
    """At most ``limit`` requests at a time to one RDAP host; entries exist only while used."""

    def __init__(self) -> None:
        self._held: dict[tuple[int, str], list[Any]] = {}

    @asynccontextmanager
    async def hold(self, host: str, limit: int) -> AsyncIterator[None]:
        key = (id(asyncio.get_running_loop()), host)
        entry = self._held.setdefault(key, [asyncio.Semaphore(limit), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._held[key]


class Fetcher:
    """One lookup's HTTP client: bounds, scheme, policy, proxy and per-host limits."""

    def __init__(self, session: Any, cfg: RDAPConfig, policy: Policy | None, note: Callable[[str], None],
                 state: RDAPState, scope: Any = None) -> None:
        self.session = session
        self.state = state
        self.cfg = cfg
        self.policy = policy
        self.note = note
        self.scope = scope  # what besides the URL changes an answer: proxy, policy, trust (see lookup)

    async def get_json(self, url: str, limit: int) -> Any:
        visited: set[str] = set()
        for _ in range(self.cfg.max_redirects + 1):
            visited.add(url)
            status, location, body = await self._get(url, limit)
            if status in (301, 302, 303, 307, 308) and location:
                target = urljoin(url, location)
                self.note(f"rdap: {url} redirects to {target}")
                if target in visited:
                    raise LookupFailed("too_many_redirects", f"redirect loop back to {target}")
                url = target
                continue
            try:
                return json.loads(body)
            except (ValueError, RecursionError) as exc:
                raise LookupFailed("bad_response", f"{url}: not JSON: {exc}") from None
        raise LookupFailed("too_many_redirects", f"more than {self.cfg.max_redirects} redirects, last to {url}")

    async def _get(self, url: str, limit: int) -> tuple[int, str | None, bytes]:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme != "https" and not (parts.scheme == "http" and self.cfg.allow_http):
            raise LookupFailed("insecure_url", f"{url} is not https:// (allow_http is off)")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            if self.policy is not None:
                self.policy.check_target(parse_target(host, port))
        except TargetRefused as exc:
            raise LookupFailed("refused_by_policy", f"{url}: {exc.detail}") from None
        except (TargetError, ValueError) as exc:
            raise LookupFailed("bad_response", f"unusable URL {url[:200]!r}: {exc}") from None
        now = time.time()
        backoff = self.state.host_backoff
        until = backoff.get(host, 0.0)
        if until > now:
            raise LookupFailed("rate_limited", f"{host} asked to wait {until - now:.0f}s more (Retry-After)",
                               retry_after=until - now)
        backoff.pop(host, None)
        async with self.state.host_limits.hold(host, self.cfg.host_concurrency):
            self.note(f"rdap: GET {url}")
            async with self.session.get(url, allow_redirects=False, proxy=self.cfg.proxy_url,
                                        headers={"Accept": ACCEPT}) as response:
                status = response.status
                self.note(f"rdap: {url} answered HTTP {status}")
                if status == 429:
                    wait = retry_after(response.headers.get("Retry-After"), now)
                    wait = max(wait if wait is not None else self.cfg.error_retry, 1.0)
                    _prune_backoff(backoff, now)
                    backoff[host] = now + wait
                    raise LookupFailed("rate_limited", f"{host} answered 429, retry after {wait:.0f}s",
                                       retry_after=wait)
                if status in (301, 302, 303, 307, 308):
                    return status, response.headers.get("Location"), b""
                if status == 404:
                    raise LookupFailed("not_found", f"{url} answered 404: the registry has no such domain")
                if status != 200:
                    raise LookupFailed("http_error", f"{url} answered HTTP {status}")
                if response.content_length is not None and response.content_length > limit:
                    raise LookupFailed("oversized", f"{url} announced {response.content_length} bytes, over {limit}")
                body = bytearray()
                async for chunk in response.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > limit:
                        raise LookupFailed("oversized", f"{url} sent more than {limit} bytes")
                return status, None, bytes(body)


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), capped at a day."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value[:7]), MAX_RETRY_AFTER)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return min(max(moment.timestamp() - now, 0.0), MAX_RETRY_AFTER)


def _prune_backoff(backoff: dict[str, float], now: float) -> None:
    for host in [h for h, until in backoff.items() if until <= now]:
        del backoff[host]


def failure_of(exc: BaseException) -> LookupFailed:
    """Any exception of a lookup as LookupFailed with a documented reason."""
    if isinstance(exc, LookupFailed):
        return exc
    detail = " ".join(f"{type(exc).__name__}: {exc}".split())
    if isinstance(exc, TargetRefused):
        return LookupFailed("refused_by_policy", exc.detail)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        code = getattr(cert_error, "verify_code", 0) or 0
        return LookupFailed(verify_reason(code, True), f"RDAP server certificate: {detail}")
    if isinstance(exc, aiohttp.ClientHttpProxyError | aiohttp.ClientProxyConnectionError):
        return LookupFailed("proxy_error", detail)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return LookupFailed(classify(exc.os_error, "rdap").reason, detail)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return LookupFailed("closed", detail)
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return LookupFailed("bad_response", detail)
    if isinstance(exc, TimeoutError | OSError | ssl.SSLError):
        return LookupFailed(classify(exc, "rdap").reason, detail)
    if isinstance(exc, aiohttp.ClientError):
        return LookupFailed("network_error", detail)
    log.error("RDAP lookup crashed", exc_info=exc)
    return LookupFailed("internal_error", detail)


# --- bootstrap, lookups and the cache -----------------------------------------------------


@dataclass
class _BootstrapState:
    registry: Bootstrap | None = None
    fetched: float = 0.0
    retry_at: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class _Entry:
    good: DomainInfo | None
    reason: str = ""  # of the last failure, while it is being waited out
    detail: str = ""
    retry_at: float = 0.0  # no request before this time (after a failure)


class RDAPState:
    """What lookups remember between probes, for every rdap module: answers, shared lookups
    in flight, bootstrap registries, per-host back-off and concurrency. One per process
    (ssl_exporter.prepare.Caches), handed to every load: registries rate-limit, so a
    reload must not forget answers nor a host's Retry-After."""

    def __init__(self) -> None:
        self.answers: ByteLRU[_Entry] = lru.budgeted("rdap", CACHE_ENTRIES)
        self.in_flight: dict[tuple[int, Any], asyncio.Task[Any]] = {}
        self.bootstraps: dict[tuple[str, Any], _BootstrapState] = {}  # (URL, scope of lookup) -> state
        # host -> time until which it asked us (429, Retry-After) to wait; pruned as it passes.
        self.host_backoff: dict[str, float] = {}
        self.host_limits = _HostLimits()

    def clear(self) -> None:
        """Forget every cached answer, bootstrap registry and back-off (tests)."""
        self.answers.clear()
        self.bootstraps.clear()
        self.host_backoff.clear()


def _shared(state: RDAPState, key: Any, factory: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any]:
    """One task per key at a time: concurrent probes of one domain share its lookup."""
    loop = asyncio.get_running_loop()
    full = (id(loop), key)
    in_flight = state.in_flight
    task = in_flight.get(full)
    if task is None or task.done():
        task = loop.create_task(factory())  # type: ignore[arg-type]
        in_flight[full] = task

        def done(finished: asyncio.Task[Any]) -> None:
            if in_flight.get(full) is finished:
                del in_flight[full]
            if not finished.cancelled():
                finished.exception()  # retrieved, even when every waiter went away

        task.add_done_callback(done)
    return task


@dataclass(frozen=True)
class Outcome:
    """What a probe reports: the data (fresh, cached or stale) and the failure, if any."""

    info: DomainInfo | None
    reason: str = ""
    detail: str = ""
    cached: bool = False


async def lookup(domain: str, cfg: RDAPConfig, context: ssl.SSLContext, policy: Policy | None,
                 timeout: float, deadline: float, note: Callable[[str], None], state: RDAPState,
                 trust: Any = None) -> Outcome:
    """The domain's registration data, from the cache when fresh, else from RDAP.

    ``timeout`` bounds the lookup itself (it finishes and fills the cache even when the
    probe that started it stops waiting); ``deadline`` (loop time) is when this probe stops.
    ``trust`` (hashable: the module's tls_config) names the trust settings ``context`` was
    built from. Answers, shared lookups and bootstrap registries are kept apart by
    everything that changes them: ``rdap:`` (its proxy included), the policy and the trust,
    so that one module's refusal or TLS failure is never served to another, nor its data.
    """
    note = _escaped(note)  # notes quote what servers sent (URLs, names): debug output shows them
    if domain in cfg.expiry_override:
        note(f"rdap: {domain} has an expiry_override; no lookup")
        return Outcome(DomainInfo(domain=domain, source="expiry_override", expiry=cfg.expiry_override[domain]))
    scope = (cfg.cache_key, policy, trust)
    key = (domain, scope)
    now = time.time()
    entry = state.answers.get(key)
    if entry is not None and entry.good is not None and now < entry.good.lookup_time + cfg.cache_ttl:  # type: ignore[operator]
        note(f"rdap: cached answer from {now - entry.good.lookup_time:.0f}s ago")  # type: ignore[operator]
        return Outcome(entry.good, cached=True)
    if entry is not None and entry.reason and now < entry.retry_at:
        note(f"rdap: last lookup failed ({entry.reason}); next attempt in {entry.retry_at - now:.0f}s")
        return Outcome(entry.good, entry.reason, entry.detail, cached=True)
    task = _shared(state, key, lambda: _lookup_and_store(domain, cfg, context, policy, timeout, key, note, scope,
                                                         state))
    try:
        async with asyncio.timeout_at(deadline - DEADLINE_MARGIN):
            return await asyncio.shield(task)
    except TimeoutError:
        stale = entry.good if entry is not None else None
        return Outcome(stale, "timeout", "no RDAP answer before the probe's deadline; the lookup goes on "
                                         "and fills the cache", cached=stale is not None)


async def _lookup_and_store(domain: str, cfg: RDAPConfig, context: ssl.SSLContext, policy: Policy | None,
                            timeout: float, key: Any, note: Callable[[str], None], scope: Any,
                            state: RDAPState) -> Outcome:
    try:
        async with asyncio.timeout(timeout):
            info = await _lookup(domain, cfg, context, policy, note, state, scope)
    except Exception as exc:  # every failure is stored and waited out; cancellation passes
        failure = failure_of(exc)
        now = time.time()
        wait = max(cfg.error_retry, failure.retry_after or 0.0)
        previous = state.answers.get(key)
        stale = previous.good if previous is not None else None
        _store(state, key, _Entry(stale, failure.reason, failure.detail, now + wait))
        note(f"rdap: lookup failed ({failure.reason}): {failure.detail}; next attempt in {wait:.0f}s")
        return Outcome(stale, failure.reason, failure.detail, cached=stale is not None)
    _store(state, key, _Entry(info))
    return Outcome(info)


def _escaped(note: Callable[[str], None]) -> Callable[[str], None]:
    return lambda message: note(printable(message))


def _store(state: RDAPState, key: Any, entry: _Entry) -> None:
    good = entry.good
    size = 400 + text_size(entry.detail, *(() if good is None else (good.domain, good.server, good.registrar or "",
                                                                     *good.statuses)))
    state.answers.put(key, entry, size)


async def _lookup(domain: str, cfg: RDAPConfig, context: ssl.SSLContext, policy: Policy | None,
                  note: Callable[[str], None], state: RDAPState, scope: Any = None) -> DomainInfo:
    resolver = _PolicyResolver(policy) if policy is not None and cfg.proxy_url is None else None
    connector = aiohttp.TCPConnector(ssl=context, force_close=True, limit=8, use_dns_cache=False,
                                     resolver=resolver)  # type: ignore[arg-type]
    async with aiohttp.ClientSession(connector=connector, trust_env=False,
                                     timeout=aiohttp.ClientTimeout(total=None)) as session:
        fetcher = Fetcher(session, cfg, policy, note, state, scope)
        base = await _service(domain, cfg, fetcher, note)
        url = base.rstrip("/") + "/domain/" + domain
        registry = parse_domain(await fetcher.get_json(url, cfg.max_response_bytes), domain)
        facts, servers = registry, [url]
        if registry.expiry is None and registry.referral and cfg.follow_referral:
            # A thin registry: the registrar holds the expiration date.
            note(f"rdap: no expiration from the registry; following the referral to {registry.referral}")
            registrar = parse_domain(await fetcher.get_json(registry.referral, cfg.max_response_bytes), domain)
            servers.append(registry.referral)
            facts = DomainDocument(
                expiry=registrar.expiry,
                registration=registry.registration or registrar.registration,
                statuses=registry.statuses or registrar.statuses,
                registrar=registry.registrar or registrar.registrar,
                referral=None)
    if facts.expiry is None:
        note("rdap: the answer has no expiration event; set expiry_override for this domain if needed")
    return DomainInfo(domain=domain, source="rdap", expiry=facts.expiry, registration=facts.registration,
                      statuses=facts.statuses, registrar=facts.registrar, lookup_time=time.time(),
                      server=printable(" -> ".join(servers)))  # shown in notes and reports


async def _service(domain: str, cfg: RDAPConfig, fetcher: Fetcher, note: Callable[[str], None]) -> str:
    """The base URL of the RDAP service for ``domain``: configured servers, then bootstrap."""
    labels = domain.split(".")
    for start in range(len(labels)):
        suffix = ".".join(labels[start:])
        if suffix in cfg.servers:
            note(f"rdap: {suffix} -> {cfg.servers[suffix]} (rdap.servers)")
            return cfg.servers[suffix]
    registry = await _bootstrap(cfg, fetcher, note)
    found = registry.lookup(domain)
    if found is None:
        raise LookupFailed("no_rdap_service", f"no RDAP service for {domain} in the bootstrap registry or "
                                              "rdap.servers")
    suffix, urls = found
    https = [u for u in urls if u.startswith("https://")]
    usable = https or ([u for u in urls if u.startswith("http://")] if cfg.allow_http else [])
    if not usable:
        raise LookupFailed("insecure_url" if urls else "no_rdap_service",
                           f"the bootstrap registry lists no https:// RDAP server for {suffix}")
    note(f"rdap: {suffix} -> {usable[0]} (bootstrap registry)")
    return usable[0]


async def _bootstrap(cfg: RDAPConfig, fetcher: Fetcher, note: Callable[[str], None]) -> Bootstrap:
    """The bootstrap registry: fetched from bootstrap_url (refreshed every bootstrap_refresh,
    retried after error_retry when it fails), else the bootstrap_file."""
    url = cfg.bootstrap_url
    if url is None:
        if cfg.file_bootstrap is None:
            raise LookupFailed("no_rdap_service", "neither rdap.bootstrap_url nor rdap.bootstrap_file is set, "
                                                  "and rdap.servers has no entry for this domain")
        return cfg.file_bootstrap
    state = fetcher.state.bootstraps.setdefault((url, fetcher.scope), _BootstrapState())
    now = time.time()
    due = state.registry is None or now >= state.fetched + cfg.bootstrap_refresh
    if due and now >= state.retry_at:
        task = _shared(fetcher.state, ("bootstrap", url, fetcher.scope),
                       lambda: _refresh_bootstrap(url, state, cfg, fetcher, note))
        await asyncio.shield(task)
    registry = state.registry or cfg.file_bootstrap
    if registry is None:
        raise LookupFailed("bootstrap_unavailable", f"the bootstrap registry could not be fetched from {url}: "
                                                    f"{state.error}; retried after {cfg.error_retry:g}s")
    return registry


async def _refresh_bootstrap(url: str, state: _BootstrapState, cfg: RDAPConfig, fetcher: Fetcher,
                             note: Callable[[str], None]) -> None:
    try:
        registry = bootstrap_from(await fetcher.get_json(url, MAX_BOOTSTRAP_BYTES))
    except Exception as exc:  # any failure keeps the registry we had
        failure = LookupFailed("bad_response", str(exc)) if isinstance(exc, ValueError) else failure_of(exc)
        state.error = f"{failure.reason}: {failure.detail}"
        state.retry_at = time.time() + max(cfg.error_retry, failure.retry_after or 0.0)
        note(f"rdap: bootstrap registry from {url} failed: {state.error}")
        log.warning("RDAP bootstrap registry refresh failed", extra={"fields": {"url": url, "err": state.error}})
        return
    state.registry, state.fetched, state.error = registry, time.time(), ""
    note(f"rdap: bootstrap registry from {url}: {len(registry.services)} suffixes")


def trouble(statuses: tuple[str, ...]) -> list[str]:
    """Statuses that mean the domain does not resolve or is about to be lost."""
    return [s for s in statuses if s in TROUBLE_STATUSES]
