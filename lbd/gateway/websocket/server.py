"""The client side of a WebSocket API listener: a thin asyncio Protocol over session.Session.

The opening handshake is held (reading paused) while ``$connect`` runs; then the connection is accepted
or refused with the status ``$connect`` gave. Messages are handed to the API one at a time, in order
(reading pauses while a few wait); replies and pushes are written as they come. One timer per connection
enforces both the idle timeout (no bytes from the client for that long) and the maximum connection time,
closing with 1001 Going Away ("Amazon API Gateway quotas for configuring and running a WebSocket API":
10 minutes idle, 2 hours at most). After lbd sends a close frame it waits LINGER seconds for the client's
answer, then ends the connection. ``$disconnect`` runs once, after the socket has closed.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any, cast

from lbd.gateway.pipeline import Outcome
from lbd.gateway.server import _request_id  # the HTTP APIs' ids: a counter, no system call per message
from lbd.gateway.websocket.api import ClientConnection
from lbd.gateway.websocket.connections import GONE, LIVE, TOO_MANY
from lbd.gateway.websocket.session import ABNORMAL, GOING_AWAY, Closed, Message, Session, Upgrade
from lbd.gateway.websocket.stats import WebSocketStats, route_stats
from lbd.observe.ratelimit import RateLimitedLog

if TYPE_CHECKING:
    from lbd.gateway.websocket.listener import WebSocketListenerRuntime
    from lbd.listener.tracker import ConnectionTracker

log = logging.getLogger("lbd.gateway")
WARNINGS = RateLimitedLog()
LINGER = 2.0  # seconds to wait for the client's close frame after lbd's
MAX_QUEUED = 8  # messages waiting for their integration before reading pauses
MAX_BUFFERED = 1024 * 1024  # bytes waiting for a slow client beyond which pushes are refused (429)
_BACKGROUND: set[asyncio.Task[Any]] = set()  # $disconnect calls and registry updates in flight


class WebSocketClientSide(asyncio.Protocol):
    def __init__(self, runtime: WebSocketListenerRuntime, tracker: ConnectionTracker) -> None:
        self.runtime = runtime
        self.api = runtime.ws_api
        self.api_name = runtime.api.name
        self.tracker = tracker
        self.session = Session()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.conn: ClientConnection | None = None  # once accepted
        self.connection_id = ""
        self.connecting = False  # $connect is running: what arrives waits
        self.held: list[bytes | None] = []
        self.queue: deque[str | bytes] = deque()
        self.task: asyncio.Task[None] | None = None
        self.paused = False
        self.timer: asyncio.TimerHandle | None = None
        self.linger: asyncio.TimerHandle | None = None
        self.ended_output = False  # the write side is shut (a failed WebSocket)
        self.last_active = 0.0
        self.ends_at = float("inf")
        self.disconnected = False
        self.draining = False
        self.pushes = route_stats(self.api_name, runtime.api.stage, "@connections")
        self.drained: asyncio.Future[None] | None = None  # set while the transport's buffer is full
        # Its loop, looked up once: each asyncio.get_running_loop() is a getpid() system call.
        self.loop = asyncio.get_running_loop()

    # -- transport callbacks -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else ""
        self.tracker.add(self)
        self.runtime.stats.new_connections += 1
        self.runtime.stats.active_connections += 1
        self.last_active = self.loop.time()
        self._arm()

    def data_received(self, data: bytes) -> None:
        self.runtime.stats.processed_bytes += len(data)
        self.last_active = self.loop.time()
        if self.connecting:
            self.held.append(data)
            return
        self._feed(data)

    def eof_received(self) -> bool:
        if self.connecting:
            self.held.append(None)
            return True
        self._feed(None)
        return self.transport is not None and not self.session.done

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.tracker.discard(self)
        self.runtime.stats.active_connections -= 1
        for timer in (self.timer, self.linger):
            if timer is not None:
                timer.cancel()
        if self.task is not None:
            self.task.cancel()
        closed = self.session.closed
        self._gone(closed.code if closed is not None else ABNORMAL, closed.reason if closed else "")

    def pause_writing(self) -> None:
        self.drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        drained, self.drained = self.drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # -- events ------------------------------------------------------------------------------------------

    def _feed(self, data: bytes | None) -> None:
        for event in self.session.receive(data):
            if isinstance(event, Message):
                self._queue(event.data)
            elif isinstance(event, Upgrade):
                self._upgrade(event)
            elif isinstance(event, Closed):
                self._closing(event)
        self._flush()

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        out = self.session.data_to_send()
        if out:
            transport.write(out)
            self.runtime.stats.processed_bytes += len(out)
        if self.session.done:
            transport.close()
            return
        if self.session.failed and not self.ended_output and transport.can_write_eof():
            # A refused handshake (an HTTP answer with "connection: close"), or a WebSocket failed by a
            # frame that broke the protocol: RFC 6455 7.1.7 says to close the connection once the close
            # frame is out, without waiting for a handshake that can no longer complete (the frames
            # after the bad one are not read). Half-close so the client sees the end now, and keep
            # reading (until its end, at most LINGER) so unread data does not reset the answer away.
            transport.write_eof()
            self.ended_output = True
        if self.session.closed is not None and self.linger is None:
            if self.paused:
                transport.resume_reading()  # to read the client's close frame
                self.paused = False
            self.linger = asyncio.get_running_loop().call_later(LINGER, transport.close)

    def _upgrade(self, upgrade: Upgrade) -> None:
        self.connecting = True
        self._pause()
        task = asyncio.get_running_loop().create_task(self._connect(upgrade))
        _keep(task)

    async def _connect(self, upgrade: Upgrade) -> None:
        started = time.monotonic()
        path, _, query = upgrade.target.partition("?")
        headers = dict(upgrade.headers)
        now = time.time()
        conn = ClientConnection(
            _connection_id(), self.peer, headers.get("user-agent", ""), path, query, now, now
        )
        request_id = _request_id()
        outcome = Outcome()
        try:
            answer = await self.api.connect(conn, upgrade.headers, request_id, outcome)
        except Exception:
            log.exception("api %s: $connect failed", self.api_name)
            outcome.response_type = "API_CONFIGURATION_ERROR"
            answer = None
        if self.transport is None:
            return
        if answer is None or not answer.accepted:
            status = answer.status if answer is not None else 500
            body = answer.body if answer is not None else b'{"message":"Internal server error"}'
            self.session.reject(status, answer.headers if answer is not None else (), body)
            self._record("CONNECT", conn.id, request_id, outcome, started, status)
            self._flush()
            self._resume_held()
            return
        subprotocol = answer.subprotocol if answer.subprotocol in upgrade.subprotocols else None
        self.session.accept(subprotocol)
        if self.runtime.shared.redis is not None:
            await self._register(conn)
        self.conn = conn
        self.connection_id = conn.id
        LIVE.add(self)
        self.api.connect_stats.connections += 1
        if self.transport is None:  # gone while it was being registered: $disconnect all the same
            self._gone(ABNORMAL, "")
            return
        if self.draining:  # shutting down since the upgrade began: accepted, then closed at once
            self._record("CONNECT", conn.id, request_id, outcome, started, 101)
            self._close(GOING_AWAY, "server shutting down")
            return
        self.ends_at = asyncio.get_running_loop().time() + self.api.max_connection
        if self.timer is not None:
            self.timer.cancel()
        self._arm()
        self._record("CONNECT", conn.id, request_id, outcome, started, 101)
        self._flush()
        self._resume_held()

    async def _register(self, conn: ClientConnection) -> None:
        """In the fleet's registry before the client hears it is connected, so a push from any node
        finds it at once; an unreachable Redis leaves the connection reachable from this node only."""
        from lbd.gateway.websocket.bus import bus_for

        try:
            await bus_for(self.runtime.shared).register(self.api_name, conn.id, self.api.max_connection)
        except Exception as exc:
            WARNINGS.warning(log, "ws-register", "WebSocket registry: cannot register (%r)", exc)

    def _resume_held(self) -> None:
        self.connecting = False
        held, self.held = self.held, []
        # b"" first: frames that came with the upgrade request itself, which the session kept.
        for data in (b"", *held):
            self._feed(data)
        if self.transport is not None and self.session.closed is None and len(self.queue) < MAX_QUEUED:
            self._resume()

    def _queue(self, data: str | bytes) -> None:
        self.queue.append(data)
        if len(self.queue) >= MAX_QUEUED:
            self._pause()
        if self.task is None:
            self.task = self.loop.create_task(self._serve())

    async def _serve(self) -> None:
        try:
            while self.queue and self.conn is not None and self.session.open:
                data = self.queue.popleft()
                await self._one(self.conn, data)
                if self.drained is not None:
                    await self.drained  # the client reads slower than replies come: wait for it
                if self.paused and len(self.queue) < MAX_QUEUED and self.session.open:
                    self._resume()
        finally:
            self.task = None

    async def _one(self, conn: ClientConnection, data: str | bytes) -> None:
        started = time.monotonic()
        conn.last_active_at = time.time()
        request_id = _request_id()
        outcome = Outcome()
        try:
            reply = await self.api.message(conn, data, request_id, outcome)
            frames = reply.frames
        except Exception:
            log.exception("api %s: a message failed", self.api_name)
            frames = []
        for frame in frames:
            self.session.send(frame)
        if isinstance(outcome.stats, WebSocketStats):
            outcome.stats.messages_out += len(frames)
        self._record("MESSAGE", conn.id, request_id, outcome, started, 200, len(data))
        self._flush()

    def _closing(self, closed: Closed) -> None:
        self.queue.clear()
        if self.conn is not None:
            self._gone(closed.code, closed.reason)

    def _gone(self, code: int, reason: str) -> None:
        """The connection is over: out of the registries, and $disconnect called (once)."""
        conn = self.conn
        if conn is None or self.disconnected:
            return
        self.disconnected = True
        LIVE.discard(self)
        self.api.connect_stats.connections -= 1
        loop = asyncio.get_running_loop()
        _keep(loop.create_task(self._disconnect(conn, code, reason)))

    async def _disconnect(self, conn: ClientConnection, code: int, reason: str) -> None:
        started = time.monotonic()
        if self.runtime.shared.redis is not None:
            from lbd.gateway.websocket.bus import bus_for

            try:
                await bus_for(self.runtime.shared).unregister(self.api_name, conn.id)
            except Exception as exc:
                WARNINGS.warning(log, "ws-unregister", "WebSocket registry: cannot unregister (%r)", exc)
        request_id = _request_id()
        outcome = Outcome()
        try:
            await self.api.disconnect(conn, code, reason, request_id, outcome)
        except Exception:
            log.exception("api %s: $disconnect failed", self.api_name)
        self._record("DISCONNECT", conn.id, request_id, outcome, started, code)

    # -- timers and flow control ---------------------------------------------------------------------------

    def _arm(self, busy: bool = False) -> None:
        loop = asyncio.get_running_loop()
        idle_from = loop.time() if busy else self.last_active  # busy: the idle time counts from now
        self.timer = loop.call_at(min(idle_from + self.runtime.idle_timeout, self.ends_at), self._timeout)

    def _timeout(self) -> None:
        self.timer = None
        if self.transport is None or self.session.closed is not None:
            return
        now = asyncio.get_running_loop().time()
        idle = now >= self.last_active + self.runtime.idle_timeout
        if self.connecting or (self.conn is not None and self.task is not None and now < self.ends_at):
            self._arm(busy=True)  # $connect or a message's integration is running (bounded by its timeout)
        elif self.conn is None:
            if idle:
                self.transport.close()  # a handshake that never completed
            else:
                self._arm()
        elif now >= self.ends_at:
            self._close(GOING_AWAY, "maximum connection duration reached")
        elif idle:
            self.runtime.stats.idle_timeouts += 1
            self._close(GOING_AWAY, "idle timeout")
        else:
            self._arm()  # activity since: sleep again for the rest

    def _close(self, code: int, reason: str) -> None:
        closed = self.session.close(code, reason)
        self._closing(closed)
        self._flush()

    def _pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    # -- the @connections API (connections.Holder) ----------------------------------------------------------

    def push(self, data: str | bytes) -> int:
        transport = self.transport
        if transport is None or not self.session.open:
            return GONE
        if transport.get_write_buffer_size() > MAX_BUFFERED:
            return TOO_MANY  # the client does not read what it is sent
        self.session.send(data)
        self.pushes.messages_out += 1
        self._flush()
        return 200

    def describe(self) -> dict[str, Any]:
        assert self.conn is not None
        return self.conn.describe()

    def disconnect(self) -> None:
        self._close(1000, "disconnected through the @connections API")

    # -- the tracker's interface --------------------------------------------------------------------------

    def drain(self) -> None:
        self.draining = True
        if self.conn is None:
            if self.transport is not None and not self.connecting:
                self.transport.close()
            return
        self._close(GOING_AWAY, "server shutting down")

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def target_in_use(self) -> tuple[str, str] | None:
        return None

    # -- the access log -----------------------------------------------------------------------------------

    def _record(
        self,
        event: str,
        connection_id: str,
        request_id: str,
        outcome: Outcome,
        started: float,
        status: int,
        size: int = 0,
    ) -> None:
        access = self.runtime.access
        if access is None:
            return
        elapsed = time.monotonic() - started
        # API Gateway's WebSocket access-log variables ($context.*).
        access.emit(
            {
                "requestId": request_id,
                "connectionId": connection_id,
                "eventType": event,
                "ip": self.peer,
                "requestTime": int(time.time() * 1000),
                "routeKey": outcome.route_key,
                "status": status,
                "messageLength": size,
                "responseLatency": round(elapsed * 1000, 3),
                "integrationStatus": outcome.integration_status or "-",
                "integrationLatency": (
                    round(outcome.integration_latency * 1000, 3) if outcome.integration_latency >= 0 else "-"
                ),
                "apiKeyId": outcome.key_id,
                "authorizer": outcome.authorizer,
                "errorType": outcome.response_type or "-",
                "api": self.api_name,
                "stage": self.runtime.api.stage,
            },
            kind="api",
        )


def _keep(task: asyncio.Task[Any]) -> None:
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


def _connection_id() -> str:
    """12 random bytes, URL-safe base64 (16 characters): fits a path segment of the @connections API."""
    return base64.urlsafe_b64encode(os.urandom(12)).decode()
