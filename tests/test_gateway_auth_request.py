"""REQUEST authorizers against a real authorizer endpoint (an aiohttp server on loopback) reached through a
test Fetch over a real HTTP connection: the events sent, Allow/Deny, context, usageIdentifierKey, the
cache (calls counted at the endpoint) and its TTL on an injected clock, and the failure answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from lbd.config.gateway_auth import RequestAuthorizer
from lbd.gateway.auth import build_authorizer
from lbd.gateway.auth.request import RequestAuthorizerEngine
from lbd.gateway.contracts import ALLOW
from tests.gateway_auth_servers import AuthorizerEndpoint, LoopbackFetch, gateway_request
from tests.lbdproc import free_port

ARN_PREFIX = "arn:aws:execute-api:us-east-1:000000000000:pets/prod/"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def policy(effect: str, resource: str | list[str], principal: str = "user-7", **extra: Any) -> dict[str, Any]:
    return {
        "principalId": principal,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}],
        },
        **extra,
    }


def by_token(event: dict[str, Any]) -> tuple[int, Any]:
    """The endpoint's logic: the Authorization header names the decision."""
    value = event["headers"].get("authorization", "")
    if event.get("version") == "2.0":
        return 200, {"isAuthorized": value == "good", "context": {"user": "u1", "n": 3, "ok": True}}
    if value == "allow-get":
        return 200, policy("Allow", ARN_PREFIX + "GET/*", context={"tier": "gold", "n": 3, "ok": True})
    if value == "allow-all-deny-delete":
        doc = policy("Allow", "*", usageIdentifierKey="KEY123")
        doc["policyDocument"]["Statement"].append(
            {"Action": ["execute-api:*"], "Effect": "Deny", "Resource": [ARN_PREFIX + "DELETE/*"]}
        )
        return 200, doc
    if value == "unauthorized":
        return 401, {"message": "Unauthorized"}
    if value == "broken":
        return 500, {"errorMessage": "boom"}
    if value == "not-json":
        return 200, b"<html>oops</html>"
    if value == "no-policy":
        return 200, {"principalId": "x"}
    if value == "nested-context":
        return 200, policy("Allow", "*", context={"obj": {"a": 1}})
    if value == "hang":
        return 0, b""
    return 200, policy("Deny", "*")


Env = tuple[AuthorizerEndpoint, Callable[..., RequestAuthorizerEngine], Clock]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    endpoint = await AuthorizerEndpoint(by_token).start()
    fetch = LoopbackFetch({"authz": endpoint.port, "down": free_port()})
    clock = Clock()
    made: list[RequestAuthorizerEngine] = []

    def make(**overrides: Any) -> RequestAuthorizerEngine:
        values: dict[str, Any] = {
            "name": "legacy",
            "type": "REQUEST",
            "endpoint": {"target_group": "authz", "path": "/authorize", "timeout_ms": 2000},
            "identity_sources": ["$request.header.Authorization"],
            "ttl_seconds": 300,
        }
        values.update(overrides)
        engine = build_authorizer(RequestAuthorizer.model_validate(values), fetch, clock)
        assert isinstance(engine, RequestAuthorizerEngine)
        made.append(engine)
        return engine

    yield endpoint, make, clock
    for engine in made:
        await engine.close()
    await fetch.close()
    await endpoint.close()


def call(value: str | None, method: str = "GET", path: str = "/pets/1", query: str = "") -> Any:
    headers = {"Authorization": value} if value is not None else {}
    headers["host"] = "api.example.test"
    return gateway_request(method=method, path=path, query=query, headers=headers)


async def test_iam_policy_allow_passes_principal_context_and_usage_key(env: Env) -> None:
    endpoint, make, _ = env
    engine = make()
    result = await engine.authorize(call("allow-get", query="lang=en&lang=fr"), [])
    assert result.outcome == ALLOW and result.principal_id == "user-7"
    assert dict(result.context) == {"tier": "gold", "n": "3", "ok": "true"}  # stringified, as API Gateway
    (event,) = endpoint.events
    assert event["type"] == "REQUEST"
    assert event["methodArn"] == ARN_PREFIX + "GET/pets/1"
    assert event["resource"] == "/pets/{id}" and event["path"] == "/pets/1" and event["httpMethod"] == "GET"
    assert event["headers"]["authorization"] == "allow-get"
    assert event["queryStringParameters"] == {"lang": "fr"}
    assert event["multiValueQueryStringParameters"] == {"lang": ["en", "fr"]}
    assert event["pathParameters"] == {"id": "1"}
    assert event["requestContext"]["stage"] == "prod" and event["requestContext"]["apiId"] == "pets"

    keyed = await make(ttl_seconds=0).authorize(call("allow-all-deny-delete"), [])
    assert keyed.outcome == ALLOW and keyed.usage_identifier_key == "KEY123"


async def test_deny_explicit_and_implicit_are_403(env: Env) -> None:
    _, make, _ = env
    engine = make()
    explicit = await engine.authorize(call("allow-all-deny-delete", method="DELETE"), [])
    assert explicit.outcome == "ACCESS_DENIED" and "explicit deny" in str(explicit.message)
    implicit = await engine.authorize(call("allow-get", method="POST"), [])
    assert implicit.outcome == "ACCESS_DENIED" and "explicit" not in str(implicit.message)
    assert (await engine.authorize(call("anything-else"), [])).outcome == "ACCESS_DENIED"


async def test_a_cached_policy_is_evaluated_again_for_each_method(env: Env) -> None:
    endpoint, make, _ = env
    engine = make()
    assert (await engine.authorize(call("allow-get"), [])).outcome == ALLOW
    again = await engine.authorize(call("allow-get", path="/pets/2"), [])
    assert again.outcome == ALLOW and again.cached
    denied = await engine.authorize(call("allow-get", method="PUT"), [])
    assert denied.outcome == "ACCESS_DENIED" and denied.cached
    assert len(endpoint.seen) == 1


async def test_the_cache_lasts_ttl_seconds_per_identity_value(env: Env) -> None:
    endpoint, make, clock = env
    engine = make(ttl_seconds=60)
    for _ in range(3):
        assert (await engine.authorize(call("allow-get"), [])).outcome == ALLOW
    assert len(endpoint.seen) == 1
    assert (await engine.authorize(call("allow-all-deny-delete"), [])).outcome == ALLOW  # another value
    assert len(endpoint.seen) == 2
    clock.now += 59.9
    assert (await engine.authorize(call("allow-get"), [])).cached
    assert len(endpoint.seen) == 2
    clock.now += 0.1
    fresh = await engine.authorize(call("allow-get"), [])
    assert fresh.outcome == ALLOW and not fresh.cached
    assert len(endpoint.seen) == 3

    uncached = make(ttl_seconds=0)
    for _ in range(2):
        await uncached.authorize(call("allow-get"), [])
    assert len(endpoint.seen) == 5


async def test_concurrent_requests_with_one_identity_ask_the_endpoint_once(env: Env) -> None:
    endpoint, make, _ = env
    engine = make()
    methods = ["GET", "PUT", "GET", "GET", "DELETE"]
    results = await asyncio.gather(*(engine.authorize(call("allow-get", method=m), []) for m in methods))
    assert [r.outcome for r in results] == ["ALLOW", "ACCESS_DENIED", "ALLOW", "ALLOW", "ACCESS_DENIED"]
    assert len(endpoint.seen) == 1
    others = await asyncio.gather(*(engine.authorize(call(f"x{n}"), []) for n in range(3)))
    assert [r.outcome for r in others] == ["ACCESS_DENIED"] * 3 and len(endpoint.seen) == 4


async def test_the_cache_is_a_bounded_lru(env: Env) -> None:
    endpoint, make, _ = env
    engine = make()
    assert engine.cache is not None
    engine.cache.capacity = 2
    for value in ("allow-get", "allow-all-deny-delete", "allow-get", "x1"):
        await engine.authorize(call(value), [])
    assert len(engine.cache) == 2
    # "allow-get" was used last but one, so "allow-all-deny-delete" was evicted.
    assert (await engine.authorize(call("allow-get"), [])).cached
    assert not (await engine.authorize(call("allow-all-deny-delete"), [])).cached
    assert len(endpoint.seen) == 4


async def test_a_missing_identity_source_is_401_without_asking_the_endpoint(env: Env) -> None:
    endpoint, make, _ = env
    engine = make(identity_sources=["$request.header.Authorization", "$request.querystring.tenant"])
    assert (await engine.authorize(call(None, query="tenant=a"), [])).outcome == "UNAUTHORIZED"
    assert (await engine.authorize(call("allow-get"), [])).outcome == "UNAUTHORIZED"
    assert (await engine.authorize(call("allow-get", query="tenant="), [])).outcome == "UNAUTHORIZED"
    assert endpoint.seen == []
    assert (await engine.authorize(call("allow-get", query="tenant=a"), [])).outcome == ALLOW
    assert len(endpoint.seen) == 1


async def test_simple_responses_payload_2_0(env: Env) -> None:
    endpoint, make, _ = env
    engine = make(
        response_format="simple", identity_sources=["$request.header.Authorization", "$context.routeKey"]
    )
    allowed = await engine.authorize(call("good"), [])
    assert allowed.outcome == ALLOW
    assert dict(allowed.context) == {"user": "u1", "n": "3", "ok": "true"}
    denied = await engine.authorize(call("bad"), [])
    assert denied.outcome == "ACCESS_DENIED" and denied.message == "Forbidden"
    event = endpoint.events[0]
    assert event["version"] == "2.0" and event["type"] == "REQUEST"
    assert event["identitySource"] == ["good", "GET /pets/{id}"]
    assert event["routeArn"] == ARN_PREFIX + "GET/pets/1"
    assert event["routeKey"] == "GET /pets/{id}" and event["rawPath"] == "/pets/1"
    assert event["requestContext"]["http"]["method"] == "GET"
    assert event["requestContext"]["domainName"] == "api.example.test"


@pytest.mark.parametrize(
    ("value", "outcome"),
    [
        ("unauthorized", "UNAUTHORIZED"),
        ("broken", "AUTHORIZER_FAILURE"),
        ("not-json", "AUTHORIZER_CONFIGURATION_ERROR"),
        ("no-policy", "AUTHORIZER_CONFIGURATION_ERROR"),
        ("nested-context", "AUTHORIZER_CONFIGURATION_ERROR"),
    ],
)
async def test_endpoint_failures_are_api_gateway_s_answers_and_are_not_cached(
    env: Env, value: str, outcome: str
) -> None:
    endpoint, make, _ = env
    engine = make()
    for _ in range(2):
        assert (await engine.authorize(call(value), [])).outcome == outcome
    assert len(endpoint.seen) == 2


async def test_an_unreachable_or_slow_endpoint_is_a_configuration_error(env: Env) -> None:
    endpoint, make, _ = env
    down = make(endpoint={"target_group": "down", "path": "/authorize"})
    assert (await down.authorize(call("allow-get"), [])).outcome == "AUTHORIZER_CONFIGURATION_ERROR"
    slow = make(endpoint={"target_group": "authz", "path": "/authorize", "timeout_ms": 200})
    assert (await slow.authorize(call("hang"), [])).outcome == "AUTHORIZER_CONFIGURATION_ERROR"
    assert len(endpoint.seen) == 1
