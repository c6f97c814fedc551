"""Real parts for the authorizer tests: a JWKS endpoint, an authorizer endpoint, signing keys made with
``cryptography``, and a test client that plays the gateway's Fetch over a real loopback connection.

The Fetch here is a test client, not the gateway's own (lbd/gateway builds that on the target groups'
balancing and health): it maps a target group name to one ``127.0.0.1:port`` and sends one real HTTP/1.1
request there with aiohttp's client, raising TimeoutError and ConnectionError as the contract says.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt as pyjwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from lbd.gateway.contracts import GatewayRequest, UpstreamReply

ISSUER = "https://id.example.test"
AUDIENCE = "pets"


# -- keys and tokens -------------------------------------------------------------------------------------


@functools.cache
def rsa_key(name: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def ec_key(name: str) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def jwk(
    kid: str, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, alg: str | None = None
) -> dict[str, Any]:
    """The public half as a JWK (RFC 7517), as an issuer publishes it."""
    if isinstance(key, rsa.RSAPrivateKey):
        data: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        data = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    data.update({"kid": kid, "use": "sig"})
    if alg is not None:
        data["alg"] = alg
    return data


def token(
    key: Any,
    kid: str | None,
    now: float,
    alg: str = "RS256",
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "iat": int(now),
        "exp": int(now) + 600,
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    header = dict(headers or {})
    if kid is not None:
        header["kid"] = kid
    return pyjwt.encode(payload, key, algorithm=alg, headers=header)


def gateway_request(
    method: str = "GET",
    path: str = "/pets/1",
    query: str = "",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    route_key: str = "GET /pets/{id}",
    api: str = "pets",
    stage: str = "prod",
) -> GatewayRequest:
    return GatewayRequest(
        method=method,
        path=path,
        query=query,
        headers={k.lower(): v for k, v in (headers or {}).items()},
        body=body,
        source_ip="127.0.0.1",
        api=api,
        stage=stage,
        route_key=route_key,
        path_parameters={"id": "1"},
        request_id="req-1",
        received_at=1_700_000_000.0,
    )


# -- servers -----------------------------------------------------------------------------------------------


@dataclass
class JsonServer:
    """An aiohttp server on 127.0.0.1:0 whose one route answers with ``respond(request body)``."""

    path: str
    respond: Callable[[bytes], tuple[int, bytes]]
    method: str = "GET"
    seen: list[bytes] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0

    async def start(self) -> JsonServer:
        app = web.Application()
        app.router.add_route(self.method, self.path, self._handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)  # hung handlers: cancel
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])
        return self

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append(body)
        status, answer = self.respond(body)
        if status == 0:  # a hung endpoint: the caller's timeout must fire
            await asyncio.sleep(3600)
        return web.Response(status=status, body=answer, content_type="application/json")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


class JwksServer(JsonServer):
    """Serves ``keys`` as a JWKS; tests change ``keys`` to rotate, and count fetches in ``seen``."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self.keys = keys
        super().__init__("/.well-known/jwks.json", lambda _: (200, json.dumps({"keys": self.keys}).encode()))


class AuthorizerEndpoint(JsonServer):
    """A REQUEST authorizer's endpoint: ``decide(event)`` gives (status, answer object or raw bytes)."""

    def __init__(self, decide: Callable[[dict[str, Any]], tuple[int, Any]]) -> None:
        self.decide = decide
        super().__init__("/authorize", self._answer, method="POST")

    def _answer(self, body: bytes) -> tuple[int, bytes]:
        status, answer = self.decide(json.loads(body))
        return status, answer if isinstance(answer, bytes) else json.dumps(answer).encode()

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(b) for b in self.seen]


class LoopbackFetch:
    """A test client standing in for the gateway's Fetch: target group name -> one loopback port."""

    def __init__(self, ports: dict[str, int]) -> None:
        self.ports = ports
        self._session: aiohttp.ClientSession | None = None

    async def __call__(
        self,
        target_group: str,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        timeout: float,
    ) -> UpstreamReply:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = f"http://127.0.0.1:{self.ports[target_group]}{path}"
        try:
            async with asyncio.timeout(timeout):
                async with self._session.request(method, url, headers=list(headers), data=body) as response:
                    payload = await response.read()
                    return UpstreamReply(response.status, list(response.headers.items()), payload)
        except aiohttp.ClientConnectionError as exc:
            raise ConnectionError(str(exc)) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
