"""Lint of deploy/grafana and deploy/kubernetes, as far as this machine allows.

No Grafana and no Kubernetes API server run here: the dashboard is checked for
structure, variables and PromQL that promtool parses; the manifests for the fields
each kind needs and for agreement with the files they wrap or refer to.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "ssl_exporter.json"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
K8S = DEPLOY / "kubernetes"
RULES = DEPLOY / "prometheus" / "rules" / "ssl_exporter.rules.yml"
CONTRACT = ROOT.parent / "shared" / "CONTRACT.md"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_deploy_rules import known_metrics  # noqa: E402

from tests.command import exporter_command  # noqa: E402

# What the end-to-end test substitutes before running each expr against Prometheus.
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$job": ".+",
    "$module": ".+",
    "$instance": ".+",
    "$warning_days": "21",
    "$critical_days": "7",
}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(items: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    out = []
    for panel in dashboard()["panels"] if items is None else items:
        out.append(panel)
        out.extend(panels(panel.get("panels", [])))
    return out


def exprs() -> list[tuple[str, str]]:
    return [(f"{p['title']} / {t['refId']}", t["expr"]) for p in panels() for t in p.get("targets", [])]


def substitute(expr: str) -> str:
    for name in sorted(SUBSTITUTIONS, key=len, reverse=True):  # $__range before $__r...
        expr = expr.replace(name, SUBSTITUTIONS[name])
    return expr


def _strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


# ---- dashboard ------------------------------------------------------------------------


def test_dashboard_is_current_grafana_json() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 39
    assert board["uid"] and board["title"]
    assert "__inputs" not in board  # provisioned as is, not imported
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels():
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]


def test_every_panel_uses_the_datasource_variable() -> None:
    data_panels = [p for p in panels() if p["type"] != "row"]
    assert len(data_panels) >= 15
    for panel in data_panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"])["uid"] == "${datasource}"


def test_templating_variables() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "module", "instance", "warning_days", "critical_days"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "module", "instance"):
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"]["uid"] == "${datasource}"
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        assert re.fullmatch(rf"label_values\(ssl_probe_success(\{{.*\}})?, {name}\)", query), query
        # "All" must be a regex every value matches, as the e2e test substitutes.
        assert var["includeAll"] and var["multi"] and var["allValue"] == ".+"
    assert variables["warning_days"]["type"] in {"textbox", "custom"}
    assert variables["critical_days"]["type"] in {"textbox", "custom"}
    assert variables["warning_days"]["current"]["value"] == "21"
    assert variables["critical_days"]["current"]["value"] == "7"


@pytest.mark.parametrize(("where", "expr"), exprs())
def test_expr_is_sane_after_substitution(where: str, expr: str) -> None:
    used = set(re.findall(r"\$\{?(\w+)", expr))
    assert used <= {name.lstrip("$") for name in SUBSTITUTIONS}, used
    result = substitute(expr)
    assert "$" not in result
    bare = _strip_strings(result)
    depth = {"(": 0, "[": 0, "{": 0}
    closing = {")": "(", "]": "[", "}": "{"}
    for char in bare:
        if char in depth:
            depth[char] += 1
        elif char in closing:
            depth[closing[char]] -= 1
            assert depth[closing[char]] >= 0, f"unbalanced {char!r} in {where}"
    assert depth == {"(": 0, "[": 0, "{": 0}, where
    metrics = set(re.findall(r"\bssl_[a-z_]+", bare))
    assert metrics, f"{where} queries no ssl_exporter metric"
    assert metrics <= known_metrics(), metrics - known_metrics()
    # Probe series are filtered by the variables, so the selectors apply.
    for metric in metrics - {m for m in metrics if m.startswith("ssl_exporter_")}:
        for selector in re.findall(rf"\b{metric}\{{([^}}]*)\}}", expr):
            assert 'job=~"$job"' in selector and 'instance=~"$instance"' in selector, where


def test_exprs_parse_with_promtool(tmp_path: Path) -> None:
    """promtool parses every substituted expr (as recording rules: it has no `check expr`)."""
    rules = [{"record": f"dashboard:expr_{i}", "expr": substitute(e)} for i, (_, e) in enumerate(exprs())]
    path = tmp_path / "dashboard_exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(promtool).exists():
        pytest.fail("promtool is not installed (apt-get install prometheus)")
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def _panel(title: str) -> dict[str, Any]:
    matches = [p for p in panels() if p["title"] == title]
    assert len(matches) == 1, title
    return matches[0]


def test_overview_tiles() -> None:
    tiles = {p["title"]: p["targets"][0]["expr"] for p in panels() if p["type"] == "stat"}
    assert "count(ssl_probe_success{" in tiles["Targets"]
    assert "== 0" in tiles["Probes failing"]
    assert ">= 0" in tiles["Certificates expired"]
    assert "$critical_days * 86400" in tiles["Expiring within $critical_days days"]
    assert "$warning_days * 86400" in tiles["Expiring within $warning_days days"]
    for title in ("Certificates expired", "Expiring within $critical_days days", "Expiring within $warning_days days"):
        # Same choice as the alerts: the verified chain's expiry, else the leaf's.
        assert "ssl_verified_chain_expiry_timestamp_seconds" in tiles[title]
        assert 'position="0"' in tiles[title]


def test_certificate_table() -> None:
    table = _panel("Certificates by time left")
    assert table["type"] == "table"
    assert [t["format"] for t in table["targets"]] == ["table", "table"]
    assert all(t["instant"] for t in table["targets"])
    time_left, expires = (t["expr"] for t in table["targets"])
    assert "- time()" in time_left and "* 1000" in expires
    for expr in (time_left, expires):
        assert "group_left (sans)" in expr and "group_left (version)" in expr
    assert table["options"]["sortBy"] == [{"displayName": "Time left", "desc": False}]
    overrides = {o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
                 for o in table["fieldConfig"]["overrides"]}
    left = overrides["Value #A"]
    assert left["displayName"] == "Time left"
    assert left["custom.cellOptions"]["type"] == "color-background"
    steps = [s["value"] for s in left["thresholds"]["steps"]]
    assert steps == [None, 7 * 86400, 21 * 86400]
    assert overrides["Value #B"]["unit"] == "dateTimeAsIso"
    renamed = next(t for t in table["transformations"] if t["id"] == "organize")["options"]["renameByName"]
    for label, column in {"subject_cn": "CN", "issuer_cn": "Issuer", "sans": "SANs", "version": "TLS",
                          "file": "Source file", "secret": "Secret"}.items():
        assert renamed[label] == column


@pytest.mark.parametrize(
    ("title", "needle"),
    [
        ("Probe failures by reason", "count by (stage, reason) (ssl_probe_error_info"),
        ("Probe duration", "ssl_probe_duration_seconds"),
        ("Exporters up", "ssl_exporter_build_info"),
        ("Config reload failing", "ssl_exporter_config_last_reload_successful == 0"),
        ("Probes per second by result", "rate(ssl_exporter_probes_total"),
    ],
)
def test_probe_and_exporter_panels(title: str, needle: str) -> None:
    assert any(needle in t["expr"] for t in _panel(title)["targets"])


def test_grafana_provisioning() -> None:
    sources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert sources["apiVersion"] == 1
    assert [d["type"] for d in sources["datasources"]] == ["prometheus"]
    assert sources["datasources"][0]["url"].startswith("http")
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "ssl_exporter.yml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")


# ---- Kubernetes ----------------------------------------------------------------------


def documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc is not None, f"empty document in {path.name}"
            out.append((path.name, doc))
    return out


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in documents() if doc["kind"] == kind]


REQUIRED = {  # kind -> (apiVersion, top-level paths that must exist)
    "Deployment": ("apps/v1", ["spec.replicas", "spec.selector.matchLabels", "spec.template.spec.containers"]),
    "Service": ("v1", ["spec.selector", "spec.ports"]),
    "ConfigMap": ("v1", ["data"]),
    "ServiceAccount": ("v1", []),
    "ClusterRole": ("rbac.authorization.k8s.io/v1", ["rules"]),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", ["roleRef.kind", "roleRef.name", "subjects"]),
    "PodDisruptionBudget": ("policy/v1", ["spec.selector.matchLabels", "spec.minAvailable"]),
    "ServiceMonitor": ("monitoring.coreos.com/v1", ["spec.selector.matchLabels", "spec.endpoints"]),
    "Probe": ("monitoring.coreos.com/v1", ["spec.prober.url", "spec.module", "spec.targets.staticConfig.static"]),
    "PrometheusRule": ("monitoring.coreos.com/v1", ["spec.groups"]),
}
CLUSTER_SCOPED = {"ClusterRole"}


def _get(doc: dict[str, Any], dotted: str) -> Any:
    value: Any = doc
    for key in dotted.split("."):
        assert isinstance(value, dict) and key in value, f"{doc['kind']} {doc['metadata']['name']}: no {dotted}"
        value = value[key]
    return value


def test_manifests_have_the_fields_their_kind_needs() -> None:
    docs = documents()
    assert {doc["kind"] for _, doc in docs} == set(REQUIRED)
    names = set()
    for filename, doc in docs:
        assert doc["kind"] in REQUIRED, filename
        api_version, paths = REQUIRED[doc["kind"]]
        assert doc["apiVersion"] == api_version, filename
        name = doc["metadata"]["name"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"]["namespace"], name
        assert (doc["kind"], doc["metadata"].get("namespace"), name) not in names, f"duplicate {name}"
        names.add((doc["kind"], doc["metadata"].get("namespace"), name))
        for path in paths:
            assert _get(doc, path) not in (None, [], {}), f"{filename}: {path}"


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _container() -> dict[str, Any]:
    (deployment,) = of_kind("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port)


def test_deployment() -> None:
    (deployment,) = of_kind("Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]
    assert pod["metadata"]["labels"].items() >= spec["selector"]["matchLabels"].items()
    container = _container()
    assert container["image"]
    assert [p["containerPort"] for p in container["ports"]] == [9219]
    for probe, path in (("livenessProbe", "/-/healthy"), ("readinessProbe", "/-/ready")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert _port(container, get["port"]) == 9219
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]


def test_security_context() -> None:
    (deployment,) = of_kind("Deployment")
    pod_context = deployment["spec"]["template"]["spec"].get("securityContext", {})
    context = _container()["securityContext"]
    assert context["runAsNonRoot"] is True or pod_context.get("runAsNonRoot") is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert pod_context.get("runAsUser", context.get("runAsUser", 0)) != 0


def _exporter_config() -> dict[str, Any]:
    (deployment,) = of_kind("Deployment")
    container = _container()
    flag = next(a for a in container["args"] if a.startswith("--config.file="))
    config_path = Path(flag.split("=", 1)[1])
    assert config_path == Path("/etc/ssl_exporter/config.yml")
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent))
    assert "subPath" not in mount  # a subPath mount never sees ConfigMap updates
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    configmap = next(c for c in of_kind("ConfigMap") if c["metadata"]["name"] == volume["configMap"]["name"])
    return yaml.safe_load(configmap["data"][config_path.name])


def test_configmap_holds_the_config_the_deployment_mounts() -> None:
    config = _exporter_config()
    assert config["default_module"] in config["modules"]
    assert {"https", "smtp"} <= set(config["modules"])
    assert config["modules"]["smtp"]["tcp"]["starttls"] == "smtp"
    for name, module in config["modules"].items():
        assert module["prober"] in {"tcp", "file", "kubeconfig", "kubernetes"}, name


def test_configmap_config_passes_the_exporters_config_check(tmp_path: Path) -> None:
    config = _exporter_config()
    # The kubernetes prober resolves the in-cluster API at load time, which only
    # works inside a pod.
    config["modules"] = {k: v for k, v in config["modules"].items() if v["prober"] != "kubernetes"}
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        exporter_command("--config.check", f"--config.file={path}"),
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_service_selects_the_pods_on_9219() -> None:
    (service,) = of_kind("Service")
    (deployment,) = of_kind("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pod_labels.items() >= service["spec"]["selector"].items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == 9219
    assert _port(_container(), port["targetPort"]) == 9219


def test_service_monitor_job_is_the_one_the_rules_expect() -> None:
    (monitor,) = of_kind("ServiceMonitor")
    (service,) = of_kind("Service")
    assert service["metadata"]["labels"].items() >= monitor["spec"]["selector"]["matchLabels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [service["spec"]["ports"][0]["name"]]
    # The job label of a ServiceMonitor's targets is the Service name.
    assert f'up{{job="{service["metadata"]["name"]}"}}' in RULES.read_text()


def test_probes_go_through_the_service() -> None:
    (service,) = of_kind("Service")
    meta = service["metadata"]
    probes = of_kind("Probe")
    config = _exporter_config()
    assert {p["spec"]["module"] for p in probes} == set(config["modules"])
    for probe in probes:
        spec = probe["spec"]
        assert spec["prober"]["url"] == f"{meta['name']}.{meta['namespace']}.svc:{service['spec']['ports'][0]['port']}"
        assert spec["prober"]["path"] == "/probe"
        assert spec["targets"]["staticConfig"]["static"]
        relabel = spec["targets"]["staticConfig"]["relabelingConfigs"]
        assert {"sourceLabels": ["__param_module"], "targetLabel": "module"} in relabel


def test_rbac_lets_the_service_account_list_secrets() -> None:
    (account,) = of_kind("ServiceAccount")
    (deployment,) = of_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is True  # the secrets module needs the token
    (role,) = of_kind("ClusterRole")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]
    (binding,) = of_kind("RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]
    # The secrets Probe only targets the namespace the binding opens.
    secrets_probe = next(p for p in of_kind("Probe") if p["spec"]["module"] == "secrets")
    for target in secrets_probe["spec"]["targets"]["staticConfig"]["static"]:
        assert target.split("/")[0] == binding["metadata"]["namespace"]


def test_prometheus_rule_wraps_the_rules_file() -> None:
    (rule,) = of_kind("PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_dashboard_configmap_wraps_the_dashboard() -> None:
    configmap = next(c for c in of_kind("ConfigMap") if c["metadata"].get("labels", {}).get("grafana_dashboard"))
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    (key,) = configmap["data"]
    assert key.endswith(".json")
    assert json.loads(configmap["data"][key]) == dashboard()


def test_generated_manifests_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(K8S / "generate.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_generate_check_notices_drift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The negative twin: --check fails when a generated file differs."""
    sys.path.insert(0, str(K8S))
    try:
        import generate
    finally:
        sys.path.remove(str(K8S))
    stale = tmp_path / "prometheusrule.yaml"
    text = (K8S / "prometheusrule.yaml").read_text()
    assert "for: 1h" in text
    stale.write_text(text.replace("for: 1h", "for: 2h"))
    monkeypatch.setattr(generate, "OUTPUTS", {stale: generate.prometheus_rule})
    monkeypatch.setattr(generate, "DEPLOY", tmp_path.parent)
    assert generate.main(["--check"]) == 1
