"""The ``kubeconfig`` and ``kubernetes`` probers.

``kubeconfig``: the target is a kubeconfig file; its clusters' CA certificates and its users'
client certificates are exported (inline ``*-data`` or file references, resolved relative
to the kubeconfig), labelled ``kubeconfig``, ``name`` and ``type`` (cluster|user).

``kubernetes``: the target is ``namespace/name`` (globs allowed in both); Secrets of the
configured types are listed through the Kubernetes REST API with plain aiohttp — the API
needed is three GET parameters and a continue token, which does not justify a client
library — using server-side field and label selectors and pagination. Where the API server
is and how to authenticate is ssl_exporter.kubeapi's, resolved once per load. A namespace without
glob characters is listed in that namespace only, so a namespaced Role is enough; a
namespace glob lists Secrets cluster-wide and needs a ClusterRole.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import os
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from ssl_exporter.containers import FileResult, ParseCache, parse_container, read_file, record_results
from ssl_exporter.errors import ProbeFailure
from ssl_exporter.kubeapi import KubeAPI, KubeConfigError, load_kubeconfig
from ssl_exporter.prepare import PreparedModule
from ssl_exporter.probers.base import Prober, ProbeRecorder, ReadPool, checkpoint
from ssl_exporter.result import ReadError
from ssl_exporter.safeyaml import clip
from ssl_exporter.sources import SourceError
from ssl_exporter.targets import TargetError

PAGE_SIZE = 500
# One page of Secrets is at most PAGE_SIZE objects; anything far larger is not an API server.
MAX_PAGE_BYTES = 64 * 1024 * 1024

# Each prober's own read threads (docs/robustness.md).
KUBECONFIG_POOL = ReadPool("kubeconfig")
KUBERNETES_POOL = ReadPool("kubernetes")


# --- kubeconfig prober ---------------------------------------------------------------------


def parse_path_target(raw: str, module: PreparedModule) -> str:
    path = raw.strip()
    if not path or "\x00" in path:
        raise TargetError(f"target {raw!r} is not a file path")
    if not os.path.isabs(path):
        raise TargetError(f"target {raw!r}: the kubeconfig prober needs an absolute path")
    return os.path.normpath(path)


async def probe_kubeconfig(rec: ProbeRecorder, module: PreparedModule, path: str, _name: str) -> None:
    with rec.phase("read"):
        results = await KUBECONFIG_POOL.run(rec.deadline, read_kubeconfig, path, module.caches.files)
    record_results(rec, results, what=path)


def read_kubeconfig(path: str, cache: ParseCache | None = None) -> list[FileResult]:
    """One FileResult per cluster CA and per user client certificate in the kubeconfig."""
    try:
        doc = load_kubeconfig(path)
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
            result = _entry_certificates(body, field, base, source, cache)
            if result is not None:
                results.append(result)
    return results


def _entry_certificates(body: Any, field: str, base: str, source: dict[str, str],
                        cache: ParseCache | None) -> FileResult | None:
    if not isinstance(body, dict):
        return None
    if body.get(f"{field}-data"):
        try:
            data = base64.b64decode(str(body[f"{field}-data"]), validate=True)
        except (binascii.Error, ValueError):
            return FileResult(error=ReadError(source, "bad_pem", f"{field}-data is not valid base64"))
        return parse_container(data, source, "", None)
    if body.get(field):
        file_result = read_file(os.path.join(base, str(body[field])), None, cache)
        if file_result.error is not None:
            return FileResult(error=ReadError(source, file_result.error.reason,
                                              f"{clip(body[field], 200)}: {file_result.error.detail}"))
        return FileResult(certs=tuple(replace(cert, source=source) for cert in file_result.certs))
    return None  # no certificate here (a token user, or a cluster trusted via the system store)


# --- kubernetes prober -------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretTarget:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_secret_target(raw: str, module: PreparedModule) -> SecretTarget:
    namespace, sep, name = raw.strip().partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise TargetError(f"target {raw!r}: expected namespace/name (globs allowed, e.g. prod/*)")
    for part in (namespace, name):
        if not all(ch.isalnum() or ch in "-.*?[]!" for ch in part):
            raise TargetError(f"target {raw!r}: {part!r} is not a Kubernetes name or glob")
    return SecretTarget(namespace.lower(), name)


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


async def probe_kubernetes(rec: ProbeRecorder, module: PreparedModule, target: SecretTarget, _name: str) -> None:
    api = module.kube_api
    assert api is not None, "ssl_exporter.prepare resolves a kubernetes module's API access"
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
    chunks: list[bytes] = []
    size = 0
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
