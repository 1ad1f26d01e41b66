"""The one byte-bounded LRU cache: both bounds, recency, expiry and oversized entries."""

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
