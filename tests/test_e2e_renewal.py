"""End to end, the renewal watch with the real tools on loopback: Debian's pebble as the ACME
CA, Debian's certbot obtaining and renewing a certificate, nginx serving the lineage, the
exporter probing nginx and reading the lineage, the real Prometheus evaluating the shipped
rules and the real Alertmanager routing to a webhook in this process.

The story: the certificate is obtained and served; the ACME stand-in (Debian's pebble 2.4
answers no renewalInfo) says the CA's renewal window for it ended yesterday, and
``SSLCertificateRenewalWindowPassed`` pages. ``certbot renew --force-renewal`` replaces the
lineage but nginx is not reloaded: ``SSLCertificateNotDeployed`` reaches the ticket webhook.
``nginx -s reload``: it resolves.

As in tests/test_e2e.py the rules are a copy in which only ``for:`` is shortened (to 2s),
Alertmanager's group_wait/group_interval are 1s, and every wait polls a condition with a
deadline. The tools must be installed (tests/debian-packages.txt); the test fails without them.
"""

from __future__ import annotations

import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

from cryptography import x509

from tests.command import exporter_command
from tests.conftest import PKI
from tests.pki import DAY, NOW
from tests.servers.acme_ari import ari_server, window
from tests.servers.nginx import NGINX, Site, run_nginx
from tests.servers.pebble import Certbot, run_pebble
from tests.servers.promstack import (
    Daemon,
    Webhook,
    alertmanager_for_test,
    rules_with_short_for,
    run_alertmanager,
    run_prometheus,
    wait_until,
    webhook_receiver,
)
from tests.test_deploy_manifests import panels, substitute

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_RULES = ROOT / "deploy" / "prometheus" / "rules" / "ssl_exporter.rules.yml"
SHIPPED_ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
NAME = "renewal.e2e.test"


def _prometheus_config(exporter: str, nginx: str, lineage: str, alertmanager: str, rules: Path) -> dict[str, Any]:
    def probe_job(job: str, module: str, target: str) -> dict[str, Any]:
        return {
            "job_name": job, "metrics_path": "/probe", "params": {"module": [module]},
            "static_configs": [{"targets": [target]}],
            "relabel_configs": [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "instance"},
                {"target_label": "module", "replacement": module},
                {"target_label": "__address__", "replacement": exporter},
            ],
        }

    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "alerting": {"alertmanagers": [{"api_version": "v2", "static_configs": [{"targets": [alertmanager]}]}]},
        # The served side and the side at rest in different jobs, as in production.
        "scrape_configs": [probe_job("ssl", "https", nginx), probe_job("files", "lineage", lineage)],
    }


def _leaf(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _alert_posted(webhook: Webhook, path: str, alertname: str, status: str, serial: str,
                  logs: Any) -> dict[str, Any]:
    def match(got_path: str, body: Any) -> bool:
        return got_path == path and isinstance(body, dict) and any(
            a["status"] == status and a["labels"]["alertname"] == alertname and a["labels"].get("serial") == serial
            for a in body.get("alerts", []))

    _, body = webhook.wait_for(match, f"{alertname} {status} (serial {serial}) on {path}", timeout=40, details=logs)
    return next(a for a in body["alerts"] if a["labels"]["alertname"] == alertname and a["status"] == status)


def _renewal_panels(prometheus: Daemon) -> dict[str, list[dict[str, Any]]]:
    """The first query of each panel of the dashboard's Renewal row, as Prometheus answers it."""
    row = [p for p in panels() if p["type"] != "row" and p["gridPos"]["y"] > _renewal_row_y()]
    out = {}
    for panel in row:
        status, body = prometheus.get("/api/v1/query", query=substitute(panel["targets"][0]["expr"]))
        assert status == 200 and body["status"] == "success", body
        out[panel["title"]] = body["data"]["result"]
    return out


def _renewal_row_y() -> int:
    return next(p["gridPos"]["y"] for p in panels() if p["type"] == "row" and p["title"] == "Renewal")


def test_renewal_watch_with_pebble_certbot_nginx_prometheus_and_alertmanager(pki: PKI, tmp_path: Path) -> None:
    began = time.monotonic()
    acme_tls_cert, acme_tls_key = pki.inter.issue("acme.e2e.test", ips=("127.0.0.1",)).write(
        tmp_path, "acme-tls", (pki.inter,))
    with (run_pebble(tmp_path / "pebble", acme_tls_cert, acme_tls_key, pki.root_file) as pebble,
          ari_server(acme_tls_cert, acme_tls_key) as acme,
          webhook_receiver() as webhook):
        certbot = Certbot(tmp_path / "certbot", pebble)
        live = certbot.certonly(NAME)
        first = _leaf(live / "cert.pem")
        (tmp_path / "pebble-root.pem").write_bytes(pebble.root_pem)
        # Pebble's leaves carry no AIA caIssuers URL: the CA is named by its key identifier,
        # written into the configuration for this run. The stand-in says: replace it now.
        key_id = first.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        assert key_id is not None
        acme.set(first, window(NOW - 3 * DAY, NOW - DAY))
        ari_block = (f"{{builtin_cas: false, ca_file: {pki.root_file}, "
                     f"cas: [{{directory: '{acme.directory}', key_ids: ['{key_id.hex(':')}']}}]}}")
        config = tmp_path / "ssl_exporter.yml"
        config.write_text(textwrap.dedent(f"""\
            modules:
              https:
                prober: tcp
                timeout: 3s
                tls_config: {{ca_file: {tmp_path / "pebble-root.pem"}, server_name: {NAME}}}
                ari: {ari_block}
              lineage:
                prober: file
                timeout: 3s
                ari: {ari_block}
            """))

        with run_nginx(tmp_path / "nginx", {"site": Site(live / "fullchain.pem", live / "privkey.pem")}) as ports:
            exporter = Daemon("ssl_exporter", lambda port: exporter_command(
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{port}"), tmp_path / "exporter.log", cwd=ROOT)
            try:
                am_config = alertmanager_for_test(SHIPPED_ALERTMANAGER, tmp_path / "alertmanager.yml", webhook.url)
                rules = rules_with_short_for(SHIPPED_RULES, tmp_path / "rules.yml", "2s")
                nginx_target = f"127.0.0.1:{ports['site']}"
                with (run_alertmanager(tmp_path / "alertmanager", am_config) as alertmanager,
                      run_prometheus(tmp_path / "prometheus", _prometheus_config(
                          f"127.0.0.1:{exporter.port}", nginx_target, str(live / "cert.pem"),
                          f"127.0.0.1:{alertmanager.port}", rules)) as prometheus):
                    def logs() -> str:
                        return "\n".join(f"--- {d.name} log (tail):\n{d.log_tail(1500)}"
                                         for d in (exporter, prometheus, alertmanager))

                    serial = f"{first.serial_number:x}"
                    # 1. The CA's window ended a day ago while the certificate is in use: a page.
                    passed = _alert_posted(webhook, "/page", "SSLCertificateRenewalWindowPassed", "firing",
                                           serial, logs)
                    assert passed["labels"]["instance"] in (nginx_target, str(live / "cert.pem"))
                    assert passed["labels"]["severity"] == "critical"
                    assert acme.count("renewal-info") >= 1

                    # 2. Renewed at rest, nginx not reloaded. notBefore has one-second
                    # resolution: renew in a later second than the first issuance.
                    wait_until(lambda: (time.time() >= first.not_valid_before_utc.timestamp() + 1, None),
                               "a second after the first certificate's notBefore", timeout=5)
                    certbot.force_renew()
                    renewed = _leaf(live / "cert.pem")
                    assert renewed.serial_number != first.serial_number
                    assert renewed.not_valid_before_utc > first.not_valid_before_utc
                    not_deployed = _alert_posted(webhook, "/ticket", "SSLCertificateNotDeployed", "firing",
                                                 serial, logs)
                    assert not_deployed["labels"]["instance"] == nginx_target
                    assert not_deployed["labels"]["job"] == "ssl"
                    assert not_deployed["labels"]["severity"] == "warning"
                    assert str(live / "cert.pem") in not_deployed["annotations"]["description"]
                    # The dashboard's renewal row shows the pair and the window.
                    shown = _renewal_panels(prometheus)
                    assert [r["metric"]["serial"] for r in shown["Served certificates renewed at rest"]] == [serial]
                    assert shown["Renewed, not deployed"][0]["value"][1] == "1"
                    assert shown["Renewal window passed"][0]["value"][1] in ("1", "2")  # served, and at rest
                    windows = {(r["metric"]["job"], r["metric"]["serial"]) for r in shown["Renewal windows (ARI)"]}
                    assert ("ssl", serial) in windows

                    # 3. nginx reloads the lineage: the alert resolves.
                    subprocess.run([NGINX, "-p", str(tmp_path / "nginx"), "-c", str(tmp_path / "nginx" / "nginx.conf"),
                                    "-s", "reload"], check=True, capture_output=True, timeout=10)
                    _alert_posted(webhook, "/ticket", "SSLCertificateNotDeployed", "resolved", serial, logs)
                    status, body = prometheus.get("/api/v1/query", query="ssl_cert_info{job='ssl'}")
                    assert status == 200
                    assert [r["metric"]["serial"] for r in body["data"]["result"] if r["metric"]["position"] == "0"] \
                        == [f"{renewed.serial_number:x}"]
            finally:
                exporter.stop()
    assert exporter.process.returncode == 0, exporter.log_tail()
    print(f"renewal e2e wall time: {time.monotonic() - began:.1f}s")
