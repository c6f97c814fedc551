"""Authorizers in an API's pipeline, end to end: a real lbd, a real JWKS endpoint and a real REQUEST
authorizer endpoint (aiohttp), real targets. The engines themselves are tested in test_gateway_auth_*."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LbdFactory
from tests.gateway_auth_servers import AUDIENCE, ISSUER, AuthorizerEndpoint, JwksServer, jwk, rsa_key, token
from tests.lbdproc import free_port, http_request, wait_for
from tests.test_gateway_api import Backends, group, start


@pytest.fixture
async def jwks() -> AsyncIterator[JwksServer]:
    server = await JwksServer([jwk("k1", rsa_key("k1"))]).start()
    yield server
    await server.close()


def policy(effect: str, key: str | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "principalId": "user-7",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": "*"}],
        },
        "context": {"tier": "gold"},
    }
    if key is not None:
        answer["usageIdentifierKey"] = key
    return answer


async def test_jwt_and_request_authorizers_in_the_pipeline(
    lbd: LbdFactory, http_backends: Backends, jwks: JwksServer, tmp_path: Path
) -> None:
    backend = await http_backends("app")
    key_value = "AuthorizerKey" * 2
    endpoint = await AuthorizerEndpoint(
        lambda event: (
            200,
            policy("Allow" if event["headers"].get("authorization") != "deny" else "Deny", key_value),
        )
    ).start()
    try:
        port, log_path = free_port(), tmp_path / "access.log"
        authz_group = group("authz")
        authz_group["targets"] = [{"id": "127.0.0.1", "port": endpoint.port}]
        mapped = {
            "type": "HTTP",
            "target_group": "app",
            "path": "/echo",
            "request_parameters": {
                "integration.request.header.x-sub": "context.authorizer.claims.sub",
                "integration.request.header.x-tier": "context.authorizer.tier",
                "integration.request.header.x-principal": "context.authorizer.principalId",
            },
        }
        config = {
            "target_groups": [group("app", backend), authz_group],
            "apis": [
                {
                    "name": "pets",
                    "protocol": "HTTP",
                    "api_key_source": "AUTHORIZER",
                    "listeners": [{"protocol": "HTTP", "port": port, "address": "127.0.0.1"}],
                    "access_log": {"path": str(log_path)},
                    "authorizers": [
                        {
                            "name": "users",
                            "type": "JWT",
                            "issuer": ISSUER,
                            "audience": [AUDIENCE],
                            "jwks_uri": jwks.url,
                        },
                        {
                            "name": "legacy",
                            "type": "REQUEST",
                            "endpoint": {"target_group": "authz", "path": "/authorize"},
                            "identity_sources": ["$request.header.Authorization"],
                            "ttl_seconds": 0,
                        },
                    ],
                    "routes": [
                        {
                            "route_key": "GET /me",
                            "integration": mapped,
                            "authorizer": "users",
                            "authorization_scopes": ["pets.read"],
                        },
                        {
                            "route_key": "GET /legacy",
                            "integration": mapped,
                            "authorizer": "legacy",
                            "api_key_required": True,
                        },
                    ],
                }
            ],
            "usage_plans": [{"name": "basic", "apis": [{"api": "pets"}]}],
        }
        proc = await start(lbd, config)
        good = token(rsa_key("k1"), "k1", time.time(), scope="pets.read")
        status, _, _ = await http_request(port, "GET", "/me", headers={"Authorization": f"Bearer {good}"})
        assert status == 200
        seen = backend.requests[-1]
        assert seen.header("x-sub") == "user-1" and seen.header("x-tier") is None
        status, _, body = await http_request(port, "GET", "/me")
        assert (status, json.loads(body)) == (401, {"message": "Unauthorized"})
        status, headers, _ = await http_request(
            port, "GET", "/me", headers={"Authorization": "Bearer not.a.jwt"}
        )
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")  # the challenge (RFC 6750)
        no_scope = token(rsa_key("k1"), "k1", time.time(), scope="other")
        assert (await http_request(port, "GET", "/me", headers={"Authorization": f"Bearer {no_scope}"}))[
            0
        ] == 403

        # REQUEST authorizer: its usageIdentifierKey is the API key (api_key_source AUTHORIZER).
        assert (await http_request(port, "GET", "/legacy", headers={"Authorization": "allow"}))[
            0
        ] == 403  # unknown key
        status, created = await proc.admin(
            "POST", "/v1/api-keys", json.dumps({"name": "k", "value": key_value}).encode()
        )
        assert status == 201
        await proc.admin("POST", "/v1/usage-plans/basic/keys", json.dumps({"key_id": created["id"]}).encode())
        status, _, _ = await http_request(port, "GET", "/legacy", headers={"Authorization": "allow"})
        assert status == 200
        seen = backend.requests[-1]
        assert (seen.header("x-tier"), seen.header("x-principal")) == ("gold", "user-7")
        assert (await http_request(port, "GET", "/legacy", headers={"Authorization": "deny"}))[0] == 403

        def entries() -> list[dict[str, Any]]:
            text = log_path.read_text() if log_path.exists() else ""
            return [json.loads(line) for line in text.splitlines()]

        logged = await wait_for(lambda: len(entries()) >= 7 and entries(), what="7 access-log lines")
        outcomes = [
            "ALLOW",
            "UNAUTHORIZED",
            "UNAUTHORIZED",
            "ACCESS_DENIED",
            "ALLOW",
            "ALLOW",
            "ACCESS_DENIED",
        ]
        assert [e["authorizer"] for e in logged] == outcomes
        assert [e["apiKeyId"] for e in logged][4:6] == ["-", created["id"]]
        assert key_value not in log_path.read_text() and good not in log_path.read_text()
    finally:
        await endpoint.close()
