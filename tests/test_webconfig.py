"""--web.config.file: TLS, client certificates, basic auth and headers on the real process."""

from __future__ import annotations

import asyncio
import base64
import http.client
import os
import signal
import socket
import ssl
import subprocess
import textwrap
from pathlib import Path

import bcrypt
import pytest

from ssl_exporter import webconfig
from tests.command import exporter_command
from tests.conftest import PKI
from tests.pki import Cert, make_root
from tests.test_server import ExporterProcess, _free_port

PASSWORD = "correct horse battery staple"
# Cost 4, the least bcrypt allows: the tests check behaviour, not the hash's strength.
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
ENDPOINTS = ("/metrics", "/", "/config", "/-/healthy", "/-/ready", "/probe?target=127.0.0.1:1",
             "/probe/log?id=1", "/no-such-page")


def server_files(pki: PKI, directory: Path, name: str) -> tuple[Path, Path, Cert]:
    leaf = pki.inter.issue(f"{name}.localhost", dns=("localhost",), ips=("127.0.0.1",))
    cert, key = leaf.write(directory, name, (pki.inter,))
    return cert, key, leaf


def client_context(pki: PKI, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.root_file))
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


def request(port: int, path: str, context: ssl.SSLContext | None, auth: tuple[str, str] | None = None,
            method: str = "GET", server_hostname: str | None = None
            ) -> tuple[int, dict[str, str], str, bytes | None]:
    """One request on a new connection: status, headers, body and the server's certificate (DER)."""
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    if context is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    else:
        conn = http.client.HTTPSConnection(server_hostname or "127.0.0.1", port, timeout=10, context=context)
        if server_hostname:  # connect to loopback, but send this name as SNI
            conn._create_connection = lambda *a, **k: socket.create_connection(("127.0.0.1", port), 10)  # type: ignore[attr-defined]
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        peer = conn.sock.getpeercert(binary_form=True) if context is not None else None
        return response.status, dict(response.getheaders()), response.read().decode(), peer
    finally:
        conn.close()


def write_web_config(directory: Path, text: str) -> Path:
    path = directory / "web.yml"
    path.write_text(textwrap.dedent(text))
    return path


def stop(exporter: ExporterProcess) -> tuple[int, str]:
    """SIGTERM; the exit code and everything it logged after 'listening'."""
    exporter.process.send_signal(signal.SIGTERM)
    code = exporter.process.wait(timeout=20)
    assert exporter.process.stderr is not None
    rest = exporter.process.stderr.read()
    exporter.process.stderr.close()
    return code, rest


def test_tls_basic_auth_and_headers_on_every_endpoint(pki: PKI, tmp_path: Path) -> None:
    cert, key, leaf = server_files(pki, tmp_path, "web")
    web = write_web_config(tmp_path, f"""\
        tls_server_config:
          cert_file: {cert.name}   # relative to the web config's folder
          key_file: {key.name}
        http_server_config:
          headers:
            X-Frame-Options: deny
            Strict-Transport-Security: max-age=31536000
            X-XSS-Protection: ""
        basic_auth_users:
          alice: {HASH}
        """)
    exporter = ExporterProcess(f"--web.config.file={web}", "--web.enable-lifecycle")
    context = client_context(pki)
    try:
        for path in ENDPOINTS:
            for auth in (None, ("alice", "wrong"), ("bob", PASSWORD), ("alice", PASSWORD + "x")):
                status, headers, body, peer = request(exporter.port, path, context, auth)
                assert (status, body) == (401, "Unauthorized\n"), (path, auth)
                assert headers["WWW-Authenticate"] == "Basic"
                assert headers["X-Frame-Options"] == "deny"  # on every answer, refusals included
                assert peer == leaf.der
            status, headers, body, _ = request(exporter.port, path, context, ("alice", PASSWORD))
            assert status == (404 if path == "/no-such-page" else 200), (path, body)
            assert headers["X-Frame-Options"] == "deny"
            assert headers["Strict-Transport-Security"] == "max-age=31536000"
            assert "X-XSS-Protection" not in headers  # blank: unset, as in exporter-toolkit
        status, headers, page, _ = request(exporter.port, "/", context, ("alice", PASSWORD))
        assert headers["Content-Security-Policy"].startswith("default-src 'none'")  # the page's own is kept
        assert request(exporter.port, "/-/reload", context, None, "POST")[0] == 401
        assert request(exporter.port, "/-/reload", context, ("alice", PASSWORD), "POST")[0] == 200
        config_text = request(exporter.port, "/config", context, ("alice", PASSWORD))[2]
        # Plain HTTP on the TLS port gets no answer from the exporter's handlers.
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            request(exporter.port, "/metrics", None, ("alice", PASSWORD))
    finally:
        code, logged = stop(exporter)
    assert code == 0
    secrets = (PASSWORD, HASH, HASH[7:], base64.b64encode(f"alice:{PASSWORD}".encode()).decode(),
               leaf.key_pem.decode().splitlines()[1])
    for text in (config_text, page, logged):
        for secret in secrets:
            assert secret not in text


@pytest.mark.parametrize("auth_type", ["RequireAndVerifyClientCert", "VerifyClientCertIfGiven"])
def test_client_certificates(pki: PKI, tmp_path: Path, auth_type: str) -> None:
    cert, key, _ = server_files(pki, tmp_path, "mtls")
    web = write_web_config(tmp_path, f"""\
        tls_server_config:
          cert_file: {cert}
          key_file: {key}
          client_auth_type: {auth_type}
          client_ca_file: {pki.root_file}
          min_version: TLS13
        """)
    stranger = pki.other_inter.issue("stranger client")
    stranger_files = stranger.write(tmp_path, "stranger", (pki.other_inter,))
    good_files = (pki.dir / "client.crt", pki.dir / "client.key")
    exporter = ExporterProcess(f"--web.config.file={web}")
    try:
        assert request(exporter.port, "/metrics", client_context(pki, good_files))[0] == 200
        with pytest.raises((ssl.SSLError, ConnectionError)):
            request(exporter.port, "/metrics", client_context(pki, stranger_files))
        no_cert = client_context(pki)
        if auth_type == "RequireAndVerifyClientCert":
            with pytest.raises((ssl.SSLError, ConnectionError)):
                request(exporter.port, "/metrics", no_cert)
        else:
            assert request(exporter.port, "/metrics", no_cert)[0] == 200
        # TLS 1.2 is below min_version.
        old = client_context(pki, good_files)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises((ssl.SSLError, ConnectionError)):
            request(exporter.port, "/metrics", old)
    finally:
        assert stop(exporter)[0] == 0


def test_certificate_rotation_is_picked_up_without_restart(pki: PKI, tmp_path: Path) -> None:
    cert, key, first = server_files(pki, tmp_path, "rotate")
    web = write_web_config(tmp_path, f"tls_server_config: {{cert_file: {cert}, key_file: {key}}}\n")
    exporter = ExporterProcess(f"--web.config.file={web}")
    context = client_context(pki)
    try:
        assert request(exporter.port, "/-/healthy", context)[3] == first.der
        second = pki.inter.issue("second.localhost", dns=("localhost",), ips=("127.0.0.1",))
        # Write-then-rename, as cert-manager and certbot do: each file is whole when it appears.
        for target, data in ((key, second.key_pem), (cert, second.pem + pki.inter.pem)):
            target.with_suffix(".new").write_bytes(data)
            os.replace(target.with_suffix(".new"), target)
        # The next connection, without SNI (an IP address) and with SNI, gets the new certificate.
        assert request(exporter.port, "/-/healthy", context)[3] == second.der
        assert request(exporter.port, "/-/healthy", context, server_hostname="localhost")[3] == second.der
        exporter.wait_for_log("web TLS certificate reloaded")

        # A broken file keeps the last good certificate serving, and says why.
        cert.write_bytes(b"not a certificate\n")
        assert request(exporter.port, "/-/healthy", context)[3] == second.der
        line = exporter.wait_for_log("cannot reload the web TLS certificate")
        assert f"no PEM certificate in {cert}" in line and "level=error" in line

        third = pki.inter.issue("third.localhost", dns=("localhost",), ips=("127.0.0.1",))
        third.write(tmp_path, "rotate", (pki.inter,))
        assert request(exporter.port, "/-/healthy", context)[3] == third.der
    finally:
        assert stop(exporter)[0] == 0


# --- bad files: refused at start, one line, exit 1 -----------------------------------------


def _bad_cases(pki: PKI, d: Path) -> list[tuple[str, str]]:
    cert, key, _ = server_files(pki, d, "bad")
    other = make_root("unrelated").issue("unrelated")
    other_cert, other_key = other.write(d, "other")
    (d / "garbage.pem").write_text("not PEM\n")
    tls = f"tls_server_config: {{cert_file: {cert}, key_file: {key}"
    return [
        ("tls_server_config: {cert_file: x}\nusers: {}\n",
         "users: unknown key (expected one of basic_auth_users, http_server_config, rate_limit, tls_server_config)"),
        (f"{tls}, certfile: x}}\n",
         "tls_server_config.certfile: unknown key (expected one of cert, cert_file, cipher_suites, "
         "client_allowed_sans, client_auth_type, client_ca, client_ca_file, curve_preferences, key, key_file, "
         "max_version, min_version, prefer_server_cipher_suites)"),
        (f"tls_server_config: {{cert_file: {d}/missing.crt, key_file: {key}}}\n",
         f"tls_server_config.cert_file: file not found: {d}/missing.crt"),
        (f"tls_server_config: {{cert_file: {cert}}}\n",
         "tls_server_config.key_file: missing (required when TLS is configured)"),
        (f"tls_server_config: {{cert_file: {d}/garbage.pem, key_file: {key}}}\n",
         f"tls_server_config.cert_file: no PEM certificate in {d}/garbage.pem"),
        (f"tls_server_config: {{cert_file: {cert}, key_file: {d}/garbage.pem}}\n",
         f"tls_server_config.key_file: no PEM private key in {d}/garbage.pem"),
        (f"tls_server_config: {{cert_file: {cert}, key_file: {other_key}}}\n",
         f"tls_server_config.key_file: {other_key} does not match the certificate in {cert}"),
        (f"{tls}, client_ca_file: {pki.root_file}}}\n",
         "tls_server_config.client_ca_file: a client CA is configured without a client_auth_type that verifies "
         "(VerifyClientCertIfGiven, RequireAndVerifyClientCert)"),
        (f"{tls}, client_auth_type: RequireAndVerifyClientCert}}\n",
         "tls_server_config.client_auth_type: RequireAndVerifyClientCert requires client_ca_file"),
        (f"{tls}, client_auth_type: RequireAnyClientCert}}\n",
         "tls_server_config.client_auth_type: RequireAnyClientCert is not supported: Python's ssl module cannot "
         "accept a client certificate without verifying it; use RequireAndVerifyClientCert with client_ca_file"),
        (f"{tls}, client_auth_type: Always}}\n",
         "tls_server_config.client_auth_type: 'Always' is not one of NoClientCert, RequestClientCert, "
         "VerifyClientCertIfGiven, RequireAndVerifyClientCert, RequireAnyClientCert"),
        (f"{tls}, client_auth_type: VerifyClientCertIfGiven, client_ca_file: {d}/garbage.pem}}\n",
         "tls_server_config.client_ca_file: cannot load the client CA: [X509: NO_CERTIFICATE_OR_CRL_FOUND] "
         "no certificate or crl found"),
        (f"{tls}, min_version: TLS14}}\n", "tls_server_config.min_version: 'TLS14' is not one of TLS10, TLS11, "
                                            "TLS12, TLS13"),
        (f"{tls}, min_version: TLS13, max_version: TLS12}}\n",
         "tls_server_config.min_version: TLS13 is above max_version TLS12"),
        (f"{tls}, cipher_suites: [TLS_AES_128_GCM_SHA256]}}\n",
         "tls_server_config.cipher_suites: not supported by ssl_exporter (OpenSSL's defaults apply)"),
        ("rate_limit: {interval: 1s, burst: 10}\n",
         "rate_limit: not supported by ssl_exporter; --probe.max-concurrent bounds the probes in flight"),
        ("http_server_config: {headers: {X-Powered-By: me}}\n",
         "http_server_config.headers: HTTP header 'X-Powered-By' can not be configured (allowed: "
         "Strict-Transport-Security, X-Content-Type-Options, X-Frame-Options, X-XSS-Protection, "
         "Content-Security-Policy)"),
        ("http_server_config: {headers: {X-Frame-Options: allow}}\n",
         "http_server_config.headers.X-Frame-Options: 'allow' is not one of deny, sameorigin"),
        ("basic_auth_users: {alice: hunter2}\n",
         "basic_auth_users.alice: not a bcrypt hash (like $2y$10$ and 53 characters; make one with "
         "htpasswd -nBC 10 \"\" | tr -d ':\\n')"),
        (f"basic_auth_users: {{alice: '{HASH[:-1]}'}}\n",
         "basic_auth_users.alice: not a bcrypt hash (like $2y$10$ and 53 characters; make one with "
         "htpasswd -nBC 10 \"\" | tr -d ':\\n')"),
        (f"basic_auth_users: {{alice: '{HASH[:4]}99{HASH[6:]}'}}\n",
         "basic_auth_users.alice: bcrypt cost 99 is outside 4-31"),
        ("basic_auth_users: [alice]\n", "basic_auth_users: expected a mapping, got list"),
        ("tls_server_config: {cert_file: [x\n", "expected ',' or ']', but got '<stream end>' (line 2, column 1)"),
    ]


def test_bad_web_configs_are_refused_with_one_line(pki: PKI, tmp_path: Path) -> None:
    for i, (text, message) in enumerate(_bad_cases(pki, tmp_path)):
        path = tmp_path / f"bad-{i}.yml"
        path.write_text(text)
        with pytest.raises(webconfig.WebConfigError) as caught:
            webconfig.load(str(path))
        assert str(caught.value) == f"{path}: {message}"
        assert "\n" not in str(caught.value)
        assert "hunter2" not in str(caught.value) and HASH[7:-1] not in str(caught.value)


@pytest.mark.parametrize("case", [3, 18])
def test_process_refuses_a_bad_web_config_at_start(pki: PKI, tmp_path: Path, case: int) -> None:
    text, message = _bad_cases(pki, tmp_path)[case]
    path = write_web_config(tmp_path, text)
    run = subprocess.run(
        exporter_command(f"--web.listen-address=127.0.0.1:{_free_port()}",
                         f"--web.config.file={path}"), capture_output=True, text=True, timeout=30)
    assert run.returncode == 1
    assert run.stderr == f"ssl-exporter: invalid web configuration: {path}: {message}\n"
    assert run.stdout == ""


def test_config_check_validates_the_web_config(pki: PKI, tmp_path: Path) -> None:
    cert, key, _ = server_files(pki, tmp_path, "check")
    path = write_web_config(tmp_path, f"tls_server_config: {{cert_file: {cert}, key_file: {key}}}\n"
                                      f"basic_auth_users: {{alice: '{HASH}'}}\n")
    run = subprocess.run(exporter_command(f"--web.config.file={path}", "--config.check"),
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[1] == f"web config OK: {path}: TLS on, 1 basic auth user(s)"


# --- basic auth in-process: the cache ------------------------------------------------------


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_successful_checks_are_cached_failures_are_not() -> None:
    auth = webconfig.BasicAuth({"alice": HASH})
    assert await auth.check(_basic("alice", PASSWORD))
    assert await auth.check(_basic("alice", PASSWORD))
    assert auth.bcrypt_runs == 1  # one bcrypt for any number of scrapes
    assert not await auth.check(_basic("alice", "wrong"))
    assert not await auth.check(_basic("alice", "wrong"))
    assert auth.bcrypt_runs == 3  # a wrong password costs a bcrypt each time
    assert not await auth.check(_basic("mallory", PASSWORD))
    assert auth.bcrypt_runs == 4  # an unknown user costs the same as a known one
    assert not await auth.check(_basic("alice", "x" * 100))  # over bcrypt's 72 bytes: refused, no crash
    for header in (None, "", "Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(),
                   "Basic " + base64.b64encode(b"\xff:x").decode()):
        assert not await auth.check(header)
    assert auth.bcrypt_runs == 5
    # The cache holds keyed digests, never a password or hash.
    assert all(len(entry) == 32 for entry in auth._ok)
    assert PASSWORD not in repr(vars(auth))


# --- basic auth: the work per failed check, and the queue (issue 12, item 5) ---------------------


async def test_a_failed_check_costs_the_same_work_whatever_the_user_name() -> None:
    # alice's hash costs 2**4 rounds, bob's 2**6. An unknown name used to cost the highest
    # cost while a wrong password for alice cost 2**4: 3 ms against 56 ms told who exists.
    users = {"alice": HASH, "bob": bcrypt.hashpw(b"bob's", bcrypt.gensalt(6)).decode()}
    auth = webconfig.BasicAuth(users)

    async def work_of(user: str) -> int:
        before = auth.bcrypt_work
        assert not await auth.check(_basic(user, "wrong"))
        return auth.bcrypt_work - before

    assert (await work_of("alice"), await work_of("bob")) == (2**4, 2**6)
    unknown = {f"user{i}": await work_of(f"user{i}") for i in range(64)}
    # Each unknown name costs what one real user's failure costs, both costs occur, and
    # the same name costs the same every time (no averaging it away by asking again).
    assert set(unknown.values()) == {2**4, 2**6}
    again = {name: await work_of(name) for name in list(unknown)[:8]}
    assert again == {name: unknown[name] for name in again}
    assert all(work == 2 ** int(users[auth.stand_in(name)][4:6]) for name, work in unknown.items())
    assert auth.bcrypt_runs == 2 + 64 + 8


async def test_the_bcrypt_queue_is_bounded() -> None:
    # 200 concurrent wrong passwords delayed a first valid login by 10 s: the queue was unbounded.
    slow = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    auth = webconfig.BasicAuth({"alice": slow})
    outcomes = await asyncio.gather(*(auth.check(_basic("alice", f"wrong{i}")) for i in range(40)),
                                    return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, webconfig.AuthBusy)]
    assert outcomes[: auth.MAX_PENDING] == [False] * auth.MAX_PENDING  # the first 16 were checked
    assert len(refused) == 40 - auth.MAX_PENDING  # the rest refused at once, not queued
    assert auth.bcrypt_runs == auth.MAX_PENDING
    # The queue drains: a valid login is checked, and then remembered.
    assert await auth.check(_basic("alice", PASSWORD))
    assert await auth.check(_basic("alice", PASSWORD))
    assert auth.bcrypt_runs == auth.MAX_PENDING + 1


async def test_a_full_bcrypt_queue_answers_429_and_cached_logins_pass(tmp_path: Path) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from ssl_exporter.server import Exporter, make_app

    slow = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(11)).decode()
    (tmp_path / "c.yml").write_text("modules:\n  tcp: {prober: tcp}\n")
    web = webconfig.WebConfig(source="test", users={"alice": slow, "bob": slow})
    async with TestClient(TestServer(make_app(Exporter(str(tmp_path / "c.yml")), web_config=web))) as client:
        assert (await client.get("/-/healthy", headers={"Authorization": _basic("bob", PASSWORD)})).status == 200

        async def get(user: str, password: str) -> tuple[int, str | None]:
            response = await client.get("/-/healthy", headers={"Authorization": _basic(user, password)})
            return response.status, response.headers.get("Retry-After")

        flood = await asyncio.gather(*(get("alice", f"wrong{i}") for i in range(60)), get("bob", PASSWORD))
    assert flood[-1] == (200, None)  # bob's login is remembered: no bcrypt, no queue
    assert set(flood[:-1]) == {(401, None), (429, "1")}
    assert flood.count((401, None)) <= webconfig.BasicAuth.MAX_PENDING + 1
