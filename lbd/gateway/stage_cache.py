"""The stage cache in the pipeline: API Gateway's caching ("Enable API caching for REST APIs") over
lbd/cache's engine.

GET requests on routes with a TTL above 0 are looked up by the route's cache key parameters (the route,
method and the chosen header, query string and path values); a miss calls the integration and keeps a
2XX answer for the TTL (entries up to 1 MB; the engine evicts least recently used entries past the
stage's capacity). ``Cache-Control: max-age=0`` asks for a fresh copy; on a route with an authorizer the
caller cannot hold execute-api:InvalidateCache here, so the stage's ``unauthorized_invalidation`` decides
(403, or the cached copy with a warning header, or without one). One cache per API stage per worker,
kept across reloads (resized when the capacity changes) and flushed through the admin API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lbd.cache import CachedResponse, ResponseCache  # type: ignore[import-not-found,unused-ignore]
from lbd.cache.keys import (  # type: ignore[import-not-found,unused-ignore]
    INVALIDATION_WARNING,
    CacheControlAction,
    UnauthorizedCacheControlHeaderStrategy,
    cache_control_action,
    stage_key,
)
from lbd.gateway.contracts import Clock, GatewayRequest
from lbd.gateway.responses import Answer, with_head

if TYPE_CHECKING:
    from lbd.config.gateway import Api
    from lbd.gateway.pipeline import CompiledRoute, Outcome

MAX_ENTRY = 1_048_576  # API Gateway: a cache entry holds at most 1 MB
MAX_PLAIN_KEYS = 1024
_CACHES: dict[tuple[str, str], Any] = {}


class StageCache:
    def __init__(self, api: Api, clock: Clock) -> None:
        capacity = int(api.cache.capacity_mb * 1024 * 1024)
        engine = _CACHES.get((api.name, api.stage))
        if engine is None:
            engine = _CACHES[(api.name, api.stage)] = ResponseCache(capacity, MAX_ENTRY, clock)
        elif engine.capacity_bytes != capacity:
            engine.resize(capacity, MAX_ENTRY)
        self.engine = engine
        self.api = api.name
        self.stage = api.stage
        self.clock = clock
        self.strategy = UnauthorizedCacheControlHeaderStrategy(api.cache.unauthorized_invalidation)
        self._plain: dict[tuple[str, str], bytes] = {}  # (route key, method) -> key: routes without
        # cache key parameters

    def lookup(
        self, route: CompiledRoute, request: GatewayRequest, outcome: Outcome
    ) -> Answer | bytes | None:
        """The answer from the cache, or, on a miss, the key that ``store`` keeps the integration's
        answer under; None: the request asks for an invalidation it may not (403, ACCESS_DENIED). No
        I/O: the pipeline calls it in line."""
        control = request.headers.get("cache-control")
        action = CacheControlAction.USE_CACHE
        if control is not None:
            action = cache_control_action(
                control,
                require_authorization=route.authorizer is not None,
                authorized=False,
                strategy=self.strategy,
            )
            if action is CacheControlAction.FORBIDDEN:
                return None
        key = self._key(route, request)
        if action is CacheControlAction.USE_CACHE or action.uses_cache:
            cached = self.engine.get(key)
            if cached is not None:
                outcome.cache = "hit"
                if action is CacheControlAction.IGNORE_WITH_WARNING:
                    headers = (*cached.headers, INVALIDATION_WARNING)
                    return Answer(cached.status, headers, cached.body)
                if isinstance(cached, _Stored):
                    return cached.answer
                return Answer(cached.status, tuple(cached.headers), cached.body)
        outcome.cache = "miss"
        return key

    def store(self, route: CompiledRoute, key: bytes, answer: Answer) -> None:
        """Keep a 2XX answer of the integration (not a gateway response) for the route's TTL, with the
        answer its hits are served as, head rendered (responses.with_head)."""
        if 200 <= answer.status < 300 and not answer.response_type:
            headers = tuple(answer.headers)
            served = with_head(Answer(answer.status, headers, answer.body))
            entry = _Stored(answer.status, headers, answer.body, self.clock(), answer=served)
            self.engine.put(key, entry, route.cache_ttl)

    def _key(self, route: CompiledRoute, request: GatewayRequest) -> bytes:
        """The entry's key; a route without cache key parameters has one per method, made once."""
        if route.cache_keys:
            parameters = _parameters(route, request)
            return stage_key(self.api, self.stage, route.route_key, request.method, parameters)  # type: ignore[no-any-return,unused-ignore]
        plain = self._plain.get((route.route_key, request.method))
        if plain is None:
            if len(self._plain) >= MAX_PLAIN_KEYS:
                self._plain.clear()
            plain = stage_key(self.api, self.stage, route.route_key, request.method, ())
            self._plain[(route.route_key, request.method)] = plain
        return plain  # type: ignore[no-any-return,unused-ignore]


_NO_ANSWER = Answer(200, (), b"")


@dataclass(frozen=True, slots=True)
class _Stored(CachedResponse):  # type: ignore[misc,unused-ignore]
    """A stage-cache entry: the response, and the Answer every hit on it is served as."""

    answer: Answer = _NO_ANSWER


def _parameters(route: CompiledRoute, request: GatewayRequest) -> list[tuple[str, str]]:
    out = []
    for name in route.cache_keys:
        _, _, kind, key = name.split(".", 3)
        if kind == "header":
            value = request.headers.get(key.lower(), "")
        elif kind == "path":
            value = request.path_parameters.get(key, "")
        else:
            value = _query(request.query, key)
        out.append((name, value))
    return out


def _query(query: str, name: str) -> str:
    from urllib.parse import parse_qsl

    values = sorted(v for k, v in parse_qsl(query, keep_blank_values=True) if k == name)
    return ",".join(values)


def flush(api: str) -> int:
    """Every cached entry of ``api`` in this worker (POST /v1/apis/{api}/cache/flush)."""
    return sum(int(engine.flush()) for (name, _), engine in _CACHES.items() if name == api)
