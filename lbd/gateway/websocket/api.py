"""One WebSocket API stage, compiled once per Snapshot: its routes and what each event does.

API Gateway ("Working with routes for WebSocket APIs", "Controlling and managing access to a WebSocket
API"):

- ``$connect`` runs during the upgrade and is the only place authorization happens: the route's
  authorizer, then its API key (``api_key_source``: the ``x-api-key`` header of the upgrade request, or the
  authorizer's usageIdentifierKey), then its integration. A denial or an integration answering other than
  2xx refuses the upgrade with that status; no ``$connect`` route accepts everyone.
- Messages take the route the selection expression names (lbd/gateway/websocket/selection.py); each
  draws from the connection's usage plan and the stage's throttles, then is POSTed to the route's
  integration. On a two-way route (``route_response_selection_expression: $default``) the integration's
  response body goes back to the client as a message.
- ``$disconnect`` is called once the connection has closed, best effort: nothing can be refused any more.

Every integration request carries the connection's context as headers (docs/websocket.md names them).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lbd.config.plain import replaced
from lbd.gateway import integration
from lbd.gateway.contracts import (
    ALLOW,
    Admission,
    Authorizer,
    AuthResult,
    Bucket,
    Clock,
    Fetch,
    GatewayRequest,
    Limiter,
)
from lbd.gateway.keys import KeyTable, KnownKey
from lbd.gateway.pipeline import Outcome
from lbd.gateway.plans import CompiledPlan, stage_buckets, stage_plans
from lbd.gateway.responses import Answer, GatewayResponses
from lbd.gateway.websocket.selection import (
    CONNECT,
    DISCONNECT,
    compile_expression,
    error_frame,
    select_route,
)
from lbd.gateway.websocket.stats import WebSocketStats, route_stats

if TYPE_CHECKING:
    # Models or their plain records (lbd/config/plain.py): workers never import pydantic.
    from lbd.config.gateway import Api, UsagePlan

log = logging.getLogger("lbd.gateway")

# The context variables of API Gateway's WebSocket APIs ($context.connectionId, $context.eventType ...),
# as the headers an integration receives.
H_CONNECTION = "x-amzn-connection-id"
H_EVENT = "x-amzn-event-type"  # CONNECT | MESSAGE | DISCONNECT
H_ROUTE = "x-amzn-route-key"
H_REQUEST = "x-amzn-request-id"
H_API_KEY = "x-amzn-api-key-id"
H_CONNECTED_AT = "x-amzn-connected-at"  # epoch milliseconds
H_SOURCE = "x-amzn-source-ip"
H_STAGE = "x-amzn-stage"
H_PRINCIPAL = "x-amzn-authorizer-principal-id"
H_AUTHORIZER = "x-amzn-authorizer-"  # + a REQUEST authorizer's context key, or claim-<name> for JWT
H_CLOSE_CODE = "x-amzn-disconnect-status-code"
H_CLOSE_REASON = "x-amzn-disconnect-reason"
_UPGRADE_FIELDS = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-accept"}
)


@dataclass(slots=True)
class ClientConnection:
    """What the gateway knows about one connection ($context.* and GetConnection's fields)."""

    id: str
    source_ip: str
    user_agent: str
    path: str
    query: str
    connected_at: float  # epoch seconds
    last_active_at: float
    auth: AuthResult | None = None
    key: KnownKey | None = None
    plan: CompiledPlan | None = None
    key_value: str = field(default="", repr=False)  # looked up again per message; never logged

    def describe(self) -> dict[str, Any]:
        """API Gateway's GetConnection answer, with lbd's few additions (connectionId, apiKeyId,
        principalId)."""
        return {
            "connectionId": self.id,
            "connectedAt": _iso(self.connected_at),
            "lastActiveAt": _iso(self.last_active_at),
            "identity": {"sourceIp": self.source_ip, "userAgent": self.user_agent},
            "apiKeyId": self.key.id if self.key is not None else None,
            "principalId": self.auth.principal_id if self.auth is not None else None,
        }


@dataclass(slots=True)
class ConnectAnswer:
    accepted: bool
    status: int = 101
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    subprotocol: str | None = None


@dataclass(slots=True)
class Reply:
    """What a message led to: the frames for the client (a route response or an error frame)."""

    frames: list[str | bytes] = field(default_factory=list)


@dataclass(slots=True)
class WsRoute:
    route_key: str
    call: integration.Integration
    two_way: bool
    authorizer: str | None
    scopes: tuple[str, ...]
    key_required: bool
    stage_buckets: list[Bucket]
    stats: WebSocketStats


class WebSocketApi:
    def __init__(
        self,
        api: Api,
        plans: tuple[UsagePlan, ...],
        *,
        keys: Callable[[], KeyTable],
        fetch: Fetch,
        limiter: Limiter,
        clock: Clock,
        authorizers: Mapping[str, Authorizer],
    ) -> None:
        self.api = api
        self.name = api.name
        self.stage = api.stage
        self.responses = GatewayResponses(api.gateway_responses)
        self.plans = stage_plans(plans, api.name, api.stage)
        self.selector = compile_expression(api.route_selection_expression)
        self.from_authorizer = api.api_key_source == "AUTHORIZER"
        self.idle_timeout = float(api.idle_timeout_seconds)  # 600 unless set (lbd/config/gateway.py)
        self.max_connection = float(api.max_connection_seconds)
        self._keys = keys
        self._fetch = fetch
        self._limiter = limiter
        self._clock = clock
        self._authorizers = authorizers
        self.routes: dict[str, WsRoute] = {}
        for route in api.routes:
            config = route.integration
            if config.type == "HTTP":
                config = replaced(config, type="HTTP_PROXY")  # the message passes through
            self.routes[route.route_key] = WsRoute(
                route.route_key,
                integration.compile_integration(config, route.route_key),
                route.route_response_selection_expression is not None,
                route.authorizer,
                route.authorization_scopes,
                route.api_key_required,
                stage_buckets(api.name, api.stage, route.route_key, route.throttle, api.throttle),
                route_stats(api.name, api.stage, route.route_key),
            )
        self._message_routes = frozenset(self.routes) - {CONNECT, DISCONNECT}
        self.unrouted = route_stats(api.name, api.stage, "-")
        self.connect_stats = (
            self.routes[CONNECT].stats
            if CONNECT in self.routes
            else route_stats(api.name, api.stage, CONNECT)
        )

    # -- $connect ---------------------------------------------------------------------------------------

    async def connect(
        self, conn: ClientConnection, headers: Sequence[tuple[str, str]], request_id: str, outcome: Outcome
    ) -> ConnectAnswer:
        route = self.routes.get(CONNECT)
        outcome.route_key = CONNECT
        outcome.stats = self.connect_stats
        if route is None:
            self.connect_stats.connects += 1
            return ConnectAnswer(True)
        # The client's own x-amzn-* fields are dropped: an integration must be able to trust the
        # connection's context (x-amzn-authorizer-*, x-amzn-api-key-id ...) it gets from lbd alone.
        fields = {n: v for n, v in headers if n not in _UPGRADE_FIELDS and not _reserved(n)}
        request = self._request(conn, route, "CONNECT", request_id, b"", fields)
        if route.authorizer is not None:
            auth = await self._authorize(route, request, outcome)
            if not auth.allowed:
                return self._refused(outcome, auth.outcome, auth.message, auth.headers)
            conn.auth = auth
        value = (
            conn.auth.usage_identifier_key
            if self.from_authorizer and conn.auth is not None
            else fields.get("x-api-key")
        )
        if value:
            conn.key_value = value
            self._refresh_key(conn)
        if route.key_required and (conn.key is None or conn.plan is None):
            return self._refused(outcome, "INVALID_API_KEY")
        outcome.key_id = conn.key.id if conn.key is not None else "-"
        admission = await self._admit(route, conn)
        if admission is not Admission.ADMIT:
            route.stats.throttled += 1
            return self._refused(outcome, _TYPES[admission])
        request = self._request(conn, route, "CONNECT", request_id, b"", fields)  # with the key id now
        answer = await self._call(route, request, conn, outcome)
        if not 200 <= answer.status < 300:
            # The integration said no (its own status and body), or could not be reached (the gateway
            # response: INTEGRATION_FAILURE 502, INTEGRATION_TIMEOUT 504).
            return ConnectAnswer(False, answer.status, _kept(answer.headers), answer.body)
        self.connect_stats.connects += 1
        chosen = next((v for n, v in answer.headers if n == "sec-websocket-protocol"), None)
        return ConnectAnswer(True, subprotocol=chosen)

    def _refused(
        self, outcome: Outcome, kind: str, message: str | None = None, headers: Sequence[tuple[str, str]] = ()
    ) -> ConnectAnswer:
        outcome.response_type = kind
        self.connect_stats.client_errors += 1
        if kind not in GatewayResponses.KNOWN:
            kind = "AUTHORIZER_FAILURE"
        answer = self.responses.answer(kind, message=message)
        return ConnectAnswer(False, answer.status, (*answer.headers, *headers), answer.body)

    async def _authorize(self, route: WsRoute, request: GatewayRequest, outcome: Outcome) -> AuthResult:
        authorizer = self._authorizers.get(route.authorizer or "")
        if authorizer is None:
            result = AuthResult("AUTHORIZER_CONFIGURATION_ERROR")
        else:
            try:
                result = await authorizer.authorize(request, route.scopes)
            except Exception:
                log.exception("api %s: authorizer %s failed", self.name, route.authorizer)
                result = AuthResult("AUTHORIZER_FAILURE")
        outcome.authorizer = result.outcome if result.outcome != ALLOW else "ALLOW"
        return result

    def _refresh_key(self, conn: ClientConnection) -> None:
        """The connection's key as the supervisor's table has it now: a key disabled, deleted or moved
        to another plan since $connect counts as such from the next message on."""
        key = self._keys().lookup(conn.key_value) if conn.key_value else None
        conn.key = key
        conn.plan = None
        if key is not None and key.enabled:
            conn.plan = next((self.plans[name] for name in key.plans if name in self.plans), None)

    # -- messages --------------------------------------------------------------------------------------

    async def message(
        self, conn: ClientConnection, data: str | bytes, request_id: str, outcome: Outcome
    ) -> Reply:
        key, parsed = select_route(self.selector, data, self._message_routes)
        if key is None:
            outcome.stats = self.unrouted
            self.unrouted.client_errors += 1
            self.unrouted.messages_in += 1
            outcome.response_type = "RESOURCE_NOT_FOUND"
            return Reply([_error("Forbidden", conn, request_id)])
        route = self.routes[key]
        outcome.route_key = key
        outcome.stats = route.stats
        route.stats.messages_in += 1
        if conn.key_value:
            self._refresh_key(conn)
        outcome.key_id = conn.key.id if conn.key is not None else "-"
        if route.key_required and (conn.key is None or conn.plan is None):
            route.stats.client_errors += 1
            outcome.response_type = "INVALID_API_KEY"
            return Reply([_error("Forbidden", conn, request_id)])
        admission = await self._admit(route, conn)
        if admission is not Admission.ADMIT:
            route.stats.throttled += 1
            route.stats.client_errors += 1
            kind = _TYPES[admission]
            outcome.response_type = kind
            text = self.responses.answer(kind).body.decode(errors="replace")
            return Reply([_error(_message_of(text), conn, request_id)])
        body = data.encode() if isinstance(data, str) else data
        kind = (
            ("application/json" if parsed is not None else "text/plain; charset=utf-8")
            if isinstance(data, str)
            else "application/octet-stream"
        )
        request = self._request(conn, route, "MESSAGE", request_id, body, {"content-type": kind})
        answer = await self._call(route, request, conn, outcome)
        if answer.response_type:  # the integration could not be called
            return Reply([_error("Internal server error", conn, request_id)])
        if not route.two_way or not answer.body:
            return Reply()
        return Reply([_as_frame(answer, binary=isinstance(data, bytes))])

    async def _admit(self, route: WsRoute, conn: ClientConnection) -> Admission:
        buckets = route.stage_buckets
        quota = None
        if conn.plan is not None and conn.key is not None:
            buckets = [*conn.plan.buckets(conn.key.counter, route.route_key), *buckets]
            quota = conn.plan.quota_for(conn.key.counter, self._clock())
        if not buckets and quota is None:
            return Admission.ADMIT
        try:
            return await self._limiter.admit(buckets, quota, self._clock())
        except Exception as exc:  # the shared limiter handles Redis outages itself; this it did not foresee
            log.warning("api %s: the usage-plan limiter failed (%r); admitting", self.name, exc)
            return Admission.ADMIT

    # -- $disconnect -----------------------------------------------------------------------------------

    async def disconnect(
        self, conn: ClientConnection, code: int, reason: str, request_id: str, outcome: Outcome
    ) -> None:
        route = self.routes.get(DISCONNECT)
        outcome.route_key = DISCONNECT
        if route is None:
            return
        outcome.stats = route.stats
        headers = {
            H_CLOSE_CODE: str(code),
            H_CLOSE_REASON: _field_safe(reason),
            "content-type": "application/json",
        }
        body = json.dumps({"statusCode": code, "reason": reason}).encode()
        request = self._request(conn, route, "DISCONNECT", request_id, body, headers)
        await self._call(route, request, conn, outcome)

    # -- integrations ----------------------------------------------------------------------------------

    def _request(
        self,
        conn: ClientConnection,
        route: WsRoute,
        event: str,
        request_id: str,
        body: bytes,
        fields: Mapping[str, str],
    ) -> GatewayRequest:
        headers = dict(fields)
        headers.update(
            {
                H_CONNECTION: conn.id,
                H_EVENT: event,
                H_ROUTE: route.route_key,
                H_REQUEST: request_id,
                H_CONNECTED_AT: str(int(conn.connected_at * 1000)),
                H_SOURCE: conn.source_ip,
                H_STAGE: self.stage,
            }
        )
        if conn.key is not None:
            headers[H_API_KEY] = conn.key.id
        auth = conn.auth
        if auth is not None:
            if auth.principal_id:
                headers[H_PRINCIPAL] = _field_safe(auth.principal_id)
            for name, value in auth.context.items():
                headers[H_AUTHORIZER + _field_name(name)] = _field_safe(str(value))
            for name, claim in auth.claims.items():
                if isinstance(claim, str | int | float | bool):
                    headers[f"{H_AUTHORIZER}claim-{_field_name(name)}"] = _field_safe(str(claim))
        return GatewayRequest(
            "POST",
            conn.path,
            conn.query if event == "CONNECT" else "",
            headers,
            body,
            conn.source_ip,
            self.name,
            self.stage,
            route.route_key,
            request_id=request_id,
            received_at=time.time(),
        )

    async def _call(
        self, route: WsRoute, request: GatewayRequest, conn: ClientConnection, outcome: Outcome
    ) -> Answer:
        try:
            answer = await integration.run(
                route.call, request, conn.auth, self._fetch, outcome, self.responses
            )
        except Exception:
            log.exception("api %s: integration of %s failed", self.name, route.route_key)
            outcome.response_type = "API_CONFIGURATION_ERROR"
            answer = self.responses.answer("API_CONFIGURATION_ERROR")
        stats = route.stats
        stats.requests += 1
        if outcome.integration_latency >= 0:
            stats.integration_latency.observe(outcome.integration_latency)
        if answer.response_type:
            stats.execution_errors += 1
            stats.errors_5xx += 1
        elif answer.status >= 400:
            stats.integration_errors += 1
            if answer.status >= 500:
                stats.errors_5xx += 1
            else:
                stats.errors_4xx += 1
        return answer


_TYPES = {
    Admission.THROTTLED: "THROTTLED",
    Admission.QUOTA_EXCEEDED: "QUOTA_EXCEEDED",
    Admission.UNAVAILABLE: "UNAVAILABLE",
}


def _reserved(name: str) -> bool:
    return name.startswith("x-amzn-") and name != "x-amzn-trace-id"


def _error(message: str, conn: ClientConnection, request_id: str) -> str:
    return error_frame(message, conn.id, request_id)


def _message_of(body: str) -> str:
    try:
        value = json.loads(body)
    except ValueError:
        return body
    return str(value.get("message", body)) if isinstance(value, dict) else body


def _as_frame(answer: Answer, binary: bool) -> str | bytes:
    """A route response: binary for a binary message or an application/octet-stream answer; otherwise
    text when it decodes as UTF-8 (RFC 6455 5.6: text frames carry UTF-8), else binary."""
    if binary or _octet_stream(answer):
        return answer.body
    try:
        return answer.body.decode("utf-8")
    except UnicodeDecodeError:
        return answer.body


def _octet_stream(answer: Answer) -> bool:
    """Its content-type is application/octet-stream. A target's head (which its fields come from) is
    parsed only if it holds those octets at all."""
    if answer.head and b"application/octet-stream" not in answer.head:
        return False
    kind = next((v for n, v in answer.headers if n == "content-type"), "")
    return kind.startswith("application/octet-stream")


def _kept(headers: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple(
        (n, v) for n, v in headers if n in ("content-type", "www-authenticate") or n.startswith("x-")
    )


def _field_name(name: str) -> str:
    return "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower())


def _field_safe(value: str) -> str:
    """A header value without CR, LF or other controls (RFC 9110 5.5)."""
    return "".join(c if c >= " " and c != "\x7f" else " " for c in value)


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
