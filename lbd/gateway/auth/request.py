"""REQUEST authorizers: an HTTP endpoint on a target group decides, in the role a Lambda authorizer plays
("Use API Gateway Lambda authorizers"; "Working with AWS Lambda authorizers for HTTP APIs").

lbd POSTs the authorizer's input event as JSON to ``endpoint.path`` on ``endpoint.target_group`` and reads
the endpoint's JSON answer as the function's output:

- ``response_format: simple`` (HTTP API, payload format 2.0): the event has ``version: "2.0"``,
  ``routeArn``, ``identitySource``, ``routeKey``, ``rawPath``, ``rawQueryString``, ``headers``... and the
  answer is ``{"isAuthorized": true|false, "context": {...}}``; false is 403 ``{"message":"Forbidden"}``.
- ``response_format: iam`` (REST API REQUEST authorizer): the event has ``methodArn``, ``resource``,
  ``path``, ``httpMethod``, ``headers``, ``queryStringParameters``, ``pathParameters``,
  ``requestContext``; the answer has ``principalId``, a ``policyDocument`` whose statements Allow or Deny
  ``execute-api:Invoke`` on resources (IAM wildcards), ``context`` (string, number and boolean values,
  passed on as strings) and ``usageIdentifierKey``. An explicit Deny wins; no matching Allow is a deny.

Before any call: a missing or empty identity source is 401 Unauthorized, and the endpoint is not asked.
An endpoint answering 401 is Unauthorized (a Lambda authorizer's ``Unauthorized`` error). An endpoint that
cannot be reached or does not answer within ``endpoint.timeout_ms``, or answers something that is not a
valid authorizer response, is 500 AUTHORIZER_CONFIGURATION_ERROR (API Gateway's
AuthorizerConfigurationException); one answering another error status is 500 AUTHORIZER_FAILURE (the
authorizer ran and failed).

Answers are cached for ``ttl_seconds`` by the identity sources' values (all of them, REQUEST authorizers'
cache key). As in API Gateway a cached policy is evaluated again for each request's method ARN, so one
policy covers every method it names; for a per-route cache with the simple format, add
``$context.routeKey`` to the identity sources. Without identity sources nothing is cached. The cache is
an LRU of ``MAX_CACHED`` entries per authorizer, per worker. Requests that arrive with the same identity
while the endpoint is being asked for it wait for that one answer instead of asking again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lbd.gateway.arn import ACCOUNT_ID, DEFAULT_REGION, action_matches, any_resource_matches, method_arn
from lbd.gateway.auth.identity import identity_value, query_parameters
from lbd.gateway.contracts import ALLOW, AuthResult, Clock, Fetch, GatewayRequest
from lbd.observe.ratelimit import RateLimitedLog

if TYPE_CHECKING:
    from lbd.config.gateway_auth import RequestAuthorizer

log = logging.getLogger("lbd.gateway.auth")
WARNINGS = RateLimitedLog()  # an authorizer that is down fails every request: one line per 10 s

MAX_CACHED = 10_000
MAX_ANSWER = 64 * 1024  # bytes of JSON an authorizer may answer; more is a configuration error

UNAUTHORIZED = AuthResult("UNAUTHORIZED", message="Unauthorized")
EXPLICIT_DENY = "User is not authorized to access this resource with an explicit deny"
IMPLICIT_DENY = "User is not authorized to access this resource"


class BadAnswer(ValueError):
    """The endpoint's answer is not a valid authorizer response."""


@dataclass(frozen=True, slots=True)
class Answer:
    """An authorizer's decision, as cached (the policy is evaluated per request)."""

    authorized: bool | None = None  # simple format
    principal_id: str | None = None
    statements: tuple[Mapping[str, Any], ...] = ()
    context: Mapping[str, str] = field(default_factory=dict)
    usage_identifier_key: str | None = None


# -- the event ---------------------------------------------------------------------------------------------


def _route_path(request: GatewayRequest) -> str:
    _, _, path = request.route_key.partition(" ")
    return path or request.path


def _headers(request: GatewayRequest, without: frozenset[str] = frozenset()) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k not in without}


def _request_time(request: GatewayRequest) -> tuple[str, int]:
    at = request.received_at or time.time()
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(at)), int(at * 1000)


def simple_event(request: GatewayRequest, arn: str, identity: Sequence[str]) -> dict[str, Any]:
    """An HTTP API's REQUEST authorizer input, payload format version 2.0."""
    host = request.header("host") or ""
    stamp, epoch_ms = _request_time(request)
    cookie = request.header("cookie")
    event: dict[str, Any] = {
        "version": "2.0",
        "type": "REQUEST",
        "routeArn": arn,
        "identitySource": list(identity),
        "routeKey": request.route_key,
        "rawPath": request.path,
        "rawQueryString": request.query,
        "headers": _headers(request, frozenset({"cookie"})),
        "queryStringParameters": query_parameters(request.query),
        "pathParameters": dict(request.path_parameters),
        "stageVariables": {},
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": request.api,
            "domainName": host,
            "domainPrefix": host.split(".")[0],
            "http": {
                "method": request.method,
                "path": request.path,
                "protocol": "HTTP/1.1",
                "sourceIp": request.source_ip,
                "userAgent": request.header("user-agent") or "",
            },
            "requestId": request.request_id,
            "routeKey": request.route_key,
            "stage": request.stage,
            "time": stamp,
            "timeEpoch": epoch_ms,
        },
    }
    if cookie:
        event["cookies"] = [c.strip() for c in cookie.split(";") if c.strip()]
    return event


def rest_event(request: GatewayRequest, arn: str) -> dict[str, Any]:
    """A REST API's REQUEST authorizer input."""
    multi_query: dict[str, list[str]] = {}
    for name, values in query_parameters(request.query).items():
        multi_query[name] = values.split(",")
    resource = _route_path(request)
    return {
        "type": "REQUEST",
        "methodArn": arn,
        "resource": resource,
        "path": request.path,
        "httpMethod": request.method,
        "headers": _headers(request),
        "multiValueHeaders": {k: [v] for k, v in request.headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()},
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": dict(request.path_parameters),
        "stageVariables": {},
        "requestContext": {
            "path": request.path,
            "accountId": ACCOUNT_ID,
            "resourceId": "",
            "stage": request.stage,
            "requestId": request.request_id,
            "identity": {"sourceIp": request.source_ip, "userAgent": request.header("user-agent") or ""},
            "resourcePath": resource,
            "httpMethod": request.method,
            "apiId": request.api,
        },
    }


# -- the answer --------------------------------------------------------------------------------------------


def _stringify(value: Any, simple: bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if simple:  # HTTP APIs pass objects and arrays on as JSON
        return json.dumps(value, separators=(",", ":"))
    raise BadAnswer("context values must be strings, numbers or booleans")


def _context(data: Mapping[str, Any], simple: bool) -> dict[str, str]:
    context = data.get("context")
    if context is None:
        return {}
    if not isinstance(context, dict):
        raise BadAnswer('"context" must be a JSON object')
    return {str(k): _stringify(v, simple) for k, v in context.items() if v is not None}


def _listed(value: Any, name: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise BadAnswer(f'a statement\'s "{name}" must be a string or a list of strings')
    return list(items)


def parse_answer(body: bytes, simple: bool) -> Answer:
    if len(body) > MAX_ANSWER:
        raise BadAnswer(f"the answer is larger than {MAX_ANSWER} bytes")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise BadAnswer("the answer is not JSON") from None
    if not isinstance(data, dict):
        raise BadAnswer("the answer is not a JSON object")
    if simple:
        if not isinstance(data.get("isAuthorized"), bool):
            raise BadAnswer('a simple response needs "isAuthorized": true or false')
        return Answer(authorized=data["isAuthorized"], context=_context(data, simple))
    principal = data.get("principalId")
    document = data.get("policyDocument")
    if not isinstance(principal, str) or not isinstance(document, dict):
        raise BadAnswer('an IAM response needs "principalId" (a string) and "policyDocument"')
    raw = document.get("Statement")
    statements = [raw] if isinstance(raw, dict) else raw
    if not isinstance(statements, list) or not all(isinstance(s, dict) for s in statements):
        raise BadAnswer('"policyDocument" needs a "Statement" list')
    for statement in statements:
        if statement.get("Effect") not in ("Allow", "Deny"):
            raise BadAnswer('a statement\'s "Effect" must be "Allow" or "Deny"')
        _listed(statement.get("Action"), "Action")
        _listed(statement.get("Resource"), "Resource")
    key = data.get("usageIdentifierKey")
    return Answer(
        principal_id=principal,
        statements=tuple(statements),
        context=_context(data, simple),
        usage_identifier_key=key if isinstance(key, str) else None,
    )


def evaluate(statements: Sequence[Mapping[str, Any]], arn: str) -> str:
    """ "Deny" if a statement denies ``arn``, else "Allow" if one allows it, else "" (IAM's evaluation
    logic: an explicit deny overrides any allow; the default is deny)."""
    verdict = ""
    for statement in statements:
        if action_matches(_listed(statement["Action"], "Action")) and any_resource_matches(
            _listed(statement["Resource"], "Resource"), arn
        ):
            if statement["Effect"] == "Deny":
                return "Deny"
            verdict = "Allow"
    return verdict


def decide(answer: Answer, arn: str, cached: bool) -> AuthResult:
    if answer.authorized is not None:
        if not answer.authorized:
            return AuthResult("ACCESS_DENIED", message="Forbidden", cached=cached)
        return AuthResult(ALLOW, context=answer.context, cached=cached)
    verdict = evaluate(answer.statements, arn)
    if verdict != "Allow":
        message = EXPLICIT_DENY if verdict == "Deny" else IMPLICIT_DENY
        return AuthResult("ACCESS_DENIED", principal_id=answer.principal_id, message=message, cached=cached)
    return AuthResult(
        ALLOW,
        principal_id=answer.principal_id,
        context=answer.context,
        usage_identifier_key=answer.usage_identifier_key,
        cached=cached,
    )


# -- the cache ---------------------------------------------------------------------------------------------


class AnswerCache:
    """Answers by identity values, each for ``ttl`` seconds of ``clock``; least recently used out first."""

    def __init__(self, ttl: float, clock: Clock, capacity: int = MAX_CACHED) -> None:
        self.ttl = ttl
        self._clock = clock
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, ...], tuple[float, Answer]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, ...]) -> Answer | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry[0]:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: tuple[str, ...], answer: Answer) -> None:
        self._entries[key] = (self._clock() + self.ttl, answer)
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


# -- the authorizer ----------------------------------------------------------------------------------------


class RequestAuthorizerEngine:
    def __init__(
        self, config: RequestAuthorizer, fetch: Fetch, clock: Clock, region: str = DEFAULT_REGION
    ) -> None:
        self.name = config.name
        self.config = config
        self._fetch = fetch
        self._region = region
        self.simple = config.response_format == "simple"
        cacheable = config.ttl_seconds > 0 and bool(config.identity_sources)
        self.cache = AnswerCache(config.ttl_seconds, clock) if cacheable else None
        self._pending: dict[tuple[str, ...], asyncio.Future[Answer | AuthResult]] = {}
        self.calls = 0

    async def authorize(self, request: GatewayRequest, scopes: Sequence[str]) -> AuthResult:
        identity = [identity_value(request, source) for source in self.config.identity_sources]
        values = [v for v in identity if v is not None]
        if len(values) != len(identity):
            return UNAUTHORIZED
        arn = method_arn(self._region, request.api, request.stage, request.method, request.path)
        key = tuple(values)
        if self.cache is not None:
            answer = self.cache.get(key)
            if answer is not None:
                return decide(answer, arn, cached=True)
        event = simple_event(request, arn, values) if self.simple else rest_event(request, arn)
        if self.cache is None:
            outcome = await self._ask(event)
        else:
            # Requests with the same identity while the endpoint is being asked wait for its one answer.
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = asyncio.ensure_future(self._ask(event))
                pending.add_done_callback(lambda _: self._pending.pop(key, None))
            outcome = await asyncio.shield(pending)
        if isinstance(outcome, AuthResult):
            return outcome
        if self.cache is not None:
            self.cache.put(key, outcome)
        return decide(outcome, arn, cached=False)

    async def _ask(self, event: dict[str, Any]) -> Answer | AuthResult:
        endpoint = self.config.endpoint
        body = json.dumps(event, separators=(",", ":")).encode()
        headers = [("content-type", "application/json"), ("accept", "application/json")]
        self.calls += 1
        try:
            reply = await self._fetch(
                endpoint.target_group, "POST", endpoint.path, headers, body, endpoint.timeout_ms / 1000
            )
        except (TimeoutError, ConnectionError, OSError) as exc:
            return self._failed("AUTHORIZER_CONFIGURATION_ERROR", f"no answer: {exc or type(exc).__name__}")
        if reply.status == 401:
            return UNAUTHORIZED
        if not 200 <= reply.status < 300:
            return self._failed("AUTHORIZER_FAILURE", f"it answered HTTP {reply.status}")
        try:
            return parse_answer(reply.body, self.simple)
        except BadAnswer as exc:
            return self._failed("AUTHORIZER_CONFIGURATION_ERROR", str(exc))

    def _failed(self, outcome: str, why: str) -> AuthResult:
        # The client gets API Gateway's bare 500; the reason is for the operator only.
        endpoint = self.config.endpoint
        where = f"{self.name} ({endpoint.target_group} {endpoint.path})"
        WARNINGS.warning(log, f"{self.name}:{outcome}", "authorizer %s: %s: %s", where, outcome, why)
        return AuthResult(outcome)

    async def close(self) -> None:
        return None
