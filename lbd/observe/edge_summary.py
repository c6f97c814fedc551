"""The ``distributions`` and ``web_acls`` parts of ``GET /v1/summary`` (the console and ``lbd status``).

Built from the config in service and the node totals the supervisor sums from every worker's reports:
each distribution's counters as the workers keep them for the ``lbd_edge_*`` metrics
(lbd/edge/store.py's ``EdgeStats`` and the cache engine's sizes) and each web ACL's allowed, blocked
and counted requests by rule, as for the ``lbd_waf_*`` metrics (lbd/waf/acl.py's ``WafStats``). Nothing
here runs per request, and nothing is counted that the workers do not count already. Counters are
totals since start, as the listeners' are; rates and windowed percentiles are the reader's difference
of two summaries. Pure: the admin API's invalidation records are handed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lbd.config.web_acl_reading import action_kind, statement_kind
from lbd.observe.summary import histogram

if TYPE_CHECKING:
    # Models or their plain records (lbd/config/plain.py): the supervisor holds records.
    from lbd.config.edge import CacheBehaviorBase, Distribution
    from lbd.config.schema import Config
    from lbd.config.web_acls import WebAcl
    from lbd.observe.metrics import NodeStats

DEFAULT_ACTION = "Default_Action"  # the rule name WAF's metrics give the default action (lbd/waf/acl.py)
# Viewer requests by cache result, as lbd_edge_requests_total's `result` label (x-edge-result-type).
RESULTS = ("hit", "refresh_hit", "miss", "stale", "error")
HIT_RESULTS = ("hit", "refresh_hit", "stale")  # lbd_edge_cache_hits_total: answered from the cache
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")
# Counters copied as the workers report them (summed over workers; the gauges are the node's sums too).
COUNTERS = (
    "bytes_sent",
    "bytes_from_cache",
    "bytes_from_origin",
    "bytes_received",
    "origin_requests",
    "origin_failovers",
    "collapsed",
    "compressed",
    "waiting",
    "cache_entries",
    "cache_bytes",
    "cache_evictions",
)
OUTCOMES = ("allowed", "blocked", "counted")


def edge_stats(values: Mapping[str, Any]) -> dict[str, Any]:
    """One distribution's live numbers from its summed worker reports (empty: no worker reported it)."""
    results = {name: int(values.get("results", {}).get(name, 0)) for name in RESULTS}
    responses = {name: int(values.get("responses", {}).get(name, 0)) for name in STATUS_CLASSES}
    hits = sum(results[name] for name in HIT_RESULTS)
    misses = results["miss"]
    stats: dict[str, Any] = {
        "requests": int(values.get("requests", 0)),
        "results": results,
        "cache_hits": hits,
        "cache_misses": misses,
        # CloudFront's CacheHitRate: hits over cacheable requests (errors and uncached methods left out).
        "cache_hit_ratio": hits / (hits + misses) if hits + misses else None,
        "responses": responses,
        "http_4xx": responses["4xx"],
        "http_5xx": responses["5xx"],
    }
    stats.update({name: int(values.get(name, 0)) for name in COUNTERS})
    stats["origin_latency"] = histogram(values.get("origin_latency"))
    return stats


def _policy(behavior: CacheBehaviorBase, named: Mapping[str, Any]) -> dict[str, Any]:
    # Loaded only for a config with distributions (the supervisor's footprint without them stays as it was).
    from lbd.edge.behaviors import MANAGED, resolve_policy

    chosen = behavior.cache_policy
    if isinstance(chosen, str):
        resolved = MANAGED.get(chosen) or resolve_policy(named[chosen], chosen)
        kind = "managed" if chosen in MANAGED else "named"
    else:
        resolved, kind = resolve_policy(chosen, "inline"), "inline"
    ttl = resolved.ttl
    return {
        "name": resolved.name,
        "kind": kind,
        "min_ttl": ttl.min_ttl,
        "default_ttl": ttl.default_ttl,
        "max_ttl": ttl.max_ttl,
        "caching": not ttl.caching_disabled,
    }


def _behavior(
    behavior: CacheBehaviorBase,
    path_pattern: str,
    named: Mapping[str, Any],
    reaches: Mapping[str, Sequence[str]],
) -> dict[str, Any]:
    return {
        "path_pattern": path_pattern,
        "origin": behavior.origin,
        "origins": list(reaches.get(behavior.origin, (behavior.origin,))),  # in the order they are tried
        "cache_policy": _policy(behavior, named),
        "compress": behavior.compress,
        "allowed_methods": behavior.allowed_methods,
    }


def _invalidations(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    latest = records[0] if records else None
    return {
        "count": len(records),
        "in_progress": sum(1 for r in records if r.get("status") != "Completed"),
        "latest": None
        if latest is None
        else {
            "id": latest["id"],
            "status": latest["status"],
            "create_time": latest["create_time"],
            "paths": len(latest["paths"]),
        },
    }


def _distribution(
    distribution: Distribution,
    values: Mapping[str, Any],
    web_acl: str | None,
    invalidations: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    named = {p.name: p for p in distribution.cache_policies}
    reaches: dict[str, list[str]] = {o.id: [o.id] for o in distribution.origins}
    for group in distribution.origin_groups:
        reaches[group.id] = list(group.members)
    behaviors = [_behavior(b, b.path_pattern, named, reaches) for b in distribution.cache_behaviors]
    behaviors.append(_behavior(distribution.default_cache_behavior, "*", named, reaches))
    return {
        "name": distribution.name,
        "enabled": distribution.enabled,
        "comment": distribution.comment,
        "edge_name": distribution.edge_name,
        "listeners": [
            {
                "name": f"{listener.protocol}:{listener.port}",
                "protocol": listener.protocol,
                "address": listener.address,
                "port": listener.port,
            }
            for listener in distribution.listeners
        ],
        "origins": [
            {"id": o.id, "target_group": o.target_group, "api": o.api, "origin_path": o.origin_path}
            for o in distribution.origins
        ],
        # Each request tries the first member first (docs/edge.md): there is no member "in use" to show,
        # only how often a request moved on (origin_failovers).
        "origin_groups": [
            {"id": g.id, "members": list(g.members), "failover_status_codes": list(g.failover_status_codes)}
            for g in distribution.origin_groups
        ],
        "behaviors": behaviors,
        "web_acl": web_acl,
        "invalidations": _invalidations(invalidations),
        **edge_stats(values),
    }


def distributions(
    config: Config,
    node: NodeStats,
    acls: Iterable[WebAcl],
    invalidations: Mapping[str, Sequence[Mapping[str, Any]]],
) -> list[dict[str, Any]]:
    """Every distribution with its listeners, origins, origin groups and behaviors (in the order they
    are tried, the default ``*`` last), its web ACL, its invalidations (``invalidations``: the admin
    API's records by distribution, newest first) and its counters summed over workers."""
    protected = {a.distribution: acl.name for acl in acls for a in acl.associations if a.distribution}
    return [
        _distribution(
            d, node.distributions.get(d.name, {}), protected.get(d.name), invalidations.get(d.name, ())
        )
        for d in config.distributions
    ]


def _association(association: Any) -> dict[str, str]:
    return {
        kind: getattr(association, kind)
        for kind in ("load_balancer", "api", "distribution")
        if getattr(association, kind) is not None
    }


def _web_acl(acl: WebAcl, counts: Mapping[str, Mapping[str, int]], changed: bool) -> dict[str, Any]:
    def count(outcome: str, rule: str) -> int:
        return int(counts.get(outcome, {}).get(rule, 0))

    rules = [
        {
            "name": rule.name,
            "priority": rule.priority,
            "action": action_kind(rule.action),
            "statement": statement_kind(rule.statement),
            **{outcome: count(outcome, rule.name) for outcome in OUTCOMES},
        }
        for rule in sorted(acl.rules, key=lambda r: r.priority)
    ]
    # Totals over every rule counted since start, as the lbd_waf_* series add up (a rule the admin API
    # removed since keeps its counts there).
    totals = {outcome: sum(int(n) for n in counts.get(outcome, {}).values()) for outcome in OUTCOMES}
    return {
        "name": acl.name,
        "default_action": action_kind(acl.default_action),
        "associations": [_association(a) for a in acl.associations],
        "changed_through_api": changed,
        "rules": rules,
        "default": {outcome: count(outcome, DEFAULT_ACTION) for outcome in ("allowed", "blocked")},
        **totals,
        "requests": totals["allowed"] + totals["blocked"],  # every evaluation ends in one of the two
    }


def web_acls(acls: Iterable[WebAcl], node: NodeStats, changed: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Every web ACL in force (``acls``: the file's with the admin API's replacements, ``changed`` their
    names) with its associations, default action and rules in priority order, each rule's allowed,
    blocked and counted requests, the default action's, and the ACL's totals."""
    replaced = set(changed)
    return [_web_acl(acl, node.web_acls.get(acl.name, {}), acl.name in replaced) for acl in acls]


def summary_parts(
    config: Config,
    node: NodeStats,
    acls: Sequence[WebAcl],
    changed: Iterable[str],
    invalidations: Mapping[str, Sequence[Mapping[str, Any]]],
) -> dict[str, Any]:
    """``distributions`` and ``web_acls``, each only when the config has some, so that the console draws
    their sections only then."""
    parts: dict[str, Any] = {}
    if config.distributions:
        parts["distributions"] = distributions(config, node, acls, invalidations)
    if acls:
        parts["web_acls"] = web_acls(acls, node, changed)
    return parts
