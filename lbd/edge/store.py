"""A worker's edge caches: one per distribution, kept across reloads, with their counters.

Storage is in the worker's memory: each worker holds its own ``ResponseCache`` per distribution (LRU,
bounded by ``cache.capacity_mb``). Workers do not share entries (docs/edge.md says why: a shared-memory
store would copy every hit across a process boundary, which costs more than the occasional extra origin
fetch a second worker makes); invalidations reach every worker through the control channel, so they
still take effect on all of them at once.

Vary (RFC 9111 4.1): the key a cache policy builds is the primary key; when a stored response named
fields in Vary that the key does not hold, their request values form a secondary key, and ``vary``
remembers, per primary key, which fields to read.

Request collapsing (CloudFront: "Simultaneous requests for the same object (request collapsing)"):
``inflight`` holds one future per key with an origin request outstanding; later misses for the key wait
on it and are answered from what it stored.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from lbd.cache.engine import Lookup, ResponseCache
from lbd.cache.keys import edge_key_target
from lbd.cache.response import CachedResponse
from lbd.observe.stats import Histogram

MAX_STALE = 86_400.0 * 7  # how long an expired entry may wait in the cache for a stale use
MAX_VARY_KEYS = 100_000  # primary keys whose Vary fields are remembered; past it, learnt again


@dataclass
class EdgeStats:
    """One distribution's counters in one worker (CloudFront's metric in the comment)."""

    requests: int = 0  # Requests
    results: dict[str, int] = field(default_factory=dict)  # hit | refresh_hit | miss | stale | error
    responses: dict[str, int] = field(default_factory=dict)  # "2xx".."5xx" (4xxErrorRate, 5xxErrorRate)
    bytes_from_cache: int = 0  # BytesDownloaded served from the cache
    bytes_from_origin: int = 0  # body bytes received from origins
    bytes_sent: int = 0  # BytesDownloaded
    bytes_received: int = 0  # BytesUploaded
    origin_requests: int = 0
    origin_failovers: int = 0
    collapsed: int = 0  # requests answered from another request's origin fetch
    compressed: int = 0  # objects compressed at the edge
    origin_latency: Histogram = field(default_factory=Histogram)  # OriginLatency (to the response head)

    def count(self, result: str, status: int) -> None:
        self.requests += 1
        self.results[result] = self.results.get(result, 0) + 1
        klass = f"{status // 100}xx"
        self.responses[klass] = self.responses.get(klass, 0) + 1


class DistributionCache:
    def __init__(self, name: str, capacity_bytes: int, max_entry_bytes: int) -> None:
        self.name = name
        self.cache = ResponseCache(capacity_bytes, max_entry_bytes, time.time)
        self.vary: dict[bytes, tuple[str, ...]] = {}
        self.inflight: dict[bytes, asyncio.Future[bool]] = {}
        self.waiting = 0  # requests waiting on another request's origin fetch now
        self.epoch = 0  # bumped by every invalidation: a fetch begun before it stores nothing
        self.stats = EdgeStats()

    def lookup(self, key: bytes) -> Lookup | None:
        return self.cache.lookup(key, MAX_STALE)

    def put(self, key: bytes, response: CachedResponse, ttl: float, epoch: int) -> bool:
        if epoch != self.epoch:
            return False
        if len(self.vary) > MAX_VARY_KEYS:
            self.vary.clear()
        # The engine's TTL is the freshness lifetime; whether an expired entry may still be served is
        # judged per entry on lookup (its stale-while-revalidate and stale-if-error), up to MAX_STALE.
        return self.cache.put(key, response, ttl)

    def invalidate(self, paths: list[str]) -> int:
        """Drop every entry whose path (and query) an invalidation path names (CloudFront: exact, or a
        prefix when the path ends with ``*``, the only place a wildcard may be)."""
        exact = {p for p in paths if not p.endswith("*")}
        prefixes = tuple(p[:-1] for p in paths if p.endswith("*"))
        name = self.name

        def matches(key: bytes) -> bool:
            target = edge_key_target(key)
            if target is None or target[0] != name:
                return False
            path = target[1] + ("?" + target[2] if target[2] else "")
            return path in exact or (target[1] in exact and not target[2]) or path.startswith(prefixes)

        self.epoch += 1
        removed = self.cache.delete_where(matches)
        self.vary = {k: v for k, v in self.vary.items() if not matches(k)}
        return removed

    def report(self) -> dict[str, Any]:
        stats = self.stats
        engine = self.cache.stats
        return {
            "distribution": self.name,
            "requests": stats.requests,
            "results": dict(stats.results),
            "responses": dict(stats.responses),
            "bytes_from_cache": stats.bytes_from_cache,
            "bytes_from_origin": stats.bytes_from_origin,
            "bytes_sent": stats.bytes_sent,
            "bytes_received": stats.bytes_received,
            "origin_requests": stats.origin_requests,
            "origin_failovers": stats.origin_failovers,
            "collapsed": stats.collapsed,
            "waiting": self.waiting,
            "compressed": stats.compressed,
            "origin_latency": stats.origin_latency.as_dict(),
            "cache_entries": engine.entries,
            "cache_bytes": engine.bytes,
            "cache_evictions": engine.evictions,
        }


class EdgeState:
    """The worker's distributions' caches by name (a reload that keeps a name keeps its cache)."""

    def __init__(self) -> None:
        self.caches: dict[str, DistributionCache] = {}

    def cache(self, name: str, capacity_bytes: int, max_entry_bytes: int) -> DistributionCache:
        cache = self.caches.get(name)
        if cache is None:
            cache = self.caches[name] = DistributionCache(name, capacity_bytes, max_entry_bytes)
        elif (cache.cache.capacity_bytes, cache.cache.max_entry_bytes) != (capacity_bytes, max_entry_bytes):
            cache.cache.resize(capacity_bytes, max_entry_bytes)
        return cache

    def keep(self, names: set[str]) -> None:
        """Forget the caches of distributions the config in service no longer has."""
        for name in list(self.caches):
            if name not in names:
                del self.caches[name]

    def invalidate(self, name: str, paths: list[str]) -> int:
        cache = self.caches.get(name)
        return cache.invalidate(paths) if cache is not None else 0

    def report(self) -> list[dict[str, Any]]:
        return [cache.report() for cache in self.caches.values()]


STATE = EdgeState()  # one per worker process
