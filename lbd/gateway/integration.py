"""Integrations: what a matched route does (API Gateway's HTTP_PROXY, HTTP and MOCK types).

- HTTP_PROXY ("Set up HTTP proxy integrations"): the request goes to a target of the target group as it
  came (method, headers, query, body), on the integration's path with the route's path parameters put in
  (a greedy ``{proxy+}`` keeps its slashes); the target's response comes back as it is.
- HTTP (non-proxy, "Set up HTTP custom integrations"): only what ``request_parameters`` maps reaches the
  target (``integration.request.header|querystring|path.NAME`` from ``method.request.*``, ``context.*``,
  ``context.authorizer.claims.*`` or a 'literal'); the body passes through; the client gets the status
  the first matching ``responses`` entry says (its ``selection_pattern`` is a regular expression matched
  against the whole status code of the target), or the default one (empty pattern), or
  API_CONFIGURATION_ERROR when no entry matches and none is the default.
- MOCK: the configured status, headers and body.

Timeouts (timeout_ms, 50 ms to 29 s) give INTEGRATION_TIMEOUT (504); a target that cannot be reached or
answers garbage gives INTEGRATION_FAILURE (502; 503 when the group has no target to send to).
Everything with a pattern is compiled here, once per Snapshot.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import parse_qs, quote, urlencode

from lbd.gateway.contracts import AuthResult, Fetch, GatewayRequest, UpstreamReply
from lbd.gateway.fetch import HOP_BY_HOP, GatewayFetch, NoTarget
from lbd.gateway.responses import Answer, GatewayResponses

if TYPE_CHECKING:
    from lbd.config.gateway import Integration as IntegrationConfig
    from lbd.gateway.pipeline import Outcome

_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9._-]+)(\+?)\}")


@dataclass(frozen=True, slots=True)
class ParameterMapping:
    target: str  # header | querystring | path
    name: str
    source: str  # header | querystring | path | context | literal
    key: str  # the source's name (for context: the dotted path after "context.")


@dataclass(frozen=True, slots=True)
class Integration:
    type: str
    target_group: str | None
    path: tuple[tuple[str, str, bool], ...] | None  # (literal before, parameter, greedy); None: as received
    timeout: float
    mappings: tuple[ParameterMapping, ...]
    statuses: tuple[tuple[re.Pattern[str], int], ...]
    default_status: int | None
    mock: Answer | None


def compile_integration(config: IntegrationConfig, route_key: str) -> Integration:
    path = None
    if config.path is not None:
        pieces: list[tuple[str, str, bool]] = []
        at = 0
        for match in _PLACEHOLDER.finditer(config.path):
            pieces.append((config.path[at : match.start()], match.group(1), bool(match.group(2))))
            at = match.end()
        pieces.append((config.path[at:], "", False))
        path = tuple(pieces)
    mappings = []
    for target, source in config.request_parameters.items():
        _, _, kind, name = target.split(".", 3)
        if source.startswith("'"):
            mappings.append(ParameterMapping(kind, name, "literal", source[1:-1]))
        elif source.startswith("context."):
            mappings.append(ParameterMapping(kind, name, "context", source[len("context.") :]))
        else:
            _, _, source_kind, source_name = source.split(".", 3)
            mappings.append(ParameterMapping(kind, name, source_kind, source_name))
    statuses = tuple(
        (re.compile(entry.selection_pattern), entry.status_code)
        for entry in config.responses
        if entry.selection_pattern
    )
    default = next((e.status_code for e in config.responses if not e.selection_pattern), None)
    mock = None
    if config.type == "MOCK":
        headers = tuple((k.lower(), v) for k, v in config.headers.items())
        if not any(k == "content-type" for k, _ in headers):
            headers += (("content-type", "application/json"),)
        mock = Answer(config.status_code, headers, config.body.encode())
    return Integration(
        config.type,
        config.target_group,
        path,
        config.timeout_ms / 1000,
        tuple(mappings),
        statuses,
        default,
        mock,
    )


Done = Callable[["Answer"], None]


def start(
    call: Integration,
    request: GatewayRequest,
    auth: AuthResult | None,
    fetch: GatewayFetch,
    outcome: Outcome,
    responses: GatewayResponses,
    done: Done,
) -> None:
    """Run the integration; ``done`` gets the answer, maybe before this returns (MOCK, no target)."""
    if call.mock is not None:
        done(call.mock)
        return
    assert call.target_group is not None
    path, headers = _outgoing(call, request, auth, True)
    started = time.monotonic()

    def replied(reply: UpstreamReply | None, error: Exception | None) -> None:
        outcome.integration_latency = time.monotonic() - started
        done(_answer(call, reply, error, outcome, responses))

    fetch.start(call.target_group, request.method, path, headers, request.body, call.timeout, replied)


async def run(
    call: Integration,
    request: GatewayRequest,
    auth: AuthResult | None,
    fetch: Fetch,
    outcome: Outcome,
    responses: GatewayResponses,
) -> Answer:
    """``start`` as a coroutine, over any ``Fetch`` (a WebSocket API's messages await their integration)."""
    if call.mock is not None:
        return call.mock
    assert call.target_group is not None
    path, headers = _outgoing(call, request, auth)
    started = time.monotonic()
    reply: UpstreamReply | None = None
    error: Exception | None = None
    try:
        reply = await fetch(call.target_group, request.method, path, headers, request.body, call.timeout)
    except (TimeoutError, ConnectionError, OSError) as exc:  # NoTarget is a ConnectionError
        error = exc
    outcome.integration_latency = time.monotonic() - started
    return _answer(call, reply, error, outcome, responses)


@overload
def _outgoing(
    call: Integration, request: GatewayRequest, auth: AuthResult | None, raw: Literal[False] = False
) -> tuple[str, list[tuple[str, str]]]: ...


@overload
def _outgoing(
    call: Integration, request: GatewayRequest, auth: AuthResult | None, raw: bool
) -> tuple[str, list[tuple[str, str]] | bytes]: ...


def _outgoing(
    call: Integration, request: GatewayRequest, auth: AuthResult | None, raw: bool = False
) -> tuple[str, list[tuple[str, str]] | bytes]:
    """The path and fields the target gets: as received (HTTP_PROXY) or as mapped (HTTP). With ``raw``
    (GatewayFetch.start takes them so), an HTTP_PROXY request whose field lines came whole gets them as
    they came, Host taken out and X-Forwarded-* added (the fields ``headers`` holds, already rendered)."""
    if call.type != "HTTP_PROXY":
        return _mapped(call, request, auth)
    path = _render(call.path, request.path_parameters) if call.path is not None else request.path
    if request.query:
        path = f"{path}?{request.query}"
    if raw and request.raw_fields:
        return path, _passed_on(request)
    return path, [(n, v) for n, v in request.headers.items() if n not in HOP_BY_HOP]


def _passed_on(request: GatewayRequest) -> bytes:
    return request.raw_fields + request.raw_forwarded


def _answer(
    call: Integration,
    reply: UpstreamReply | None,
    error: Exception | None,
    outcome: Outcome,
    responses: GatewayResponses,
) -> Answer:
    if reply is None:
        if isinstance(error, TimeoutError):
            outcome.response_type = "INTEGRATION_TIMEOUT"
            return responses.answer("INTEGRATION_TIMEOUT")
        outcome.response_type = "INTEGRATION_FAILURE"
        if isinstance(error, NoTarget):
            return responses.answer("INTEGRATION_FAILURE", status=503, message="Service Unavailable")
        return responses.answer("INTEGRATION_FAILURE")  # ConnectionError, OSError
    outcome.integration_status = reply.status
    if call.type == "HTTP_PROXY":
        # Passed on whole (UpstreamReply.head): its fields stay as they are, parsed only if read.
        headers = reply.headers if reply.head else tuple(reply.headers)
        return Answer(reply.status, headers, reply.body, "", reply.head)
    status = _select_status(call, reply.status)
    if status is None:
        outcome.response_type = "API_CONFIGURATION_ERROR"
        return responses.answer("API_CONFIGURATION_ERROR")
    kept = tuple((n, v) for n, v in reply.headers if n == "content-type")
    return Answer(status, kept, reply.body)


def _select_status(call: Integration, status: int) -> int | None:
    if not call.statuses and call.default_status is None:
        return status
    text = str(status)
    for pattern, mapped in call.statuses:
        if pattern.fullmatch(text):
            return mapped
    return call.default_status


def _render(pieces: tuple[tuple[str, str, bool], ...], values: Mapping[str, str]) -> str:
    out = []
    for literal, name, greedy in pieces:
        out.append(literal)
        if name:
            out.append(quote(values.get(name, ""), safe="/" if greedy else ""))
    return "".join(out)


def _mapped(
    call: Integration, request: GatewayRequest, auth: AuthResult | None
) -> tuple[str, list[tuple[str, str]]]:
    path_values = dict(request.path_parameters)
    headers: list[tuple[str, str]] = []
    query: list[tuple[str, str]] = []
    parsed: dict[str, list[str]] | None = None
    for mapping in call.mappings:
        if mapping.source == "literal":
            value: str | None = mapping.key
        elif mapping.source == "header":
            value = request.headers.get(mapping.key.lower())
        elif mapping.source == "querystring":
            if parsed is None:
                parsed = parse_qs(request.query, keep_blank_values=True)
            values = parsed.get(mapping.key)
            value = values[0] if values else None
        elif mapping.source == "path":
            value = request.path_parameters.get(mapping.key)
        else:
            value = context_value(mapping.key, request, auth)
        if value is None:
            continue  # API Gateway leaves out a parameter whose source is absent
        if mapping.target == "header":
            headers.append((mapping.name.lower(), value))
        elif mapping.target == "querystring":
            query.append((mapping.name, value))
        else:
            path_values[mapping.name] = value
    content_type = request.headers.get("content-type")
    if content_type is not None and not any(n == "content-type" for n, _ in headers):
        headers.append(("content-type", content_type))  # the body passes through, with its type
    path = _render(call.path, path_values) if call.path is not None else request.path
    if query:
        path = f"{path}?{urlencode(query)}"
    return path, headers


def context_value(name: str, request: GatewayRequest, auth: AuthResult | None) -> str | None:
    """``$context.NAME`` ("API Gateway mapping template and access logging variable reference")."""
    if name.startswith("authorizer."):
        if auth is None:
            return None
        rest = name[len("authorizer.") :]
        if rest == "principalId":
            return auth.principal_id
        if rest.startswith("claims."):
            claim: Any = auth.claims.get(rest[len("claims.") :])
            return None if claim is None else str(claim)
        return auth.context.get(rest)
    simple = {
        "requestId": request.request_id,
        "stage": request.stage,
        "apiId": request.api,
        "routeKey": request.route_key,
        "httpMethod": request.method,
        "path": request.path,
        "identity.sourceIp": request.source_ip,
        "sourceIp": request.source_ip,
        "requestTimeEpoch": str(int(request.received_at * 1000)),
    }
    return simple.get(name)
