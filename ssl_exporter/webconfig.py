"""``--web.config.file``: TLS and basic auth for the exporter's own endpoints.

The file is Prometheus' exporter-toolkit web configuration
(https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md), so
one file serves every exporter on a host. What Python's ``ssl`` module cannot do is refused
with a one-line message rather than silently ignored (docs/security.md lists it).

- :func:`load` reads and validates the file once, at start: unknown keys, unreadable or
  mismatched certificate and key, bad bcrypt hashes and headers the toolkit does not allow
  are :class:`WebConfigError`, whose message names the key path and never a secret.
- :class:`ServerTLS` is the listening socket's SSL context. It re-reads the certificate, key
  and client CA files when they change (checked with ``os.stat`` on each new TLS
  connection, in the ClientHello's server-name callback, which swaps in the new context),
  so a rotated certificate is served from the next connection on, without a restart.
- :class:`BasicAuth` checks ``Authorization: Basic``; a successful check is remembered
  (by a keyed SHA-256 of user, hash and password) so a scrape every 15 s costs one bcrypt
  in all, not one per scrape, as exporter-toolkit does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import secrets
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ssl_exporter import yamlrules as rules
from ssl_exporter.tlssettings import TLS_VERSIONS
from ssl_exporter.yamlrules import type_name

log = logging.getLogger(__name__)

# exporter-toolkit's client_auth_type values -> (verify mode, needs a client CA).
# RequestClientCert asks for a certificate and lets every client in whatever it sends: the
# access decision is the same as not asking, and Python's ssl module cannot ask without
# verifying, so it does not ask. RequireAnyClientCert (any certificate, unverified) cannot
# be had at all and is refused rather than weakened.
CLIENT_AUTH = {
    "NoClientCert": (ssl.CERT_NONE, False),
    "RequestClientCert": (ssl.CERT_NONE, False),
    "VerifyClientCertIfGiven": (ssl.CERT_OPTIONAL, True),
    "RequireAndVerifyClientCert": (ssl.CERT_REQUIRED, True),
}
UNSUPPORTED_CLIENT_AUTH = {
    "RequireAnyClientCert": "Python's ssl module cannot accept a client certificate without verifying it; "
                            "use RequireAndVerifyClientCert with client_ca_file",
    "RequireClientCert": "Python's ssl module cannot accept a client certificate without verifying it; "
                         "use RequireAndVerifyClientCert with client_ca_file",
}

# The headers exporter-toolkit lets a web config set, and their allowed values (None: any).
# Private to the toolkit "to ensure consistency in the Prometheus ecosystem"; kept the same.
EXTRA_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit")
TLS_KEYS = ("cert_file", "key_file", "cert", "key", "client_ca_file", "client_ca", "client_auth_type",
            "client_allowed_sans", "min_version", "max_version", "cipher_suites", "prefer_server_cipher_suites",
            "curve_preferences")
HTTP_KEYS = ("http2", "headers")
# Toolkit keys this exporter cannot honour: refused with the reason, never ignored.
UNSUPPORTED = {
    "rate_limit": "not supported by ssl_exporter; --probe.max-concurrent bounds the probes in flight",
    "tls_server_config.cert": "inline certificates are not supported, use cert_file",
    "tls_server_config.key": "inline keys are not supported, use key_file",
    "tls_server_config.client_allowed_sans": "not supported by ssl_exporter; issue client certificates "
                                             "from a CA that is trusted for this purpose only",
    "tls_server_config.cipher_suites": "not supported by ssl_exporter (OpenSSL's defaults apply)",
    "tls_server_config.curve_preferences": "not supported by ssl_exporter (OpenSSL's defaults apply)",
}

# $2a$, $2b$, $2x$, $2y$ (htpasswd writes $2y$), a two-digit cost, 22 + 31 characters of salt
# and hash in bcrypt's base64 alphabet.
_BCRYPT = re.compile(r"\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}")


class WebConfigError(ValueError):
    """A web configuration that cannot be used; one line, starting with the file and key path."""


@dataclass(frozen=True)
class TLSSettings:
    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    client_ca: str | None = None  # inline PEM
    client_auth_type: str = "NoClientCert"
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    prefer_server_cipher_suites: bool = True

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(f for f in (self.cert_file, self.key_file, self.client_ca_file) if f)


@dataclass(frozen=True)
class WebConfig:
    source: str
    tls: TLSSettings | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # user -> bcrypt hash; repr=False keeps the hashes out of any accidental print.
    users: Mapping[str, str] = field(default_factory=dict, repr=False)
    http2: bool = True  # accepted for compatibility; this server speaks HTTP/1.1


def load(path: str) -> WebConfig:
    """Read and validate a web configuration file, certificates included; WebConfigError if bad."""
    text = rules.read_text(path, WebConfigError)
    try:
        return _parse(text, os.path.dirname(os.path.abspath(path)), path)
    except WebConfigError as exc:
        raise WebConfigError(f"{path}: {exc}") from None


def _parse(text: str, base_dir: str, source: str) -> WebConfig:
    # Only the problem and its place: YAML's own message quotes the file, hashes included.
    raw = rules.load_yaml(text, "", WebConfigError)  # bounded: no alias bombs, no deep nesting
    raw = {} if raw is None else raw
    _expect_mapping(raw, "web config")
    _check_keys(raw, TOP_KEYS, "")
    tls = _parse_tls(raw.get("tls_server_config"), base_dir)
    http = raw.get("http_server_config") or {}
    _expect_mapping(http, "http_server_config")
    _check_keys(http, HTTP_KEYS, "http_server_config")
    http2 = http.get("http2", True)
    if not isinstance(http2, bool):
        raise WebConfigError(f"http_server_config.http2: expected bool, got {type_name(http2)}")
    headers = _parse_headers(http.get("headers") or {})
    users = _parse_users(raw.get("basic_auth_users") or {})
    config = WebConfig(source=source, tls=tls, headers=headers, users=users, http2=http2)
    if tls is not None:
        build_context(tls)  # a certificate that does not load is an error now, not at the first scrape
    return config


def _parse_tls(raw: Any, base_dir: str) -> TLSSettings | None:
    path = "tls_server_config"
    raw = {} if raw is None else raw
    _expect_mapping(raw, path)
    _check_keys(raw, TLS_KEYS, path)
    # As the toolkit: TLS is on when any of these is set, and then certificate and key are required.
    if not any(raw.get(k) for k in ("cert_file", "key_file", "client_ca_file", "client_ca", "client_auth_type")):
        return None
    files: dict[str, str | None] = {}
    for key in ("cert_file", "key_file", "client_ca_file"):
        value = _get(raw, key, str, path)
        if value:
            value = os.path.join(base_dir, os.path.expanduser(value))
            _check_readable(value, f"{path}.{key}")
        files[key] = value or None
    for key in ("cert_file", "key_file"):
        if not files[key]:
            raise WebConfigError(f"{path}.{key}: missing (required when TLS is configured)")
    client_ca = _get(raw, "client_ca", str, path)
    if client_ca and files["client_ca_file"]:
        raise WebConfigError(f"{path}.client_ca: give client_ca or client_ca_file, not both")
    auth = _get(raw, "client_auth_type", str, path) or "NoClientCert"
    if auth in UNSUPPORTED_CLIENT_AUTH:
        raise WebConfigError(f"{path}.client_auth_type: {auth} is not supported: {UNSUPPORTED_CLIENT_AUTH[auth]}")
    if auth not in CLIENT_AUTH:
        expected = ", ".join([*CLIENT_AUTH, *UNSUPPORTED_CLIENT_AUTH][:5])
        raise WebConfigError(f"{path}.client_auth_type: {auth!r} is not one of {expected}")
    has_ca = bool(files["client_ca_file"] or client_ca)
    if has_ca and auth == "NoClientCert":
        raise WebConfigError(f"{path}.client_ca_file: a client CA is configured without a client_auth_type "
                             f"that verifies (VerifyClientCertIfGiven, RequireAndVerifyClientCert)")
    if CLIENT_AUTH[auth][1] and not has_ca:
        raise WebConfigError(f"{path}.client_auth_type: {auth} requires client_ca_file")
    versions = {}
    for key, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        value = _get(raw, key, str, path) or default
        if value not in TLS_VERSIONS:
            raise WebConfigError(f"{path}.{key}: {value!r} is not one of {', '.join(TLS_VERSIONS)}")
        versions[key] = value
    if TLS_VERSIONS[versions["min_version"]] > TLS_VERSIONS[versions["max_version"]]:
        raise WebConfigError(f"{path}.min_version: {versions['min_version']} is above max_version "
                             f"{versions['max_version']}")
    prefer = raw.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        raise WebConfigError(f"{path}.prefer_server_cipher_suites: expected bool, got {type_name(prefer)}")
    return TLSSettings(cert_file=files["cert_file"] or "", key_file=files["key_file"] or "",
                       client_ca_file=files["client_ca_file"], client_ca=client_ca, client_auth_type=auth,
                       prefer_server_cipher_suites=prefer, **versions)


def _parse_headers(raw: Any) -> dict[str, str]:
    path = "http_server_config.headers"
    _expect_mapping(raw, path)
    headers = {}
    for name, value in raw.items():
        if name not in EXTRA_HEADERS:
            raise WebConfigError(f"{path}: HTTP header {name!r} can not be configured (allowed: "
                                 f"{', '.join(EXTRA_HEADERS)})")
        if not isinstance(value, str) or any(ch in value for ch in "\r\n\0"):
            raise WebConfigError(f"{path}.{name}: expected a one-line string")
        allowed = EXTRA_HEADERS[name]
        if allowed is not None and value not in allowed:
            raise WebConfigError(f"{path}.{name}: {value!r} is not one of {', '.join(allowed)}")
        if value:  # the toolkit leaves a blank header unset
            headers[name] = value
    return headers


def _parse_users(raw: Any) -> dict[str, str]:
    path = "basic_auth_users"
    _expect_mapping(raw, path)
    users = {}
    for user, hashed in raw.items():
        if not isinstance(user, str) or not user or ":" in user:
            raise WebConfigError(f"{path}: user names are non-empty strings without ':'")
        # The message never quotes the value: it is a secret, even when malformed.
        if not isinstance(hashed, str):
            raise WebConfigError(f"{path}.{user}: expected a bcrypt hash, got {type_name(hashed)}")
        match = _BCRYPT.fullmatch(hashed)
        if match is None:
            raise WebConfigError(f"{path}.{user}: not a bcrypt hash (like $2y$10$ and 53 characters; "
                                 f"make one with htpasswd -nBC 10 \"\" | tr -d ':\\n')")
        if not 4 <= int(match.group(1)) <= 31:
            raise WebConfigError(f"{path}.{user}: bcrypt cost {int(match.group(1))} is outside 4-31")
        users[user] = hashed
    return users


# --- TLS -----------------------------------------------------------------------------


def build_context(settings: TLSSettings) -> ssl.SSLContext:
    """The server context for ``settings``; WebConfigError with OpenSSL's reason if it fails."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[settings.min_version]
    context.maximum_version = TLS_VERSIONS[settings.max_version]
    if settings.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    _check_pem(settings)  # OpenSSL says "PEM lib" for either file; say which, and why
    try:
        # A password callback that gives none: an encrypted key fails instead of prompting.
        context.load_cert_chain(settings.cert_file, settings.key_file, password=lambda: b"")
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None)
        if reason == "KEY_VALUES_MISMATCH":
            raise WebConfigError(f"tls_server_config.key_file: {settings.key_file} does not match the certificate "
                                 f"in {settings.cert_file}") from None
        raise WebConfigError(f"tls_server_config.cert_file: cannot load the certificate and key "
                             f"({settings.cert_file}, {settings.key_file}): {_ssl_message(exc)}") from None
    mode, _ = CLIENT_AUTH[settings.client_auth_type]
    if settings.client_ca_file or settings.client_ca:
        key = "client_ca_file" if settings.client_ca_file else "client_ca"
        try:
            context.load_verify_locations(cafile=settings.client_ca_file, cadata=settings.client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise WebConfigError(f"tls_server_config.{key}: cannot load the client CA: {_ssl_message(exc)}") from None
    context.verify_mode = mode
    return context


def _check_pem(settings: TLSSettings) -> None:
    try:
        with open(settings.cert_file, "rb") as f:
            x509.load_pem_x509_certificates(f.read())
    except OSError as exc:
        raise WebConfigError(f"tls_server_config.cert_file: cannot read {settings.cert_file}: {exc.strerror}") from None
    except ValueError:
        raise WebConfigError(f"tls_server_config.cert_file: no PEM certificate in {settings.cert_file}") from None
    try:
        with open(settings.key_file, "rb") as f:
            load_pem_private_key(f.read(), password=None)
    except OSError as exc:
        raise WebConfigError(f"tls_server_config.key_file: cannot read {settings.key_file}: {exc.strerror}") from None
    except TypeError:  # "Password was not given but private key is encrypted"
        raise WebConfigError(f"tls_server_config.key_file: {settings.key_file} is encrypted; "
                             f"give the key unencrypted (readable by the exporter only)") from None
    except Exception:  # noqa: BLE001 - ValueError, UnsupportedAlgorithm: say what, never echo the input
        raise WebConfigError(f"tls_server_config.key_file: no PEM private key in {settings.key_file}") from None


def _ssl_message(exc: BaseException) -> str:
    # "[SSL] PEM lib (_ssl.c:3900)" -> "[SSL] PEM lib": OpenSSL's words, never the file's bytes.
    text = str(exc.args[1]) if isinstance(exc, OSError) and len(exc.args) > 1 else str(exc)
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", " ".join(text.split()))


def _stamp(files: tuple[str, ...]) -> tuple[tuple[int, int, int, int] | None, ...]:
    out: list[tuple[int, int, int, int] | None] = []
    for name in files:
        try:
            st = os.stat(name)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(out)


class ServerTLS:
    """The listening context; each new connection gets a context built from the current files.

    The server-name callback runs for every ClientHello (with ``None`` when the client sends
    no SNI) before the certificate is chosen; when a file's inode, size, mtime or ctime
    changed, the context is rebuilt and swapped into the connection. Rebuilding only when
    something changed keeps the cost of a handshake to three ``stat`` calls. A file that does
    not load (a certificate replaced before its key) keeps the previous context and is
    logged; the next change is tried again.
    """

    def __init__(self, settings: TLSSettings) -> None:
        self.settings = settings
        self._stamp = _stamp(settings.files)
        self.context = build_context(settings)
        self._current = self.context
        self.context.sni_callback = self._on_client_hello
        self.reloads = 0

    def current(self) -> ssl.SSLContext:
        stamp = _stamp(self.settings.files)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._current = build_context(self.settings)
            except WebConfigError as exc:
                log.error("cannot reload the web TLS certificate, keeping the previous one",
                          extra={"fields": {"err": str(exc)}})
            else:
                self.reloads += 1
                log.info("web TLS certificate reloaded", extra={"fields": {"cert_file": self.settings.cert_file}})
        return self._current

    def _on_client_hello(self, sslobj: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        try:
            current = self.current()
            if current is not sslobj.context:
                sslobj.context = current
        except Exception:  # noqa: BLE001 - a failing callback would fail every handshake
            log.exception("web TLS: choosing the certificate failed")


# --- basic auth ----------------------------------------------------------------------


class AuthBusy(Exception):
    """More password checks are queued than BasicAuth.MAX_PENDING: answered 429 at once."""


class BasicAuth:
    """``Authorization: Basic`` against bcrypt hashes, with successful checks remembered.

    The cache holds keyed SHA-256 digests of (user, hash, password), never a password; the
    key is random per process, so the digests are of no use outside it. Only successes are
    kept (a wrong password costs a bcrypt each time, as it should) and at most
    ``CACHE_LIMIT`` of them. bcrypt runs in a worker thread, one at a time (as the toolkit
    serialises it), so the event loop keeps serving probes while a hash is checked; at most
    ``MAX_PENDING`` checks run or wait, and a further one is :class:`AuthBusy` (HTTP 429)
    rather than a longer queue in front of the next valid login.

    A failed check costs the same whatever the user name: a known user's hash is checked at
    its cost; an unknown name is checked against the hash of a configured user picked by a
    keyed hash of the name (the same user for the same name, every user as likely), so its
    cost is one of the configured costs in the same proportions, and timing does not tell
    which names exist, even when users have different costs.
    """

    CACHE_LIMIT = 1024
    MAX_PENDING = 16  # bcrypt checks running or waiting; about 1.1 s of work at cost 10

    def __init__(self, users: Mapping[str, str]) -> None:
        import bcrypt  # only needed, and only imported, when basic auth is configured

        self._bcrypt = bcrypt
        self.users = dict(users)
        self._names = sorted(self.users)
        self._key = secrets.token_bytes(32)
        self._ok: set[bytes] = set()
        self._lock = asyncio.Lock()
        self._pending = 0
        self.bcrypt_runs = 0  # for tests and curiosity
        self.bcrypt_work = 0  # sum of 2**cost over the bcrypt runs: the work done, for tests

    def _digest(self, user: str, hashed: str, password: bytes) -> bytes:
        message = b"\0".join((user.encode("utf-8", "surrogateescape"), hashed.encode(), password))
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def stand_in(self, user: str) -> str:
        """The configured user whose hash an unknown ``user`` is checked against."""
        digest = hmac.new(self._key, b"stand-in\0" + user.encode("utf-8", "surrogateescape"), hashlib.sha256)
        return self._names[int.from_bytes(digest.digest()[:8], "big") % len(self._names)]

    async def check(self, header: str | None) -> bool:
        """True when ``header`` names a configured user with the right password; AuthBusy if queued out."""
        credentials = _parse_basic(header)
        if credentials is None or not self._names:
            return False
        user, password = credentials
        hashed = self.users.get(user)
        if hashed is None:
            # The same work as a failed check of the stand-in user; its answer does not count.
            await self._verify(password, self.users[self.stand_in(user)])
            return False
        digest = self._digest(user, hashed, password)
        if digest in self._ok:
            return True
        if not await self._verify(password, hashed):
            return False
        if len(self._ok) >= self.CACHE_LIMIT:
            self._ok.clear()
        self._ok.add(digest)
        return True

    async def _verify(self, password: bytes, hashed: str) -> bool:
        if self._pending >= self.MAX_PENDING:
            raise AuthBusy(f"{self._pending} password checks are queued")
        self._pending += 1
        try:
            async with self._lock:
                self.bcrypt_runs += 1
                self.bcrypt_work += 2 ** int(hashed[4:6])
                return await asyncio.to_thread(self._checkpw, password, hashed.encode())
        finally:
            self._pending -= 1

    def _checkpw(self, password: bytes, hashed: bytes) -> bool:
        try:
            return bool(self._bcrypt.checkpw(password, hashed))
        except ValueError:  # a password over bcrypt's 72 bytes
            return False


def _parse_basic(header: str | None) -> tuple[str, bytes] | None:
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


# --- small validators -------------------------------------------------------------------


def _check_keys(raw: Mapping[str, Any], known: tuple[str, ...], path: str) -> None:
    for key in raw:
        where = f"{path}.{key}" if path else str(key)
        if where in UNSUPPORTED and raw[key] not in (None, "", [], {}):  # empty: nothing asked
            raise WebConfigError(f"{where}: {UNSUPPORTED[where]}")
        if key not in known:
            raise WebConfigError(f"{where}: unknown key (expected one of {', '.join(sorted(known))})")


def _expect_mapping(raw: Any, path: str) -> None:
    rules.expect_mapping(raw, path, WebConfigError)


def _get(raw: Mapping[str, Any], key: str, kind: type, path: str) -> Any:
    return rules.get_typed(raw, key, kind, path, error=WebConfigError)


def _check_readable(filename: str, path: str) -> None:
    rules.check_readable(filename, path, WebConfigError)
