"""One least-recently-used cache for the whole package, bounded in bytes as well as entries.

Every cache that holds data derived from what servers or files presented (parsed
certificates, rendered metric lines, revocation answers, CRLs) must be bounded by what it
costs in memory, not only by how many entries it has: a hostile server can make each entry
arbitrarily large. Callers state each entry's size; the cache evicts the least recently used
entries until both bounds hold again, and drops an entry larger than the whole budget at once.
Entries may carry an expiry time, checked on ``get``.

The caches share one total budget (``--cache.max-bytes``, :data:`DEFAULT_BUDGET`), split by
:data:`SHARES`: a cache made with :func:`budgeted` gets its share, and :func:`set_budget`
resizes every such cache at once. Caches are safe to use from several threads (the read
threads of the file and Kubernetes probers, the encoding threads of large answers).
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, Generic, NamedTuple, TypeVar

V = TypeVar("V")

_NEVER = float("inf")

# 256 MiB: a 10,000-file tree's parsed files and rendered lines (about 3 KB each per
# certificate), 64 MiB of CRLs and room for everything else; see docs/robustness.md. These
# are ceilings: an exporter holds what its probes left, far less at rest.
DEFAULT_BUDGET = 256 * 1024 * 1024
# The total budget's split.
SHARES = {
    "certs": 0.08,  # parsed presented certificates (certs.py), by DER
    "cert_lines": 0.17,  # rendered certificate sample lines (metrics.py)
    "lint": 0.02,  # certificate-depth facts (lint.py), by digest
    "files": 0.17,  # parsed certificate files (containers.py), by path and inode
    "history": 0.07,  # the recent-probes history (history.py)
    "ocsp": 0.06,  # verified OCSP and CRL answers (revocation.py)
    "crls": 0.25,  # downloaded CRLs, parsed (revocation.py)
    "rdap": 0.12,  # domain registration answers (rdap.py)
    "ari": 0.06,  # ACME renewal windows and directories (ari.py)
}


class _Entry(NamedTuple, Generic[V]):
    value: V
    size: int
    expires: float


class ByteLRU(Generic[V]):
    """At most ``max_bytes`` of stated entry sizes and at most ``max_entries`` entries."""

    def __init__(self, max_bytes: int, max_entries: int | None = None, name: str = "") -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.name = name
        self._entries: OrderedDict[Hashable, _Entry[V]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, now: float = 0.0) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.expires <= now:
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return entry.value

    def peek(self, key: Hashable) -> V | None:
        """The value held for ``key``, without making it recently used (nor expiring it)."""
        with self._lock:
            entry = self._entries.get(key)
            return None if entry is None else entry.value

    def put(self, key: Hashable, value: V, size: int, expires: float = _NEVER) -> None:
        with self._lock:
            if key in self._entries:
                self._drop(key)
            if size > self.max_bytes:
                return  # larger than the whole budget: keeping it would evict everything else
            self._entries[key] = _Entry(value, size, expires)
            self._bytes += size
            self._evict()

    def resize(self, max_bytes: int) -> None:
        """A new byte bound, evicting at once what no longer fits."""
        with self._lock:
            self.max_bytes = max_bytes
            self._evict()

    def values(self) -> list[V]:
        """The values held, least recently used first."""
        with self._lock:
            return [entry.value for entry in self._entries.values()]

    def _evict(self) -> None:
        while self._entries and (self._bytes > self.max_bytes
                                 or (self.max_entries is not None and len(self._entries) > self.max_entries)):
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.size

    def _drop(self, key: Hashable) -> None:
        self._bytes -= self._entries.pop(key).size

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    @property
    def bytes(self) -> int:
        """The sum of the sizes stated for the entries held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries


def text_size(*parts: str | bytes) -> int:
    """A cheap, slightly generous estimate of what strings and byte strings cost in memory."""
    return sum(sys.getsizeof(part) for part in parts)


# --- the shared budget -------------------------------------------------------------------

_budget = DEFAULT_BUDGET
_caches: weakref.WeakSet[ByteLRU[Any]] = weakref.WeakSet()  # every cache, whatever it holds


def share(name: str) -> int:
    """The bytes cache ``name`` (a key of SHARES) may hold under the current total budget."""
    return int(_budget * SHARES[name])


def budgeted(name: str, max_entries: int | None = None) -> ByteLRU[V]:
    """A cache holding at most its share ``name`` of the total budget, resized with it."""
    cache: ByteLRU[V] = ByteLRU(share(name), max_entries, name)
    _caches.add(cache)
    return cache


def set_budget(total_bytes: int) -> None:
    """Split ``total_bytes`` among every budgeted cache (``--cache.max-bytes``)."""
    global _budget
    if total_bytes < 0:
        raise ValueError("the cache budget must not be negative")
    _budget = total_bytes
    for cache in list(_caches):
        cache.resize(share(cache.name))


def budget() -> int:
    return _budget


def caches() -> list[ByteLRU[object]]:
    """Every budgeted cache alive now, for the exporter's own metrics."""
    return sorted(_caches, key=lambda cache: cache.name)


_SIZE_UNITS = {"": 1, "B": 1, "KB": 1000, "KIB": 1024, "MB": 1000**2, "MIB": 1024**2, "GB": 1000**3, "GIB": 1024**3}


def parse_size(text: str) -> int:
    """'64MiB' -> 67108864; a plain number is bytes. ValueError when it is not a size."""
    stripped = text.strip()
    digits = stripped.rstrip("BbKkMmGgIi")
    unit = stripped[len(digits):].strip().upper()
    if not digits.strip().isascii() or not digits.strip().isdigit() or unit not in _SIZE_UNITS:
        raise ValueError(f"{text[:40]!r} is not a size such as 64MiB, 512KB or 1000000")
    return int(digits) * _SIZE_UNITS[unit]
