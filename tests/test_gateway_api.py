"""API Gateway listeners end to end: a real lbd, real Python targets, real sockets on loopback.

Time-dependent limits (token buckets, quota periods) run on the gateway's test clock: the environment
variable LBD_TEST_CLOCK_FILE names a file holding the epoch seconds the gateway believes it is
(lbd/gateway/clock.py), so a bucket is exactly its burst and a period boundary is crossed by writing a
number.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import hashes

from tests.conftest import LbdFactory
from tests.http_backend import HttpBackend
from tests.lbdproc import Lbd, free_port, http_request, refused_port, wait_for

Backends = Callable[[str], Awaitable[HttpBackend]]


def group(name: str, *backends: HttpBackend) -> dict[str, Any]:
    return {
        "name": name,
        "protocol": "HTTP",
        "health_check": {
            "enabled": False,
            "protocol": "HTTP",
            "path": "/",
            "timeout_seconds": 2,
            "matcher": "200",
        },
        "targets": [{"id": "127.0.0.1", "port": b.port} for b in backends],
    }


def api(name: str, port: int, routes: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "listeners": [{"protocol": "HTTP", "port": port, "address": "127.0.0.1"}],
        "routes": routes,
        **extra,
    }


def proxy(path: str | None = None, **extra: Any) -> dict[str, Any]:
    integration: dict[str, Any] = {"type": "HTTP_PROXY", "target_group": "app", **extra}
    if path is not None:
        integration["path"] = path
    return integration


async def metric(proc: Lbd, name: str, **labels: str) -> float:
    _, _, body = await http_request(proc.admin_port, "GET", "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.rsplit(" ", 1)[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def create_key(proc: Lbd, plan: str | None = "basic", **body: Any) -> dict[str, Any]:
    status, key = await proc.admin("POST", "/v1/api-keys", json.dumps({"name": "client", **body}).encode())
    assert status == 201, key
    if plan is not None:
        status, joined = await proc.admin(
            "POST", f"/v1/usage-plans/{plan}/keys", json.dumps({"key_id": key["id"]}).encode()
        )
        assert status == 200, joined
    return dict(key)


class Clock:
    def __init__(self, path: Path) -> None:
        self.path = path

    def set(self, moment: float) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(repr(moment))
        tmp.replace(self.path)


@pytest.fixture
def clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(tmp_path / "clock")
    clock.set(datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp())
    monkeypatch.setenv("LBD_TEST_CLOCK_FILE", str(clock.path))
    return clock


async def start(lbd: LbdFactory, config: dict[str, Any], workers: int = 1) -> Lbd:
    proc = lbd(config, workers=workers)
    await proc.wait_ready()
    return proc


# -- routes and integrations ------------------------------------------------------------------------------


async def test_route_forms_precedence_and_unknown_routes(lbd: LbdFactory, http_backends: Backends) -> None:
    backend = await http_backends("app")
    rest, http = free_port(), free_port()
    routes = [
        {"route_key": "GET /pets/dog", "integration": {"type": "MOCK", "body": "literal"}},
        {"route_key": "GET /pets/{id}", "integration": {"type": "MOCK", "body": "param"}},
        {"route_key": "ANY /pets/{id}", "integration": {"type": "MOCK", "body": "any-param"}},
        {"route_key": "GET /files/{path+}", "integration": {"type": "MOCK", "body": "greedy"}},
    ]
    config = {
        "target_groups": [group("app", backend)],
        "apis": [
            api("rest", rest, routes, protocol="REST"),
            api(
                "http",
                http,
                [*routes, {"route_key": "$default", "integration": {"type": "MOCK", "body": "default"}}],
            ),
        ],
    }
    proc = await start(lbd, config)
    for path, method, body in [
        ("/pets/dog", "GET", b"literal"),
        ("/pets/cat", "GET", b"param"),
        ("/pets/cat", "DELETE", b"any-param"),
        ("/files/a/b/c", "GET", b"greedy"),
    ]:
        status, _, payload = await http_request(rest, method, path)
        assert (status, payload) == (200, body), path
    status, headers, payload = await http_request(rest, "GET", "/nothing/here")
    assert (status, json.loads(payload)) == (403, {"message": "Missing Authentication Token"})
    assert headers["content-type"] == "application/json" and headers["x-amzn-requestid"]
    assert (await http_request(http, "GET", "/nothing/here"))[2] == b"default"
    del config["apis"][1]["routes"][-1]  # without $default an HTTP API answers 404
    proc.write_config(config)
    status, result = await proc.admin("POST", "/v1/reload")
    assert status == 200, result
    status, _, payload = await http_request(http, "GET", "/nothing/here")
    assert (status, json.loads(payload)) == (404, {"message": "Not Found"})


async def test_http_proxy_substitutes_parameters_and_passes_query_headers_and_body(
    lbd: LbdFactory, http_backends: Backends
) -> None:
    backend = await http_backends("app")
    port = free_port()
    routes = [
        {"route_key": "POST /items/{id}", "integration": proxy("/echo")},
        {"route_key": "GET /v1/{proxy+}", "integration": proxy("/status/{proxy}")},
        {"route_key": "GET /pets/{id}", "integration": proxy("/pets/{id}/detail")},
        {"route_key": "ANY /{proxy+}", "integration": proxy()},
    ]
    proc = await start(lbd, {"target_groups": [group("app", backend)], "apis": [api("shop", port, routes)]})
    status, _, body = await http_request(port, "POST", "/items/7", b"payload!", {"X-Custom": "yes"})
    assert (status, body) == (200, b"payload!")
    seen = backend.requests[-1]
    assert seen.target == "/echo" and seen.header("x-custom") == "yes"
    assert seen.header("x-forwarded-for") == "127.0.0.1" and seen.header("x-forwarded-proto") == "http"
    assert seen.header("x-forwarded-port") == str(port)
    status, _, body = await http_request(port, "GET", "/v1/418")
    assert (status, body) == (418, b"status 418")  # the target's status and body come back as they are
    await http_request(port, "GET", "/pets/a%20b?lang=en&x=1")
    assert backend.requests[-1].target == "/pets/a%20b/detail?lang=en&x=1"
    await http_request(port, "GET", "/any/where?q=1", headers={"X-Forwarded-For": "192.0.2.1"})
    assert backend.requests[-1].target == "/any/where?q=1"
    assert backend.requests[-1].header("x-forwarded-for") == "192.0.2.1, 127.0.0.1"
    # Keep-alive: the target's head goes on as it came, with the framing lbd's own (one length, no
    # Connection field of the target's), so answer after answer is framed right.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for code in (200, 201):
            writer.write(f"GET /v1/{code} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1").lower()
            assert head.startswith(f"http/1.1 {code} ") and "x-amzn-requestid: " in head
            assert head.count("content-length:") == 1 and "connection:" not in head
            length = int(head.split("content-length:")[1].split("\r\n")[0])
            assert await reader.readexactly(length) == f"status {code}".encode()
    finally:
        writer.close()
    assert proc.process is not None and proc.process.poll() is None


async def test_http_integration_maps_parameters_and_statuses(
    lbd: LbdFactory, http_backends: Backends
) -> None:
    backend = await http_backends("app")
    port = free_port()
    mapped = {
        "type": "HTTP",
        "target_group": "app",
        "path": "/status/{code}",
        "request_parameters": {
            "integration.request.path.code": "method.request.path.code",
            "integration.request.header.x-user": "method.request.header.x-client",
            "integration.request.querystring.lang": "method.request.querystring.l",
            "integration.request.header.x-request-id": "context.requestId",
            "integration.request.header.x-route": "context.routeKey",
            "integration.request.header.x-static": "'fixed'",
        },
        "responses": [
            {"selection_pattern": "2\\d\\d", "status_code": 200},
            {"selection_pattern": "404", "status_code": 410},
            {"status_code": 502},
        ],
    }
    strict = {**mapped, "responses": [{"selection_pattern": "2\\d\\d", "status_code": 200}]}
    routes = [
        {"route_key": "GET /code/{code}", "integration": mapped},
        {"route_key": "GET /strict/{code}", "integration": strict},
    ]
    proc = await start(lbd, {"target_groups": [group("app", backend)], "apis": [api("m", port, routes)]})
    status, headers, _ = await http_request(
        port, "GET", "/code/201?l=fr&other=1", headers={"X-Client": "ann", "X-Drop": "1"}
    )
    assert status == 200
    seen = backend.requests[-1]
    assert seen.target == "/status/201?lang=fr"
    assert (seen.header("x-user"), seen.header("x-static"), seen.header("x-route")) == (
        "ann",
        "fixed",
        "GET /code/{code}",
    )
    assert seen.header("x-request-id") == headers["x-amzn-requestid"]
    assert seen.header("x-drop") is None  # a non-proxy integration sends only what is mapped
    assert (await http_request(port, "GET", "/code/404"))[0] == 410
    assert (await http_request(port, "GET", "/code/503"))[0] == 502  # the default response
    status, _, body = await http_request(port, "GET", "/strict/500")
    assert (status, json.loads(body)) == (
        500,
        {"message": "Internal server error"},
    )  # API_CONFIGURATION_ERROR
    assert proc.process is not None and proc.process.poll() is None


async def test_mock_timeouts_failures_and_gateway_response_overrides(
    lbd: LbdFactory, http_backends: Backends
) -> None:
    backend = await http_backends("app")
    dead = refused_port()  # nothing listens there
    port = free_port()
    routes = [
        {
            "route_key": "GET /mock",
            "integration": {"type": "MOCK", "status_code": 201, "headers": {"X-Mock": "1"}, "body": "{}"},
        },
        {"route_key": "GET /slow", "integration": proxy("/sleep/3000", timeout_ms=200)},
        {"route_key": "GET /patient", "integration": proxy("/sleep/1000", timeout_ms=29_000)},
        {"route_key": "GET /dead", "integration": {"type": "HTTP_PROXY", "target_group": "dead"}},
        {"route_key": "GET /empty", "integration": {"type": "HTTP_PROXY", "target_group": "empty"}},
        {"route_key": "GET /garbage", "integration": proxy("/garbage")},
    ]
    dead_group = group("dead")
    dead_group["targets"] = [{"id": "127.0.0.1", "port": dead}]
    config = {
        "target_groups": [group("app", backend), dead_group, group("empty")],
        "apis": [
            api(
                "m",
                port,
                routes,
                gateway_responses={
                    "INTEGRATION_TIMEOUT": {"status_code": 504, "headers": {"Retry-After": "5"}}
                },
            )
        ],
    }
    await start(lbd, config)
    status, headers, body = await http_request(port, "GET", "/mock")
    assert (status, headers["x-mock"], body) == (201, "1", b"{}")
    # A request with a later deadline in flight first: the earlier one still times out at its own (the
    # worker's one deadline timer moves earlier), and the later one is answered by its target.
    patient = asyncio.create_task(http_request(port, "GET", "/patient"))
    status, headers, body = await http_request(port, "GET", "/slow")
    assert (status, json.loads(body), headers["retry-after"]) == (
        504,
        {"message": "Endpoint request timed out"},
        "5",
    )
    assert (await patient)[0] == 200
    assert (await http_request(port, "GET", "/dead"))[0] == 502
    status, _, body = await http_request(port, "GET", "/empty")
    assert (status, json.loads(body)) == (503, {"message": "Service Unavailable"})
    assert (await http_request(port, "GET", "/garbage"))[0] == 502


async def test_bad_input_gets_a_gateway_response_and_a_closed_connection(
    lbd: LbdFactory, http_backends: Backends
) -> None:
    backend = await http_backends("app")
    port = free_port()
    proc = await start(
        lbd,
        {
            "target_groups": [group("app", backend)],
            "apis": [api("m", port, [{"route_key": "POST /up", "integration": proxy("/echo")}])],
        },
    )

    async def raw(data: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        try:
            return await asyncio.wait_for(reader.read(-1), 10)  # read to EOF: lbd closes
        finally:
            writer.close()

    answer = await raw(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ") and b'{"message":"Bad Request"}' in answer
    answer = await raw(b"\x16\x03\x01\x00garbage\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    too_large = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (10 * 1024 * 1024 + 1)
    answer = await raw(too_large)  # refused on the head: the body is never waited for
    assert answer.startswith(b"HTTP/1.1 413 ") and b"Request Too Long" in answer
    chunk = b"x" * (1024 * 1024)
    chunked = (
        b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + (b"%x\r\n%b\r\n" % (len(chunk), chunk)) * 11
    )
    answer = await raw(chunked)
    assert answer.startswith(b"HTTP/1.1 413 ")
    answer = await raw(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")
    # A body of exactly the limit goes through.
    status, _, body = await http_request(port, "POST", "/up", b"y" * (10 * 1024 * 1024))
    assert (status, len(body)) == (200, 10 * 1024 * 1024)
    assert "Traceback" not in proc.log


# -- API keys, usage plans, throttles and quotas -----------------------------------------------------------


def keyed_config(port: int, backend: HttpBackend, **plan: Any) -> dict[str, Any]:
    routes = [
        {"route_key": "GET /open", "integration": proxy("/")},
        {"route_key": "GET /paid", "integration": proxy("/"), "api_key_required": True},
    ]
    return {
        "target_groups": [group("app", backend)],
        "apis": [api("shop", port, routes)],
        "usage_plans": [
            {"name": "basic", "apis": [{"api": "shop"}], **plan},
            {"name": "other", "apis": [{"api": "shop"}]},
        ],
    }


async def test_api_keys_lifecycle_through_the_admin_api(lbd: LbdFactory, http_backends: Backends) -> None:
    backend = await http_backends("app")
    port = free_port()
    proc = await start(lbd, keyed_config(port, backend), workers=2)
    forbidden = (403, {"message": "Forbidden"})

    async def paid(value: str | None) -> tuple[int, Any]:
        status, _, body = await http_request(
            port, "GET", "/paid", headers={"x-api-key": value} if value else {}
        )
        return status, json.loads(body) if status != 200 else body

    assert (await http_request(port, "GET", "/open"))[0] == 200  # no key needed
    assert await paid(None) == forbidden
    assert await paid("x" * 40) == forbidden
    key = await create_key(proc, plan=None, value="A" * 30)
    assert key["value"] == "A" * 30
    assert await paid(key["value"]) == forbidden  # in no usage plan of this stage
    await proc.admin("POST", "/v1/usage-plans/basic/keys", json.dumps({"key_id": key["id"]}).encode())
    # Both workers have the key at once (new connections spread over the SO_REUSEPORT sockets).
    assert [(await paid(key["value"]))[0] for _ in range(8)] == [200] * 8
    status, listed = await proc.admin("GET", "/v1/api-keys")
    assert status == 200 and "A" * 30 not in json.dumps(listed)
    status, shown = await proc.admin("GET", f"/v1/api-keys/{key['id']}?include_value=true")
    assert shown["value"] == "A" * 30
    status, refused = await proc.admin(
        "POST", "/v1/usage-plans/other/keys", json.dumps({"key_id": key["id"]}).encode()
    )
    assert status == 409, refused  # one plan per key per stage
    assert (await proc.admin("POST", f"/v1/api-keys/{key['id']}/disable"))[0] == 200
    assert [(await paid(key["value"]))[0] for _ in range(4)] == [403] * 4
    assert (await proc.admin("PATCH", f"/v1/api-keys/{key['id']}", b'{"enabled": true}'))[0] == 200
    assert (await paid(key["value"]))[0] == 200
    assert (await proc.admin("POST", "/v1/api-keys", b'{"name": "dup", "value": "' + b"A" * 30 + b'"}'))[
        0
    ] == 409
    assert (await proc.admin("POST", "/v1/api-keys", b"not json"))[0] == 400
    # Keys survive a restart (saved beside the registrations), and logs never show a value.
    proc.stop()
    proc.start()
    await proc.wait_ready()
    assert (await paid(key["value"]))[0] == 200
    assert (await proc.admin("DELETE", f"/v1/api-keys/{key['id']}"))[0] == 200
    assert [(await paid(key["value"]))[0] for _ in range(4)] == [403] * 4
    assert (await proc.admin("DELETE", f"/v1/api-keys/{key['id']}"))[0] == 404
    assert key["id"] in proc.log and "A" * 30 not in proc.log


async def test_throttle_burst_is_exact_on_a_frozen_clock_and_refills_at_the_rate(
    lbd: LbdFactory, http_backends: Backends, clock: Clock
) -> None:
    backend = await http_backends("app")
    port = free_port()
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp()
    config = keyed_config(port, backend, throttle={"rate_limit": 0.5, "burst_limit": 3})
    config["apis"][0]["routes"][0]["throttle"] = {"rate_limit": 1, "burst_limit": 2}  # stage, per route
    proc = await start(lbd, config)
    key = await create_key(proc)
    headers = {"x-api-key": key["value"]}
    statuses = [(await http_request(port, "GET", "/paid", headers=headers))[0] for _ in range(6)]
    assert statuses == [200, 200, 200, 429, 429, 429]
    status, _, body = await http_request(port, "GET", "/paid", headers=headers)
    assert (status, json.loads(body)) == (429, {"message": "Too Many Requests"})
    clock.set(now + 1.0)  # half a token at 0.5 a second
    assert (await http_request(port, "GET", "/paid", headers=headers))[0] == 429
    clock.set(now + 2.0)
    assert [(await http_request(port, "GET", "/paid", headers=headers))[0] for _ in range(2)] == [200, 429]
    # The stage's route throttle: 2 without a key, then throttled.
    assert [(await http_request(port, "GET", "/open"))[0] for _ in range(3)] == [200, 200, 429]
    assert await metric(proc, "lbd_api_throttled_total", route="GET /paid") == 6
    assert await metric(proc, "lbd_api_throttled_total", route="GET /open") == 1


async def test_quota_across_a_period_boundary_and_usage(
    lbd: LbdFactory, http_backends: Backends, clock: Clock
) -> None:
    backend = await http_backends("app")
    port = free_port()
    day_end = datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC).timestamp()
    clock.set(day_end)
    proc = await start(lbd, keyed_config(port, backend, quota={"limit": 2, "period": "DAY"}))
    key = await create_key(proc)
    headers = {"x-api-key": key["value"]}
    assert [(await http_request(port, "GET", "/paid", headers=headers))[0] for _ in range(2)] == [200, 200]
    status, _, body = await http_request(port, "GET", "/paid", headers=headers)
    assert (status, json.loads(body)) == (429, {"message": "Limit Exceeded"})
    status, usage = await proc.admin("GET", "/v1/usage-plans/basic/usage")
    assert status == 200 and usage["keys"][key["id"]]["used"] == 2
    assert usage["keys"][key["id"]]["period_end"] == day_end + 1
    clock.set(day_end + 2)  # the next day: a new period
    assert (await http_request(port, "GET", "/paid", headers=headers))[0] == 200
    status, usage = await proc.admin("GET", "/v1/usage-plans/basic/usage")
    assert usage["keys"][key["id"]]["used"] == 1
    assert (await proc.admin("GET", "/v1/usage-plans/nope/usage"))[0] == 404


# -- metrics, access log, CORS, endpoint types ----------------------------------------------------------


async def test_metrics_deltas_and_access_log(
    lbd: LbdFactory, http_backends: Backends, tmp_path: Path
) -> None:
    backend = await http_backends("app")
    port = free_port()
    log_path = tmp_path / "api-access.log"
    config = keyed_config(port, backend)
    config["apis"][0]["access_log"] = {"path": str(log_path)}
    config["apis"][0]["routes"].append({"route_key": "GET /fail", "integration": proxy("/status/503")})
    proc = await start(lbd, config)
    key = await create_key(proc)
    labels = {"api": "shop", "stage": "prod"}
    before = {
        name: await metric(proc, name, route=route, **labels)
        for name, route in [
            ("lbd_api_requests_total", "GET /paid"),
            ("lbd_api_latency_seconds_count", "GET /paid"),
            ("lbd_api_integration_latency_seconds_count", "GET /paid"),
        ]
    }
    assert before == dict.fromkeys(before, 0.0)
    for _ in range(3):
        await http_request(port, "GET", "/paid", headers={"x-api-key": key["value"]})
    for _ in range(2):
        await http_request(port, "GET", "/paid")  # 403
    await http_request(port, "GET", "/fail")  # the target's 503
    await http_request(port, "GET", "/unknown")  # no route
    assert await metric(proc, "lbd_api_requests_total", route="GET /paid", **labels) == 5
    assert await metric(proc, "lbd_api_responses_total", route="GET /paid", code="4xx", **labels) == 2
    assert await metric(proc, "lbd_api_responses_total", route="GET /fail", code="5xx", **labels) == 1
    assert await metric(proc, "lbd_api_latency_seconds_count", route="GET /paid", **labels) == 5
    assert await metric(proc, "lbd_api_integration_latency_seconds_count", route="GET /paid", **labels) == 3
    assert await metric(proc, "lbd_api_requests_total", route="-", **labels) == 1
    assert await metric(proc, "lbd_api_responses_total", route="-", code="4xx", **labels) == 1

    def lines() -> list[dict[str, Any]]:
        text = log_path.read_text() if log_path.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    entries = await wait_for(lambda: len(lines()) >= 7 and lines(), what="7 access-log lines")
    paid = [e for e in entries if e["routeKey"] == "GET /paid"]
    assert [e["status"] for e in paid] == [200, 200, 200, 403, 403]
    assert [e["apiKeyId"] for e in paid] == [key["id"]] * 3 + ["-", "-"]
    assert {e["errorType"] for e in paid[3:]} == {"INVALID_API_KEY"}
    assert all(e["authorizer"] == "-" and e["requestId"] for e in entries)
    assert key["value"] not in log_path.read_text()


async def test_cors_preflight_and_private_endpoint(lbd: LbdFactory, http_backends: Backends) -> None:
    backend = await http_backends("app")
    port = free_port()
    cors = {
        "allow_origins": ["https://app.example.com"],
        "allow_methods": ["GET"],
        "allow_headers": ["x-api-key"],
        "max_age_seconds": 600,
    }
    routes = [{"route_key": "GET /pets", "integration": proxy("/")}]
    await start(
        lbd,
        {
            "target_groups": [group("app", backend)],
            "apis": [api("c", port, routes, cors=cors, endpoint_type="PRIVATE")],
        },
    )
    status, headers, _ = await http_request(
        port,
        "OPTIONS",
        "/pets",
        headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"},
    )
    assert status == 204
    assert headers["access-control-allow-origin"] == "https://app.example.com"
    assert (headers["access-control-allow-methods"], headers["access-control-max-age"]) == ("GET", "600")
    status, headers, _ = await http_request(
        port,
        "OPTIONS",
        "/pets",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert status == 204 and "access-control-allow-origin" not in headers
    status, headers, _ = await http_request(
        port, "GET", "/pets", headers={"Origin": "https://app.example.com"}
    )
    assert status == 200 and headers["access-control-allow-origin"] == "https://app.example.com"
    # PRIVATE: loopback is a private source, so it is served (public sources get 403, see the unit test).


def test_private_sources() -> None:
    from lbd.gateway.pipeline import _private_source

    assert [
        _private_source(ip) for ip in ("127.0.0.1", "10.1.2.3", "::1", "8.8.8.8", "2001:4860::1", "bad")
    ] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]


async def test_https_api_listener_with_a_stored_certificate(
    lbd: LbdFactory, http_backends: Backends, tmp_path: Path
) -> None:
    from lbd.tls.store import CertificateStore, issue
    from tests.test_tls_listeners import fetch

    store = CertificateStore(tmp_path / "store")
    store.put(issue("site", ["api.test"]))
    backend = await http_backends("app")
    port = free_port()
    listener = {"protocol": "HTTPS", "port": port, "address": "127.0.0.1", "certificates": ["site"]}
    config = {
        "certificates": {"store": str(store.directory)},
        "target_groups": [group("app", backend)],
        "apis": [
            {
                "name": "tls",
                "listeners": [listener],
                "routes": [{"route_key": "GET /", "integration": proxy()}],
            }
        ],
    }
    await start(lbd, config)
    presented, response = await fetch(port, "api.test")
    assert presented.fingerprint(hashes.SHA256()) == store.get("site").leaf.fingerprint(hashes.SHA256())
    assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"hello from app\n")
    assert backend.requests[-1].header("x-forwarded-proto") == "https"
    # A certificate the store does not hold is refused by lbd check and lbd run, naming the key.
    listener["certificates"] = ["missing"]
    from lbd.config.loader import parse_config
    from lbd.config.preflight import startup_issues

    issues = startup_issues(parse_config(yaml.safe_dump(config)))
    assert [issue.path for issue in issues] == ["apis[0].listeners[0].certificates[0]"], issues


async def test_a_restarted_worker_has_the_keys_before_its_first_request(
    lbd: LbdFactory, http_backends: Backends
) -> None:
    import os
    import signal

    from tests.test_l4_tcp import worker_pids

    backend = await http_backends("app")
    port = free_port()
    proc = await start(lbd, keyed_config(port, backend))
    key = await create_key(proc)
    (old,) = worker_pids(proc)
    os.kill(old, signal.SIGKILL)
    await wait_for(lambda: worker_pids(proc) and worker_pids(proc) != [old], what="a new worker")

    async def served() -> int:
        try:
            return (await http_request(port, "GET", "/paid", headers={"x-api-key": key["value"]}))[0]
        except (ConnectionError, IndexError):
            return 0  # the new worker is not listening yet

    assert await wait_for(served, what="an answer from the new worker") == 200


MALFORMED = [
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"G\xffT / HTTP/1.1\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Long: " + b"a" * 30000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(3000)) + b"\r\n",
    b"\r\n\r\n\r\n",
    b"GET /%%%% HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nshort",  # then the client half-closes
]


async def test_malformed_requests_get_an_answer_or_a_close_never_a_hang(
    lbd: LbdFactory, http_backends: Backends
) -> None:
    import random

    backend = await http_backends("app")
    port = free_port()
    routes = [
        {"route_key": "POST /up", "integration": proxy("/echo")},
        {"route_key": "ANY /{proxy+}", "integration": proxy()},
    ]
    proc = await start(
        lbd,
        {"target_groups": [group("app", backend)], "apis": [api("fz", port, routes, idle_timeout_seconds=2)]},
    )
    rng = random.Random(17)
    inputs = [
        *MALFORMED,
        *(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))) for _ in range(20)),
    ]
    for data in inputs:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        writer.write_eof()
        try:
            answer = await asyncio.wait_for(reader.read(-1), 15)  # lbd answers and closes, or just closes
        except ConnectionResetError:
            answer = b""
        finally:
            writer.close()
        if answer:
            status = int(answer.split(b" ", 2)[1])
            assert 200 <= status < 600, answer[:200]
    # A head that never completes is closed by the idle timeout (no answer owed, no hang).
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert await asyncio.wait_for(reader.read(-1), 15) == b""
    writer.close()
    assert (await http_request(port, "GET", "/still/alive"))[0] == 200
    assert "Traceback" not in proc.log and "internal error" not in proc.log
