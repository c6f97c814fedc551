"""JWT authorizers against a real JWKS endpoint on loopback, with RSA and EC keys made by cryptography:
allow, the 401/403 answers and their www-authenticate, the JWKS cache, rotation to an unknown kid and its
rate limit, an unreachable issuer, and jwks_file."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from lbd.config.gateway_auth import JwtAuthorizer
from lbd.gateway.auth import build_authorizer
from lbd.gateway.auth.jwt import JwtAuthorizerEngine
from lbd.gateway.contracts import ALLOW
from tests.gateway_auth_servers import (
    AUDIENCE,
    ISSUER,
    JwksServer,
    LoopbackFetch,
    ec_key,
    gateway_request,
    jwk,
    rsa_key,
    token,
)
from tests.lbdproc import free_port

NOW = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def config(**overrides: Any) -> JwtAuthorizer:
    values: dict[str, Any] = {"name": "users", "type": "JWT", "issuer": ISSUER, "audience": [AUDIENCE]}
    values.update(overrides)
    return JwtAuthorizer.model_validate(values)


@pytest.fixture
async def jwks() -> AsyncIterator[JwksServer]:
    server = await JwksServer([jwk("r1", rsa_key("r1")), jwk("e1", ec_key("e1"))]).start()
    yield server
    await server.close()


def authorizer(server: JwksServer, clock: Clock, **overrides: Any) -> JwtAuthorizerEngine:
    engine = build_authorizer(config(jwks_uri=server.url, **overrides), LoopbackFetch({}), clock)
    assert isinstance(engine, JwtAuthorizerEngine)
    return engine


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


async def test_rs256_and_es256_tokens_are_allowed_with_their_claims(jwks: JwksServer) -> None:
    clock = Clock()
    engine = authorizer(jwks, clock)
    try:
        rs = await engine.authorize(gateway_request(headers=bearer(token(rsa_key("r1"), "r1", NOW))), [])
        assert rs.outcome == ALLOW and rs.principal_id == "user-1"
        assert rs.claims["iss"] == ISSUER and rs.claims["aud"] == AUDIENCE
        es = await engine.authorize(
            gateway_request(headers=bearer(token(ec_key("e1"), "e1", NOW, "ES256"))), []
        )
        assert es.outcome == ALLOW
        # Without "Bearer " the raw value is the token (API Gateway takes either).
        raw = await engine.authorize(
            gateway_request(headers={"authorization": token(rsa_key("r1"), "r1", NOW)}), []
        )
        assert raw.outcome == ALLOW
        assert len(jwks.seen) == 1  # one fetch served all three
    finally:
        await engine.close()


async def test_missing_bad_and_expired_tokens_are_401_with_the_reason(jwks: JwksServer) -> None:
    clock = Clock()
    engine = authorizer(jwks, clock, leeway_seconds=60)
    key = rsa_key("r1")

    async def reason(headers: dict[str, str]) -> str | None:
        result = await engine.authorize(gateway_request(headers=headers), [])
        assert result.outcome == "UNAUTHORIZED" and result.message == "Unauthorized", result
        return dict(result.headers).get("www-authenticate")

    try:
        assert await reason({}) is None
        assert await reason({"authorization": "Bearer "}) is None
        assert 'error="invalid_token"' in str(await reason(bearer("not.a.jwt")))
        assert "expired" in str(await reason(bearer(token(key, "r1", NOW - 3600, exp=int(NOW) - 61))))
        assert "not valid yet" in str(await reason(bearer(token(key, "r1", NOW, nbf=int(NOW) + 61))))
        assert "future" in str(await reason(bearer(token(key, "r1", NOW, iat=int(NOW) + 61))))
        assert "no expiry" in str(await reason(bearer(token(key, "r1", NOW, exp=None))))
        assert "audience" in str(await reason(bearer(token(key, "r1", NOW, aud="other"))))
        assert "issuer" in str(await reason(bearer(token(key, "r1", NOW, iss="https://evil.test"))))
        # Signed by a key the issuer never published, under a kid it did: the signature fails.
        assert "signature" in str(await reason(bearer(token(rsa_key("forger"), "r1", NOW))))
        # An algorithm the authorizer does not take (HS256 with the public key as secret is the classic).
        assert "HS256" in str(await reason(bearer(token(b"k" * 32, "r1", NOW, alg="HS256"))))
        # An EC token under an RSA key's kid.
        assert await reason(bearer(token(ec_key("e1"), "r1", NOW, "ES256"))) is not None
    finally:
        await engine.close()


async def test_leeway_admits_a_token_just_expired_and_client_id_stands_in_for_aud(jwks: JwksServer) -> None:
    engine = authorizer(jwks, Clock(), leeway_seconds=60)
    key = rsa_key("r1")
    try:
        late = await engine.authorize(
            gateway_request(headers=bearer(token(key, "r1", NOW, exp=int(NOW) - 30))), []
        )
        assert late.outcome == ALLOW
        cognito = token(key, "r1", NOW, aud=None, client_id=AUDIENCE)
        assert (await engine.authorize(gateway_request(headers=bearer(cognito)), [])).outcome == ALLOW
        # client_id counts only when there is no aud.
        both = token(key, "r1", NOW, aud="other", client_id=AUDIENCE)
        assert (await engine.authorize(gateway_request(headers=bearer(both)), [])).outcome == "UNAUTHORIZED"
        listed = token(key, "r1", NOW, aud=["other", AUDIENCE])
        assert (await engine.authorize(gateway_request(headers=bearer(listed)), [])).outcome == ALLOW
    finally:
        await engine.close()


async def test_route_scopes_need_one_of_them_in_scope_or_scp(jwks: JwksServer) -> None:
    engine = authorizer(jwks, Clock())
    key = rsa_key("r1")
    route = ["pets.read", "pets.admin"]
    try:
        wrong = await engine.authorize(
            gateway_request(headers=bearer(token(key, "r1", NOW, scope="pets.write"))), route
        )
        assert wrong.outcome == "ACCESS_DENIED" and wrong.message == "Forbidden"
        assert 'error="insufficient_scope"' in dict(wrong.headers)["www-authenticate"]
        spaced = token(key, "r1", NOW, scope="openid pets.read")
        assert (await engine.authorize(gateway_request(headers=bearer(spaced)), route)).outcome == ALLOW
        listed = token(key, "r1", NOW, scp=["pets.admin"])
        allowed = await engine.authorize(gateway_request(headers=bearer(listed)), route)
        assert allowed.outcome == ALLOW and list(allowed.scopes) == ["pets.admin"]
        none = token(key, "r1", NOW)
        assert (
            await engine.authorize(gateway_request(headers=bearer(none)), route)
        ).outcome == "ACCESS_DENIED"
        assert (await engine.authorize(gateway_request(headers=bearer(none)), [])).outcome == ALLOW
    finally:
        await engine.close()


async def test_jwks_is_cached_then_fetched_again_after_its_cache_time(jwks: JwksServer) -> None:
    clock = Clock()
    engine = authorizer(jwks, clock, jwks_cache_seconds=300)
    good = bearer(token(rsa_key("r1"), "r1", NOW, exp=int(NOW) + 3600))
    try:
        for _ in range(3):
            assert (await engine.authorize(gateway_request(headers=good), [])).outcome == ALLOW
        assert len(jwks.seen) == 1
        clock.now += 299
        assert (await engine.authorize(gateway_request(headers=good), [])).outcome == ALLOW
        assert len(jwks.seen) == 1
        clock.now += 1
        assert (await engine.authorize(gateway_request(headers=good), [])).outcome == ALLOW
        assert len(jwks.seen) == 2
    finally:
        await engine.close()


async def test_concurrent_first_requests_share_one_jwks_fetch(jwks: JwksServer) -> None:
    engine = authorizer(jwks, Clock())
    good = bearer(token(rsa_key("r1"), "r1", NOW))
    try:
        results = await asyncio.gather(
            *(engine.authorize(gateway_request(headers=good), []) for _ in range(8))
        )
        assert [r.outcome for r in results] == [ALLOW] * 8
        assert len(jwks.seen) == 1
    finally:
        await engine.close()


async def test_a_rotated_key_is_fetched_on_its_unknown_kid_at_most_once_per_refresh_interval(
    jwks: JwksServer,
) -> None:
    clock = Clock()
    engine = authorizer(jwks, clock, jwks_min_refresh_seconds=30)
    try:
        assert (
            await engine.authorize(gateway_request(headers=bearer(token(rsa_key("r1"), "r1", NOW))), [])
        ).allowed
        assert len(jwks.seen) == 1
        clock.now += 30
        jwks.keys = [jwk("r2", rsa_key("r2"))]  # the issuer rotates
        rotated = bearer(token(rsa_key("r2"), "r2", clock.now))
        assert (await engine.authorize(gateway_request(headers=rotated), [])).outcome == ALLOW
        assert len(jwks.seen) == 2
        # Made-up kids: the first within the interval finds nothing new and no fetch is made for the rest.
        for n in range(5):
            made_up = bearer(token(rsa_key("r2"), f"nope{n}", clock.now))
            result = await engine.authorize(gateway_request(headers=made_up), [])
            assert result.outcome == "UNAUTHORIZED"
            assert "kid not found" in dict(result.headers)["www-authenticate"]
        assert len(jwks.seen) == 2
        clock.now += 30
        made_up = bearer(token(rsa_key("r2"), "nope", clock.now))
        assert (await engine.authorize(gateway_request(headers=made_up), [])).outcome == "UNAUTHORIZED"
        assert len(jwks.seen) == 3
    finally:
        await engine.close()


async def test_an_unreachable_issuer_is_a_configuration_error_until_keys_are_held(jwks: JwksServer) -> None:
    clock = Clock()
    good = bearer(token(rsa_key("r1"), "r1", NOW, exp=int(NOW) + 7200))
    uri = f"http://127.0.0.1:{free_port()}/jwks"
    down = build_authorizer(config(jwks_uri=uri, jwks_min_refresh_seconds=30), LoopbackFetch({}), clock)
    assert isinstance(down, JwtAuthorizerEngine)
    try:
        for _ in range(3):  # asked once; then lbd backs off for jwks_min_refresh_seconds
            result = await down.authorize(gateway_request(headers=good), [])
            assert result.outcome == "AUTHORIZER_CONFIGURATION_ERROR"
        assert down.jwks.fetches == 1
        clock.now += 30
        result = await down.authorize(gateway_request(headers=good), [])
        assert (result.outcome, down.jwks.fetches) == ("AUTHORIZER_CONFIGURATION_ERROR", 2)
    finally:
        await down.close()

    engine = authorizer(jwks, clock, jwks_cache_seconds=60)
    try:
        assert (await engine.authorize(gateway_request(headers=good), [])).outcome == ALLOW
        await jwks.close()  # the issuer goes away; the keys held keep serving past their cache time
        clock.now += 120
        assert (await engine.authorize(gateway_request(headers=good), [])).outcome == ALLOW
        assert engine.jwks.fetches == 2
    finally:
        await engine.close()


async def test_jwks_from_a_file_needs_no_http_client(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk("e1", ec_key("e1"), alg="ES256")]}))
    engine = build_authorizer(config(jwks_file=str(path)), LoopbackFetch({}), Clock())
    good = bearer(token(ec_key("e1"), "e1", NOW, "ES256"))
    assert (await engine.authorize(gateway_request(headers=good), [])).outcome == ALLOW
    # The JWK names its alg: a token claiming another is refused even where the key type would fit.
    other = bearer(token(rsa_key("r1"), "e1", NOW))
    assert (await engine.authorize(gateway_request(headers=other), [])).outcome == "UNAUTHORIZED"
    await engine.close()

    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="users: jwks_file"):
        build_authorizer(config(jwks_file=str(tmp_path / "bad.json")), LoopbackFetch({}), Clock())


def test_a_worker_with_only_file_jwks_does_not_import_aiohttp_client(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk("e1", ec_key("e1"))]}))
    script = f"""
import sys, time
import lbd.worker
from lbd.config.gateway_auth import JwtAuthorizer
from lbd.gateway.auth import build_authorizer
config = JwtAuthorizer(name="u", type="JWT", issuer="i", audience=["a"], jwks_file={str(path)!r})
build_authorizer(config, None, time.time)
print("aiohttp.client" in sys.modules)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False", out.stderr


async def test_a_verified_token_is_remembered_until_it_expires_or_its_key_goes(jwks: JwksServer) -> None:
    clock = Clock()
    engine = authorizer(jwks, clock, jwks_cache_seconds=300, leeway_seconds=0)
    good = bearer(token(rsa_key("r1"), "r1", NOW, exp=int(NOW) + 200))
    try:
        first = await engine.authorize(gateway_request(headers=good), [])
        second = await engine.authorize(gateway_request(headers=good), [])
        assert first.outcome == second.outcome == ALLOW and dict(first.claims) == dict(second.claims)
        assert len(engine._verified) == 1
        clock.now += 199
        assert (await engine.authorize(gateway_request(headers=good), [])).outcome == ALLOW
        clock.now += 1  # the remembered token's exp still counts
        late = await engine.authorize(gateway_request(headers=good), [])
        assert late.outcome == "UNAUTHORIZED" and "expired" in dict(late.headers)["www-authenticate"]

        fresh = bearer(token(rsa_key("r1"), "r1", clock.now, exp=int(clock.now) + 3600))
        assert (await engine.authorize(gateway_request(headers=fresh), [])).outcome == ALLOW
        jwks.keys = [jwk("r2", rsa_key("r2"))]  # r1 is withdrawn; lbd sees it at the next fetch
        clock.now += 300
        gone = await engine.authorize(gateway_request(headers=fresh), [])
        assert gone.outcome == "UNAUTHORIZED" and "kid not found" in dict(gone.headers)["www-authenticate"]
    finally:
        await engine.close()
