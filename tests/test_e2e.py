"""End to end: the exporter, the real Prometheus with the shipped rules, the real Alertmanager
with the shipped routing, and the shipped dashboard's queries.

Three local TLS servers present 90-day certificates of the test PKI (leaf and intermediate):
one with 89 days left, one expiring in 3 days, one expired a day ago. Prometheus probes them through the exporter with
the relabelling of deploy/prometheus/prometheus.yml, every second, and evaluates a copy of
deploy/prometheus/rules/ssl_exporter.rules.yml in which only the ``for:`` durations are
shortened (to 2s). Alertmanager runs a copy of deploy/alertmanager/alertmanager.yml whose
webhook URLs point at a receiver in this process and whose group_wait/group_interval are 1s.

Nothing sleeps a fixed time: every wait polls a condition with a 60 s deadline and fails
with what it saw. Prometheus, Alertmanager (Debian packages ``prometheus`` and
``prometheus-alertmanager``) and the exporter must be runnable; the tests fail without them.
"""

from __future__ import annotations

import copy
import textwrap
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.command import exporter_command
from tests.conftest import PKI
from tests.pki import DAY, NOW
from tests.servers import pytls
from tests.servers import rdap as rdap_registry
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
from tests.test_deploy_manifests import exprs, panels, substitute

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SHIPPED_PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
SHIPPED_RULES = DEPLOY / "prometheus" / "rules" / "ssl_exporter.rules.yml"
SHIPPED_ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"

EXPORTER_JOB = "ssl-exporter"  # SSLExporterDown watches up{job="ssl-exporter"}
PROBE_JOB = "ssl"


@dataclass
class Stack:
    exporter: Daemon
    prometheus: Daemon
    alertmanager: Daemon
    webhook: Webhook
    instances: dict[str, str]  # "valid" | "expiring" | "expired" -> the instance label
    domain: str = ""  # the instance label of the domain probe (module domain, docs/domains.md)

    def query(self, expr: str) -> tuple[int, Any]:
        return self.prometheus.get("/api/v1/query", query=expr)

    def logs(self) -> str:
        return "\n".join(f"--- {d.name} log (tail):\n{d.log_tail(1500)}"
                         for d in (self.exporter, self.prometheus, self.alertmanager))


def _prometheus_config(exporter: str, targets: list[str], alertmanager: str, rules: Path,
                       domains: tuple[str, ...] = ()) -> dict[str, Any]:
    """Scrape jobs as the shipped prometheus.yml has them, pointed at the local processes."""
    shipped = yaml.safe_load(SHIPPED_PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in shipped["scrape_configs"]}
    assert EXPORTER_JOB in jobs and PROBE_JOB in jobs, list(jobs)
    relabel = copy.deepcopy(jobs[PROBE_JOB]["relabel_configs"])
    # The shipped relabelling, verbatim but for the exporter's address in the last step.
    assert relabel[-1] == {"target_label": "__address__", "replacement": "localhost:9219"}, relabel[-1]
    relabel[-1]["replacement"] = exporter
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "alerting": {"alertmanagers": [{"api_version": "v2", "static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            {"job_name": EXPORTER_JOB, "static_configs": [{"targets": [exporter]}]},
            {
                "job_name": PROBE_JOB,
                "metrics_path": jobs[PROBE_JOB]["metrics_path"],
                # No __param_module: the shipped default module (https) applies.
                "static_configs": [{"targets": targets},
                                   *([{"targets": list(domains), "labels": {"__param_module": "domain"}}]
                                     if domains else [])],
                "relabel_configs": relabel,
            },
        ],
    }


@pytest.fixture(scope="module")
def stack(pki: PKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("e2e")
    leaves = {  # name: (not before, not after); 90-day lifetimes like an ACME certificate's
        "valid": (NOW - DAY, NOW + 89 * DAY),
        "expiring": (NOW - 87 * DAY, NOW + 3 * DAY),
        "expired": (NOW - 91 * DAY, NOW - DAY),
    }
    with ExitStack() as resources:
        instances = {}
        for name, (not_before, not_after) in leaves.items():
            leaf = pki.inter.issue(f"{name}.e2e.test", dns=(f"{name}.e2e.test",), ips=("127.0.0.1",),
                                   not_before=not_before, not_after=not_after)
            cert, key = pki.chain_files(f"e2e-{name}", leaf, pki.inter)
            port, _ = resources.enter_context(pytls.tls_server(cert, key))
            instances[name] = f"127.0.0.1:{port}"
        # A domain registration probe (rdap prober) against the loopback registry double.
        registry_cert = pki.inter.issue("rdap.e2e.test", ips=("127.0.0.1",))
        registry_crt, registry_key = pki.chain_files("e2e-rdap", registry_cert, pki.inter)
        registry = resources.enter_context(rdap_registry.serve_in_thread(str(registry_crt), str(registry_key)))

        # The module the shipped relabelling picks by default, trusting the test root.
        config = directory / "ssl_exporter.yml"
        config.write_text(textwrap.dedent(f"""\
            modules:
              https:
                prober: tcp
                timeout: 5s
                tls_config: {{ca_file: {pki.root_file}}}
              domain:
                prober: rdap
                timeout: 5s
                tls_config: {{ca_file: {pki.root_file}}}
                rdap: {{servers: {{test: "{registry.base}/thick/"}}}}
            """))
        exporter = Daemon("ssl_exporter", lambda port: exporter_command(
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
        ), directory / "exporter.log", cwd=ROOT)
        resources.callback(exporter.stop)

        webhook = resources.enter_context(webhook_receiver())
        am_config = alertmanager_for_test(SHIPPED_ALERTMANAGER, directory / "alertmanager.yml", webhook.url)
        alertmanager = resources.enter_context(run_alertmanager(directory / "alertmanager", am_config))

        rules = rules_with_short_for(SHIPPED_RULES, directory / "ssl_exporter.rules.yml", "2s")
        prom_config = _prometheus_config(f"127.0.0.1:{exporter.port}", list(instances.values()),
                                         f"127.0.0.1:{alertmanager.port}", rules, domains=("www.shop.test",))
        prometheus = resources.enter_context(run_prometheus(directory / "prometheus", prom_config))

        yield Stack(exporter, prometheus, alertmanager, webhook, instances, domain="www.shop.test")
    # SIGTERM is a clean shutdown for the exporter.
    assert exporter.process.returncode == 0, exporter.log_tail()


# ---- Alerts ------------------------------------------------------------------------------

# (instance key, alert) -> severity, as the shipped rules fire them. Expiry alerts overlap by
# design (Alertmanager inhibits the lesser ones): a 90-day certificate with 3 days left is
# under both the 7-day critical and the 21-day warning threshold; an expired one also has
# "less than 7 days left" and an invalid chain.
EXPECTED_ALERTS = {
    ("expiring", "SSLCertificateExpiringSoon"): "critical",
    ("expiring", "SSLCertificateExpiring"): "warning",
    ("expired", "SSLCertificateExpired"): "critical",
    ("expired", "SSLCertificateExpiringSoon"): "critical",
    ("expired", "SSLCertificateExpiring"): "warning",
    ("expired", "SSLCertificateChainInvalid"): "critical",
}
# What Alertmanager's shipped inhibitions suppress of those; the rest pages.
INHIBITED = {
    ("expiring", "SSLCertificateExpiring"),  # by SSLCertificateExpiringSoon
    ("expired", "SSLCertificateExpiringSoon"),  # by SSLCertificateExpired, as are the next two
    ("expired", "SSLCertificateExpiring"),
    ("expired", "SSLCertificateChainInvalid"),
}


def _alerts(stack: Stack) -> tuple[int, list[dict[str, Any]]]:
    status, body = stack.prometheus.get("/api/v1/alerts")
    return status, body["data"]["alerts"] if status == 200 else body


def _key(stack: Stack, labels: dict[str, str]) -> tuple[str, str]:
    names = {v: k for k, v in stack.instances.items()}
    return names.get(labels.get("instance", ""), labels.get("instance", "")), labels["alertname"]


def test_expected_alerts_fire_and_nothing_for_the_valid_certificate(stack: Stack) -> None:
    def firing() -> tuple[bool, Any]:
        status, alerts = _alerts(stack)
        if status != 200:
            return False, alerts
        states = {_key(stack, a["labels"]): a["state"] for a in alerts}
        return all(states.get(k) == "firing" for k in EXPECTED_ALERTS), states

    states = wait_until(firing, f"alerts {sorted(EXPECTED_ALERTS)} firing in Prometheus", timeout=60,
                        details=stack.logs)
    _, alerts = _alerts(stack)
    by_key = {_key(stack, a["labels"]): a for a in alerts}
    # Exactly the expected alerts, pending ones included: none for the valid certificate,
    # none about the exporter (SSLExporterDown, SSLExporterConfigReloadFailed) or the
    # probes themselves (SSLHandshakeFailing, SSLProbeFailing).
    assert set(by_key) == set(EXPECTED_ALERTS), states
    assert not [k for k in by_key if k[0] == "valid"]
    for key, severity in EXPECTED_ALERTS.items():
        labels = by_key[key]["labels"]
        assert labels["severity"] == severity, labels
        assert labels["job"] == PROBE_JOB and labels["module"] == "https", labels
    # The expiry alerts are about the leaf, named in the labels and the annotations.
    soon = by_key[("expiring", "SSLCertificateExpiringSoon")]
    assert soon["labels"]["subject_cn"] == "expiring.e2e.test"
    assert soon["labels"]["position"] == "0"
    assert "expiring.e2e.test" in soon["annotations"]["summary"]
    assert stack.instances["expiring"] in soon["annotations"]["summary"]
    assert 2.9 * 86400 < float(soon["value"]) <= 3 * 86400
    expired = by_key[("expired", "SSLCertificateExpired")]
    assert expired["labels"]["subject_cn"] == "expired.e2e.test"
    assert 86400 <= float(expired["value"]) < 1.1 * 86400
    # The chain alert quotes the verify reason, fetched by the annotation's query.
    chain = by_key[("expired", "SSLCertificateChainInvalid")]
    assert "(reason: expired)" in chain["annotations"]["description"], chain["annotations"]


def test_alertmanager_inhibits_and_pages_the_critical_alerts(stack: Stack) -> None:
    def in_alertmanager() -> tuple[bool, Any]:
        status, alerts = stack.alertmanager.get("/api/v2/alerts")
        if status != 200:
            return False, alerts
        states = {_key(stack, a["labels"]): (a["status"]["state"], a["status"]["inhibitedBy"]) for a in alerts}
        done = all(
            k in states and (states[k][0] == "suppressed") == (k in INHIBITED) for k in EXPECTED_ALERTS
        )
        return done, states

    states = wait_until(in_alertmanager, "Alertmanager to hold the alerts, inhibiting "
                        f"exactly {sorted(INHIBITED)}", timeout=60, details=stack.logs)
    assert all(states[k][1] for k in INHIBITED), states  # inhibitedBy names the source alert

    def page(instance: str, alertname: str) -> Any:
        def match(path: str, body: Any) -> bool:
            return path == "/page" and isinstance(body, dict) and any(
                a["status"] == "firing" and a["labels"]["alertname"] == alertname
                and a["labels"].get("instance") == instance for a in body.get("alerts", []))

        _, body = stack.webhook.wait_for(match, f"{alertname} for {instance} on /page", timeout=60,
                                        details=stack.logs)
        return body

    body = page(stack.instances["expiring"], "SSLCertificateExpiringSoon")
    assert body["receiver"] == "oncall-pager"
    # Grouped by instance, as shipped: one notification per target.
    assert body["groupLabels"] == {"instance": stack.instances["expiring"]}
    alert = next(a for a in body["alerts"] if a["labels"]["alertname"] == "SSLCertificateExpiringSoon")
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["instance"] == stack.instances["expiring"]
    assert "expiring.e2e.test" in alert["annotations"]["summary"]

    body = page(stack.instances["expired"], "SSLCertificateExpired")
    assert body["receiver"] == "oncall-pager"
    assert {a["labels"]["severity"] for a in body["alerts"]} == {"critical"}

    with stack.webhook.changed:
        posts = list(stack.webhook.posts)
    sent = {_key(stack, a["labels"]) for _, body in posts for a in body["alerts"]}
    assert not [k for k in sent if k[0] == "valid"], sent
    # Not asserted: that no inhibited alert was ever notified. An inhibited alert can reach
    # Alertmanager an evaluation before the alert inhibiting it (SSLCertificateChainInvalid
    # needs no recording rule, SSLCertificateExpired does; a rule evaluation can overlap the
    # recording group's) and be sent when the 1s group_wait ends, where the shipped 30s
    # would have covered the gap. The suppression itself is checked above, race-free.


# ---- Dashboard ---------------------------------------------------------------------------


def _wait_for_scrapes(stack: Stack, scrapes: int = 3) -> None:
    """Until Prometheus has scraped each of the five targets ``scrapes`` times."""
    def scraped() -> tuple[bool, Any]:
        status, body = stack.query("count_over_time(up[1m])")
        if status != 200:
            return False, body
        counts = {r["metric"]["instance"]: float(r["value"][1]) for r in body["data"]["result"]}
        return len(counts) == 5 and min(counts.values()) >= scrapes, counts

    wait_until(scraped, f"{scrapes} scrapes of the exporter, the 3 TLS probes and the domain probe", timeout=60,
               details=stack.logs)


# Renewal tables (docs/renewal.md) list certificates of ari: modules and renewals at rest, which
# this stack has none of; tests/test_e2e_renewal.py checks that they return data.
EMPTY_HERE = {"Renewal windows (ARI)", "Served certificates renewed at rest"}


def test_every_dashboard_query_parses_and_returns_data(stack: Stack) -> None:
    _wait_for_scrapes(stack)
    problems = []
    for where, expr in exprs():
        query = substitute(expr)
        status, body = stack.query(query)
        if status != 200 or body.get("status") != "success":
            problems.append(f"{where}: HTTP {status} {body}\n  {query}")
        elif not body["data"]["result"] and where.rsplit(" / ", 1)[0] not in EMPTY_HERE:
            problems.append(f"{where}: no data\n  {query}")
    assert not problems, "\n".join(problems)


# What each stat tile shows with the three targets (one expired, one expiring in 3 days) and
# the domain (registered until 2031, status fine, looked up).
STAT_TILES = {
    "Targets": 4,
    "Probes failing": 1,  # the expired certificate fails verification
    "Certificates expired": 1,
    "Expiring within $critical_days days": 1,  # the 3-day one; the expired one is not "expiring"
    "Expiring within $warning_days days": 1,
    "Certificates revoked": 0,
    "Exporters up": 1,
    "Exporters down": 0,
    "Config reload failing": 0,
    "Domains expired": 0,
    "Domains expiring within 7 days": 0,
    "Domains expiring within 30 days": 0,
    "Domains on hold or being deleted": 0,
    "Domain lookups failing": 0,
}


def test_dashboard_tiles_show_the_right_numbers(stack: Stack) -> None:
    _wait_for_scrapes(stack)
    tiles = {p["title"]: p["targets"][0]["expr"] for p in panels() if p["type"] == "stat"}
    assert set(STAT_TILES) <= set(tiles), set(STAT_TILES) - set(tiles)
    shown = {}
    for title in STAT_TILES:
        status, body = stack.query(substitute(tiles[title]))
        assert status == 200, body
        shown[title] = [float(r["value"][1]) for r in body["data"]["result"]]
    assert shown == {title: [value] for title, value in STAT_TILES.items()}

    # Nothing wrong (the valid target alone): every tile still shows a number, 0 where
    # nothing matches (the tiles' "or vector(0)"), rather than "No data".
    healthy = {title: 0.0 for title in STAT_TILES} | {"Targets": 1.0, "Exporters up": 1.0}
    shown = {}
    for title in STAT_TILES:
        query = substitute(tiles[title].replace("$instance", stack.instances["valid"]))
        status, body = stack.query(query)
        assert status == 200, body
        shown[title] = [float(r["value"][1]) for r in body["data"]["result"]]
    assert shown == {title: [value] for title, value in healthy.items()}

    # The certificate table: each target's leaf and intermediate, the expired leaf negative.
    table = next(p for p in panels() if p["title"] == "Certificates by time left")
    status, body = stack.query(substitute(table["targets"][0]["expr"]))
    assert status == 200, body
    rows = {(r["metric"]["instance"], r["metric"]["position"]): float(r["value"][1]) for r in body["data"]["result"]}
    assert set(rows) == {(i, p) for i in stack.instances.values() for p in ("0", "1")}, rows
    assert all(r["metric"]["version"].startswith("TLS") for r in body["data"]["result"])
    left = {name: rows[(instance, "0")] / 86400 for name, instance in stack.instances.items()}
    assert 88.9 < left["valid"] <= 89 and 2.9 < left["expiring"] <= 3 and -1.1 < left["expired"] <= -1, left


def test_domain_table_shows_the_registration(stack: Stack) -> None:
    _wait_for_scrapes(stack)
    table = next(p for p in panels() if p["title"] == "Domains by time left")
    left, age, registrar = (stack.query(substitute(t["expr"])) for t in table["targets"])
    assert [status for status, _ in (left, age, registrar)] == [200, 200, 200]
    [row] = left[1]["data"]["result"]
    assert row["metric"]["instance"] == stack.domain and row["metric"]["module"] == "domain"
    expected = datetime(2031, 7, 1, 12, tzinfo=UTC).timestamp() - time.time()
    assert abs(float(row["value"][1]) - expected) < 120
    [row] = age[1]["data"]["result"]
    assert 0 <= float(row["value"][1]) < 300  # fetched during this test run, cached since
    assert [r["metric"]["registrar"] for r in registrar[1]["data"]["result"]] == ["Example Registrar, Inc."]
