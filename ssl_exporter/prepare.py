"""Settings -> runtime objects, once per configuration load.

config.py parses YAML into pure frozen settings (:class:`~ssl_exporter.config.Config`,
:class:`~ssl_exporter.config.Module`). This step builds, from those settings, what probes
need at run time and what is too expensive to build per probe:

- the SSL context of each tcp/rdap module, shared by the modules whose trust settings are
  the same (:class:`_Shared`), and the pyOpenSSL context of modules that ask for stapling;
- the client certificate a module presents (exported: it expires too);
- the CRL store of ``revocation.crl_files``;
- Kubernetes API access (:mod:`ssl_exporter.kubeapi`);
- the target policy probes enforce (the global block combined with the module's own);
- the runtime of ``ari:`` (its HTTPS context and policy) and the system resolver's servers
  for ``caa:``.

A file that cannot be used raises the same :class:`~ssl_exporter.config.ConfigError`, with
the same key path, as when config.py built these while parsing; a failed reload thus still
keeps the old configuration (the server swaps in a :class:`PreparedConfig` only once it is
whole), and each load builds its own objects, so a reload picks up a changed CA file.

The shape every prober and mechanism takes: one :class:`PreparedModule`, holding the
module's settings (``.settings``, a config.Module) and its runtime objects. The settings'
fields are readable on it under their own names (``module.tcp``, ``module.tls_config``...),
so code that needs only settings reads them the same way from either.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ssl_exporter import access, ari, certs, config, containers, kubeapi, lru, rdap, resolve, revocation, stapling, tls
from ssl_exporter.arisettings import AriConfig, AriConfigError
from ssl_exporter.caa import CAAConfig
from ssl_exporter.certs import CertificateError, parse_der
from ssl_exporter.config import ConfigError, Module
from ssl_exporter.rdapsettings import RDAPConfig
from ssl_exporter.result import CertInfo
from ssl_exporter.tlssettings import TLSConfig

if TYPE_CHECKING:
    from OpenSSL import SSL


@dataclass
class Caches:
    """What probes remember between probes, kept for the life of the process.

    These were module globals; they are owned here so that a test (or anything else) can
    start from fresh state with a ``Caches()`` of its own. One instance,
    :data:`PROCESS_CACHES`, is handed to every load, because each of them must survive a
    reload exactly as the globals did: parsed certificate files (a reload must not re-parse
    a 10,000-file tree), RDAP answers and Retry-After back-offs (registries rate-limit),
    ACME renewal windows, revocation answers and CRLs, parsed presented certificates and
    rendered certificate lines. Code below this module gets the cache it uses as an
    argument (``module.caches.<name>``, or from the server's Exporter). Each cache keeps its lru.budgeted share, so the
    ``ssl_exporter_cache_bytes`` series are unchanged (create no second instance in a
    running exporter: its caches would be counted twice).
    """

    files: containers.ParseCache = field(default_factory=containers.ParseCache)
    rdap: rdap.RDAPState = field(default_factory=rdap.RDAPState)
    ari: ari.AriCache = field(default_factory=ari.new_cache)
    # OCSP and CRL answers, downloaded CRLs and the fetches in flight (shared by probes).
    revocation: revocation.RevocationCache = field(default_factory=revocation.RevocationCache)
    # Presented certificates parsed, by DER (certs.parse_der's memo for the tcp prober).
    presented: lru.ByteLRU[CertInfo] = field(default_factory=certs.new_presented_cache)
    # Rendered certificate sample lines (metrics.CertLines; the server passes it to
    # metrics.probe_families). Built here by its lru share: prepare sits below metrics.
    cert_lines: lru.ByteLRU[tuple[str, str, str, str]] = field(
        default_factory=lambda: lru.budgeted("cert_lines"))

    def clear(self) -> None:
        """Forget everything remembered (tests)."""
        self.files.clear()
        self.rdap.clear()
        self.ari.clear()
        self.revocation.clear()
        self.presented.clear()
        self.cert_lines.clear()


PROCESS_CACHES = Caches()


@dataclass(frozen=True)
class PreparedModule:
    """A module's settings and the runtime objects built from them for one load."""

    settings: Module
    # The process's caches (not per load: see Caches).
    caches: Caches = field(default_factory=lambda: PROCESS_CACHES)
    # Built from tls_config (tcp and rdap modules); shared by every probe of this module.
    ssl_context: ssl.SSLContext | None = None
    # The client certificate sent for mTLS: it expires too, so probes export it.
    client_cert: CertInfo | None = None
    # With stapling, the handshake runs through pyOpenSSL on this context (ssl_exporter.stapling).
    stapling_context: SSL.Context | None = None
    # The configured CRL files, parsed at load and re-read when they change on disk.
    crl_store: revocation.CRLFiles | None = None
    # How to reach the Kubernetes API (kubernetes prober only).
    kube_api: kubeapi.KubeAPI | None = None
    # The target policy probes enforce: the global block and the module's (None: neither set).
    policy: access.Policy | None = None
    # ``caa:`` with the system resolver's servers read for this load (without dns_servers).
    caa: CAAConfig | None = None
    # ``ari:`` with its HTTPS context and policy; None when off.
    ari_client: ari.AriClient | None = None

    # The settings, read through: a prober needs both and should not care which is which.
    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def prober(self) -> str:
        return self.settings.prober

    @property
    def timeout(self) -> float:
        return self.settings.timeout

    @property
    def tls_config(self) -> TLSConfig:
        return self.settings.tls_config

    @property
    def tcp(self) -> config.TCPConfig:
        return self.settings.tcp

    @property
    def file(self) -> config.FileConfig:
        return self.settings.file

    @property
    def kubernetes(self) -> config.KubernetesConfig:
        return self.settings.kubernetes

    @property
    def revocation(self) -> config.RevocationConfig | None:
        return self.settings.revocation

    @property
    def legacy_versions(self) -> tuple[str, ...]:
        return self.settings.legacy_versions

    @property
    def target_policy(self) -> access.TargetPolicy | None:
        return self.settings.target_policy

    @property
    def rdap(self) -> RDAPConfig | None:
        return self.settings.rdap

    @property
    def ari(self) -> AriConfig | None:
        return self.settings.ari

    @property
    def default_port(self) -> int:
        return self.settings.default_port


@dataclass(frozen=True)
class PreparedConfig:
    """A whole configuration, ready to probe with: its settings and its prepared modules."""

    settings: config.Config
    modules: Mapping[str, PreparedModule]

    @property
    def default_module(self) -> str:
        return self.settings.default_module

    @property
    def source(self) -> str:
        return self.settings.source

    @property
    def target_policy(self) -> access.TargetPolicy | None:
        return self.settings.target_policy

    def redacted(self) -> dict[str, Any]:
        """The effective configuration, secrets replaced, for /config and debug output."""
        return self.settings.redacted()


# --- loading: parse, then prepare ------------------------------------------------------------


def load_file(path: str, caches: Caches | None = None) -> PreparedConfig:
    return prepare(config.load_file(path), caches)


def load_default(caches: Caches | None = None) -> PreparedConfig:
    return prepare(config.load_default(), caches)


def load_text(text: str, source: str, base_dir: str | None = None, caches: Caches | None = None) -> PreparedConfig:
    return prepare(config.load_text(text, source, base_dir), caches)


def prepare(cfg: config.Config, caches: Caches | None = None) -> PreparedConfig:
    """Build every module's runtime objects; ConfigError (with the key path) if one cannot be.

    ``caches``: what the probes of this configuration remember; the process's by default.
    """
    shared = _Shared()
    modules: dict[str, PreparedModule] = {}
    for name, module in cfg.modules.items():
        try:
            modules[name] = prepare_module(module, cfg.target_policy, shared, caches or PROCESS_CACHES)
        except ConfigError:
            raise
        except Exception as exc:  # an unforeseen file must be a config error, not a traceback
            raise ConfigError(f"modules.{name}: cannot load: {type(exc).__name__}: {exc}") from exc
    return PreparedConfig(cfg, modules)


class _Shared:
    """The SSL contexts of one load, shared by the modules whose trust settings are the same.

    Building a context parses its trust store (the system's: ~140 certificates), and the
    default configuration has 19 modules that all use it: one context serves them all. A
    context does not depend on ``server_name`` or ``insecure_skip_verify`` (each probe applies
    those), so they are left out of the key. Each load builds its own contexts, so a reload
    picks up a changed CA file or system trust store.
    """

    def __init__(self) -> None:
        self._client: dict[TLSConfig, ssl.SSLContext] = {}
        self._stapling: dict[TLSConfig, SSL.Context] = {}
        self._system_dns: resolve.SystemServers | None = None

    @staticmethod
    def _key(tls_config: TLSConfig) -> TLSConfig:
        return dataclasses.replace(tls_config, server_name=None, insecure_skip_verify=False)

    def client(self, tls_config: TLSConfig, path: str) -> ssl.SSLContext:
        key = self._key(tls_config)
        if key not in self._client:
            try:
                self._client[key] = tls.build_client_context(tls_config)
            except tls.ContextError as exc:
                raise ConfigError(f"{path}.tls_config.{exc.key}: {exc}") from None
        return self._client[key]

    def stapling(self, tls_config: TLSConfig, path: str) -> SSL.Context:
        key = self._key(tls_config)
        if key not in self._stapling:
            try:
                self._stapling[key] = stapling.build_context(tls_config)
            except stapling.StaplingUnavailable as exc:
                raise ConfigError(f"{path}.revocation.methods: {exc}") from None
            except tls.ContextError as exc:
                raise ConfigError(f"{path}.tls_config.{exc.key}: {exc}") from None
        return self._stapling[key]

    def system_dns(self) -> resolve.SystemServers:
        """The system resolver's servers (/etc/resolv.conf), read once per load for CAA."""
        if self._system_dns is None:
            self._system_dns = resolve.read_system_servers()
        return self._system_dns


def prepare_module(module: Module, global_policy: access.TargetPolicy | None,
                   shared: _Shared | None = None, caches: Caches | None = None) -> PreparedModule:
    """One module's runtime objects; ConfigError names the key path of what cannot be used."""
    shared = shared or _Shared()
    caches = caches or PROCESS_CACHES
    path = f"modules.{module.name}"
    prepared = PreparedModule(module, caches)
    if module.prober == "kubernetes":
        try:
            api = kubeapi.resolve_api(module.kubernetes.kubeconfig)
        except kubeapi.KubeConfigError as exc:
            raise ConfigError(f"{path}.kubernetes.kubeconfig: {exc}") from None
        prepared = dataclasses.replace(prepared, kube_api=api)
    elif module.prober == "rdap":
        try:
            context = rdap.client_context(module.tls_config)
        except tls.ContextError as exc:
            raise ConfigError(f"{path}.tls_config.{exc.key}: {exc}") from None
        prepared = dataclasses.replace(prepared, ssl_context=context,
                                       policy=access.combine(global_policy, module.target_policy))
    elif module.prober == "tcp":
        prepared = _prepare_tcp(prepared, global_policy, shared, path)
    if module.ari is not None:
        # Requests to the CA obey the module's target_policy; at-rest probers have only the global one.
        policy = prepared.policy if module.prober == "tcp" else access.combine(global_policy)
        try:
            client = ari.client(module.ari, policy, f"{path}.ari", caches.ari)
            prepared = dataclasses.replace(prepared, ari_client=client)
        except AriConfigError as exc:
            raise ConfigError(str(exc)) from None
    return prepared


def _prepare_tcp(prepared: PreparedModule, global_policy: access.TargetPolicy | None, shared: _Shared,
                 path: str) -> PreparedModule:
    module = prepared.settings
    context = shared.client(module.tls_config, path)
    client_cert = _client_cert(module.tls_config, f"{path}.tls_config.cert_file")
    crl_store = None
    stapling_context = None
    if module.revocation is not None:
        try:
            crl_store = revocation.CRLFiles(module.revocation.crl_files)
        except revocation.CRLFileError as exc:
            raise ConfigError(f"{path}.revocation.crl_files: {exc}") from None
        if "stapling" in module.revocation.methods:
            stapling_context = shared.stapling(module.tls_config, path)
    caa_config = module.caa
    if caa_config is not None and not module.tcp.dns_servers:
        caa_config = dataclasses.replace(caa_config, system=shared.system_dns())
    return dataclasses.replace(prepared, ssl_context=context, client_cert=client_cert, crl_store=crl_store,
                               stapling_context=stapling_context, caa=caa_config,
                               policy=access.combine(global_policy, module.target_policy))


def _client_cert(tls_config: TLSConfig, path: str) -> CertInfo | None:
    if not tls_config.cert_file:
        return None
    try:
        with open(tls_config.cert_file, "rb") as f:
            cert = x509.load_pem_x509_certificates(f.read())[0]
        return parse_der(cert.public_bytes(Encoding.DER), {"file": tls_config.cert_file})
    except (OSError, ValueError, CertificateError) as exc:
        raise ConfigError(f"{path}: cannot read the client certificate: {exc}") from None

