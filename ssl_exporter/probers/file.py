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
from collections.abc import Callable, Iterator
from typing import TypeVar

from ssl_exporter import containers
from ssl_exporter.containers import (
    FileResult,
    ParseCache,
    is_under,
    read_file,
    record_results,
)
from ssl_exporter.prepare import PreparedModule
from ssl_exporter.probers.base import Prober, ProbeRecorder, ReadPool, checkpoint
from ssl_exporter.result import ReadError
from ssl_exporter.safeyaml import clip
from ssl_exporter.targets import TargetError

# Matches per probe: a glob that matches more is almost certainly a mistake.
MAX_FILES = 100_000
# Folders and files a walk may visit, matching or not, before it gives up.
MAX_WALK_ENTRIES = 10 * MAX_FILES
# Symlinked folders a glob's wildcards may lead through on one path (``**`` follows none):
# enough for real layouts, and a folder linking to itself cannot multiply the walk.
MAX_SYMLINKED_FOLDERS = 4
_GLOB_CHARS = re.compile(r"[*?[]")

# File work (walks, reads, parsing): threads of its own, not the default executor.
FILE_POOL = ReadPool("file")
_T = TypeVar("_T")


async def run_read(func: Callable[..., _T], *args: object) -> _T:
    """``func(*args)`` in a file-prober read thread, without a deadline of its own."""
    return await FILE_POOL.run(None, func, *args)


class OversizedGlob(Exception):
    """A ``**`` walk visited more than MAX_WALK_ENTRIES entries."""


def parse_target(raw: str, module: PreparedModule) -> str:
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
    if not any(is_under(normal, root) and not _GLOB_CHARS.search(normal[: len(root)]) for root in roots):
        raise TargetError(f"target {clip(path)!r} is outside this module's file.roots")


async def probe(rec: ProbeRecorder, module: PreparedModule, pattern: str, _name: str) -> None:
    password = module.file.pkcs12_password.encode() if module.file.pkcs12_password else None
    with rec.phase("read"):
        results = await FILE_POOL.run(rec.deadline, read_files, pattern, password, module.caches.files,
                                     module.file.resolved_roots)
    record_results(rec, results, what=f"{pattern}")


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
            if certs > containers.MAX_CERTS:
                results.append(FileResult(error=ReadError({"file": pattern}, "oversized",
                                                          f"more than {containers.MAX_CERTS} certificates in the files "
                                                          f"matched up to {path}")))
                break
    except OversizedGlob:
        results.append(FileResult(error=ReadError({"file": pattern}, "oversized",
                                                  f"more than {MAX_WALK_ENTRIES} folders and files to walk")))
    return results


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
