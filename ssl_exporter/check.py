"""``ssl-exporter check TARGET``: one probe as a Nagios/Icinga plugin, in place of check_ssl_cert.

It runs the very probe ``/probe`` runs (the same input validation, module and
:func:`~ssl_exporter.probers.base.run_probe`), prints the Nagios status line with perfdata
first, then a human report (or one JSON document with ``--format json``), and exits with the
plugin's state:

==========  ====  =================================================================
OK          0     every enforced check held and more than ``--warning-days`` are left
WARNING     1     less than ``--warning-days`` left
CRITICAL    2     less than ``--critical-days`` left, or the probe failed: expired or not
                  yet valid, chain invalid, hostname mismatch, and also unreachable,
                  refused, timeout, DNS failure, not TLS
UNKNOWN     3     the check could not run: bad arguments, bad target, unknown module,
                  invalid configuration, a bug (``internal_error``)
==========  ====  =================================================================

A service that cannot be reached over TLS is down for its users, so connection failures
are CRITICAL, as check_ssl_cert reports them; UNKNOWN is kept for "the plugin could not
tell", which is what the Nagios plugin guidelines reserve it for.

Time left comes from the verified chain's earliest not-after when the chain verified (an
intermediate can expire before the leaf), else from the leaf.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import Any, NoReturn

from ssl_exporter import config
from ssl_exporter.access import TargetRefused
from ssl_exporter.errors import OutOfResources
from ssl_exporter.result import CertInfo, ProbeResult
from ssl_exporter.server import BadRequest, parse_probe_request, run_request
from ssl_exporter.web import (
    describe_expiry,
    format_span,
    format_utc,
    is_presented_chain,
    leaf_or_soonest,
    positions,
    source_text,
)

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
SERVICE = "SSL_CERT"  # check_ssl_cert's prefix, so existing Nagios filters keep matching
DAY = 86400.0


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse exits 2, which Nagios reads as CRITICAL; a usage error is UNKNOWN.
        raise _UsageError(message)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(
        prog="ssl-exporter check",
        description="Probe TARGET once and report as a Nagios plugin (exit 0 OK, 1 WARNING, "
                    "2 CRITICAL, 3 UNKNOWN).",
    )
    parser.add_argument("target", metavar="TARGET", help="host:port, [v6]:port, host, or https://host[:port]")
    parser.add_argument("--module", "-m", help="module from the configuration (default: its default_module)")
    parser.add_argument("--hostname", "-H", dest="hostname",
                        help="name to verify and send as SNI (default: the module's server_name, else the host)")
    parser.add_argument("--warning-days", "-w", type=float, default=21.0, metavar="DAYS",
                        help="WARNING with less than this many days left (default 21)")
    parser.add_argument("--critical-days", "-c", type=float, default=7.0, metavar="DAYS",
                        help="CRITICAL with less than this many days left (default 7)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="bound on the whole probe (default: the module's timeout)")
    parser.add_argument("--format", choices=["text", "json"], default="text")
    parser.add_argument("--config.file", dest="config_file", metavar="PATH",
                        help="YAML configuration (default: the embedded default, system trust store)")
    args = parser.parse_args(argv)
    if args.critical_days > args.warning_days:
        parser.error("--critical-days must not exceed --warning-days")
    if args.timeout is not None and not args.timeout > 0:
        parser.error("--timeout must be positive")
    return args


@dataclass(frozen=True)
class Verdict:
    state: int
    summary: str  # the status line's text after "SERVICE STATE - "
    expiry: float | None  # the not-after the time left counts down to
    expiry_source: str | None  # "verified_chain", "leaf" or "soonest"


def evaluate(result: ProbeResult, target: str, warning_days: float, critical_days: float,
             now: float) -> Verdict:
    """The plugin state of a probe result (see the module docstring for the rules)."""
    expiry, source = _expiry(result)
    parts = [f"{e.stage}/{e.reason}" + (f": {e.detail}" if e.detail else "") for e in result.errors]
    parts += [f"cannot read {source_text(e.source)}: {e.reason}" for e in result.read_errors]
    if expiry is not None:
        what = "chain" if source == "verified_chain" and _chain_expires_before_leaf(result, expiry) else "certificate"
        parts.append(f"{what} {describe_expiry(expiry, now)} ({format_utc(expiry, seconds=False)})")
    elif result.success:
        parts.append("no certificate obtained")
    if any(e.reason == "internal_error" for e in result.errors):
        state = UNKNOWN
    elif not result.success:
        state = CRITICAL
    elif expiry is None:
        state = UNKNOWN
    else:
        days_left = (expiry - now) / DAY
        state = CRITICAL if days_left < critical_days else WARNING if days_left < warning_days else OK
    return Verdict(state, f"{target}: " + "; ".join(parts), expiry, source)


def _expiry(result: ProbeResult) -> tuple[float | None, str | None]:
    if result.chain_valid and result.verified_chain_expiry is not None:
        return result.verified_chain_expiry, "verified_chain"
    cert = leaf_or_soonest(result)
    if cert is None:
        return None, None
    return cert.not_after, "leaf" if is_presented_chain(result) else "soonest"


def _chain_expires_before_leaf(result: ProbeResult, chain_expiry: float) -> bool:
    # Say "chain" only when something other than the leaf expires first.
    return bool(result.certs) and chain_expiry < result.certs[0].not_after


def perfdata(verdict: Verdict, result: ProbeResult, args: argparse.Namespace, now: float) -> str:
    """``days_left=3.18;21;7;; duration=0.012s;;;0;`` (label=value;warn;crit;min;max)."""
    parts = []
    if verdict.expiry is not None:
        days = (verdict.expiry - now) / DAY
        parts.append(f"days_left={days:.2f};{args.warning_days:g};{args.critical_days:g};;")
    parts.append(f"duration={result.duration:.3f}s;;;0;")
    return " ".join(parts)


def text_report(verdict: Verdict, result: ProbeResult, args: argparse.Namespace, target: str,
                module: str, server_name: str, now: float) -> str:
    status = f"{SERVICE} {STATE_NAMES[verdict.state]} - {verdict.summary}"
    status += f" | {perf}" if (perf := perfdata(verdict, result, args, now)) else ""
    lines = [status, "", f"Target:     {target} (module {module})", f"Name:       {server_name}"]
    if result.handshake_success:
        hostname = {True: "matches the leaf", False: "does NOT match the leaf", None: "unknown"}
        lines[-1] += f": {hostname[result.hostname_valid]}"
        chain = "verified" if result.chain_valid else "NOT verified" if result.chain_valid is False else "unknown"
        lines.append(f"Chain:      {chain}")
        if result.tls is not None:
            lines.append(f"TLS:        {result.tls.version}, {result.tls.cipher}")
    if verdict.expiry is not None:
        source = {"verified_chain": "the verified chain", "leaf": "the leaf", "soonest": "the soonest certificate"}
        lines.append(f"Time left:  {describe_expiry(verdict.expiry, now)}, from {source[verdict.expiry_source or '']}")
    lines += [f"Error:      {e.stage}/{e.reason}" + (f": {e.detail}" if e.detail else "") for e in result.errors]
    if result.certs:
        lines += ["", *_chain_table(result, now)]
    return "\n".join(lines) + "\n"


def _chain_table(result: ProbeResult, now: float) -> list[str]:
    rows = [("#", "subject", "issuer", "not after", "time left")]
    for position, cert in zip(positions(result), result.certs, strict=False):
        left = cert.not_after - now
        rows.append((position, _clip(cert.subject_cn or cert.subject), _clip(cert.issuer_cn or cert.issuer),
                     format_utc(cert.not_after, seconds=False),
                     format_span(left) if left >= 0 else f"expired {format_span(left)} ago"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def _clip(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def json_report(verdict: Verdict, result: ProbeResult, args: argparse.Namespace, target: str,
                module: str, server_name: str, now: float) -> str:
    doc: dict[str, Any] = {
        "status": STATE_NAMES[verdict.state],
        "exit_code": verdict.state,
        "summary": verdict.summary,
        "target": target,
        "module": module,
        "hostname": server_name,
        "days_left": None if verdict.expiry is None else round((verdict.expiry - now) / DAY, 4),
        "expires": None if verdict.expiry is None else _iso(verdict.expiry),
        "expiry_source": verdict.expiry_source,
        "warning_days": args.warning_days,
        "critical_days": args.critical_days,
        "success": result.success,
        "handshake_success": result.handshake_success,
        "chain_valid": result.chain_valid,
        "hostname_valid": result.hostname_valid,
        "tls_version": result.tls.version if result.tls else None,
        "cipher": result.tls.cipher if result.tls else None,
        "duration_seconds": round(result.duration, 4),
        "errors": [{"stage": e.stage, "reason": e.reason, "detail": e.detail} for e in result.errors],
        "certificates": [_cert_json(position, cert, now)
                         for position, cert in zip(positions(result), result.certs, strict=False)],
    }
    return json.dumps(doc, indent=2) + "\n"


def _cert_json(position: str, cert: CertInfo, now: float) -> dict[str, Any]:
    return {
        "position": position,
        "subject": cert.subject,
        "issuer": cert.issuer,
        "subject_cn": cert.subject_cn,
        "issuer_cn": cert.issuer_cn,
        "serial": cert.serial,
        "not_before": _iso(cert.not_before),
        "not_after": _iso(cert.not_after),
        "days_left": round((cert.not_after - now) / DAY, 4),
        "dns_names": list(cert.dns_names),
        "ip_addresses": list(cert.ip_addresses),
        "fingerprint_sha256": cert.fingerprint_sha256,
        "key_algorithm": cert.key_algorithm,
        "key_bits": cert.key_bits,
        "signature_algorithm": cert.signature_algorithm,
        **({"source": dict(cert.source)} if cert.source else {}),
    }


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _unknown(message: str, fmt: str) -> int:
    if fmt == "json":
        print(json.dumps({"status": "UNKNOWN", "exit_code": UNKNOWN, "summary": message}, indent=2))
    else:
        print(f"{SERVICE} UNKNOWN - {message}")
    return UNKNOWN


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
    except _UsageError as exc:
        print("usage: ssl-exporter check TARGET [options]; see ssl-exporter check --help", file=sys.stderr)
        return _unknown(str(exc), "text")
    try:
        cfg = config.load_file(args.config_file) if args.config_file else config.load_default()
        req = parse_probe_request(cfg, args.module, args.target, args.hostname)
    except config.ConfigError as exc:
        return _unknown(f"invalid configuration: {exc}", args.format)
    except BadRequest as exc:
        return _unknown(str(exc), args.format)
    timeout = args.timeout or req.module.timeout
    try:
        result = asyncio.run(run_request(req, timeout))
    except TargetRefused as exc:
        return _unknown(f"target refused: {exc.message}", args.format)
    except OutOfResources as exc:  # this process's own failure, not the target's
        return _unknown(f"out of file descriptors: {exc}", args.format)
    now = time.time()
    target = str(req.target)
    verdict = evaluate(result, target, args.warning_days, args.critical_days, now)
    report = json_report if args.format == "json" else text_report
    sys.stdout.write(report(verdict, result, args, target, req.module.name, req.server_name, now))
    return verdict.state
