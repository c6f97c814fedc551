"""A worker loads what its data path needs, and nothing else (issue 11, footprint).

The supervisor has a child validate the config with pydantic (lbd/validator.py) and sends workers plain data
(lbd/config/plain.py); h2, the certificate tooling and AES-GCM load only for the listeners and stickiness
that use them. These tests
read the modules the real processes of ``lbd run`` had loaded when they exited: a ``sitecustomize`` on the
test's PYTHONPATH writes ``sys.modules`` at exit (for the supervisor and each worker, which inherit it).
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from lbd.config.loader import parse_config
from lbd.config.plain import PlainMap, Record, compact, thaw
from lbd.config.schema import Listener, LoadBalancer
from lbd.observe.stats import StatsRegistry
from lbd.routing.stickiness import http_date
from lbd.runtime import Snapshot
from tests.gateway_auth_servers import AUDIENCE, ISSUER, ec_key, jwk, token
from tests.http_backend import HttpBackend
from tests.lbdproc import application_config, free_port, http_request

HOOK = """
import atexit, json, os, sys

def _dump():
    path = os.path.join(os.environ["LBD_TEST_MODULES"], f"{os.getpid()}.json")
    with open(path, "w") as out:
        json.dump({"argv": sys.argv, "modules": sorted(sys.modules)}, out)

atexit.register(_dump)
"""
# What a worker must not hold to serve plain HTTP/1.1.
NOT_FOR_HTTP = ("pydantic", "pydantic_core", "aiohttp", "yaml", "h2", "hyperframe", "cryptography")


def record_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every lbd process started after this writes the modules it had loaded, at exit, into the
    directory returned (a sitecustomize on PYTHONPATH: HOOK)."""
    hook, out = tmp_path / "hook", tmp_path / "modules"
    hook.mkdir()
    out.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("LBD_TEST_MODULES", str(out))
    return out


def _top_level(modules: list[str]) -> set[str]:
    return {name.partition(".")[0] for name in modules}


Request = tuple[str, dict[str, str], int]  # path, headers, the status it must get


async def _loaded_modules(
    tmp_path: Path,
    lbd: Any,
    config: dict[str, Any],
    port: int,
    monkeypatch: pytest.MonkeyPatch,
    requests: list[Request] | None = None,
    exchange: Callable[[], Awaitable[None]] | None = None,
) -> tuple[set[str], set[str]]:
    """Run lbd on ``config``, send the requests (default: GET /hello, 200) through it, or run
    ``exchange`` instead, stop it: (supervisor's, worker's) modules."""
    out = record_modules(tmp_path, monkeypatch)
    proc = lbd(config)
    await proc.wait_ready()
    if exchange is not None:
        await exchange()
    for path, headers, expected in [] if exchange is not None else requests or [("/hello", {}, 200)]:
        status, _, body = await http_request(port, "GET", path, headers=headers)
        assert status == expected, (path, body)
    proc.stop()
    assert proc.process.returncode == 0, proc.log
    dumps = [json.loads(path.read_text()) for path in out.glob("*.json")]
    workers = [d for d in dumps if any(arg.endswith(("lbd.worker", "worker.py")) for arg in d["argv"][:1])]
    supervisors = [d for d in dumps if "run" in d["argv"]]
    assert len(workers) == 1 and len(supervisors) == 1, [d["argv"] for d in dumps]
    return _top_level(supervisors[0]["modules"]), _top_level(workers[0]["modules"])


async def test_an_http_worker_loads_neither_pydantic_nor_aiohttp_nor_h2(
    tmp_path: Path, lbd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = await HttpBackend("b1").start()
    try:
        port = free_port()
        supervisor, worker = await _loaded_modules(
            tmp_path, lbd, application_config(port, [backend.port]), port, monkeypatch
        )
    finally:
        await backend.close()
    assert "h11" in supervisor  # the hook sees what a process loaded (h11: the admin API server)
    assert "uvloop" in worker and "httptools" in worker
    assert sorted(set(NOT_FOR_HTTP) & worker) == []


async def test_a_listener_that_offers_h2_loads_h2_in_the_worker(
    tmp_path: Path, lbd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = await HttpBackend("b1").start()
    try:
        port = free_port()
        config = application_config(port, [backend.port])
        config["load_balancers"][0]["listeners"][0]["h2c"] = True
        _, worker = await _loaded_modules(tmp_path, lbd, config, port, monkeypatch)
    finally:
        await backend.close()
    assert "h2" in worker
    assert sorted({"pydantic", "aiohttp", "yaml"} & worker) == []


def _api_config(port: int, backend: int, jwks_file: Path) -> dict[str, Any]:
    """An HTTP API: a JWT-authorized proxy route (keys from a file), a MOCK route with headers, a gateway
    response with headers (mapping fields of the schema), and a usage plan."""
    return {
        "node": {"zone": "zone-a", "workers": 1},
        "target_groups": [
            {
                "name": "app",
                "protocol": "HTTP",
                "health_check": {"enabled": False},
                "targets": [{"id": "127.0.0.1", "port": backend}],
            }
        ],
        "apis": [
            {
                "name": "shop",
                "listeners": [{"protocol": "HTTP", "port": port, "address": "127.0.0.1"}],
                "authorizers": [
                    {
                        "name": "users",
                        "type": "JWT",
                        "issuer": ISSUER,
                        "audience": [AUDIENCE],
                        "jwks_file": str(jwks_file),
                    }
                ],
                "routes": [
                    {
                        "route_key": "GET /hello",
                        "integration": {"type": "HTTP_PROXY", "target_group": "app"},
                        "authorizer": "users",
                    },
                    {
                        "route_key": "GET /mock",
                        "integration": {"type": "MOCK", "body": "m", "headers": {"X-Mock": "yes"}},
                    },
                ],
                "gateway_responses": {"UNAUTHORIZED": {"status_code": 401, "headers": {"X-Why": "token"}}},
            }
        ],
        "usage_plans": [
            {"name": "basic", "apis": [{"api": "shop"}], "throttle": {"rate_limit": 100, "burst_limit": 100}}
        ],
    }


def _web_acl(ip_file: Path) -> dict[str, Any]:
    """A web ACL of every statement family the engine compiles, on load balancer ``alb``."""
    admin = {
        "field": "uri_path",
        "positional": "STARTS_WITH",
        "value": "/admin",
        "transformations": ["LOWERCASE"],
    }
    agent = {
        "field": "single_header",
        "header": "User-Agent",
        "positional": "CONTAINS",
        "value": "sqlmap",
        "transformations": ["NONE"],
    }
    return {
        "name": "guard",
        "associations": [{"load_balancer": "alb"}],
        "ip_sets": [
            {"name": "deny", "addresses": ["192.0.2.0/24"]},
            {"name": "listed", "file": str(ip_file)},
        ],
        "rules": [
            {
                "name": "admin",
                "priority": 1,
                "action": {"block": {"status_code": 404, "body": "nothing here"}},
                "statement": {"byte_match": admin},
            },
            {
                "name": "deny",
                "priority": 2,
                "action": "block",
                "statement": {"or": [{"ip_set": {"name": "deny"}}, {"ip_set": {"name": "listed"}}]},
            },
            {
                "name": "scanner",
                "priority": 3,
                "action": {"count": {"insert_headers": [{"name": "scanner", "value": "yes"}]}},
                "statement": {"not": {"not": {"byte_match": agent}}},
            },
            {
                "name": "flood",
                "priority": 4,
                "action": "block",
                "statement": {"rate_based": {"limit": 1000, "window_seconds": 60}},
            },
        ],
    }


async def test_an_api_worker_with_a_jwt_authorizer_loads_only_what_jwts_need(
    tmp_path: Path, lbd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [jwk("e1", ec_key("e1"), alg="ES256")]}))
    good = {"Authorization": "Bearer " + token(ec_key("e1"), "e1", time.time(), "ES256")}
    backend = await HttpBackend("b1").start()
    try:
        port = free_port()
        config = _api_config(port, backend.port, jwks_file)
        requests = [("/hello", good, 200), ("/hello", {}, 401), ("/mock", {}, 200)]
        _, worker = await _loaded_modules(tmp_path, lbd, config, port, monkeypatch, requests)
    finally:
        await backend.close()
    # Allowed: PyJWT verifies the token, and it verifies ES256 and RS256 signatures with cryptography.
    # Everything else of NOT_FOR_HTTP stays out (the JWKS is a file: no aiohttp client either).
    assert "jwt" in worker and "cryptography" in worker
    assert sorted((set(NOT_FOR_HTTP) - {"cryptography"}) & worker) == []


async def test_a_web_acl_worker_loads_neither_pydantic_nor_aiohttp_nor_h2(
    tmp_path: Path, lbd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ip_file = tmp_path / "listed.txt"
    ip_file.write_text("# reserved for documentation\n198.51.100.0/24\n")
    backend = await HttpBackend("b1").start()
    try:
        port = free_port()
        config = application_config(port, [backend.port])
        config["web_acls"] = [_web_acl(ip_file)]
        requests = [("/hello", {"User-Agent": "sqlmap/1.0"}, 200), ("/Admin/x", {}, 404)]
        _, worker = await _loaded_modules(tmp_path, lbd, config, port, monkeypatch, requests)
    finally:
        await backend.close()
    assert "lbd" in worker
    assert sorted(set(NOT_FOR_HTTP) & worker) == []  # no allowance: the engine needs none of them


def _distribution_config(port: int, backend: int) -> dict[str, Any]:
    """A distribution (lbd/edge) in front of one target group: a cached default behavior, a custom
    policy on /api/*, an origin access header, a custom error response (mapping fields included)."""
    return {
        "node": {"zone": "zone-a", "workers": 1},
        "target_groups": [
            {
                "name": "web",
                "protocol": "HTTP",
                "health_check": {"enabled": False},
                "targets": [{"id": "127.0.0.1", "port": backend}],
            }
        ],
        "distributions": [
            {
                "name": "site",
                "listeners": [{"protocol": "HTTP", "port": port, "address": "127.0.0.1"}],
                "origins": [
                    {
                        "id": "app",
                        "target_group": "web",
                        "custom_headers": {"x-from": "edge"},
                        "origin_access": {"type": "header", "secret": "s3cret"},
                    }
                ],
                "cache_policies": [
                    {"name": "short", "min_ttl": 0, "default_ttl": 5, "max_ttl": 10, "query_strings": "all"}
                ],
                "default_cache_behavior": {"origin": "app", "cache_policy": "CachingOptimized"},
                "cache_behaviors": [{"path_pattern": "/api/*", "origin": "app", "cache_policy": "short"}],
                "custom_error_responses": [{"error_code": 404, "error_caching_min_ttl": 1}],
            }
        ],
    }


async def test_a_distribution_worker_loads_neither_pydantic_nor_aiohttp_nor_yaml(
    tmp_path: Path, lbd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = await HttpBackend("b1").start()
    try:
        port = free_port()
        requests: list[Request] = [("/hello", {}, 200), ("/hello", {}, 200), ("/api/x?q=1", {}, 200)]
        _, worker = await _loaded_modules(
            tmp_path, lbd, _distribution_config(port, backend.port), port, monkeypatch, requests
        )
        # The origin got the requests through the stand-in load balancer, with the origin's headers.
        assert backend.requests and all(r.header("x-origin-secret") == "s3cret" for r in backend.requests)
        assert all(r.header("x-from") == "edge" for r in backend.requests)
    finally:
        await backend.close()
    assert "lbd" in worker and "httptools" in worker
    # No compression configured, so no brotli (imported with the config only when a behavior compresses
    # with a Brotli-keyed policy); an HTTP viewer listener offers no h2 (CloudFront: h2 by ALPN on HTTPS).
    assert sorted(set(NOT_FOR_HTTP) & worker) == []


async def test_a_websocket_api_worker_loads_neither_pydantic_nor_aiohttp_nor_yaml(
    tmp_path: Path, lbd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from websockets.asyncio.client import connect

    from tests.lbdproc import wait_for
    from tests.test_gateway_api import group, proxy

    backend = await HttpBackend("b1").start()
    port = free_port()
    routes = [
        {"route_key": "$connect", "integration": proxy("/connect")},
        {"route_key": "echo", "integration": proxy("/echo")},
    ]
    config = {
        "node": {"zone": "zone-a", "workers": 1},
        "target_groups": [group("app", backend)],
        "apis": [
            {
                "name": "chat",
                "protocol": "WEBSOCKET",
                "listeners": [{"protocol": "HTTP", "port": port, "address": "127.0.0.1"}],
                "route_selection_expression": "$request.body.action",
                "routes": routes,
            }
        ],
    }

    async def chat() -> None:
        async with connect(f"ws://127.0.0.1:{port}/room") as ws:
            await ws.send(json.dumps({"action": "echo", "text": "hi"}))
            await wait_for(
                lambda: [r for r in backend.requests if r.target == "/echo"], what="the message at /echo"
            )

    try:
        _, worker = await _loaded_modules(tmp_path, lbd, config, port, monkeypatch, exchange=chat)
    finally:
        await backend.close()
    # wsproto (and the h11 it parses the upgrade with) is the WebSocket protocol itself.
    assert "wsproto" in worker
    assert sorted(set(NOT_FOR_HTTP) & worker) == []


def test_apis_and_web_acls_from_plain_records_are_the_models(tmp_path: Path) -> None:
    ip_file = tmp_path / "listed.txt"
    ip_file.write_text("198.51.100.0/24\n")
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [jwk("e1", ec_key("e1"), alg="ES256")]}))
    data = _api_config(free_port(), 81, jwks_file)
    data.update(application_config(free_port(), [82], extra_groups=data["target_groups"]))
    data["web_acls"] = [_web_acl(ip_file)]
    config = parse_config(json.dumps(data))
    plain = thaw(json.loads(json.dumps(compact(config))))
    models = Snapshot.build(config, 1, StatsRegistry())
    records = Snapshot.build(plain, 1, StatsRegistry())
    assert list(records.listeners) == list(models.listeners)
    for key, runtime in models.listeners.items():
        other = records.listeners[key]
        assert other.kind == runtime.kind
        # The API's listener and load balancer are Records with every field of the schema's models.
        assert set(vars(other.listener)) == set(Listener.model_fields)
        assert set(vars(other.load_balancer)) == set(LoadBalancer.model_fields)
        waf, plain_waf = getattr(runtime, "dispatcher", None), getattr(other, "dispatcher", None)
        if waf is not None:
            assert waf.waf is not None and plain_waf.waf is not None
            assert [r.name for r in plain_waf.waf.acl.rules] == [r.name for r in waf.waf.acl.rules]
            assert (plain_waf.waf.uses_headers, plain_waf.waf.needs_body) == (
                waf.waf.uses_headers,
                waf.waf.needs_body,
            )
    assert any(runtime.kind == "api" for runtime in records.listeners.values())
    # Mapping fields stay mappings (a header named like a field would otherwise become an attribute).
    api = plain.apis[0]
    assert isinstance(api.gateway_responses, PlainMap)
    assert api.gateway_responses["UNAUTHORIZED"].headers == {"X-Why": "token"}
    assert api.routes[1].integration.headers == {"X-Mock": "yes"}
    with pytest.raises(TypeError):
        api.routes[1].integration.headers["X-Mock"] = "no"
    # The authorizer's kind is its type field, not its class.
    from lbd.gateway.auth import build_authorizer
    from lbd.gateway.auth.jwt import JwtAuthorizerEngine

    assert isinstance(build_authorizer(api.authorizers[0], None, time.time), JwtAuthorizerEngine)  # type: ignore[arg-type]


CONFIG = """
node: {zone: zone-a}
load_balancers:
  - name: web
    type: application
    listeners:
      - protocol: HTTP
        port: 8080
        default_actions: [{type: fixed-response, status_code: 404}]
        rules:
          - priority: 1
            conditions:
              - {field: query-string, values: [{key: a, value: "b*"}]}
              - {field: path-pattern, values: ["/api/*"]}
            actions: [{type: forward, target_groups: [{name: api, weight: 3}, {name: www}]}]
          - priority: 2
            conditions: [{field: host-header, values: [old.example.com]}]
            actions: [{type: redirect, status_code: HTTP_301, host: new.example.com}]
  - name: old
    type: classic
    listeners: [{protocol: TCP, port: 9000, instance_protocol: TCP, instance_port: 80}]
    instances: [{id: 127.0.0.1}]
target_groups:
  - name: api
    protocol: HTTP
    stickiness: {enabled: true}
    targets: [{id: 127.0.0.1, port: 81}]
  - name: www
    protocol: HTTP
    targets: [{id: 127.0.0.1, port: 82}]
"""


def test_a_snapshot_from_plain_records_is_the_one_from_the_models() -> None:
    from lbd.classic import expand

    config = expand(parse_config(CONFIG))
    plain = thaw(json.loads(json.dumps(compact(config))))  # as it crosses the control channel
    models = Snapshot.build(config, 1, StatsRegistry())
    records = Snapshot.build(plain, 1, StatsRegistry())
    assert list(records.listeners) == list(models.listeners)
    assert list(records.target_groups) == list(models.target_groups)
    for name, group in models.target_groups.items():
        assert [t.key for t in records.target_groups[name].targets] == [t.key for t in group.targets]
        assert (records.target_groups[name].sticky is None) == (group.sticky is None)
    listener = plain.load_balancers[0].listeners[0]
    assert isinstance(listener, Record)
    assert listener.rules[0].conditions[0].values[0].key == "a"
    assert listener.rules[0].actions[0].target_groups[1].weight == 1  # defaults filled in
    assert plain.load_balancers[1].listeners[0].default_actions[0].type == "forward"  # classic, expanded


def test_a_distributions_stand_ins_from_plain_records_are_the_models() -> None:
    """The edge's stand-in load balancers (lbd/edge/runtime.py) are copies of the templates compact sends,
    with the fields the schema's models would have had."""
    from lbd.config.plain import templates, thaw_value

    config = parse_config(json.dumps(_distribution_config(8000, 9000)))
    plain = thaw(json.loads(json.dumps(compact(config))))
    records = Snapshot.build(plain, 1, StatsRegistry())
    models = Snapshot.build(config, 1, StatsRegistry())
    assert list(records.listeners) == list(models.listeners)
    edge = next(runtime for runtime in records.listeners.values() if runtime.kind == "edge")
    forward = {"type": "forward", "target_group": "web"}
    listener = Listener.model_validate(
        {"protocol": "HTTP", "port": 8000, "address": "127.0.0.1", "default_actions": [forward]}
    )
    origin_lb = LoadBalancer(
        name="site",
        type="application",
        cross_zone=True,
        idle_timeout_seconds=30,
        preserve_host_header=True,
        listeners=(listener,),
    )
    as_record = thaw_value(origin_lb.model_dump(mode="json"))  # (no mapping fields in a load balancer)
    assert edge.distribution.origins["app"].listener.load_balancer == as_record  # type: ignore[attr-defined]
    assert thaw_value(templates()["forward"]).target_groups[0].weight == 1


def test_records_are_read_only_and_equal_by_their_fields() -> None:
    one = thaw({"node": {"zone": "a"}, "load_balancers": [{"name": "x"}]})
    two = thaw({"node": {"zone": "a"}, "load_balancers": [{"name": "x"}]})
    assert one == two and hash(one) == hash(two)
    assert one != thaw({"node": {"zone": "b"}, "load_balancers": [{"name": "x"}]})
    with pytest.raises(AttributeError):
        one.node = two.node  # type: ignore[misc]


def test_http_date_is_what_email_utils_writes() -> None:
    moments = [
        0,
        951782400,
        1709164800,
        2**31,
        4102444799,
        *(random.randrange(0, 2**34) for _ in range(2000)),
    ]
    for moment in moments:
        assert http_date(moment) == email.utils.formatdate(moment, usegmt=True), moment
