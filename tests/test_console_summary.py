"""/v1/summary and /v1/load-balancers from the config, summed worker reports and target health (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from lbd.config.loader import parse_config
from lbd.observe.metrics import NodeStats
from lbd.observe.stats import LATENCY_BUCKETS, ListenerStats
from lbd.observe.summary import load_balancers, summary

CONFIG = """
node: {zone: zone-a, workers: 2}
load_balancers:
  - name: front
    type: application
    listeners:
      - protocol: HTTP
        address: 127.0.0.1
        port: 8080
        rules:
          - priority: 30
            conditions: [{field: path-pattern, values: ["/old/*"]}]
            actions: [{type: redirect, status_code: HTTP_301, path: "/new/#{path}"}]
          - priority: 10
            conditions: [{field: host-header, values: ["api.example.com"]}]
            actions: [{type: forward, target_group: web}]
        default_actions: [{type: fixed-response, status_code: 404, content_type: text/plain}]
  - name: tcp
    type: network
    listeners:
      - protocol: TCP
        address: 127.0.0.1
        port: 9000
        default_actions: [{type: forward, target_group: pool}]
target_groups:
  - name: web
    protocol: HTTP
    targets: [{id: 127.0.0.1, port: 9001}, {id: "::1", port: 9002}]
  - name: pool
    protocol: TCP
    targets: [{id: 127.0.0.1, port: 9003}]
"""


def worker_report(requests: int, fast: int, slow: int) -> dict[str, Any]:
    """What one worker answers to "stats": its listener counters and its per-target counts."""
    stats = ListenerStats()
    stats.requests = requests
    stats.active_connections = 2
    stats.target_responses[2] = requests - 2
    stats.target_responses[4] = 1
    stats.elb_response(502)
    for _ in range(fast):
        stats.request_duration.observe(0.0004)
    for _ in range(slow):
        stats.request_duration.observe(0.2)
    return {
        "listeners": [
            {"load_balancer": "front", "listener": "HTTP:8080", "type": "application", **stats.as_dict()}
        ],
        "targets": [
            {"target_group": "web", "target": "127.0.0.1:9001", "requests": requests, "connection_errors": 0},
            {"target_group": "web", "target": "::1:9002", "requests": 1, "connection_errors": 1},
        ],
        "target_groups": [{"target_group": "web", "fail_open": False, "healthy_targets": 2}],
    }


def health() -> dict[str, list[dict[str, Any]]]:
    def target(target_id: str, port: int, state: str, reason: str | None = None) -> dict[str, Any]:
        return {
            "id": target_id,
            "port": port,
            "zone": "zone-a",
            "weight": 1,
            "state": state,
            "reason": reason,
        }

    return {
        "web": [target("127.0.0.1", 9001, "healthy"), target("::1", 9002, "unhealthy", "Target.Timeout")],
        "pool": [target("127.0.0.1", 9003, "draining", "Target.DeregistrationInProgress")],
    }


def test_the_summary_adds_up_the_workers_and_names_every_listener_and_target() -> None:
    config = parse_config(CONFIG)
    node = NodeStats(workers=2, generation=7)
    node.add_worker(worker_report(requests=10, fast=99, slow=0))
    node.add_worker(worker_report(requests=30, fast=0, slow=1))
    answer = summary(config, node, health(), now=1234.5)

    assert answer["generation"] == 7 and answer["time"] == 1234.5
    assert answer["workers"] == {"configured": 2, "answering": 2}
    assert answer["latency_buckets"] == list(LATENCY_BUCKETS)
    front, tcp = answer["listeners"]
    assert (front["load_balancer"], front["listener"], front["type"]) == ("front", "HTTP:8080", "application")
    assert front["requests"] == 40 and front["active_connections"] == 4
    assert front["responses"]["target"]["2xx"] == 36 and front["responses"]["lb"]["5xx"] == 2
    assert front["http_4xx"] == 2 and front["http_5xx"] == 2
    duration = front["request_duration"]
    assert sum(duration["counts"]) == 100
    # 99 of 100 in the 250-500 µs bucket, one in 100-250 ms: both quantiles within the fast bucket.
    assert duration["p50_seconds"] == pytest.approx(0.00025 + 0.00025 * 50 / 99)
    assert duration["p99_seconds"] == pytest.approx(0.0005)
    # A listener no worker reported yet: zeros, not missing keys.
    assert (tcp["listener"], tcp["type"], tcp["requests"], tcp["request_duration"]["p50_seconds"]) == (
        "TCP:9000",
        "network",
        0,
        None,
    )

    web, pool = answer["target_groups"]
    assert (web["name"], web["protocol"], web["states"]) == ("web", "HTTP", {"healthy": 1, "unhealthy": 1})
    v4, v6 = web["targets"]
    assert (v4["target"], v4["requests"]) == ("127.0.0.1:9001", 40)
    # IPv6 as the admin API's paths write it, its counters found under the registry's key.
    assert (v6["target"], v6["requests"], v6["connection_errors"], v6["reason"]) == (
        "[::1]:9002",
        2,
        2,
        "Target.Timeout",
    )
    assert pool["states"] == {"draining": 1} and pool["targets"][0]["requests"] == 0


def test_load_balancers_lists_rules_in_the_order_they_are_evaluated() -> None:
    answer = load_balancers(parse_config(CONFIG), generation=3)
    assert answer["generation"] == 3
    front, tcp = answer["load_balancers"]
    assert (front["name"], front["type"], tcp["type"]) == ("front", "application", "network")
    (listener,) = front["listeners"]
    assert (listener["name"], listener["address"], listener["port"]) == ("HTTP:8080", "127.0.0.1", 8080)
    assert [rule["priority"] for rule in listener["rules"]] == [10, 30]
    first, second = listener["rules"]
    assert first["conditions"] == [{"field": "host-header", "values": ["api.example.com"]}]
    assert first["actions"][0]["type"] == "forward" and first["actions"][0]["target_group"] == "web"
    assert second["actions"] == [{"type": "redirect", "status_code": "HTTP_301", "path": "/new/#{path}"}]
    assert listener["default_actions"][0]["type"] == "fixed-response"
    assert listener["default_actions"][0]["status_code"] == 404
    assert tcp["listeners"][0]["rules"] == []


EDGE_CONFIG = """
node: {zone: zone-a, workers: 2}
load_balancers:
  - name: front
    type: application
    listeners:
      - protocol: HTTP
        address: 127.0.0.1
        port: 8080
        default_actions: [{type: forward, target_group: web}]
target_groups:
  - {name: web, protocol: HTTP, targets: [{id: 127.0.0.1, port: 9001}]}
  - {name: spare, protocol: HTTP, targets: [{id: 127.0.0.1, port: 9002}]}
distributions:
  - name: site
    listeners: [{protocol: HTTP, address: 127.0.0.1, port: 8088}]
    origins: [{id: app, target_group: web, origin_path: /v1}, {id: backup, target_group: spare}]
    origin_groups: [{id: ha, members: [app, backup], failover_status_codes: [502, 503]}]
    cache_policies: [{name: assets, default_ttl: 600}]
    default_cache_behavior: {origin: ha}
    cache_behaviors:
      - {path_pattern: "/static/*", origin: app, cache_policy: assets, compress: true}
      - path_pattern: "/api/*"
        origin: app
        cache_policy: {default_ttl: 0, max_ttl: 0}
        allowed_methods: ALL
web_acls:
  - name: guard
    default_action: block
    associations: [{distribution: site}, {load_balancer: front}]
    rules:
      - name: count-bots
        priority: 5
        action: count
        statement: {byte_match: {field: single_header, header: User-Agent, positional: CONTAINS, value: bot}}
      - name: open
        priority: 1
        action: allow
        statement: {byte_match: {field: uri_path, positional: STARTS_WITH, value: /public/}}
"""


def edge_report(hits: int, misses: int, latencies: list[float]) -> dict[str, Any]:
    """What one worker answers to "stats" for the edge and the WAF: its EdgeStats and WafStats."""
    from lbd.edge.store import DistributionCache
    from lbd.waf.acl import WafStats

    cache = DistributionCache("site", 1 << 20, 1 << 16)
    for _ in range(hits):
        cache.stats.count("hit", 200)
    for _ in range(misses):
        cache.stats.count("miss", 200)
    cache.stats.count("error", 503)
    cache.stats.bytes_sent = 1000 * (hits + misses)
    cache.stats.origin_failovers = 1
    for seconds in latencies:
        cache.stats.origin_latency.observe(seconds)
    waf = WafStats()
    waf.allowed.update({"open": hits, "Default_Action": 0})
    waf.blocked["Default_Action"] = misses
    waf.counted["count-bots"] = 1
    return {"distributions": [cache.report()], "web_acls": [{"web_acl": "guard", **waf.as_dict()}]}


@pytest.mark.parametrize("held", ["models", "records"])
def test_distributions_and_web_acls_in_the_summary_add_up_the_workers(held: str) -> None:
    from lbd.config.plain import compact, thaw
    from lbd.observe.edge_summary import summary_parts

    config = parse_config(EDGE_CONFIG)
    if held == "records":  # as the supervisor holds the config (lbd/validator.py)
        config = thaw(compact(config))
    node = NodeStats(workers=2)
    node.add_worker(edge_report(hits=6, misses=2, latencies=[0.0004, 0.0004]))
    node.add_worker(edge_report(hits=2, misses=0, latencies=[0.2]))
    invalidation = {"id": "I1", "status": "InProgress", "create_time": "t", "paths": ["/a", "/b"]}
    parts = summary_parts(config, node, config.web_acls, ["guard"], {"site": [invalidation]})

    (site,) = parts["distributions"]
    assert site["listeners"] == [
        {"name": "HTTP:8088", "protocol": "HTTP", "address": "127.0.0.1", "port": 8088}
    ]
    assert site["origins"][0] == {"id": "app", "target_group": "web", "api": None, "origin_path": "/v1"}
    assert site["origin_groups"] == [
        {"id": "ha", "members": ["app", "backup"], "failover_status_codes": [502, 503]}
    ]
    static, api, default = site["behaviors"]
    assert (static["path_pattern"], static["origins"], static["compress"]) == ("/static/*", ["app"], True)
    assert static["cache_policy"] == {
        "name": "assets",
        "kind": "named",
        "min_ttl": 0,
        "default_ttl": 600,
        "max_ttl": 31_536_000,
        "caching": True,
    }
    assert (api["cache_policy"]["kind"], api["cache_policy"]["caching"], api["allowed_methods"]) == (
        "inline",
        False,
        "ALL",
    )
    assert (default["path_pattern"], default["origin"], default["origins"]) == ("*", "ha", ["app", "backup"])
    assert (default["cache_policy"]["name"], default["cache_policy"]["kind"]) == (
        "CachingOptimized",
        "managed",
    )
    assert site["web_acl"] == "guard"
    assert site["invalidations"] == {
        "count": 1,
        "in_progress": 1,
        "latest": {"id": "I1", "status": "InProgress", "create_time": "t", "paths": 2},
    }
    # Two workers' counters added up, as lbd_edge_* adds them.
    assert site["requests"] == 12 and site["results"] == {
        "hit": 8,
        "refresh_hit": 0,
        "miss": 2,
        "stale": 0,
        "error": 2,
    }
    assert (site["cache_hits"], site["cache_misses"], site["cache_hit_ratio"]) == (8, 2, 0.8)
    assert (site["responses"]["2xx"], site["http_5xx"], site["http_4xx"]) == (10, 2, 0)
    assert (site["bytes_sent"], site["origin_failovers"]) == (10_000, 2)
    latency = site["origin_latency"]
    assert sum(latency["counts"]) == 3 and latency["p50_seconds"] == pytest.approx(
        0.00025 + 0.00025 * 1.5 / 2
    )

    (guard,) = parts["web_acls"]
    assert (guard["name"], guard["default_action"], guard["changed_through_api"]) == ("guard", "block", True)
    assert guard["associations"] == [{"distribution": "site"}, {"load_balancer": "front"}]
    # In priority order, each with its own counts; the default action's apart; totals over all of them.
    assert [(r["name"], r["priority"], r["action"], r["statement"]) for r in guard["rules"]] == [
        ("open", 1, "allow", "byte_match"),
        ("count-bots", 5, "count", "byte_match"),
    ]
    open_rule, bots = guard["rules"]
    assert (open_rule["allowed"], open_rule["blocked"], bots["counted"]) == (8, 0, 2)
    assert guard["default"] == {"allowed": 0, "blocked": 2}
    assert (guard["allowed"], guard["blocked"], guard["counted"], guard["requests"]) == (8, 2, 2, 10)


def test_a_config_without_distributions_or_web_acls_adds_neither_key() -> None:
    from lbd.observe.edge_summary import summary_parts

    config = parse_config(CONFIG)
    assert summary_parts(config, NodeStats(), config.web_acls, [], {}) == {}
