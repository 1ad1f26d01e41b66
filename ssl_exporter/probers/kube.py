"""The ``kubeconfig`` and ``kubernetes`` probers.

``kubeconfig``: the target is a kubeconfig file; its clusters' CA certificates and its users'
client certificates are exported (inline ``*-data`` or file references, resolved relative
to the kubeconfig), labelled ``kubeconfig``, ``name`` and ``type`` (cluster|user).

``kubernetes``: the target is ``namespace/name`` (globs allowed in both); Secrets of the
configured types are listed through the Kubernetes REST API with plain aiohttp — the API
needed is three GET parameters and a continue token, which does not justify a client
library — using server-side field and label selectors and pagination. A namespace without
glob characters is listed in that namespace only, so a namespaced Role is enough; a
namespace glob lists Secrets cluster-wide and needs a ClusterRole.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import os
import ssl
import tempfile
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from ssl_exporter import safeyaml
from ssl_exporter.config import Module
from ssl_exporter.errors import ProbeFailure
from ssl_exporter.probers.base import Prober, ProbeRecorder, ReadPool, checkpoint
from ssl_exporter.probers.file import CACHE, FileResult, parse_container, read_file, record_results
from ssl_exporter.result import ReadError
from ssl_exporter.safeyaml import clip
from ssl_exporter.sources import SourceError, read_regular
from ssl_exporter.targets import TargetError

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
PAGE_SIZE = 500
# One page of Secrets is at most PAGE_SIZE objects; anything far larger is not an API server.
MAX_PAGE_BYTES = 64 * 1024 * 1024
MAX_KUBECONFIG_BYTES = 4 * 1024 * 1024
# A token, a CA bundle or a client certificate and key: far smaller than this.
MAX_CREDENTIAL_BYTES = 1024 * 1024

# Each prober's own read threads (docs/robustness.md).
KUBECONFIG_POOL = ReadPool("kubeconfig")
KUBERNETES_POOL = ReadPool("kubernetes")


class KubeConfigError(ValueError):
    """A kubeconfig or in-cluster setting the kubernetes prober cannot use."""


# --- kubeconfig prober ---------------------------------------------------------------------


def parse_path_target(raw: str, module: Module) -> str:
    path = raw.strip()
    if not path or "\x00" in path:
        raise TargetError(f"target {raw!r} is not a file path")
    if not os.path.isabs(path):
        raise TargetError(f"target {raw!r}: the kubeconfig prober needs an absolute path")
    return os.path.normpath(path)


async def probe_kubeconfig(rec: ProbeRecorder, module: Module, path: str, _name: str) -> None:
    with rec.phase("read"):
        results = await KUBECONFIG_POOL.run(rec.deadline, read_kubeconfig, path)
    record_results(rec, results, what=path)


def read_kubeconfig(path: str) -> list[FileResult]:
    """One FileResult per cluster CA and per user client certificate in the kubeconfig."""
    try:
        doc = _load_kubeconfig(path)
    except KubeConfigError as exc:
        cause = exc.__cause__
        reason = cause.reason if isinstance(cause, SourceError) else "bad_kubeconfig"
        return [FileResult(error=ReadError({"kubeconfig": path, "name": "", "type": ""}, reason, str(exc)))]
    base = os.path.dirname(path)
    results = []
    for kind, section, field in (("cluster", "clusters", "certificate-authority"),
                                 ("user", "users", "client-certificate")):
        entries = doc.get(section) or []
        if not isinstance(entries, list):
            results.append(FileResult(error=ReadError({"kubeconfig": path, "name": "", "type": kind},
                                                      "bad_kubeconfig", f"{section} is not a list")))
            continue
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            checkpoint()
            body = entry.get(kind) or {}
            source = {"kubeconfig": path, "name": clip(entry.get("name", ""), 253), "type": kind}
            result = _entry_certificates(body, field, base, source)
            if result is not None:
                results.append(result)
    return results


def _entry_certificates(body: Any, field: str, base: str, source: dict[str, str]) -> FileResult | None:
    if not isinstance(body, dict):
        return None
    if body.get(f"{field}-data"):
        try:
            data = base64.b64decode(str(body[f"{field}-data"]), validate=True)
        except (binascii.Error, ValueError):
            return FileResult(error=ReadError(source, "bad_pem", f"{field}-data is not valid base64"))
        return parse_container(data, source, "", None)
    if body.get(field):
        file_result = read_file(os.path.join(base, str(body[field])), None, CACHE)
        if file_result.error is not None:
            return FileResult(error=ReadError(source, file_result.error.reason,
                                              f"{clip(body[field], 200)}: {file_result.error.detail}"))
        return FileResult(certs=tuple(replace(cert, source=source) for cert in file_result.certs))
    return None  # no certificate here (a token user, or a cluster trusted via the system store)


def _load_kubeconfig(path: str) -> dict[str, Any]:
    """The kubeconfig's mapping: a regular file within MAX_KUBECONFIG_BYTES, YAML whose
    aliases, expanded, stay small and whose nesting stays shallow (safeyaml)."""
    try:
        data, _info = read_regular(path, MAX_KUBECONFIG_BYTES)
    except SourceError as exc:
        raise KubeConfigError(f"cannot read {path}: {exc}") from exc
    try:
        doc = safeyaml.load(data)
    except safeyaml.UnsafeYAML as exc:
        raise KubeConfigError(f"{path}: {exc}") from None
    if not isinstance(doc, dict):
        raise KubeConfigError(f"{path} is not a kubeconfig (expected a mapping)")
    return doc


# --- kubernetes prober: how to reach the API --------------------------------------------------


@dataclass(frozen=True)
class KubeAPI:
    server: str  # https://host:port
    ssl_context: ssl.SSLContext
    token: str | None = None
    token_file: str | None = None  # read at each probe: service-account tokens rotate

    def headers(self) -> dict[str, str]:
        token = self.token
        if self.token_file:
            try:
                data, _info = read_regular(self.token_file, MAX_CREDENTIAL_BYTES)
            except SourceError as exc:
                raise ProbeFailure(exc.reason, f"token file {self.token_file}: {exc}") from None
            try:
                token = data.decode("ascii").strip()
            except UnicodeDecodeError:
                raise ProbeFailure("bad_token", f"token file {self.token_file}: not ASCII text") from None
            if not _is_header_safe(token):
                # Never shown: it is a credential, however broken.
                raise ProbeFailure("bad_token", f"token file {self.token_file}: holds a control character "
                                                "(a newline or NUL inside the token)")
        return {"Authorization": f"Bearer {token}"} if token else {}


def _is_header_safe(token: str) -> bool:
    return all(" " <= ch <= "~" for ch in token)


def resolve_api(kubeconfig: str | None) -> KubeAPI:
    """Where and how to reach the API server: the kubeconfig's current context, or in-cluster."""
    if kubeconfig is None:
        return _in_cluster()
    try:
        return _from_kubeconfig(kubeconfig)
    except KubeConfigError:
        raise
    except (AttributeError, TypeError, ValueError) as exc:  # a shape the checks below missed
        raise KubeConfigError(f"{kubeconfig} is not a usable kubeconfig: {exc}") from None


def _from_kubeconfig(kubeconfig: str) -> KubeAPI:
    doc = _load_kubeconfig(kubeconfig)
    base = os.path.dirname(kubeconfig)
    context_name = doc.get("current-context")
    context = _named(doc, "contexts", context_name, "context")
    cluster = _named(doc, "clusters", context.get("cluster"), "cluster")
    user = _named(doc, "users", context.get("user"), "user") if context.get("user") else {}
    server = str(cluster.get("server") or "")
    if not server.startswith("https://"):
        raise KubeConfigError(f"cluster server {clip(server)!r} is not an https:// URL")
    ctx = ssl.create_default_context()
    if cluster.get("insecure-skip-tls-verify"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ca = _material(cluster, "certificate-authority", base)
    if ca is not None:
        try:
            ctx.load_verify_locations(cadata=ca.decode("ascii", "replace"))
        except (ssl.SSLError, OSError, ValueError):
            raise KubeConfigError("certificate-authority does not hold a PEM certificate") from None
    if user.get("exec") or user.get("auth-provider"):
        raise KubeConfigError("credential plugins (exec, auth-provider) are not supported; use a token or "
                              "client certificate")
    cert, key = _material(user, "client-certificate", base), _material(user, "client-key", base)
    if cert is not None and key is not None:
        _load_client_pair(ctx, cert, key)
    token_file, token = user.get("tokenFile"), user.get("token")
    if not isinstance(token_file, str | None) or not isinstance(token, str | None):
        raise KubeConfigError(f"user {clip(context.get('user'))!r}: token and tokenFile must be strings")
    if token is not None and not _is_header_safe(token):
        raise KubeConfigError(f"user {clip(context.get('user'))!r}: token holds a control character "
                              "(a newline or NUL)")
    return KubeAPI(server.rstrip("/"), ctx, token=token,
                   token_file=os.path.join(base, token_file) if token_file else None)


def _in_cluster() -> KubeAPI:
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise KubeConfigError("not running in a cluster (KUBERNETES_SERVICE_HOST unset) and no kubeconfig given")
    ctx = ssl.create_default_context(cafile=os.path.join(SERVICE_ACCOUNT, "ca.crt"))
    host = f"[{host}]" if ":" in host else host
    return KubeAPI(f"https://{host}:{port}", ctx, token_file=os.path.join(SERVICE_ACCOUNT, "token"))


def _named(doc: dict[str, Any], section: str, name: Any, key: str) -> dict[str, Any]:
    entries = doc.get(section) or []
    if not isinstance(entries, list):
        raise KubeConfigError(f"{section} is not a list")
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(key) or {}
            if not isinstance(body, dict):
                raise KubeConfigError(f"{section[:-1]} {_shown(name)}: {key} is not a mapping")
            return body
    raise KubeConfigError(f"{section[:-1]} {_shown(name)} (from current-context) is not in the kubeconfig")


def _shown(value: Any) -> str:
    """An untrusted value for a message: as repr shows it, in one clipped line."""
    return clip(repr(value) if isinstance(value, str | int | float | None) else value, 100)


def _material(body: dict[str, Any], field: str, base: str) -> bytes | None:
    try:
        if body.get(f"{field}-data"):
            return base64.b64decode(str(body[f"{field}-data"]), validate=True)
        if body.get(field):
            # A regular file of bounded size: /dev/ptmx or a FIFO here would hang the (re)load.
            return read_regular(os.path.join(base, str(body[field])), MAX_CREDENTIAL_BYTES)[0]
    except (binascii.Error, ValueError) as exc:
        if isinstance(exc, SourceError):
            raise KubeConfigError(f"{field}: {clip(body[field], 200)}: {exc}") from None
        raise KubeConfigError(f"{field}-data is not valid base64") from None
    return None


def _load_client_pair(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # ssl loads key material from files only; a private temporary file lives for the call.
    with tempfile.NamedTemporaryFile(prefix="ssl-exporter-", suffix=".pem") as f:
        os.chmod(f.name, 0o600)
        f.write(cert + b"\n" + key)
        f.flush()
        try:
            ctx.load_cert_chain(f.name)
        except ssl.SSLError:
            raise KubeConfigError("client-certificate and client-key do not load as a pair") from None


# --- kubernetes prober -------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretTarget:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_secret_target(raw: str, module: Module) -> SecretTarget:
    namespace, sep, name = raw.strip().partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise TargetError(f"target {raw!r}: expected namespace/name (globs allowed, e.g. prod/*)")
    for part in (namespace, name):
        if not all(ch.isalnum() or ch in "-.*?[]!" for ch in part):
            raise TargetError(f"target {raw!r}: {part!r} is not a Kubernetes name or glob")
    return SecretTarget(namespace.lower(), name)


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


async def probe_kubernetes(rec: ProbeRecorder, module: Module, target: SecretTarget, _name: str) -> None:
    api: KubeAPI = module.kube_api
    options = module.kubernetes
    with rec.phase("read"):
        headers = await KUBERNETES_POOL.run(rec.deadline, api.headers)
        connector = aiohttp.TCPConnector(ssl=api.ssl_context)
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
            secrets = []
            for secret_type in options.secret_types:
                secrets += await _list_secrets(session, api, target, secret_type, options.label_selector, rec)
        # Decoding and parsing thousands of certificates is CPU work: off the event loop.
        results = await KUBERNETES_POOL.run(rec.deadline, _secret_results, secrets, target, options.keys)
    record_results(rec, results, what=f"secrets {target}")


def _secret_results(secrets: list[dict[str, Any]], target: SecretTarget, keys: tuple[str, ...]) -> list[FileResult]:
    results: list[FileResult] = []
    for secret in secrets:
        checkpoint()
        meta = secret.get("metadata") or {}
        if not isinstance(meta, dict):
            continue
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        if not (fnmatch.fnmatchcase(namespace, target.namespace) and fnmatch.fnmatchcase(name, target.name)):
            continue
        data = secret.get("data") or {}
        if not isinstance(data, dict):
            continue
        for key in keys:
            if key in data:
                results.append(_secret_key(namespace, name, key, data[key]))
    return results


def _secret_key(namespace: str, name: str, key: str, value: Any) -> FileResult:
    source = {"namespace": namespace, "secret": name, "key": key}
    try:
        data = base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        return FileResult(error=ReadError(source, "bad_pem", "Secret data is not valid base64"))
    return parse_container(data, source, key, None)


async def _list_secrets(session: aiohttp.ClientSession, api: KubeAPI, target: SecretTarget, secret_type: str,
                        label_selector: str | None, rec: ProbeRecorder) -> list[dict[str, Any]]:
    """All Secrets of one type in scope, following continue tokens; one restart on 410 Gone."""
    if _is_glob(target.namespace):
        path = "/api/v1/secrets"  # cluster-wide: the namespace glob is applied here
    else:
        path = f"/api/v1/namespaces/{quote(target.namespace, safe='')}/secrets"
    params = {"fieldSelector": f"type={secret_type}", "limit": str(PAGE_SIZE)}
    if not _is_glob(target.name):
        params["fieldSelector"] += f",metadata.name={target.name}"
    if label_selector:
        params["labelSelector"] = label_selector
    items: list[dict[str, Any]] = []
    token: str | None = None
    restarted = False
    while True:
        query = dict(params, **({"continue": token} if token else {}))
        url = f"{api.server}{path}?{urlencode(query)}"
        rec.note(f"GET {path}?{urlencode(query)}")
        try:
            async with session.get(url, allow_redirects=False) as response:
                status = response.status
                body = await _read_body(response, MAX_PAGE_BYTES)
        except aiohttp.ClientError as exc:
            if isinstance(exc, OSError | TimeoutError):
                raise  # connection errors and timeouts have reasons of their own (refused, timeout...)
            raise ProbeFailure("api_error", f"GET {path}: {type(exc).__name__}: {exc}") from None
        if status == 410 and token and not restarted:
            # The continue token expired (the list changed too much): start over once.
            rec.note("continue token expired (410 Gone): listing again from the start")
            items, token, restarted = [], None, True
            continue
        if status in (401, 403):
            raise ProbeFailure("permission_denied", f"{status} from the API server for {path}: {_message(body)}")
        if status != 200:
            raise ProbeFailure("api_error", f"{status} from the API server for {path}: {_message(body)}")
        if body is None:
            raise ProbeFailure("oversized", f"a page of Secrets over {MAX_PAGE_BYTES} bytes")
        try:
            # Decoding a page (up to 64 MiB) is CPU work: off the event loop.
            page = await KUBERNETES_POOL.run(rec.deadline, json.loads, body)
            page_items = page.get("items") or []
            if not isinstance(page_items, list):
                raise ValueError("items is not a list")
            items += [item for item in page_items if isinstance(item, dict)]
            token = (page.get("metadata") or {}).get("continue") or None
            if token is not None and not isinstance(token, str):
                raise ValueError("metadata.continue is not a string")
        except (ValueError, AttributeError):
            raise ProbeFailure("api_error", f"the API server's answer for {path} is not a list") from None
        except RecursionError:
            raise ProbeFailure("api_error", f"the API server's answer for {path} nests too deeply") from None
        if not token:
            return items


async def _read_body(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body, chunk by chunk as it arrives; None once it passes ``limit`` bytes.

    (``content.read(n)`` returns whatever has arrived, often only the first chunk.)
    """
    if response.content_length is not None and response.content_length > limit:
        return None
    chunks, size = [], 0
    while True:
        chunk = await response.content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


def _message(body: bytes | None) -> str:
    if body is None:
        return "(an answer too large to show)"
    try:
        return clip(json.loads(body[:65536]).get("message", ""), 200)
    except (ValueError, AttributeError, RecursionError):
        return clip(body[:200].decode("utf-8", "replace"), 200)


KUBECONFIG_PROBER = Prober(parse_target=parse_path_target, probe=probe_kubeconfig,
                           default_server_name=lambda target: "")
KUBERNETES_PROBER = Prober(parse_target=parse_secret_target, probe=probe_kubernetes,
                           default_server_name=lambda target: "")
