"""Config loading: one invalid-*.yml fixture per rule, each with its exact expected message."""

from __future__ import annotations

import os
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from ssl_exporter import config, prepare, starttls, yamlrules
from tests.command import exporter_command

TESTDATA = Path(__file__).parent / "testdata" / "config"
INVALID = sorted(TESTDATA.glob("invalid-*.yml"))


def expected_message(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: '"
    return (first.removeprefix("# expect: ")
            .replace("{dir}", str(TESTDATA))
            .replace("{file}", str(path))
            .replace("{starttls}", ", ".join(sorted(starttls.DIALOGUES)) or "none"))


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_config_is_rejected_with_key_path(path: Path) -> None:
    with pytest.raises(config.ConfigError) as caught:
        prepare.load_file(str(path))
    assert str(caught.value) == expected_message(path)


def test_there_is_a_fixture_per_rule() -> None:
    assert len(INVALID) >= 25


def test_embedded_default_config() -> None:
    cfg = prepare.load_default()
    assert cfg.default_module == "tcp"
    assert {"tcp", "https"} <= set(cfg.modules)
    tcp = cfg.modules["tcp"]
    assert tcp.prober == "tcp" and tcp.timeout == 10.0 and tcp.default_port == 443
    assert tcp.tls_config.ca_file is None  # the system trust store
    assert tcp.ssl_context is not None and tcp.ssl_context.cert_store_stats()["x509_ca"] >= 0


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    ca = Path(__file__).parent / "testdata" / "config"
    (tmp_path / "sub").mkdir()
    cfg_file = tmp_path / "sub" / "config.yml"
    root_pem = tmp_path / "sub" / "root.pem"
    from tests.pki import make_root

    root_pem.write_bytes(make_root("Relative Root").pem)
    cfg_file.write_text("modules:\n  web:\n    tls_config: {ca_file: root.pem}\n")
    module = prepare.load_file(str(cfg_file)).modules["web"]
    assert module.tls_config.ca_file == str(root_pem)
    assert module.ssl_context is not None
    assert module.ssl_context.cert_store_stats()["x509_ca"] == 1
    assert ca.exists()


def test_full_module_round_trips_with_secrets_redacted(tmp_path: Path) -> None:
    cfg = prepare.load_text(
        "modules:\n"
        "  web:\n"
        "    timeout: 1m30s\n"
        "    tcp:\n"
        "      preferred_ip_protocol: ip4\n"
        "      ip_protocol_fallback: false\n"
        "      source_ip_address: 127.0.0.1\n"
        "      proxy_url: http://user:s3cret@127.0.0.1:3128\n"
        "    tls_config: {min_version: TLS12, max_version: TLS13, server_name: Bücher.example}\n",
        source="test",
    )
    web = cfg.modules["web"]
    assert web.timeout == 90.0
    assert web.tcp.preferred_ip_protocol == "ip4" and web.tcp.ip_protocol_fallback is False
    assert web.tls_config.server_name == "xn--bcher-kva.example"
    redacted = cfg.redacted()
    assert redacted["modules"]["web"]["tcp"]["proxy_url"] == "http://user:<secret>@127.0.0.1:3128"
    assert "s3cret" not in str(redacted)


@pytest.mark.parametrize(("text", "seconds"), [("10s", 10), ("500ms", 0.5), ("1m30s", 90), ("1h", 3600)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert yamlrules.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "s", "10 s", "-1s", "1d"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        yamlrules.parse_duration(text)


def test_config_check_cli_names_the_bad_key() -> None:
    bad = TESTDATA / "invalid-timeout.yml"
    run = subprocess.run(exporter_command("--config.check", f"--config.file={bad}"),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stderr.strip() == f"ssl-exporter: invalid configuration: {expected_message(bad)}"
    assert "Traceback" not in run.stderr


def test_config_check_cli_accepts_the_default() -> None:
    run = subprocess.run(exporter_command("--config.check"),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0
    assert run.stdout.startswith("config OK: embedded default:")


def test_an_unforeseen_error_while_loading_is_a_config_error(monkeypatch) -> None:
    """A bug or an odd file must not escape a load (start-up, reload, --config.check) as a
    traceback: it becomes a ConfigError naming the module, so a reload keeps the old config."""
    from ssl_exporter import tls

    def broken(settings):
        raise RuntimeError("boom")

    monkeypatch.setattr(tls, "build_client_context", broken)
    with pytest.raises(config.ConfigError) as caught:
        prepare.load_text("modules:\n  web: {}\n", source="test")
    assert str(caught.value) == "modules.web: cannot load: RuntimeError: boom"


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(exporter_command(*args), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("check", [True, False], ids=["config.check", "start-up"])
def test_deep_nesting_is_one_line_not_a_traceback(tmp_path: Path, check: bool) -> None:
    """5,000 levels made yaml's composer raise RecursionError: a traceback, not a message."""
    path = tmp_path / "deep.yml"
    path.write_text("modules:\n  web:\n    timeout: " + "[" * 5000 + "]" * 5000 + "\n")
    run = _run_cli(f"--config.file={path}", "--web.listen-address=127.0.0.1:0", *(["--config.check"] if check else []))
    assert run.returncode == 1
    assert run.stderr == (f"ssl-exporter: invalid configuration: {path}: nested deeper than 64 levels "
                          f"(line 3, column 75)\n")


def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    """The issue's bomb in default_module: a 102 MB message and 40 s of --config.check before."""
    bomb = TESTDATA / "invalid-yaml-alias-bomb-default-module.yml"
    run = _run_cli("--config.check", f"--config.file={bomb}")
    assert run.returncode == 1
    assert run.stderr.strip() == f"ssl-exporter: invalid configuration: {expected_message(bomb)}"


def test_aliases_within_the_bound_still_work() -> None:
    """Anchors for shared settings are a fair use of YAML: they keep working."""
    cfg = prepare.load_text(
        "modules:\n"
        "  a: {timeout: 3s, tls_config: &tls {min_version: TLS12, server_name: shared.example}}\n"
        "  b: {timeout: 4s, tls_config: *tls}\n"
        "  c: &c {timeout: 5s}\n"
        "  d: {<<: *c, prober: tcp}\n", source="test")
    assert cfg.modules["b"].tls_config == cfg.modules["a"].tls_config
    assert cfg.modules["b"].tls_config.server_name == "shared.example"
    assert cfg.modules["d"].timeout == 5.0


def test_a_merge_key_chain_is_bounded_too() -> None:
    """Merge keys copy mappings into mappings: counted like the aliases they are."""
    lines = ["modules:", "  web: {}", "x0: &x0 {k0: 1, k1: 2, k2: 3, k3: 4, k4: 5, k5: 6, k6: 7, k7: 8, k8: 9, k9: 0}"]
    lines += [f"x{i}: &x{i} {{<<: [{', '.join([f'*x{i - 1}'] * 10)}]}}" for i in range(1, 8)]
    with pytest.raises(config.ConfigError) as caught:
        prepare.load_text("\n".join(lines) + "\n", source="merge.yml")
    assert str(caught.value) == "merge.yml: aliases expand to more than 100000 nodes (line 7, column 30)"


def test_the_web_config_is_bounded_alike(tmp_path: Path) -> None:
    from ssl_exporter import webconfig

    path = tmp_path / "web.yml"
    path.write_text("basic_auth_users: " + "{a: " * 100 + "b" + "}" * 100 + "\n")
    with pytest.raises(webconfig.WebConfigError) as caught:
        webconfig.load(str(path))
    assert str(caught.value) == f"{path}: nested deeper than 64 levels (line 1, column 268)"


def test_modules_with_the_same_trust_settings_share_one_context(tmp_path: Path) -> None:
    """Each tcp module parsed the system trust store again: 19 times for the default config."""
    default = prepare.load_default()
    assert len(default.modules) == 20
    assert len({id(m.ssl_context) for m in default.modules.values() if m.prober == "tcp"}) == 1
    from tests.pki import make_root

    (tmp_path / "root.pem").write_bytes(make_root("Shared Root").pem)
    cfg = prepare.load_text(
        "modules:\n"
        "  a: {tls_config: {ca_file: root.pem}}\n"
        "  b: {tls_config: {ca_file: root.pem, server_name: b.example, insecure_skip_verify: true}}\n"
        "  c: {tls_config: {ca_file: root.pem, min_version: TLS13}}\n"
        "  d: {}\n"
        "  e: {revocation: {methods: [stapling]}}\n"
        "  f: {revocation: {methods: [stapling]}, tls_config: {server_name: f.example}}\n",
        source="test", base_dir=str(tmp_path))
    m = cfg.modules
    assert m["a"].ssl_context is m["b"].ssl_context  # server name and skip-verify apply per probe
    assert m["c"].ssl_context is not m["a"].ssl_context  # other versions: a context of its own
    assert m["c"].ssl_context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert m["a"].ssl_context.cert_store_stats()["x509_ca"] == 1
    assert m["d"].ssl_context is m["e"].ssl_context is not m["a"].ssl_context  # the system store
    assert m["e"].stapling_context is m["f"].stapling_context is not None
    # A new load builds its own: a changed CA file or system store is picked up by a reload.
    again = prepare.load_text("modules:\n  a: {tls_config: {ca_file: root.pem}}\n", "test", str(tmp_path))
    assert again.modules["a"].ssl_context is not m["a"].ssl_context


def test_the_config_file_is_bounded_and_no_device(tmp_path: Path) -> None:
    big = tmp_path / "big.yml"
    big.write_bytes(b"# padding\n" * (yamlrules.MAX_CONFIG_BYTES // 10 + 1))
    with pytest.raises(config.ConfigError, match=f"^{big}: larger than {yamlrules.MAX_CONFIG_BYTES} bytes$"):
        prepare.load_file(str(big))
    with pytest.raises(config.ConfigError, match="^/dev/zero: not a regular file$"):
        prepare.load_file("/dev/zero")
    # The config file itself may still come from a FIFO (--config.file=<(make-config)).
    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=("modules:\n  piped: {prober: tcp}\n",))
    writer.start()
    assert "piped" in prepare.load_file(str(fifo)).modules
    writer.join(10)
