"""Which route a message takes, and the frame a client gets when none does. Pure.

API Gateway ("Selection expressions in API Gateway WebSocket APIs", "Working with routes for WebSocket
APIs"): the route selection expression (``$request.body.action``) is evaluated on a JSON text message;
the value is stringified and a path that is not there gives "". The result must equal a custom route key
exactly; otherwise the message goes to ``$default``, and without a ``$default`` route the client gets an
error frame instead. Messages that are not JSON objects (binary, or text that does not parse) cannot be
evaluated and go to ``$default`` as well.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection
from typing import Any

DEFAULT = "$default"
CONNECT = "$connect"
DISCONNECT = "$disconnect"

Selector = Callable[[Any], str]
_PIECE = re.compile(r"\$\{request\.body\.([A-Za-z0-9_.-]+)\}")
_BARE = re.compile(r"^\$request\.body\.([A-Za-z0-9_.-]+)$")


def compile_expression(expression: str | None) -> Selector | None:
    """A function from a parsed JSON body to the route key it names; None without an expression.
    The expression has been validated (lbd/config/websocket_checks.py)."""
    if expression is None:
        return None
    bare = _BARE.match(expression)
    if bare is not None:
        path = tuple(bare.group(1).split("."))
        return lambda body: _stringify(_lookup(body, path))
    pieces: list[str | tuple[str, ...]] = []
    end = 0
    for match in _PIECE.finditer(expression):
        pieces.append(expression[end : match.start()])
        pieces.append(tuple(match.group(1).split(".")))
        end = match.end()
    pieces.append(expression[end:])

    def template(body: Any) -> str:
        return "".join(p if isinstance(p, str) else _stringify(_lookup(body, p)) for p in pieces)

    return template


def _lookup(body: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(body, dict) or name not in body:
            return None
        body = body[name]
    return body


def _stringify(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def select_route(
    selector: Selector | None, message: str | bytes, routes: Collection[str]
) -> tuple[str | None, Any]:
    """The route key for ``message`` among ``routes`` (None: no route; the caller sends the error frame),
    and the parsed JSON body (None when the message is not a JSON object)."""
    body: Any = None
    if isinstance(message, str):
        body = _json_object(message)
    if selector is not None and body is not None:
        key = selector(body)
        if key and not key.startswith("$") and key in routes:
            return key, body
    return (DEFAULT if DEFAULT in routes else None), body


def _json_object(text: str) -> Any:
    stripped = text.lstrip()
    if not stripped.startswith("{"):
        return None  # most non-JSON text fails here, before the parser is asked
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def error_frame(message: str, connection_id: str, request_id: str) -> str:
    """API Gateway's answer when a message has no route (``Forbidden``), when its integration failed
    (``Internal server error``) or when it was throttled, as the text frame its clients see."""
    return json.dumps({"message": message, "connectionId": connection_id, "requestId": request_id})
