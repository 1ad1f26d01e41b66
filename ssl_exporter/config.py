"""Configuration: YAML -> pure frozen settings, validated at load time.

Every error names the key path (``modules.smtp.tls_config.ca_file: file not found``) and
unknown keys are errors. The settings hold values only: what a probe needs at run time (SSL
contexts with their trust stores, the CRL store, Kubernetes API access, the target policy)
is built from them once per load by :mod:`ssl_exporter.prepare`, which raises the same
:class:`ConfigError` for a file that cannot be used, so a bad file is still a config error
and not a probe failure. Per-feature settings live in modules of their own that import
nothing above them (tlssettings, rdapsettings, arisettings); the shared rules for reading
and checking YAML are in :mod:`ssl_exporter.yamlrules` (the web config uses them too).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ssl_exporter import access, arisettings, caa, rdapsettings, resolve, starttls
from ssl_exporter.arisettings import AriConfig
from ssl_exporter.durations import format_duration
from ssl_exporter.rdapsettings import RDAPConfig
from ssl_exporter.redact import redact_urls
from ssl_exporter.targets import TargetError, parse_hostname
from ssl_exporter.tlssettings import TLS_VERSIONS, TLSConfig
from ssl_exporter.yamlrules import ConfigError as ConfigError  # config's own error, re-exported
from ssl_exporter.yamlrules import (
    check_proxy_url,
    check_readable,
    clip,
    expect_mapping,
    get_typed,
    load_yaml,
    parse_timeout,
    read_text,
    redact_url,
    reject_unknown,
    shown,
    type_name,
)

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
IMPLICIT_TLS_PORT = 443


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


@dataclass(frozen=True)
class Module:
    name: str
    prober: str = "tcp"
    timeout: float = 10.0
    tls_config: TLSConfig = field(default_factory=TLSConfig)
    tcp: TCPConfig = field(default_factory=TCPConfig)
    file: FileConfig = field(default_factory=FileConfig)
    kubernetes: KubernetesConfig = field(default_factory=KubernetesConfig)
    # Revocation checks (None: none, the module behaves as without the feature).
    revocation: RevocationConfig | None = None
    # Legacy TLS versions to test with extra handshakes ("TLS10", "TLS11").
    legacy_versions: tuple[str, ...] = ()
    # Target restrictions (docs/security.md): the module's own block as configured (the
    # policy probes enforce, with the global block, is built by ssl_exporter.prepare).
    target_policy: access.TargetPolicy | None = None
    # The rdap prober's settings (docs/domains.md).
    rdap: RDAPConfig | None = None
    # CAA check of the leaf's issuer (ssl_exporter.caa); None: no CAA lookups.
    caa: caa.CAAConfig | None = None
    # ACME Renewal Information (docs/renewal.md); None when off.
    ari: AriConfig | None = None

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
        tree: dict[str, Any] = redact_tree({
            "default_module": self.default_module,
            **({"target_policy": self.target_policy.as_dict()} if self.target_policy else {}),
            "modules": {name: module_dict(m) for name, m in self.modules.items()},
        })
        return tree


def module_dict(module: Module) -> dict[str, Any]:
    """The module as configuration, secrets replaced by <secret>; only its prober's keys."""
    out: dict[str, Any] = {"prober": module.prober, "timeout": format_duration(module.timeout, style="config")}
    if module.ari is not None:
        out["ari"] = arisettings.as_dict(module.ari)
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
        assert module.rdap is not None, "an rdap module has rdap settings"
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
                "dns_timeout": format_duration(tcp.dns_timeout, style="config")
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


def load_default() -> Config:
    return load_text(DEFAULT_CONFIG_YAML, source="embedded default")


def load_text(text: str, source: str, base_dir: str | None = None) -> Config:
    """Parse a config; relative file paths in it are relative to ``base_dir`` (its folder)."""
    raw = load_yaml(text, source)
    if raw is None:
        raw = {}
    expect_mapping(raw, "config")
    reject_unknown(raw, {"default_module", "modules", "target_policy"}, "")
    global_policy = _parse_target_policy(raw, "target_policy") if "target_policy" in raw else None
    modules_raw = raw.get("modules", {}) or {}
    expect_mapping(modules_raw, "modules")
    modules: dict[str, Module] = {}
    for name, body in modules_raw.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ConfigError(f"modules.{clip(str(name))}: module names use letters, digits, '_', '.', '-'")
        body = body if body is not None else {}
        try:
            modules[name] = _parse_module(name, body, f"modules.{name}", base_dir or os.getcwd())
        except ConfigError:
            raise
        except Exception as exc:  # an unforeseen shape or file must be a config error, not a traceback
            raise ConfigError(f"modules.{name}: cannot load: {type(exc).__name__}: {exc}") from exc
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


def _parse_module(name: str, raw: Any, path: str, base_dir: str) -> Module:
    expect_mapping(raw, path)
    prober = get_typed(raw, "prober", str, path, "tcp")
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
    reject_unknown(raw, {"prober", "timeout"} | own_block, path, f"for prober {prober}")
    timeout = parse_timeout(raw.get("timeout", "10s"), f"{path}.timeout")
    if prober == "file":
        module = Module(name, prober, timeout, file=_parse_file(raw.get("file") or {}, f"{path}.file"))
    elif prober == "kubeconfig":
        return Module(name, prober, timeout)
    elif prober == "kubernetes":
        kube = _parse_kubernetes(raw.get("kubernetes") or {}, f"{path}.kubernetes", base_dir)
        module = Module(name, prober, timeout, kubernetes=kube)
    elif prober == "rdap":
        tls_config = _parse_tls(raw.get("tls_config") or {}, f"{path}.tls_config", base_dir)
        target_policy = _parse_target_policy(raw, f"{path}.target_policy") if "target_policy" in raw else None
        rdap = rdapsettings.parse_config(raw.get("rdap"), f"{path}.rdap", base_dir)
        return Module(name, "rdap", timeout, tls_config=tls_config, rdap=rdap, target_policy=target_policy)
    else:
        module = _parse_tcp_module(name, raw, path, base_dir, timeout)
    if "ari" in raw:
        module = dataclasses.replace(module, ari=_parse_ari(raw["ari"], f"{path}.ari", base_dir))
    return module


def _parse_tcp_module(name: str, raw: Mapping[str, Any], path: str, base_dir: str, timeout: float) -> Module:
    tls_config = _parse_tls(raw.get("tls_config") or {}, f"{path}.tls_config", base_dir)
    tcp = _parse_tcp(raw.get("tcp") or {}, f"{path}.tcp")
    revocation = (_parse_revocation(raw["revocation"], f"{path}.revocation", base_dir)
                  if "revocation" in raw else None)
    legacy = _parse_legacy_versions(raw.get("legacy_versions"), f"{path}.legacy_versions")
    target_policy = _parse_target_policy(raw, f"{path}.target_policy") if "target_policy" in raw else None
    caa_config = _parse_caa(raw["caa"], f"{path}.caa") if "caa" in raw else None
    return Module(name, "tcp", timeout, tls_config=tls_config, tcp=tcp, revocation=revocation,
                  legacy_versions=legacy, target_policy=target_policy, caa=caa_config)


def _parse_caa(raw: Any, path: str) -> caa.CAAConfig:
    """``caa:``; an empty block (or ``caa:`` alone) checks with the built-in CA identities."""
    raw = {} if raw is None else raw
    expect_mapping(raw, path)
    reject_unknown(raw, {"identities", "account_uri", "validation_methods"}, path)
    identities = get_typed(raw, "identities", dict, path, None) or {}
    parsed: dict[str, tuple[str, ...]] = {}
    for issuer, domains in identities.items():
        domains = [domains] if isinstance(domains, str) else domains
        if not isinstance(issuer, str) or not isinstance(domains, list) or not domains \
                or not all(isinstance(d, str) and d and " " not in d for d in domains):
            raise ConfigError(f"{path}.identities: expected issuer name: [CAA domain, ...], got {shown(issuer)}")
        parsed[issuer] = tuple(d.lower() for d in domains)
    methods = get_typed(raw, "validation_methods", list, path, None) or []
    if not all(isinstance(m, str) and m for m in methods):
        raise ConfigError(f"{path}.validation_methods: expected a list of method names such as http-01")
    return caa.CAAConfig(identities=parsed, account_uri=get_typed(raw, "account_uri", str, path, None),
                         validation_methods=tuple(methods))


# Probers whose certificates ``ari:`` asks the CA about (served leaves, certificates at rest).
ARI_PROBERS = ("tcp", "file", "kubernetes")


def _parse_ari(raw: Any, path: str, base_dir: str) -> AriConfig:
    """``ari:``; requests to the CA obey the module's target_policy (ssl_exporter.prepare)."""
    try:
        config = arisettings.parse_config(raw, path, base_dir)
    except arisettings.AriConfigError as exc:
        raise ConfigError(str(exc)) from None
    if config.proxy_url is not None:
        check_proxy_url(config.proxy_url, f"{path}.proxy_url")
    return config


def _parse_revocation(raw: Any, path: str, base_dir: str) -> RevocationConfig:
    """``revocation:``; an empty block (or ``revocation:`` alone) checks OCSP and CRLs."""
    raw = {} if raw is None else raw
    expect_mapping(raw, path)
    reject_unknown(raw, {"methods", "crl_files", "enforce"}, path)
    methods = get_typed(raw, "methods", list, path, None)
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
    files = get_typed(raw, "crl_files", list, path, None) or []
    if files and "crl" not in methods:
        raise ConfigError(f"{path}.crl_files: requires method crl")
    if not all(isinstance(f, str) and f for f in files):
        raise ConfigError(f"{path}.crl_files: expected a list of file names")
    crl_files = []
    for item in files:
        filename = os.path.join(base_dir, os.path.expanduser(item))
        check_readable(filename, f"{path}.crl_files")
        crl_files.append(filename)
    return RevocationConfig(methods=tuple(methods), crl_files=tuple(crl_files),
                            enforce=get_typed(raw, "enforce", bool, path, True))


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


def _parse_tls(raw: Any, path: str, base_dir: str) -> TLSConfig:
    expect_mapping(raw, path)
    reject_unknown(raw, set(TLSConfig.__dataclass_fields__), path)
    files = {}
    for key in ("ca_file", "cert_file", "key_file"):
        value = get_typed(raw, key, str, path, None)
        if value is not None:
            value = os.path.join(base_dir, os.path.expanduser(value))
            check_readable(value, f"{path}.{key}")
        files[key] = value
    if files["key_file"] and not files["cert_file"]:
        raise ConfigError(f"{path}.key_file: requires cert_file")
    server_name = get_typed(raw, "server_name", str, path, None)
    if server_name is not None:
        try:
            server_name = parse_hostname(server_name)
        except TargetError as exc:
            raise ConfigError(f"{path}.server_name: {exc}") from None
    versions = {}
    for key in ("min_version", "max_version"):
        value = get_typed(raw, key, str, path, None)
        if value is not None and value not in TLS_VERSIONS:
            raise ConfigError(f"{path}.{key}: {shown(value)} is not one of {', '.join(TLS_VERSIONS)}")
        versions[key] = value
    low, high = versions["min_version"], versions["max_version"]
    if low and high and TLS_VERSIONS[low] > TLS_VERSIONS[high]:
        raise ConfigError(f"{path}.min_version: {low} is above max_version {high}")
    return TLSConfig(
        server_name=server_name,
        insecure_skip_verify=get_typed(raw, "insecure_skip_verify", bool, path, False),
        fallback_handshake=get_typed(raw, "fallback_handshake", bool, path, True),
        **files,
        **versions,
    )


def _parse_file(raw: Any, path: str) -> FileConfig:
    expect_mapping(raw, path)
    reject_unknown(raw, set(FileConfig.__dataclass_fields__) - {"resolved_roots"}, path)
    roots = _parse_file_roots(get_typed(raw, "roots", list, path, None), f"{path}.roots")
    password = get_typed(raw, "pkcs12_password", str, path, None)
    env = get_typed(raw, "pkcs12_password_env", str, path, None)
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
    expect_mapping(raw, path)
    reject_unknown(raw, set(KubernetesConfig.__dataclass_fields__), path)
    kubeconfig = get_typed(raw, "kubeconfig", str, path, None)
    if kubeconfig is not None:
        kubeconfig = os.path.join(base_dir, os.path.expanduser(kubeconfig))
        check_readable(kubeconfig, f"{path}.kubeconfig")
    lists = {}
    for key, default in (("secret_types", KubernetesConfig.secret_types), ("keys", KubernetesConfig.keys)):
        value = get_typed(raw, key, list, path, None)
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
    return KubernetesConfig(kubeconfig=kubeconfig, label_selector=get_typed(raw, "label_selector", str, path, None),
                            **lists)


def _parse_tcp(raw: Any, path: str) -> TCPConfig:
    expect_mapping(raw, path)
    reject_unknown(raw, set(TCPConfig.__dataclass_fields__), path)
    protocol = get_typed(raw, "starttls", str, path, None)
    if protocol is not None and protocol not in starttls.DIALOGUES:
        known = ", ".join(sorted(starttls.DIALOGUES)) or "none"
        raise ConfigError(f"{path}.starttls: unknown protocol {shown(protocol)}, expected one of {known}")
    family = get_typed(raw, "preferred_ip_protocol", str, path, "ip6")
    if family not in ("ip4", "ip6"):
        raise ConfigError(f"{path}.preferred_ip_protocol: {shown(family)} is not ip4 or ip6")
    source_ip = get_typed(raw, "source_ip_address", str, path, None)
    if source_ip is not None:
        try:
            ipaddress.ip_address(source_ip)
        except ValueError:
            raise ConfigError(f"{path}.source_ip_address: {shown(source_ip)} is not an IP address") from None
    proxy_url = get_typed(raw, "proxy_url", str, path, None)
    if proxy_url is not None:
        check_proxy_url(proxy_url, f"{path}.proxy_url")
    from_environment = get_typed(raw, "proxy_from_environment", bool, path, False)
    if from_environment and proxy_url is not None:
        raise ConfigError(f"{path}.proxy_from_environment: give proxy_url or proxy_from_environment, not both")
    default_port = get_typed(raw, "default_port", int, path, None)
    if default_port is not None and not 1 <= default_port <= 65535:
        raise ConfigError(f"{path}.default_port: {default_port} is out of range 1-65535")
    all_addresses = get_typed(raw, "all_addresses", bool, path, False)
    max_addresses = get_typed(raw, "max_addresses", int, path, TCPConfig.max_addresses)
    if not 1 <= max_addresses <= 64:  # bounds the work and the series of one probe
        raise ConfigError(f"{path}.max_addresses: {max_addresses} is out of range 1-64")
    if all_addresses and (proxy_url is not None or from_environment):
        raise ConfigError(f"{path}.all_addresses: cannot be combined with a proxy, which resolves the name itself")
    dns_servers = get_typed(raw, "dns_servers", list, path, None) or []
    for server in dns_servers:
        try:
            if not isinstance(server, str):
                raise ValueError(f"expected a list of addresses, got {type_name(server)}")
            resolve.parse_server(server)
        except ValueError as exc:
            raise ConfigError(f"{path}.dns_servers: {exc}") from None
    return TCPConfig(
        all_addresses=all_addresses,
        max_addresses=max_addresses,
        dns_servers=tuple(dns_servers),
        dns_timeout=parse_timeout(raw.get("dns_timeout", "5s"), f"{path}.dns_timeout"),
        default_port=default_port,
        starttls=protocol,
        preferred_ip_protocol=family,
        ip_protocol_fallback=get_typed(raw, "ip_protocol_fallback", bool, path, True),
        source_ip_address=source_ip,
        proxy_url=proxy_url,
        proxy_from_environment=from_environment,
    )
