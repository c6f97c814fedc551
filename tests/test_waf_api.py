"""Web ACLs in front of APIs, through a real ``lbd run``, real targets and a real redis-server: WAF runs
before API Gateway (blocks, custom responses, count and inserted headers, rate per API key), and a
rate-based rule counted fleet-wide by two lbd processes sharing one Redis, with its in-process fallback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from lbd.config.loader import ConfigError, parse_config
from tests.conftest import LbdFactory
from tests.lbdproc import application_config, free_port, http_request, wait_for
from tests.redis_server import RedisServer
from tests.test_gateway_api import Backends, create_key, group, metric, proxy
from tests.test_waf_alb import byte, rule


def api_config(port: int, backend: Any, rules: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "target_groups": [group("app", backend)],
        "apis": [
            {
                "name": "shop",
                "listeners": [{"protocol": "HTTP", "port": port, "address": "127.0.0.1"}],
                "routes": [
                    {"route_key": "GET /open", "integration": proxy("/")},
                    {"route_key": "GET /paid", "integration": proxy("/"), "api_key_required": True},
                ],
            }
        ],
        "usage_plans": [{"name": "basic", "apis": [{"api": "shop"}]}],
        "web_acls": [
            {
                "name": "protect",
                "default_action": "allow",
                "associations": [{"api": "shop"}],
                "rules": rules,
            }
        ],
        **extra,
    }


API_RULES = [
    rule("deny", 1, {"ip_set": {"addresses": ["192.0.2.0/24"], "forwarded_ip": {"position": "FIRST"}}}),
    rule(
        "admin",
        2,
        byte("uri_path", "STARTS_WITH", "/admin", "URL_DECODE", "LOWERCASE"),
        {
            "block": {
                "status_code": 404,
                "body": "nothing here",
                "headers": [{"name": "X-Blocked-By", "value": "waf"}],
            }
        },
    ),
    rule(
        "scanner",
        3,
        byte("single_header", "CONTAINS", "sqlmap", "LOWERCASE", header="User-Agent"),
        {"count": {"insert_headers": [{"name": "scanner", "value": "yes"}]}},
    ),
    rule(
        "per-key",
        4,
        {"rate_based": {"limit": 10, "window_seconds": 60, "aggregate_key": "api_key"}},
        {"block": {"status_code": 429, "body": "slow down"}},
    ),
]


async def test_an_api_with_a_web_acl_blocks_allows_counts_and_limits_per_api_key(
    lbd: LbdFactory, http_backends: Backends, tmp_path: Path
) -> None:
    backend = await http_backends("app")
    port = free_port()
    log_path = tmp_path / "api-access.log"
    config = api_config(port, backend, API_RULES)
    config["apis"][0]["access_log"] = {"path": str(log_path)}
    proc = lbd(config)
    await proc.wait_ready()

    assert (await http_request(port, "GET", "/open"))[0] == 200
    seen = len(backend.requests)
    # IP set on the forwarded address: WAF's default block, API Gateway's WAF_FILTERED response.
    status, _, body = await http_request(port, "GET", "/open", headers={"X-Forwarded-For": "192.0.2.7"})
    assert (status, json.loads(body)) == (403, {"message": "Forbidden"})
    # Before routing: an evasion of /admin on a path the API has no route for meets the custom response,
    # not API Gateway's 404 for a missing route.
    status, headers, body = await http_request(port, "GET", "/%41DMIN/users")
    assert (status, body, headers.get("x-blocked-by")) == (404, b"nothing here", "waf")
    assert len(backend.requests) == seen  # nothing blocked reached the target
    # Count: the request goes on, with the header the rule inserts.
    assert (await http_request(port, "GET", "/open", headers={"User-Agent": "sqlmap/1.7"}))[0] == 200
    assert backend.requests[-1].header("x-amzn-waf-scanner") == "yes"
    assert backend.requests[-2].header("x-amzn-waf-scanner") is None

    # Rate per API key: each key has its own count; the 11th request of key A is blocked, B goes on.
    key_a, key_b = await create_key(proc), await create_key(proc)
    statuses = [
        (await http_request(port, "GET", "/paid", headers={"x-api-key": key_a["value"]}))[0]
        for _ in range(12)
    ]
    assert statuses == [200] * 10 + [429] * 2
    assert (await http_request(port, "GET", "/paid", headers={"x-api-key": key_b["value"]}))[0] == 200
    assert (await http_request(port, "GET", "/open"))[0] == 200  # no key: not counted

    labels = {"web_acl": "protect"}
    assert await metric(proc, "lbd_waf_blocked_requests_total", rule="per-key", **labels) == 2
    assert await metric(proc, "lbd_waf_blocked_requests_total", rule="deny", **labels) == 1
    assert await metric(proc, "lbd_waf_blocked_requests_total", rule="admin", **labels) == 1
    assert await metric(proc, "lbd_waf_counted_requests_total", rule="scanner", **labels) == 1
    assert await metric(proc, "lbd_waf_allowed_requests_total", rule="Default_Action", **labels) == 14

    def lines() -> list[dict[str, Any]]:
        text = log_path.read_text() if log_path.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    entries = await wait_for(lambda: len(lines()) >= 18 and lines(), what="18 access-log lines")
    blocked = [
        (e["wafResponseCode"], e["wafRule"], e["status"])
        for e in entries
        if e["wafResponseCode"] == "WAF_BLOCK"
    ]
    assert (
        blocked
        == [("WAF_BLOCK", "deny", 403), ("WAF_BLOCK", "admin", 404)] + [("WAF_BLOCK", "per-key", 429)] * 2
    )
    assert {e["wafRule"] for e in entries if e["wafResponseCode"] == "WAF_ALLOW"} == {"Default_Action"}
    assert {e["errorType"] for e in entries if e["wafRule"] == "deny"} == {"WAF_FILTERED"}


def test_api_associations_name_an_api_of_the_file() -> None:
    base = (
        "apis:\n  - {name: shop, listeners: [{protocol: HTTP, port: 18090}],\n"
        "     routes: [{route_key: GET /, integration: {type: MOCK}}]}\n"
    )
    config = parse_config(base + "web_acls:\n  - {name: a, associations: [{api: shop}]}\n")
    assert config.web_acls[0].associations[0].api == "shop"
    with pytest.raises(ConfigError) as refused:
        parse_config(
            base
            + "web_acls:\n  - {name: a, associations: [{api: shop}]}\n"
            + "  - {name: b, associations: [{api: pets}, {api: shop}]}\n"
        )
    text = str(refused.value)
    assert "web_acls[1].associations[0].api: no API named 'pets' (defined: shop)" in text
    assert "web_acls[1].associations[1].api: 'shop' is already associated with web ACL 'a'" in text
    websocket = (
        "apis:\n  - {name: chat, protocol: WEBSOCKET, listeners: [{protocol: HTTP, port: 18091}],\n"
        "     routes: [{route_key: $default, integration: {type: MOCK}}]}\n"
    )
    with pytest.raises(ConfigError) as refused:
        parse_config(websocket + "web_acls:\n  - {name: a, associations: [{api: chat}]}\n")
    assert (
        "web_acls[0].associations[0].api: 'chat' is a WEBSOCKET API; web ACLs protect REST and HTTP APIs"
        in str(refused.value)
    )


# -- rate counts shared through Redis ----------------------------------------------------------------------

LIMIT = 10
FLOOD = rule(
    "flood", 1, {"rate_based": {"limit": LIMIT, "window_seconds": 60, "aggregate_key": "ip"}}, "block"
)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.kill()


def fleet_count(client: redis.Redis) -> int:
    """The count Redis holds for the flood rule's key (127.0.0.1), over the window's slices."""
    keys = list(client.scan_iter("lbd:waf:protect:flood:60:127.0.0.1:*"))
    return sum(int(v) for v in client.mget(keys) if v is not None) if keys else 0


def alb_config(port: int, backend: Any, rules: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    config = application_config(port, [backend.port])
    config["web_acls"] = [
        {
            "name": "protect",
            "default_action": "allow",
            "associations": [{"load_balancer": "alb"}],
            "rules": rules,
        }
    ]
    return {**config, **extra}


@pytest.mark.parametrize("front", ["api", "alb"])
async def test_two_nodes_share_one_rate_limit_through_redis(
    lbd: LbdFactory, http_backends: Backends, redis_server: RedisServer, front: str
) -> None:
    backend = await http_backends("app")
    ports = [free_port(), free_port()]
    make = api_config if front == "api" else alb_config
    shared = {"redis": redis_server.url, "timeout_ms": 1000}
    nodes = [lbd(make(port, backend, [FLOOD], shared_state=shared)) for port in ports]
    for node in nodes:
        await node.wait_ready()
    client = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    statuses = []
    for n in range(1, 3 * LIMIT + 1):
        statuses.append((await http_request(ports[n % 2], "GET", "/open"))[0])
        # Every hit reaches Redis within a flush (~100 ms): the next request meets a node whose count is
        # at most its last flush behind (docs/waf.md, "Across a fleet").
        await wait_for(lambda n=n: fleet_count(client) == n, what=f"{n} hits in Redis")
    passed = statuses.count(200)
    # Alone, each node would let LIMIT through (2 * LIMIT). Shared: the limit, plus at most the hits the
    # other node made since this one's last read (here, one request pacing the nodes, and one in flight).
    assert LIMIT <= passed <= LIMIT + 2, statuses
    assert statuses[:LIMIT] == [200] * LIMIT and set(statuses[LIMIT + 2 :]) == {403}
    client.close()


async def test_redis_down_falls_back_to_in_process_counts_and_says_so(
    lbd: LbdFactory, http_backends: Backends, redis_server: RedisServer
) -> None:
    backend = await http_backends("app")
    port = free_port()
    proc = lbd(
        api_config(port, backend, [FLOOD], shared_state={"redis": redis_server.url, "timeout_ms": 200})
    )
    await proc.wait_ready()
    client = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    assert [(await http_request(port, "GET", "/open"))[0] for _ in range(3)] == [200] * 3
    await wait_for(lambda: fleet_count(client) == 3, what="3 hits in Redis")
    client.close()
    redis_server.kill()
    await wait_for(
        lambda: "web ACL rate counts are per worker meanwhile" in proc.log, what="the outage logged"
    )
    # The worker's own count goes on from the 3 it served: 7 more pass, then the rule blocks.
    statuses = [(await http_request(port, "GET", "/open"))[0] for _ in range(9)]
    assert statuses == [200] * 7 + [403] * 2
    assert proc.log.count("web ACL rate counts are per worker meanwhile") == 1  # once per outage
    redis_server.start()
    await wait_for(lambda: "web ACL rate counts are fleet-wide again" in proc.log, what="the recovery logged")


# -- the shared store's bookkeeping, without Redis ---------------------------------------------------------


class FakeState:
    workers = 4


def test_shared_window_counts_the_fleet_plus_its_own_unsent_hits() -> None:
    from lbd.config.gateway_auth import SharedState
    from lbd.config.web_acls import RateBased
    from lbd.gateway.redis_rates import RedisRates

    rates = RedisRates(SharedState(redis="redis://127.0.0.1:1/0"))
    rates.task = object()  # type: ignore[assignment]  # no flush loop: the test plays the flushes
    spec = RateBased(limit=100, window_seconds=60)
    store = rates.store("acl", "rule", spec, FakeState())  # type: ignore[arg-type]
    assert store.fleet_wide and rates.store("acl", "rule", spec, FakeState()) is store  # type: ignore[arg-type]
    assert [store.hit("a", 1.0) for _ in range(3)] == [1, 2, 3]
    [(keys, increments)] = store.take()
    assert (keys, increments) == (["a"], [3])
    assert store.hit("a", 1.1) == 4  # 3 in flight + 1 new
    store.synced(keys, [3 + 40])  # the fleet's total, with the other nodes' 40
    assert store.hit("a", 1.2) == 45
    # An early flush sends only the keys with new hits; a full one reads every key seen.
    store.hit("b", 1.3)
    assert store.take(every_key=False) == [(["a", "b"], [2, 1])]
    store.failed()
    assert store.take() == [(["a", "b"], [0, 0])]  # hits of a failed flush are not sent again
    # During an outage: this worker's own count, scaled as the in-process store's limit / workers.
    rates.available = False
    assert store.hit("a", 1.4) == 6 * FakeState.workers
    rates.available = True
    store.sweep(200.0)  # nothing in the window any more: forgotten
    assert store.take() == [] and store.known == {}
