"""A worker's live WebSocket connections and the @connections operations on them.

API Gateway's @connections API ("Use @connections commands in your backend service"): PostToConnection
sends a message to a client, GetConnection describes it, DeleteConnection closes it; a connection that is
not (or no longer) there answers 410 Gone. Here the admin API asks every worker of the node
(lbd/admin/websocket.py) and the one holding the socket acts; with ``shared_state.redis`` a worker of
any node finds the holder through the fleet's registry and delivers through it (bus.py).

Control message (supervisor -> worker): ``{"op": "ws_connection", "action": "post"|"get"|"delete",
"api", "id", "data" (base64, post only), "remote"?: true}``; the reply carries ``status`` and ``body``.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable
from typing import Any, Protocol

log = logging.getLogger("lbd.gateway")

Message = dict[str, Any]
GONE = 410
TOO_MANY = 429  # API Gateway's LimitExceededException: here, a client that does not read its pushes
OP = "ws_connection"


class Holder(Protocol):
    """What the protocol of one accepted connection offers the @connections API."""

    connection_id: str
    api_name: str

    def push(self, data: str | bytes) -> int: ...  # 200, GONE or TOO_MANY

    def describe(self) -> dict[str, Any]: ...

    def disconnect(self) -> None: ...


class LiveConnections:
    def __init__(self) -> None:
        self._by_id: dict[str, Holder] = {}

    def add(self, holder: Holder) -> None:
        self._by_id[holder.connection_id] = holder

    def discard(self, holder: Holder) -> None:
        if self._by_id.get(holder.connection_id) is holder:
            del self._by_id[holder.connection_id]

    def get(self, api: str, connection_id: str) -> Holder | None:
        holder = self._by_id.get(connection_id)
        return holder if holder is not None and holder.api_name == api else None

    def __len__(self) -> int:
        return len(self._by_id)


LIVE = LiveConnections()


def act(action: str, api: str, connection_id: str, data: bytes) -> tuple[int, Any]:
    """One @connections operation on a connection of this worker: (status, body)."""
    holder = LIVE.get(api, connection_id)
    if holder is None:
        return GONE, {"error": f"connection {connection_id!r} of API {api!r} is gone (or never was)"}
    if action == "get":
        return 200, holder.describe()
    if action == "delete":
        holder.disconnect()
        return 204, b""
    if action == "post":
        # Text when the payload is UTF-8 (RFC 6455 5.6), binary otherwise: API Gateway's PostToConnection
        # takes a blob and does not document the frame type (UNCONFIRMED); this is what clients expect.
        try:
            message: str | bytes = data.decode("utf-8")
        except UnicodeDecodeError:
            message = data
        status = holder.push(message)
        if status == GONE:
            return GONE, {"error": f"connection {connection_id!r} is closing"}
        if status == TOO_MANY:
            return TOO_MANY, {"error": f"connection {connection_id!r} does not read what it is sent"}
        return 200, b""
    return 400, {"error": f"unknown action {action!r}"}


def on_message(message: Message, shared: Any) -> Awaitable[Message]:
    """The worker's side of ``ws_connection``; ``shared`` is the Snapshot's SharedState (or None)."""
    return _reply(message, shared)


async def _reply(message: Message, shared: Any) -> Message:
    action = str(message.get("action"))
    api = str(message.get("api"))
    connection_id = str(message.get("id"))
    data = base64.b64decode(str(message.get("data") or ""))
    if message.get("remote") and shared is not None and shared.redis is not None:
        from lbd.gateway.websocket.bus import bus_for

        try:
            status, body = await bus_for(shared).forward(action, api, connection_id, data)
        except Exception as exc:  # Redis unreachable (redis-py's errors, OSError, TimeoutError)
            log.warning("@connections: the fleet's connection registry failed: %r", exc)
            status, body = 503, {"error": f"the fleet's connection registry (Redis) failed: {exc!r}"}
    else:
        status, body = act(action, api, connection_id, data)
    return {"op": OP, "generation": message.get("generation", 0), "status": status, "body": _plain(body)}


def _plain(body: Any) -> Any:
    return None if isinstance(body, bytes) else body
