"""One least-recently-used cache for the whole package, bounded in bytes as well as entries.

Every cache that holds data derived from what servers or files presented (parsed
certificates, rendered metric lines, revocation answers, CRLs) must be bounded by what it
costs in memory, not only by how many entries it has: a hostile server can make each entry
arbitrarily large. Callers state each entry's size; the cache evicts the least recently used
entries until both bounds hold again, and drops an entry larger than the whole budget at once.
Entries may carry an expiry time, checked on ``get``.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, NamedTuple, TypeVar

V = TypeVar("V")

_NEVER = float("inf")


class _Entry(NamedTuple):
    value: object
    size: int
    expires: float


class ByteLRU(Generic[V]):
    """At most ``max_bytes`` of stated entry sizes and at most ``max_entries`` entries."""

    def __init__(self, max_bytes: int, max_entries: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._bytes = 0

    def get(self, key: Hashable, now: float = 0.0) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= now:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry.value  # type: ignore[return-value]

    def put(self, key: Hashable, value: V, size: int, expires: float = _NEVER) -> None:
        if key in self._entries:
            self._drop(key)
        if size > self.max_bytes:
            return  # larger than the whole budget: keeping it would evict everything else
        self._entries[key] = _Entry(value, size, expires)
        self._bytes += size
        while self._bytes > self.max_bytes or (self.max_entries is not None and len(self._entries) > self.max_entries):
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.size

    def _drop(self, key: Hashable) -> None:
        self._bytes -= self._entries.pop(key).size

    def clear(self) -> None:
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
