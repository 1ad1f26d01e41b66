"""The kubernetes prober against a recorded-answer API server on loopback (tests/servers/kubeapi.py),
and the promise of one metric name across every source."""

from __future__ import annotations

import base64
import contextlib
import errno
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

from ssl_exporter import config
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
    return kubeapi.FakeAPI(secrets, TOKEN, forbidden_namespaces={"kube-system"})


@pytest.fixture
async def kube_client(fake_api, pki: PKI, tmp_path: Path) -> AsyncIterator[TestClient]:
    server_cert = pki.inter.issue("kubernetes", ips=("127.0.0.1",))
    cert_path, key_path = server_cert.write(tmp_path, "apiserver", (pki.inter,))
    async with kubeapi.serve(fake_api, str(cert_path), str(key_path)) as port:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(textwrap.dedent(f"""\
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
              user: {{token: {TOKEN}}}
            contexts:
            - name: test
              context: {{cluster: test, user: exporter}}
            """))
        cfg = tmp_path / "config.yml"
        cfg.write_text(textwrap.dedent(f"""\
            modules:
              secrets:
                prober: kubernetes
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
        config.load_text("modules:\n  k8s: {prober: kubernetes}\n", source="test")
    assert str(caught.value) == ("modules.k8s.kubernetes.kubeconfig: not running in a cluster "
                                 "(KUBERNETES_SERVICE_HOST unset) and no kubeconfig given")


# --- hostile or broken answers and kubeconfigs -------------------------------------------------


class _Recorder:
    def note(self, text: str) -> None:
        pass


class _Response:
    def __init__(self, body: bytes) -> None:
        self.status = 200
        self.content = self
        self._body = body

    async def read(self, limit: int) -> bytes:
        return self._body[:limit]


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

    monkeypatch.setattr(kube, "open", forbidden, raising=False)
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
        kube.resolve_api(str(path))
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
