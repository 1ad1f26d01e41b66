"""`ssl-exporter check`: Nagios states and output against real local TLS servers."""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ssl_exporter import check, cli
from tests.conftest import PKI
from tests.pki import DAY, NOW, Cert
from tests.servers import pytls

NAME = "check.example.test"


@contextmanager
def serving(pki: PKI, name: str, leaf: Cert, *chain: Cert) -> Iterator[str]:
    """A TLS server for ``leaf`` and ``chain``; yields its target."""
    cert, key = pki.chain_files(name, leaf, *chain)
    with pytls.tls_server(cert, key) as (port, _):
        yield f"127.0.0.1:{port}"


def run(capsys: pytest.CaptureFixture[str], config_file: Path | None, target: str, *args: str) -> tuple[int, str]:
    """``ssl-exporter check`` in this process, through the same entry point as the console script."""
    argv = ["check", target, "--hostname", NAME, *args]
    if config_file is not None:
        argv += ["--config.file", str(config_file)]
    code = cli.main(argv)
    return code, capsys.readouterr().out


def status_line(out: str) -> str:
    return out.splitlines()[0]


@pytest.mark.parametrize(
    ("days", "code", "state"),
    [(90, check.OK, "OK"), (14, check.WARNING, "WARNING"), (3, check.CRITICAL, "CRITICAL")],
)
def test_state_follows_the_days_left(capsys, pki: PKI, config_file: Path, days: int, code: int, state: str) -> None:
    leaf = pki.inter.issue(NAME, dns=(NAME,), not_after=NOW + days * DAY)
    with serving(pki, f"check-{days}", leaf, pki.inter) as target:
        exit_code, out = run(capsys, config_file, target)
    assert exit_code == code, out
    first = status_line(out)
    assert first.startswith(f"SSL_CERT {state} - {target}: certificate expires in {days - 1}d 23h (")
    days_left = float(re.search(r"\| days_left=([\d.]+);21;7;; duration=[\d.]+s;;;0;$", first)[1])
    assert days - 0.01 < days_left <= days
    # The human report: verification, name, TLS, and the chain table with time left.
    assert f"Name:       {NAME}: matches the leaf" in out
    assert "Chain:      verified" in out
    assert re.search(r"TLS:        TLS 1\.3, TLS_\w+", out)
    assert re.search(rf"^0  {NAME}\s+Test Intermediate CA\s+\d{{4}}-\d\d-\d\d \d\d:\d\d UTC\s+{days - 1}d 23h$",
                     out, re.MULTILINE)
    assert re.search(r"^1  Test Intermediate CA\s+Test Root CA\s+", out, re.MULTILINE)


def test_thresholds_are_configurable(capsys, pki: PKI, config_file: Path) -> None:
    leaf = pki.inter.issue(NAME, dns=(NAME,), not_after=NOW + 14 * DAY)
    with serving(pki, "check-thresholds", leaf, pki.inter) as target:
        exit_code, out = run(capsys, config_file, target, "--warning-days", "10", "--critical-days", "2")
    assert exit_code == check.OK
    assert ";10;2;;" in status_line(out)


def test_expired_is_critical(capsys, pki: PKI, config_file: Path) -> None:
    leaf = pki.inter.issue(NAME, dns=(NAME,), not_before=NOW - 30 * DAY, not_after=NOW - 2 * DAY)
    with serving(pki, "check-expired", leaf, pki.inter) as target:
        exit_code, out = run(capsys, config_file, target)
    assert exit_code == check.CRITICAL
    first = status_line(out)
    assert first.startswith(f"SSL_CERT CRITICAL - {target}: verify/expired: OpenSSL: certificate has expired")
    assert "certificate expired 2d 0h ago" in first or "certificate expired 1d 23h ago" in first
    assert re.search(r"\| days_left=-[12]\.\d\d;21;7;;", first)
    assert "Time left:  expired" in out and "from the leaf" in out  # the chain did not verify


@pytest.mark.parametrize(
    ("issuer_is_trusted", "hostname", "reason"),
    [(False, NAME, "verify/unknown_issuer"), (True, "other.example.test", "verify/hostname_mismatch")],
)
def test_invalid_chain_or_name_is_critical(capsys, pki: PKI, config_file: Path, issuer_is_trusted: bool,
                                           hostname: str, reason: str) -> None:
    issuer = pki.inter if issuer_is_trusted else pki.other_inter
    leaf = issuer.issue(NAME, dns=(NAME,))
    with serving(pki, f"check-{reason[7:]}", leaf, issuer) as target:
        exit_code, out = run(capsys, config_file, target, "--hostname", hostname)  # the last one counts
    assert exit_code == check.CRITICAL
    assert status_line(out).startswith(f"SSL_CERT CRITICAL - {target}: {reason}: ")


def test_insecure_module_reports_but_does_not_enforce_verification(capsys, pki: PKI, config_file: Path) -> None:
    leaf = pki.other_inter.issue(NAME, dns=(NAME,))
    with serving(pki, "check-insecure", leaf) as target:
        exit_code, out = run(capsys, config_file, target, "--module", "insecure")
    assert exit_code == check.OK
    assert "verify/incomplete_chain" in status_line(out)
    assert "Chain:      NOT verified" in out


def test_unreachable_is_critical_without_days(capsys, config_file: Path) -> None:
    with pytls.refused_port() as port:
        exit_code, out = run(capsys, config_file, f"127.0.0.1:{port}")
    assert exit_code == check.CRITICAL
    first = status_line(out)
    assert first.startswith(f"SSL_CERT CRITICAL - 127.0.0.1:{port}: connect/refused: ")
    assert "days_left" not in first and "| duration=" in first


def test_timeout_is_critical(capsys, config_file: Path) -> None:
    with pytls.serve(pytls.silent) as port:
        exit_code, out = run(capsys, config_file, f"127.0.0.1:{port}", "--timeout", "0.3")
    assert exit_code == check.CRITICAL
    assert "handshake/timeout: deadline of 0.3s passed" in status_line(out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bad host"], "target 'bad host' contains whitespace or control characters"),
        (["example.test", "--module", "nope"], "unknown module 'nope'"),
        (["example.test", "--hostname", "a b"], "'a b': host contains whitespace"),
        (["example.test", "-w", "3", "-c", "7"], "--critical-days must not exceed --warning-days"),
        (["example.test", "--format", "xml"], "argument --format: invalid choice: 'xml' (choose from "),
        ([], "the following arguments are required: TARGET"),
        # Not finite, negative: nan compared false with everything (3 days left was WARNING),
        # and a timeout of inf waited forever.
        (["example.test", "-c", "nan"], "argument --critical-days/-c: 'nan' is not a finite number"),
        (["example.test", "-w", "inf"], "argument --warning-days/-w: 'inf' is not a finite number"),
        (["example.test", "-c", "-1"], "argument --critical-days/-c: '-1' is negative"),
        (["example.test", "--timeout", "inf"], "argument --timeout: 'inf' is not a finite number"),
        (["example.test", "--timeout", "NaN"], "argument --timeout: 'NaN' is not a finite number"),
        (["example.test", "--timeout", "-5"], "argument --timeout: '-5' is not positive"),
        (["example.test", "--timeout", "0"], "argument --timeout: '0' is not positive"),
        (["example.test", "--timeout", "soon"], "argument --timeout: 'soon' is not a number"),
    ],
)
def test_bad_input_is_unknown(capsys, args: list[str], message: str) -> None:
    assert cli.main(["check", *args]) == check.UNKNOWN
    out = capsys.readouterr().out
    assert out.startswith(f"SSL_CERT UNKNOWN - {message}") and out.count("\n") == 1


def test_invalid_configuration_is_unknown(capsys, tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("modules:\n  m: {timeout: never}\n")
    assert cli.main(["check", "example.test", "--config.file", str(path)]) == check.UNKNOWN
    assert capsys.readouterr().out.startswith("SSL_CERT UNKNOWN - invalid configuration: modules.m.timeout: ")


def test_json_uses_the_verified_chain_expiry(capsys, pki: PKI, config_file: Path) -> None:
    # The intermediate expires long before the leaf: the chain, not the leaf, sets the time left.
    short_inter = pki.root.issue("Short-lived Intermediate", ca=True, not_after=NOW + 5 * DAY)
    leaf = short_inter.issue(NAME, dns=(NAME,), not_after=NOW + 60 * DAY)
    with serving(pki, "check-json", leaf, short_inter) as target:
        exit_code, out = run(capsys, config_file, target, "--format", "json")
        untrusted_code, untrusted_out = run(capsys, None, target, "--format", "json")  # system trust store
    doc = json.loads(out)
    assert exit_code == doc["exit_code"] == check.CRITICAL
    assert doc["status"] == "CRITICAL"
    assert doc["summary"].startswith(f"{target}: chain expires in 4d 23h")
    assert (doc["target"], doc["module"], doc["hostname"]) == (target, "test", NAME)
    assert doc["expiry_source"] == "verified_chain"
    assert 4.99 < doc["days_left"] <= 5
    assert doc["expires"] == short_inter.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (doc["success"], doc["chain_valid"], doc["hostname_valid"]) == (True, True, True)
    assert doc["tls_version"] == "TLS 1.3" and doc["errors"] == []
    assert [c["subject_cn"] for c in doc["certificates"]] == [NAME, "Short-lived Intermediate"]
    assert doc["certificates"][0]["dns_names"] == [NAME]
    assert doc["certificates"][0]["serial"] == leaf.serial

    untrusted = json.loads(untrusted_out)
    assert untrusted_code == check.CRITICAL
    assert untrusted["expiry_source"] == "leaf"  # not verified: only the leaf's date is known to hold
    assert 59.99 < untrusted["days_left"] <= 60
    assert untrusted["errors"][0]["reason"] == "unknown_issuer"


def test_json_for_bad_input(capsys) -> None:
    assert cli.main(["check", "bad host", "--format", "json"]) == check.UNKNOWN
    assert json.loads(capsys.readouterr().out) == {
        "status": "UNKNOWN", "exit_code": 3, "summary": "target 'bad host' contains whitespace or control characters"}


def test_real_process_warning(pki: PKI, config_file: Path) -> None:
    leaf = pki.inter.issue(NAME, dns=(NAME,), not_after=NOW + 10 * DAY)
    with serving(pki, "check-process", leaf, pki.inter) as target:
        process = subprocess.run(
            [sys.executable, "-m", "ssl_exporter", "check", target, "--hostname", NAME,
             "--config.file", str(config_file), "--warning-days=30", "--critical-days=5"],
            capture_output=True, text=True, timeout=30)
    assert process.returncode == check.WARNING, process.stdout + process.stderr
    assert process.stdout.startswith(f"SSL_CERT WARNING - {target}: certificate expires in 9d 23h (")
    assert ";30;5;;" in process.stdout.splitlines()[0]
    assert process.stderr == ""


def test_the_server_still_takes_its_flags() -> None:
    # "check" is a subcommand only as the first argument; everything else is the server's.
    args = cli.parse_args(["--web.listen-address=127.0.0.1:9300", "--config.file=check"])
    assert (args.host, args.port, args.config_file) == ("127.0.0.1", 9300, "check")


# ---- --ca-file, --cert-file, --key-file: a private CA and mTLS without a YAML file ---------


def test_ca_file_verifies_a_private_ca(capsys, pki: PKI) -> None:
    leaf = pki.inter.issue(NAME, dns=(NAME,), not_after=NOW + 90 * DAY)
    (pki.dir / "other-root.pem").write_bytes(pki.other_root.pem)
    with serving(pki, "check-ca-file", leaf, pki.inter) as target:
        default_code, default_out = run(capsys, None, target)  # the system trust store
        code, out = run(capsys, None, target, "--ca-file", str(pki.root_file))
        alias_code, _ = run(capsys, None, target, "-r", str(pki.root_file))  # check_ssl_cert's spelling
        wrong_code, wrong_out = run(capsys, None, target, "--ca-file", str(pki.dir / "other-root.pem"))
    assert default_code == check.CRITICAL and "verify/unknown_issuer" in status_line(default_out)
    assert code == alias_code == check.OK, out
    assert status_line(out).startswith(f"SSL_CERT OK - {target}: certificate expires in 89d 23h (")
    assert "Chain:      verified" in out
    assert wrong_code == check.CRITICAL and "verify/unknown_issuer" in status_line(wrong_out)


def test_ca_file_replaces_the_modules_own(capsys, pki: PKI, config_file: Path) -> None:
    # config_file's default module trusts the test root; --ca-file puts another in its place.
    leaf = pki.inter.issue(NAME, dns=(NAME,), not_after=NOW + 90 * DAY)
    (pki.dir / "other-root.pem").write_bytes(pki.other_root.pem)
    with serving(pki, "check-ca-replaced", leaf, pki.inter) as target:
        assert run(capsys, config_file, target)[0] == check.OK
        code, out = run(capsys, config_file, target, "--ca-file", str(pki.dir / "other-root.pem"))
    assert code == check.CRITICAL and "verify/unknown_issuer" in status_line(out)


@contextmanager
def mtls_server(pki: PKI, name: str) -> Iterator[tuple[str, pytls.TLSServer]]:
    """A server that requires a client certificate issued under the test root.

    TLS 1.2, so that a missing client certificate fails the handshake itself (TLS 1.3 servers
    reject it only after the client has finished).
    """
    leaf = pki.inter.issue(NAME, dns=(NAME,), not_after=NOW + 90 * DAY)
    cert, key = pki.chain_files(name, leaf, pki.inter)
    with pytls.tls_server(cert, key, client_ca=pki.root_file, max_version=ssl.TLSVersion.TLSv1_2) as (port, server):
        yield f"127.0.0.1:{port}", server


def test_client_certificate_options_for_mtls(capsys, pki: PKI) -> None:
    ca = ["--ca-file", str(pki.root_file)]
    combined = pki.dir / "client-and-key.pem"  # certificate, chain and key in one file
    combined.write_bytes((pki.dir / "client.crt").read_bytes() + (pki.dir / "client.key").read_bytes())
    with mtls_server(pki, "check-mtls") as (target, _):
        without_code, without_out = run(capsys, None, target, *ca)
        code, out = run(capsys, None, target, *ca, "--cert-file", str(pki.dir / "client.crt"),
                        "--key-file", str(pki.dir / "client.key"))
        combined_code, _ = run(capsys, None, target, *ca, "--clientcert", str(combined))
    assert without_code == check.CRITICAL
    assert status_line(without_out).startswith(f"SSL_CERT CRITICAL - {target}: handshake/")
    assert code == combined_code == check.OK, out
    assert "Chain:      verified" in out


def test_cert_file_replaces_the_modules_key_too(capsys, pki: PKI, tmp_path: Path) -> None:
    # The module's key belongs to the module's certificate: --cert-file alone must not pair
    # the new certificate with it.
    other = pki.root.issue("other client")
    other_cert, other_key = other.write(tmp_path, "other-client")
    combined = tmp_path / "other-client.pem"
    combined.write_bytes(other_cert.read_bytes() + other_key.read_bytes())
    path = tmp_path / "c.yml"
    path.write_text(f"modules:\n  m:\n    tls_config: {{ca_file: {pki.root_file}, cert_file: {pki.dir / 'client.crt'},"
                    f" key_file: {pki.dir / 'client.key'}}}\n")
    with mtls_server(pki, "check-mtls-module") as (target, _):
        assert run(capsys, path, target)[0] == check.OK
        code, out = run(capsys, path, target, "--cert-file", str(combined))
    assert code == check.OK, out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--key-file", "k.pem"], "--key-file requires --cert-file"),
        (["--ca-file", "missing.pem"], "--ca-file: file not found: {dir}/missing.pem"),
        (["--ca-file", "garbage.pem"], "--ca-file: no usable CA certificate in {dir}/garbage.pem: "),
        (["--cert-file", "garbage.pem"], "--cert-file: cannot "),
        (["--cert-file", "client.crt", "--key-file", "other.key"],
         "--key-file: cannot load client certificate and key: "),
        (["--ca-file", "root.pem", "--module", "files"], "--ca-file: module files probes certificates at rest "
                                                         "(prober file), not a TLS server"),
    ],
)
def test_bad_tls_file_options_are_unknown(capsys, pki: PKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          args: list[str], message: str) -> None:
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    (tmp_path / "root.pem").write_bytes(pki.root.pem)
    (tmp_path / "client.crt").write_bytes((pki.dir / "client.crt").read_bytes())
    (tmp_path / "other.key").write_bytes(pki.other_root.key_pem)
    config_path = tmp_path / "c.yml"
    config_path.write_text("modules:\n  tcp: {}\n  files: {prober: file}\n")
    monkeypatch.chdir(tmp_path)  # relative paths are the caller's, as on any command line
    assert cli.main(["check", "example.test", "--config.file", str(config_path), *args]) == check.UNKNOWN
    out = capsys.readouterr().out
    assert out.startswith(f"SSL_CERT UNKNOWN - {message.format(dir=tmp_path)}"), out
    assert out.count("\n") == 1
# --- forged output (issue 12, item 4) ----------------------------------------------------------


def assert_not_forged(out: str) -> str:
    """One "|" in all, the status line's own before its perfdata; return the status line."""
    first = status_line(out)
    assert out.count("|") == 1 and re.search(r" \| (days_left=[\d.-]+;21;7;; )?duration=[\d.]+s;;;0;$", first), out
    assert sum(line.startswith("SSL_CERT") for line in out.splitlines()) == 1
    return first


def test_a_server_refusal_cannot_forge_perfdata(capsys, tmp_path: Path) -> None:
    from tests.servers import dialogue

    path = tmp_path / "c.yml"
    path.write_text("modules:\n  smtp: {prober: tcp, timeout: 3s, tcp: {starttls: smtp}}\n")
    script = [dialogue.Send(b"220 mx.example.test ESMTP\r\n"), dialogue.Expect(b"EHLO "),
              dialogue.Send(b"250-mx.example.test\r\n250 STARTTLS\r\n"), dialogue.Expect(b"STARTTLS"),
              dialogue.Send(b"454 4.7.0 TLS not available | injected=1;2;3\r\n")]
    with dialogue.serve_script(*script) as (port, _server):
        code = cli.main(["check", f"127.0.0.1:{port}", "-m", "smtp", "--config.file", str(path)])
    out = capsys.readouterr().out
    assert code == check.CRITICAL
    first = assert_not_forged(out)
    assert "454 4.7.0 TLS not available \\x7c injected=1;2;3" in first


def test_a_certificate_name_cannot_forge_lines_or_perfdata(capsys, pki: PKI, config_file: Path) -> None:
    cn = "evil|x\nSSL_CERT OK - all good | days_left=999;21;7;;"
    leaf = pki.inter.issue(cn, not_after=NOW + 90 * DAY)  # no DNS SAN: the CN is the name checked
    with serving(pki, "check-forged", leaf, pki.inter) as target:
        exit_code, out = run(capsys, config_file, target, "--hostname", "evil.example.test")
    assert exit_code == check.CRITICAL
    assert_not_forged(out)
    escaped = "evil\\x7cx\\x0aSSL_CERT OK - all good \\x7c days_left=999;21;7;;"
    assert re.search(rf"^0  {re.escape(escaped[:39])}…  Test Intermediate CA  ", out, re.MULTILINE), out


def test_a_hostname_with_a_line_break_in_its_zone_id_is_unknown(capsys) -> None:
    assert cli.main(["check", "127.0.0.1:1", "-H", "fe80::1%\r\nSSL_CERT OK - forged"]) == check.UNKNOWN
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("SSL_CERT UNKNOWN - 'fe80::1%\\r\\nSSL_CERT OK - forged': ")


@pytest.mark.parametrize("stdout", ["closed", "broken pipe"])
def test_a_closed_stdout_is_no_traceback(stdout: str) -> None:
    import os

    with pytls.refused_port() as port:
        argv = [sys.executable, "-m", "ssl_exporter", "check", f"127.0.0.1:{port}"]
        if stdout == "closed":  # fd 1 closed: Python has no sys.stdout at all
            process = subprocess.run(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=30,
                                     preexec_fn=lambda: os.close(1))  # noqa: PLW1509 - no threads in the child yet
        else:  # a reader that went away (check ... | head -0)
            read_end, write_end = os.pipe()
            os.close(read_end)
            try:
                process = subprocess.run(argv, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=30)
            finally:
                os.close(write_end)
    assert process.returncode == check.CRITICAL
    assert process.stderr == ""
