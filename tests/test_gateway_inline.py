"""The gateway's request path without a coroutine per request: the JWT authorizer's in-line answer
(``authorize_now``: only what needs no I/O, answered as ``authorize`` would, expiry and scopes included),
and the callback-driven target client (a closed pooled connection retried once, the deadline, a group
with no target answered in line) against a real target on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from lbd.gateway.auth.jwt import JwtAuthorizerEngine
from lbd.gateway.fetch import GatewayFetch, NoTarget
from lbd.observe.stats import TargetStats
from lbd.upstream.target import Target
from tests.gateway_auth_servers import JwksServer, gateway_request, jwk, rsa_key, token
from tests.test_gateway_auth_jwt import NOW, Clock, bearer, config


@pytest.fixture
async def jwks() -> AsyncIterator[JwksServer]:
    server = await JwksServer([jwk("r1", rsa_key("r1"))]).start()
    yield server
    await server.close()


async def test_inline_answers_wait_for_the_jwks_then_match_the_awaited_ones(jwks: JwksServer) -> None:
    clock = Clock()
    engine = JwtAuthorizerEngine(config(jwks_uri=jwks.url, leeway_seconds=5), clock)
    good = gateway_request(headers=bearer(token(rsa_key("r1"), "r1", NOW, exp=int(NOW) + 60, scope="a b")))
    try:
        assert engine.authorize_now(good, ()) is None  # no keys yet: the fetch needs a coroutine
        assert len(jwks.seen) == 0
        assert (await engine.authorize(good, ())).outcome == "ALLOW"
        # Keys held: a token is verified in line, and its next requests reuse the answer per scopes.
        fresh = gateway_request(headers=bearer(token(rsa_key("r1"), "r1", NOW, exp=int(NOW) + 60)))
        first = engine.authorize_now(fresh, ())
        assert first is not None and first.outcome == "ALLOW"
        assert engine.authorize_now(fresh, ()) is first
        allowed = engine.authorize_now(good, ("b", "c"))
        assert allowed is not None and allowed.outcome == "ALLOW" and list(allowed.scopes) == ["a", "b"]
        denied = engine.authorize_now(good, ("c",))
        assert denied is not None and denied.outcome == "ACCESS_DENIED"
        missing = engine.authorize_now(gateway_request(), ())
        assert missing is not None and missing.outcome == "UNAUTHORIZED"
        # A kid the keys lack may be a rotation: left to the awaited path, which may fetch again.
        other = gateway_request(headers=bearer(token(rsa_key("r2"), "r2", NOW, exp=int(NOW) + 60)))
        assert engine.authorize_now(other, ()) is None
        # Expiry moves on for a cached token, leeway included: allowed until exp + 5 s, then refused.
        clock.now = NOW + 64
        still = engine.authorize_now(good, ())
        assert still is not None and still.outcome == "ALLOW"
        clock.now = NOW + 65
        late = engine.authorize_now(good, ())
        assert late is not None and late.outcome == "UNAUTHORIZED"
        assert any("expired" in value for _, value in late.headers)
        assert (await engine.authorize(good, ())).outcome == "UNAUTHORIZED"
        assert len(jwks.seen) == 1
    finally:
        await engine.close()


class _Group:
    """The part of a TargetGroupRuntime the gateway's client uses: one real target, outcomes counted."""

    def __init__(self, port: int) -> None:
        self.target = Target("127.0.0.1", port, "zone-a", stats=TargetStats())
        self.tls = None
        self.verify = False
        self.connect_timeout = 2.0
        self.failed = 0
        self.succeeded = 0

    def pick(self) -> Target:
        return self.target

    def request_failed(self, target: Target) -> None:
        self.failed += 1

    def request_succeeded(self, target: Target) -> None:
        self.succeeded += 1


async def test_callbacks_retry_a_closed_pooled_connection_and_time_out_once() -> None:
    connections = 0

    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Each connection answers one request, keep-alive as far as the client can tell, then closes
        # while idle: the next request on it meets a closed pooled connection.
        nonlocal connections
        connections += 1
        head = await reader.readuntil(b"\r\n\r\n")
        if b"/silent" in head:
            await reader.read()  # never answers
        else:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer_once, "127.0.0.1", 0)
    group = _Group(server.sockets[0].getsockname()[1])
    fetch = GatewayFetch(lambda: {"g": cast(Any, group)}, lambda: 1)
    try:
        first = await fetch("g", "GET", "/a", [("x-one", "1")], b"", 2.0)
        assert (first.status, first.body, list(first.headers)) == (
            200,
            b"ok",
            [("content-type", "text/plain")],
        )
        # The pooled connection is closed by now or about to be: a new one, or the request sent again on
        # one when the close races the reuse (nothing of it reached the target, RFC 9112 9.3.1).
        second = await fetch("g", "GET", "/b", [], b"", 2.0)
        assert second.status == 200 and connections >= 2
        with pytest.raises(TimeoutError):
            await fetch("g", "GET", "/silent", [], b"", 0.2)
        answers: list[tuple[object, object]] = []
        fetch.start("nope", "GET", "/", [], b"", 1.0, lambda reply, error: answers.append((reply, error)))
        assert answers and isinstance(answers[0][1], NoTarget)  # answered at once, in line
        assert group.target.outstanding == 0
        assert (group.succeeded, group.failed) == (2, 1)
    finally:
        fetch.close()
        server.close()
        await server.wait_closed()
