"""Config models of the API Gateway layer: APIs, their stage, routes and integrations, and usage plans.

DESIGN.md section 4b sketches the keys; the semantics are Amazon API Gateway's (Developer Guide pages
"Working with routes for HTTP APIs", "Set up HTTP integrations in API Gateway", "Usage plans and API keys",
"Throttle API requests", "Gateway response types"). Authorizers and the fleet's shared state are in
gateway_auth.py. Rules that relate one part of the file to another (target groups, authorizer names,
ports) are in validate.py; what validates but is not served yet is refused by preflight.py.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from lbd.config.base import ELB_POLICIES, NAME, PATTERN_WORDS, CertificateName, Model
from lbd.config.gateway_auth import Authorizer

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY")
# "GET /pets/{id}", "ANY /{proxy+}", "$default" (API Gateway route keys; a greedy {name+} only last).
ROUTE_KEY = re.compile(
    r"^(\$default|(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS|ANY) "
    r"(/|(/(\{[A-Za-z0-9._-]+\}|[A-Za-z0-9._~!$&'()*,;=:@%-]+))*(/\{[A-Za-z0-9._-]+\+\})?))$"
)
# Parameter mapping (non-proxy HTTP integrations): integration.request.{header,querystring,path}.NAME.
# WebSocket APIs' route keys ("Working with routes for WebSocket APIs"): the predefined $connect,
# $disconnect and $default, or a custom key matched against the route selection expression's value
# (custom keys may not start with "$"). The schema takes either form; gateway_checks.py holds each API
# to its protocol's form.
WS_ROUTE_KEY = re.compile(r"^(\$connect|\$disconnect|\$default|[^$\s][\x21-\x7e]{0,127})$")
ANY_ROUTE_KEY = re.compile(f"^({ROUTE_KEY.pattern[1:-1]}|{WS_ROUTE_KEY.pattern[1:-1]})$")
MAPPING_TARGET = re.compile(r"^integration\.request\.(header|querystring|path)\.[A-Za-z0-9._$-]+$")
MAPPING_SOURCE = re.compile(
    r"^(method\.request\.(header|querystring|path)\.[A-Za-z0-9._$-]+"
    r"|context\.[A-Za-z0-9._$-]+|'[^']*')$"
)
CACHE_KEY = re.compile(r"^method\.request\.(header|querystring|path)\.[A-Za-z0-9._$-]+$")
STAGE = r"^[A-Za-z0-9_-]{1,128}$"
PATTERN_WORDS.update(
    {
        ROUTE_KEY.pattern: '"$default" or METHOD /path (GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS or ANY; '
        "path segments, {name} parameters and one greedy {name+} last)",
        ANY_ROUTE_KEY.pattern: '"$default", METHOD /path (HTTP and REST APIs) or "$connect", '
        '"$disconnect" or a custom key not starting with "$" (WEBSOCKET APIs)',
        CACHE_KEY.pattern: "method.request.header|querystring|path.NAME",
        STAGE: "1-128 letters, digits, _ and -",
        r"^/[^\s?#]*$": "a path starting with / (no spaces, ? or #)",
    }
)
# API Gateway's gateway response types ("Gateway response types for API Gateway").
RESPONSE_TYPES = (
    "ACCESS_DENIED",
    "API_CONFIGURATION_ERROR",
    "AUTHORIZER_CONFIGURATION_ERROR",
    "AUTHORIZER_FAILURE",
    "BAD_REQUEST_PARAMETERS",
    "BAD_REQUEST_BODY",
    "DEFAULT_4XX",
    "DEFAULT_5XX",
    "EXPIRED_TOKEN",
    "INTEGRATION_FAILURE",
    "INTEGRATION_TIMEOUT",
    "INVALID_API_KEY",
    "INVALID_SIGNATURE",
    "MISSING_AUTHENTICATION_TOKEN",
    "QUOTA_EXCEEDED",
    "REQUEST_TOO_LARGE",
    "RESOURCE_NOT_FOUND",
    "THROTTLED",
    "UNAUTHORIZED",
    "UNSUPPORTED_MEDIA_TYPE",
    "WAF_FILTERED",
)


class ApiListener(Model):
    """An API's listener, in the load-balancer listener shape (HTTP or HTTPS)."""

    protocol: Literal["HTTP", "HTTPS"]
    port: int = Field(ge=1, le=65535)
    address: str = "0.0.0.0"
    certificates: tuple[CertificateName, ...] = ()
    ssl_policy: Literal[ELB_POLICIES] = "ELBSecurityPolicy-TLS13-1-2-2021-06"  # type: ignore[valid-type]
    max_connections: int | None = Field(None, ge=1)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        import ipaddress

        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"must be an IP address, got {value!r}") from None
        return value


class Throttle(Model):
    """A token bucket: ``rate_limit`` requests a second refill it (may be fractional), ``burst_limit`` is
    its size (API Gateway: "Throttle API requests for better throughput")."""

    rate_limit: float = Field(gt=0, le=1_000_000)
    burst_limit: int = Field(ge=0, le=5_000_000)


class StageCache(Model):
    enabled: bool = False
    ttl_seconds: int = Field(300, ge=0, le=3600)  # API Gateway: 0..3600, default 300; 0 = off
    capacity_mb: float = Field(0.5, gt=0, le=237)  # API Gateway's sizes: 0.5 GB .. 237 GB; here MB
    # What a client's Cache-Control: max-age=0 gets on a route that needs authorization (the caller
    # cannot be given execute-api:InvalidateCache here, so: refuse, or serve from the cache and say so).
    unauthorized_invalidation: Literal[
        "FAIL_WITH_403", "SUCCEED_WITH_RESPONSE_HEADER", "SUCCEED_WITHOUT_RESPONSE_HEADER"
    ] = "SUCCEED_WITH_RESPONSE_HEADER"


class RouteCache(Model):
    enabled: bool = True
    ttl_seconds: int | None = Field(None, ge=0, le=3600)
    key_parameters: tuple[Annotated[str, Field(pattern=CACHE_KEY.pattern)], ...] = ()


class Cors(Model):
    """HTTP APIs' declarative CORS ("Configuring CORS for an HTTP API")."""

    allow_origins: tuple[str, ...] = Field(min_length=1)
    allow_methods: tuple[str, ...] = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    allow_credentials: bool = False
    max_age_seconds: int = Field(0, ge=0, le=86400)


class StatusMapping(Model):
    """An integration response: ``selection_pattern`` (a regular expression matched against the whole
    status code of the target, as API Gateway's HTTP integrations do) picks ``status_code``; an empty
    pattern is the default response."""

    selection_pattern: str = ""
    status_code: int = Field(ge=100, le=599)

    @field_validator("selection_pattern")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value


class Integration(Model):
    type: Literal["HTTP_PROXY", "HTTP", "MOCK"]
    target_group: str | None = Field(None, pattern=NAME)
    # The path on the target; {name} takes the route's path parameter (a greedy {proxy+} keeps slashes).
    # Default: the request's own path.
    path: str | None = Field(None, pattern=r"^/[^\s?#]*$", max_length=2048)
    timeout_ms: int = Field(29_000, ge=50, le=29_000)
    # HTTP only: integration.request.* <- method.request.* | context.* | 'literal'
    request_parameters: dict[str, str] = Field(default_factory=dict)
    responses: tuple[StatusMapping, ...] = ()
    # MOCK only: the fixed response
    status_code: int = Field(200, ge=100, le=599)
    headers: dict[str, str] = Field(default_factory=dict)
    body: str = Field("", max_length=1_048_576)

    @model_validator(mode="after")
    def _by_type(self) -> Integration:
        if self.type == "MOCK":
            if self.target_group is not None:
                raise ValueError("target_group: a MOCK integration answers itself; remove it")
        elif self.target_group is None:
            raise ValueError(f"target_group: required for an {self.type} integration")
        if self.type != "HTTP" and (self.request_parameters or self.responses):
            raise ValueError(
                "request_parameters and responses are for HTTP (non-proxy) integrations; "
                f"{self.type} passes the request and response through"
            )
        for target, source in self.request_parameters.items():
            if not MAPPING_TARGET.match(target):
                raise ValueError(
                    f"request_parameters: {target!r} must be integration.request.header|querystring|path.NAME"
                )
            if not MAPPING_SOURCE.match(source) and not source.startswith("context.authorizer."):
                raise ValueError(
                    f"request_parameters.{target}: {source!r} must be method.request.header|querystring|"
                    "path.NAME, context.NAME or a 'quoted' literal"
                )
        return self


class Route(Model):
    route_key: str = Field(pattern=ANY_ROUTE_KEY.pattern)
    integration: Integration
    authorizer: str | None = Field(None, pattern=NAME)
    authorization_scopes: tuple[str, ...] = Field((), max_length=10)
    api_key_required: bool = False
    cache: RouteCache | None = None
    throttle: Throttle | None = None
    # WEBSOCKET: "$default" makes the route two-way, its integration's response body going back to the
    # client as a message (API Gateway's routeResponseSelectionExpression; docs/websocket.md).
    route_response_selection_expression: Literal["$default"] | None = None

    @field_validator("route_key")
    @classmethod
    def _one_greedy(cls, value: str) -> str:
        if value.count("+}") > 1:
            raise ValueError("at most one greedy {name+} parameter, as the last segment")
        names = re.findall(r"\{([^}+]+)\+?\}", value)
        if len(set(names)) != len(names):
            raise ValueError("each path parameter name may appear once")
        return value


class GatewayResponse(Model):
    status_code: int | None = Field(None, ge=100, le=599)
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = Field(None, max_length=65536)


class ApiAccessLog(Model):
    path: str = Field(min_length=1)


class Api(Model):
    name: str = Field(pattern=NAME)
    protocol: Literal["REST", "HTTP", "WEBSOCKET"] = "HTTP"
    stage: str = Field("prod", pattern=STAGE)
    endpoint_type: Literal["REGIONAL", "PRIVATE", "EDGE"] = "REGIONAL"
    listeners: tuple[ApiListener, ...] = Field(min_length=1)
    api_key_source: Literal["HEADER", "AUTHORIZER"] = "HEADER"
    throttle: Throttle | None = None
    cache: StageCache = StageCache()
    cors: Cors | None = None
    authorizers: tuple[Authorizer, ...] = ()
    routes: tuple[Route, ...] = Field(min_length=1)
    route_selection_expression: str | None = None  # WEBSOCKET only
    gateway_responses: dict[
        Literal[RESPONSE_TYPES],  # type: ignore[valid-type]
        GatewayResponse,
    ] = Field(default_factory=dict)
    idle_timeout_seconds: int = Field(60, ge=1, le=4000)  # WEBSOCKET: 600 unless set (API Gateway's)
    # WEBSOCKET: a connection is closed (1001) after this long whatever it does (API Gateway: 2 hours).
    max_connection_seconds: int = Field(7200, ge=1, le=7200)
    # One JSON line per request with API Gateway's $context variables (docs/gateway.md).
    access_log: ApiAccessLog | None = None

    @model_validator(mode="after")
    def _websocket_idle(self) -> Api:
        # API Gateway's WebSocket idle timeout is 10 minutes; filled in here, not read from
        # model_fields_set, so that workers (which get plain records, lbd/config/plain.py) see it too.
        if self.protocol == "WEBSOCKET" and "idle_timeout_seconds" not in self.model_fields_set:
            object.__setattr__(self, "idle_timeout_seconds", 600)  # a frozen model, still being built
        return self


class RouteThrottle(Model):
    route_key: str = Field(pattern=ANY_ROUTE_KEY.pattern)
    throttle: Throttle


class PlanStage(Model):
    api: str = Field(pattern=NAME)
    stage: str = Field("prod", pattern=STAGE)
    throttle: tuple[RouteThrottle, ...] = ()  # per-route throttles of the plan


class Quota(Model):
    limit: int = Field(ge=1)
    period: Literal["DAY", "WEEK", "MONTH"]
    # API Gateway's offset (API_QuotaSettings): the day the period starts, WEEK 0 = Sunday .. 6 = Saturday,
    # MONTH 0 = the 1st .. 27 = the 28th; DAY takes 0. Periods are in UTC.
    offset: int = Field(0, ge=0, le=27)

    @model_validator(mode="after")
    def _offset(self) -> Quota:
        top = {"DAY": 0, "WEEK": 6, "MONTH": 27}[self.period]
        if self.offset > top:
            raise ValueError(f"offset: at most {top} for a {self.period} quota, got {self.offset}")
        return self


class UsagePlan(Model):
    name: str = Field(pattern=NAME)
    apis: tuple[PlanStage, ...] = Field(min_length=1)
    throttle: Throttle | None = None
    quota: Quota | None = None
