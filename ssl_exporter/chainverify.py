"""OpenSSL's verdict on a certificate chain, without a handshake.

The fallback handshake (docs/metrics.md) reads the certificates of a server at security
level 0, where OpenSSL would accept a 512-bit key or an SHA-1 signature. Its verdict must
still be the one a normal probe gives: the system OpenSSL's ``X509_verify_cert`` with the
module's trust store, purpose ``sslserver`` and the probe's security level, as OpenSSL's own
``ssl_verify_cert_chain`` runs it inside a handshake. CPython's ``ssl`` has no call for that,
and cryptography's verifier is not OpenSSL (and pyOpenSSL brings another OpenSSL), so this
module calls the system libcrypto, the very library ``_ssl`` is linked against, through
ctypes. Every pointer it takes is freed before it returns, and OpenSSL's error queue is
cleared so that no stale error reaches ``_ssl``.

When that library cannot be reached (a Python whose ``_ssl`` links OpenSSL statically, a
platform without /proc), :func:`verify` returns None and the verdict is unknown (absent).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

_P = ctypes.c_void_p
# Trust stores loaded, by (file, mtime, size): loading the system bundle takes tens of
# milliseconds, and a failing legacy server is probed on every scrape. A file that changes
# gets a new store; the oldest beyond the bound is freed. Left a module global on purpose
# (issue 14 moved the other caches into prepare.Caches): these are raw OpenSSL pointers freed
# by hand under _LOCK, and a per-Caches owner would need a finalizer freeing them when a
# Caches is dropped, racing verifications in other threads and interpreter shutdown. Nothing
# stale can leak from it: a store is keyed by the file's version, so a changed file (after a
# reload, or in a test) gets a new store.
_STORES: dict[tuple[str | None, int, int], int] = {}
_MAX_STORES = 16
# ctypes releases the GIL during each call: one verification at a time keeps a store from
# being freed while another thread verifies against it.
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ChainVerdict:
    """OpenSSL's verdict on a presented chain (named apart from revocation.Verdict, one
    certificate's revocation status by one method)."""

    verified: list[bytes] | None  # the path OpenSSL built, leaf to root; None when it failed
    tried: list[bytes]  # on failure, the path OpenSSL tried (leaf first)
    verify_code: int | None  # X509_V_ERR_* when verification failed
    verify_message: str


@cache
def _libcrypto() -> ctypes.CDLL | None:
    """The libcrypto ``_ssl`` uses, with the prototypes we call; None if not found."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/libcrypto.so" in line}
    except OSError:
        paths = set()
    candidates = sorted(paths) or [ctypes.util.find_library("crypto") or ""]
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        lib.OpenSSL_version_num.restype = ctypes.c_ulong
        lib.OpenSSL_version_num.argtypes = []
        if lib.OpenSSL_version_num() != ssl.OPENSSL_VERSION_NUMBER:
            continue  # not the library the ssl module uses: its verdict could differ
        try:
            _declare(lib)
        except AttributeError:  # an OpenSSL without one of the calls (before 1.1.1)
            continue
        return lib
    return None


def _declare(lib: ctypes.CDLL) -> None:
    prototypes = {
        "d2i_X509": (_P, [_P, ctypes.POINTER(_P), ctypes.c_long]),
        "i2d_X509": (ctypes.c_int, [_P, ctypes.POINTER(_P)]),
        "X509_free": (None, [_P]),
        "X509_STORE_new": (_P, []),
        "X509_STORE_free": (None, [_P]),
        "X509_STORE_set_default_paths": (ctypes.c_int, [_P]),
        "X509_STORE_load_locations": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_char_p]),
        "X509_STORE_CTX_new": (_P, []),
        "X509_STORE_CTX_free": (None, [_P]),
        "X509_STORE_CTX_init": (ctypes.c_int, [_P, _P, _P, _P]),
        "X509_STORE_CTX_set_default": (ctypes.c_int, [_P, ctypes.c_char_p]),
        "X509_STORE_CTX_get0_param": (_P, [_P]),
        "X509_STORE_CTX_get_error": (ctypes.c_int, [_P]),
        "X509_STORE_CTX_get0_chain": (_P, [_P]),
        "X509_VERIFY_PARAM_set_auth_level": (None, [_P, ctypes.c_int]),
        "X509_VERIFY_PARAM_set_flags": (ctypes.c_int, [_P, ctypes.c_ulong]),
        "X509_verify_cert": (ctypes.c_int, [_P]),
        "X509_verify_cert_error_string": (ctypes.c_char_p, [ctypes.c_long]),
        "OPENSSL_sk_new_null": (_P, []),
        "OPENSSL_sk_push": (ctypes.c_int, [_P, _P]),
        "OPENSSL_sk_free": (None, [_P]),
        "OPENSSL_sk_num": (ctypes.c_int, [_P]),
        "OPENSSL_sk_value": (_P, [_P, ctypes.c_int]),
        "ERR_clear_error": (None, []),
    }
    for name, (restype, argtypes) in prototypes.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes


def available() -> bool:
    return _libcrypto() is not None


def verify(presented: Sequence[bytes], ca_file: str | None, flags: int, security_level: int) -> ChainVerdict | None:
    """Verify ``presented`` (DER, leaf first) as OpenSSL verifies a server's chain.

    ``ca_file`` is the module's trust store (None: the system's default paths, as
    ``load_default_certs`` loads them), ``flags`` the module context's ``verify_flags``.
    None when the library is unavailable, nothing was presented, or OpenSSL cannot decode a
    certificate (the handshake would have failed on it too).
    """
    lib = _libcrypto()
    if lib is None or not presented:
        return None
    with _LOCK:
        return _verify(lib, presented, ca_file, flags, security_level)


def _verify(lib: ctypes.CDLL, presented: Sequence[bytes], ca_file: str | None, flags: int,
            security_level: int) -> ChainVerdict | None:
    certs: list[int] = []
    stack = store_ctx = None
    try:
        for der in presented:
            buffer = ctypes.create_string_buffer(der, len(der))
            cursor = _P(ctypes.addressof(buffer))
            cert = lib.d2i_X509(None, ctypes.byref(cursor), len(der))
            if not cert:
                return None
            certs.append(cert)
        stack = lib.OPENSSL_sk_new_null()
        store = _store(lib, ca_file)
        store_ctx = lib.X509_STORE_CTX_new()
        if not (stack and store and store_ctx):
            return None
        for cert in certs:
            if not lib.OPENSSL_sk_push(stack, cert):
                return None
        if not lib.X509_STORE_CTX_init(store_ctx, store, certs[0], stack):
            return None
        # What ssl_verify_cert_chain sets for a client checking a server (purpose sslserver).
        lib.X509_STORE_CTX_set_default(store_ctx, b"ssl_server")
        param = lib.X509_STORE_CTX_get0_param(store_ctx)
        lib.X509_VERIFY_PARAM_set_auth_level(param, security_level)
        lib.X509_VERIFY_PARAM_set_flags(param, flags)
        ok = lib.X509_verify_cert(store_ctx) == 1
        path = _stack_der(lib, lib.X509_STORE_CTX_get0_chain(store_ctx))
        if ok:
            return ChainVerdict(verified=path, tried=[], verify_code=None, verify_message="")
        code = lib.X509_STORE_CTX_get_error(store_ctx)
        message = (lib.X509_verify_cert_error_string(code) or b"").decode("ascii", "replace")
        return ChainVerdict(verified=None, tried=path, verify_code=code, verify_message=message)
    finally:
        if store_ctx:
            lib.X509_STORE_CTX_free(store_ctx)
        if stack:
            lib.OPENSSL_sk_free(stack)  # the stack only; the certificates are freed below
        for cert in certs:
            lib.X509_free(cert)
        lib.ERR_clear_error()


def _store(lib: ctypes.CDLL, ca_file: str | None) -> int | None:
    """The trust store of ``ca_file``, or the system's default paths, loaded once per version."""
    path = ca_file or ssl.get_default_verify_paths().cafile
    try:
        stat = os.stat(path) if path else None
    except OSError:
        stat = None
    key = (ca_file, stat.st_mtime_ns if stat else 0, stat.st_size if stat else 0)
    if key in _STORES:
        return _STORES[key]
    store: int | None = lib.X509_STORE_new()  # c_void_p: an address, or None for NULL
    if not store:
        return None
    loaded = (lib.X509_STORE_load_locations(store, os.fsencode(ca_file), None) if ca_file
              else lib.X509_STORE_set_default_paths(store))
    if not loaded:
        lib.X509_STORE_free(store)
        return None
    for stale in [k for k in _STORES if k[0] == ca_file] + list(_STORES)[: max(0, len(_STORES) + 1 - _MAX_STORES)]:
        if stale in _STORES:
            lib.X509_STORE_free(_STORES.pop(stale))
    _STORES[key] = store
    return store


def _stack_der(lib: ctypes.CDLL, stack: int | None) -> list[bytes]:
    if not stack:
        return []
    ders = []
    for index in range(lib.OPENSSL_sk_num(stack)):
        cert = lib.OPENSSL_sk_value(stack, index)
        size = lib.i2d_X509(cert, None)
        if size <= 0:
            continue
        buffer = ctypes.create_string_buffer(size)
        cursor = _P(ctypes.addressof(buffer))
        lib.i2d_X509(cert, ctypes.byref(cursor))
        ders.append(buffer.raw[:size])
    return ders
