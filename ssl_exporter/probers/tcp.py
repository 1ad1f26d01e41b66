"""The ``tcp`` prober: resolve -> connect -> [STARTTLS] -> TLS handshake -> verify."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ipaddress
import logging
import ssl
import time
import urllib.request
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from urllib.parse import unquote, urlsplit

from ssl_exporter import caa, chainverify, legacy, resolve, revocation, stapling, starttls, tls
from ssl_exporter.certs import CertificateError, distinct, matches_hostname, parse_der
from ssl_exporter.config import TCPConfig
from ssl_exporter.errors import POLICY_REASONS, ProbeFailure, classify, verify_reason
from ssl_exporter.lru import ByteLRU
from ssl_exporter.prepare import PreparedModule as Module
from ssl_exporter.printable import describe
from ssl_exporter.probers.base import EXPECTED_ERRORS, Prober, ProbeRecorder
from ssl_exporter.result import AddressResult, CertInfo, TLSInfo, placed
from ssl_exporter.targets import Target, parse_target

log = logging.getLogger(__name__)

# Bytes read from an HTTP proxy's answer to CONNECT before giving up.
MAX_PROXY_RESPONSE = 16 * 1024


PhaseTimer = Callable[[str], AbstractContextManager[None]]


def _untimed(name: str) -> AbstractContextManager[None]:
    return nullcontext()


async def probe(rec: ProbeRecorder, module: Module, target: Target, server_name: str) -> None:
    tcp = module.tcp
    rec.handshake_success = False  # a TLS probe: 0 until the handshake completes
    rec.fallback_handshake = False  # 1 only when the certificates come from the fallback handshake
    rec.client_cert = module.client_cert
    proxy_url = proxy_for(target, tcp)
    proxy = urlsplit(proxy_url) if proxy_url else None
    if tcp.all_addresses and proxy_url is None:
        rec.addresses = ()  # the answer has the every-address shape, also when resolution fails
    with rec.phase("resolve"):
        # Through a proxy we resolve and dial the proxy; it resolves the target.
        dial = parse_target(proxy.netloc.rpartition("@")[2], 80) if proxy else target
        addresses = await _resolve(dial, tcp, rec)
        if module.policy is not None:  # target_policy, on the very addresses _connect uses
            if proxy is None:
                module.policy.check_addresses(target, addresses)  # raises access.TargetRefused
            elif target.ip is not None:  # the proxy resolves a name; an address we can check
                module.policy.check_addresses(target, [target.host])
    if rec.addresses is not None:
        await _probe_every_address(rec, module, target, server_name, addresses)
    else:
        await _probe_connection(rec, module, target, server_name, addresses, dial.port, proxy_url)
    if module.caa is not None and not _is_ip(server_name):
        await _caa_check(rec, module, server_name)


async def _caa_check(rec: ProbeRecorder, module: Module, name: str) -> None:
    """Would the CA that issued the served leaf (each address's) be allowed to issue again?
    Looked up through the module's resolver, in what is left of the deadline; never raises."""
    assert rec.deadline is not None and module.caa is not None, "run_probe sets the deadline"
    views = [a.result for a in rec.addresses] if rec.addresses is not None else [rec]
    leaves = [view.certs[0] for view in views if view.positions[:1] == ("0",)]
    left = rec.deadline - asyncio.get_running_loop().time() - revocation.DEADLINE_MARGIN
    begin = time.perf_counter()
    try:
        rec.caa = await caa.check(name, leaves, module.caa, resolve.servers_for(module.tcp.dns_servers),
                                  max(min(module.tcp.dns_timeout, left), 0.001))
    finally:
        rec.phases["caa"] = time.perf_counter() - begin
    result = rec.caa
    if not result.lookup_success:
        rec.note(f"CAA lookup for {result.name} failed: {result.reason}")
    else:
        found = f"at {result.domain}: " + "; ".join(f"{r.flags} {r.tag} {r.value!r}" for r in result.records) \
            if result.domain else "no CAA record set: any CA may issue"
        verdict = {True: "allowed", False: "FORBIDDEN", None: "unknown"}[result.issuer_allowed]
        rec.note(f"CAA for {result.name} {found}; the leaf's issuer may issue again: {verdict}")


async def _probe_connection(rec: ProbeRecorder, module: Module, target: Target, server_name: str,
                            addresses: list[str], port: int, proxy_url: str | None) -> None:
    """Connect (to the first of ``addresses`` that answers), shake hands and verify: the
    probe of one server, on ``rec``; the fallback handshake and depth checks included."""
    tcp = module.tcp

    async def open_stream(phase: PhaseTimer = _untimed) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection ready for the TLS handshake: connected, tunnelled, STARTTLS done."""
        with phase("connect"):
            reader, writer = await _connect(addresses, port, tcp, rec)
        try:
            if proxy_url:
                with phase("connect"):
                    await _proxy_connect(reader, writer, target, proxy_url, rec)
            if tcp.starttls:
                with phase("starttls"):
                    await starttls.negotiate(tcp.starttls, reader, writer, server_name, rec.note)
        except BaseException:
            await tls.close_stream(writer)
            raise
        return reader, writer

    reader, writer = await open_stream(rec.phase)
    sni = None if _is_ip(server_name) else server_name
    policy_failure: ssl.SSLError | None = None
    try:
        with rec.phase("handshake"):
            rec.note(f"TLS handshake, SNI {sni or '(none: IP address)'}")
            assert module.ssl_context is not None
            attempt: tls.HandshakeOutcome | tls.HandshakeFailure
            if module.stapling_context is not None:  # the same handshake, asking for a staple
                attempt = await stapling.attempt(reader, writer, module.stapling_context, sni)
            else:
                attempt = await tls.attempt(reader, writer, module.ssl_context, sni)
            if isinstance(attempt, tls.HandshakeFailure):
                # Failed after the ServerHello: version and cipher are known all the same.
                rec.tls = attempt.server_hello
                exc = attempt.error
                if not (isinstance(exc, ssl.SSLError) and _fallback_applies(module, exc)):
                    raise exc
                policy_failure = exc
            else:
                outcome = attempt
    finally:
        await tls.close_stream(writer)
    if policy_failure is not None:
        error = classify(policy_failure, "handshake")
        rec.fail(error.stage, error.reason, error.detail)  # the probe's verdict, whatever follows
        await _fallback_handshake(rec, module, open_stream, sni, server_name)
        return
    with rec.phase("verify"):
        _analyse(rec, outcome, server_name, module.caches.presented)
    # Revocation and legacy TLS versions (docs/revocation.md), on connections of their own.
    if module.revocation is not None or module.legacy_versions:
        await _depth_checks(rec, module, outcome, open_stream, None if _is_ip(server_name) else server_name)


class _AddressRecorder(ProbeRecorder):
    """The recorder of one address's probe: its own verdicts, phases and errors; its log
    lines go to the whole probe's log, each naming the address."""

    def __init__(self, parent: ProbeRecorder, address: str) -> None:
        super().__init__()
        self.parent = parent
        self.address = address
        self.started, self.deadline, self.stage = parent.started, parent.deadline, "connect"
        self.handshake_success = False
        self.fallback_handshake = False

    def note(self, message: str) -> None:
        self.parent.note(f"[{_bracket(self.address)}] {message}")


async def _probe_every_address(rec: ProbeRecorder, module: Module, target: Target, server_name: str,
                               addresses: list[str]) -> None:
    """``tcp.all_addresses``: every resolved address (up to max_addresses) probed at once,
    each its own connection, handshake and verdicts, all within the probe's deadline. The
    probe succeeds only when every address did."""
    # In a stable order (the preferred family, then by address): DNS servers rotate their
    # answers, and a capped probe must not pick other addresses, and other series, each time.
    preferred = 6 if module.tcp.preferred_ip_protocol == "ip6" else 4
    ordered = sorted(addresses, key=lambda a: (ipaddress.ip_address(a).version != preferred,
                                               int(ipaddress.ip_address(a))))
    probed = ordered[: module.tcp.max_addresses]
    rec.addresses_resolved = len(addresses)
    if len(probed) < len(addresses):
        rec.note(f"probing the first {len(probed)} of {len(addresses)} addresses (max_addresses)")
    recorders = [_AddressRecorder(rec, address) for address in probed]
    await asyncio.gather(*(_probe_address(r, module, target, server_name) for r in recorders))
    rec.addresses = tuple(AddressResult(r.address, r.result()) for r in recorders)  # decided in run_probe
    # The handshakes are the addresses'; the whole target has none of its own.
    rec.handshake_success = rec.fallback_handshake = None


async def _probe_address(rec: _AddressRecorder, module: Module, target: Target, server_name: str) -> None:
    """One address's probe; what goes wrong is recorded on its recorder, as run_probe would."""
    assert rec.deadline is not None, "run_probe sets the deadline"
    try:
        # A little before the probe's deadline, so that every address reports its own timeout.
        async with asyncio.timeout_at(rec.deadline - revocation.DEADLINE_MARGIN):
            await _probe_connection(rec, module, target, server_name, [rec.address], target.port, None)
    except TimeoutError:
        rec.fail(rec.stage, "timeout", "the probe's deadline passed")
    except EXPECTED_ERRORS as exc:
        error = classify(exc, rec.stage)
        rec.fail(error.stage, error.reason, error.detail)
    except Exception as exc:  # a bug must cost this address's verdict, not the others'
        log.exception("probe of one address crashed", extra={"fields": {"target": str(target),
                                                                         "address": rec.address}})
        rec.fail(rec.stage, "internal_error", f"{type(exc).__name__}: {exc}")


def _fallback_applies(module: Module, exc: ssl.SSLError) -> bool:
    """Whether a failed handshake is followed by the fallback: a TLS peer refused for policy
    reasons (errors.POLICY_REASONS), and the module has not turned the fallback off."""
    return module.tls_config.fallback_handshake and classify(exc, "handshake").reason in POLICY_REASONS


async def _fallback_handshake(rec: ProbeRecorder, module: Module, open_stream: legacy.Connector,
                              sni: str | None, name: str) -> None:
    """Read the certificates of a server the probe's handshake refused for policy reasons.

    One more connection and one permissive handshake (TLS 1.0 and up, every cipher, security
    level 0) within the probe's deadline, closed as soon as it completes: no application
    data is ever sent over it. The chain is then verified as the probe would have verified it
    (the module's trust store, the probe's security level: ssl_exporter.chainverify) and the
    name matched. The probe keeps failing with the handshake's own reason; the certificate,
    chain and hostname series are exported with ssl_fallback_handshake 1. Never raises.
    """
    assert rec.deadline is not None and module.ssl_context is not None, "run_probe sets the deadline"
    rec.note("fallback handshake: TLS 1.0 and up, every cipher, security level 0, to read the certificates")
    begin = time.perf_counter()
    try:
        async with asyncio.timeout_at(rec.deadline - revocation.DEADLINE_MARGIN):
            context = tls.build_fallback_context(module.tls_config)
            reader, writer = await open_stream()
            try:
                outcome = await tls.handshake(reader, writer, context, sni)
            finally:
                await tls.close_stream(writer)
    except TimeoutError:
        rec.note("fallback handshake: no answer before the deadline")
        return
    except (OSError, ssl.SSLError, ProbeFailure, EOFError, asyncio.IncompleteReadError, tls.ContextError) as exc:
        rec.note(f"fallback handshake failed too: {describe(exc)}")
        return
    finally:
        rec.phases["fallback"] = time.perf_counter() - begin
    with rec.phase("verify"):
        verdict = chainverify.verify(outcome.presented, module.tls_config.ca_file,
                                     module.ssl_context.verify_flags, tls.SECURITY_LEVEL)
        if verdict is None:
            rec.note("fallback handshake: the system OpenSSL could not verify the chain; verdict unknown")
            outcome = dataclasses.replace(outcome, verified=None, tried=[], verify_code=None)
        else:
            outcome = dataclasses.replace(outcome, verified=verdict.verified, tried=verdict.tried,
                                          verify_code=verdict.verify_code, verify_message=verdict.verify_message)
        _analyse(rec, outcome, name, module.caches.presented, fallback=True)


def _analyse(rec: ProbeRecorder, outcome: tls.HandshakeOutcome, name: str, presented: ByteLRU[CertInfo],
             fallback: bool = False) -> None:
    """Record the certificates and verdicts of a completed handshake (ssl_exporter.success
    decides from them whether the probe succeeded).

    With ``fallback`` the handshake is the fallback one: the probe's handshake failed, so
    ssl_handshake_success and the TLS series stay as they were and the probe fails; an
    outcome with neither a verified path nor a verify code has an unknown chain verdict.
    """
    negotiated = TLSInfo(outcome.version, outcome.cipher or "unknown") if outcome.version else None
    if fallback:
        rec.fallback_handshake = True
        rec.fallback_tls = negotiated
    else:
        rec.handshake_success = True
        rec.tls = negotiated or rec.tls
    rec.note(f"{'fallback ' if fallback else ''}handshake done: {outcome.version} {outcome.cipher}, "
             f"{len(outcome.presented)} certificate(s) presented")
    if outcome.dropped_certs:
        rec.note(f"{outcome.dropped_certs} further presented certificate(s) ignored (limit {tls.MAX_CHAIN_CERTS})")
    certs: list[CertInfo] = []
    positions: list[str] = []  # in the presented order, so a certificate we cannot parse keeps its place
    for index, der in enumerate(distinct(outcome.presented)):
        try:
            certs.append(parse_der(der, presented=presented))
        except CertificateError as exc:
            rec.fail("verify", "bad_certificate", f"position {index}: {exc}")
            continue
        positions.append(str(index))
    rec.certs, rec.positions = tuple(certs), tuple(positions)
    leaf = certs[0] if positions and positions[0] == "0" else None

    chain_known = outcome.verified is not None or outcome.verify_code is not None
    rec.chain_valid = outcome.verify_code is None if chain_known else None
    if rec.chain_valid:
        # OpenSSL accepts some certificates that cryptography refuses (a PrintableString
        # holding "*" or "@"); such a certificate was reported above as bad_certificate,
        # and the verified path's expiry is then unknown rather than guessed from the rest.
        verified = [_parse_or_none(der, presented) for der in outcome.verified or []]
        known = [c for c in verified if c is not None]
        if known and len(known) == len(verified):
            rec.verified_chain_expiry = min(c.not_after for c in known)
        rec.note("chain verified: " + " <- ".join(
            (c.subject_cn or c.subject) if c else "(unreadable)" for c in verified))
    elif chain_known:
        last_is_ca = _last_is_ca(outcome.tried, presented)
        reason = verify_reason(outcome.verify_code or 0, last_is_ca)
        rec.fail("verify", reason, f"OpenSSL: {outcome.verify_message} (code {outcome.verify_code})")

    if leaf is None:
        rec.hostname_valid = None
        return
    # OpenSSL stops at its first error; check the leaf's dates ourselves so that an
    # expired leaf is reported even when the chain also fails for another reason.
    now = time.time()
    if leaf.not_after < now:
        rec.fail("verify", "expired", f"leaf {leaf.subject_cn!r} expired")
    elif leaf.not_before > now:
        rec.fail("verify", "not_yet_valid", f"leaf {leaf.subject_cn!r} is not valid yet")
    rec.hostname_valid = matches_hostname(leaf, name)
    if not rec.hostname_valid:
        names = ", ".join((leaf.dns_names + leaf.ip_addresses)[:10]) or f"CN={leaf.subject_cn}"
        rec.fail("verify", "hostname_mismatch", f"{name} does not match the leaf ({names})")


async def _depth_checks(rec: ProbeRecorder, module: Module, outcome: tls.HandshakeOutcome,
                        reconnect: legacy.Connector, sni: str | None) -> None:
    """Revocation and legacy-version checks, concurrently, ending before the probe's deadline.

    Neither raises; what they cannot learn in time is unknown (a reason, or absent), and the
    certificate data recorded by _analyse is kept whatever happens here.
    """
    assert rec.deadline is not None, "run_probe sets the deadline"
    deadline = rec.deadline

    async def timed(phase: str, work: Awaitable[None]) -> None:
        begin = time.perf_counter()
        try:
            await work
        finally:
            rec.phases[phase] = rec.phases.get(phase, 0.0) + time.perf_counter() - begin

    async def legacy_check() -> None:
        try:
            async with asyncio.timeout_at(deadline - revocation.DEADLINE_MARGIN):
                rec.legacy_versions = await legacy.legacy_versions(module.legacy_versions, reconnect, sni, rec.note)
        except TimeoutError:
            rec.note("legacy versions: no answer before the deadline")

    jobs = []
    if module.revocation is not None:
        jobs.append(timed("revocation", _revocation(rec, module, outcome)))
    if module.legacy_versions:
        jobs.append(timed("legacy_versions", legacy_check()))
    await asyncio.gather(*jobs)


async def _revocation(rec: ProbeRecorder, module: Module, outcome: tls.HandshakeOutcome) -> None:
    """Check revocation and record the report; a revoked certificate is a verify error
    (whether it fails the probe is ssl_exporter.success's call, with revocation.enforce).
    Never raises: a failure here must not hide the certificate metrics already recorded."""
    config = module.revocation
    assert rec.deadline is not None and config is not None, "run_probe sets the deadline"
    try:
        report = await revocation.check(outcome, placed(rec.certs, rec.positions), config.methods, rec.deadline,
                                        module.caches.revocation,
                                        crl_files=module.crl_store, proxy=module.tcp.proxy_url,
                                        policy=module.policy, note=rec.note)
    except Exception as exc:
        log.exception("revocation checks crashed")
        rec.note(f"revocation checks crashed: {type(exc).__name__}: {exc}")
        return
    rec.revocation = report.checks
    rec.ocsp_stapled = report.stapled
    if report.revoked:
        rec.fail("verify", "revoked", report.revoked_detail())


def _parse_or_none(der: bytes, presented: ByteLRU[CertInfo]) -> CertInfo | None:
    try:
        return parse_der(der, presented=presented)
    except CertificateError:
        return None


def _last_is_ca(tried: list[bytes], presented: ByteLRU[CertInfo]) -> bool:
    last = _parse_or_none(tried[-1], presented) if tried else None
    return last is not None and last.is_ca


async def _resolve(target: Target, tcp: TCPConfig, rec: ProbeRecorder) -> list[str]:
    if target.ip is not None:
        return [target.host]
    servers = resolve.servers_for(tcp.dns_servers)
    if servers:
        rec.note(f"resolving {target.host} via {', '.join(map(str, servers))}")
    assert rec.deadline is not None, "run_probe sets the deadline"
    # Within the probe's deadline: what is left of it, or dns_timeout when that is shorter.
    left = rec.deadline - asyncio.get_running_loop().time() - revocation.DEADLINE_MARGIN
    timeout = max(min(tcp.dns_timeout, left), 0.001)
    addresses = await resolve.resolve(target.host, target.port, tcp.preferred_ip_protocol,
                                      tcp.ip_protocol_fallback, servers, timeout)
    rec.note(f"resolved {target.host} to {', '.join(addresses)}")
    return addresses


async def _connect(
    addresses: list[str], port: int, tcp: TCPConfig, rec: ProbeRecorder
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the first address that answers, in preference order."""
    local = (tcp.source_ip_address, 0) if tcp.source_ip_address else None
    last_error: OSError | None = None
    for address in addresses:
        try:
            reader, writer = await asyncio.open_connection(address, port, local_addr=local)
        except OSError as exc:
            rec.note(f"connect to {_bracket(address)}:{port} failed: {exc.strerror or exc}")
            last_error = exc
            continue
        rec.note(f"connected to {_bracket(address)}:{port}")
        return reader, writer
    assert last_error is not None
    raise last_error


def proxy_for(target: Target, tcp: TCPConfig) -> str | None:
    """The HTTP proxy to reach ``target`` through: the module's proxy_url, or with
    proxy_from_environment the HTTPS_PROXY variable unless NO_PROXY names the host."""
    if tcp.proxy_url:
        return tcp.proxy_url
    if not tcp.proxy_from_environment:
        return None
    proxies = urllib.request.getproxies_environment()
    url = proxies.get("https")
    if not url or urllib.request.proxy_bypass_environment(target.host, proxies):  # type: ignore[attr-defined]
        return None
    url = url if "://" in url else f"http://{url}"  # "proxy:3128" is common in HTTPS_PROXY
    if not url.startswith("http://"):
        raise ProbeFailure("proxy_error", "HTTPS_PROXY must be an http:// proxy (CONNECT over plain HTTP)")
    return url


async def _proxy_connect(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    target: Target,
    proxy_url: str,
    rec: ProbeRecorder,
) -> None:
    """Ask an HTTP proxy for a tunnel to ``target`` (RFC 9110 CONNECT)."""
    authority = f"{_bracket(target.host)}:{target.port}"
    request = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
    parts = urlsplit(proxy_url)
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        request += f"Proxy-Authorization: Basic {base64.b64encode(credentials.encode()).decode()}\r\n"
    writer.write((request + "\r\n").encode("ascii"))
    await writer.drain()
    rec.note(f"proxy: CONNECT {authority}")
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise ProbeFailure("proxy_error", "proxy answer too long") from None
    except asyncio.IncompleteReadError as exc:
        raise ProbeFailure("proxy_error", f"proxy closed the connection ({len(exc.partial)} bytes)") from None
    if len(head) > MAX_PROXY_RESPONSE:
        raise ProbeFailure("proxy_error", "proxy answer too long")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    rec.note(f"proxy: {status_line}")
    fields = status_line.split(" ", 2)
    if len(fields) < 2 or not fields[0].startswith("HTTP/") or fields[1] != "200":
        raise ProbeFailure("proxy_error", f"proxy answered {status_line!r}")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


PROBER = Prober(
    parse_target=lambda raw, module: parse_target(raw, module.default_port),
    probe=probe,
    default_server_name=lambda target: target.host,
    rule="handshake",
)
