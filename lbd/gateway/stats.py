"""Per-worker counters of API routes (DESIGN.md section 5's lbd_api_* metrics), summed by the supervisor.

CloudWatch twins (API Gateway, "Amazon API Gateway dimensions and metrics"): Count, 4XXError, 5XXError,
CacheHitCount, CacheMissCount, Latency (request in to response out, the integration included) and
IntegrationLatency (request to the integration until its response), by ApiName, Stage and Resource/Method
(here: api, stage, route key).
"""

from __future__ import annotations

from typing import Any

from lbd.observe.stats import Histogram


class ApiStats:
    __slots__ = (
        "cache_hits",
        "cache_misses",
        "errors_4xx",
        "errors_5xx",
        "integration_latency",
        "latency",
        "requests",
        "throttled",
    )

    def __init__(self) -> None:
        self.requests = 0  # Count
        self.errors_4xx = 0  # 4XXError
        self.errors_5xx = 0  # 5XXError
        self.cache_hits = 0  # CacheHitCount
        self.cache_misses = 0  # CacheMissCount
        self.throttled = 0  # 429s from throttles and quotas
        self.latency = Histogram()  # Latency
        self.integration_latency = Histogram()  # IntegrationLatency

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors_4xx": self.errors_4xx,
            "errors_5xx": self.errors_5xx,
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "throttled": self.throttled,
            "latency": self.latency.as_dict(),
            "integration_latency": self.integration_latency.as_dict(),
        }


class ApiStatsRegistry:
    """Counters by (api, stage, route); they survive reloads that keep those names."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str, str], ApiStats] = {}

    def route(self, api: str, stage: str, route: str, kind: type[ApiStats] = ApiStats) -> ApiStats:
        """``kind``: a subclass with more counters (WebSocket routes: lbd/gateway/websocket/stats.py)."""
        key = (api, stage, route)
        stats = self._routes.get(key)
        if stats is None or not isinstance(stats, kind):
            stats = self._routes[key] = kind()
        return stats

    def report(self) -> list[dict[str, Any]]:
        return [
            {"api": api, "stage": stage, "route": route, **stats.as_dict()}
            for (api, stage, route), stats in self._routes.items()
        ]


_REGISTRY = ApiStatsRegistry()


def registry() -> ApiStatsRegistry:
    """The worker's registry (one per process, like the worker's StatsRegistry)."""
    return _REGISTRY
