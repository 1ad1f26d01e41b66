"""The kubernetes prober against a recorded-answer API server on loopback (tests/servers/kubeapi.py),
and the promise of one metric name across every source."""

from __future__ import annotations

import base64
import contextlib
import errno
import os
import ssl
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

from ssl_exporter import config, prepare
from ssl_exporter import kubeapi as kube_access
from ssl_exporter.errors import ProbeFailure
from ssl_exporter.probers import kube
from tests import conftest
from tests.conftest import PKI, Samples, serve_exporter
from tests.pki import DAY, NOW, Cert
from tests.servers import kubeapi, pytls

TOKEN = "test-service-account-token"


@pytest.fixture
def certs(pki: PKI) -> dict[str, Cert]:
    return {
        "web": pki.inter.issue("web.prod.test", dns=("web.prod.test",), not_after=NOW + 3 * DAY),
        "api": pki.inter.issue("api.prod.test", dns=("api.prod.test",), not_after=NOW + 30 * DAY),
        "team": pki.inter.issue("app.team-a.test", not_after=NOW + 60 * DAY),
    }


@pytest.fixture
def fake_api(certs: dict[str, Cert], pki: PKI) -> kubeapi.FakeAPI:
    secrets = [
        kubeapi.secret("prod", "web-tls", {"tls.crt": certs["web"].pem + pki.inter.pem,
                                           "tls.key": certs["web"].key_pem, "ca.crt": pki.root.pem}),
        kubeapi.secret("prod", "api-tls", {"tls.crt": certs["api"].pem, "tls.key": certs["api"].key_pem}),
        kubeapi.secret("prod", "broken-tls", {"tls.crt": b"not a certificate"}),
        kubeapi.secret("prod", "db-password", {"password": b"hunter2"}, type_="Opaque"),
        kubeapi.secret("team-a", "app-tls", {"tls.crt": certs["team"].pem}),
        kubeapi.secret("team-b", "other", {"tls.crt": certs["team"].pem}),
    ]
    return kubeapi.FakeAPI(secrets, TOKEN, forbidden_namespaces={"kube-system"}, page_size=2)


@pytest.fixture
async def kube_client(fake_api, pki: PKI, tmp_path: Path) -> AsyncIterator[TestClient]:
    async with kube_exporter(fake_api, pki, tmp_path) as client:
        yield client


def write_kubeconfig(path: Path, port: int, pki: PKI, user: str = f"{{token: {TOKEN}}}") -> Path:
    path.write_text(textwrap.dedent(f"""\
        apiVersion: v1
        kind: Config
        current-context: test
        clusters:
        - name: test
          cluster:
            server: https://127.0.0.1:{port}
            certificate-authority-data: {base64.b64encode(pki.root.pem).decode()}
        users:
        - name: exporter
          user: {user}
        contexts:
        - name: test
          context: {{cluster: test, user: exporter}}
        """))
    return path


@contextlib.asynccontextmanager
async def kube_exporter(fake_api: kubeapi.FakeAPI, pki: PKI, tmp_path: Path,
                        timeout: str = "10s") -> AsyncIterator[TestClient]:
    """The fake API server, and an exporter with a kubernetes module pointed at it."""
    server_cert = pki.inter.issue("kubernetes", ips=("127.0.0.1",))
    cert_path, key_path = server_cert.write(tmp_path, "apiserver", (pki.inter,))
    async with kubeapi.serve(fake_api, str(cert_path), str(key_path)) as port:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", port, pki)
        cfg = tmp_path / "config.yml"
        cfg.write_text(textwrap.dedent(f"""\
            modules:
              secrets:
                prober: kubernetes
                timeout: {timeout}
                kubernetes: {{kubeconfig: {kubeconfig}}}
              opaque:
                prober: kubernetes
                kubernetes: {{kubeconfig: {kubeconfig}, secret_types: [Opaque], keys: [password]}}
            """))
        async with serve_exporter(cfg) as client:
            yield client


async def probe(client: TestClient, target: str, module: str = "secrets") -> Samples:
    return await conftest.probe(client, target, module=module)


def not_after(s: Samples, namespace: str, secret: str, key: str = "tls.crt", position: int = 0) -> float | None:
    return s.get("ssl_cert_not_after_timestamp_seconds", namespace=namespace, secret=secret, key=key,
                 position=str(position))


async def test_namespace_listing_with_pagination(kube_client, fake_api, certs, pki: PKI) -> None:
    s = await probe(kube_client, "prod/*")
    assert not_after(s, "prod", "web-tls") == certs["web"].not_after
    assert not_after(s, "prod", "web-tls", position=1) == pki.inter.not_after
    assert not_after(s, "prod", "web-tls", key="ca.crt") == pki.root.not_after
    assert not_after(s, "prod", "api-tls") == certs["api"].not_after
    assert s.get("ssl_source_error_info", namespace="prod", secret="broken-tls", key="tls.crt",
                 reason="bad_der") == 1
    assert s.errors() == {("read", "bad_der")}
    assert s.get("ssl_probe_success") == 0
    keys = {labels["key"] for labels in s.series("ssl_cert_not_after_timestamp_seconds")}
    assert keys == {"tls.crt", "ca.crt"}  # tls.key is never read
    # Namespaced list, server-side type selector, paginated with continue tokens.
    paths = [path for path, _ in fake_api.requests]
    assert paths == ["/api/v1/namespaces/prod/secrets"] * 2
    first, second = (query for _, query in fake_api.requests)
    assert first == {"fieldSelector": "type=kubernetes.io/tls", "limit": "500"}
    assert second["continue"] == "2"


async def test_exact_name_uses_a_field_selector(kube_client, fake_api, certs) -> None:
    s = await probe(kube_client, "prod/api-tls")
    assert s.get("ssl_probe_success") == 1
    assert [labels["secret"] for labels in s.series("ssl_cert_not_after_timestamp_seconds")] == ["api-tls"]
    assert fake_api.requests[0][1]["fieldSelector"] == "type=kubernetes.io/tls,metadata.name=api-tls"


async def test_namespace_glob_lists_cluster_wide(kube_client, fake_api, certs) -> None:
    s = await probe(kube_client, "team-[a]/app-*")
    assert not_after(s, "team-a", "app-tls") == certs["team"].not_after
    assert {labels["namespace"] for labels in s.series("ssl_cert_not_after_timestamp_seconds")} == {"team-a"}
    assert {path for path, _ in fake_api.requests} == {"/api/v1/secrets"}


async def test_forbidden_namespace(kube_client) -> None:
    s = await probe(kube_client, "kube-system/*")
    assert s.get("ssl_probe_success") == 0
    assert s.errors() == {("read", "permission_denied")}
    assert s.series("ssl_cert_not_after_timestamp_seconds") == []


async def test_expired_continue_token_restarts_the_list(kube_client, fake_api, certs) -> None:
    fake_api.expire_continue_once = True
    s = await probe(kube_client, "prod/*")
    assert not_after(s, "prod", "api-tls") == certs["api"].not_after
    continues = [query.get("continue") for _, query in fake_api.requests]
    assert continues == [None, "2", None, "2"]  # 410 on the first continue, then from the start


async def test_other_secret_types_and_keys(kube_client, fake_api) -> None:
    s = await probe(kube_client, "prod/*", module="opaque")
    assert s.get("ssl_source_error_info", namespace="prod", secret="db-password", key="password",
                 reason="bad_der") == 1
    assert "hunter2" not in s.text
    assert fake_api.requests[0][1]["fieldSelector"] == "type=Opaque"


@pytest.mark.parametrize("target", ["prod", "prod/a/b", "/name", "prod/bad name", ""])
async def test_bad_secret_targets_are_400(kube_client, target: str) -> None:
    response = await kube_client.get("/probe", params={"target": target, "module": "secrets"})
    assert response.status == 400
    assert "\n" not in (await response.text()).rstrip("\n")


def test_in_cluster_without_service_account_is_a_config_error(monkeypatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(config.ConfigError) as caught:
        prepare.load_text("modules:\n  k8s: {prober: kubernetes}\n", source="test")
    assert str(caught.value) == ("modules.k8s.kubernetes.kubeconfig: not running in a cluster "
                                 "(KUBERNETES_SERVICE_HOST unset) and no kubeconfig given")


# --- hostile or broken answers and kubeconfigs -------------------------------------------------


class _Recorder:
    deadline = None

    def note(self, text: str) -> None:
        pass


class _Response:
    """An answer whose body arrives in 7-byte pieces, without a Content-Length."""

    def __init__(self, body: bytes) -> None:
        self.status = 200
        self.content = self
        self.content_length = None
        self._body = body

    async def readany(self) -> bytes:
        piece, self._body = self._body[:7], self._body[7:]
        return piece


class _Session:
    """Stands in for aiohttp.ClientSession.get: an answer body, or an exception to raise."""

    def __init__(self, answer: bytes | BaseException) -> None:
        self.answer = answer

    @contextlib.asynccontextmanager
    async def get(self, url: str, allow_redirects: bool = True) -> AsyncIterator[_Response]:
        if isinstance(self.answer, BaseException):
            raise self.answer
        yield _Response(self.answer)


def _api() -> kube.KubeAPI:
    return kube.KubeAPI("https://127.0.0.1:1", ssl.create_default_context())


@pytest.mark.parametrize("answer", [
    aiohttp.ServerDisconnectedError(),
    aiohttp.ClientPayloadError("Response payload is not completed"),
    b'{"kind": "SecretList", "items": 5}',
    b'{"kind": "SecretList", "items": {"a": 1}}',
    b'{"kind": "SecretList", "items": [], "metadata": {"continue": 7}}',
], ids=["disconnected", "payload", "items-int", "items-mapping", "continue-int"])
async def test_broken_api_answers_are_api_error(answer) -> None:
    with pytest.raises(ProbeFailure) as caught:
        await kube._list_secrets(_Session(answer), _api(), kube.SecretTarget("prod", "*"),  # type: ignore[arg-type]
                                 "kubernetes.io/tls", None, _Recorder())  # type: ignore[arg-type]
    assert caught.value.reason == "api_error"


async def test_connection_errors_keep_their_own_reason() -> None:
    refused = aiohttp.ClientOSError(errno.ECONNREFUSED, "Connection refused")
    with pytest.raises(aiohttp.ClientOSError):
        await kube._list_secrets(_Session(refused), _api(), kube.SecretTarget("prod", "*"),  # type: ignore[arg-type]
                                 "kubernetes.io/tls", None, _Recorder())  # type: ignore[arg-type]


async def test_secrets_are_parsed_off_the_event_loop(kube_client, fake_api, certs,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    odd = kubeapi.secret("prod", "odd-tls", {})
    odd["data"] = ["tls.crt"]  # not a mapping: skipped
    fake_api.secrets.append(odd)
    threads: list[str] = []
    real = kube._secret_results

    def recording(*args):
        threads.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(kube, "_secret_results", recording)
    s = await probe(kube_client, "prod/api-tls")
    assert s.get("ssl_probe_success") == 1
    assert len(threads) == 1 and threads[0].startswith("ssl-exporter-read")
    s = await probe(kube_client, "prod/odd-tls")
    assert s.errors() == {("read", "not_found")}  # nothing matched, and no internal_error


def test_token_file_errors_are_read_reasons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api = kube.KubeAPI("https://127.0.0.1:1", ssl.create_default_context(), token_file=str(tmp_path / "missing"))
    with pytest.raises(ProbeFailure) as caught:
        api.headers()
    assert caught.value.reason == "not_found"

    def forbidden(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    (tmp_path / "missing").write_text("a-token")  # exists now; root reads anything, so refuse the open
    monkeypatch.setattr(os, "open", forbidden)
    with pytest.raises(ProbeFailure) as caught:
        api.headers()
    assert caught.value.reason == "permission_denied"


_GOOD_KUBECONFIG = {
    "current-context": "test",
    "clusters": [{"name": "test", "cluster": {"server": "https://127.0.0.1:6443"}}],
    "users": [{"name": "u", "user": {"token": "t"}}],
    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "u"}}],
}


@pytest.mark.parametrize(("change", "message"), [
    ({"clusters": 5}, "clusters is not a list"),
    ({"contexts": 5}, "contexts is not a list"),
    ({"contexts": [{"name": "test", "context": "a string"}]}, "context 'test': context is not a mapping"),
    ({"users": [{"name": "u", "user": ["x"]}]}, "user 'u': user is not a mapping"),
    ({"clusters": [{"name": "test", "cluster": {"server": "https://127.0.0.1:6443",
                                                "certificate-authority-data": base64.b64encode(b"junk").decode()}}]},
     "certificate-authority does not hold a PEM certificate"),
    ({"users": [{"name": "u", "user": {"tokenFile": 5}}]}, "user 'u': token and tokenFile must be strings"),
    ({"clusters": [{"name": "test", "cluster": {"server": 5}}]}, "cluster server '5' is not an https:// URL"),
    ({"current-context": ["x"]}, "context ['x'] (from current-context) is not in the kubeconfig"),
])
def test_malformed_kubeconfig_is_a_config_error(tmp_path: Path, change: dict, message: str) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({**_GOOD_KUBECONFIG, **change}))
    with pytest.raises(kube.KubeConfigError) as caught:
        kube_access.resolve_api(str(path))
    assert str(caught.value) == message


def test_kubeconfig_prober_reports_a_section_that_is_not_a_list(tmp_path: Path, pki: PKI) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({"clusters": 5, "users": [
        {"name": "u", "user": {"client-certificate-data": base64.b64encode(pki.client.pem).decode()}}]}))
    results = kube.read_kubeconfig(str(path))
    assert [r.error.reason for r in results if r.error] == ["bad_kubeconfig"]
    assert [c.subject_cn for r in results for c in r.certs] == ["probe client"]


# --- one alert expression for every source ---------------------------------------------------


async def test_the_same_expiry_expression_fires_for_every_source(kube_client, fake_api, certs, pki: PKI,
                                                                 tmp_path: Path) -> None:
    """`ssl_cert_not_after_timestamp_seconds - time() < 7 * 86400` on the leaf, whatever the source."""
    expiring = certs["web"]  # 3 days left
    (tmp_path / "leaf.pem").write_bytes(expiring.pem)
    (tmp_path / "leaf.p12").write_bytes(pkcs12.serialize_key_and_certificates(
        b"x", expiring.key, expiring.cert, None, BestAvailableEncryption(b"pw")))
    (tmp_path / "kubeconfig-user").write_text(
        "users:\n- name: u\n  user:\n    client-certificate-data: "
        + base64.b64encode(expiring.pem).decode() + "\n")
    cfg = tmp_path / "all.yml"
    cfg.write_text(textwrap.dedent(f"""\
        modules:
          tls: {{prober: tcp, tls_config: {{ca_file: {pki.root_file}}}}}
          file: {{prober: file, file: {{pkcs12_password: pw}}}}
          kubeconfig: {{prober: kubeconfig}}
        """))
    cert_path, key_path = pki.chain_files("every-source", expiring, pki.inter)
    answers = []
    async with serve_exporter(cfg) as client:
        with pytls.tls_server(cert_path, key_path) as (port, _):
            answers.append(await probe(client, f"127.0.0.1:{port}", module="tls"))
        answers.append(await probe(client, str(tmp_path / "leaf.pem"), module="file"))
        answers.append(await probe(client, str(tmp_path / "leaf.p12"), module="file"))
        answers.append(await probe(client, str(tmp_path / "kubeconfig-user"), module="kubeconfig"))
    answers.append(await probe(kube_client, "prod/web-tls"))
    now = time.time()
    for s in answers:
        leaves = [sample for sample in s.samples
                  if sample.name == "ssl_cert_not_after_timestamp_seconds" and sample.labels["position"] == "0"
                  and sample.labels.get("key", "tls.crt") == "tls.crt"]
        assert [sample.value for sample in leaves] == [expiring.not_after]
        assert all(sample.value - now < 7 * 86400 for sample in leaves)


# --- real-sized lists, hostile answers, tokens and kubeconfigs -----------------------------------


@pytest.mark.parametrize("count", [50, 500, 5000])
async def test_real_sized_lists_are_read_whole(count: int, certs, pki: PKI, tmp_path: Path) -> None:
    """Pages of up to 500 Secrets (a megabyte), sent in 8 KiB writes, chunked or with a length."""
    secrets = [kubeapi.secret("prod", f"tls-{i:04d}", {"tls.crt": certs["web"].pem, "tls.key": certs["web"].key_pem})
               for i in range(count)]
    api = kubeapi.FakeAPI(secrets, TOKEN)
    async with kube_exporter(api, pki, tmp_path, timeout="60s") as client:
        s = await probe(client, "prod/*")
    assert s.errors() == set()
    assert s.get("ssl_probe_success") == 1
    names = {labels["secret"] for labels in s.series("ssl_cert_not_after_timestamp_seconds")}
    assert names == {f"tls-{i:04d}" for i in range(count)}
    assert len(api.requests) == -(-count // kube.PAGE_SIZE)
    continues = [query.get("continue") for _, query in api.requests]
    assert continues == [None] + [str(500 * i) for i in range(1, len(api.requests))]


@pytest.mark.parametrize(("body", "detail"), [
    (b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
    (b'{"items": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nests too deeply"),
    (b'{"kind": "SecretList", "items": [' + b"1," * 50_000 + b"1]}", ""),
])
async def test_hostile_list_answers_are_one_line_api_errors(body: bytes, detail: str, fake_api, kube_client) -> None:
    fake_api.raw_page = body
    response = await kube_client.get("/probe", params={"target": "prod/*", "module": "secrets", "debug": "true"})
    text = await response.text()
    if detail:
        assert detail in text
        s = await probe(kube_client, "prod/*")
        assert s.errors() == {("read", "api_error")}
    else:  # items that are not objects are skipped: nothing matched
        s = await probe(kube_client, "prod/*")
        assert s.errors() == {("read", "not_found")}


@pytest.mark.parametrize("token", [b"abc\ndef", b"abc\x00def", b"\xff\xfe"])
async def test_token_file_with_a_control_character_is_bad_token(token: bytes, fake_api, pki: PKI,
                                                                tmp_path: Path) -> None:
    (tmp_path / "token").write_bytes(token)
    server_cert = pki.inter.issue("kubernetes", ips=("127.0.0.1",))
    cert_path, key_path = server_cert.write(tmp_path, "apiserver", (pki.inter,))
    async with kubeapi.serve(fake_api, str(cert_path), str(key_path)) as port:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", port, pki, user="{tokenFile: token}")
        cfg = tmp_path / "config.yml"
        cfg.write_text(f"modules:\n  secrets: {{prober: kubernetes, kubernetes: {{kubeconfig: {kubeconfig}}}}}\n")
        async with serve_exporter(cfg) as client:
            response = await client.get("/probe", params={"target": "prod/*", "module": "secrets", "debug": "true"})
            text = await response.text()
            s = await probe(client, "prod/*")
    assert s.errors() == {("read", "bad_token")}
    assert "abc" not in text  # a credential, even a broken one, is never shown
    assert fake_api.requests == []


@pytest.mark.parametrize("kind", ["fifo", "ptmx", "zero"])
def test_credential_files_must_be_regular_files(kind: str, tmp_path: Path, pki: PKI) -> None:
    """At module load (start-up and reload), a client certificate or token file that is a FIFO
    or a device is refused at once instead of hanging the load or reading without end."""
    if kind == "fifo":
        special = str(tmp_path / "fifo")
        os.mkfifo(special)
    else:
        special = f"/dev/{kind}"
    key_path = tmp_path / "client.key"
    key_path.write_bytes(pki.client.key_pem)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", 6443, pki,
                                  user=f"{{client-certificate: {special}, client-key: {key_path}}}")
    text = f"modules:\n  k: {{prober: kubernetes, kubernetes: {{kubeconfig: {kubeconfig}}}}}\n"
    outcome: list[BaseException] = []

    def load() -> None:
        try:
            prepare.load_text(text, source="test")
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "loading the kubeconfig blocked"
    assert isinstance(outcome[0], config.ConfigError)
    assert str(outcome[0]).endswith(f"client-certificate: {special}: not a regular file")


def _bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("document", "message"), [
    (_bomb() + "current-context: x\nusers:\n- name: *a8\n  user: {token: t}\n",
     "values once aliases are expanded"),
    ("clusters:\n- name: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 64 levels"),
    ("current-context: " + "x" * 1_000_000 + "\n", "(from current-context) is not in the kubeconfig"),
])
def test_hostile_kubeconfigs_are_one_line_errors(tmp_path: Path, document: str, message: str) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(document)
    with pytest.raises(kube.KubeConfigError) as caught:
        _in_thread(kube_access.resolve_api, str(path))
    assert message in str(caught.value)
    assert len(str(caught.value)) < 500 and "\n" not in str(caught.value)
    results = _in_thread(kube.read_kubeconfig, str(path))
    for result in results:
        assert result.error is None or (result.error.reason in {"bad_kubeconfig", "not_found"}
                                        and len(result.error.detail) < 500)
    assert all(len(label) <= 260 for r in results for label in (r.error.source if r.error else {}).values())


def _in_thread(func, *args, within: float = 10.0):
    """``func(*args)`` in a thread, its exception re-raised here; fails the test if it is still
    running after ``within`` s (an alias bomb expands for minutes)."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(("ok", func(*args)))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(("error", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(within)
    assert not thread.is_alive(), f"{func.__name__} still running after {within} s"
    kind, value = outcome[0]
    if kind == "error":
        raise value
    return value


@pytest.mark.parametrize("kind", ["fifo", "ptmx"])
async def test_kubeconfig_probes_of_devices_and_fifos_do_not_block(kind: str, tmp_path: Path, pki: PKI) -> None:
    special = str(tmp_path / "fifo") if kind == "fifo" else "/dev/ptmx"
    if kind == "fifo":
        os.mkfifo(special)
    good = tmp_path / "good"
    good.write_text("users:\n- name: u\n  user:\n    client-certificate-data: "
                    + base64.b64encode(pki.client.pem).decode() + "\n")
    cfg = tmp_path / "config.yml"
    cfg.write_text("modules:\n  kubeconfig: {prober: kubeconfig, timeout: 2s}\n")
    async with serve_exporter(cfg) as client:
        for _ in range(kube.KUBECONFIG_POOL.workers + 1):  # more than there are read threads
            s = await probe(client, special, module="kubeconfig")
            assert s.errors() == {("read", "not_found")}
        s = await probe(client, str(good), module="kubeconfig")
        assert s.get("ssl_probe_success") == 1


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_a_kubeconfig_that_is_not_a_regular_file_is_a_config_error(kind: str, tmp_path: Path) -> None:
    special = f"/dev/{kind}"
    if kind == "fifo":
        special = str(tmp_path / "fifo")
        os.mkfifo(special)
    text = f"modules:\n  k: {{prober: kubernetes, kubernetes: {{kubeconfig: {special}}}}}\n"
    with pytest.raises(config.ConfigError) as caught:
        _in_thread(config.load_text, text, "test")
    assert str(caught.value) == f"modules.k.kubernetes.kubeconfig: not a regular file: {special}"
