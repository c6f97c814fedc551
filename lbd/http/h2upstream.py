"""HTTP/2 to targets of HTTP2 and GRPC target groups: a few multiplexed h2 connections per target.

The exchange (lbd/http/exchange.py) talks HTTP/1.1 to an ``HttpTargetSide`` whatever the group; for these
groups that side's transport is an ``H2TargetStream``, one stream on a shared ``H2TargetConnection``, which
turns the HTTP/1.1 request it is written into HEADERS and DATA frames and the stream's response back into
HTTP/1.1 bytes (lbd/http/h2bridge.py has the translation). So rules, X-Forwarded-*, retries of other
targets, metrics, passive health and the access log are the HTTP/1.1 path's own. Framing, HPACK and flow
control are the ``h2`` library's.

- HTTPS groups negotiate h2 by ALPN (a target that does not is a connection error, 502); HTTP groups use
  prior knowledge (RFC 9113 3.3).
- Streams go to the connection with the most free slots under the target's SETTINGS_MAX_CONCURRENT_STREAMS
  (known before the first stream: a connection is ready once the target's SETTINGS arrive); when all are
  full another is opened, up to a few, and then requests wait for a slot (the connect timeout bounds it).
- GOAWAY from a target (RFC 9113 6.8): streams above its last stream id were not processed and are sent
  again on another connection, as are streams the target refused (REFUSED_STREAM, 8.7); the others finish.
  Only a request still held whole can be sent again (at most ``REPLAY_LIMIT`` bytes).
- Connections are retired by Snapshot generation (as the HTTP/1.1 pool does): after a reload no new stream
  goes to an old connection, which closes when its last stream ends; idle connections close after the
  pool's idle timeout.
- Trailers, which the HTTP/1.1 data path drops (ALB does not send trailers to HTTP/1.1 peers), travel
  beside it between this stream and the client's HTTP/2 stream (lbd/http/h2front.py) when there is one.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from contextlib import suppress
from typing import TYPE_CHECKING, Any, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import httptools

from lbd.http import h2bridge
from lbd.http.flow import HIGH_WATER, LOW_WATER
from lbd.http.grpc import is_grpc, mismatch
from lbd.http.h2conn import H2Connection
from lbd.http.upstream import HttpTargetSide

if TYPE_CHECKING:
    from collections.abc import Callable

    from lbd.http.exchange import Exchange
    from lbd.http.h2front import H2Stream
    from lbd.http.upstream import UpstreamPool
    from lbd.upstream.target import Target

log = logging.getLogger("lbd.http")

STREAM_WINDOW = 1024 * 1024  # per-stream receive window from a target: room for fast responses
CONNECTION_WINDOW = 8 * 1024 * 1024
REPLAY_LIMIT = 1024 * 1024  # a request up to this size is kept whole until answered, to send it again
_EntryKey = tuple[int, bytes, bool, bool]


def _config() -> h2.config.H2Configuration:
    # Responses are validated (they come from outside); requests are built by lbd from checked heads.
    return h2.config.H2Configuration(
        client_side=True,
        header_encoding=None,
        validate_inbound_headers=True,
        normalize_inbound_headers=True,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )


class TargetEntry:
    """One target's h2 connections in one generation, and the requests waiting for a stream slot."""

    def __init__(self, key: _EntryKey, target: Target, tls: ssl.SSLContext | None, verify: bool) -> None:
        self.key = key
        self.generation = key[0]
        self.target = target
        self.tls = tls
        self.verify = verify
        self.timeout = 10.0
        self.conns: list[H2TargetConnection] = []
        self.connecting = 0
        self.waiters: deque[asyncio.Future[H2TargetConnection]] = deque()


class H2Upstream:
    """One worker's h2 connections to targets (``UpstreamPool.h2``)."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.entries: dict[_EntryKey, TargetEntry] = {}
        # The current generation's entries by Target object (one per group and Snapshot), so that the
        # pool's acquire finds a free slot without a connect task.
        self.by_target: dict[Target, TargetEntry] = {}
        self._loop = asyncio.get_running_loop()

    def acquire(self, target: Target) -> HttpTargetSide | None:
        """A stream on an open connection with a free slot, or None (then ``open_stream``)."""
        entry = self.by_target.get(target)
        if entry is None or entry.waiters:
            return None  # first come, first served: requests already wait for slots
        index = h2bridge.place([c.free() for c in entry.conns], entry.connecting)
        if index < 0:
            return None
        conn = entry.conns[index]
        conn.active += 1
        return self._side(entry, target, conn)

    def _side(self, entry: TargetEntry, target: Target, conn: H2TargetConnection) -> HttpTargetSide:
        stream = H2TargetStream(self, entry)
        side = HttpTargetSide(self.pool, target, self.pool.generation)
        stream.side = side
        side.connection_made(cast(asyncio.BaseTransport, stream))
        stream.bind(conn)
        return side

    async def open_stream(
        self, target: Target, timeout: float, tls: ssl.SSLContext | None, verify: bool
    ) -> HttpTargetSide:
        """A target connection for one exchange: a stream on one of the target's h2 connections."""
        key = (self.pool.generation, target.hash_key, tls is not None, verify)
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = TargetEntry(key, target, tls, verify)
        self.by_target[target] = entry
        entry.timeout = timeout
        conn = await self.slot(entry, timeout)
        return self._side(entry, target, conn)

    async def slot(self, entry: TargetEntry, timeout: float) -> H2TargetConnection:
        """A connection with a stream slot reserved for the caller."""
        index = h2bridge.place([c.free() for c in entry.conns], entry.connecting)
        if index >= 0:
            conn = entry.conns[index]
            conn.active += 1
            return conn
        waiter: asyncio.Future[H2TargetConnection] = self._loop.create_future()
        entry.waiters.append(waiter)
        if index == -1:
            self._open(entry)
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                waiter.result().stream_closed(0)  # a slot reserved just as the wait ended
            elif not waiter.done():
                waiter.cancel()
            raise

    def _open(self, entry: TargetEntry) -> None:
        entry.connecting += 1
        self._loop.create_task(self._connect(entry))

    async def _connect(self, entry: TargetEntry) -> None:
        conn = H2TargetConnection(self, entry)
        target = entry.target
        try:
            async with asyncio.timeout(entry.timeout):
                await self._loop.create_connection(
                    lambda: conn,
                    target.id,
                    target.port,
                    ssl=entry.tls,
                    server_hostname=target.tls_name(entry.verify) if entry.tls is not None else None,
                )
                tls = conn.transport.get_extra_info("ssl_object") if conn.transport is not None else None
                if tls is not None and tls.selected_alpn_protocol() != "h2":
                    raise ConnectionError(f"target {target.label} did not negotiate h2 by ALPN")
                await conn.ready
        except (OSError, TimeoutError, h2.exceptions.ProtocolError) as exc:
            entry.connecting -= 1
            conn.abort()
            log.info("HTTP/2 connection to target %s failed: %s", target.label, exc or type(exc).__name__)
            if not entry.conns and not entry.connecting:
                failure = exc if isinstance(exc, OSError | TimeoutError) else OSError(str(exc))
                self._fail_waiters(entry, failure)
            # Otherwise the waiters keep waiting for slots on the connections that work (not another
            # attempt at once: a target refusing connections would be retried in a loop).
            return
        entry.connecting -= 1
        entry.conns.append(conn)
        self.pool.opened += 1
        self.serve(entry)

    def _fail_waiters(self, entry: TargetEntry, exc: BaseException) -> None:
        waiters, entry.waiters = entry.waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(exc)

    def serve(self, entry: TargetEntry) -> None:
        """Hand free stream slots to waiting requests; open another connection when all are taken."""
        waiters = entry.waiters
        while waiters:
            if waiters[0].done():
                waiters.popleft()
                continue
            index = h2bridge.place([c.free() for c in entry.conns], entry.connecting)
            if index == -1:
                self._open(entry)
                return
            if index < 0:
                return
            conn = entry.conns[index]
            conn.active += 1
            waiters.popleft().set_result(conn)

    def forget(self, conn: H2TargetConnection) -> None:
        entry = conn.entry
        if conn in entry.conns:
            entry.conns.remove(conn)
        if not entry.conns and not entry.connecting and not entry.waiters:
            self.entries.pop(entry.key, None)
            if self.by_target.get(entry.target) is entry:
                del self.by_target[entry.target]
        elif entry.waiters:
            self.serve(entry)

    def retire(self, generation: int) -> None:
        """A new Snapshot: old connections take no new streams and close once their streams end."""
        self.by_target = {t: e for t, e in self.by_target.items() if e.generation == generation}
        for entry in list(self.entries.values()):
            if entry.generation != generation:
                for conn in list(entry.conns):
                    conn.retire()

    def close_all(self) -> None:
        for entry in list(self.entries.values()):
            for conn in list(entry.conns):
                conn.close()

    def stats(self) -> dict[str, int]:
        conns = [c for e in self.entries.values() for c in e.conns]
        return {"h2_connections": len(conns), "h2_streams": sum(c.active for c in conns)}


class H2TargetConnection(asyncio.Protocol):
    """One h2 connection to a target (client side, RFC 9113)."""

    def __init__(self, upstream: H2Upstream, entry: TargetEntry) -> None:
        self.upstream = upstream
        self.entry = entry
        self.generation = entry.generation
        self.transport: asyncio.Transport | None = None
        self.conn = H2Connection(config=_config())
        self.streams: dict[int, H2TargetStream] = {}
        self.active = 0  # streams bound to it, opened or about to be
        self.going_away = False
        self.retired = False
        self.write_paused = False
        self.ready: asyncio.Future[None] = upstream._loop.create_future()
        self._loop = upstream._loop
        self._flush_scheduled = False
        self._blocked: deque[H2TargetStream] = deque()
        self._idle_timer: asyncio.TimerHandle | None = None

    def free(self) -> int:
        if self.going_away or self.retired or self.transport is None or not self.ready.done():
            return 0
        return max(0, self.conn.remote_settings.max_concurrent_streams - self.active)

    # -- transport callbacks ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        conn = self.conn
        conn.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            },
        )
        conn.initiate_connection()
        conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.warning("HTTP/2 protocol error from target %s: %s", self.entry.target.label, exc)
            self.flush()
            self.abort()
            return
        for event in events:
            self._event(event)
        self.flush()

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.response(event.headers or [], event.stream_ended is not None)
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.response_data(event.data, event.flow_controlled_length)
            elif event.flow_controlled_length:
                with suppress(h2.exceptions.ProtocolError, KeyError):
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.response_trailers(event.headers or [])
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.response_ended()
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.reset_by_target(event.error_code)
        elif isinstance(event, h2.events.WindowUpdated):
            stream = self.streams.get(event.stream_id) if event.stream_id else None
            if stream is not None:
                stream.pump()
            else:
                self.unblock()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            if not self.ready.done():
                self.ready.set_result(None)
            else:
                self.upstream.serve(self.entry)  # MAX_CONCURRENT_STREAMS may have grown
            if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                self.unblock()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._goaway(event.last_stream_id or 0)

    def _goaway(self, last_stream_id: int) -> None:
        """GOAWAY (RFC 9113 6.8): streams above ``last_stream_id`` were not processed; send them again."""
        self.going_away = True
        # h2 closes its state machine on a GOAWAY it receives and would then refuse the frames of the
        # streams the target still answers (RFC 9113 6.8: "activity on streams numbered lower than or
        # equal to the last stream identifier might still complete"); keep it open for them.
        self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        for stream_id, stream in list(self.streams.items()):
            if stream_id > last_stream_id:
                stream.not_processed()
        if not self.active:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionResetError("target closed the connection"))
            self.ready.exception()  # retrieved: _connect reports it
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            stream.connection_gone(exc)
        self.upstream.forget(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.unblock()

    # -- used by streams ---------------------------------------------------------------------------------

    def flush(self) -> None:
        self._flush_scheduled = False
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def schedule_flush(self) -> None:
        """Send what h2 queued once per loop iteration (h2 copies its whole buffer per call)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def blocked(self, stream: H2TargetStream) -> None:
        if stream not in self._blocked:
            self._blocked.append(stream)

    def unblock(self) -> None:
        blocked, self._blocked = self._blocked, deque()
        for stream in blocked:
            stream.pump()

    def stream_closed(self, stream_id: int) -> None:
        """A stream slot is free again (the stream ended, was reset, or was never opened)."""
        self.active -= 1
        if stream_id:
            self.streams.pop(stream_id, None)
        if self.active:
            self.upstream.serve(self.entry)
            return
        if self.going_away or self.retired:
            self.close()
            return
        self.upstream.serve(self.entry)
        if not self.active and self._idle_timer is None:
            self._idle_timer = self._loop.call_later(self.upstream.pool.idle_timeout, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        if not self.active:
            self.close()

    def retire(self) -> None:
        self.retired = True
        if not self.active:
            self.close()

    def close(self) -> None:
        self.going_away = True
        if self.transport is not None:
            with suppress(h2.exceptions.ProtocolError):
                self.conn.close_connection(h2.errors.ErrorCodes.NO_ERROR)
            self.flush()
            self.transport.close()

    def abort(self) -> None:
        self.going_away = True
        if self.transport is not None:
            self.transport.abort()


class H2TargetStream:
    """One stream to a target: the transport of the ``HttpTargetSide`` an exchange writes its request to."""

    def __init__(self, upstream: H2Upstream, entry: TargetEntry) -> None:
        self.upstream = upstream
        self.entry = entry
        self.side: HttpTargetSide | None = None
        self.conn: H2TargetConnection | None = None
        self.stream_id = 0
        self.replay: list[bytes] | None = []  # the request as written, while it can be sent again
        self.replay_size = 0
        self.downstream: H2Stream | None = None
        self.ended = False  # the response is delivered, or the stream is given up
        self.response_started = False
        self.chunked = False
        self.reading_paused = False
        self.side_paused = False
        self.unacked = 0
        self._reset_request()

    def _reset_request(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.pending: deque[bytes] = deque()
        self.pending_size = 0
        self.request_ended = False
        self.end_sent = False
        self.stream_id = 0

    def bind(self, conn: H2TargetConnection) -> None:
        """Take the slot reserved on ``conn``; the stream opens when the request head is complete."""
        self.conn = conn
        if conn._idle_timer is not None:
            conn._idle_timer.cancel()
            conn._idle_timer = None
        if self.replay:
            for data in self.replay:
                self._feed(data)
                if self.conn is not conn:
                    return

    # -- the transport the HttpTargetSide writes to ----------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.ended:
            return
        if self.replay is not None:
            self.replay.append(data)
            self.replay_size += len(data)
            if self.replay_size > REPLAY_LIMIT and self.conn is not None:
                self.replay = None  # too large to hold: this request cannot be sent again
        if self.conn is not None:
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._lost(ConnectionResetError("an Upgrade request cannot go over HTTP/2 (RFC 9113 8.6)"))
        except httptools.HttpParserError as exc:
            log.warning("HTTP/2 stream to target: the request did not parse: %s", exc)
            self._lost(ConnectionResetError("unparseable request"))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        transport = self.conn.transport if self.conn is not None else None
        return transport.get_extra_info(name, default) if transport is not None else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return self.ended

    def pause_reading(self) -> None:
        self.reading_paused = True  # the client reads slowly: its window to us stays shut

    def resume_reading(self) -> None:
        self.reading_paused = False
        unacked, self.unacked = self.unacked, 0
        if unacked and not self.ended:
            self._ack(unacked)

    def close(self) -> None:
        """The exchange is done with this stream; one still open is cancelled (RFC 9113 8.1)."""
        if self.ended:
            return
        log.debug("HTTP/2 stream %d to target %s cancelled", self.stream_id, self.entry.target.label)
        self.ended = True
        conn = self.conn
        if conn is not None:
            if self.stream_id:
                with suppress(h2.exceptions.ProtocolError, KeyError):
                    conn.conn.reset_stream(self.stream_id, h2.errors.ErrorCodes.CANCEL)
                conn.schedule_flush()
            self._release()

    def abort(self) -> None:
        self.close()

    # -- httptools request callbacks ---------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        conn = self.conn
        assert conn is not None
        body = grpc = False
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"transfer-encoding" or (lowered == b"content-length" and value.strip() != b"0"):
                body = True
            elif lowered == b"content-type":
                grpc = is_grpc(value)
        scheme = b"https" if self.entry.tls is not None else b"http"
        fields = h2bridge.request_fields(self.parser.get_method(), self.url, scheme, self.headers, grpc)
        if self.downstream is None and self.side is not None and self.side.exchange is not None:
            self.downstream = _downstream(self.side.exchange.client.transport)
            if self.downstream is not None:
                self.downstream.upstream = self
        try:
            self.stream_id = conn.conn.get_next_available_stream_id()
            conn.conn.send_headers(self.stream_id, fields, end_stream=not body)
            self.end_sent = not body
        except h2.exceptions.ProtocolError as exc:
            self._lost(ConnectionResetError(f"cannot open a stream: {exc}"))
            return
        conn.streams[self.stream_id] = self
        conn.schedule_flush()

    def on_body(self, body: bytes) -> None:
        self.pending.append(body)
        self.pending_size += len(body)
        self.pump()

    def on_message_complete(self) -> None:
        self.request_ended = True
        self.pump()

    # -- sending the request body ------------------------------------------------------------------------

    def pump(self) -> None:
        conn = self.conn
        if conn is None or not self.stream_id or self.ended:
            return
        h2conn = conn.conn
        try:
            while self.pending and not conn.write_paused:
                window = min(h2conn.local_flow_control_window(self.stream_id), h2conn.max_outbound_frame_size)
                if window <= 0:
                    break
                chunk = self.pending[0]
                if len(chunk) > window:
                    self.pending[0] = chunk[window:]
                    chunk = chunk[:window]
                else:
                    self.pending.popleft()
                self.pending_size -= len(chunk)
                h2conn.send_data(self.stream_id, chunk)
            if self.pending:
                conn.blocked(self)
            elif self.request_ended and not self.end_sent:
                self.end_sent = True
                trailers = self.downstream.request_trailers if self.downstream is not None else None
                if trailers:
                    h2conn.send_headers(self.stream_id, trailers, end_stream=True)
                else:
                    h2conn.end_stream(self.stream_id)
        except (h2.exceptions.ProtocolError, KeyError):
            return  # the stream closed meanwhile (reset by the target); its event follows
        conn.schedule_flush()
        side = self.side
        if side is None:
            return
        if self.pending_size > HIGH_WATER and not self.side_paused:
            self.side_paused = True
            side.pause_writing()  # the exchange stops reading the client's body
        elif self.side_paused and self.pending_size < LOW_WATER:
            self.side_paused = False
            side.resume_writing()

    # -- the response, as HTTP/1.1 bytes for the HttpTargetSide ------------------------------------------

    def response(self, fields: list[tuple[bytes, bytes]], ended: bool) -> None:
        self.response_started = True
        self.replay = None  # processed: never sent again
        grpc = any(n == b"content-type" and is_grpc(v) for n, v in fields)
        head, self.chunked = h2bridge.response_head(fields, ended, grpc)
        if ended:
            if self.downstream is not None and grpc:
                self.downstream.trailers_only = True  # gRPC's trailers-only response, kept as one
            self._finished()
        self._deliver(head)

    def response_data(self, data: bytes, flow_length: int) -> None:
        if data:
            self._deliver(b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data)
        if self.reading_paused:
            self.unacked += flow_length
        else:
            self._ack(flow_length)

    def response_trailers(self, fields: list[tuple[bytes, bytes]]) -> None:
        if self.downstream is not None:
            self.downstream.response_trailers = fields

    def response_ended(self) -> None:
        if self.ended:
            return
        self._finished()
        if self.chunked:
            self._deliver(b"0\r\n\r\n")

    def _deliver(self, data: bytes) -> None:
        side = self.side
        if side is not None and side.transport is not None:
            side.data_received(data)

    def _ack(self, flow_length: int) -> None:
        conn = self.conn
        if flow_length and conn is not None and self.stream_id:
            with suppress(h2.exceptions.ProtocolError, KeyError):
                conn.conn.acknowledge_received_data(flow_length, self.stream_id)
            conn.schedule_flush()

    # -- endings -----------------------------------------------------------------------------------------

    def _finished(self) -> None:
        self.ended = True  # before the exchange sees the end: it then finds this connection not reusable
        self._release()

    def _release(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.stream_closed(self.stream_id)

    def reset_by_target(self, code: int) -> None:
        if code == h2.errors.ErrorCodes.REFUSED_STREAM:
            self.not_processed()  # RFC 9113 8.7: refused streams were not processed
            return
        self._lost(ConnectionResetError(f"target reset the stream ({h2.errors.ErrorCodes(code).name})"))

    def not_processed(self) -> None:
        """The target did not process this stream (GOAWAY, REFUSED_STREAM): send it again elsewhere."""
        if self.ended:
            return
        if self.response_started or self.replay is None:
            self._lost(ConnectionResetError("target went away with the request in progress"))
            return
        old = self.conn
        self._release()
        if old is not None and self.stream_id:
            with suppress(h2.exceptions.ProtocolError, KeyError):
                old.conn.reset_stream(self.stream_id, h2.errors.ErrorCodes.CANCEL)
            old.schedule_flush()
        self._reset_request()
        self.upstream._loop.create_task(self._again())

    async def _again(self) -> None:
        try:
            conn = await self.upstream.slot(self.entry, self.entry.timeout)
        except (OSError, TimeoutError) as exc:
            self._lost(exc)
            return
        if self.ended:
            conn.stream_closed(0)
            return
        self.bind(conn)

    def connection_gone(self, exc: Exception | None) -> None:
        self.conn = None  # the connection's slots are gone with it
        if not self.ended and not self.response_started and self.replay is not None and self.stream_id == 0:
            self._reset_request()
            self.upstream._loop.create_task(self._again())  # never opened on it
            return
        self._lost(exc or ConnectionResetError("target closed the connection"))

    def _lost(self, exc: Exception) -> None:
        if self.ended:
            return
        log.debug("HTTP/2 stream %d to target %s lost: %s", self.stream_id, self.entry.target.label, exc)
        self.ended = True
        self._release()
        side = self.side
        if side is not None and side.transport is not None:
            side.connection_lost(exc)


def admission(protocol_version: str) -> Callable[[Exchange], bool]:
    """The check an HTTP2 or GRPC group makes of each request forwarded to it: False after answering 464."""

    def admit(exchange: Exchange) -> bool:
        over_h2 = _downstream(exchange.client.transport) is not None
        reason = mismatch(protocol_version, over_h2, exchange.method)
        if not reason:
            return True
        exchange._respond_error(464, reason)
        return False

    return admit


def _downstream(transport: object) -> H2Stream | None:
    from lbd.http.h2front import H2Stream  # not at import time: h2front imports the data path

    return transport if isinstance(transport, H2Stream) else None
