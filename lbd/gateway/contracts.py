"""The seams between the gateway's request pipeline and its engines.

The pipeline (lbd/gateway/pipeline.py) matches a route, then asks, in API Gateway's order: the authorizer
(lbd/gateway/auth), the API key and usage plan limiter (lbd/gateway/limiter.py in process,
lbd/gateway/redis_limiter.py across a fleet), the stage cache (lbd/cache), and finally the integration.
Each engine sees only the types below, so each can be built and tested alone.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from lbd.gateway.request import GatewayRequest as GatewayRequest  # the engines' view of a request

# API Gateway's gateway response types an authorizer can end a request with ("Gateway response types for
# API Gateway"): UNAUTHORIZED 401, ACCESS_DENIED 403, AUTHORIZER_FAILURE 500,
# AUTHORIZER_CONFIGURATION_ERROR 500, MISSING_AUTHENTICATION_TOKEN 403, EXPIRED_TOKEN 403,
# INVALID_SIGNATURE 403.
ALLOW = "ALLOW"


@dataclass(frozen=True, slots=True)
class AuthResult:
    outcome: str  # ALLOW, or a gateway response type above
    principal_id: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)  # JWT claims ($context.authorizer.claims.*)
    context: Mapping[str, str] = field(default_factory=dict)  # REQUEST authorizer context
    scopes: Sequence[str] = ()
    usage_identifier_key: str | None = None  # api_key_source AUTHORIZER: the API key value to use
    message: str | None = None  # the body's "message" when not the type's default; for the access log
    cached: bool = False
    # Response headers the answer carries when it is not ALLOW, e.g. JWT's www-authenticate (RFC 6750
    # section 3) with the error and its description, as API Gateway's HTTP APIs send it.
    headers: Sequence[tuple[str, str]] = ()

    @property
    def allowed(self) -> bool:
        return self.outcome == ALLOW


class Authorizer(Protocol):
    name: str

    async def authorize(self, request: GatewayRequest, scopes: Sequence[str]) -> AuthResult:
        """Decide for ``request``; ``scopes`` are the route's authorization_scopes (JWT: any one of them
        in the token's scope/scp claim suffices, as API Gateway's HTTP APIs do)."""
        ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class UpstreamReply:
    """A target's response (never changed once made; not frozen, since one is made per request and a
    frozen dataclass's __init__ costs several times a plain one's)."""

    status: int
    headers: Sequence[tuple[str, str]]
    body: bytes
    # The head as the target sent it (status line, fields, Content-Length; lbd/http/fastpath.py's
    # simple_response), when it holds nothing ``headers`` leaves out but the framing: an HTTP_PROXY
    # answer passes it on as it is. Empty otherwise.
    head: bytes = b""


class Fetch(Protocol):
    """One HTTP request to a target of a target group, by the gateway core (health and balancing
    honoured); raises TimeoutError after ``timeout`` seconds and ConnectionError when no target answers."""

    def __call__(
        self,
        target_group: str,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        timeout: float,
    ) -> Awaitable[UpstreamReply]: ...


# -- API keys and usage plans ---------------------------------------------------------------------------


class Admission(enum.Enum):
    ADMIT = "ADMIT"
    THROTTLED = "THROTTLED"  # 429 {"message": "Too Many Requests"}
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"  # 429 {"message": "Limit Exceeded"}
    UNAVAILABLE = "UNAVAILABLE"  # shared state unreachable and on_failure: closed (503)


@dataclass(frozen=True, slots=True)
class Bucket:
    """A token bucket: ``rate`` tokens a second (may be fractional), at most ``burst`` held; starts full."""

    key: str  # e.g. "plan:basic:key:K1:route:GET /pets", "stage:pets/prod"
    rate: float
    burst: int


@dataclass(frozen=True, slots=True)
class Quota:
    """``limit`` requests per period; the period starts at ``period_start`` (epoch seconds, UTC, with the
    plan's offset applied by the caller) and the key names the period, so a new period is a new key."""

    key: str  # e.g. "quota:basic:K1:2026-12-01"
    limit: int
    period_start: float
    period_end: float


class Limiter(Protocol):
    async def admit(self, buckets: Sequence[Bucket], quota: Quota | None, now: float) -> Admission:
        """Take one token from every bucket and one request from the quota, atomically: either all are
        taken and ADMIT, or none is and the first exhausted limit in ``buckets`` order (API Gateway's:
        plan route, plan, stage route, stage) says THROTTLED, or the quota says QUOTA_EXCEEDED. Buckets
        are checked before the quota, so a throttled request does not use quota."""
        ...

    async def used(self, quota: Quota) -> int:
        """Requests counted in ``quota``'s period so far (GET /v1/usage-plans/{name}/usage)."""
        ...

    async def close(self) -> None: ...


Clock = Callable[[], float]  # time.time, or a test's injected clock
