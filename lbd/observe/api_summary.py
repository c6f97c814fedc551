"""The ``apis`` and ``usage_plans`` parts of ``GET /v1/summary`` (the console and ``lbd status``).

Built from the config in service, the node totals of the per-route counters the workers report under
"apis" (the same numbers as the ``lbd_api_*`` metrics, lbd/observe/metrics.py), the supervisor's API key
store (ids and names only: a summary never holds a key's value) and each plan's usage in its current
quota period (what ``GET /v1/usage-plans/{name}/usage`` answers). Counters are totals since start, as the
listeners' are; rates and windowed percentiles are the reader's difference of two summaries. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lbd.observe.metrics import NodeStats
from lbd.observe.stats import LATENCY_BUCKETS
from lbd.observe.summary import histogram as _histogram

if TYPE_CHECKING:
    from lbd.config.gateway import Api, Integration, Route, Throttle, UsagePlan
    from lbd.config.schema import Config

UNMATCHED = "-"  # the route name requests that matched no route are counted under (lbd/gateway/pipeline.py)
ROUTE_COUNTERS = ("requests", "errors_4xx", "errors_5xx", "cache_hits", "cache_misses", "throttled")
# WEBSOCKET routes' own counters (lbd/gateway/websocket/stats.py; lbd_api_websocket_* in /metrics).
WEBSOCKET_COUNTERS = (
    "connects",
    "messages_in",
    "messages_out",
    "integration_errors",
    "client_errors",
    "execution_errors",
)


def _hit_ratio(hits: int, misses: int) -> float | None:
    """CacheHitCount / (CacheHitCount + CacheMissCount), None when nothing was cacheable."""
    return hits / (hits + misses) if hits + misses else None


def _stats(values: Mapping[str, Any]) -> dict[str, Any]:
    stats: dict[str, Any] = {name: int(values.get(name, 0)) for name in ROUTE_COUNTERS}
    # The names the listeners' rows use, so that one reader draws both.
    stats["http_4xx"], stats["http_5xx"] = stats["errors_4xx"], stats["errors_5xx"]
    stats["cache_hit_ratio"] = _hit_ratio(stats["cache_hits"], stats["cache_misses"])
    stats["latency"] = _histogram(values.get("latency"))
    stats["integration_latency"] = _histogram(values.get("integration_latency"))
    return stats


def _total(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """An API's totals: its routes' counters and histograms added up."""
    width = len(LATENCY_BUCKETS) + 1
    merged: dict[str, Any] = {name: sum(p[name] for p in parts) for name in ROUTE_COUNTERS}
    for name in ("latency", "integration_latency"):
        merged[name] = {
            "counts": [sum(p[name]["counts"][i] for p in parts) for i in range(width)],
            "sum": sum(p[name]["sum"] for p in parts),
        }
    return _stats(merged)


def throttle(value: Throttle | None) -> dict[str, Any] | None:
    return None if value is None else {"rate_limit": value.rate_limit, "burst_limit": value.burst_limit}


def _integration(integration: Integration) -> dict[str, Any]:
    out: dict[str, Any] = {"type": integration.type}
    if integration.target_group is not None:
        out["target_group"] = integration.target_group
    if integration.path is not None:
        out["path"] = integration.path
    if integration.type == "MOCK":
        out["status_code"] = integration.status_code
    return out


def _cache_ttl(api: Api, route: Route) -> int:
    """Seconds the stage cache keeps the route's GET answers, 0 if it does not (lbd/gateway/pipeline.py)."""
    if not api.cache.enabled or (route.cache is not None and not route.cache.enabled):
        return 0
    if route.cache is not None and route.cache.ttl_seconds is not None:
        return route.cache.ttl_seconds
    return api.cache.ttl_seconds


def _route(api: Api, route: Route, values: Mapping[str, Any]) -> dict[str, Any]:
    types = {a.name: a.type for a in api.authorizers}
    authorizer: dict[str, Any] | None = None
    if route.authorizer is not None:
        authorizer = {"name": route.authorizer, "type": types.get(route.authorizer)}
        if route.authorization_scopes:
            authorizer["scopes"] = list(route.authorization_scopes)
    return {
        "route_key": route.route_key,
        "integration": _integration(route.integration),
        "authorizer": authorizer,
        "api_key_required": route.api_key_required,
        "throttle": throttle(route.throttle),
        "cached": _cache_ttl(api, route) > 0,
        **_stats(values),
    }


def apis(config: Config, node: NodeStats) -> list[dict[str, Any]]:
    """Every API with its stage, listeners and routes (in the config's order), each route's counters
    and the API's totals; requests that matched no route are counted under ``unmatched``."""
    out = []
    for api in config.apis:
        routes = [
            _route(api, route, node.apis.get((api.name, api.stage, route.route_key), {}))
            for route in api.routes
        ]
        unmatched = _stats(node.apis.get((api.name, api.stage, UNMATCHED), {}))
        extra: dict[str, Any] = {}
        if api.protocol == "WEBSOCKET":
            for route in routes:
                values = node.apis.get((api.name, api.stage, route["route_key"]), {})
                route["websocket"] = {name: int(values.get(name, 0)) for name in WEBSOCKET_COUNTERS}
            connect = node.apis.get((api.name, api.stage, "$connect"), {})
            extra["connections"] = int(connect.get("connections", 0))  # open now
        out.append(
            {
                **extra,
                "name": api.name,
                "protocol": api.protocol,
                "stage": api.stage,
                "endpoint_type": api.endpoint_type,
                "listeners": [
                    {
                        "name": f"{listener.protocol}:{listener.port}",
                        "protocol": listener.protocol,
                        "address": listener.address,
                        "port": listener.port,
                    }
                    for listener in api.listeners
                ],
                "api_key_source": api.api_key_source,
                "throttle": throttle(api.throttle),
                "cache": {"enabled": api.cache.enabled, "ttl_seconds": api.cache.ttl_seconds},
                "routes": routes,
                "unmatched": unmatched,
                **_total([*routes, unmatched]),
            }
        )
    return out


def _plan(
    plan: UsagePlan, keys: Sequence[Mapping[str, Any]], usage: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, Any]:
    members = []
    for key in keys:
        if plan.name not in key.get("usage_plans", ()):
            continue
        entry = (usage or {}).get(str(key["id"]))
        members.append(
            {
                "id": key["id"],
                "name": key["name"],
                "enabled": key["enabled"],
                "used": entry["used"] if entry else None,
                "limit": entry["limit"] if entry else None,
                "period_start": entry["period_start"] if entry else None,
                "period_end": entry["period_end"] if entry else None,
            }
        )
    quota = plan.quota
    used = [m["used"] for m in members if m["used"] is not None]
    return {
        "name": plan.name,
        "apis": [
            {
                "api": stage.api,
                "stage": stage.stage,
                "route_throttles": [
                    {"route_key": t.route_key, **(throttle(t.throttle) or {})} for t in stage.throttle
                ],
            }
            for stage in plan.apis
        ],
        "throttle": throttle(plan.throttle),
        "quota": None
        if quota is None
        else {"limit": quota.limit, "period": quota.period, "offset": quota.offset},
        "keys": members,
        # Requests of every key this quota period (None: no quota, so nothing is counted per period,
        # or the workers did not say).
        "used": sum(used) if usage is not None and quota is not None else None,
    }


def usage_plans(
    config: Config,
    keys: Sequence[Mapping[str, Any]],
    usage: Mapping[str, Mapping[str, Mapping[str, Any]] | None],
) -> list[dict[str, Any]]:
    """Every usage plan with its throttle, quota and keys (``keys``: the key store's descriptions, which
    hold no value), and each key's requests this period from ``usage`` (plan -> key id -> entry as
    ``GET /v1/usage-plans/{name}/usage`` gives it; None where the workers did not answer)."""
    return [_plan(plan, keys, usage.get(plan.name)) for plan in config.usage_plans]
