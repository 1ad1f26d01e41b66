"""The one byte-bounded LRU cache: both bounds, recency, expiry and oversized entries."""

import sys
import threading

import pytest

from ssl_exporter import lru
from ssl_exporter.lru import ByteLRU


def test_evicts_least_recently_used_until_the_byte_budget_holds() -> None:
    cache: ByteLRU[str] = ByteLRU(max_bytes=100)
    cache.put("a", "A", 40)
    cache.put("b", "B", 40)
    assert cache.get("a") == "A"  # "b" is now the least recently used
    cache.put("c", "C", 40)
    assert ("a" in cache, "b" in cache, "c" in cache) == (True, False, True)
    assert cache.bytes == 80


def test_entry_count_bound_applies_too() -> None:
    cache: ByteLRU[int] = ByteLRU(max_bytes=10**6, max_entries=2)
    for n in range(5):
        cache.put(n, n, 1)
    assert len(cache) == 2 and cache.get(3) == 3 and cache.get(4) == 4 and cache.get(2) is None


def test_an_entry_larger_than_the_budget_is_not_kept_and_evicts_nothing() -> None:
    cache: ByteLRU[str] = ByteLRU(max_bytes=100)
    cache.put("small", "s", 10)
    cache.put("huge", "h", 101)
    assert cache.get("huge") is None and cache.get("small") == "s" and cache.bytes == 10


def test_replacing_a_key_counts_its_size_once() -> None:
    cache: ByteLRU[str] = ByteLRU(max_bytes=100)
    cache.put("k", "v1", 60)
    cache.put("k", "v2", 70)
    assert cache.get("k") == "v2" and cache.bytes == 70 and len(cache) == 1


def test_expired_entries_are_dropped_on_get() -> None:
    cache: ByteLRU[str] = ByteLRU(max_bytes=100)
    cache.put("k", "v", 10, expires=50.0)
    assert cache.get("k", now=49.0) == "v"
    assert cache.get("k", now=50.0) is None and cache.bytes == 0


def test_resize_evicts_at_once_and_peek_keeps_recency() -> None:
    cache: ByteLRU[str] = ByteLRU(max_bytes=100)
    for key in "abc":
        cache.put(key, key.upper(), 30)
    assert cache.peek("a") == "A"  # not made recent: "a" is still the oldest
    cache.resize(60)
    assert (cache.values(), cache.bytes) == (["B", "C"], 60)


def test_the_budget_is_split_among_budgeted_caches_and_resized_with_them() -> None:
    total = lru.budget()
    cache: ByteLRU[str] = lru.budgeted("certs")
    try:
        lru.set_budget(1000)
        assert cache.max_bytes == lru.share("certs") == int(1000 * lru.SHARES["certs"])
        assert cache in lru.caches()
    finally:
        lru.set_budget(total)
    assert cache.max_bytes == int(total * lru.SHARES["certs"])
    assert sum(lru.SHARES.values()) <= 1.0


def test_sizes_parse_with_units_and_refuse_anything_else() -> None:
    assert [lru.parse_size(t) for t in ("1000", "64MiB", "512KB", "1 GiB", "2kib")] == [
        1000, 64 * 2**20, 512_000, 2**30, 2048]
    for bad in ("", "MiB", "-1", "1.5MiB", "64 MiBs", "١٢", "9" * 5000):
        with pytest.raises(ValueError):
            lru.parse_size(bad)


def test_concurrent_use_from_threads_keeps_the_byte_count_exact() -> None:
    cache: ByteLRU[int] = ByteLRU(max_bytes=1000)

    def hammer(seed: int) -> None:
        for i in range(5000):
            cache.put((seed, i % 50), i, 7)
            cache.get((seed, (i * 7) % 50))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert cache.bytes == 7 * len(cache) <= 1000
