"""Config models the gateway's engines share: authorizers and the fleet's shared state.

The API, route, integration, usage-plan and stage-cache models live in lbd/config/gateway.py; these are
apart because the authorizers (lbd/gateway/auth) and the shared limiter (lbd/gateway/redis_limiter.py)
are built from them without the rest of the gateway. Semantics: Amazon API Gateway Developer Guide,
"Controlling and managing access to HTTP APIs" (JWT authorizers), "Use API Gateway Lambda authorizers"
(REQUEST authorizers) and "Control access to an API with IAM permissions" (SigV4).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from lbd.config.base import NAME, Model

# API Gateway's identity sources: $request.header.NAME, $request.querystring.NAME, $context.NAME,
# $stageVariables.NAME (HTTP APIs) or method.request.header.NAME (REST APIs).
IDENTITY_SOURCE = (
    r"^(\$request\.(header|querystring)\.[^\s]+|\$context\.[A-Za-z.]+"
    r"|method\.request\.(header|querystring)\.[^\s]+)$"
)


class TargetEndpoint(Model):
    """An HTTP endpoint behind one of the file's target groups (the role a Lambda function plays)."""

    target_group: str = Field(pattern=NAME)
    path: str = Field("/", pattern=r"^/[^\s]*$", max_length=1024)
    timeout_ms: int = Field(10_000, ge=50, le=29_000)


class JwtAuthorizer(Model):
    name: str = Field(pattern=NAME)
    type: Literal["JWT"]
    issuer: str = Field(min_length=1, max_length=2048)
    audience: tuple[str, ...] = Field(min_length=1)
    # Where the token is: API Gateway takes "Bearer " off an Authorization value if present.
    identity_source: str = Field("$request.header.Authorization", pattern=IDENTITY_SOURCE)
    # Exactly one of jwks_uri and jwks_file (validate.py checks); the URI is fetched and cached, and
    # fetched again when a token names an unknown kid (at most once per jwks_min_refresh_seconds).
    jwks_uri: str | None = Field(None, pattern=r"^https?://")
    jwks_file: str | None = None
    jwks_cache_seconds: float = Field(3600.0, ge=1, le=86_400)
    jwks_min_refresh_seconds: float = Field(30.0, ge=0, le=3600)
    algorithms: tuple[Literal["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256"], ...] = (
        "RS256",
        "ES256",
    )
    leeway_seconds: float = Field(60.0, ge=0, le=600)  # for exp, nbf and iat


class RequestAuthorizer(Model):
    name: str = Field(pattern=NAME)
    type: Literal["REQUEST"]
    endpoint: TargetEndpoint
    identity_sources: tuple[Annotated[str, Field(pattern=IDENTITY_SOURCE)], ...] = ()
    # Results cached by the identity sources' values; 0 disables caching (API Gateway: 0..3600, default 300).
    ttl_seconds: int = Field(300, ge=0, le=3600)
    # "simple" (HTTP API payload 2.0 simple response {"isAuthorized": bool, "context": {...}}) or "iam"
    # (an IAM policy document with principalId, policyDocument, context, usageIdentifierKey).
    response_format: Literal["simple", "iam"] = "iam"


class IamAuthorizer(Model):
    """AWS Signature Version 4 against access keys managed through the admin API."""

    name: str = Field(pattern=NAME)
    type: Literal["IAM"]
    region: str = Field("us-east-1", pattern=r"^[a-z0-9-]{1,32}$")
    service: str = Field("execute-api", pattern=r"^[a-z0-9-]{1,64}$")
    clock_skew_seconds: int = Field(300, ge=1, le=900)  # SigV4: 5 minutes


Authorizer = Annotated[JwtAuthorizer | RequestAuthorizer | IamAuthorizer, Field(discriminator="type")]


class SharedState(Model):
    """Where a fleet's counters live: usage-plan throttles and quotas, and WebSocket connections."""

    redis: str | None = Field(None, pattern=r"^(redis|rediss|unix)://")
    # What a request meets while Redis is unreachable: "open" admits it (counted in process meanwhile),
    # "closed" answers 503 (gateway response type THROTTLED is not right for an outage). Logged either way.
    on_failure: Literal["open", "closed"] = "open"
    timeout_ms: int = Field(50, ge=1, le=5000)
