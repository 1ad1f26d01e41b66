"""Checks of deploy/prometheus and deploy/alertmanager with the real tools.

promtool (Debian package `prometheus`) and amtool (`prometheus-alertmanager`) must be
installed: these tests fail, not skip, without them, since skipping would let broken
rules through unnoticed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROM_DIR = DEPLOY / "prometheus"
RULES = PROM_DIR / "rules" / "ssl_exporter.rules.yml"
RULE_TESTS = sorted((PROM_DIR / "rules" / "tests").glob("*.yml"))
PROM_CONFIGS = [PROM_DIR / "prometheus.yml", PROM_DIR / "prometheus-sharded.yml"]
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
CONTRACT = ROOT.parent / "shared" / "CONTRACT.md"

# Metrics the exporter documents beyond the table in CONTRACT.md.
EXTRA_METRICS = {
    "ssl_exporter_build_info",
    "ssl_exporter_config_last_reload_successful",
    "ssl_exporter_config_last_reload_success_timestamp_seconds",
    "ssl_exporter_probes_in_flight",
    "ssl_exporter_probes_total",
    "ssl_cert_revoked",
    "ssl_revocation_status_info",
    "ssl_fallback_handshake",  # docs/metrics.md, "Fallback handshake"
    "ssl_fallback_tls_version_info",
    "ssl_caa_lookup_success",  # docs/metrics.md, "CAA" (fixed in CONTRACT.md's second round)
    "ssl_caa_issuer_allowed",
    "ssl_caa_info",
}
# The contract table, as of writing; used when CONTRACT.md is not next to the repo.
CONTRACT_METRICS = {
    "ssl_probe_success",
    "ssl_probe_duration_seconds",
    "ssl_probe_phase_duration_seconds",
    "ssl_probe_error_info",
    "ssl_handshake_success",
    "ssl_chain_valid",
    "ssl_hostname_valid",
    "ssl_verified_chain_expiry_timestamp_seconds",
    "ssl_cert_not_after_timestamp_seconds",
    "ssl_cert_not_before_timestamp_seconds",
    "ssl_cert_info",
    "ssl_tls_version_info",
    "ssl_tls_cipher_info",
}
# Fixed for the second round (CONTRACT.md), for runs where CONTRACT.md is not next to the repo.
CONTRACT_METRICS |= {"ssl_cert_ari_window_start_timestamp_seconds", "ssl_cert_ari_window_end_timestamp_seconds",
                     "ssl_cert_ari_status_info"}


def known_metrics() -> set[str]:
    names = set(CONTRACT_METRICS)
    if CONTRACT.exists():
        found = set(re.findall(r"`(ssl_[a-z_]+)`", CONTRACT.read_text()))
        names |= found - {"ssl_exporter"}  # the Python package name
    return names | EXTRA_METRICS


def run(tool: str, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    path = shutil.which(tool) or f"/usr/bin/{tool}"
    if not Path(path).exists():
        pytest.fail(f"{tool} is not installed (apt-get install prometheus prometheus-alertmanager)")
    return subprocess.run(
        [path, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300, check=False
    )


def rules_doc() -> dict[str, Any]:
    return yaml.safe_load(RULES.read_text())


def all_rules() -> list[dict[str, Any]]:
    return [rule for group in rules_doc()["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in all_rules() if "alert" in rule]


EXPECTED_ALERTS = {
    "SSLCertificateExpired",
    "SSLCertificateExpiringSoon",
    "SSLCertificateExpiring",
    "SSLCertificateRenewalOverdue",
    "SSLCertificateNotYetValid",
    "SSLCertificateChainInvalid",
    "SSLCertificateHostnameMismatch",
    "SSLCertificateRevoked",
    "SSLHandshakeFailing",
    "SSLProbeFailing",
    "SSLExporterDown",
    "SSLExporterConfigReloadFailed",
    "SSLAddressesServeDifferentCertificates",
    "SSLCAAForbidsIssuer",
    "SSLCAALookupFailing",
}
# The renewal watch (docs/renewal.md).
EXPECTED_ALERTS |= {"SSLCertificateNotDeployed", "SSLCertificateRenewalWindowPassed", "SSLCertificateRenewalLate"}


# ---- the rules ---------------------------------------------------------------------


def test_rules_file_passes_promtool_check() -> None:
    result = run("promtool", "check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(all_rules())} rules found" in result.stdout


def test_rules_define_the_documented_alerts() -> None:
    names = [rule["alert"] for rule in alerts()]
    # One name may have a warning and a critical rule (SSLCertificateNotDeployed), no more.
    severities = [(rule["alert"], rule["labels"]["severity"]) for rule in alerts()]
    assert len(severities) == len(set(severities)), "duplicate alert names"
    assert set(names) == EXPECTED_ALERTS


def test_rule_unit_tests_pass() -> None:
    assert len(RULE_TESTS) >= 3
    result = run("promtool", "test", "rules", *RULE_TESTS)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "FAILED" not in output
    # promtool prints one "Unit Testing: <file>" header and one SUCCESS per file.
    assert output.count("Unit Testing:") == len(RULE_TESTS)
    assert len(re.findall(r"^\s+SUCCESS\s*$", output, re.M)) == len(RULE_TESTS)


def _test_cases() -> list[tuple[str, dict[str, Any]]]:
    cases = []
    for path in RULE_TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                cases.append((path.name, case))
    return cases


@pytest.mark.parametrize("alertname", sorted(EXPECTED_ALERTS))
def test_every_alert_is_tested_firing_and_quiet(alertname: str) -> None:
    cases = [case for _, case in _test_cases() if case["alertname"] == alertname]
    assert any(case.get("exp_alerts") for case in cases), f"no test where {alertname} fires"
    assert any(case.get("exp_alerts") == [] for case in cases), (
        f"no test where {alertname} stays quiet (exp_alerts: [])"
    )


def test_rule_tests_reference_the_rules_file() -> None:
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text())
        assert [(path.parent / f).resolve() for f in doc["rule_files"]] == [RULES.resolve()], path


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_alert_labels_and_annotations(alert: dict[str, Any]) -> None:
    assert alert["labels"]["severity"] in {"warning", "critical"}
    annotations = alert["annotations"]
    assert annotations.get("summary") and annotations.get("description")
    assert "$labels.instance" in annotations["summary"] + annotations["description"]
    # Rides out at least one failed scrape at the 1m interval of prometheus.yml.
    assert re.fullmatch(r"\d+[mh]", alert["for"]), alert.get("for")
    if alert["alert"].startswith("SSLCertificateExpir") or alert["alert"] == "SSLCertificateRenewalOverdue":
        text = annotations["summary"] + annotations["description"]
        assert "$labels.subject_cn" in text
        assert "$value | humanizeDuration" in text


def test_rules_use_only_documented_metrics_and_defined_records() -> None:
    known = known_metrics()
    records = {rule["record"] for rule in all_rules() if "record" in rule}
    for rule in all_rules():
        metrics = set(re.findall(r"\bssl_[a-z_]+", rule["expr"]))
        # Annotations query metrics as selectors: `ssl_cert_info{...}` (prose aside).
        for text in rule.get("annotations", {}).values():
            metrics |= set(re.findall(r"\bssl_[a-z_]+(?=\{)", text))
        assert metrics <= known, (rule.get("alert") or rule.get("record"), metrics - known)
        used_records = set(re.findall(r"\bssl:[a-z_0-9:]+", rule["expr"]))
        assert used_records <= records, used_records - records
    for name in records:
        assert re.fullmatch(r"ssl:[a-z_]+(:[a-z0-9_]+)?", name), name


# Each mutation undoes one design decision; the unit tests must catch every one, or
# they do not test what they claim to.
MUTATIONS = {
    "no smoothing over a failed probe": (
        "or on (job, instance, module, address)\n"
        '          last_over_time(ssl_cert_not_after_timestamp_seconds{position="0"}[15m])',
        "",
    ),
    "leaf expiry instead of the verified chain's": (
        "min by (job, instance, module, address) (ssl:verified_chain_expiry_timestamp_seconds:last15m)",
        "min by (job, instance, module, address) (ssl:leaf_not_after_timestamp_seconds:last15m)",
    ),
    "verified chain only, no leaf fallback": (
        "          or\n          ssl:leaf_not_after_timestamp_seconds:last15m\n",
        "\n",
    ),
    "no keep_firing_for": ("keep_firing_for: 10m", "keep_firing_for: 0s"),
    "chain alert ignores insecure_skip_verify": (
        "last_over_time(ssl_chain_valid[15m]) == 0\n"
        "          unless on (job, instance, module) last_over_time(ssl_probe_success[15m]) == 1\n",
        "last_over_time(ssl_chain_valid[15m]) == 0\n",
    ),
    "warning at 30 days": ("21 * 86400", "30 * 86400"),
    "critical without the lifetime fraction": (
        "clamp_max(ssl:cert_lifetime_seconds * 0.1, 7 * 86400)",
        "ssl:cert_lifetime_seconds * 0 + 7 * 86400",
    ),
}


MUTATIONS.update({
    "renewal joined on the subject CN instead of the name set": (
        "< on (names_digest) group_left", "< on (subject_cn) group_left"),
    "renewal regardless of not-before": (
        "ssl:served_leaf_not_before_timestamp_seconds:by_names\n          < on",
        "ssl:served_leaf_not_before_timestamp_seconds:by_names\n          != on"),
    "ARI late without the day's grace": ("> 86400", "> 0"),
})


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_rule_unit_tests_catch_mutations(mutation: str, tmp_path: Path) -> None:
    old, new = MUTATIONS[mutation]
    text = RULES.read_text()
    assert old in text, "mutation no longer applies: update MUTATIONS"
    (tmp_path / "rules" / "tests").mkdir(parents=True)
    (tmp_path / "rules" / RULES.name).write_text(text.replace(old, new))
    for path in RULE_TESTS:
        shutil.copy(path, tmp_path / "rules" / "tests" / path.name)
    check = run("promtool", "check", "rules", tmp_path / "rules" / RULES.name)
    assert check.returncode == 0, check.stdout + check.stderr  # still valid rules ...
    result = run("promtool", "test", "rules", *sorted((tmp_path / "rules" / "tests").glob("*.yml")))
    assert result.returncode != 0  # ... that the unit tests reject
    assert "FAILED" in result.stdout + result.stderr


# ---- Prometheus configuration ---------------------------------------------------------


@pytest.mark.parametrize("config", PROM_CONFIGS, ids=lambda p: p.name)
def test_prometheus_config_passes_promtool_check(config: Path) -> None:
    result = run("promtool", "check", "config", config.name, cwd=config.parent)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"SUCCESS: {config.name} is valid prometheus config file syntax" in output
    assert f"SUCCESS: {len(all_rules())} rules found" in output


def _discover(config: dict[str, Any], job: str, tmp_path: Path) -> list[dict[str, Any]]:
    """Targets of `job` after relabelling, as `promtool check service-discovery` reports.

    file_sd targets are inlined as static_configs: promtool 2.42 can panic ("send on
    closed channel") when it stops file discovery, and the relabelling is the same.
    """
    import json

    for scrape in config["scrape_configs"]:
        for sd in scrape.pop("file_sd_configs", []):
            for pattern in sd["files"]:
                for path in sorted(PROM_DIR.glob(pattern)):
                    scrape.setdefault("static_configs", []).extend(yaml.safe_load(path.read_text()))
    config.pop("rule_files", None)
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = run("promtool", "check", "service-discovery", "--timeout=2s", path, job)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def _static_targets(config: dict[str, Any], job: str) -> dict[str, str]:
    """address -> module as configured (static and file_sd), before relabelling."""
    targets = {}
    for scrape in config["scrape_configs"]:
        if scrape["job_name"] != job:
            continue
        groups = list(scrape.get("static_configs", []))
        for sd in scrape.get("file_sd_configs", []):
            for pattern in sd["files"]:
                for path in sorted(PROM_DIR.glob(pattern)):
                    groups.extend(yaml.safe_load(path.read_text()))
        for group in groups:
            for address in group["targets"]:
                targets[address] = group.get("labels", {}).get("__param_module", "https")
    return targets


def test_probe_job_relabelling(tmp_path: Path) -> None:
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    expected = _static_targets(config, "ssl")
    assert len(expected) >= 5 and set(expected.values()) == {"https", "smtp"}
    exporters = [
        t for s in config["scrape_configs"] if s["job_name"] == "ssl-exporter" for g in s["static_configs"]
        for t in g["targets"]
    ]
    discovered = _discover(config, "ssl", tmp_path)
    got = {}
    for target in discovered:
        labels = target["labels"]
        assert labels["__address__"] == exporters[0]  # scraped from the exporter
        assert labels["__metrics_path__"] == "/probe"
        assert labels["instance"] == labels["__param_target"] == target["discoveredLabels"]["__address__"]
        assert labels["module"] == labels["__param_module"]
        got[labels["instance"]] = labels["module"]
    assert got == expected
    # file_sd labels other than __param_* survive as target labels.
    team = {t["labels"]["instance"]: t["labels"].get("team") for t in discovered}
    assert team["shop.example.com:443"] == "web" and team["mx1.example.com:25"] == "mail"


def test_sharded_config_partitions_targets(tmp_path: Path) -> None:
    text = (PROM_DIR / "prometheus-sharded.yml").read_text()
    config = yaml.safe_load(text)
    relabel = next(s for s in config["scrape_configs"] if s["job_name"] == "ssl")["relabel_configs"]
    modulus = next(r["modulus"] for r in relabel if r.get("action") == "hashmod")
    assert modulus >= 2
    all_targets = set(_static_targets(config, "ssl"))
    kept: list[set[str]] = []
    for shard in range(modulus):
        shard_config = yaml.safe_load(text)
        rules = next(s for s in shard_config["scrape_configs"] if s["job_name"] == "ssl")["relabel_configs"]
        keep = next(r for r in rules if r.get("action") == "keep")
        keep["regex"] = str(shard)
        shard_dir = tmp_path / str(shard)
        shard_dir.mkdir()
        targets = _discover(shard_config, "ssl", shard_dir)
        kept.append({t["labels"]["instance"] for t in targets if t["labels"]})
        for t in targets:
            if t["labels"]:
                assert t["labels"]["__address__"].endswith(":9219")
    # Every target on exactly one shard.
    assert set().union(*kept) == all_targets
    assert sum(len(k) for k in kept) == len(all_targets)


# ---- Alertmanager ---------------------------------------------------------------------


def test_alertmanager_config_passes_amtool_check() -> None:
    result = run("amtool", "check-config", ALERTMANAGER)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "SUCCESS" in output
    config = yaml.safe_load(ALERTMANAGER.read_text())
    assert f"{len(config['inhibit_rules'])} inhibit rules" in output
    assert f"{len(config['receivers'])} receivers" in output


def route(*labels: str) -> str:
    result = run("amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def test_critical_pages_and_warning_files_a_ticket() -> None:
    assert route("severity=critical", "alertname=SSLCertificateExpired", "instance=a.example:443") == "oncall-pager"
    assert route("severity=warning", "alertname=SSLCertificateExpiring", "instance=a.example:443") == "tickets"


def test_amtool_verify_receivers_rejects_wrong_route() -> None:
    # The negative twin of the test above: amtool does notice a mismatch.
    result = run(
        "amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}",
        "--verify.receivers=oncall-pager", "severity=warning",
    )
    assert result.returncode != 0


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_every_alert_routes_by_severity(alert: dict[str, Any]) -> None:
    expected = {"critical": "oncall-pager", "warning": "tickets"}[alert["labels"]["severity"]]
    assert route(f"alertname={alert['alert']}", f"severity={alert['labels']['severity']}") == expected


def _matches(matchers: list[str], labels: dict[str, str]) -> bool:
    for matcher in matchers:
        m = re.fullmatch(r'(\w+)(=~|!~|=|!=)"(.*)"', matcher)
        assert m, f"unsupported matcher syntax in test: {matcher}"
        name, op, value = m.groups()
        actual = labels.get(name, "")
        ok = {
            "=": actual == value,
            "!=": actual != value,
            "=~": re.fullmatch(value, actual) is not None,
            "!~": re.fullmatch(value, actual) is None,
        }[op]
        if not ok:
            return False
    return True


def _inhibits(source: str, target: str) -> bool:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    for rule in config["inhibit_rules"]:
        if _matches(rule["source_matchers"], {"alertname": source}) and _matches(
            rule["target_matchers"], {"alertname": target}
        ):
            assert "instance" in rule["equal"], rule  # only for the same target
            return True
    return False


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("SSLCertificateExpired", "SSLCertificateExpiring"),
        ("SSLCertificateExpired", "SSLCertificateExpiringSoon"),
        ("SSLCertificateExpired", "SSLCertificateRenewalOverdue"),
        ("SSLCertificateExpiringSoon", "SSLCertificateExpiring"),
        ("SSLHandshakeFailing", "SSLCertificateChainInvalid"),
        ("SSLHandshakeFailing", "SSLCertificateHostnameMismatch"),
        ("SSLProbeFailing", "SSLCertificateChainInvalid"),
        ("SSLProbeFailing", "SSLCertificateHostnameMismatch"),
    ],
)
def test_inhibitions(source: str, target: str) -> None:
    assert _inhibits(source, target)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("SSLCertificateExpiring", "SSLCertificateExpired"),  # never the other way round
        ("SSLCertificateChainInvalid", "SSLHandshakeFailing"),
        ("SSLExporterDown", "SSLCertificateExpired"),
    ],
)
def test_no_inhibition(source: str, target: str) -> None:
    assert not _inhibits(source, target)


def test_inhibit_rules_name_existing_alerts() -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    for rule in config["inhibit_rules"]:
        for key in ("source_matchers", "target_matchers"):
            assert any(_matches(rule[key], {"alertname": name}) for name in EXPECTED_ALERTS), rule[key]
            pattern = re.search(r'alertname=~?"(.*)"', " ".join(rule[key]))
            assert pattern
            for name in pattern.group(1).split("|"):
                assert name in EXPECTED_ALERTS, name


# ---- the README's scrape configuration ------------------------------------------------


def _readme_scrape_config() -> dict[str, Any]:
    """The one YAML block of README.md that configures Prometheus."""
    blocks = re.findall(r"^```yaml\n(.*?)^```", (ROOT / "README.md").read_text(), re.MULTILINE | re.DOTALL)
    configs = [doc for doc in map(yaml.safe_load, blocks) if isinstance(doc, dict) and "scrape_configs" in doc]
    assert len(configs) == 1, f"README.md has {len(configs)} scrape configurations"
    return configs[0]


def test_readme_scrape_config_names_the_jobs_the_rules_watch(tmp_path: Path) -> None:
    """A user who copies the README gets the alerts the shipped rules define (SSLExporterDown)."""
    config = _readme_scrape_config()
    readme_jobs = {job["job_name"] for job in config["scrape_configs"]}
    rule_jobs = set(re.findall(r'\bjob="([^"]+)"', RULES.read_text()))
    assert rule_jobs == {"ssl-exporter"}  # what the rules select by job: their own scrape job
    assert rule_jobs <= readme_jobs, f"README.md names {readme_jobs}, the rules watch {rule_jobs}"
    for shipped in PROM_CONFIGS:
        assert rule_jobs <= {job["job_name"] for job in yaml.safe_load(shipped.read_text())["scrape_configs"]}
    # And the README's block is a configuration Prometheus accepts as it stands.
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = run("promtool", "check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
# ---- Domain registration alerts (the rdap prober, docs/domains.md) ----------------------
# Added here rather than in the sets above so that they stay one block.

DOMAIN_ALERTS = {
    "SSLDomainExpired",
    "SSLDomainExpiringSoon",
    "SSLDomainExpiring",
    "SSLDomainStatusTrouble",
    "SSLDomainLookupFailing",
}
EXPECTED_ALERTS |= DOMAIN_ALERTS
# The contract's second-round names, for when CONTRACT.md is not next to the repo.
CONTRACT_METRICS |= {
    "ssl_domain_expiry_timestamp_seconds",
    "ssl_domain_registration_timestamp_seconds",
    "ssl_domain_status_info",
    "ssl_domain_registrar_info",
    "ssl_domain_lookup_timestamp_seconds",
}
DOMAIN_MUTATIONS = {
    "domain warning at 14 days": ("< 30 * 86400", "< 14 * 86400"),
    "domain critical at 1 day": ("- time() < 7 * 86400", "- time() < 1 * 86400"),
    "no smoothing of domain expiry": ("last_over_time(ssl_domain_expiry_timestamp_seconds[1h])",
                                      "ssl_domain_expiry_timestamp_seconds"),
    "hold is not trouble": ('status=~"client hold|server hold|', 'status=~"server hold|'),
    "domain lookups page as probe failures": ('            or ssl_probe_error_info{stage="rdap"} == 1\n', ""),
    "lookup alert per reason": ("count by (job, instance, module) (ssl_probe_error_info{stage=\"rdap\"}) > 0",
                                "ssl_probe_error_info{stage=\"rdap\"} == 1"),
}
MUTATIONS.update(DOMAIN_MUTATIONS)


@pytest.mark.parametrize("alertname", sorted(DOMAIN_ALERTS))
def test_every_domain_alert_is_tested_firing_and_quiet(alertname: str) -> None:
    test_every_alert_is_tested_firing_and_quiet(alertname)


@pytest.mark.parametrize("mutation", sorted(DOMAIN_MUTATIONS))
def test_domain_rule_tests_catch_mutations(mutation: str, tmp_path: Path) -> None:
    test_rule_unit_tests_catch_mutations(mutation, tmp_path)
