"""The fleet's WebSocket connections in Redis (``shared_state.redis``): who holds which, and delivery to it.

Each worker that holds connections (or forwards an @connections call) subscribes to its own Redis pub/sub
channel, ``lbd:ws:node:<random>``. Accepting a connection writes ``lbd:ws:conn:<api>:<id>`` = that
channel (expiring a minute after the API's maximum connection time, so a node that dies leaves nothing
for long); closing it deletes the key. An @connections call for a connection this node does not hold
reads the key and publishes the request on the holder's channel with a reply channel (its own); the
holder acts on the socket (connections.act) and publishes the answer back. PUBLISH answers how many
subscribers got the message: 0 means the holder is gone without saying so, and the key is dropped (410).

Redis pub/sub is at-most-once; an answer that does not come within REPLY_TIMEOUT is a 504 to the caller,
who may try again (PostToConnection is not idempotent either). redis-py does the protocol; nothing here
is a broker of lbd's own.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
from typing import TYPE_CHECKING, Any

from lbd.gateway.websocket.connections import GONE, act
from lbd.observe.ratelimit import RateLimitedLog

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

    from lbd.config.gateway_auth import SharedState

log = logging.getLogger("lbd.gateway")
WARNINGS = RateLimitedLog()
PREFIX = "lbd:ws:"
REPLY_TIMEOUT = 5.0
REGISTRY_GRACE = 60  # seconds a registry entry outlives the longest connection
RETRY = 1.0  # seconds between attempts to subscribe again after Redis went away


class ConnectionBus:
    def __init__(self, url: str, timeout: float) -> None:
        from redis.asyncio import Redis

        # Generous timeouts: these are admin calls and connection setup, not the per-message path.
        self.timeout = max(timeout, 1.0)
        self.client: Redis = Redis.from_url(
            url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
        )
        self.channel = f"{PREFIX}node:{os.urandom(12).hex()}"
        self._pubsub: PubSub | None = None
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._waiters: dict[str, asyncio.Future[tuple[int, Any]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Subscribed to this worker's channel (started on first use, never in the supervisor)."""
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        async with asyncio.timeout(self.timeout):
            await self._subscribed.wait()

    # -- the registry ----------------------------------------------------------------------------------

    async def register(self, api: str, connection_id: str, lifetime: float) -> None:
        await self.start()
        await self.client.set(_key(api, connection_id), self.channel, ex=int(lifetime) + REGISTRY_GRACE)

    async def unregister(self, api: str, connection_id: str) -> None:
        key = _key(api, connection_id)
        # Only our own entry: compare and delete in one step (a script runs alone in Redis).
        await self.client.eval(_DELETE_IF, 1, key, self.channel)

    # -- delivery --------------------------------------------------------------------------------------

    async def forward(self, action: str, api: str, connection_id: str, data: bytes) -> tuple[int, Any]:
        """An @connections call for a connection held anywhere in the fleet: (status, body)."""
        await self.start()
        key = _key(api, connection_id)
        holder = await self.client.get(key)
        if holder is None:
            return act(action, api, connection_id, data)  # 410, unless it is ours after all
        request_id = os.urandom(8).hex()
        waiter: asyncio.Future[tuple[int, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = waiter
        request = {
            "kind": "request",
            "rid": request_id,
            "reply": self.channel,
            "action": action,
            "api": api,
            "id": connection_id,
            "data": base64.b64encode(data).decode(),
        }
        try:
            channel = holder.decode() if isinstance(holder, bytes) else str(holder)
            receivers = await self.client.publish(channel, json.dumps(request))
            if receivers == 0:
                await self.client.eval(_DELETE_IF, 1, key, holder)
                return GONE, {"error": f"connection {connection_id!r} of API {api!r} is gone"}
            async with asyncio.timeout(REPLY_TIMEOUT):
                return await waiter
        except TimeoutError:
            return 504, {"error": "the node holding the connection did not answer in time"}
        finally:
            self._waiters.pop(request_id, None)

    async def _listen(self) -> None:
        while True:
            try:
                self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                await self._pubsub.subscribe(self.channel)
                self._subscribed.set()
                async for message in self._pubsub.listen():
                    if message.get("type") == "message":
                        self._on(json.loads(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._subscribed.clear()
                if self._pubsub is not None:
                    with contextlib.suppress(Exception):
                        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
                WARNINGS.warning(
                    log, "ws-bus", "WebSocket registry: Redis pub/sub failed (%r); retrying", exc
                )
                await asyncio.sleep(RETRY)

    def _on(self, payload: dict[str, Any]) -> None:
        if payload.get("kind") == "reply":
            waiter = self._waiters.get(str(payload.get("rid")))
            if waiter is not None and not waiter.done():
                waiter.set_result((int(payload["status"]), payload.get("body")))
            return
        status, body = act(
            str(payload.get("action")),
            str(payload.get("api")),
            str(payload.get("id")),
            base64.b64decode(str(payload.get("data") or "")),
        )
        reply = {
            "kind": "reply",
            "rid": payload.get("rid"),
            "status": status,
            "body": None if isinstance(body, bytes) else body,
        }
        task = asyncio.get_running_loop().create_task(self._publish(str(payload.get("reply")), reply))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, channel: str, message: dict[str, Any]) -> None:
        try:
            await self.client.publish(channel, json.dumps(message))
        except Exception as exc:
            WARNINGS.warning(log, "ws-bus-reply", "WebSocket registry: cannot answer (%r)", exc)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
        await self.client.aclose()


_DELETE_IF = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def _key(api: str, connection_id: str) -> str:
    return f"{PREFIX}conn:{api}:{connection_id}"


_BUSES: dict[str, ConnectionBus] = {}


def bus_for(shared: SharedState) -> ConnectionBus:
    """The worker's bus for this Redis (one per URL, kept across reloads)."""
    assert shared.redis is not None
    bus = _BUSES.get(shared.redis)
    if bus is None:
        bus = _BUSES[shared.redis] = ConnectionBus(shared.redis, shared.timeout_ms / 1000)
    return bus
