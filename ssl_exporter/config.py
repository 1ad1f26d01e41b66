"""Configuration: YAML -> frozen dataclasses, validated at load time.

Every error names the key path (``modules.smtp.tls_config.ca_file: file not found``), unknown
keys are errors, and anything expensive a probe needs (the SSL context with its trust store)
is built here once per load, so a bad file is a config error and not a probe failure.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import reprlib
import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ssl_exporter import access, ari, caa, durations, resolve, starttls, tls
from ssl_exporter.certs import CertificateError, parse_der
from ssl_exporter.redact import redact_urls
from ssl_exporter.result import CertInfo

DEFAULT_CONFIG_YAML = """\
# Embedded default configuration: served when no --config.file is given.
# Every module verifies against the system trust store.
default_module: tcp
modules:
  tcp:
    prober: tcp
    timeout: 10s
  https:
    prober: tcp
    timeout: 10s
  # STARTTLS: the protocol's dialogue first, on its standard port (docs/starttls.md).
  smtp:        {prober: tcp, timeout: 10s, tcp: {starttls: smtp}}
  submission:  {prober: tcp, timeout: 10s, tcp: {starttls: smtp, default_port: 587}}
  imap:        {prober: tcp, timeout: 10s, tcp: {starttls: imap}}
  pop3:        {prober: tcp, timeout: 10s, tcp: {starttls: pop3}}
  ftp:         {prober: tcp, timeout: 10s, tcp: {starttls: ftp}}
  postgres:    {prober: tcp, timeout: 10s, tcp: {starttls: postgres}}
  mysql:       {prober: tcp, timeout: 10s, tcp: {starttls: mysql}}
  ldap:        {prober: tcp, timeout: 10s, tcp: {starttls: ldap}}
  xmpp:        {prober: tcp, timeout: 10s, tcp: {starttls: xmpp}}
  xmpp-server: {prober: tcp, timeout: 10s, tcp: {starttls: xmpp-server}}
  nntp:        {prober: tcp, timeout: 10s, tcp: {starttls: nntp}}
  sieve:       {prober: tcp, timeout: 10s, tcp: {starttls: sieve}}
  # Implicit TLS on the protocols' TLS ports.
  smtps:       {prober: tcp, timeout: 10s, tcp: {default_port: 465}}
  imaps:       {prober: tcp, timeout: 10s, tcp: {default_port: 993}}
  pop3s:       {prober: tcp, timeout: 10s, tcp: {default_port: 995}}
  ldaps:       {prober: tcp, timeout: 10s, tcp: {default_port: 636}}
  ftps:        {prober: tcp, timeout: 10s, tcp: {default_port: 990}}
  # Domain registration expiry over RDAP (docs/domains.md); the IANA bootstrap registry
  # is fetched at the first domain probe and refreshed daily.
  domain:      {prober: rdap, timeout: 10s, rdap: {bootstrap_url: "https://data.iana.org/rdap/dns.json"}}
"""

PROBERS = ("tcp", "file", "kubeconfig", "kubernetes", "rdap")
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
IMPLICIT_TLS_PORT = 443


class ConfigError(ValueError):
    """A configuration that cannot be used; the message starts with the key path.

    It is shown in the log, a failed reload's answer and by --config.check: credentials in
    any URL it quotes (a proxy_url, a kubeconfig's cluster server) are redacted here, once.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact_urls(a) if isinstance(a, str) else a for a in args))


@dataclass(frozen=True)
class TLSConfig:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False
    min_version: str | None = None
    max_version: str | None = None
    # A failed handshake for policy reasons is followed by one permissive handshake that only
    # reads the certificates (docs/metrics.md, "Fallback handshake").
    fallback_handshake: bool = True


@dataclass(frozen=True)
class TCPConfig:
    starttls: str | None = None
    preferred_ip_protocol: str = "ip6"
    ip_protocol_fallback: bool = True
    source_ip_address: str | None = None
    proxy_url: str | None = None
    # Use HTTPS_PROXY/NO_PROXY from the exporter's environment (read at each probe).
    proxy_from_environment: bool = False
    # Port used when the target names none; by default the STARTTLS protocol's port, or 443.
    default_port: int | None = None
    # Probe every address the name resolves to, each with its own handshake (docs/metrics.md,
    # "Every address behind a name"), at most max_addresses of them.
    all_addresses: bool = False
    max_addresses: int = 16
    # DNS servers to resolve through instead of the system resolver (ssl_exporter.resolve);
    # empty: the --dns.server flag's, else the system's. dns_timeout bounds the resolution.
    dns_servers: tuple[str, ...] = ()
    dns_timeout: float = 5.0


@dataclass(frozen=True)
class FileConfig:
    # PKCS#12 password, given here or in the named environment variable (read at load).
    pkcs12_password: str | None = field(default=None, repr=False)
    pkcs12_password_env: str | None = None
    # Folders targets must lie in (docs/sources.md), as written and resolved (realpath).
    roots: tuple[str, ...] = ()
    resolved_roots: tuple[str, ...] = ()


@dataclass(frozen=True)
class KubernetesConfig:
    kubeconfig: str | None = None  # None: the pod's service account (in-cluster)
    secret_types: tuple[str, ...] = ("kubernetes.io/tls",)
    keys: tuple[str, ...] = ("tls.crt", "ca.crt")
    label_selector: str | None = None


REVOCATION_METHODS = ("crl", "ocsp", "stapling")
# Versions a module may ask to be tested for with ``legacy_versions`` (docs/revocation.md).
LEGACY_VERSIONS = ("TLS10", "TLS11")


@dataclass(frozen=True)
class RevocationConfig:
    """``revocation:`` of a tcp module (docs/revocation.md); absent means no checks."""

    methods: tuple[str, ...] = ("ocsp", "crl")
    crl_files: tuple[str, ...] = ()
    enforce: bool = True  # a revoked certificate fails the probe
    # The configured CRL files, parsed at load and re-read when they change on disk.
    crl_store: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Module:
    name: str
    prober: str = "tcp"
    timeout: float = 10.0
    tls_config: TLSConfig = field(default_factory=TLSConfig)
    tcp: TCPConfig = field(default_factory=TCPConfig)
    file: FileConfig = field(default_factory=FileConfig)
    kubernetes: KubernetesConfig = field(default_factory=KubernetesConfig)
    # How to reach the Kubernetes API, resolved once per load (kubernetes prober only).
    kube_api: Any = field(default=None, compare=False, repr=False)
    # Built once per load from tls_config; shared by every probe of this module.
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)
    # The client certificate sent for mTLS: it expires too, so probes export it.
    client_cert: CertInfo | None = field(default=None, compare=False, repr=False)
    # Revocation checks (None: none, the module behaves as without the feature).
    revocation: RevocationConfig | None = None
    # With stapling, the handshake runs through pyOpenSSL on this context (ssl_exporter.stapling).
    stapling_context: Any = field(default=None, compare=False, repr=False)
    # Legacy TLS versions to test with extra handshakes ("TLS10", "TLS11").
    legacy_versions: tuple[str, ...] = ()
    # Target restrictions (docs/security.md): the module's own block as configured, and the
    # policy probes enforce (the global block and this one; None when neither is set).
    target_policy: access.TargetPolicy | None = None
    policy: access.Policy | None = field(default=None, compare=False, repr=False)
    # The rdap prober's settings (ssl_exporter.rdap.RDAPConfig; docs/domains.md).
    rdap: Any = None
    # CAA check of the leaf's issuer (ssl_exporter.caa); None: no CAA lookups.
    caa: caa.CAAConfig | None = None
    # ACME Renewal Information (docs/renewal.md): an ari.AriConfig, None when off.
    ari: Any = None

    @property
    def default_port(self) -> int:
        if self.tcp.default_port:
            return self.tcp.default_port
        if self.tcp.starttls:
            return starttls.DIALOGUES[self.tcp.starttls].default_port
        return IMPLICIT_TLS_PORT


@dataclass(frozen=True)
class Config:
    modules: Mapping[str, Module]
    default_module: str
    source: str  # the file it came from, or "embedded default"
    # The global target_policy block (docs/security.md); each tcp module's policy includes it.
    target_policy: access.TargetPolicy | None = None

    def redacted(self) -> dict[str, Any]:
        """The effective configuration, secrets replaced, for /config and debug output."""
        return redact_tree({
            "default_module": self.default_module,
            **({"target_policy": self.target_policy.as_dict()} if self.target_policy else {}),
            "modules": {name: module_dict(m) for name, m in self.modules.items()},
        })


def module_dict(module: Module) -> dict[str, Any]:
    """The module as configuration, secrets replaced by <secret>; only its prober's keys."""
    out: dict[str, Any] = {"prober": module.prober, "timeout": format_duration(module.timeout)}
    if module.ari is not None:
        out["ari"] = ari.as_dict(module.ari)
    if module.prober == "file":
        password = "<secret>" if module.file.pkcs12_password and not module.file.pkcs12_password_env else None
        out["file"] = _drop_none({"pkcs12_password": password,
                                  "pkcs12_password_env": module.file.pkcs12_password_env,
                                  "roots": list(module.file.roots) or None})
        return out
    if module.prober == "kubernetes":
        kube = module.kubernetes
        out["kubernetes"] = _drop_none({"kubeconfig": kube.kubeconfig, "secret_types": list(kube.secret_types),
                                        "keys": list(kube.keys), "label_selector": kube.label_selector})
        return out
    if module.prober == "rdap":
        return {**out, "rdap": module.rdap.as_dict(redact_url), "tls_config": _drop_none(vars(module.tls_config)),
                **({"target_policy": module.target_policy.as_dict()} if module.target_policy else {})}
    if module.prober != "tcp":
        return out
    tcp = module.tcp
    return {
        **out,
        "tls_config": _drop_none(vars(module.tls_config)),
        "tcp": _drop_none(
            {
                "starttls": tcp.starttls,
                "preferred_ip_protocol": tcp.preferred_ip_protocol,
                "ip_protocol_fallback": tcp.ip_protocol_fallback,
                "source_ip_address": tcp.source_ip_address,
                "proxy_url": redact_url(tcp.proxy_url),
                "proxy_from_environment": tcp.proxy_from_environment or None,
                "default_port": tcp.default_port,
                "all_addresses": tcp.all_addresses or None,
                "max_addresses": tcp.max_addresses if tcp.all_addresses else None,
                "dns_servers": list(tcp.dns_servers) or None,
                "dns_timeout": format_duration(tcp.dns_timeout)
                if tcp.dns_servers or tcp.dns_timeout != TCPConfig.dns_timeout else None,
            }
        ),
        **_revocation_dict(module),
        **({"target_policy": module.target_policy.as_dict()} if module.target_policy else {}),
        **({"caa": _drop_none({"identities": {k: list(v) for k, v in module.caa.identities.items()} or None,
                                "account_uri": module.caa.account_uri,
                                "validation_methods": list(module.caa.validation_methods) or None})}
           if module.caa is not None else {}),
    }


def _revocation_dict(module: Module) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if module.revocation is not None:
        rev = module.revocation
        out["revocation"] = {"methods": list(rev.methods), "enforce": rev.enforce,
                             **({"crl_files": list(rev.crl_files)} if rev.crl_files else {})}
    if module.legacy_versions:
        out["legacy_versions"] = list(module.legacy_versions)
    return out


def redact_url(url: str | None) -> str | None:
    """The URL with its user information redacted (ssl_exporter.redact: a lone user is a token too)."""
    return redact_urls(url) if url else url


def redact_tree(value: Any) -> Any:
    """``value`` with the credentials of every URL in every string of it redacted: applied
    once to the whole shown configuration, so that a key added later is covered too."""
    if isinstance(value, str):
        return redact_urls(value)
    if isinstance(value, Mapping):
        return {redact_tree(k): redact_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(v) for v in value]
    return value


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# --- loading -------------------------------------------------------------------------


def load_file(path: str) -> Config:
    text = read_text(path)
    return load_text(text, source=path, base_dir=os.path.dirname(os.path.abspath(path)))


MAX_CONFIG_BYTES = 16 * 1024 * 1024  # a real configuration file is a few KB


def read_text(path: str, error: type[ValueError] = ConfigError) -> str:
    """A configuration file's text, or ``error`` in one line (shared with webconfig.py).

    A regular file, bounded in bytes, or a FIFO: unlike the files a configuration names
    (read with sources.read_regular, which refuses FIFOs), this one is named by the operator
    on the command line, where ``--config.file=<(make-config)`` is a real use, and a load
    runs in a thread of its own, so a FIFO nobody writes to holds that load, not the
    exporter (tests/test_lifecycle.py holds loads that way). A device (/dev/zero, a
    terminal) is refused before it is read.
    """
    try:
        with open(path, "rb") as f:
            if not (stat.S_ISREG(mode := os.fstat(f.fileno()).st_mode) or stat.S_ISFIFO(mode)):
                raise error(f"{path}: not a regular file")
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise error(f"{path}: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise error(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8 text") from None


def load_default() -> Config:
    return load_text(DEFAULT_CONFIG_YAML, source="embedded default")


def load_text(text: str, source: str, base_dir: str | None = None) -> Config:
    """Parse a config; relative file paths in it are relative to ``base_dir`` (its folder)."""
    raw = load_yaml(text, source)
    if raw is None:
        raw = {}
    _expect_mapping(raw, "config")
    _reject_unknown(raw, {"default_module", "modules", "target_policy"}, "")
    global_policy = _parse_target_policy(raw, "target_policy") if "target_policy" in raw else None
    modules_raw = raw.get("modules", {}) or {}
    _expect_mapping(modules_raw, "modules")
    modules: dict[str, Module] = {}
    contexts = _Contexts()
    for name, body in modules_raw.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ConfigError(f"modules.{clip(str(name))}: module names use letters, digits, '_', '.', '-'")
        body = body if body is not None else {}
        try:
            modules[name] = _parse_module(name, body, f"modules.{name}", base_dir or os.getcwd(), contexts)
        except ConfigError:
            raise
        except Exception as exc:  # an unforeseen shape or file must be a config error, not a traceback
            raise ConfigError(f"modules.{name}: cannot load: {type(exc).__name__}: {exc}") from exc
        if modules[name].prober in ("tcp", "rdap"):  # target_policy governs where probes connect
            policy = access.combine(global_policy, modules[name].target_policy)
            modules[name] = dataclasses.replace(modules[name], policy=policy)
        if "ari" in body:
            modules[name] = _with_ari(modules[name], body["ari"], global_policy, f"modules.{name}.ari",
                                      base_dir or os.getcwd())
    if not modules:
        raise ConfigError("modules: at least one module is required")
    default = raw.get("default_module", "tcp" if "tcp" in modules else next(iter(modules)))
    if not isinstance(default, str) or default not in modules:
        raise ConfigError(f"default_module: {shown(default)} is not a configured module")
    return Config(modules=modules, default_module=default, source=source, target_policy=global_policy)


def _parse_target_policy(raw: Mapping[str, Any], path: str) -> access.TargetPolicy:
    key = path.rpartition(".")[2]
    try:
        return access.parse_policy(raw[key], path)
    except access.PolicyError as exc:
        raise ConfigError(str(exc)) from None


class _Contexts:
    """The SSL contexts of one load, shared by the modules whose trust settings are the same.

    Building a context parses its trust store (the system's: ~140 certificates), and the
    default configuration has 19 modules that all use it: one context serves them all. A
    context does not depend on ``server_name`` or ``insecure_skip_verify`` (each probe applies
    those), so they are left out of the key. Each load builds its own contexts, so a reload
    picks up a changed CA file or system trust store.
    """

    def __init__(self) -> None:
        self._client: dict[TLSConfig, ssl.SSLContext] = {}
        self._stapling: dict[TLSConfig, Any] = {}
        self._system_dns: resolve.SystemServers | None = None

    @staticmethod
    def _key(tls_config: TLSConfig) -> TLSConfig:
        return dataclasses.replace(tls_config, server_name=None, insecure_skip_verify=False)

    def client(self, tls_config: TLSConfig) -> ssl.SSLContext:
        key = self._key(tls_config)
        if key not in self._client:
            self._client[key] = tls.build_client_context(tls_config)
        return self._client[key]

    def system_dns(self) -> resolve.SystemServers:
        """The system resolver's servers (/etc/resolv.conf), read once per load for CAA."""
        if self._system_dns is None:
            self._system_dns = resolve.read_system_servers()
        return self._system_dns

    def stapling(self, tls_config: TLSConfig, path: str) -> Any:
        key = self._key(tls_config)
        if key not in self._stapling:
            self._stapling[key] = _stapling_context(tls_config, path)
        return self._stapling[key]


def _parse_module(name: str, raw: Any, path: str, base_dir: str, contexts: _Contexts | None = None) -> Module:
    contexts = contexts or _Contexts()
    _expect_mapping(raw, path)
    prober = _get(raw, "prober", str, path, "tcp")
    if prober not in PROBERS:
        raise ConfigError(f"{path}.prober: unknown prober {shown(prober)}, expected one of {', '.join(PROBERS)}")
    # Each prober takes its own block; another prober's block is a mistake worth naming.
    own_block = {"tcp": {"tls_config", "tcp", "revocation", "legacy_versions", "target_policy", "caa"},
                 "file": {"file"},
                 "kubeconfig": set(),
                 "kubernetes": {"kubernetes"},
                 "rdap": {"rdap", "tls_config", "target_policy"}}[prober]
    if prober in ARI_PROBERS:
        own_block = own_block | {"ari"}
    _reject_unknown(raw, {"prober", "timeout"} | own_block, path, f"for prober {prober}")
    timeout = _parse_timeout(raw.get("timeout", "10s"), f"{path}.timeout")
    if prober == "file":
        return Module(name, prober, timeout, file=_parse_file(raw.get("file") or {}, f"{path}.file"))
    if prober == "kubeconfig":
        return Module(name, prober, timeout)
    if prober == "kubernetes":
        kube = _parse_kubernetes(raw.get("kubernetes") or {}, f"{path}.kubernetes", base_dir)
        from ssl_exporter.probers import kube as kube_prober

        try:
            api = kube_prober.resolve_api(kube.kubeconfig)
        except kube_prober.KubeConfigError as exc:
            raise ConfigError(f"{path}.kubernetes.kubeconfig: {exc}") from None
        return Module(name, prober, timeout, kubernetes=kube, kube_api=api)
    if prober == "rdap":
        return _parse_rdap_module(name, raw, path, base_dir, timeout)
    tls_config = _parse_tls(raw.get("tls_config") or {}, f"{path}.tls_config", base_dir)
    tcp = _parse_tcp(raw.get("tcp") or {}, f"{path}.tcp")
    try:
        context = contexts.client(tls_config)
    except tls.ContextError as exc:
        raise ConfigError(f"{path}.tls_config.{exc.key}: {exc}") from None
    client_cert = _client_cert(tls_config, f"{path}.tls_config.cert_file")
    revocation = (_parse_revocation(raw["revocation"], f"{path}.revocation", base_dir)
                  if "revocation" in raw else None)
    stapling_context = None
    if revocation is not None and "stapling" in revocation.methods:
        stapling_context = contexts.stapling(tls_config, path)
    legacy = _parse_legacy_versions(raw.get("legacy_versions"), f"{path}.legacy_versions")
    target_policy = _parse_target_policy(raw, f"{path}.target_policy") if "target_policy" in raw else None
    caa_config = _parse_caa(raw["caa"], f"{path}.caa") if "caa" in raw else None
    if caa_config is not None and not tcp.dns_servers:
        caa_config = dataclasses.replace(caa_config, system=contexts.system_dns())
    return Module(name, prober, timeout, tls_config=tls_config, tcp=tcp, ssl_context=context,
                  client_cert=client_cert, revocation=revocation, stapling_context=stapling_context,
                  legacy_versions=legacy, target_policy=target_policy, caa=caa_config)


def _parse_caa(raw: Any, path: str) -> caa.CAAConfig:
    """``caa:``; an empty block (or ``caa:`` alone) checks with the built-in CA identities."""
    raw = {} if raw is None else raw
    _expect_mapping(raw, path)
    _reject_unknown(raw, {"identities", "account_uri", "validation_methods"}, path)
    identities = _get(raw, "identities", dict, path, None) or {}
    parsed: dict[str, tuple[str, ...]] = {}
    for issuer, domains in identities.items():
        domains = [domains] if isinstance(domains, str) else domains
        if not isinstance(issuer, str) or not isinstance(domains, list) or not domains \
                or not all(isinstance(d, str) and d and " " not in d for d in domains):
            raise ConfigError(f"{path}.identities: expected issuer name: [CAA domain, ...], got {shown(issuer)}")
        parsed[issuer] = tuple(d.lower() for d in domains)
    methods = _get(raw, "validation_methods", list, path, None) or []
    if not all(isinstance(m, str) and m for m in methods):
        raise ConfigError(f"{path}.validation_methods: expected a list of method names such as http-01")
    return caa.CAAConfig(identities=parsed, account_uri=_get(raw, "account_uri", str, path, None),
                         validation_methods=tuple(methods))


def _parse_rdap_module(name: str, raw: Mapping[str, Any], path: str, base_dir: str, timeout: float) -> Module:
    from ssl_exporter import rdap

    tls_config = _parse_tls(raw.get("tls_config") or {}, f"{path}.tls_config", base_dir)
    try:
        context = rdap.client_context(tls_config)
    except tls.ContextError as exc:
        raise ConfigError(f"{path}.tls_config.{exc.key}: {exc}") from None
    target_policy = _parse_target_policy(raw, f"{path}.target_policy") if "target_policy" in raw else None
    return Module(name, "rdap", timeout, tls_config=tls_config, ssl_context=context,
                  rdap=rdap.parse_config(raw.get("rdap"), f"{path}.rdap", base_dir), target_policy=target_policy)


# Probers whose certificates ``ari:`` asks the CA about (served leaves, certificates at rest).
ARI_PROBERS = ("tcp", "file", "kubernetes")


def _with_ari(module: Module, raw: Any, global_policy: access.TargetPolicy | None, path: str,
              base_dir: str) -> Module:
    """The module with its ``ari:`` block; requests to the CA obey the module's target_policy."""
    try:
        config = ari.parse_config(raw, path, base_dir)
    except ari.AriConfigError as exc:
        raise ConfigError(str(exc)) from None
    proxy = config.proxy_url
    if proxy is not None:
        _check_proxy_url(proxy, f"{path}.proxy_url")
    policy = module.policy if module.prober == "tcp" else access.combine(global_policy)
    return dataclasses.replace(module, ari=dataclasses.replace(config, policy=policy))


def _parse_revocation(raw: Any, path: str, base_dir: str) -> RevocationConfig:
    """``revocation:``; an empty block (or ``revocation:`` alone) checks OCSP and CRLs."""
    raw = {} if raw is None else raw
    _expect_mapping(raw, path)
    _reject_unknown(raw, {"methods", "crl_files", "enforce"}, path)
    methods = _get(raw, "methods", list, path, None)
    if methods is None:
        methods = list(RevocationConfig.methods)
    expected = ", ".join(REVOCATION_METHODS)
    if not methods:
        raise ConfigError(f"{path}.methods: expected a non-empty list of {expected}")
    for method in methods:
        if method not in REVOCATION_METHODS:
            raise ConfigError(f"{path}.methods: unknown method {shown(method)}, expected one of {expected}")
        if methods.count(method) > 1:
            raise ConfigError(f"{path}.methods: {shown(method)} is listed twice")
    files = _get(raw, "crl_files", list, path, None) or []
    if files and "crl" not in methods:
        raise ConfigError(f"{path}.crl_files: requires method crl")
    if not all(isinstance(f, str) and f for f in files):
        raise ConfigError(f"{path}.crl_files: expected a list of file names")
    from ssl_exporter import revocation

    crl_files = []
    for item in files:
        filename = os.path.join(base_dir, os.path.expanduser(item))
        _check_readable(filename, f"{path}.crl_files")
        crl_files.append(filename)
    try:
        store = revocation.CRLFiles(crl_files)
    except revocation.CRLFileError as exc:
        raise ConfigError(f"{path}.crl_files: {exc}") from None
    return RevocationConfig(methods=tuple(methods), crl_files=tuple(crl_files),
                            enforce=_get(raw, "enforce", bool, path, True), crl_store=store)


def _stapling_context(tls_config: TLSConfig, path: str) -> Any:
    from ssl_exporter import stapling

    try:
        return stapling.build_context(tls_config)
    except stapling.StaplingUnavailable as exc:
        raise ConfigError(f"{path}.revocation.methods: {exc}") from None
    except tls.ContextError as exc:
        raise ConfigError(f"{path}.tls_config.{exc.key}: {exc}") from None


def _parse_legacy_versions(raw: Any, path: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    expected = ", ".join(LEGACY_VERSIONS)
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{path}: expected a non-empty list of {expected}")
    for version in raw:
        if version not in LEGACY_VERSIONS:
            raise ConfigError(f"{path}: {shown(version)} is not one of {expected}")
    return tuple(dict.fromkeys(raw))


def _client_cert(tls_config: TLSConfig, path: str) -> CertInfo | None:
    if not tls_config.cert_file:
        return None
    try:
        with open(tls_config.cert_file, "rb") as f:
            cert = x509.load_pem_x509_certificates(f.read())[0]
        return parse_der(cert.public_bytes(Encoding.DER), {"file": tls_config.cert_file})
    except (OSError, ValueError, CertificateError) as exc:
        raise ConfigError(f"{path}: cannot read the client certificate: {exc}") from None


def _parse_tls(raw: Any, path: str, base_dir: str) -> TLSConfig:
    _expect_mapping(raw, path)
    _reject_unknown(raw, set(TLSConfig.__dataclass_fields__), path)
    files = {}
    for key in ("ca_file", "cert_file", "key_file"):
        value = _get(raw, key, str, path, None)
        if value is not None:
            value = os.path.join(base_dir, os.path.expanduser(value))
            _check_readable(value, f"{path}.{key}")
        files[key] = value
    if files["key_file"] and not files["cert_file"]:
        raise ConfigError(f"{path}.key_file: requires cert_file")
    server_name = _get(raw, "server_name", str, path, None)
    if server_name is not None:
        from ssl_exporter.targets import TargetError, parse_hostname

        try:
            server_name = parse_hostname(server_name)
        except TargetError as exc:
            raise ConfigError(f"{path}.server_name: {exc}") from None
    versions = {}
    for key in ("min_version", "max_version"):
        value = _get(raw, key, str, path, None)
        if value is not None and value not in TLS_VERSIONS:
            raise ConfigError(f"{path}.{key}: {shown(value)} is not one of {', '.join(TLS_VERSIONS)}")
        versions[key] = value
    low, high = versions["min_version"], versions["max_version"]
    if low and high and TLS_VERSIONS[low] > TLS_VERSIONS[high]:
        raise ConfigError(f"{path}.min_version: {low} is above max_version {high}")
    return TLSConfig(
        server_name=server_name,
        insecure_skip_verify=_get(raw, "insecure_skip_verify", bool, path, False),
        fallback_handshake=_get(raw, "fallback_handshake", bool, path, True),
        **files,
        **versions,
    )


def _parse_file(raw: Any, path: str) -> FileConfig:
    _expect_mapping(raw, path)
    _reject_unknown(raw, set(FileConfig.__dataclass_fields__) - {"resolved_roots"}, path)
    roots = _parse_file_roots(_get(raw, "roots", list, path, None), f"{path}.roots")
    password = _get(raw, "pkcs12_password", str, path, None)
    env = _get(raw, "pkcs12_password_env", str, path, None)
    if password is not None and env is not None:
        raise ConfigError(f"{path}.pkcs12_password_env: give pkcs12_password or pkcs12_password_env, not both")
    if env is not None:
        if env not in os.environ:
            raise ConfigError(f"{path}.pkcs12_password_env: environment variable {env} is not set")
        password = os.environ[env]
    return FileConfig(pkcs12_password=password, pkcs12_password_env=env, roots=roots,
                      resolved_roots=tuple(os.path.realpath(root) for root in roots))


def _parse_file_roots(raw: list[Any] | None, path: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not raw:
        raise ConfigError(f"{path}: expected a non-empty list of folders (omit the key to allow any)")
    roots = []
    for item in raw:
        if not isinstance(item, str) or not os.path.isabs(item):
            raise ConfigError(f"{path}: expected absolute folder paths, got {str(item)[:80]!r}")
        if not os.path.isdir(item):
            raise ConfigError(f"{path}: {item[:200]} is not a folder")
        roots.append(os.path.normpath(item))
    return tuple(roots)


def _parse_kubernetes(raw: Any, path: str, base_dir: str) -> KubernetesConfig:
    _expect_mapping(raw, path)
    _reject_unknown(raw, set(KubernetesConfig.__dataclass_fields__), path)
    kubeconfig = _get(raw, "kubeconfig", str, path, None)
    if kubeconfig is not None:
        kubeconfig = os.path.join(base_dir, os.path.expanduser(kubeconfig))
        _check_readable(kubeconfig, f"{path}.kubeconfig")
    lists = {}
    for key, default in (("secret_types", KubernetesConfig.secret_types), ("keys", KubernetesConfig.keys)):
        value = _get(raw, key, list, path, None)
        if value is None:
            lists[key] = default
            continue
        if not value or not all(isinstance(item, str) and item for item in value):
            raise ConfigError(f"{path}.{key}: expected a non-empty list of strings")
        seen: set[str] = set()
        for item in value:
            if item in seen:
                raise ConfigError(f"{path}.{key}: {shown(item)} is listed twice")
            seen.add(item)
        lists[key] = tuple(value)
    return KubernetesConfig(kubeconfig=kubeconfig, label_selector=_get(raw, "label_selector", str, path, None),
                            **lists)


def _parse_tcp(raw: Any, path: str) -> TCPConfig:
    _expect_mapping(raw, path)
    _reject_unknown(raw, set(TCPConfig.__dataclass_fields__), path)
    protocol = _get(raw, "starttls", str, path, None)
    if protocol is not None and protocol not in starttls.DIALOGUES:
        known = ", ".join(sorted(starttls.DIALOGUES)) or "none"
        raise ConfigError(f"{path}.starttls: unknown protocol {shown(protocol)}, expected one of {known}")
    family = _get(raw, "preferred_ip_protocol", str, path, "ip6")
    if family not in ("ip4", "ip6"):
        raise ConfigError(f"{path}.preferred_ip_protocol: {shown(family)} is not ip4 or ip6")
    source_ip = _get(raw, "source_ip_address", str, path, None)
    if source_ip is not None:
        try:
            ipaddress.ip_address(source_ip)
        except ValueError:
            raise ConfigError(f"{path}.source_ip_address: {shown(source_ip)} is not an IP address") from None
    proxy_url = _get(raw, "proxy_url", str, path, None)
    if proxy_url is not None:
        _check_proxy_url(proxy_url, f"{path}.proxy_url")
    from_environment = _get(raw, "proxy_from_environment", bool, path, False)
    if from_environment and proxy_url is not None:
        raise ConfigError(f"{path}.proxy_from_environment: give proxy_url or proxy_from_environment, not both")
    default_port = _get(raw, "default_port", int, path, None)
    if default_port is not None and not 1 <= default_port <= 65535:
        raise ConfigError(f"{path}.default_port: {default_port} is out of range 1-65535")
    all_addresses = _get(raw, "all_addresses", bool, path, False)
    max_addresses = _get(raw, "max_addresses", int, path, TCPConfig.max_addresses)
    if not 1 <= max_addresses <= 64:  # bounds the work and the series of one probe
        raise ConfigError(f"{path}.max_addresses: {max_addresses} is out of range 1-64")
    if all_addresses and (proxy_url is not None or from_environment):
        raise ConfigError(f"{path}.all_addresses: cannot be combined with a proxy, which resolves the name itself")
    dns_servers = _get(raw, "dns_servers", list, path, None) or []
    for server in dns_servers:
        try:
            if not isinstance(server, str):
                raise ValueError(f"expected a list of addresses, got {_type_name(server)}")
            resolve.parse_server(server)
        except ValueError as exc:
            raise ConfigError(f"{path}.dns_servers: {exc}") from None
    return TCPConfig(
        all_addresses=all_addresses,
        max_addresses=max_addresses,
        dns_servers=tuple(dns_servers),
        dns_timeout=_parse_timeout(raw.get("dns_timeout", "5s"), f"{path}.dns_timeout"),
        default_port=default_port,
        starttls=protocol,
        preferred_ip_protocol=family,
        ip_protocol_fallback=_get(raw, "ip_protocol_fallback", bool, path, True),
        source_ip_address=source_ip,
        proxy_url=proxy_url,
        proxy_from_environment=from_environment,
    )


def _check_proxy_url(url: str, path: str) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if parts.scheme != "http":
        raise ConfigError(f"{path}: scheme {shown(parts.scheme)} is not supported, use http://")
    if not parts.hostname or not port:
        raise ConfigError(f"{path}: expected http://host:port")


# --- YAML, bounded ---------------------------------------------------------------------

# YAML aliases share one node, which our code (or str() in a message) may walk as a tree: ten
# levels of ten aliases make a few hundred bytes that expand to 10^10 nodes. And the composer
# recurses once per level, so deep nesting ends in RecursionError. Both are bounded here, for
# every file we read as YAML (the config and the web config), before anything is built.
MAX_YAML_DEPTH = 64  # levels of nesting; a real config needs fewer than ten
MAX_ALIAS_NODES = 100_000  # nodes that aliases may add to the document, counted expanded


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses deep nesting, recursive aliases and alias bombs."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0
        self._alias_nodes = 0
        self._sizes: dict[int, int] = {}  # id(node) -> its size as a tree, aliases expanded

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:
                if target.end_mark is None:  # a collection still being composed: itself
                    raise yaml.composer.ComposerError(None, None, f"recursive alias *{clip(event.anchor, 40)}",
                                                      event.start_mark)
                self._alias_nodes += self._size(target)
                if self._alias_nodes > MAX_ALIAS_NODES:
                    raise yaml.composer.ComposerError(
                        None, None, f"aliases expand to more than {MAX_ALIAS_NODES} nodes", event.start_mark)
            return super().compose_node(parent, index)
        if self._depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels",
                                              self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _size(self, node: yaml.Node) -> int:
        # Depth is bounded above, and each node is sized once: linear in the document.
        size = self._sizes.get(id(node))
        if size is None:
            if isinstance(node, yaml.SequenceNode):
                size = 1 + sum(self._size(item) for item in node.value)
            elif isinstance(node, yaml.MappingNode):
                size = 1 + sum(self._size(key) + self._size(value) for key, value in node.value)
            else:
                size = 1
            self._sizes[id(node)] = size
        return size


def load_yaml(text: str, source: str, error: type[ValueError] = ConfigError) -> Any:
    """One YAML document, bounded as above; ``error`` with the problem and its place if bad.

    YAML's own message is not used: it quotes the file, secrets included.
    """
    prefix = f"{source}: " if source else ""
    loader = None
    try:
        loader = _BoundedLoader(text)  # the reader checks the text here already
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise error(f"{prefix}{problem}{where}") from None
    except RecursionError:  # a nesting the bound above did not catch (a long merge-key chain)
        raise error(f"{prefix}nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def clip(text: str, limit: int = 100) -> str:
    """At most ``limit`` characters of ``text``, with a marker when cut."""
    return text if len(text) <= limit else f"{text[:limit]}...({len(text) - limit} more characters)"


_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxdict, _SHOWN.maxstring, _SHOWN.maxother = 2, 4, 4, 80, 80


def shown(value: Any) -> str:
    """A value from the file, for a message: its repr, bounded however large or shared it is."""
    return clip(_SHOWN.repr(value))


# --- small validators ------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Prometheus-style duration ("10s", "1m30s", "500ms") in seconds; ValueError if bad."""
    if not text or _DURATION.sub("", text) != "":
        raise ValueError(f"{shown(text)} is not a duration like 10s, 1m30s or 500ms")
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION.findall(text))


def format_duration(seconds: float) -> str:
    """A duration in the configuration's own syntax, as /config shows it ("0.5s", "90s")."""
    return durations.format_duration(seconds, style="config")


def _parse_timeout(raw: Any, path: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):  # str() of a shared tree could be huge
        raise ConfigError(f"{path}: expected a duration like 10s, got {_type_name(raw)}")
    try:
        seconds = float(raw) if isinstance(raw, int | float) else parse_duration(raw)
    except (ValueError, OverflowError) as exc:  # OverflowError: an integer beyond float range
        raise ConfigError(f"{path}: {exc}") from None
    if not math.isfinite(seconds):  # .nan, .inf
        raise ConfigError(f"{path}: must be a finite duration")
    if seconds <= 0:
        raise ConfigError(f"{path}: must be greater than 0")
    return seconds


def _expect_mapping(raw: Any, path: str, error: type[ValueError] = ConfigError) -> None:
    if not isinstance(raw, Mapping):
        raise error(f"{path}: expected a mapping, got {_type_name(raw)}")


def _reject_unknown(raw: Mapping[str, Any], known: set[str], path: str, context: str = "") -> None:
    for key in raw:
        if key not in known:
            where = f"{path}.{clip(str(key))}" if path else clip(str(key))
            scope = f" {context}" if context else ""
            raise ConfigError(f"{where}: unknown key{scope} (expected one of {', '.join(sorted(known))})")


# The validators below are shared with the web config (webconfig.py), which passes its own
# error class; both files follow the same rules and give the same messages.


def _get(raw: Mapping[str, Any], key: str, kind: type, path: str, default: Any = None,
         error: type[ValueError] = ConfigError) -> Any:
    value = raw.get(key, default)
    if value is None or value is default:
        return value
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise error(f"{path}.{key}: expected {kind.__name__}, got {_type_name(value)}")
    return value


def _type_name(value: Any) -> str:
    names: dict[type, str] = {dict: "mapping", list: "list", str: "string", bool: "boolean"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _check_readable(filename: str, path: str, error: type[ValueError] = ConfigError) -> None:
    try:
        # O_NONBLOCK: a FIFO or terminal named here must not hang the (re)load in open().
        fd = os.open(filename, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise error(f"{path}: file not found: {filename}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {filename}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
    finally:
        os.close(fd)
    if stat.S_ISDIR(mode):
        raise error(f"{path}: is a directory: {filename}")
    if not stat.S_ISREG(mode):  # a FIFO or device: reading it later would block or never end
        raise error(f"{path}: not a regular file: {filename}")

