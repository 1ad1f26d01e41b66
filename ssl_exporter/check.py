"""``ssl-exporter check TARGET``: one probe as a Nagios/Icinga plugin, in place of check_ssl_cert.

It runs the very probe ``/probe`` runs, through :mod:`ssl_exporter.service` (the same input
validation, module and :func:`~ssl_exporter.service.run_request`), and describes the result
with :mod:`ssl_exporter.describe` as the pages do; it prints the Nagios status line with perfdata
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
intermediate can expire before the leaf), else from the leaf (:func:`~ssl_exporter.describe.expiry_of`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import yaml

from ssl_exporter import config, prepare, resolve, yamlrules
from ssl_exporter.access import TargetRefused
from ssl_exporter.describe import (
    chain_expires_before_leaf,
    describe_expiry,
    error_text,
    expiry_of,
    format_utc,
    positions,
    source_text,
)
from ssl_exporter.durations import format_span
from ssl_exporter.errors import OutOfResources
from ssl_exporter.printable import cut, escape, printable
from ssl_exporter.rdap import trouble
from ssl_exporter.result import CertInfo, ProbeError, ProbeResult, all_errors
from ssl_exporter.service import BadRequest, parse_probe_request, run_request

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


def _days(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is negative")
    return value


def _seconds(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not positive")
    return value


def _number(text: str) -> float:
    # float() takes "nan" and "inf": a threshold of nan compared false with everything (3 days
    # left was WARNING), and a timeout of inf waited forever.
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a finite number")
    return value


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
    parser.add_argument("--warning-days", "-w", type=_days, default=21.0, metavar="DAYS",
                        help="WARNING with less than this many days left (default 21)")
    parser.add_argument("--critical-days", "-c", type=_days, default=7.0, metavar="DAYS",
                        help="CRITICAL with less than this many days left (default 7)")
    parser.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                        help="bound on the whole probe (default: the module's timeout)")
    parser.add_argument("--format", choices=["text", "json"], default="text")
    parser.add_argument("--config.file", dest="config_file", metavar="PATH",
                        help="YAML configuration (default: the embedded default, system trust store)")
    # The module's tls_config files, for the common cases that should not need a YAML file:
    # a private CA (check_ssl_cert's -r/--rootcert) and a client certificate for mTLS.
    parser.add_argument("--ca-file", "--rootcert", "-r", dest="ca_file", metavar="PATH",
                        help="PEM CA certificates to verify the server with, in place of the module's")
    parser.add_argument("--cert-file", "--clientcert", dest="cert_file", metavar="PATH",
                        help="PEM client certificate to present (mTLS), in place of the module's")
    parser.add_argument("--key-file", "--clientkey", dest="key_file", metavar="PATH",
                        help="PEM private key of --cert-file (default: the key in that file)")
    parser.add_argument("--dns.server", dest="dns_servers", action="append", default=[], metavar="ADDRESS[:PORT]",
                        help="DNS server to resolve through for modules without tcp.dns_servers; repeatable")
    args = parser.parse_args(argv)
    try:
        resolve.set_default_servers(args.dns_servers)
    except ValueError as exc:
        parser.error(f"--dns.server: {exc}")
    if args.critical_days > args.warning_days:
        parser.error("--critical-days must not exceed --warning-days")
    if args.key_file and not args.cert_file:
        parser.error("--key-file requires --cert-file")
    if args.timeout is not None and not args.timeout > 0:
        parser.error("--timeout must be positive")
    return args


TLS_FILE_OPTIONS = {"ca_file": "--ca-file", "cert_file": "--cert-file", "key_file": "--key-file"}


def load_config(args: argparse.Namespace) -> prepare.PreparedConfig:
    """The configuration, with ``--ca-file``/``--cert-file``/``--key-file`` in the module's tls_config.

    The options are written into the module's YAML and the whole file loaded again, so they
    are checked and turned into the module's SSL context exactly as the same keys in a file.
    """
    if args.config_file:
        text, source = yamlrules.read_text(args.config_file), args.config_file
        base_dir = os.path.dirname(os.path.abspath(args.config_file))
    else:
        text, source, base_dir = config.DEFAULT_CONFIG_YAML, "embedded default", None
    cfg = prepare.load_text(text, source, base_dir)
    files = {key: getattr(args, key) for key in TLS_FILE_OPTIONS if getattr(args, key)}
    name = args.module or cfg.default_module
    if not files or name not in cfg.modules:  # an unknown module is parse_probe_request's to report
        return cfg
    if cfg.modules[name].prober not in ("tcp", "rdap"):  # rdap: the trust store for the RDAP servers
        options = ", ".join(TLS_FILE_OPTIONS[key] for key in files)
        raise _UsageError(f"{options}: module {name} probes certificates at rest (prober "
                          f"{cfg.modules[name].prober}), not a TLS server")
    raw = yamlrules.load_yaml(text, source)  # loaded once above already: the same bounds and messages
    module = raw["modules"][name] = raw["modules"][name] or {}
    tls_config = module["tls_config"] = module.get("tls_config") or {}
    if "cert_file" in files:
        tls_config.pop("key_file", None)  # the module's key belongs to the module's certificate
    tls_config.update({key: os.path.abspath(path) for key, path in files.items()})
    try:
        return prepare.load_text(yaml.safe_dump(raw), source, base_dir)
    except config.ConfigError as exc:
        # "modules.https.tls_config.ca_file: file not found: ..." -> "--ca-file: file not found: ..."
        message = str(exc)
        for key, option in TLS_FILE_OPTIONS.items():
            message = message.replace(f"modules.{name}.tls_config.{key}:", f"{option}:")
        raise _UsageError(message) from None


@dataclass(frozen=True)
class Status:
    state: int
    summary: str  # the status line's text after "SERVICE STATE - "
    expiry: float | None  # the not-after the time left counts down to
    expiry_source: str | None  # "verified_chain", "leaf" or "soonest"; "rdap" or "expiry_override" for domains
    service: str = SERVICE


def evaluate(result: ProbeResult, target: str, warning_days: float, critical_days: float,
             now: float) -> Status:
    """The plugin state of a probe result (see the module docstring for the rules)."""
    expiry, source = expiry_of(result)
    parts = [error_text(address, e) for address, e in all_errors(result)]
    parts += [f"cannot read {source_text(e.source)}: {e.reason}" for e in result.read_errors]
    if expiry is not None:
        what = "chain" if source == "verified_chain" and chain_expires_before_leaf(result, expiry) else "certificate"
        parts.append(f"{what} {describe_expiry(expiry, now)} ({format_utc(expiry, seconds=False)})")
    elif result.success:
        parts.append("no certificate obtained")
    state = _state(result, expiry, warning_days, critical_days, now, failed=not result.success)
    return Status(state, f"{target}: " + "; ".join(parts), expiry, source)


def _state(result: ProbeResult, expiry: float | None, warning_days: float, critical_days: float, now: float,
           failed: bool) -> int:
    """UNKNOWN for our own bug or no date, CRITICAL for a failure, else by the days left."""
    if any(e.reason == "internal_error" for _, e in all_errors(result)):
        return UNKNOWN
    if failed:
        return CRITICAL
    if expiry is None:
        return UNKNOWN
    days_left = (expiry - now) / DAY
    return CRITICAL if days_left < critical_days else WARNING if days_left < warning_days else OK


def evaluate_domain(result: ProbeResult, domain: str, warning_days: float, critical_days: float,
                    now: float) -> Status:
    """The plugin state of an rdap probe: its registration expiry, and CRITICAL for a failed
    lookup or a status that means trouble (hold, redemption period, pending delete)."""
    info = result.domain
    parts = [error_text("", e) for e in result.errors]
    troubles = trouble(info.statuses) if info else []
    if troubles:
        parts.append("status " + ", ".join(troubles))
    expiry = info.expiry if info else None
    if expiry is not None:
        override = " from expiry_override" if info and info.source == "expiry_override" else ""
        when = format_utc(expiry, seconds=False)
        parts.append(f"domain registration {describe_expiry(expiry, now)} ({when}){override}")
    elif result.success:
        parts.append("the registry gives no expiration date (set expiry_override)")
    state = _state(result, expiry, warning_days, critical_days, now, failed=not result.success or bool(troubles))
    return Status(state, f"{domain}: " + "; ".join(parts), expiry, info.source if info else None, "DOMAIN")


def perfdata(verdict: Status, result: ProbeResult, args: argparse.Namespace, now: float) -> str:
    """``days_left=3.18;21;7;; duration=0.012s;;;0;`` (label=value;warn;crit;min;max)."""
    parts = []
    if verdict.expiry is not None:
        days = (verdict.expiry - now) / DAY
        parts.append(f"days_left={days:.2f};{args.warning_days:g};{args.critical_days:g};;")
    parts.append(f"duration={result.duration:.3f}s;;;0;")
    return " ".join(parts)


# What a server or a certificate says must not forge plugin output: "|" starts perfdata
# (in the long output too), and a line break a second status line. Such characters are
# written as escapes, so every line stays one line of the report's own making.
def plain(text: str) -> str:
    """``text`` on one line without "|": "|", control, format and separator characters escaped."""
    return printable(text, "|")


_escape = escape  # the name this module used before the helper was shared


def text_report(verdict: Status, result: ProbeResult, args: argparse.Namespace, target: str,
                module: str, server_name: str, now: float) -> str:
    status = f"{verdict.service} {STATE_NAMES[verdict.state]} - {plain(verdict.summary)}"
    status += f" | {perf}" if (perf := perfdata(verdict, result, args, now)) else ""
    lines = [status, *(plain(line) for line in _details(verdict, result, target, module, server_name, now))]
    return "\n".join(lines) + "\n"


def _details(verdict: Status, result: ProbeResult, target: str, module: str, server_name: str,
             now: float) -> list[str]:
    """The long output after the status line, unescaped (text_report escapes each line)."""
    lines = ["", f"Target:     {target} (module {module})", f"Name:       {server_name}"]
    if result.handshake_success:
        hostname = {True: "matches the leaf", False: "does NOT match the leaf", None: "unknown"}
        lines[-1] += f": {hostname[result.hostname_valid]}"
        chain = "verified" if result.chain_valid else "NOT verified" if result.chain_valid is False else "unknown"
        lines.append(f"Chain:      {chain}")
        if result.tls is not None:
            lines.append(f"TLS:        {result.tls.version}, {result.tls.cipher}")
    if result.fallback_tls is not None:
        lines.append(f"Fallback:   certificates read by the fallback handshake: {_fallback_text(result)}")
    if verdict.expiry is not None:
        source = {"verified_chain": "the verified chain", "leaf": "the leaf", "soonest": "the soonest certificate",
                  "rdap": "the registry (RDAP)", "expiry_override": "expiry_override"}
        lines.append(f"Time left:  {describe_expiry(verdict.expiry, now)}, from {source[verdict.expiry_source or '']}")
    if result.domain is not None:
        lines += _domain_lines(result, now)
    lines += [f"Error:      {error_text(address, e)}" for address, e in all_errors(result)]
    if result.certs:
        lines += ["", *_chain_table(result, now)]
    for item in result.addresses or ():  # tcp.all_addresses: each address's own verdicts and chain
        view = item.result
        chain = {True: "verified", False: "NOT verified", None: "unknown"}[view.chain_valid]
        name = {True: "matches", False: "does NOT match", None: "unknown"}[view.hostname_valid]
        fallback = f", certificates from the fallback handshake ({_fallback_text(view)})" \
            if view.fallback_tls is not None else ""
        lines += ["", f"Address {item.address}: {'OK' if view.success else 'FAILED'}, handshake "
                      f"{'done' if view.handshake_success else 'failed'}, chain {chain}, name {name}{fallback}"]
        if view.certs:
            lines += _chain_table(view, now)
    return lines


def _fallback_text(view: ProbeResult) -> str:
    assert view.fallback_tls is not None
    return f"{view.fallback_tls.version}, {view.fallback_tls.cipher}"


def _domain_lines(result: ProbeResult, now: float) -> list[str]:
    info = result.domain
    assert info is not None
    lines = [f"Registrar:  {info.registrar or 'unknown'}", f"Status:     {', '.join(info.statuses) or 'none'}"]
    if info.lookup_time is not None:
        age = format_span(now - info.lookup_time)
        lines.append(f"Fetched:    {format_utc(info.lookup_time, seconds=False)} ({age} ago)")
    return lines


def _chain_table(result: ProbeResult, now: float) -> list[str]:
    rows = [("#", "subject", "issuer", "not after", "time left")]
    for position, cert in zip(positions(result), result.certs, strict=False):
        left = cert.not_after - now
        subject, issuer = plain(cert.subject_cn or cert.subject), plain(cert.issuer_cn or cert.issuer)
        rows.append((position, _clip(subject), _clip(issuer),
                     format_utc(cert.not_after, seconds=False),
                     format_span(left) if left >= 0 else f"expired {format_span(left)} ago"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def _clip(text: str, width: int = 40) -> str:
    return cut(text, width, marker_fits=True)


def json_report(verdict: Status, result: ProbeResult, args: argparse.Namespace, target: str,
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
        **_fallback_json(result),
        "duration_seconds": round(result.duration, 4),
        "errors": _errors_json(result.errors),
        "certificates": [_cert_json(position, cert, now)
                         for position, cert in zip(positions(result), result.certs, strict=False)],
    }
    if result.domain is not None:
        info = result.domain
        doc["domain"] = {"domain": info.domain, "source": info.source, "registrar": info.registrar,
                         "statuses": list(info.statuses),
                         "registered": None if info.registration is None else _iso(info.registration),
                         "fetched": None if info.lookup_time is None else _iso(info.lookup_time)}
    if result.addresses is not None:  # tcp.all_addresses: the same facts for each address
        doc["addresses"] = [_address_json(item.address, item.result, now) for item in result.addresses]
    return json.dumps(doc, indent=2) + "\n"


def _address_json(address: str, view: ProbeResult, now: float) -> dict[str, Any]:
    return {
        "address": address,
        "success": view.success,
        "handshake_success": view.handshake_success,
        "chain_valid": view.chain_valid,
        "hostname_valid": view.hostname_valid,
        "tls_version": view.tls.version if view.tls else None,
        "cipher": view.tls.cipher if view.tls else None,
        **_fallback_json(view),
        "errors": _errors_json(view.errors),
        "certificates": [_cert_json(position, cert, now)
                         for position, cert in zip(positions(view), view.certs, strict=False)],
    }


def _errors_json(errors: Sequence[ProbeError]) -> list[dict[str, str]]:
    return [{"stage": e.stage, "reason": e.reason, "detail": e.detail} for e in errors]


def _fallback_json(view: ProbeResult) -> dict[str, Any]:
    """Whether the certificates came from the fallback handshake (docs/metrics.md), and what it negotiated."""
    fallback = view.fallback_tls
    return {"fallback_handshake": view.fallback_handshake,
            "fallback_tls": None if fallback is None else {"version": fallback.version, "cipher": fallback.cipher}}


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
        _write(json.dumps({"status": "UNKNOWN", "exit_code": UNKNOWN, "summary": message}, indent=2) + "\n")
    else:
        _write(f"{SERVICE} UNKNOWN - {plain(message)}\n")
    return UNKNOWN


def _write(text: str) -> None:
    """Write the plugin's output; a closed or broken standard output is not a traceback."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except (OSError, ValueError, AttributeError):  # EPIPE, a closed file, no stdout at all (fd 1 closed)
        # Python flushes stdout again at exit and would print "Exception ignored ... BrokenPipeError".
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
    except _UsageError as exc:
        if sys.stderr is not None:
            print("usage: ssl-exporter check TARGET [options]; see ssl-exporter check --help", file=sys.stderr)
        return _unknown(str(exc), "text")
    try:
        cfg = load_config(args)
        req = parse_probe_request(cfg, args.module, args.target, args.hostname)
    except _UsageError as exc:
        return _unknown(str(exc), args.format)
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
    if req.module.prober == "rdap":  # a domain registration (docs/domains.md)
        target = req.target.host
        verdict = evaluate_domain(result, target, args.warning_days, args.critical_days, now)
    else:
        target = str(req.target)
        verdict = evaluate(result, target, args.warning_days, args.critical_days, now)
    report = json_report if args.format == "json" else text_report
    _write(report(verdict, result, args, target, req.module.name, req.server_name, now))
    return verdict.state
