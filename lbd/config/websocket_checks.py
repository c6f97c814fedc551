"""Rules of WEBSOCKET APIs that the schema cannot say alone, with exact key paths (gateway_checks.py).

API Gateway ("Working with routes for WebSocket APIs", "Selection expressions"): the routes are
``$connect``, ``$disconnect``, ``$default`` and custom keys, picked by ``route_selection_expression``
(``$request.body.<path>``); authorizers run on ``$connect`` only; two-way routes take a route response
selection expression of ``$default``. HTTP and REST APIs keep their ``METHOD /path`` keys and know none of
this.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from lbd.config.gateway import ROUTE_KEY, Api
from lbd.config.issues import ConfigIssue

# "$request.body.action", "$request.body.message.type", or a template of ${request.body.x} pieces with
# literal text between them ("${request.body.service}/${request.body.action}").
SELECTION_PATH = r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*"
SELECTION_EXPRESSION = re.compile(
    rf"^(\$request\.body\.{SELECTION_PATH}|([^$]*\$\{{request\.body\.{SELECTION_PATH}\}})+[^$]*)$"
)


def route_form_issues(api: Api, where: str) -> Iterator[ConfigIssue]:
    if api.protocol != "WEBSOCKET":
        for r, route in enumerate(api.routes):
            if not ROUTE_KEY.match(route.route_key):
                yield ConfigIssue(
                    f"{where}.routes[{r}].route_key",
                    f'{route.route_key!r}: {api.protocol} APIs take "$default" or METHOD /path '
                    "(GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS or ANY)",
                )
            if route.route_response_selection_expression is not None:
                yield ConfigIssue(
                    f"{where}.routes[{r}].route_response_selection_expression",
                    "only WEBSOCKET routes have route responses",
                )
        if "max_connection_seconds" in api.model_fields_set:
            yield ConfigIssue(f"{where}.max_connection_seconds", "only WEBSOCKET APIs hold connections open")
        return
    yield from _websocket(api, where)


def _websocket(api: Api, where: str) -> Iterator[ConfigIssue]:
    expression = api.route_selection_expression
    if expression is not None and not SELECTION_EXPRESSION.match(expression):
        yield ConfigIssue(
            f"{where}.route_selection_expression",
            f"{expression!r}: expected $request.body.<path> (e.g. $request.body.action) or a template of "
            "${request.body.<path>} pieces",
        )
    if api.cache.enabled:
        yield ConfigIssue(f"{where}.cache.enabled", "WEBSOCKET APIs have no stage cache")
    if api.cors is not None:
        yield ConfigIssue(f"{where}.cors", "CORS is for HTTP APIs; a WebSocket upgrade is not a CORS request")
    for r, route in enumerate(api.routes):
        path = f"{where}.routes[{r}]"
        key = route.route_key
        if ROUTE_KEY.match(key) and key != "$default":
            yield ConfigIssue(
                f"{path}.route_key",
                f"{key!r}: WEBSOCKET APIs take $connect, $disconnect, $default or a custom key "
                "(the value the route selection expression gives, e.g. sendmessage), not METHOD /path",
            )
        if route.authorizer is not None and key != "$connect":
            yield ConfigIssue(
                f"{path}.authorizer", "a WEBSOCKET API authorizes on $connect only (the upgrade request)"
            )
        if key in ("$connect", "$disconnect") and route.route_response_selection_expression is not None:
            yield ConfigIssue(
                f"{path}.route_response_selection_expression",
                f"{key} has no route response: there is no open connection to send it on",
            )
        if route.integration.request_parameters or route.integration.responses:
            yield ConfigIssue(
                f"{path}.integration",
                "WEBSOCKET integrations pass the message through (request_parameters and responses are "
                "for REST and HTTP APIs)",
            )
        if key == "$disconnect" and route.api_key_required:
            yield ConfigIssue(f"{path}.api_key_required", "$disconnect runs after the client has gone")
