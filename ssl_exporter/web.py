"""What operators read: the landing page, a probe's log page and the ``debug=true`` text.

Pure functions from data to text; :mod:`ssl_exporter.server` serves them. Targets,
certificate fields and OpenSSL's messages come from outside, so every value goes through
:func:`html.escape` on its way into HTML, and the pages need no JavaScript.
"""

from __future__ import annotations

import html
import ssl
from collections.abc import Iterable

import yaml

from ssl_exporter import config, metrics
from ssl_exporter.describe import (
    describe_expiry,
    error_text,
    format_utc,
    is_presented_chain,
    leaf_or_soonest,
    source_text,
)
from ssl_exporter.durations import format_duration
from ssl_exporter.history import ProbeRecord
from ssl_exporter.result import CertInfo, address_views, all_errors

# Sent with every HTML page: if escaping were ever missed, inline script still would not run.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


# --- the debug text -----------------------------------------------------------------------


def debug_text(record: ProbeRecord) -> str:
    """The probe's step-by-step log, its certificates, its module and its metrics.

    Served for ``/probe?debug=true`` and, inside HTML, on ``/probe/log?id=N``.
    """
    result = record.result
    body, _ = metrics.encode(metrics.probe_families(result), None)
    module_yaml = yaml.safe_dump({record.module: dict(record.module_config)}, sort_keys=False)
    certs = "\n".join(describe_cert(cert, f"{address} {position}".strip(), record.time)
                      for address, view in address_views(result) for position, cert in view.placed_certs())
    if record.certs_dropped:
        certs += (f"\n... and {record.certs_dropped} more certificate(s), not kept in the probe history "
                  "(the metrics below leave them out too)\n")
    if result.client_cert is not None:
        client = describe_cert(result.client_cert, "client", record.time)
        certs += f"\nClient certificate the probe presented:\n{client}"
    sections = [
        ("Logs for the probe", "\n".join(result.log) + "\n"),
        ("Summary", _summary(record)),
        (f"Certificates ({sum(len(v.certs) for _, v in address_views(result)) + record.certs_dropped})",
         certs or "none obtained\n"),
        ("Module configuration", module_yaml),
        ("Metrics that would have been returned", body.decode()),
    ]
    return "\n".join(f"{title}:\n{text}" for title, text in sections)


def _summary(record: ProbeRecord) -> str:
    result = record.result
    lines = [
        f"probe {record.id} at {format_utc(record.time)}, took {result.duration:.3f}s",
        f"target {record.target}, module {record.module}, verified name {record.server_name}",
        f"result {'OK' if result.success else 'FAILED'}",
    ]
    if result.handshake_success is not None:
        lines.append(f"handshake {_yes_no(result.handshake_success)}, chain valid {_yes_no(result.chain_valid)}, "
                     f"hostname valid {_yes_no(result.hostname_valid)}")
    if result.tls is not None:
        lines.append(f"negotiated {result.tls.version}, cipher {result.tls.cipher}")
    if result.fallback_tls is not None:
        lines.append(f"certificates read by the fallback handshake: {result.fallback_tls.version}, "
                     f"cipher {result.fallback_tls.cipher}")
    if result.verified_chain_expiry is not None:
        lines.append(f"verified chain expires {format_utc(result.verified_chain_expiry)} "
                     f"({describe_expiry(result.verified_chain_expiry, record.time)})")
    for item in result.addresses or ():  # tcp.all_addresses: each address's own verdicts
        view = item.result
        lines.append(f"address {item.address}: {'OK' if view.success else 'FAILED'}, handshake "
                     f"{_yes_no(view.handshake_success)}, chain valid {_yes_no(view.chain_valid)}, "
                     f"hostname valid {_yes_no(view.hostname_valid)}"
                     + (f", {view.tls.version} {view.tls.cipher}" if view.tls else "")
                     + (f", certificates read by the fallback handshake: {view.fallback_tls.version}, cipher "
                        f"{view.fallback_tls.cipher}" if view.fallback_tls else ""))
    lines += [f"error {error_text(address, e)}" for address, e in all_errors(result)]
    lines += [f"read error {source_text(e.source)}: {e.reason}" + (f": {e.detail}" if e.detail else "")
              for e in result.read_errors]
    return "\n".join(lines) + "\n"


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else "yes" if value else "no"


def describe_cert(cert: CertInfo, position: str, now: float) -> str:
    """One certificate decoded, then in PEM, as ``openssl x509 -text`` users expect."""
    sans = [f"DNS:{name}" for name in cert.dns_names] + [f"IP:{ip}" for ip in cert.ip_addresses]
    fingerprint = ":".join(cert.fingerprint_sha256[i:i + 2] for i in range(0, len(cert.fingerprint_sha256), 2))
    fields = [
        ("subject", cert.subject),
        ("issuer", cert.issuer),
        ("SANs", ", ".join(sans) or "none"),
        ("not before", format_utc(cert.not_before)),
        ("not after", f"{format_utc(cert.not_after)} ({describe_expiry(cert.not_after, now)})"),
        ("key", f"{cert.key_algorithm} {cert.key_bits} bits"),
        ("signature", cert.signature_algorithm),
        ("serial", cert.serial),
        ("SHA-256", fingerprint.upper()),
        ("CA", f"{_yes_no(cert.is_ca)}, self-issued {_yes_no(cert.self_issued)}"),
    ]
    if cert.source:
        fields.append(("source", source_text(cert.source)))
    text = f"[{position}] {cert.subject_cn or cert.subject}\n"
    text += "".join(f"    {name + ':':<12}{value}\n" for name, value in fields)
    return text + ssl.DER_cert_to_PEM_cert(cert.der)


# --- HTML ---------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1rem;max-width:80rem;line-height:1.4}
table{border-collapse:collapse;margin-bottom:1rem}
td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
td{overflow-wrap:anywhere}
tr.failed td.result{color:#b00020;font-weight:bold}
tr.ok td.result{color:#1b5e20}
small{color:#555}
pre{white-space:pre-wrap;overflow-wrap:anywhere;font-size:.85rem}
form{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end}
.scroll{overflow-x:auto}
@media (max-width:40rem){
  table.probes thead{display:none}
  table.probes tr{display:block;border:1px solid #ccc;margin-bottom:.5rem}
  table.probes td{display:block;border:none;padding:.1rem .5rem}
  table.probes td::before{content:attr(data-label) ": ";font-weight:bold}
}
"""


def _page(title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_STYLE}</style>
</head><body>
{body}
</body></html>
"""


def landing_page(version: str, cfg: config.Config, telemetry_path: str, records: Iterable[ProbeRecord],
                 history_limit: int, failure_limit: int) -> str:
    e = html.escape
    default = e(cfg.default_module)
    modules = "\n".join(
        f"<tr><td>{e(name)}</td><td>{e(m.prober)}</td><td>{e(m.tcp.starttls or 'implicit TLS')}</td>"
        f"<td>{m.default_port}</td><td>{format_duration(m.timeout, style='config')}</td></tr>"
        for name, m in cfg.modules.items()
    )
    options = "".join(f"<option{' selected' if name == cfg.default_module else ''}>{e(name)}</option>"
                      for name in cfg.modules)
    rows = "\n".join(_probe_row(record) for record in records)
    probes = (f"""<table class="probes">
<thead><tr><th>time (UTC)</th><th>module</th><th>target</th><th>result</th><th>reason</th>
<th>leaf</th><th>duration</th><th>log</th></tr></thead>
<tbody>
{rows}
</tbody></table>""" if rows else "<p>No probes yet.</p>")
    return _page("SSL Exporter", f"""<h1>SSL Exporter</h1>
<p>Version {e(version)}. Configuration: {e(cfg.source)}.</p>
<form action="/probe"><label>Target <input name="target" placeholder="example.com:443" required></label>
<label>Module <select name="module">{options}</select></label>
<label><input type="checkbox" name="debug" value="true" checked> debug</label>
<button>Probe</button></form>
<h2>Recent probes</h2>
<p><small>The last {history_limit} probes, and the last {failure_limit} failed ones however many
succeeded since. Newest first.</small></p>
{probes}
<h2>Modules</h2>
<div class="scroll"><table><tr><th>name</th><th>prober</th><th>STARTTLS</th><th>default port</th><th>timeout</th></tr>
{modules}</table></div>
<h2>Endpoints</h2>
<ul>
<li><a href="/probe?target=example.com:443&amp;module={default}">/probe?target=&hellip;&amp;module=&hellip;</a>
(add <code>&amp;debug=true</code> for the probe's log)</li>
<li><a href="{e(telemetry_path)}">{e(telemetry_path)}</a>: the exporter's own metrics</li>
<li><a href="/config">/config</a>: effective configuration, secrets redacted</li>
<li><a href="/-/healthy">/-/healthy</a>, <a href="/-/ready">/-/ready</a>; POST /-/reload reloads the configuration
when the exporter runs with <code>--web.enable-lifecycle</code> (else it answers 403: send SIGHUP)</li>
</ul>""")


def _probe_row(record: ProbeRecord) -> str:
    e = html.escape
    result = record.result
    reasons = ", ".join(f"{address + ' ' if address else ''}{err.stage}/{err.reason}"
                        for address, err in all_errors(result))
    if result.read_errors:
        reasons = ", ".join(filter(None, [reasons, f"{len(result.read_errors)} source(s) unreadable"]))
    target = e(record.target)
    if record.server_name and record.server_name not in record.target:
        target += f"<br><small>name {e(record.server_name)}</small>"
    cells = [
        ("time", e(format_utc(record.time).removesuffix(" UTC"))),
        ("module", e(record.module)),
        ("target", target),
        ("result", "OK" if result.success else "FAILED"),
        ("reason", e(reasons)),
        ("leaf", _expiry_cell(record)),
        ("duration", e(format_duration(result.duration))),
        ("log", f'<a href="/probe/log?id={record.id}">log</a>'),
    ]
    tds = "".join(f'<td class="{name.replace(" ", "-")}" data-label="{name}">{value}</td>' for name, value in cells)
    return f'<tr class="{"failed" if record.failed else "ok"}" data-probe-id="{record.id}">{tds}</tr>'


def _expiry_cell(record: ProbeRecord) -> str:
    cert = leaf_or_soonest(record.result)
    if cert is None:
        return ""
    label = cert.subject_cn or cert.subject
    if record.result.addresses is not None:
        note = f" (soonest of {len(record.result.addresses)} addresses)"
    else:
        note = "" if is_presented_chain(record.result) else f" (soonest of {len(record.result.certs)})"
    return f"{describe_expiry(cert.not_after, record.time)}<br><small>{html.escape(label)}{note}</small>"


def log_page(record: ProbeRecord) -> str:
    """A recorded probe's debug text, escaped into a page with a way back."""
    e = html.escape
    outcome = "OK" if record.result.success else "FAILED"
    return _page(f"Probe {record.id}: {record.target}", f"""<p><a href="/">&larr; SSL Exporter</a></p>
<h1>Probe {record.id}: {e(record.target)} <small>({e(record.module)}, {outcome})</small></h1>
<pre>{e(debug_text(record))}</pre>""")
