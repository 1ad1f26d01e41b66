"""The ``file`` prober: certificates in files matched by a path or glob.

The target is an absolute path or glob (``*``, ``?``, ``[...]`` within a name, ``**`` for
any number of folders). Parsed results are cached by (path, device, inode, size, mtime),
so a scrape over thousands of unchanged files costs one ``stat`` per file. All file work
runs in a thread of the prober's own ReadPool: it never blocks the event loop, a slow file
system cannot starve the default executor (DNS resolution) of threads, and a probe that
times out stops its walk or read at the next checkpoint.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from ssl_exporter import lru
from ssl_exporter.certs import CertificateError, parse_der, size_of
from ssl_exporter.config import Module
from ssl_exporter.probers.base import Prober, ProbeRecorder, ReadPool, checkpoint
from ssl_exporter.result import CertInfo, ReadError
from ssl_exporter.safeyaml import clip
from ssl_exporter.sources import SourceError, decode_certificates, read_regular
from ssl_exporter.targets import TargetError

# Files larger than this are not certificate files; reading them would only cost memory.
MAX_FILE_BYTES = 4 * 1024 * 1024
# Matches per probe: a glob that matches more is almost certainly a mistake.
MAX_FILES = 100_000
# Folders and files a walk may visit, matching or not, before it gives up.
MAX_WALK_ENTRIES = 10 * MAX_FILES
# Symlinked folders a glob's wildcards may lead through on one path (``**`` follows none):
# enough for real layouts, and a folder linking to itself cannot multiply the walk.
MAX_SYMLINKED_FOLDERS = 4
# Certificates in one answer: each costs ~2 KB of metrics, and the answer is built in memory.
MAX_CERTS = 10_000
_GLOB_CHARS = re.compile(r"[*?[]")

# File work (walks, reads, parsing): threads of its own, not the default executor.
FILE_POOL = ReadPool("file")
_T = TypeVar("_T")


async def run_read(func: Callable[..., _T], *args: object) -> _T:
    """``func(*args)`` in a file-prober read thread, without a deadline of its own."""
    return await FILE_POOL.run(None, func, *args)


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
        raise TargetError(f"target {clip(raw)!r} contains a NUL character")
    if not os.path.isabs(path):
        raise TargetError(f"target {clip(raw)!r}: the file prober needs an absolute path or glob")
    if module is not None and module.file.roots:
        check_inside_roots(path, module.file.roots + module.file.resolved_roots)
    if not _GLOB_CHARS.search(path):
        return os.path.normpath(path)
    if "**" in path:
        try:
            re.compile(_glob_regex(path))
        except re.error as exc:
            raise TargetError(f"target {clip(raw)!r} is not a valid glob: {exc}") from None
    return path


def check_inside_roots(path: str, roots: tuple[str, ...]) -> None:
    """TargetError unless ``path`` (a path or glob) lies, as written, under one of ``roots``.

    Decided on the text alone, before any file system call: a ``..`` component is refused
    outright (after a symlink it would not mean what it seems), and so are wildcards in the
    part that must equal a root. Symlinks that lead out are refused when a file is read.
    """
    parts = path.split("/")
    if ".." in parts:
        raise TargetError(f"target {clip(path)!r}: '..' is not allowed when file.roots is set")
    normal = os.path.normpath(path)
    if not any(_under(normal, root) and not _GLOB_CHARS.search(normal[: len(root)]) for root in roots):
        raise TargetError(f"target {clip(path)!r} is outside this module's file.roots")


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _resolves_inside(path: str, roots: tuple[str, ...]) -> bool:
    # roots were resolved (realpath) at config load.
    return any(_under(os.path.realpath(path), root) for root in roots)


async def probe(rec: ProbeRecorder, module: Module, pattern: str, _name: str) -> None:
    password = module.file.pkcs12_password.encode() if module.file.pkcs12_password else None
    with rec.phase("read"):
        results = await FILE_POOL.run(rec.deadline, read_files, pattern, password, CACHE,
                                     module.file.resolved_roots)
    record_results(rec, results, what=f"{pattern}")


def record_results(rec: ProbeRecorder, results: list[FileResult], what: str) -> None:
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


def read_files(pattern: str, password: bytes | None, cache: ParseCache,
               roots: tuple[str, ...] = ()) -> list[FileResult]:
    """Read every file ``pattern`` matches; one FileResult per file, in path order.

    Stops, with an ``oversized`` error, past MAX_FILES matches or once the files read hold
    more than MAX_CERTS certificates (the answer would drop them anyway)."""
    if not _GLOB_CHARS.search(pattern):
        return [read_file(pattern, password, cache, roots)]
    results = []
    certs = 0
    try:
        for count, path in enumerate(expand(pattern)):
            if count >= MAX_FILES:
                results.append(FileResult(error=ReadError({"file": pattern}, "oversized",
                                                          f"more than {MAX_FILES} files match")))
                break
            checkpoint()
            result = read_file(path, password, cache, roots)
            results.append(result)
            certs += len(result.certs)
            if certs > MAX_CERTS:
                results.append(FileResult(error=ReadError({"file": pattern}, "oversized",
                                                          f"more than {MAX_CERTS} certificates in the files "
                                                          f"matched up to {path}")))
                break
    except OversizedGlob:
        results.append(FileResult(error=ReadError({"file": pattern}, "oversized",
                                                  f"more than {MAX_WALK_ENTRIES} folders and files to walk")))
    return results


def read_file(path: str, password: bytes | None, cache: ParseCache, roots: tuple[str, ...] = ()) -> FileResult:
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
    cached = cache.get(key)
    if cached is not None:
        return cached
    if roots and not _resolves_inside(path, roots):
        return FileResult(error=ReadError(source, "permission_denied", "a symlink leads outside file.roots"))
    result = _parse_file(path, info.st_size, password, roots)
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


def expand(pattern: str) -> Iterator[str]:
    """Paths matching ``pattern``, sorted, found lazily: the walk stops after MAX_FILES + 1
    matches (enough for the caller to report "too many"), raises OversizedGlob after
    MAX_WALK_ENTRIES folders and files, matching or not, and stops at the probe's deadline
    (``checkpoint``) as it goes.

    ``**`` descends into folders but not into symlinked folders (no loops) nor hidden ones
    (Kubernetes' ``..data`` copies), as shell globs do; symlinked files are followed. Other
    wildcards follow symlinked folders, at most MAX_SYMLINKED_FOLDERS on one path."""
    found: list[str] = []
    walk = _double_star_walk(pattern) if "**" in pattern else _glob_walk(pattern)
    for path in walk:
        found.append(path)
        if len(found) > MAX_FILES:
            break
    yield from sorted(found)


class _Budget:
    """Entries a walk has visited; OversizedGlob past MAX_WALK_ENTRIES."""

    def __init__(self, pattern: str) -> None:
        self.pattern, self.visited = pattern, 0

    def spend(self, entries: int) -> None:
        self.visited += entries
        if self.visited > MAX_WALK_ENTRIES:
            raise OversizedGlob(self.pattern)
        if self.visited & 0xFF == 0 or entries > 1:
            checkpoint()


def _double_star_walk(pattern: str) -> Iterator[str]:
    matcher = re.compile(_glob_regex(pattern))
    budget = _Budget(pattern)
    for folder, dirs, files in os.walk(_fixed_prefix(pattern), followlinks=False):
        budget.spend(1 + len(dirs) + len(files))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith("."):
                continue
            path = os.path.join(folder, name)
            if matcher.fullmatch(path):
                yield path
        # A symlinked folder is listed in dirs but not walked; a symlinked file is in files.


def _glob_walk(pattern: str) -> Iterator[str]:
    """What glob.glob(pattern) finds, one folder at a time, instead of all at once."""
    parts = pattern.split("/")
    first = next(i for i, part in enumerate(parts) if _GLOB_CHARS.search(part))
    budget = _Budget(pattern)
    # (folder, index of the part to match in it, symlinked folders passed through so far)
    stack: list[tuple[str, int, int]] = [("/".join(parts[:first]) or "/", first, 0)]
    while stack:
        folder, index, links = stack.pop()
        part, last = parts[index], index == len(parts) - 1
        if not _GLOB_CHARS.search(part):  # a literal part: the kernel resolves it
            path = os.path.join(folder, part)
            if last:
                if os.path.lexists(path):
                    yield path
            else:
                stack.append((path, index + 1, links))
            continue
        matches = []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    budget.spend(1)
                    hidden = entry.name.startswith(".") and not part.startswith(".")
                    if not hidden and fnmatch.fnmatchcase(entry.name, part):
                        matches.append(entry)
                        if last and len(matches) > MAX_FILES:  # the caller stops here anyway
                            break
        except OSError:
            continue  # not a folder, gone, or unreadable: nothing matches under it
        matches.sort(key=lambda entry: entry.name)
        if last:
            yield from (os.path.join(folder, entry.name) for entry in matches)
            continue
        below = []
        for entry in matches:
            try:
                if not entry.is_dir():
                    continue
                link = entry.is_symlink()
            except OSError:
                continue
            if link and links >= MAX_SYMLINKED_FOLDERS:
                continue
            below.append((os.path.join(folder, entry.name), index + 1, links + link))
        stack.extend(reversed(below))


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


PROBER = Prober(parse_target=parse_target, probe=probe, default_server_name=lambda target: "", rule="certificates")
