"""API listeners in a Snapshot: one runtime per listening socket of an API, with its compiled pipeline.

An API's listener has the load-balancer listener's shape and is served by the same worker machinery
(SO_REUSEPORT sockets, accept limits, TLS with the listener's certificates and security policy, the
connection tracker); ``ApiListenerRuntime`` is a ListenerRuntime whose connections speak to the API's
pipeline instead of listener rules.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from lbd.config.plain import Record
from lbd.gateway.contracts import Admission, Authorizer, Bucket, GatewayRequest, Limiter, Quota
from lbd.gateway.fetch import GatewayFetch
from lbd.gateway.pipeline import ApiPipeline, Outcome
from lbd.gateway.responses import Answer
from lbd.gateway.services import SERVICES
from lbd.gateway.stats import registry
from lbd.runtime import ListenerKey, ListenerRuntime, UnsupportedConfig

if TYPE_CHECKING:
    from lbd.config.gateway import Api, ApiListener
    from lbd.config.gateway_auth import SharedState
    from lbd.config.schema import Config, Listener, LoadBalancer
    from lbd.observe.access_log import AccessLog
    from lbd.observe.stats import StatsRegistry
    from lbd.runtime import TargetGroupRuntime
    from lbd.tls.server import ListenerTls

log = logging.getLogger("lbd.gateway")


def _as_listener(listener: ApiListener) -> Listener:
    """The API's listener in the load-balancer listener's shape, every field of the schema's Listener set
    (a Record, lbd/config/plain.py: workers never import the schema; tests/test_worker_footprint.py checks
    the fields are the model's)."""
    not_found = Record(
        {
            "type": "fixed-response",
            "order": None,
            "status_code": 404,
            "content_type": None,
            "message_body": "",
        }
    )
    fields = {
        "protocol": listener.protocol,
        "port": listener.port,
        "address": listener.address,
        "certificates": listener.certificates,
        "ssl_policy": listener.ssl_policy,
        "alpn_policy": "None",
        "default_actions": (not_found,),
        "rules": (),
        "instance_protocol": None,
        "instance_port": None,
        "stickiness": None,
        "proxy_protocol": False,
        "h2c": False,
        "accept_proxy_protocol": None,
        "udp_idle_timeout_seconds": 120.0,
        "max_connections": listener.max_connections,
    }
    return cast("Listener", Record(fields))


def _as_load_balancer(api: Api) -> LoadBalancer:
    """The API as the application load balancer its listeners belong to (every field of the schema's)."""
    fields = {
        "name": f"api:{api.name}",
        "type": "application",
        "scheme": "internal" if api.endpoint_type == "PRIVATE" else "internet-facing",
        "cross_zone": True,
        "idle_timeout_seconds": api.idle_timeout_seconds,
        "desync_mitigation_mode": "defensive",
        "xff_header_processing": "append",
        "xff_client_port": False,
        "preserve_host_header": False,
        "drop_invalid_header_fields": False,
        "http2_enabled": True,
        "access_log": None,
        "listeners": (),
        "instances": (),
        "health_check": None,
        "connection_draining_seconds": 300,
        "max_connections_per_instance": None,
        "surge_queue_length": 1024,
    }
    return cast("LoadBalancer", Record(fields))


class ApiListenerRuntime(ListenerRuntime):
    kind = "api"

    def __init__(
        self,
        key: ListenerKey,
        api: Api,
        listener: ApiListener,
        pipeline: ApiPipeline,
        target_groups: Mapping[str, TargetGroupRuntime],
        stats: StatsRegistry,
        generation: int,
    ) -> None:
        lb = _as_load_balancer(api)
        as_listener = _as_listener(listener)
        super().__init__(
            key,
            lb,
            as_listener,
            target_groups,
            stats.listener(lb.name, f"{listener.protocol}:{listener.port}"),
            generation,
        )
        self.api = api
        self.pipeline = pipeline
        self.access: AccessLog | None = None  # set by the worker, which owns the files
        self.pipeline_fetch: GatewayFetch | None = None

    def record(self, request: GatewayRequest, answer: Answer, outcome: Outcome, elapsed: float) -> None:
        stats = outcome.stats
        if stats is not None:
            stats.requests += 1
            if 400 <= answer.status < 500:
                stats.errors_4xx += 1
            elif answer.status >= 500:
                stats.errors_5xx += 1
            if outcome.cache == "hit":
                stats.cache_hits += 1
            elif outcome.cache == "miss":
                stats.cache_misses += 1
            stats.latency.observe(elapsed)
            if outcome.integration_latency >= 0:
                stats.integration_latency.observe(outcome.integration_latency)
        access = self.access
        if access is not None:
            # API Gateway's access-log variables ($context.*); the API key by id, never its value.
            access.emit(
                {
                    "requestId": request.request_id,
                    "ip": request.source_ip,
                    "requestTime": int(request.received_at * 1000),
                    "httpMethod": request.method,
                    "path": request.path,
                    "routeKey": outcome.route_key,
                    "status": answer.status,
                    "responseLength": len(answer.body),
                    "responseLatency": round(elapsed * 1000, 3),
                    "integrationStatus": outcome.integration_status or "-",
                    "integrationLatency": (
                        round(outcome.integration_latency * 1000, 3)
                        if outcome.integration_latency >= 0
                        else "-"
                    ),
                    "apiKeyId": outcome.key_id,
                    "authorizer": outcome.authorizer,
                    "errorType": outcome.response_type or "-",
                    "cache": outcome.cache,
                    "api": self.api.name,
                    "stage": self.api.stage,
                    # $context.wafResponseCode (WAF_ALLOW, WAF_BLOCK) and lbd's deciding rule; "-" without
                    # a web ACL.
                    "wafResponseCode": _WAF_CODES.get(outcome.waf_action, "-"),
                    "wafRule": outcome.waf_rule,
                },
                kind="api",
            )

    def record_refusal(self, answer: Answer, source_ip: str) -> None:
        """A request refused before it was whole (too large, unparsable): counted on no route."""
        stats = registry().route(self.api.name, self.api.stage, "-")
        request = GatewayRequest("-", "-", "", {}, b"", source_ip, self.api.name, self.api.stage, "-")
        self.record(request, answer, Outcome(response_type=answer.response_type, stats=stats), 0.0)

    def retire(self) -> None:
        fetch = self.pipeline_fetch
        if fetch is not None:
            fetch.close()


_WAF_CODES = {"allow": "WAF_ALLOW", "block": "WAF_BLOCK"}


def api_listeners(
    config: Config, target_groups: Mapping[str, TargetGroupRuntime], stats: StatsRegistry, generation: int
) -> dict[ListenerKey, ListenerRuntime]:
    """Every API's listeners, compiled (routes, integrations, plans) for this Snapshot."""
    out: dict[ListenerKey, ListenerRuntime] = {}
    if not config.apis:
        return out
    fetch = GatewayFetch(lambda: target_groups, lambda: generation)
    limiter: Limiter = shared_limiter(config) or SERVICES.limiter
    for i, api in enumerate(config.apis):
        if api.protocol == "WEBSOCKET":
            from lbd.gateway.websocket.listener import websocket_listeners

            out.update(websocket_listeners(config, i, api, target_groups, stats, generation, fetch, limiter))
            continue
        pipeline = ApiPipeline(
            api,
            config.usage_plans,
            keys=SERVICES.key_table,
            fetch=fetch,
            limiter=limiter,
            clock=SERVICES.clock,
            stats=registry(),
            authorizers=LazyAuthorizers(api, fetch, SERVICES.clock),
        )
        for j, listener in enumerate(api.listeners):
            key = ListenerKey(listener.address, listener.port, "tcp")
            runtime = ApiListenerRuntime(key, api, listener, pipeline, target_groups, stats, generation)
            runtime.pipeline_fetch = fetch
            if listener.protocol == "HTTPS":
                runtime.tls = _tls(config, listener, f"apis[{i}].listeners[{j}]")
            out[key] = runtime
    return out


def _tls(config: Config, listener: ApiListener, where: str) -> ListenerTls:
    # Only for HTTPS listeners: the certificate tooling (cryptography) stays out of HTTP-only workers.
    from lbd.tls.server import ListenerTls, TlsConfigError
    from lbd.tls.store import CertificateStore

    try:
        return ListenerTls(
            CertificateStore(config.certificates.store),
            listener.certificates,
            listener.ssl_policy,
            ["http/1.1"],
            where,
        )
    except TlsConfigError as exc:
        raise UnsupportedConfig(str(exc)) from None


def shared_limiter(config: Config) -> Limiter | None:
    """The fleet's limiter when shared_state.redis is set, made on first use (one per worker, kept
    across reloads that keep the settings): lbd/gateway/redis_limiter.py."""
    if config.shared_state.redis is None:
        return None
    return _SharedLimiter(config.shared_state)


class _SharedLimiter:
    """Defers the RedisLimiter to the first request: Snapshot.build also runs in the supervisor, which
    must not connect to Redis."""

    def __init__(self, state: SharedState) -> None:
        self.state = state

    def _engine(self) -> Limiter:
        if SERVICES.shared is None or SERVICES.shared_url != self.state:
            from lbd.gateway import redis_limiter

            if SERVICES.shared is not None:
                closing = asyncio.get_running_loop().create_task(SERVICES.shared.close())
                closing.add_done_callback(lambda task: task.exception())
            SERVICES.shared = redis_limiter.shared_limiter(self.state, SERVICES.limiter, SERVICES.clock)
            SERVICES.shared_url = self.state
        return cast(Limiter, SERVICES.shared)

    async def admit(self, buckets: Sequence[Bucket], quota: Quota | None, now: float) -> Admission:
        return await self._engine().admit(buckets, quota, now)

    async def used(self, quota: Quota) -> int:
        return await self._engine().used(quota)

    async def close(self) -> None:
        return None


class LazyAuthorizers(Mapping[str, Authorizer]):
    """An API's authorizers, built on first use (Snapshot.build also runs in the supervisor, which only
    wants the listening addresses: no authorizer there may open a connection or read a JWKS)."""

    def __init__(self, api: Api, fetch: GatewayFetch, clock: Any) -> None:
        self._configs = {a.name: a for a in api.authorizers}
        self._built: dict[str, Authorizer] = {}
        self._fetch = fetch
        self._clock = clock

    def __getitem__(self, name: str) -> Authorizer:
        built = self._built.get(name)
        if built is None:
            config = self._configs[name]
            from lbd.gateway.auth import build_authorizer  # type: ignore[import-not-found,attr-defined,unused-ignore]

            built = self._built[name] = build_authorizer(config, self._fetch, self._clock)
        return built

    def __iter__(self) -> Any:
        return iter(self._configs)

    def __len__(self) -> int:
        return len(self._configs)
