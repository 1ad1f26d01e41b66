"""The ``file`` prober: certificates in files matched by a path or glob.

The target is an absolute path or glob (``*``, ``?``, ``[...]`` within a name, ``**`` for
any number of folders). Parsed results are cached by (path, device, inode, size, mtime),
so a scrape over thousands of unchanged files costs one ``stat`` per file. All file work
runs in a worker thread of a small pool of its own (``run_read``): it never blocks the event
loop, and a slow file system cannot starve the default executor (DNS resolution) of threads.
"""

from __future__ import annotations

import asyncio
import glob
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from ssl_exporter import lru
from ssl_exporter.certs import CertificateError, parse_der, size_of
from ssl_exporter.config import Module
from ssl_exporter.probers.base import Prober, ProbeRecorder
from ssl_exporter.result import CertInfo, ReadError
from ssl_exporter.sources import SourceError, decode_certificates
from ssl_exporter.targets import TargetError

# Files larger than this are not certificate files; reading them would only cost memory.
MAX_FILE_BYTES = 4 * 1024 * 1024
# Matches per probe: a glob that matches more is almost certainly a mistake.
MAX_FILES = 100_000
# Folders and files a ``**`` walk may visit, matching or not, before it gives up.
MAX_WALK_ENTRIES = 10 * MAX_FILES
_GLOB_CHARS = re.compile(r"[*?[]")

# File and Kubernetes work (walks, reads, parsing): its own threads, not the default executor.
READ_EXECUTOR = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ssl-exporter-read")
_T = TypeVar("_T")


async def run_read(func: Callable[..., _T], *args: object) -> _T:
    """``func(*args)`` in a READ_EXECUTOR thread."""
    return await asyncio.get_running_loop().run_in_executor(READ_EXECUTOR, func, *args)


class OversizedGlob(Exception):
    """A ``**`` walk visited more than MAX_WALK_ENTRIES entries."""


@dataclass(frozen=True)
class FileResult:
    """What one file yielded: its certificates, or why it yielded none."""

    certs: tuple[CertInfo, ...] = ()
    error: ReadError | None = None


class ParseCache:
    """Parsed files by (path, device, inode, size, mtime, password), least recently used out,
    bounded in bytes by the files' share of ``--cache.max-bytes`` (:mod:`ssl_exporter.lru`)."""

    def __init__(self, max_entries: int = 2 * MAX_FILES) -> None:
        self._entries: lru.ByteLRU[FileResult] = lru.budgeted("files", max_entries)
        self.hits = self.misses = 0  # approximate: counted outside the cache's lock

    def get(self, key: tuple[object, ...]) -> FileResult | None:
        result = self._entries.get(key)
        if result is None:
            self.misses += 1
        else:
            self.hits += 1
        return result

    def put(self, key: tuple[object, ...], result: FileResult) -> None:
        size = _RESULT_OVERHEAD + lru.text_size(str(key[0])) + sum(size_of(cert) for cert in result.certs)
        if result.error is not None:
            size += lru.text_size(result.error.detail)
        self._entries.put(key, result, size)


_RESULT_OVERHEAD = 512


CACHE = ParseCache()


def parse_target(raw: str, module: Module) -> str:
    path = raw.strip()
    if not path:
        raise TargetError("target is empty")
    if "\x00" in path:
        raise TargetError(f"target {raw!r} contains a NUL character")
    if not os.path.isabs(path):
        raise TargetError(f"target {raw!r}: the file prober needs an absolute path or glob")
    if not _GLOB_CHARS.search(path):
        return os.path.normpath(path)
    if "**" in path:
        try:
            re.compile(_glob_regex(path))
        except re.error as exc:
            raise TargetError(f"target {raw!r} is not a valid glob: {exc}") from None
    return path


async def probe(rec: ProbeRecorder, module: Module, pattern: str, _name: str) -> None:
    password = module.file.pkcs12_password.encode() if module.file.pkcs12_password else None
    with rec.phase("read"):
        results = await run_read(read_files, pattern, password, CACHE)
    record_results(rec, results, what=f"{pattern}")


def record_results(rec: ProbeRecorder, results: list[FileResult], what: str) -> None:
    """Put what the sources yielded on the recorder; shared by every at-rest prober."""
    certs: list[CertInfo] = []
    positions: list[str] = []
    errors: list[ReadError] = []
    for result in results:
        if result.error is not None:
            errors.append(result.error)
            rec.fail("read", result.error.reason, f"{_name(result.error.source)}: {result.error.detail}")
        for position, cert in enumerate(result.certs):
            certs.append(cert)
            positions.append(str(position))
    rec.certs, rec.positions, rec.read_errors = tuple(certs), tuple(positions), tuple(errors)
    rec.note(f"{what}: {len(results)} source(s), {len(certs)} certificate(s), {len(errors)} unreadable")
    if not results:
        rec.fail("read", "not_found", f"{what}: nothing matched")
    rec.success = bool(certs) and not errors


def _name(source: Mapping[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in source.items())


def read_files(pattern: str, password: bytes | None, cache: ParseCache) -> list[FileResult]:
    """Read every file ``pattern`` matches; one FileResult per file, in path order."""
    if not _GLOB_CHARS.search(pattern):
        return [read_file(pattern, password, cache)]
    results = []
    try:
        for count, path in enumerate(expand(pattern)):
            if count >= MAX_FILES:
                results.append(FileResult(error=ReadError({"file": pattern}, "oversized",
                                                          f"more than {MAX_FILES} files match")))
                break
            results.append(read_file(path, password, cache))
    except OversizedGlob:
        results.append(FileResult(error=ReadError({"file": pattern}, "oversized",
                                                  f"more than {MAX_WALK_ENTRIES} folders and files to walk")))
    return results


def read_file(path: str, password: bytes | None, cache: ParseCache) -> FileResult:
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
    key = (path, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, password)
    cached = cache.get(key)
    if cached is not None:
        return cached
    result = _parse_file(path, info.st_size, password)
    cache.put(key, result)
    return result


def _parse_file(path: str, size: int, password: bytes | None) -> FileResult:
    source = {"file": path}
    if size > MAX_FILE_BYTES:
        return FileResult(error=ReadError(source, "oversized", f"{size} bytes, over {MAX_FILE_BYTES}"))
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except PermissionError:
        return FileResult(error=ReadError(source, "permission_denied", "cannot open for reading"))
    except OSError as exc:
        return FileResult(error=ReadError(source, "not_found", exc.strerror or str(exc)))
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


def expand(pattern: str) -> Iterator[str]:
    """Paths matching ``pattern``, sorted. ``**`` descends into folders but not into
    symlinked folders (no loops) nor hidden ones (Kubernetes' ``..data`` copies), as
    shell globs do; symlinked files are followed. The walk stops after MAX_FILES + 1
    matches (enough for the caller to report "too many"), and raises OversizedGlob after
    MAX_WALK_ENTRIES folders and files, matching or not."""
    if "**" not in pattern:
        yield from sorted(glob.glob(pattern))
        return
    base = _fixed_prefix(pattern)
    matcher = re.compile(_glob_regex(pattern))
    found: list[str] = []
    visited = 0
    for folder, dirs, files in os.walk(base, followlinks=False):
        visited += len(dirs) + len(files)
        if visited > MAX_WALK_ENTRIES:
            raise OversizedGlob(pattern)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith("."):
                continue
            path = os.path.join(folder, name)
            if matcher.fullmatch(path):
                found.append(path)
        # A symlinked folder is listed in dirs but not walked; a symlinked file is in files.
        if len(found) > MAX_FILES:
            break
    yield from sorted(found)


def _fixed_prefix(pattern: str) -> str:
    parts = pattern.split("/")
    fixed = []
    for part in parts:
        if _GLOB_CHARS.search(part):
            break
        fixed.append(part)
    return "/".join(fixed) or "/"


def _glob_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            # As fnmatch does: backslashes and set operators are literal, a leading ^ too.
            body = re.sub(r"([&~|\\])", r"\\\1", body[1:] if negate else body)
            if body.startswith("^") or body.startswith("["):
                body = "\\" + body
            out.append("[" + ("^" if negate else "") + body + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


PROBER = Prober(parse_target=parse_target, probe=probe, default_server_name=lambda target: "")
