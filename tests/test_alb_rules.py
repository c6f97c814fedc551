"""Listener rules and actions through a real ``lbd run``: every condition type, priorities, the default
action, forward (single and weighted with AWSALBTG stickiness), redirect and fixed-response."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import LbdFactory
from tests.http_backend import HttpBackend
from tests.http_client import Client, Response
from tests.lbdproc import application_config, free_port


def fixed(body: str, status: int = 200) -> list[dict[str, Any]]:
    return [
        {"type": "fixed-response", "status_code": status, "content_type": "text/plain", "message_body": body}
    ]


def rule(priority: int, conditions: list[dict[str, Any]], actions: list[dict[str, Any]]) -> dict[str, Any]:
    return {"priority": priority, "conditions": conditions, "actions": actions}


def when(field: str, *values: Any, **extra: Any) -> dict[str, Any]:
    return {"field": field, "values": list(values), **extra}


def redirect(status: str, **parts: str) -> list[dict[str, Any]]:
    return [{"type": "redirect", "status_code": status, **parts}]


SPLIT = {
    "type": "forward",
    "target_groups": [{"name": "web", "weight": 3}, {"name": "api", "weight": 1}],
    "stickiness": {"enabled": True, "duration_seconds": 600},
}
JSON_503 = {
    "type": "fixed-response",
    "status_code": 503,
    "content_type": "application/json",
    "message_body": '{"down": true}',
}

RULES: list[dict[str, Any]] = [
    # Listed out of priority order on purpose: priority decides, not position.
    rule(20, [when("path-pattern", "/api/*")], [{"type": "forward", "target_group": "api"}]),
    rule(10, [when("host-header", "*.example.org")], fixed("host")),
    rule(30, [when("http-request-method", "DELETE", "PATCH")], fixed("method", 403)),
    rule(40, [when("http-header", "staging", "qa-?", http_header_name="X-Env")], fixed("header")),
    rule(50, [when("query-string", {"key": "version", "value": "v2"}, {"value": "beta*"})], fixed("query")),
    rule(60, [when("source-ip", "10.0.0.0/8")], fixed("never")),
    rule(70, [when("source-ip", "127.0.0.0/8"), when("path-pattern", "/src")], fixed("source")),
    rule(
        80,
        [when("path-pattern", "/old/*")],
        redirect("HTTP_301", host="new.example.com", path="/new/#{path}"),
    ),
    rule(90, [when("path-pattern", "/secure")], redirect("HTTP_302", protocol="HTTPS", port="443")),
    rule(100, [when("path-pattern", "/split")], [SPLIT]),
    rule(110, [when("path-pattern", "/json")], [JSON_503]),
]


@dataclass
class Setup:
    port: int
    web: HttpBackend
    api: HttpBackend

    async def get(self, path: str, **headers: str) -> Response:
        client = await Client.connect(self.port)
        try:
            return await client.request(headers.pop("method", "GET"), path, headers=headers)
        finally:
            client.close()


@pytest.fixture
async def rules(lbd: LbdFactory) -> AsyncIterator[Setup]:
    web = await HttpBackend("web").start()
    api = await HttpBackend("api").start()
    port = free_port()
    api_group = {
        "name": "api",
        "protocol": "HTTP",
        "health_check": {"enabled": False},
        "targets": [{"id": "127.0.0.1", "port": api.port}],
    }
    proc = lbd(application_config(port, [web.port], rules=RULES, extra_groups=[api_group]))
    await proc.wait_ready()
    yield Setup(port, web, api)
    await web.close()
    await api.close()


Get = Callable[..., Awaitable[Response]]


async def test_default_action_when_no_rule_matches(rules: Setup) -> None:
    response = await rules.get("/")
    assert response.body == b"hello from web\n"


async def test_host_header_wildcards_are_case_insensitive_and_ignore_the_port(rules: Setup) -> None:
    assert (await rules.get("/", Host="a.example.org")).body == b"host"
    assert (await rules.get("/", Host="DEEP.Sub.EXAMPLE.org:8080")).body == b"host"
    # *.example.org needs something before the dot (ALB).
    assert (await rules.get("/", Host="example.org")).body == b"hello from web\n"


async def test_lower_priority_number_wins(rules: Setup) -> None:
    # Matches both the host rule (10) and the /api/* rule (20).
    assert (await rules.get("/api/x", Host="a.example.org")).body == b"host"


async def test_path_pattern_is_case_sensitive_and_ignores_the_query(rules: Setup) -> None:
    assert (await rules.get("/api/users?id=1")).body == b"hello from api\n"
    assert rules.api.requests[-1].target == "/api/users?id=1"  # forwarded unchanged
    assert (await rules.get("/API/users")).body == b"hello from web\n"
    assert (await rules.get("/x?/api/y")).body == b"hello from web\n"


async def test_method_condition(rules: Setup) -> None:
    response = await rules.get("/", method="DELETE")
    assert (response.status, response.body) == (403, b"method")
    assert (await rules.get("/", method="PATCH")).status == 403
    assert (await rules.get("/", method="GET")).status == 200


async def test_http_header_values_are_case_insensitive_with_wildcards(rules: Setup) -> None:
    assert (await rules.get("/", **{"X-Env": "STAGING"})).body == b"header"
    assert (await rules.get("/", **{"x-env": "qa-7"})).body == b"header"
    assert (await rules.get("/", **{"X-Env": "qa-77"})).body == b"hello from web\n"  # ? is one character
    assert (await rules.get("/", **{"X-Env": "prod"})).body == b"hello from web\n"


async def test_query_string_key_value_and_value_only(rules: Setup) -> None:
    assert (await rules.get("/?a=1&Version=V2")).body == b"query"
    assert (await rules.get("/?flag=beta-3")).body == b"query"
    assert (await rules.get("/?version=v3")).body == b"hello from web\n"
    assert (await rules.get("/?v2=version")).body == b"hello from web\n"


async def test_source_ip_matches_the_peer_and_conditions_are_anded(rules: Setup) -> None:
    assert (await rules.get("/src")).body == b"source"
    # X-Forwarded-For is never used for source-ip (ALB).
    assert (await rules.get("/", **{"X-Forwarded-For": "10.1.2.3"})).body == b"hello from web\n"
    assert (await rules.get("/other")).body == b"hello from web\n"


async def test_redirect_keeps_unchanged_parts_and_fills_placeholders(rules: Setup) -> None:
    response = await rules.get("/old/page.html?q=1")
    assert response.status == 301
    assert response.header("location") == f"http://new.example.com:{rules.port}/new/old/page.html?q=1"
    response = await rules.get("/secure", Host="shop.example.com")
    assert response.status == 302
    assert response.header("location") == "https://shop.example.com/secure"  # default port left out
    assert rules.web.requests == [] and rules.api.requests == []


async def test_fixed_response_status_type_and_body(rules: Setup) -> None:
    response = await rules.get("/json")
    assert response.status == 503
    assert response.header("content-type") == "application/json"
    assert response.body == b'{"down": true}'
    assert response.keep_alive


async def test_weighted_forward_splits_by_weight_then_sticks_by_cookie(rules: Setup) -> None:
    bodies = [(await rules.get("/split")).body for _ in range(8)]
    assert bodies.count(b"hello from web\n") == 6 and bodies.count(b"hello from api\n") == 2

    first = await rules.get("/split")
    cookies = first.header("set-cookie") or ""
    match = re.search(r"AWSALBTG=([^;]+);", cookies)
    assert match, cookies
    assert "AWSALBTGCORS=" in cookies and "SameSite=None; Secure" in cookies
    sticky = [(await rules.get("/split", Cookie=f"a=b; AWSALBTG={match.group(1)}")).body for _ in range(6)]
    assert sticky == [first.body] * 6

    # A forged or damaged cookie is ignored: the request is split by weight again and gets a new cookie.
    forged = await rules.get("/split", Cookie="AWSALBTG=" + match.group(1)[:-4] + "AAAA")
    assert forged.status == 200 and "AWSALBTG=" in (forged.header("set-cookie") or "")
