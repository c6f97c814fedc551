"""The response cache engine: a byte-bounded LRU of responses with a time to live.

One engine serves API Gateway's stage cache now (Amazon API Gateway Developer Guide, "Enable API caching
for REST APIs in API Gateway": TTL 0..3600 s, entries up to 1,048,576 bytes, a capacity per stage) and the
edge cache of distributions later (CloudFront), so it knows nothing of either: keys are opaque bytes built
by lbd/cache/keys.py, and the caller decides the TTL. Pure: no I/O, no event loop, an injected clock.

Accounting: an entry costs its key, its body, its header names and values and ENTRY_OVERHEAD (a fixed
estimate of the Python objects around them), so ``capacity_bytes`` bounds what the cache holds rather
than only the bodies. Eviction is least recently used (a hit or a put makes an entry the most recent);
expired entries are dropped lazily, when a lookup meets them or when the LRU end reaches them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from lbd.cache.response import CachedResponse

Clock = Callable[[], float]  # time.time, or a test's injected clock

# What an entry costs besides its bytes: the dict slot, the entry object and the response object, roughly
# (CPython 3.11, 64-bit). An estimate, so that a cache full of tiny responses is bounded too.
ENTRY_OVERHEAD = 200


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters since the cache was made (hits, misses, evictions, expirations) and its size now."""

    hits: int
    misses: int
    evictions: int  # dropped to make room (LRU)
    expirations: int  # dropped because their TTL had passed
    entries: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Lookup:
    """An entry as ``lookup`` finds it, fresh or (within the asked staleness) stale."""

    response: CachedResponse
    expires_at: float
    fresh: bool


@dataclass(slots=True)
class _Entry:
    response: CachedResponse
    expires_at: float
    size: int


def entry_size(key: bytes, response: CachedResponse) -> int:
    return len(key) + response.size + ENTRY_OVERHEAD


class ResponseCache:
    def __init__(self, capacity_bytes: int, max_entry_bytes: int, clock: Clock) -> None:
        if capacity_bytes < 0 or max_entry_bytes < 0:
            raise ValueError("cache sizes must not be negative")
        self.capacity_bytes = capacity_bytes
        self.max_entry_bytes = max_entry_bytes
        self.clock = clock
        # Least recently used first: move_to_end on every hit and put keeps the order.
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._expirations = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.expires_at > self.clock()

    @property
    def stats(self) -> CacheStats:
        return CacheStats(
            hits=self._hits,
            misses=self._misses,
            evictions=self._evictions,
            expirations=self._expirations,
            entries=len(self._entries),
            bytes=self._bytes,
        )

    def get(self, key: bytes) -> CachedResponse | None:
        """The fresh response under ``key`` (a hit), or None (a miss: absent or expired)."""
        entry = self._entries.get(key)
        if entry is not None:
            if entry.expires_at > self.clock():
                self._entries.move_to_end(key)
                self._hits += 1
                return entry.response
            self._drop(key, entry)
            self._expirations += 1
        self._misses += 1
        return None

    def fresh(self, key: bytes, now: float) -> CachedResponse | None:
        """The response under ``key`` when it is fresh at ``now`` (a hit: counted, made the most recent);
        None otherwise, with nothing counted or dropped, for the caller's ``lookup`` to do (the edge's
        hits answered from one read, lbd/edge/hit.py)."""
        entry = self._entries.get(key)
        if entry is None or entry.expires_at <= now:
            return None
        self._entries.move_to_end(key)
        self._hits += 1
        return entry.response

    def lookup(self, key: bytes, max_stale: float = 0.0) -> Lookup | None:
        """The entry under ``key`` even if it expired less than ``max_stale`` seconds ago (an edge cache
        serving stale content while the origin fails, CloudFront's stale-if-error), counted as a hit when
        fresh and a miss otherwise; the caller decides whether to serve a stale one. Entries stale for
        longer are dropped."""
        entry = self._entries.get(key)
        now = self.clock()
        if entry is None:
            self._misses += 1
            return None
        if entry.expires_at + max_stale <= now:
            self._drop(key, entry)
            self._expirations += 1
            self._misses += 1
            return None
        fresh = entry.expires_at > now
        self._entries.move_to_end(key)
        if fresh:
            self._hits += 1
        else:
            self._misses += 1
        return Lookup(entry.response, entry.expires_at, fresh)

    def put(self, key: bytes, response: CachedResponse, ttl: float) -> bool:
        """Store ``response`` for ``ttl`` seconds, replacing what ``key`` held, evicting the least recently
        used entries to make room. False (and nothing stored, the old entry under ``key`` dropped) when
        ``ttl`` <= 0 or the response is larger than ``max_entry_bytes`` or than the whole cache."""
        old = self._entries.get(key)
        if old is not None:
            self._drop(key, old)
        size = entry_size(key, response)
        if ttl <= 0 or response.size > self.max_entry_bytes or size > self.capacity_bytes:
            return False
        self._make_room(size)
        self._entries[key] = _Entry(response, self.clock() + ttl, size)
        self._bytes += size
        return True

    def delete(self, key: bytes) -> bool:
        entry = self._entries.get(key)
        if entry is None:
            return False
        self._drop(key, entry)
        return True

    def delete_prefix(self, prefix: bytes) -> int:
        """Drop every entry whose key starts with ``prefix`` (one API's or one stage's entries: see
        keys.stage_prefix); returns how many. A scan of every entry: flushes are rare, lookups are not."""
        return self.delete_where(lambda key: key.startswith(prefix))

    def delete_where(self, matches: Callable[[bytes], bool]) -> int:
        """Drop every entry whose key ``matches`` (an edge cache's invalidation paths); returns how many."""
        doomed = [key for key in self._entries if matches(key)]
        for key in doomed:
            self._drop(key, self._entries[key])
        return len(doomed)

    def flush(self) -> int:
        count = len(self._entries)
        self._entries.clear()
        self._bytes = 0
        return count

    def resize(self, capacity_bytes: int, max_entry_bytes: int | None = None) -> None:
        """Take new limits (a reload that changed capacity_mb keeps what still fits): the least recently
        used entries go until the rest fits, and entries over a lower ``max_entry_bytes`` go too."""
        if capacity_bytes < 0 or (max_entry_bytes is not None and max_entry_bytes < 0):
            raise ValueError("cache sizes must not be negative")
        self.capacity_bytes = capacity_bytes
        if max_entry_bytes is not None and max_entry_bytes < self.max_entry_bytes:
            self.max_entry_bytes = max_entry_bytes
            oversize = [key for key, entry in self._entries.items() if entry.response.size > max_entry_bytes]
            for key in oversize:
                self._drop(key, self._entries[key])
        elif max_entry_bytes is not None:
            self.max_entry_bytes = max_entry_bytes
        self._make_room(0)

    def _make_room(self, size: int) -> None:
        now = self.clock()
        while self._entries and self._bytes + size > self.capacity_bytes:
            _, entry = self._entries.popitem(last=False)
            self._bytes -= entry.size
            if entry.expires_at > now:
                self._evictions += 1
            else:
                self._expirations += 1

    def _drop(self, key: bytes, entry: _Entry) -> None:
        del self._entries[key]
        self._bytes -= entry.size
