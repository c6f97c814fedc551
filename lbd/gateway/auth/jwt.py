"""JWT authorizers, as API Gateway's HTTP APIs have them ("Controlling access to HTTP APIs with JWT
authorizers"; "Troubleshooting issues with HTTP API JWT authorizers").

For each request:

1. The token is the identity source's value (``$request.header.Authorization`` by default), without a
   ``Bearer `` prefix. None: 401 ``{"message":"Unauthorized"}``.
2. The header's ``alg`` must be one of the authorizer's algorithms and its ``kid`` must name a key of the
   issuer's JWKS; the signature is verified with that key (PyJWT over ``cryptography``).
3. ``iss`` must equal the issuer; ``aud`` must be one of the audiences, or, only when there is no ``aud``,
   ``client_id``; ``exp`` must be after now, and ``nbf`` and ``iat`` (when present) not after now, each
   with ``leeway_seconds``.
   Any of this failing: 401 Unauthorized, with a ``www-authenticate: Bearer ... error="invalid_token"``
   header saying which check failed, as API Gateway does.
4. When the route has authorization scopes, the token's ``scope`` (space separated) or ``scp`` claim must
   hold at least one of them: otherwise 403 ``{"message":"Forbidden"}`` with ``error="insufficient_scope"``.

The JWKS comes from ``jwks_file`` (read once) or ``jwks_uri``: fetched on first use, kept for
``jwks_cache_seconds``, fetched again early when a token names an unknown ``kid`` (a rotated key), but at
most once every ``jwks_min_refresh_seconds`` so that tokens with made-up kids cannot turn lbd into a
flood against the issuer. A failed refresh keeps the keys already held; with no keys at all the answer is
500 AUTHORIZER_CONFIGURATION_ERROR (the issuer cannot be reached; the caller's token is not at fault).
The fetch times out after 1.5 s, API Gateway's limit for JWKS and discovery.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import jwt as pyjwt

from lbd.gateway.auth.identity import identity_value
from lbd.gateway.contracts import ALLOW, AuthResult, Clock, GatewayRequest
from lbd.observe.ratelimit import RateLimitedLog

if TYPE_CHECKING:
    from lbd.config.gateway_auth import JwtAuthorizer

log = logging.getLogger("lbd.gateway.auth")
WARNINGS = RateLimitedLog()

JWKS_TIMEOUT = 1.5  # seconds: API Gateway's timeout for JWKS and OpenID discovery
MAX_JWKS_BYTES = 1024 * 1024
MAX_TOKEN = 16 * 1024
VERIFIED_TOKENS = 4096  # per authorizer and worker; least recently used out first

JwksFetch = Callable[[str, float], Awaitable[bytes]]  # (uri, timeout) -> body; raises OSError/TimeoutError


class TokenRejected(Exception):
    """401 Unauthorized, ``error_description`` this message."""


class _NoToken(TokenRejected):
    """The identity source holds no token ("Bearer" and nothing after it): 401 without a description."""


class JwksUnavailable(Exception):
    """No keys can be had from the issuer (500 AUTHORIZER_CONFIGURATION_ERROR)."""


def _www_authenticate(error: str, description: str, scopes: Sequence[str] = ()) -> tuple[str, str]:
    scope = " ".join(scopes)
    return ("www-authenticate", f'Bearer scope="{scope}" error="{error}" error_description="{description}"')


def unauthorized(description: str | None) -> AuthResult:
    headers = () if description is None else (_www_authenticate("invalid_token", description),)
    return AuthResult("UNAUTHORIZED", message="Unauthorized", headers=headers)


def _header_source(source: str) -> str | None:
    """The request header an identity source names (lower case), None when it names something else."""
    for prefix in ("$request.header.", "method.request.header."):
        if source.startswith(prefix):
            return source[len(prefix) :].lower()
    return None


def bearer_token(value: str | None) -> str | None:
    """The token of an identity source's value: a ``Bearer `` prefix (any case) taken off."""
    if value is None:
        return None
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer":
        value = rest.strip()  # "Bearer" and nothing after it is no token
    return value or None


def parse_jwks(document: bytes | str) -> dict[str, dict[str, Any]]:
    """JWKS (RFC 7517 section 5) to its signing keys by kid; ValueError if it holds none."""
    data = json.loads(document)
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list):
        raise ValueError('a JWKS is a JSON object {"keys": [...]}')
    usable = {
        str(k["kid"]): k
        for k in keys
        if isinstance(k, dict) and isinstance(k.get("kid"), str) and k.get("use", "sig") == "sig"
    }
    if not usable:
        raise ValueError("the JWKS holds no signing keys with a kid")
    return usable


def token_scopes(claims: Mapping[str, Any]) -> set[str]:
    """RFC 8693 section 4.2 ``scope`` (space separated); ``scp`` (a list, or a string) as Okta and Azure
    AD write it. API Gateway reads both."""
    found: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(str(v) for v in value)
    return found


def check_claims(claims: Mapping[str, Any], config: JwtAuthorizer, now: float) -> None:
    """Issuer, audience and times: TokenRejected with API Gateway's wording."""
    if claims.get("iss") != config.issuer:
        raise TokenRejected("the token does not have a valid issuer")
    # "API Gateway validates client_id only if aud is not present."
    if "aud" in claims:
        aud = claims["aud"]
        audiences = aud if isinstance(aud, list) else [aud]
    else:
        audiences = [claims.get("client_id")]
    if not any(isinstance(a, str) and a in config.audience for a in audiences):
        raise TokenRejected("the token does not have a valid audience")
    leeway = config.leeway_seconds
    exp = _number(claims, "exp")
    if exp is None:
        raise TokenRejected("the token has no expiry (exp)")
    if now >= exp + leeway:
        raise TokenRejected("the token has expired")
    nbf = _number(claims, "nbf")
    if nbf is not None and now + leeway < nbf:
        raise TokenRejected("the token is not valid yet (nbf)")
    iat = _number(claims, "iat")
    if iat is not None and now + leeway < iat:
        raise TokenRejected("the token was issued in the future (iat)")


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejected(f"the token's {name} claim is not a NumericDate")
    return float(value)


class JwksKeys:
    """The issuer's keys: parsed lazily per (kid, alg), since PyJWK binds one algorithm to a key."""

    def __init__(self, jwks: Mapping[str, dict[str, Any]]) -> None:
        self.jwks = dict(jwks)
        self._parsed: dict[tuple[str, str], pyjwt.PyJWK] = {}

    def key(self, kid: str, alg: str) -> pyjwt.PyJWK | None:
        jwk = self.jwks.get(kid)
        if jwk is None:
            return None
        if "alg" in jwk and jwk["alg"] != alg:
            raise TokenRejected(f"signing method {alg} is not the key's ({jwk['alg']})")
        parsed = self._parsed.get((kid, alg))
        if parsed is None:
            try:
                parsed = pyjwt.PyJWK(jwk, algorithm=alg)
            except pyjwt.PyJWTError as exc:
                raise TokenRejected(f"signing method {alg} does not fit key {kid}: {exc}") from None
            self._parsed[(kid, alg)] = parsed
        return parsed


def verify_token(token: str, keys: JwksKeys, config: JwtAuthorizer, now: float) -> dict[str, Any]:
    """The token's claims if its signature and claims pass (no I/O); TokenRejected otherwise."""
    header = unverified_header(token, config)
    key = keys.key(str(header["kid"]), str(header["alg"]))
    if key is None:
        raise TokenRejected("kid not found in jwks")
    return decode(token, key, config, now)


def unverified_header(token: str, config: JwtAuthorizer) -> dict[str, Any]:
    if len(token) > MAX_TOKEN:
        raise TokenRejected("the token is too large")
    try:
        header = pyjwt.get_unverified_header(token)
    except pyjwt.PyJWTError:
        raise TokenRejected("the token is malformed") from None
    alg = header.get("alg")
    if alg not in config.algorithms:
        raise TokenRejected(f"signing method {alg} is invalid")
    if not isinstance(header.get("kid"), str):
        raise TokenRejected("the token has no kid")
    return header


def decode(token: str, key: pyjwt.PyJWK, config: JwtAuthorizer, now: float) -> dict[str, Any]:
    # PyJWT checks the signature; the claims are checked by check_claims against the injected clock.
    options: Any = {
        "verify_signature": True,
        "verify_exp": False,
        "verify_nbf": False,
        "verify_iat": False,
        "verify_aud": False,
        "verify_iss": False,
        "require": [],
    }
    try:
        claims = pyjwt.decode(token, key, algorithms=list(config.algorithms), options=options)
    except pyjwt.InvalidSignatureError:
        raise TokenRejected("the token signature is invalid") from None
    except pyjwt.PyJWTError as exc:
        raise TokenRejected(f"the token is invalid: {exc}") from None
    if not isinstance(claims, dict):
        raise TokenRejected("the token's payload is not a JSON object")
    check_claims(claims, config, now)
    return claims


class JwksSource:
    """The JWKS of one authorizer, with the caching and refresh rules in the module docstring."""

    def __init__(self, config: JwtAuthorizer, clock: Clock, fetch: JwksFetch | None = None) -> None:
        self.config = config
        self.uri = config.jwks_uri  # None: keys from a file, read once (never due)
        self._clock = clock
        self._fetch = fetch
        self.keys: JwksKeys | None = None
        self.fetched_at = float("-inf")  # when the keys held were fetched
        self.tried_at = float("-inf")  # when a fetch last started (rate limit for unknown kids)
        self.fetches = 0
        self._inflight: asyncio.Task[None] | None = None
        if config.jwks_file is not None:
            path = Path(config.jwks_file)
            try:
                self.keys = JwksKeys(parse_jwks(path.read_bytes()))
            except (OSError, ValueError) as exc:
                raise ValueError(f"authorizer {config.name}: jwks_file {path}: {exc}") from exc

    def due(self) -> bool:
        """A fetch is due before the keys can be used (none held yet, or held too long)."""
        if self.config.jwks_uri is None:
            return False
        now = self._clock()
        if now - self.fetched_at < self.config.jwks_cache_seconds:
            return False
        # With no keys at all, a down issuer is asked again at most once per jwks_min_refresh_seconds.
        backing_off = (
            self.keys is None
            and self._inflight is None
            and now - self.tried_at < self.config.jwks_min_refresh_seconds
        )
        return not backing_off

    async def current(self) -> JwksKeys:
        if self.due():
            await self.refresh()
        if self.keys is None:
            raise JwksUnavailable(f"no JWKS from {self.config.jwks_uri}")
        return self.keys

    async def refresh_for_unknown_kid(self) -> bool:
        """Fetch again if the rate limit allows; True if new keys were fetched."""
        if self.config.jwks_uri is None:
            return False
        if self._inflight is None and self._clock() - self.tried_at < self.config.jwks_min_refresh_seconds:
            return False
        before = self.fetched_at
        await self.refresh()
        return self.fetched_at != before

    async def refresh(self) -> None:
        """One fetch at a time: concurrent requests wait for the same one."""
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._load())
        task = self._inflight
        try:
            await asyncio.shield(task)
        finally:
            if task.done() and self._inflight is task:
                self._inflight = None

    async def _load(self) -> None:
        uri = self.config.jwks_uri
        assert uri is not None and self._fetch is not None
        self.tried_at = self._clock()
        self.fetches += 1
        try:
            keys = JwksKeys(parse_jwks(await self._fetch(uri, JWKS_TIMEOUT)))
        except (OSError, TimeoutError, ValueError) as exc:
            # Keep serving with the keys held (if any): an issuer outage should not log everyone out.
            name = self.config.name
            WARNINGS.warning(log, name, "authorizer %s: cannot fetch the JWKS from %s: %s", name, uri, exc)
            if self.keys is not None:
                self.fetched_at = self.tried_at  # try again after another cache period, not every request
            return
        self.keys, self.fetched_at = keys, self.tried_at


class HttpJwksFetch:
    """GET the JWKS with aiohttp's client, imported only when an authorizer has a jwks_uri."""

    def __init__(self) -> None:
        self._session: Any = None

    async def __call__(self, uri: str, timeout: float) -> bytes:
        import aiohttp  # here, not at the top: workers without a jwks_uri never load the client

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))
        try:
            async with self._session.get(uri, headers={"accept": "application/json"}) as response:
                if response.status != 200:
                    raise OSError(f"HTTP {response.status}")
                body = await response.content.read(MAX_JWKS_BYTES + 1)
        except aiohttp.ClientError as exc:
            raise OSError(str(exc) or type(exc).__name__) from exc
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
        return bytes(body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Verified:
    """A token whose signature and static claims (issuer, audience) checked out, and the window of time
    in which its time claims pass (``check_claims``'s rules, leeway included)."""

    __slots__ = ("claims", "expires", "granted", "not_before", "results")

    def __init__(self, claims: Mapping[str, Any], leeway: float) -> None:
        self.claims = claims
        exp = claims["exp"]  # present and a number: check_claims passed
        self.expires = float(exp) + leeway
        starts = [float(claims[name]) for name in ("nbf", "iat") if claims.get(name) is not None]
        self.not_before = max(starts) - leeway if starts else float("-inf")
        self.granted = token_scopes(claims)
        self.results: dict[tuple[str, ...], AuthResult] = {}  # by the route's scopes


class JwtAuthorizerEngine:
    def __init__(self, config: JwtAuthorizer, clock: Clock, fetch: JwksFetch | None = None) -> None:
        self.name = config.name
        self.config = config
        self._clock = clock
        self._http: HttpJwksFetch | None = None
        if fetch is None and config.jwks_uri is not None:
            fetch = self._http = HttpJwksFetch()
        self.jwks = JwksSource(config, clock, fetch)
        # Tokens whose signature checked out, so that a client's next requests cost a dict lookup and the
        # time checks rather than a public-key operation (Envoy's jwt_authn keeps such a cache too). Held
        # by the identity source's value as received (``Bearer`` and all: the token is a function of it),
        # so a known token is not even taken out of its header again.
        self._verified: OrderedDict[str, _Verified] = OrderedDict()
        self._verified_with: JwksKeys | None = None
        self._header = _header_source(config.identity_source)

    def authorize_now(self, request: GatewayRequest, scopes: Sequence[str]) -> AuthResult | None:
        """``authorize`` without waiting (the pipeline's fast path): None when the answer needs the JWKS
        fetched (none held yet, or due again) or names a kid the keys held lack (a refresh may find it)."""
        jwks = self.jwks
        keys = jwks.keys
        if keys is None or (jwks.uri is not None and jwks.due()):
            return None
        raw = self._identity(request)
        if raw is None:
            return unauthorized(None)
        if keys is self._verified_with:
            # A token verified before, within its time claims: the answer for the route's scopes as
            # given before (what _known and _decide would find, without their bookkeeping).
            verified = self._verified.get(raw)
            if verified is not None:
                now = self._clock()
                if verified.not_before <= now < verified.expires:
                    result = verified.results.get(scopes if isinstance(scopes, tuple) else tuple(scopes))
                    if result is not None:
                        self._verified.move_to_end(raw)
                        return result
        try:
            verified = self._verified_now(raw, keys)
        except TokenRejected as exc:
            return unauthorized(None if isinstance(exc, _NoToken) else str(exc))
        if verified is None:
            return None
        return self._decide(verified, scopes)

    async def authorize(self, request: GatewayRequest, scopes: Sequence[str]) -> AuthResult:
        raw = self._identity(request)
        if raw is None:
            return unauthorized(None)
        try:
            verified = await self._claims(raw)
        except TokenRejected as exc:
            return unauthorized(None if isinstance(exc, _NoToken) else str(exc))
        except JwksUnavailable:
            return AuthResult("AUTHORIZER_CONFIGURATION_ERROR")
        return self._decide(verified, scopes)

    def _identity(self, request: GatewayRequest) -> str | None:
        """The identity source's value, None when absent or empty."""
        header = self._header
        if header is not None:
            return request.headers.get(header) or None
        return identity_value(request, self.config.identity_source)

    def _decide(self, verified: _Verified, scopes: Sequence[str]) -> AuthResult:
        """The answer for a route's scopes: the same object for every request with this token there."""
        wanted = scopes if isinstance(scopes, tuple) else tuple(scopes)
        result = verified.results.get(wanted)
        if result is not None:
            return result
        claims, granted = verified.claims, verified.granted
        if wanted and not granted.intersection(wanted):
            challenge = _www_authenticate("insufficient_scope", "the token has none of the scopes", wanted)
            result = AuthResult("ACCESS_DENIED", claims=claims, message="Forbidden", headers=(challenge,))
        else:
            principal = claims.get("sub")
            result = AuthResult(
                ALLOW,
                principal_id=principal if isinstance(principal, str) else None,
                claims=claims,
                scopes=tuple(sorted(granted)),
            )
        verified.results[wanted] = result
        return result

    def _known(self, raw: str, keys: JwksKeys) -> _Verified | None:
        """The token in ``raw`` (the identity source's value) if these keys verified it before, its time
        claims checked against now: they are the part of a token's checks that changes."""
        if keys is not self._verified_with:  # new keys: what the old ones verified is verified no more
            self._verified.clear()
            self._verified_with = keys
        verified = self._verified.get(raw)
        if verified is not None:
            self._verified.move_to_end(raw)
            now = self._clock()
            if not verified.not_before <= now < verified.expires:
                check_claims(verified.claims, self.config, now)  # says which (expiry moves on)
        return verified

    def _remember(self, raw: str, claims: dict[str, Any]) -> _Verified:
        verified = _Verified(MappingProxyType(claims), self.config.leeway_seconds)
        if self._verified_with is self.jwks.keys:
            self._verified[raw] = verified
            if len(self._verified) > VERIFIED_TOKENS:
                self._verified.popitem(last=False)
        return verified

    def _verified_now(self, raw: str, keys: JwksKeys) -> _Verified | None:
        verified = self._known(raw, keys)
        if verified is not None:
            return verified
        token = bearer_token(raw)
        if token is None:
            raise _NoToken
        header = unverified_header(token, self.config)
        key = keys.key(str(header["kid"]), str(header["alg"]))
        if key is None:
            return None
        return self._remember(raw, decode(token, key, self.config, self._clock()))

    async def _claims(self, raw: str) -> _Verified:
        keys = await self.jwks.current()
        verified = self._known(raw, keys)
        if verified is not None:
            return verified
        token = bearer_token(raw)
        if token is None:
            raise _NoToken
        return self._remember(raw, await self._verify(token))

    async def _verify(self, token: str) -> dict[str, Any]:
        header = unverified_header(token, self.config)
        kid, alg = str(header["kid"]), str(header["alg"])
        keys = await self.jwks.current()
        key = keys.key(kid, alg)
        if key is None and await self.jwks.refresh_for_unknown_kid():
            keys = await self.jwks.current()
            key = keys.key(kid, alg)
        if key is None:
            raise TokenRejected("kid not found in jwks")
        return decode(token, key, self.config, self._clock())

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
