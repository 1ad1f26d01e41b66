"""Kubernetes API access: where the API server is and how to authenticate to it.

Resolved once per load (ssl_exporter.prepare) from a kubeconfig's current context, or from
the pod's service account when no kubeconfig is given; the ``kubernetes`` prober lists
Secrets through the :class:`KubeAPI` it gets. A kubeconfig is YAML someone else may write:
read bounded in bytes, loaded with :mod:`ssl_exporter.safeyaml`, every value checked.
Credential plugins (exec, auth-provider) are refused: they would run programs at load.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import tempfile
from dataclasses import dataclass
from typing import Any

from ssl_exporter import safeyaml
from ssl_exporter.errors import ProbeFailure
from ssl_exporter.safeyaml import clip
from ssl_exporter.sources import SourceError, read_regular

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
MAX_KUBECONFIG_BYTES = 4 * 1024 * 1024
# A token, a CA bundle or a client certificate and key: far smaller than this.
MAX_CREDENTIAL_BYTES = 1024 * 1024


class KubeConfigError(ValueError):
    """A kubeconfig or in-cluster setting the kubernetes prober cannot use."""


def load_kubeconfig(path: str) -> dict[str, Any]:
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
    doc = load_kubeconfig(kubeconfig)
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
