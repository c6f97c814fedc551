"""One API stage's request pipeline, in API Gateway's order, compiled once per Snapshot.

endpoint type -> CORS preflight -> route -> authorizer -> API key -> usage plan and stage throttles and
quota -> stage cache -> integration (HTTP_PROXY, HTTP, MOCK). Each step that refuses ends the request
with a gateway response (lbd/gateway/responses.py). The engines (authorizers, limiter, cache, fetch) are
the seams of lbd/gateway/contracts.py; this module owns the order and the integrations.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lbd.config.gateway import Api, Cors, UsagePlan
from lbd.gateway import integration
from lbd.gateway.contracts import (
    ALLOW,
    Admission,
    Authorizer,
    AuthResult,
    Clock,
    Fetch,
    GatewayRequest,
    Limiter,
)
from lbd.gateway.keys import KeyTable, KnownKey
from lbd.gateway.plans import CompiledPlan, stage_buckets, stage_plans
from lbd.gateway.responses import Answer, GatewayResponses
from lbd.gateway.routes import RouteTable
from lbd.gateway.stats import ApiStats, ApiStatsRegistry
from lbd.observe.ratelimit import RateLimitedLog

if TYPE_CHECKING:
    from lbd.gateway.limiter import LocalLimiter
    from lbd.gateway.stage_cache import StageCache
    from lbd.gateway.waf import ApiFirewall

log = logging.getLogger("lbd.gateway")
LIMITER_WARNINGS = RateLimitedLog()

MAX_PAYLOAD = 10 * 1024 * 1024  # API Gateway's payload limit (REQUEST_TOO_LARGE)
_ADMISSION_TYPES = {
    Admission.THROTTLED: "THROTTLED",
    Admission.QUOTA_EXCEEDED: "QUOTA_EXCEEDED",
    Admission.UNAVAILABLE: "UNAVAILABLE",
}


@dataclass(slots=True)
class Outcome:
    """What happened to one request, for the access log and metrics."""

    route_key: str = "-"
    response_type: str = ""  # the gateway response type when the gateway answered
    authorizer: str = "-"  # the authorizer's outcome (ALLOW, UNAUTHORIZED ...), "-" without one
    key_id: str = "-"
    integration_status: int = 0
    integration_latency: float = -1.0
    cache: str = "-"  # hit | miss | -
    stats: ApiStats | None = None
    waf_rule: str = "-"  # the web ACL's deciding rule (or Default_Action), "-" without one
    waf_action: str = "-"  # allow | block


@dataclass(slots=True)
class CompiledRoute:
    route_key: str
    call: integration.Integration
    authorizer: str | None
    scopes: tuple[str, ...]
    key_required: bool
    stage_buckets: list[Any]
    stats: ApiStats
    cache_ttl: int = 0
    cache_keys: tuple[str, ...] = ()


class ApiPipeline:
    def __init__(
        self,
        api: Api,
        plans: tuple[UsagePlan, ...],
        *,
        keys: Callable[[], KeyTable],
        fetch: Fetch,
        limiter: Limiter,
        clock: Clock,
        stats: ApiStatsRegistry,
        authorizers: Mapping[str, Authorizer],
    ) -> None:
        self.api = api
        self.name = api.name
        self.stage = api.stage
        self.rest = api.protocol == "REST"
        self.private = api.endpoint_type == "PRIVATE"
        self.responses = GatewayResponses(api.gateway_responses)
        self.cors = api.cors
        self.plans: dict[str, CompiledPlan] = stage_plans(plans, api.name, api.stage)
        self.from_authorizer = api.api_key_source == "AUTHORIZER"
        self._keys = keys
        self._fetch = fetch
        self._limiter = limiter
        self._local: LocalLimiter | None = _local(limiter)
        self._clock = clock
        self._authorizers = authorizers
        self._unmatched = stats.route(api.name, api.stage, "-")
        self.waf: ApiFirewall | None = None  # the stage's web ACL (lbd/gateway/waf.py), set by attach
        self.cache: StageCache | None = None
        if api.cache.enabled:
            from lbd.gateway.stage_cache import StageCache

            self.cache = StageCache(api, clock)
        routes = []
        for route in api.routes:
            ttl = 0
            if api.cache.enabled and (route.cache is None or route.cache.enabled):
                ttl = api.cache.ttl_seconds
                if route.cache is not None and route.cache.ttl_seconds is not None:
                    ttl = route.cache.ttl_seconds
            compiled = CompiledRoute(
                route.route_key,
                integration.compile_integration(route.integration, route.route_key),
                route.authorizer,
                route.authorization_scopes,
                route.api_key_required,
                stage_buckets(api.name, api.stage, route.route_key, route.throttle, api.throttle),
                stats.route(api.name, api.stage, route.route_key),
                ttl,
                route.cache.key_parameters if route.cache is not None else (),
            )
            routes.append((route.route_key, compiled))
        self.table: RouteTable[CompiledRoute] = RouteTable(routes)

    # -- the request path ------------------------------------------------------------------------------

    async def handle(self, request: GatewayRequest, outcome: Outcome) -> Answer:
        if self.waf is not None:
            blocked = self._firewall(self.waf, request, outcome)
            if blocked is not None:
                return blocked
        if self.private and not _private_source(request.source_ip):
            # A private API answers only from private networks (its VPC endpoint, here: private and
            # loopback sources), as an internal load balancer would be unreachable from outside.
            outcome.stats = self._unmatched
            return self._refuse(outcome, "ACCESS_DENIED")
        cors = self.cors
        if (
            cors is not None
            and request.method == "OPTIONS"
            and "access-control-request-method" in request.headers
        ):
            outcome.stats = self._unmatched
            outcome.route_key = "-"
            return _preflight(cors, request.headers.get("origin"))
        match = self.table.match(request.method, request.path)
        if match is None:
            outcome.stats = self._unmatched
            # REST APIs answer an unknown resource or method as a missing token (the famous 403); HTTP
            # APIs with 404.
            return self._refuse(
                outcome, "MISSING_AUTHENTICATION_TOKEN" if self.rest else "RESOURCE_NOT_FOUND"
            )
        route = match.value
        outcome.route_key = match.route_key
        outcome.stats = route.stats
        request.route_key = match.route_key
        request.path_parameters = match.path_parameters
        auth: AuthResult | None = None
        if route.authorizer is not None:
            auth = await self._authorize(route, request, outcome)
            if not auth.allowed:
                answer = self._refuse(outcome, auth.outcome, message=auth.message)
                if auth.headers:  # e.g. JWT's WWW-Authenticate (RFC 6750 3)
                    extra = tuple((name.lower(), value) for name, value in auth.headers)
                    answer = Answer(
                        answer.status, (*answer.headers, *extra), answer.body, answer.response_type
                    )
                return answer
        buckets = route.stage_buckets
        quota = None
        if route.key_required:
            value = (
                auth.usage_identifier_key
                if self.from_authorizer and auth is not None
                else request.headers.get("x-api-key")
            )
            key = self._keys().lookup(value) if value else None
            plan = self._plan_of(key)
            if key is None or plan is None:
                return self._refuse(outcome, "INVALID_API_KEY")
            outcome.key_id = key.id
            now = self._clock()
            buckets = [*plan.buckets(key.counter, route.route_key), *buckets]
            quota = plan.quota_for(key.counter, now)
        if buckets or quota is not None:
            admission = await self._admit(buckets, quota)
            if admission is not Admission.ADMIT:
                route.stats.throttled += 1
                return self._refuse(outcome, _ADMISSION_TYPES[admission])
        if self.cache is not None and route.cache_ttl > 0 and request.method == "GET":
            answer = await self.cache.serve(
                route,
                request,
                outcome,
                lambda: integration.run(route.call, request, auth, self._fetch, outcome, self.responses),
                lambda: self._refuse(outcome, "ACCESS_DENIED"),
            )
        else:
            answer = await integration.run(route.call, request, auth, self._fetch, outcome, self.responses)
        if cors is not None:
            answer = _with_cors(answer, cors, request.headers.get("origin"))
        return answer

    def _firewall(self, waf: ApiFirewall, request: GatewayRequest, outcome: Outcome) -> Answer | None:
        """WAF first, before API Gateway routes (lbd/gateway/waf.py): the block answer, or None to go on."""
        from lbd.gateway.waf import WAF_FILTERED, insert_headers

        key_id = None
        if waf.needs_key:
            value = request.headers.get("x-api-key")
            known = self._keys().lookup(value) if value else None
            key_id = known.id if known is not None else None
        verdict = waf.check(request, key_id)
        outcome.waf_rule = verdict.rule
        outcome.waf_action = verdict.action
        if verdict.action == "block":
            outcome.stats = self._unmatched
            custom = waf.custom_answer(verdict)
            if custom is not None:
                outcome.response_type = WAF_FILTERED
                return custom
            return self._refuse(outcome, WAF_FILTERED)
        if verdict.headers and isinstance(request.headers, dict):
            insert_headers(request.headers, verdict.headers)
        return None

    async def _authorize(self, route: CompiledRoute, request: GatewayRequest, outcome: Outcome) -> AuthResult:
        authorizer = self._authorizers.get(route.authorizer or "")
        if authorizer is None:
            outcome.authorizer = "AUTHORIZER_CONFIGURATION_ERROR"
            return AuthResult("AUTHORIZER_CONFIGURATION_ERROR")
        try:
            result = await authorizer.authorize(request, route.scopes)
        except Exception:
            log.exception("api %s: authorizer %s failed", self.name, route.authorizer)
            result = AuthResult("AUTHORIZER_FAILURE")
        outcome.authorizer = result.outcome if result.outcome != ALLOW else "ALLOW"
        return result

    def _plan_of(self, key: KnownKey | None) -> CompiledPlan | None:
        if key is None or not key.enabled:
            return None
        for name in key.plans:
            plan = self.plans.get(name)
            if plan is not None:
                return plan
        return None

    async def _admit(self, buckets: Sequence[Any], quota: Any) -> Admission:
        now = self._clock()
        if self._local is not None:
            return self._local.admit_now(buckets, quota, now)
        try:
            return await self._limiter.admit(buckets, quota, now)
        except Exception as exc:
            # The shared limiter handles Redis outages itself (shared_state.on_failure); this is what it
            # did not foresee. Admitting keeps the API up; one line per 10 s says so.
            LIMITER_WARNINGS.warning(
                log, self.name, "api %s: the usage-plan limiter failed (%r); admitting", self.name, exc
            )
            return Admission.ADMIT

    def _refuse(self, outcome: Outcome, kind: str, message: str | None = None) -> Answer:
        outcome.response_type = kind
        if kind not in GatewayResponses.KNOWN:
            kind = "AUTHORIZER_FAILURE"
        return self.responses.answer(kind, message=message)

    def refuse(self, kind: str, status: int | None = None) -> Answer:
        """A gateway response for what the connection layer refuses (too large, unparsable)."""
        return self.responses.answer(kind, status=status)


def _local(limiter: Limiter) -> LocalLimiter | None:
    from lbd.gateway.limiter import LocalLimiter

    return limiter if isinstance(limiter, LocalLimiter) else None


_PRIVATE: dict[str, bool] = {}


def _private_source(ip: str) -> bool:
    known = _PRIVATE.get(ip)
    if known is None:
        try:
            address = ipaddress.ip_address(ip)
            known = address.is_private or address.is_loopback
        except ValueError:
            known = False
        if len(_PRIVATE) > 10_000:
            _PRIVATE.clear()
        _PRIVATE[ip] = known
    return known


# -- CORS ("Configuring CORS for an HTTP API"; the Fetch standard's CORS protocol) -----------------------


def _allowed_origin(cors: Cors, origin: str | None) -> str | None:
    if origin is None:
        return None
    if "*" in cors.allow_origins:
        return "*" if not cors.allow_credentials else origin
    return origin if origin in cors.allow_origins else None


def _preflight(cors: Cors, origin: str | None) -> Answer:
    allowed = _allowed_origin(cors, origin)
    headers: list[tuple[str, str]] = []
    if allowed is not None:
        headers.append(("access-control-allow-origin", allowed))
        headers.append(("access-control-allow-methods", ",".join(cors.allow_methods)))
        if cors.allow_headers:
            headers.append(("access-control-allow-headers", ",".join(cors.allow_headers)))
        if cors.max_age_seconds:
            headers.append(("access-control-max-age", str(cors.max_age_seconds)))
        if cors.allow_credentials:
            headers.append(("access-control-allow-credentials", "true"))
        if allowed != "*":
            headers.append(("vary", "origin"))
    return Answer(204, tuple(headers), b"", "")


def _with_cors(answer: Answer, cors: Cors, origin: str | None) -> Answer:
    allowed = _allowed_origin(cors, origin)
    if allowed is None:
        return answer
    extra = [("access-control-allow-origin", allowed)]
    if cors.expose_headers:
        extra.append(("access-control-expose-headers", ",".join(cors.expose_headers)))
    if cors.allow_credentials:
        extra.append(("access-control-allow-credentials", "true"))
    return Answer(answer.status, (*answer.headers, *extra), answer.body, answer.response_type)
