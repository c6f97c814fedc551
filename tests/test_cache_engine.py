"""The response cache engine and its keys: pure, no loop, an injected clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbd.cache import CachedResponse, ResponseCache
from lbd.cache.engine import ENTRY_OVERHEAD, entry_size
from lbd.cache.keys import (
    CacheControlAction,
    UnauthorizedCacheControlHeaderStrategy,
    asks_invalidation,
    cache_control_action,
    delta_seconds,
    parse_cache_control,
    stage_key,
    stage_prefix,
)


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def response(body: bytes = b"hello", headers: tuple[tuple[str, str], ...] = ()) -> CachedResponse:
    return CachedResponse(status=200, headers=headers, body=body, stored_at=1_000.0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_hit_after_put_and_miss_when_absent(clock: FakeClock) -> None:
    cache = ResponseCache(capacity_bytes=1 << 20, max_entry_bytes=1 << 20, clock=clock)
    assert cache.get(b"k") is None
    reply = response()
    assert cache.put(b"k", reply, ttl=60)
    assert cache.get(b"k") is reply
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.entries) == (1, 1, 1)
    assert stats.bytes == entry_size(b"k", reply) == 1 + 5 + ENTRY_OVERHEAD


def test_entry_expires_at_its_ttl_and_is_dropped_lazily(clock: FakeClock) -> None:
    cache = ResponseCache(1 << 20, 1 << 20, clock)
    cache.put(b"k", response(), ttl=300)
    clock.now += 299.999
    assert cache.get(b"k") is not None
    clock.now += 0.001
    assert len(cache) == 1  # nothing happens until a lookup meets the entry
    assert cache.get(b"k") is None
    assert len(cache) == 0
    assert cache.stats.expirations == 1
    assert cache.stats.bytes == 0


def test_put_replaces_and_restarts_the_ttl(clock: FakeClock) -> None:
    cache = ResponseCache(1 << 20, 1 << 20, clock)
    cache.put(b"k", response(b"old"), ttl=10)
    clock.now += 5
    cache.put(b"k", response(b"newer"), ttl=10)
    clock.now += 9
    got = cache.get(b"k")
    assert got is not None and got.body == b"newer"
    assert cache.stats.entries == 1
    assert cache.stats.bytes == entry_size(b"k", response(b"newer"))


def test_refused_when_ttl_not_positive_or_larger_than_max_entry(clock: FakeClock) -> None:
    cache = ResponseCache(capacity_bytes=10_000, max_entry_bytes=100, clock=clock)
    assert not cache.put(b"a", response(), ttl=0)
    assert not cache.put(b"a", response(), ttl=-1)
    # The limit counts headers too: 90 body bytes and 11 header bytes are 101.
    assert not cache.put(b"a", response(b"x" * 90, (("etag", '"abcde"'),)), ttl=60)
    assert cache.put(b"a", response(b"x" * 89, (("etag", '"abcde"'),)), ttl=60)
    assert len(cache) == 1
    # A refused replacement drops the old entry: the origin's latest answer is not cacheable.
    assert not cache.put(b"a", response(b"x" * 101), ttl=60)
    assert cache.get(b"a") is None


def test_refused_when_larger_than_the_whole_cache(clock: FakeClock) -> None:
    cache = ResponseCache(capacity_bytes=ENTRY_OVERHEAD + 50, max_entry_bytes=1 << 20, clock=clock)
    cache.put(b"small", response(b"x"), ttl=60)
    assert not cache.put(b"big", response(b"x" * 100), ttl=60)
    assert b"small" in cache  # and nothing was evicted for it


def test_lru_eviction_by_bytes_keeps_the_recently_used(clock: FakeClock) -> None:
    each = entry_size(b"k0", response(b"x" * 100))
    cache = ResponseCache(capacity_bytes=3 * each, max_entry_bytes=1 << 20, clock=clock)
    for i in range(3):
        assert cache.put(b"k%d" % i, response(b"x" * 100), ttl=60)
    assert cache.get(b"k0") is not None  # k0 is now the most recent; k1 the least
    cache.put(b"k3", response(b"x" * 100), ttl=60)
    assert b"k1" not in cache
    assert all(k in cache for k in (b"k0", b"k2", b"k3"))
    assert cache.stats.evictions == 1
    assert cache.stats.bytes == 3 * each
    # A bigger entry pushes out as many as it needs, oldest first.
    cache.put(b"k4", response(b"x" * (100 + each)), ttl=60)
    assert b"k2" not in cache and b"k0" not in cache
    assert b"k3" in cache and b"k4" in cache
    assert cache.stats.evictions == 3
    assert cache.stats.bytes <= cache.capacity_bytes


def test_expired_entries_at_the_lru_end_count_as_expirations(clock: FakeClock) -> None:
    each = entry_size(b"k0", response())
    cache = ResponseCache(capacity_bytes=2 * each, max_entry_bytes=1 << 20, clock=clock)
    cache.put(b"k0", response(), ttl=1)
    cache.put(b"k1", response(), ttl=60)
    clock.now += 2
    cache.put(b"k2", response(), ttl=60)
    assert (cache.stats.evictions, cache.stats.expirations) == (0, 1)


def test_resize_evicts_down_to_the_new_limits(clock: FakeClock) -> None:
    each = entry_size(b"k0", response(b"x" * 100))
    cache = ResponseCache(capacity_bytes=4 * each, max_entry_bytes=1 << 20, clock=clock)
    for i in range(4):
        cache.put(b"k%d" % i, response(b"x" * 100), ttl=60)
    cache.put(b"k9", response(b"x" * 10), ttl=60)  # evicts k0
    cache.get(b"k1")  # k2 is now the least recently used
    cache.resize(3 * each)
    assert [k for k in (b"k1", b"k2", b"k3", b"k9") if k in cache] == [b"k1", b"k3", b"k9"]
    assert cache.stats.bytes <= 3 * each
    cache.resize(3 * each, max_entry_bytes=50)
    assert [k for k in (b"k1", b"k3", b"k9") if k in cache] == [b"k9"]
    assert not cache.put(b"k1", response(b"x" * 100), ttl=60)
    with pytest.raises(ValueError):
        cache.resize(-1)


def test_delete_prefix_flushes_one_stage_only(clock: FakeClock) -> None:
    cache = ResponseCache(1 << 20, 1 << 20, clock)
    keys = {
        ("pets", "prod"): stage_key("pets", "prod", "GET /pets", "GET", ()),
        ("pets", "beta"): stage_key("pets", "beta", "GET /pets", "GET", ()),
        ("petstore", "prod"): stage_key("petstore", "prod", "GET /pets", "GET", ()),
    }
    for key in keys.values():
        cache.put(key, response(), ttl=60)
    assert cache.delete_prefix(stage_prefix("pets", "prod")) == 1
    assert keys[("pets", "prod")] not in cache
    # "pets" is a byte prefix of "petstore", but not of its length-prefixed field.
    assert cache.delete_prefix(stage_prefix("pets")) == 1
    assert keys[("petstore", "prod")] in cache
    assert cache.stats.bytes == entry_size(keys[("petstore", "prod")], response())


def test_delete_and_flush(clock: FakeClock) -> None:
    cache = ResponseCache(1 << 20, 1 << 20, clock)
    for i in range(5):
        cache.put(b"k%d" % i, response(), ttl=60)
    assert cache.delete(b"k0")
    assert not cache.delete(b"k0")
    assert cache.delete_where(lambda key: key.endswith(b"1")) == 1
    assert cache.flush() == 3
    assert (len(cache), cache.stats.bytes) == (0, 0)


def test_lookup_serves_stale_within_the_asked_window(clock: FakeClock) -> None:
    cache = ResponseCache(1 << 20, 1 << 20, clock)
    cache.put(b"k", response(), ttl=10)
    found = cache.lookup(b"k", max_stale=5)
    assert found is not None and found.fresh
    clock.now += 12
    found = cache.lookup(b"k", max_stale=5)
    assert found is not None and not found.fresh and found.expires_at == 1_010.0
    clock.now += 3
    assert cache.lookup(b"k", max_stale=5) is None
    assert len(cache) == 0
    assert (cache.stats.hits, cache.stats.misses) == (1, 2)


def test_age_is_whole_seconds_and_never_negative() -> None:
    reply = CachedResponse(200, (), b"", stored_at=100.0)
    assert reply.age(100.9) == 0
    assert reply.age(161.5) == 61
    assert reply.age(99.0) == 0


def test_cached_response_is_frozen() -> None:
    reply = response()
    with pytest.raises(AttributeError):
        reply.status = 500  # type: ignore[misc]


# (operation, key number, body size, ttl or clock step)
OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["put", "get", "delete", "tick"]),
        st.integers(0, 7),
        st.integers(0, 400),
        st.integers(-1, 30),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(OPERATIONS)
def test_accounting_matches_a_model_and_stays_within_capacity(
    operations: list[tuple[str, int, int, int]],
) -> None:
    """Against a plain model (key -> body and expiry): the cache never holds more than its capacity, its
    byte count is the sum of its entries, and a hit is always the model's fresh entry."""
    clock = FakeClock()
    capacity = 3 * (ENTRY_OVERHEAD + 200)
    cache = ResponseCache(capacity_bytes=capacity, max_entry_bytes=300, clock=clock)
    stored: dict[bytes, tuple[bytes, float]] = {}
    for op, k, size, number in operations:
        key = b"k%d" % k
        if op == "put":
            accepted = cache.put(key, response(b"x" * size), ttl=number)
            assert accepted == (number > 0 and size <= 300)
            stored.pop(key, None)
            if accepted:
                stored[key] = (b"x" * size, clock.now + number)
        elif op == "get":
            got = cache.get(key)
            if got is not None:
                assert key in stored and got.body == stored[key][0] and stored[key][1] > clock.now
            elif key in stored and stored[key][1] > clock.now:
                assert cache.stats.evictions > 0  # only eviction (for room) takes a fresh entry away
        elif op == "delete":
            cache.delete(key)
            stored.pop(key, None)
        else:
            clock.now += max(number, 0)
        held = list(cache._entries.values())
        assert cache.stats.bytes == sum(entry.size for entry in held) <= capacity
        assert cache.stats.entries == len(held)
        assert set(cache._entries) <= set(stored)


# -- keys ------------------------------------------------------------------------------------------


def test_stage_key_fields_are_unambiguous() -> None:
    base = ("pets", "prod", "GET /pets/{id}", "GET")
    assert stage_key(*base, [("a", "bc")]) != stage_key(*base, [("ab", "c")])
    assert stage_key(*base, [("a", "b"), ("c", "d")]) != stage_key(*base, [("a", "b,c=d")])
    assert stage_key(*base, []) != stage_key(*base, [("", "")])
    assert stage_key("ab", "c", "r", "GET", ()) != stage_key("a", "bc", "r", "GET", ())
    assert stage_key(*base, [("id", "7")]) == stage_key(*base, (("id", "7"),))
    assert stage_key(*base, [("id", "7")]).startswith(stage_prefix("pets", "prod"))
    assert stage_key(*base, [("p", "\udcff")]) != stage_key(*base, [("p", "\udcfe")])


# -- Cache-Control ---------------------------------------------------------------------------------


def test_parse_cache_control() -> None:
    assert parse_cache_control(None) == {}
    assert parse_cache_control("") == {}
    assert parse_cache_control("Max-Age=0, no-cache") == {"max-age": "0", "no-cache": None}
    assert parse_cache_control('private="set-cookie, x-a", max-age=5') == {
        "private": "set-cookie, x-a",
        "max-age": "5",
    }
    assert parse_cache_control('x="a\\"b"') == {"x": 'a"b'}
    assert parse_cache_control("max-age=5, max-age=0") == {"max-age": "5"}
    assert parse_cache_control(" , ,max-age = 0 ,") == {"max-age": "0"}
    assert parse_cache_control("@@@, no-store, =3") == {"no-store": None}


def test_delta_seconds() -> None:
    assert delta_seconds("0") == 0
    assert delta_seconds("0300") == 300
    for bad in (None, "", "-1", "1.5", "abc", "٣"):
        assert delta_seconds(bad) is None


def test_only_max_age_zero_asks_invalidation() -> None:
    assert asks_invalidation("max-age=0")
    assert asks_invalidation("no-transform, MAX-AGE=00")
    for value in (None, "", "no-cache", "max-age=1", "max-age", "max-age=x", "s-maxage=0"):
        assert not asks_invalidation(value)


S = UnauthorizedCacheControlHeaderStrategy


@pytest.mark.parametrize(
    ("header", "required", "authorized", "strategy", "action"),
    [
        (None, True, False, S.FAIL_WITH_403, CacheControlAction.USE_CACHE),
        ("no-cache", True, False, S.FAIL_WITH_403, CacheControlAction.USE_CACHE),
        ("max-age=0", False, False, S.FAIL_WITH_403, CacheControlAction.INVALIDATE),
        ("max-age=0", True, True, S.FAIL_WITH_403, CacheControlAction.INVALIDATE),
        ("max-age=0", True, False, S.FAIL_WITH_403, CacheControlAction.FORBIDDEN),
        ("max-age=0", True, False, S.SUCCEED_WITH_RESPONSE_HEADER, CacheControlAction.IGNORE_WITH_WARNING),
        ("max-age=0", True, False, S.SUCCEED_WITHOUT_RESPONSE_HEADER, CacheControlAction.IGNORE),
    ],
)
def test_cache_control_action(
    header: str | None, required: bool, authorized: bool, strategy: S, action: CacheControlAction
) -> None:
    got = cache_control_action(
        header, require_authorization=required, authorized=authorized, strategy=strategy
    )
    assert got is action
    assert got.uses_cache == (action not in (CacheControlAction.INVALIDATE, CacheControlAction.FORBIDDEN))
