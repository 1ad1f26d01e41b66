"""Settings apart from runtime objects: config.py parses, prepare.py builds, caches live on.

config.py used to build SSL contexts, CRL stores and Kubernetes API access while parsing,
which made it import half the package (an import circle of seven files); the caches of
parsed files, RDAP and ARI answers were module globals no test could start afresh from.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_exporter import arisettings, config, prepare, rdapsettings, safeyaml, tlssettings
from ssl_exporter.probers import PROBERS
from ssl_exporter.probers.base import run_probe
from tests.conftest import PKI

ROOT = Path(__file__).resolve().parent.parent

# Runtime code the settings must not pull in (it imported them back).
RUNTIME_MODULES = ("tls", "stapling", "revocation", "rdap", "ari", "kubeapi", "prepare", "probers")


def test_config_imports_no_runtime_code() -> None:
    code = "import sys, ssl_exporter.config; print(' '.join(sorted(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    loaded = {m.removeprefix("ssl_exporter.") for m in run.stdout.split() if m.startswith("ssl_exporter.")}
    assert "config" in loaded
    assert not {m for m in loaded if m.split(".")[0] in RUNTIME_MODULES}


SETTINGS_TYPES = (config.Config, config.Module, config.TCPConfig, config.FileConfig, config.KubernetesConfig,
                  config.RevocationConfig, tlssettings.TLSConfig, rdapsettings.RDAPConfig, arisettings.AriConfig,
                  arisettings.CAEntry)


@pytest.mark.parametrize("kind", SETTINGS_TYPES, ids=lambda kind: kind.__name__)
def test_settings_types_hold_values_only(kind: type) -> None:
    assert dataclasses.is_dataclass(kind) and kind.__dataclass_params__.frozen  # type: ignore[attr-defined]
    for f in dataclasses.fields(kind):
        annotation = str(f.type)
        assert "Any" not in annotation, f"{kind.__name__}.{f.name}: {annotation}"
        assert "Context" not in annotation and "CRLFiles" not in annotation and "KubeAPI" not in annotation


def test_a_bad_trust_store_is_a_config_error_of_the_prepare_step(tmp_path: Path) -> None:
    """Parsing checks that the file is there; reading it as a trust store is prepare's, with
    the same key path and message as when config.py did both."""
    (tmp_path / "root.pem").write_text("not a certificate\n")
    text = "modules:\n  web:\n    tls_config: {ca_file: root.pem}\n"
    settings = config.load_text(text, "c.yml", str(tmp_path))
    assert settings.modules["web"].tls_config.ca_file == str(tmp_path / "root.pem")
    with pytest.raises(config.ConfigError) as caught:
        prepare.prepare(settings)
    assert str(caught.value) == (f"modules.web.tls_config.ca_file: no usable CA certificate in "
                                 f"{tmp_path / 'root.pem'}: no certificate or crl found")


def test_prepared_modules_read_their_settings_through(pki: PKI) -> None:
    text = (f"target_policy: {{deny_cidrs: [192.0.2.0/24]}}\n"
            f"modules:\n  m: {{timeout: 3s, tls_config: {{ca_file: {pki.root_file}}}, tcp: {{default_port: 8443}}}}\n")
    prepared = prepare.load_text(text, "c.yml")
    module = prepared.modules["m"]
    assert module.settings is prepared.settings.modules["m"]
    assert (module.name, module.timeout, module.default_port) == ("m", 3.0, 8443)
    assert module.tls_config.ca_file == str(pki.root_file)
    assert module.ssl_context is not None and module.ssl_context.cert_store_stats()["x509_ca"] == 1
    assert module.policy is not None and prepared.target_policy is not None
    assert prepared.redacted() == prepared.settings.redacted()


def test_every_load_shares_the_process_caches_unless_given_its_own() -> None:
    first, again = prepare.load_default(), prepare.load_default()
    assert first.modules["tcp"].caches is again.modules["tcp"].caches is prepare.PROCESS_CACHES
    own = prepare.Caches()
    fresh = prepare.load_default(caches=own)
    assert {id(m.caches) for m in fresh.modules.values()} == {id(own)}
    assert own.files is not prepare.PROCESS_CACHES.files and own.rdap is not prepare.PROCESS_CACHES.rdap


async def test_a_prober_uses_the_caches_of_its_load(pki: PKI, tmp_path: Path) -> None:
    """A file probe with a Caches of its own parses into it, and not into the process's."""
    leaf = pki.inter.issue("cached.example.test", dns=("cached.example.test",))
    path = tmp_path / "leaf.pem"
    path.write_bytes(leaf.pem)
    own = prepare.Caches()
    module = prepare.load_text("modules:\n  files: {prober: file}\n", "c.yml", caches=own).modules["files"]
    process_before = (prepare.PROCESS_CACHES.files.hits, prepare.PROCESS_CACHES.files.misses)
    for _ in range(2):
        result = await run_probe(PROBERS["file"], module, str(path), "", 5.0)
        assert result.success and [c.subject_cn for c in result.certs] == ["cached.example.test"]
    assert (own.files.misses, own.files.hits) == (1, 1)
    assert (prepare.PROCESS_CACHES.files.hits, prepare.PROCESS_CACHES.files.misses) == process_before
    own.clear()
    assert (own.files.misses, own.files.hits) == (0, 0)
    result = await run_probe(PROBERS["file"], module, str(path), "", 5.0)
    assert result.success and own.files.misses == 1


def test_one_yaml_loader_keeps_each_callers_rules() -> None:
    """Kubeconfigs count the whole document and accept a recursive alias, as they always
    did; configuration files count what aliases add and refuse a recursive one."""
    loop = safeyaml.load("x: &x {k: *x}\n")
    assert loop["x"]["k"] is loop["x"]
    with pytest.raises(config.ConfigError) as caught:
        config.load_text("x: &x {k: *x}\n", "c.yml")
    assert str(caught.value) == "c.yml: recursive alias *x (line 1, column 11)"
    # Aliases that add 150 x 1,001 nodes: too many for a configuration, within a kubeconfig's
    # bound on the whole document (200,000).
    shared = "a: &a [" + ", ".join(["1"] * 1000) + "]\nb: [" + ", ".join(["*a"] * 150) + "]\n"
    assert len(safeyaml.load(shared)["b"]) == 150
    with pytest.raises(config.ConfigError) as too_many:
        config.load_text(shared, "c.yml")
    assert str(too_many.value).startswith(f"c.yml: aliases expand to more than {safeyaml.MAX_ALIAS_NODES} nodes (")
