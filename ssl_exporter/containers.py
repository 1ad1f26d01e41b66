"""Certificate containers read at rest, shared by the at-rest probers (file, kubeconfig,
kubernetes): one file, Secret key or kubeconfig entry -> a :class:`FileResult`.

- :func:`parse_container`: the certificates of one container's bytes (PEM, DER, PKCS#7,
  PKCS#12, ... as ssl_exporter.sources decodes them), or why there are none.
- :func:`read_file`: one file, bounded in bytes, parsed once per (path, device, inode,
  size, mtime, password, roots) thanks to a :class:`ParseCache` (one per process:
  ssl_exporter.prepare.Caches).
- :func:`record_results`: what the containers yielded, put on the probe's recorder.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from ssl_exporter import lru
from ssl_exporter.certs import CertificateError, parse_der, size_of
from ssl_exporter.result import CertInfo, ReadError
from ssl_exporter.sources import SourceError, decode_certificates, read_regular

# Files larger than this are not certificate files; reading them would only cost memory.
MAX_FILE_BYTES = 4 * 1024 * 1024
# Parsed results kept: twice the file prober's MAX_FILES matches per probe.
MAX_CACHED_FILES = 200_000
# Certificates in one answer: each costs ~2 KB of metrics, and the answer is built in memory.
MAX_CERTS = 10_000


class Recorder(Protocol):
    """What :func:`record_results` writes: a probe's recorder (ssl_exporter.probers.base),
    named by its shape so that this module stays below the probers."""

    certs: tuple[CertInfo, ...]
    positions: tuple[str, ...]
    read_errors: tuple[ReadError, ...]

    def note(self, message: str) -> None: ...

    def fail(self, stage: str, reason: str, detail: str = "") -> None: ...


@dataclass(frozen=True)
class FileResult:
    """What one file yielded: its certificates, or why it yielded none."""

    certs: tuple[CertInfo, ...] = ()
    error: ReadError | None = None


class ParseCache:
    """Parsed files by (path, device, inode, size, mtime, password), least recently used out,
    bounded in bytes by the files' share of ``--cache.max-bytes`` (:mod:`ssl_exporter.lru`)."""

    def __init__(self, max_entries: int = MAX_CACHED_FILES) -> None:
        self._entries: lru.ByteLRU[FileResult] = lru.budgeted("files", max_entries)
        self.hits = self.misses = 0  # approximate: counted outside the cache's lock

    def get(self, key: tuple[object, ...]) -> FileResult | None:
        result = self._entries.get(key)
        if result is None:
            self.misses += 1
        else:
            self.hits += 1
        return result

    def clear(self) -> None:
        self._entries.clear()
        self.hits = self.misses = 0

    def put(self, key: tuple[object, ...], result: FileResult) -> None:
        size = _RESULT_OVERHEAD + lru.text_size(str(key[0])) + sum(size_of(cert) for cert in result.certs)
        if result.error is not None:
            size += lru.text_size(result.error.detail)
        self._entries.put(key, result, size)


_RESULT_OVERHEAD = 512


def is_under(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or lies below it, judged on the text."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def _resolves_inside(path: str, roots: tuple[str, ...]) -> bool:
    # roots were resolved (realpath) at config load.
    return any(is_under(os.path.realpath(path), root) for root in roots)


def record_results(rec: Recorder, results: list[FileResult], what: str) -> None:
    """Put what the sources yielded on the recorder; shared by every at-rest prober.

    At most MAX_CERTS certificates are kept; past that, an ``oversized`` read error says so."""
    certs: list[CertInfo] = []
    positions: list[str] = []
    errors: list[ReadError] = []
    dropped = 0
    for result in results:
        if result.error is not None:
            errors.append(result.error)
            rec.fail("read", result.error.reason, f"{_name(result.error.source)}: {result.error.detail}")
        for position, cert in enumerate(result.certs):
            if len(certs) >= MAX_CERTS:
                dropped += 1
                continue
            certs.append(cert)
            positions.append(str(position))
    if dropped:
        rec.fail("read", "oversized", f"{what}: {len(certs) + dropped} certificates, only the first "
                                      f"{MAX_CERTS} are exported")
    rec.certs, rec.positions, rec.read_errors = tuple(certs), tuple(positions), tuple(errors)
    rec.note(f"{what}: {len(results)} source(s), {len(certs)} certificate(s), {len(errors)} unreadable")
    if not results:
        rec.fail("read", "not_found", f"{what}: nothing matched")


def _name(source: Mapping[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in source.items())


def read_file(path: str, password: bytes | None, cache: ParseCache | None,
              roots: tuple[str, ...] = ()) -> FileResult:
    """One file's certificates; parsed once per version of the file when given a ``cache``."""
    source = {"file": path}
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return FileResult(error=ReadError(source, "not_found", "no such file (or a dangling symlink)"))
    except PermissionError:
        return FileResult(error=ReadError(source, "permission_denied", "cannot stat"))
    except OSError as exc:
        return FileResult(error=ReadError(source, "not_found", exc.strerror or str(exc)))
    if not stat.S_ISREG(info.st_mode):
        return FileResult(error=ReadError(source, "not_found", "not a regular file"))
    # roots in the key: a result cached for a module without roots must not skip the check.
    key = (path, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, password, roots)
    cached = cache.get(key) if cache is not None else None
    if cached is not None:
        return cached
    if roots and not _resolves_inside(path, roots):
        return FileResult(error=ReadError(source, "permission_denied", "a symlink leads outside file.roots"))
    result = _parse_file(path, info.st_size, password, roots)
    if cache is not None:
        cache.put(key, result)
    return result


def _parse_file(path: str, size: int, password: bytes | None, roots: tuple[str, ...] = ()) -> FileResult:
    source = {"file": path}
    if size > MAX_FILE_BYTES:
        return FileResult(error=ReadError(source, "oversized", f"{size} bytes, over {MAX_FILE_BYTES}"))
    try:
        data, _info = read_regular(path, MAX_FILE_BYTES, inside=roots)
    except SourceError as exc:
        return FileResult(error=ReadError(source, exc.reason, str(exc)))
    return parse_container(data, source, os.path.basename(path), password)


def parse_container(data: bytes, source: dict[str, str], name: str, password: bytes | None) -> FileResult:
    """Certificates of one container (file, Secret key, kubeconfig entry) as a FileResult."""
    try:
        ders = decode_certificates(data, name, password)
    except SourceError as exc:
        return FileResult(error=ReadError(source, exc.reason, str(exc)))
    try:
        return FileResult(certs=tuple(parse_der(der, source) for der in ders))
    except CertificateError as exc:
        reason = "bad_pem" if b"-----BEGIN" in data else "bad_der"
        return FileResult(error=ReadError(source, reason, str(exc)))
