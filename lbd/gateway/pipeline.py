"""One API stage's request pipeline, in API Gateway's order, compiled once per Snapshot.

endpoint type -> CORS preflight -> route -> authorizer -> API key -> usage plan and stage throttles and
quota -> stage cache -> integration (HTTP_PROXY, HTTP, MOCK). Each step that refuses ends the request
with a gateway response (lbd/gateway/responses.py). The engines (authorizers, limiter, cache, fetch) are
the seams of lbd/gateway/contracts.py; this module owns the order and the integrations.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lbd.gateway import integration
from lbd.gateway.contracts import (
    ALLOW,
    Admission,
    Authorizer,
    AuthResult,
    Clock,
    Limiter,
    Quota,
)
from lbd.gateway.fetch import GatewayFetch
from lbd.gateway.keys import KeyTable, KnownKey
from lbd.gateway.plans import CompiledPlan, stage_buckets, stage_plans
from lbd.gateway.request import GatewayRequest
from lbd.gateway.responses import Answer, GatewayResponses
from lbd.gateway.routes import RouteTable
from lbd.gateway.stats import ApiStats, ApiStatsRegistry
from lbd.observe.ratelimit import RateLimitedLog

if TYPE_CHECKING:
    from lbd.config.gateway import Api, Cors, UsagePlan
    from lbd.gateway.limiter import LocalLimiter
    from lbd.gateway.stage_cache import StageCache
    from lbd.gateway.waf import ApiFirewall

log = logging.getLogger("lbd.gateway")
LIMITER_WARNINGS = RateLimitedLog()

Done = Callable[[Answer], None]
MAX_PAYLOAD = 10 * 1024 * 1024  # API Gateway's payload limit (REQUEST_TOO_LARGE)
_UNKNOWN: Any = object()
_ADMIT = Admission.ADMIT
_ADMISSION_TYPES = {
    Admission.THROTTLED: "THROTTLED",
    Admission.QUOTA_EXCEEDED: "QUOTA_EXCEEDED",
    Admission.UNAVAILABLE: "UNAVAILABLE",
}


class Outcome:
    """What happened to one request, for the access log and metrics (an extension type when compiled:
    pipeline.pxd)."""

    def __init__(
        self,
        route_key: str = "-",
        response_type: str = "",
        authorizer: str = "-",
        key_id: str = "-",
        integration_status: int = 0,
        integration_latency: float = -1.0,
        cache: str = "-",
        stats: ApiStats | None = None,
        waf_rule: str = "-",
        waf_action: str = "-",
    ) -> None:
        self.route_key = route_key
        self.response_type = response_type  # the gateway response type when the gateway answered
        self.authorizer = authorizer  # the authorizer's outcome (ALLOW, UNAUTHORIZED ...), "-" without one
        self.key_id = key_id
        self.integration_status = integration_status
        self.integration_latency = integration_latency
        self.cache = cache  # hit | miss | -
        self.stats = stats
        self.waf_rule = waf_rule  # the web ACL's deciding rule (or Default_Action), "-" without one
        self.waf_action = waf_action  # allow | block


class CompiledRoute:
    """One route as the pipeline runs it (an extension type when compiled: pipeline.pxd)."""

    def __init__(
        self,
        route_key: str,
        call: integration.Integration,
        authorizer: str | None,
        scopes: tuple[str, ...],
        key_required: bool,
        stage_buckets: list[Any],
        stats: ApiStats,
        cache_ttl: int = 0,
        cache_keys: tuple[str, ...] = (),
    ) -> None:
        self.route_key = route_key
        self.call = call
        self.authorizer = authorizer
        self.scopes = scopes
        self.key_required = key_required
        self.stage_buckets = stage_buckets
        self.stats = stats
        self.cache_ttl = cache_ttl
        self.cache_keys = cache_keys


class ApiPipeline:
    def __init__(
        self,
        api: Api,
        plans: tuple[UsagePlan, ...],
        *,
        keys: Callable[[], KeyTable],
        fetch: GatewayFetch,
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
        # Each authorizer's authorize_now (None: it always awaits), found once: the authorizers are built
        # on first use and kept for the Snapshot, as this pipeline is.
        self._authorize_nows: dict[str, Any] = {}
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

    def serve(self, request: GatewayRequest, outcome: Outcome, done: Done) -> asyncio.Task[None] | None:
        """Answer ``request``: ``done`` gets the answer, once, maybe before this returns.

        In line, without a coroutine, while every engine can answer at once (the common case: the route,
        a JWT verified with the keys held, the API key, the in-process limiter, the stage cache), then by
        the integration's callbacks (lbd/gateway/fetch.py). An engine that must wait (a JWKS fetch, a
        REQUEST authorizer's call, the Redis limiter) goes on in a task, returned so the connection can
        cancel it. Nothing before that point has side effects, so the task starts from the step that
        waits."""
        if self.waf is not None:
            blocked = self._firewall(self.waf, request, outcome)  # WAF first, as before API Gateway
            if blocked is not None:
                done(blocked)
                return None
        found = self._route(request, outcome)
        if isinstance(found, Answer):
            done(found)
            return None
        route: CompiledRoute = found
        auth: AuthResult | None = None
        if route.authorizer is not None:
            auth = self._authorize_now(route, request, outcome)
            if auth is None:
                return self._later(route, request, outcome, done, None, False)
            refused = self._auth_refused(auth, outcome)
            if refused is not None:
                done(refused)
                return None
        limits = self._limits(route, request, outcome, auth)
        if isinstance(limits, Answer):
            done(limits)
            return None
        if limits is not None:
            local = self._local
            if local is None:
                return self._later(route, request, outcome, done, auth, True)
            # The clock as the key's quota read it (one reading for the request's buckets and quota).
            now = limits[2] if route.key_required else self._clock()
            refused = self._admission(route, outcome, local.admit_now(limits[0], limits[1], now))
            if refused is not None:
                done(refused)
                return None
        self._integrate(route, request, outcome, auth, done)
        return None

    async def handle(self, request: GatewayRequest, outcome: Outcome) -> Answer:
        """``serve`` as a coroutine."""
        answered: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        task = self.serve(request, outcome, answered.set_result)
        try:
            return await answered
        finally:
            if task is not None:
                task.cancel()

    def _route(self, request: GatewayRequest, outcome: Outcome) -> CompiledRoute | Answer:
        """Endpoint type, CORS preflight and route matching: the route, or the gateway's answer."""
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
        return route

    def _later(
        self,
        route: CompiledRoute,
        request: GatewayRequest,
        outcome: Outcome,
        done: Done,
        auth: AuthResult | None,
        authorized: bool,
    ) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(
            self._waiting(route, request, outcome, done, auth, authorized)
        )
        task.add_done_callback(_report)
        return task

    async def _waiting(
        self,
        route: CompiledRoute,
        request: GatewayRequest,
        outcome: Outcome,
        done: Done,
        auth: AuthResult | None,
        authorized: bool,
    ) -> None:
        """``serve`` from the step that must wait: the authorizer (``authorized`` False) or the limiter."""
        try:
            if not authorized:
                auth = await self._authorize(route, request, outcome)
                refused = self._auth_refused(auth, outcome)
                if refused is not None:
                    done(refused)
                    return
            limits = self._limits(route, request, outcome, auth)
            if isinstance(limits, Answer):
                done(limits)
                return
            if limits is not None:
                refused = self._admission(route, outcome, await self._admit(limits[0], limits[1]))
                if refused is not None:
                    done(refused)
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("api %s: internal error on %s %s", self.name, request.method, request.path)
            done(self._refuse(outcome, "API_CONFIGURATION_ERROR"))
            return
        self._integrate(route, request, outcome, auth, done)

    def _authorize_now(
        self, route: CompiledRoute, request: GatewayRequest, outcome: Outcome
    ) -> AuthResult | None:
        """The authorizer's answer if it has one without waiting (``authorize_now``), else None."""
        name = route.authorizer or ""
        now = self._authorize_nows.get(name, _UNKNOWN)
        if now is _UNKNOWN:
            authorizer = self._authorizers.get(name)
            if authorizer is None:
                outcome.authorizer = "AUTHORIZER_CONFIGURATION_ERROR"
                return AuthResult("AUTHORIZER_CONFIGURATION_ERROR")
            now = self._authorize_nows[name] = getattr(authorizer, "authorize_now", None)
        if now is None:
            return None
        try:
            result: AuthResult | None = now(request, route.scopes)
        except Exception:
            log.exception("api %s: authorizer %s failed", self.name, route.authorizer)
            result = AuthResult("AUTHORIZER_FAILURE")
        if result is not None:
            outcome.authorizer = result.outcome if result.outcome != ALLOW else "ALLOW"
        return result

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

    def _auth_refused(self, auth: AuthResult, outcome: Outcome) -> Answer | None:
        if auth.allowed:
            return None
        answer = self._refuse(outcome, auth.outcome, message=auth.message)
        if auth.headers:  # e.g. JWT's WWW-Authenticate (RFC 6750 3)
            extra = tuple([(name.lower(), value) for name, value in auth.headers])
            answer = Answer(answer.status, (*answer.headers, *extra), answer.body, answer.response_type)
        return answer

    def _limits(
        self, route: CompiledRoute, request: GatewayRequest, outcome: Outcome, auth: AuthResult | None
    ) -> tuple[Sequence[Any], Quota | None, float] | Answer | None:
        """The API key's check, then the buckets and quota the request draws from (None: no limits), or
        the refusal of a missing or unknown key; with the clock's reading for the key's quota (0.0 when
        the route takes no key)."""
        buckets = route.stage_buckets
        quota = None
        now = 0.0
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
            buckets = plan.buckets_for(key.counter, route.route_key, buckets)
            quota = plan.quota_for(key.counter, now)
        if buckets or quota is not None:
            return buckets, quota, now
        return None

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
            request.raw_fields = b""  # the fields as received are not all the fields now
        return None

    def _admission(self, route: CompiledRoute, outcome: Outcome, admission: Admission) -> Answer | None:
        if admission is _ADMIT:
            return None
        route.stats.throttled += 1
        return self._refuse(outcome, _ADMISSION_TYPES[admission])

    def _integrate(
        self,
        route: CompiledRoute,
        request: GatewayRequest,
        outcome: Outcome,
        auth: AuthResult | None,
        done: Done,
    ) -> None:
        """The stage cache, then the integration; CORS headers on what comes back."""
        reply = done
        cors = self.cors
        if cors is not None:
            origin = request.headers.get("origin")

            def with_cors(answer: Answer) -> None:
                done(_with_cors(answer, cors, origin))

            reply = with_cors
        cache = self.cache
        if cache is not None and route.cache_ttl > 0 and request.method == "GET":
            found = cache.lookup(route, request, outcome)
            if found is None:  # an invalidation this caller may not ask for (FAIL_WITH_403)
                reply(self._refuse(outcome, "ACCESS_DENIED"))
                return
            if isinstance(found, Answer):
                reply(found)
                return
            uncached = reply

            def stored(answer: Answer) -> None:
                try:
                    cache.store(route, found, answer)
                except Exception:
                    log.exception("api %s: the stage cache failed to store an answer", self.name)
                uncached(answer)

            reply = stored
        integration.start(route.call, request, auth, self._fetch, outcome, self.responses, reply)

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


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("internal error in an API request", exc_info=task.exception())


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
