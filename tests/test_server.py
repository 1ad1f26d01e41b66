"""HTTP endpoints, bad input, reload, and the real `ssl-exporter` process."""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ssl_exporter import cli
from ssl_exporter import logs as logs_module
from ssl_exporter.server import Exporter, make_app
from tests.command import exporter_command
from tests.conftest import PKI, Samples, probe, serve_exporter
from tests.pki import DAY, NOW
from tests.servers import pytls


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "target parameter is missing"),
        ({"target": "example.com:443", "module": "nope"}, "unknown module 'nope'"),
        ({"target": "bad host"}, "target 'bad host' contains whitespace or control characters"),
        ({"target": "example.com:99999"}, "target 'example.com:99999': port 99999 is out of range 1-65535"),
        ({"target": "example.com", "hostname": "a b"}, "'a b': host contains whitespace"),
        ({"target": "example.com", "hostname": ""}, "'': host is empty"),
        # A line break in an IPv6 zone id went through into debug output and the log page.
        ({"target": "example.com", "hostname": "fe80::1%\r\nssl_probe_success 1"},
         "'fe80::1%\\r\\nssl_probe_success 1': the IPv6 zone id is not an interface name or number "
         "(letters, digits, '_', '.', '-'; at most 15)"),
    ],
)
async def test_bad_probe_input_is_400_with_one_line(client: TestClient, params, message) -> None:
    response = await client.get("/probe", params=params)
    assert response.status == 400
    assert await response.text() == message + "\n"


async def test_bad_scrape_timeout_header_is_400(client: TestClient) -> None:
    response = await client.get("/probe", params={"target": "127.0.0.1:1"},
                                headers={"X-Prometheus-Scrape-Timeout-Seconds": "soon"})
    assert response.status == 400
    assert await response.text() == "X-Prometheus-Scrape-Timeout-Seconds: 'soon' is not a number\n"


async def test_openmetrics_when_asked(client: TestClient) -> None:
    with pytls.refused_port() as port:
        response = await client.get("/probe", params={"target": f"127.0.0.1:{port}"},
                                    headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    body = await response.text()
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")
    assert 'ssl_probe_error_info{stage="connect",reason="refused"} 1.0' in body


async def test_debug_output(client: TestClient, pki: PKI) -> None:
    leaf = pki.inter.issue("debug.example.test", dns=("debug.example.test",))
    cert, key = pki.chain_files("debug", leaf, pki.inter)
    with pytls.tls_server(cert, key) as (port, _):
        response = await client.get("/probe", params={"target": f"127.0.0.1:{port}", "debug": "true",
                                                      "hostname": "wrong.example.test"})
    text = await response.text()
    assert response.headers["Content-Type"].startswith("text/plain")
    logs, _, rest = text.partition("Module configuration:\n")
    assert f"connected to 127.0.0.1:{port}" in logs
    assert "TLS handshake, SNI wrong.example.test" in logs
    assert "FAILED stage=verify reason=hostname_mismatch: wrong.example.test does not match" in logs
    assert "[0] debug.example.test\n    subject:    CN=debug.example.test\n" in logs
    assert "[1] Test Intermediate CA\n" in logs
    assert leaf.pem.decode() in logs and pki.inter.pem.decode() in logs
    assert "test:\n  prober: tcp\n  timeout: 5s" in rest
    assert "ssl_hostname_valid 0.0" in rest


async def test_debug_output_has_openssls_verification_message(client: TestClient, pki: PKI) -> None:
    leaf = pki.other_inter.issue("stranger.example.test", dns=("stranger.example.test",))
    cert, key = pki.chain_files("debug-stranger", leaf, pki.other_inter)
    with pytls.tls_server(cert, key) as (port, _):
        response = await client.get("/probe", params={"target": f"127.0.0.1:{port}", "debug": "true",
                                                      "hostname": "stranger.example.test"})
    text = await response.text()
    assert "OpenSSL: unable to get local issuer certificate (code 20)" in text
    assert "chain valid no, hostname valid yes" in text


async def test_own_metrics_count_probes(client: TestClient) -> None:
    with pytls.refused_port() as port:
        await probe(client, f"127.0.0.1:{port}")
        await probe(client, f"127.0.0.1:{port}")
    response = await client.get("/metrics")
    own = Samples(await response.text())
    assert own.get("ssl_exporter_probes_total", module="test", result="failure") == 2
    assert own.get("ssl_exporter_probes_in_flight") == 0
    assert own.get("ssl_exporter_config_last_reload_successful") == 1
    assert own.get("ssl_exporter_config_last_reload_success_timestamp_seconds") > NOW.timestamp() - DAY.total_seconds()
    assert own.series("ssl_exporter_build_info")[0]["version"] == "0.1.0"
    assert own.series("process_resident_memory_bytes")
    assert own.series("ssl_probe_success") == []  # probe metrics never leak into /metrics


async def test_health_ready_landing_and_config(client: TestClient) -> None:
    assert (await (await client.get("/-/healthy")).text()) == "Healthy\n"
    assert (await (await client.get("/-/ready")).text()) == "Ready\n"
    landing = await (await client.get("/")).text()
    for needle in ("<td>insecure</td>", "<td>mtls</td>", 'href="/metrics"', 'href="/config"', "/-/reload"):
        assert needle in landing
    config_text = await (await client.get("/config")).text()
    assert config_text.startswith("# source: ")
    assert "default_module: test\n" in config_text
    assert "insecure_skip_verify: true" in config_text


async def test_config_redacts_proxy_password(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("modules:\n  p:\n    tcp: {proxy_url: 'http://alice:hunter2@127.0.0.1:3128'}\n")
    async with serve_exporter(path) as c:
        text = await (await c.get("/config")).text()
    assert "proxy_url: http://alice:<secret>@127.0.0.1:3128" in text
    assert "hunter2" not in text


async def test_failed_reload_keeps_the_old_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("modules:\n  first: {timeout: 2s}\n")
    exporter = Exporter(str(path))
    async with TestClient(TestServer(make_app(exporter, enable_lifecycle=True))) as c:
        path.write_text("modules:\n  first: {timeout: never}\n")
        response = await c.post("/-/reload")
        assert response.status == 500
        assert await response.text() == (
            "failed to reload config: modules.first.timeout: 'never' is not a duration like 10s, 1m30s or 500ms\n")
        own = Samples(await (await c.get("/metrics")).text())
        assert own.get("ssl_exporter_config_last_reload_successful") == 0
        with pytls.refused_port() as port:  # the old module still serves
            s = await probe(c, f"127.0.0.1:{port}", module="first")
        assert s.errors() == {("connect", "refused")}

        path.write_text("modules:\n  second: {timeout: 3s}\n")
        assert (await c.post("/-/reload")).status == 200
        own = Samples(await (await c.get("/metrics")).text())
        assert own.get("ssl_exporter_config_last_reload_successful") == 1
        assert (await c.get("/probe", params={"target": "x.example", "module": "first"})).status == 400
        assert exporter.config.modules["second"].timeout == 3.0


async def test_landing_lists_recent_probes_with_links_to_their_logs(client: TestClient, pki: PKI) -> None:
    leaf = pki.inter.issue("recent.example.test", dns=("recent.example.test",), not_after=NOW + 40 * DAY)
    cert, key = pki.chain_files("recent", leaf, pki.inter)
    with pytls.tls_server(cert, key) as (port, _):
        await probe(client, f"127.0.0.1:{port}", hostname="recent.example.test")
    with pytls.refused_port() as refused:
        await probe(client, f"127.0.0.1:{refused}")
    assert (await client.get("/probe", params={"target": "bad host"})).status == 400  # never recorded

    response = await client.get("/")
    page = await response.text()
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    rows = re.findall(r'<tr class="(ok|failed)" data-probe-id="(\d+)">(.*?)</tr>', page)
    assert [cls for cls, _, _ in rows] == ["failed", "ok"]
    failed_id, failed_row = rows[0][1], rows[0][2]
    assert f'data-label="target">127.0.0.1:{refused}<' in failed_row
    assert 'data-label="reason">connect/refused<' in failed_row
    ok_row = rows[1][2]
    assert f"127.0.0.1:{port}<br><small>name recent.example.test</small>" in ok_row
    assert re.search(r"expires in (39d 23h|40d 0h)<br><small>recent.example.test</small>", ok_row)

    log = await client.get("/probe/log", params={"id": failed_id})
    text = await log.text()
    assert log.status == 200 and log.headers["Content-Type"].startswith("text/html")
    assert f"connect to 127.0.0.1:{refused} failed" in text
    assert "error connect/refused" in text
    assert (await client.get("/probe/log", params={"id": "x"})).status == 400
    missing = await client.get("/probe/log", params={"id": "999999"})
    assert missing.status == 404
    assert await missing.text() == "probe 999999 is not in the recent-probes history\n"


async def test_hostile_certificate_names_are_escaped(client: TestClient, exporter: Exporter, pki: PKI) -> None:
    hostile = "<script>alert(1)</script>"
    leaf = pki.inter.issue(hostile, dns=("evil.example.test",))
    cert, key = pki.chain_files("hostile", leaf, pki.inter)
    with pytls.tls_server(cert, key) as (port, _):
        await probe(client, f"127.0.0.1:{port}", hostname="evil.example.test")
    # A hostile target or name is refused before it could be recorded.
    for params in ({"target": hostile}, {"target": "example.test", "hostname": hostile}):
        assert (await client.get("/probe", params=params)).status == 400
    assert len(exporter.history.records()) == 1

    landing = await (await client.get("/")).text()
    log = await (await client.get("/probe/log", params={"id": str(exporter.history.records()[0].id)})).text()
    for page in (landing, log):
        assert hostile not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def _answer_407(requests: list[bytes]) -> Callable[[socket.socket], None]:
    """An HTTP proxy that wants other credentials than those it got."""
    return pytls.http_proxy_answering(b"HTTP/1.1 407 Proxy Authentication Required", requests)


async def test_proxy_password_stays_out_of_logs_debug_config_and_pages(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secrets = ("hunter2", base64.b64encode(b"alice:hunter2").decode())
    requests: list[bytes] = []
    with pytls.serve(_answer_407(requests)) as proxy_port:
        path = tmp_path / "c.yml"
        path.write_text(f"modules:\n  p:\n    tcp: {{proxy_url: 'http://alice:hunter2@127.0.0.1:{proxy_port}'}}\n")
        async with serve_exporter(path) as c:
            debug = await (await c.get("/probe", params={"target": "example.test:443", "debug": "true"})).text()
            await probe(c, "https://bob:hunter2@example.test/")  # a password in the target, too
            config_text = await (await c.get("/config")).text()
            landing = await (await c.get("/")).text()
            logs = [await (await c.get("/probe/log", params={"id": str(i)})).text() for i in (1, 2)]
    assert secrets[1].encode() in requests[0]  # the proxy did get the credentials
    assert "proxy_error: proxy answered 'HTTP/1.1 407 Proxy Authentication Required'" in debug
    assert "proxy_url: http://alice:<secret>@127.0.0.1" in debug
    assert "https://bob:&lt;secret&gt;@example.test/" in landing
    failures = [r for r in caplog.records if r.getMessage() == "probe failed"]
    assert len(failures) == 2
    lines = [fmt.format(r) for r in failures for fmt in (logs_module.LogfmtFormatter(), logs_module.JSONFormatter())]
    assert "target=https://bob:<secret>@example.test/" in lines[2]
    for text in (debug, config_text, landing, *logs, *lines):
        for secret in secrets:
            assert secret not in text


def test_history_flags() -> None:
    args = cli.parse_args([])
    assert (args.history_limit, args.history_failure_limit) == (100, 100)
    args = cli.parse_args(["--history.limit=5", "--history.failure-limit=0"])
    assert (args.history_limit, args.history_failure_limit) == (5, 0)
    with pytest.raises(SystemExit):
        cli.parse_args(["--history.limit=-1"])


def test_flag_defaults_follow_the_contract() -> None:
    args = cli.parse_args([])
    assert (args.host, args.port) == (None, 9219)
    assert args.telemetry_path == "/metrics"
    assert args.timeout_offset == 0.5
    assert args.log_format == "logfmt"
    assert cli.parse_listen_address("[::1]:9300") == ("::1", 9300)
    with pytest.raises(ValueError):
        cli.parse_listen_address("9219")


# --- the real process ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ExporterProcess:
    """`python -m ssl_exporter` as a child; ready once it logs that it listens."""

    def __init__(self, *args: str) -> None:
        self.port = _free_port()
        self.process = subprocess.Popen(
            exporter_command(f"--web.listen-address=127.0.0.1:{self.port}", *args),
            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.wait_for_log("listening")  # in logfmt and JSON alike

    def wait_for_log(self, needle: str) -> str:
        assert self.process.stderr is not None
        for line in self.process.stderr:  # blocks until the process writes; ends at exit
            if needle in line:
                return line
        raise AssertionError(f"exporter exited ({self.process.wait()}) before logging {needle!r}")

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=10)
        finally:
            assert self.process.stderr is not None
            self.process.stderr.close()


def test_process_without_config_probes_a_local_server(pki: PKI) -> None:
    leaf = pki.inter.issue("localhost", dns=("localhost",), not_after=NOW + 12 * DAY)
    cert, key = pki.chain_files("process", leaf, pki.inter)
    exporter = ExporterProcess()
    try:
        with pytls.tls_server(cert, key) as (port, _):
            status, text = exporter.get(f"/probe?target=127.0.0.1:{port}&module=tcp&hostname=localhost")
    finally:
        assert exporter.stop() == 0
    assert status == 200
    s = Samples(text)
    # The embedded default trusts the system store, which does not know the test CA: the
    # probe fails, and every certificate is still reported.
    assert s.get("ssl_probe_success") == 0
    assert s.errors() == {("verify", "unknown_issuer")}
    assert s.get("ssl_handshake_success") == 1
    assert s.get("ssl_hostname_valid") == 1
    assert s.get("ssl_cert_not_after_timestamp_seconds", position="0") == leaf.not_after
    assert s.get("ssl_cert_not_after_timestamp_seconds", position="1") == pki.inter.not_after


def test_process_reloads_on_sighup(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("modules:\n  one: {}\n")
    exporter = ExporterProcess(f"--config.file={path}")
    try:
        path.write_text("modules:\n  two: {}\n")
        exporter.process.send_signal(signal.SIGHUP)
        exporter.wait_for_log("msg=\"config reloaded\"")
        assert "  two:\n" in exporter.get("/config")[1]
        path.write_text("modules: [broken\n")
        exporter.process.send_signal(signal.SIGHUP)
        line = exporter.wait_for_log("config reload failed")
        assert "level=error" in line
        status, text = exporter.get("/metrics")
        assert "ssl_exporter_config_last_reload_successful 0.0" in text
        assert "  two:\n" in exporter.get("/config")[1]
    finally:
        assert exporter.stop() == 0


# --- forged input (issue 12, item 4) ------------------------------------------------------------


@pytest.mark.parametrize("probe_id", ["\u00b2", "\u0661", "9" * 5000, "1" * 21, "+1", " 1", "-1", "1.0", ""])
async def test_probe_log_ids_are_ascii_digits_of_bounded_length(client: TestClient, probe_id: str) -> None:
    # "²" and 5,000 nines answered 500 with a traceback; "١" (Arabic-Indic one) read as probe 1.
    response = await client.get("/probe/log", params={"id": probe_id})
    assert (response.status, await response.text()) == (400, "id must be the number of a recent probe\n")
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_400_answers_clip_the_echoed_input(client: TestClient) -> None:
    host = "a" * 5000
    answers = []
    for params, headers in (({"target": f"{host}:443"}, {}), ({"target": "example.test", "hostname": host}, {}),
                            ({"target": "example.test", "module": host}, {}),
                            ({"target": "127.0.0.1:1"}, {"X-Prometheus-Scrape-Timeout-Seconds": host})):
        response = await client.get("/probe", params=params, headers=headers)
        assert response.status == 400
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        answers.append(await response.text())
    clipped = f"'{'a' * 200}'... (5004 characters)"
    assert answers == [
        f"{clipped}: name longer than 253 characters\n",
        f"'{'a' * 200}'... (5000 characters): name longer than 253 characters\n",
        f"unknown module '{'a' * 200}'... (5000 characters)\n",
        f"X-Prometheus-Scrape-Timeout-Seconds: '{'a' * 200}'... (5000 characters) is not a number\n",
    ]


async def test_every_text_answer_says_nosniff(client: TestClient) -> None:
    with pytls.refused_port() as port:
        paths = ["/-/healthy", "/-/ready", "/config", "/metrics", "/", "/nowhere",
                 f"/probe?target=127.0.0.1:{port}", f"/probe?target=127.0.0.1:{port}&debug=true",
                 "/probe/log?id=999999"]
        statuses = {}
        for path in paths:
            response = await client.get(path)
            statuses[path] = response.status
            assert response.headers.get("X-Content-Type-Options") == "nosniff", path
    assert statuses["/nowhere"] == 404 and statuses["/probe/log?id=999999"] == 404


# --- credentials in URLs (issue 12, item 5) -----------------------------------------------------


async def test_a_token_as_the_proxy_user_name_is_redacted_everywhere(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # proxy_url: http://TOKEN@host:port (a token as the user name, no password) was shown
    # verbatim on /config and in debug output.
    token = "ghp_tok3nAsUserName"
    requests: list[bytes] = []
    with pytls.serve(_answer_407(requests)) as proxy_port:
        path = tmp_path / "c.yml"
        path.write_text(f"modules:\n  p:\n    tcp: {{proxy_url: 'http://{token}@127.0.0.1:{proxy_port}'}}\n")
        async with serve_exporter(path) as c:
            debug = await (await c.get("/probe", params={"target": "example.test:443", "debug": "true"})).text()
            await probe(c, f"https://{token}@example.test/")  # and in a target
            config_text = await (await c.get("/config")).text()
            landing = await (await c.get("/")).text()
            logs = [await (await c.get("/probe/log", params={"id": str(i)})).text() for i in (1, 2)]
    assert base64.b64encode(f"{token}:".encode()) in requests[0]  # the proxy did get it
    assert f"proxy_url: http://<secret>@127.0.0.1:{proxy_port}" in config_text
    assert f"proxy_url: http://<secret>@127.0.0.1:{proxy_port}" in debug
    assert "https://&lt;secret&gt;@example.test/" in landing
    lines = [fmt.format(r) for r in caplog.records
             for fmt in (logs_module.LogfmtFormatter(), logs_module.JSONFormatter())]
    assert any("target=https://<secret>@example.test/" in line for line in lines)
    for text in (debug, config_text, landing, *logs, *lines):
        assert token not in text


async def test_a_kubeconfig_cluster_url_with_credentials_is_redacted_in_reload_errors(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    kubeconfig = tmp_path / "kubeconfig"
    config_path = tmp_path / "c.yml"
    config_path.write_text(f"modules:\n  k: {{prober: kubernetes, kubernetes: {{kubeconfig: {kubeconfig}}}}}\n")
    kubeconfig.write_text(yaml.safe_dump({
        "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "u"}}],
    }))
    exporter = Exporter(str(config_path))
    answers = []
    async with TestClient(TestServer(make_app(exporter, enable_lifecycle=True))) as c:
        for server in ("http://admin:s3cretPass@127.0.0.1:6443", "http://s3cretToken@127.0.0.1:6443"):
            kubeconfig.write_text(kubeconfig.read_text().replace("https://127.0.0.1:6443", server))
            response = await c.post("/-/reload")
            answers.append((response.status, await response.text()))
            kubeconfig.write_text(kubeconfig.read_text().replace(server, "https://127.0.0.1:6443"))
    prefix = "failed to reload config: modules.k.kubernetes.kubeconfig: cluster server "
    assert answers == [
        (500, prefix + "'http://admin:<secret>@127.0.0.1:6443' is not an https:// URL\n"),
        (500, prefix + "'http://<secret>@127.0.0.1:6443' is not an https:// URL\n"),
    ]
    lines = [fmt.format(r) for r in caplog.records
             for fmt in (logs_module.LogfmtFormatter(), logs_module.JSONFormatter())]
    assert sum("config reload failed" in line for line in lines) == 4
    # --config.check says the same, redacted too.
    kubeconfig.write_text(kubeconfig.read_text().replace("https://127.0.0.1:6443", "http://s3cretToken@127.0.0.1:1"))
    assert cli.main(["--config.check", "--config.file", str(config_path)]) == 1
    err = capsys.readouterr().err
    assert "'http://<secret>@127.0.0.1:1' is not an https:// URL" in err
    for text in (*lines, err):
        assert "s3cret" not in text
