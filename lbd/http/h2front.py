"""Downstream HTTP/2 on application listeners: the h2 connection a client opens, and its streams.

HTTPS listeners negotiate ``h2`` by ALPN (RFC 9113 3.2); HTTP listeners with ``h2c: true`` (an lbd
extension) take HTTP/2 with prior knowledge (RFC 9113 3.3). Framing, HPACK and flow control are lbd's
compiled codec's (lbd/http/h2codec.py), or the ``h2`` library's when ``LBD_H2_CODEC=h2`` is set in the
environment (the codec before it, kept for comparison); lbd adds what a load balancer must enforce on top
(the defences below).

Each stream is served by the HTTP/1.1 data path itself, not a copy of it: the stream's request is
written, as HTTP/1.1, into an ``HttpClientSide`` whose transport is the stream (``H2Stream``). So every
stream runs through the same listener rules, desync checks, X-Forwarded-*, trace ids, target pool,
metrics and access log as an HTTP/1.1 request, and is forwarded to HTTP1 target groups exactly as one
(ALB sends HTTP/2 requests to HTTP1 groups as HTTP/1.1). What that client side writes back is parsed
(httptools) and sent to the client as HEADERS and DATA frames, within the peer's flow-control windows.

Defences (RFC 9113 10.5, and the 2019/2023/2024 HTTP/2 CVEs):

- at most 128 concurrent streams (ALB's advertised limit); a stream over it is refused with REFUSED_STREAM
  (RFC 9113 5.1.2), and refusals count toward the reset limit below;
- header lists decoded to at most 64 KiB (ALB's header limit), enforced while HPACK decodes (h2 raises
  before the list is built: the HPACK-bomb defence), and at most 64 CONTINUATION frames per block;
- rapid reset (CVE-2023-44487): more than ``MAX_RESETS`` client resets within a second end the
  connection with GOAWAY ENHANCE_YOUR_CALM; so do PING, SETTINGS and PRIORITY floods, runs of empty DATA
  frames and WINDOW_UPDATE frames out of proportion to the DATA lbd sent;
- a connection with no open stream for the idle timeout (the header timeout too: a request whose header
  block never completes opens no stream) is closed with GOAWAY; a stream whose peer keeps the window shut
  for the idle timeout is reset (slow read), so lbd never buffers a whole response for a slow client.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from contextlib import suppress
from time import monotonic
from typing import TYPE_CHECKING, Any, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import httptools
from hyperframe.frame import GoAwayFrame

from lbd.http import grpc, h2codec
from lbd.http.flow import HIGH_WATER, LOW_WATER
from lbd.http.h2conn import H2Connection
from lbd.http.proxy import HttpClientSide

if TYPE_CHECKING:
    from lbd.http.h2upstream import H2TargetStream
    from lbd.http.upstream import UpstreamPool
    from lbd.listener.tracker import ConnectionTracker
    from lbd.runtime import HttpListenerRuntime, ListenerSlot

log = logging.getLogger("lbd.http")
# hpack logs every field it codes at debug level: far too much, and costly, under lbd's --log-level debug.
logging.getLogger("hpack").setLevel(logging.WARNING)
logging.getLogger("h2").setLevel(logging.WARNING)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

MAX_CONCURRENT_STREAMS = 128  # what ALB advertises
MAX_HEADER_LIST_SIZE = 64 * 1024  # ALB's limit on request headers
STREAM_WINDOW = 256 * 1024  # per-stream receive window: room for a fast upload, a bound per stream
CONNECTION_WINDOW = 4 * 1024 * 1024
MAX_STREAMS_PER_CONNECTION = 10_000  # ALB sends GOAWAY after 10,000 requests on a connection
# Flood limits, per connection and per second (or per run, for empty DATA frames).
MAX_RESETS = 100
MAX_PINGS = 50
MAX_SETTINGS = 50
MAX_PRIORITY = 500
MAX_EMPTY_DATA = 32
# WINDOW_UPDATE frames allowed: this many, plus WINDOW_UPDATES_PER_DATA for each DATA frame lbd sent.
WINDOW_UPDATE_ALLOWANCE = 100
WINDOW_UPDATES_PER_DATA = 4
# Which HTTP/2 implementation serves downstream connections: "lbd" (lbd/http/h2codec.py) or "h2".
CODEC = os.environ.get("LBD_H2_CODEC", "lbd")

# RFC 9113 8.2.2: connection-specific fields do not exist in HTTP/2; those of a response are dropped.
_RESPONSE_DROPPED = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te", b"trailer"}
)
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _config() -> h2.config.H2Configuration:
    # Inbound validation stays on (pseudo-headers, connection-specific fields, illegal characters: the
    # request-smuggling defence at the edge); outbound fields are lbd's own, from parsed responses.
    return h2.config.H2Configuration(
        client_side=False,
        header_encoding=None,
        validate_inbound_headers=True,
        normalize_inbound_headers=True,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )


class H2ClientSide:
    """One client's HTTP/2 connection on an application listener (an asyncio protocol)."""

    def __init__(
        self,
        listener: HttpListenerRuntime,
        tracker: ConnectionTracker,
        pool: UpstreamPool,
        slot: ListenerSlot | None = None,
    ) -> None:
        self.listener = listener
        self.tracker = tracker
        self.pool = pool
        self.slot = slot
        self.transport: asyncio.Transport | None = None
        # Both offer the calls lbd makes (h2's names); their events differ (_event, _codec_event).
        self.codec = CODEC != "h2"
        self.conn: Any = (
            h2codec.H2ServerConnection(
                MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_SIZE, STREAM_WINDOW, CONNECTION_WINDOW
            )
            if self.codec
            else H2Connection(config=_config())
        )
        self.streams: dict[int, H2Stream] = {}
        self.tls_info: tuple[str, str, str, str] | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.closing = False
        self.going_away = False
        self.last_stream_id = 0
        self.opened = 0
        self.write_paused = False
        self.read_paused = False
        self._flush_scheduled = False
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._idle_since = monotonic()
        self._window_start = 0.0
        self._resets = self._pings = self._settings = self._priority = 0
        self._empty_run = 0
        self._window_updates = 0
        self._data_sent = 0
        self._blocked: deque[H2Stream] = deque()
        self._reset_now: set[int] = set()

    # -- transport callbacks -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport, tls_info: Any = None) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        peer = self.transport.get_extra_info("peername")
        if peer:
            self.peer = (peer[0], peer[1])
        self.tls_info = tls_info
        stats = self.listener.stats
        stats.new_connections += 1
        stats.active_connections += 1
        self.tracker.add(self)
        if self.codec:
            # The codec leaves the stream limit to lbd (REFUSED_STREAM past 128, below).
            self.conn.initiate_connection()
        else:
            self._h2_preface()
        self._flush()
        self._arm_timer()

    def _h2_preface(self) -> None:
        conn = self.conn
        conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,  # ALB has no server push
            },
        )
        conn.initiate_connection()
        # The SETTINGS frame is out with 128; h2 itself is now told a larger limit, so that a stream over
        # 128 is lbd's to refuse with REFUSED_STREAM (RFC 9113 5.1.2 allows it, as nginx does), a stream
        # error the client may retry, rather than h2's connection-ending PROTOCOL_ERROR.
        conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 2 * MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.codec:
            self._codec_received(data)
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued GOAWAY with the error's code (PROTOCOL_ERROR, FRAME_SIZE_ERROR,
            # ENHANCE_YOUR_CALM for an oversized header list, ...): send it and close.
            log.info("%s: HTTP/2 connection error from %s:%s: %s", self.listener.name, *self.peer, exc)
            if self.conn.state_machine.state is not h2.connection.ConnectionState.CLOSED:
                # Raised before h2 queued its GOAWAY (a bad connection preface, RFC 9113 3.4).
                self.conn.close_connection(exc.error_code or h2.errors.ErrorCodes.PROTOCOL_ERROR)
            self._fail()
            return
        self._new_interval()
        # h2 reports a whole read's events at once, after its state machine has seen every frame: a stream
        # opened and reset in the same read (rapid reset) is closed already and is not served at all.
        self._reset_now = {e.stream_id for e in events if isinstance(e, h2.events.StreamReset)}
        for event in events:
            if self.closing:
                return
            self._event(event)
        self._flush()

    def _codec_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2codec.ConnectionError_ as exc:
            # The codec has queued GOAWAY with the error's code: send it and close.
            log.info("%s: HTTP/2 connection error from %s:%s: %s", self.listener.name, *self.peer, exc)
            self._fail()
            return
        self._new_interval()
        # The codec, too, reports a read's events after it has seen every frame (see data_received).
        reset = h2codec.RESET
        self._reset_now = {e.stream_id for e in events if e.kind == reset}
        for event in events:
            if self.closing:
                return
            self._codec_event(event)
        self._flush()

    def _new_interval(self) -> None:
        now = monotonic()
        if now - self._window_start >= 1.0:
            self._window_start = now
            self._resets = self._pings = self._settings = self._priority = 0

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event.stream_id, event.headers or [], event.stream_ended is not None)
        elif isinstance(event, h2.events.DataReceived):
            self._data(
                event.stream_id, event.data, event.flow_controlled_length, event.stream_ended is not None
            )
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.request_ended()
        elif isinstance(event, h2.events.TrailersReceived):
            self._trailers(event.stream_id, event.headers or [])
        elif isinstance(event, h2.events.StreamReset):
            self._reset(event.stream_id, event.remote_reset)
        elif isinstance(event, h2.events.WindowUpdated):
            self._window_updated(event.stream_id)
        elif isinstance(event, h2.events.PingReceived):
            self._ping()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self._settings_changed(h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings)
        elif isinstance(event, h2.events.PriorityUpdated):
            self._priority_frame()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.close()

    def _codec_event(self, event: h2codec.Event) -> None:
        kind = event.kind
        if kind == h2codec.REQUEST:
            self._request(event.stream_id, event.headers, event.end_stream)
        elif kind == h2codec.DATA_RECEIVED:
            self._data(event.stream_id, event.data, event.flow_length, event.end_stream)
        elif kind == h2codec.WINDOW_UPDATED:
            self._window_updated(event.stream_id)
        elif kind == h2codec.RESET:
            self._reset(event.stream_id, event.remote_reset)
        elif kind == h2codec.TRAILERS:
            self._trailers(event.stream_id, event.headers)
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.request_ended()  # trailers end the request (RFC 9113 8.1)
        elif kind == h2codec.PING_RECEIVED:
            self._ping()
        elif kind == h2codec.SETTINGS_CHANGED:
            self._settings_changed(event.window_changed)
        elif kind == h2codec.PRIORITY_RECEIVED:
            self._priority_frame()
        elif kind == h2codec.TERMINATED:
            self.close()

    def _data(self, stream_id: int, data: bytes, flow_length: int, ended: bool) -> None:
        if not data and not ended:
            self._empty_run += 1
            if self._empty_run > MAX_EMPTY_DATA:
                self.calm_down("empty DATA frames")
                return
        else:
            self._empty_run = 0
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.request_data(data, flow_length)
            if ended:
                stream.request_ended()
        elif flow_length:
            self.conn.acknowledge_received_data(flow_length, stream_id)

    def _trailers(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        # HTTP/1.1 targets do not get request trailers (neither does ALB send them); an HTTP/2 target's
        # stream takes them from here when the request ends (lbd/http/h2upstream.py).
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.request_trailers = [(n, v) for n, v in headers if n[:1] != b":"]

    def _reset(self, stream_id: int, remote_reset: bool) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream.reset_by_peer()
        if remote_reset:
            self._resets += 1
            if self._resets > MAX_RESETS:
                self.calm_down("rapid reset")  # CVE-2023-44487

    def _window_updated(self, stream_id: int) -> None:
        self._window_updates += 1
        if self._window_updates > (
            WINDOW_UPDATE_ALLOWANCE + WINDOW_UPDATES_PER_DATA * (self._data_sent + self.opened)
        ):
            self.calm_down("WINDOW_UPDATE flood")
            return
        if stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None:
                stream.pump()
        else:
            self._unblock()

    def _ping(self) -> None:
        self._pings += 1
        if self._pings > MAX_PINGS:
            self.calm_down("PING flood")

    def _settings_changed(self, window_changed: bool) -> None:
        self._settings += 1
        if self._settings > MAX_SETTINGS:
            self.calm_down("SETTINGS flood")
        elif window_changed:
            self._unblock()

    def _priority_frame(self) -> None:
        self._priority += 1
        if self._priority > MAX_PRIORITY:
            self.calm_down("PRIORITY flood")

    def _request(self, stream_id: int, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        self._empty_run = 0
        self.last_stream_id = stream_id
        if self.going_away:
            # After GOAWAY only streams up to its last stream id are processed (RFC 9113 6.8).
            self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        if len(self.streams) >= MAX_CONCURRENT_STREAMS:
            # Over the advertised limit: refused (not processed, so the client may retry it). Refusals
            # count as resets, so a client that keeps trying gets ENHANCE_YOUR_CALM like a rapid reset.
            self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            self._resets += 1
            if self._resets > MAX_RESETS:
                self.calm_down("streams over the concurrency limit")
            return
        self.opened += 1
        if stream_id in self._reset_now:
            return  # reset in this same read: nothing to serve
        listener = self.listener
        if self.slot is not None and self.slot.runtime.kind == "http":
            listener = cast("HttpListenerRuntime", self.slot.runtime)  # new streams: the newest rules
        stream = H2Stream(self, stream_id, headers)
        if not stream.valid:
            self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.PROTOCOL_ERROR)  # RFC 9113 8.1.1
            return
        self.streams[stream_id] = stream
        stream.start(listener, ended)
        if self.opened >= MAX_STREAMS_PER_CONNECTION:
            self.drain()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return
        self.transport = None
        self.closing = True
        self.listener.stats.active_connections -= 1
        self.tracker.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            stream.reset_by_peer()

    def pause_writing(self) -> None:
        # The client reads slowly: stop sending DATA (streams keep their data and pause their targets)
        # and stop reading frames, so control-frame answers (PING, SETTINGS acks) cannot pile up either.
        self.write_paused = True
        if self.transport is not None and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self._unblock()
        self.schedule_flush()

    # -- sending ------------------------------------------------------------------------------------------

    def schedule_flush(self) -> None:
        """Send what h2 has queued, once per loop iteration (h2 copies its whole buffer per call)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def blocked(self, stream: H2Stream) -> None:
        """A stream has data the flow-control windows do not let out yet."""
        if stream not in self._blocked:
            self._blocked.append(stream)

    def _unblock(self) -> None:
        blocked, self._blocked = self._blocked, deque()
        for stream in blocked:
            if not self.write_paused and stream.stream_id in self.streams:
                stream.pump()
            elif stream.stream_id in self.streams:
                self._blocked.append(stream)

    def data_frame_sent(self) -> None:
        self._data_sent += 1

    def stream_done(self, stream: H2Stream) -> None:
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
        if not self.streams:
            self._idle_since = monotonic()
            if self.going_away:
                self.close()

    # -- ending ---------------------------------------------------------------------------------------------

    def calm_down(self, why: str) -> None:
        """A flood: GOAWAY ENHANCE_YOUR_CALM (RFC 9113 7), then close."""
        log.warning("%s: HTTP/2 %s from %s:%s; closing the connection", self.listener.name, why, *self.peer)
        self.conn.close_connection(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, last_stream_id=self.last_stream_id)
        self._fail()

    def _fail(self) -> None:
        self._flush()
        self.close()

    def drain(self) -> None:
        """Graceful shutdown (drain, SIGTERM, 10,000 streams): GOAWAY with the last stream id; streams in
        progress finish, new ones are refused, and the connection closes once the last one ends."""
        if self.going_away or self.transport is None:
            return
        self.going_away = True
        if self.codec:
            self.conn.send_goaway(0, self.last_stream_id)  # streams go on: not close_connection
            self._flush()
        else:
            # Written directly: h2's state machine refuses to send on streams after its own GOAWAY.
            self._flush()
            frame = GoAwayFrame(stream_id=0, last_stream_id=self.last_stream_id, error_code=0)
            self.transport.write(frame.serialize())
        if not self.streams:
            self.close()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self._flush()
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def target_in_use(self) -> tuple[str, str] | None:
        return None  # each stream's client side reports its own target (they are in the tracker too)

    # -- timeouts -----------------------------------------------------------------------------------------

    def _arm_timer(self) -> None:
        self._timer = self._loop.call_later(max(self.listener.idle_timeout / 2, 0.5), self._check)

    def _check(self) -> None:
        self._timer = None
        if self.transport is None:
            return
        now = monotonic()
        idle_timeout = self.listener.idle_timeout
        if not self.streams and now - self._idle_since >= idle_timeout:
            # Idle (or a header block that never completed, which opens no stream): close quietly.
            self.conn.close_connection(h2.errors.ErrorCodes.NO_ERROR, last_stream_id=self.last_stream_id)
            self._fail()
            return
        for stream in list(self.streams.values()):
            if stream.stalled_since and now - stream.stalled_since >= idle_timeout:
                stream.slow_reader()
        self._flush()
        self._arm_timer()


class H2Stream:
    """One stream: the transport of the HTTP/1.1 client side that serves it, and its response's parser."""

    def __init__(self, connection: H2ClientSide, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.client: HttpClientSide | None = None
        self.valid = True
        self.head_request = False
        self.chunked = False
        self.expect = False
        self.deferred = False  # the head waits for the first DATA or END_STREAM to choose its framing
        self.request_done = False
        self.response_started = False
        self.response_done = False
        self.ended = False
        self.finished = False
        self.reading_paused = False
        self.writing_paused = False
        self.unacked = 0
        self.stalled_since = 0.0
        self._pending: deque[bytes] = deque()
        self._pending_size = 0
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        # The parser holds bound methods of this stream (a reference cycle): dropped when the stream is
        # done, so the stream and its client side are freed at once rather than by the cyclic GC, which
        # otherwise took a third of the worker's time under many short streams.
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        # gRPC (lbd/http/grpc.py), and the trailers that travel beside the HTTP/1.1 bridge to and from an
        # HTTP/2 target's stream (lbd/http/h2upstream.py).
        self.grpc = False
        self.grpc_timeout: float | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self.upstream: H2TargetStream | None = None
        self.request_trailers: list[tuple[bytes, bytes]] | None = None
        self.response_trailers: list[tuple[bytes, bytes]] | None = None
        self.trailers_only = False
        self._head = self._request_head(headers)

    def _request_head(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        """The request as HTTP/1.1 (RFC 9113 8.3.1): :authority becomes Host, cookies are joined with
        "; " (8.2.3), a body without Content-Length is sent chunked."""
        method = path = authority = b""
        host = b""
        cookies: list[bytes] = []
        lines: list[bytes] = []
        content_length = False
        for name, value in headers:
            if name[:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
                elif name == b":authority":
                    authority = value
                continue
            if name == b"cookie":
                cookies.append(value)
                continue
            if name == b"host":
                host = value
                continue
            if name == b"content-length":
                content_length = True
            elif name == b"expect":
                self.expect = True
            elif name == b"content-type":
                self.grpc = grpc.is_grpc(value)
            elif name == b"grpc-timeout":
                self.grpc_timeout = grpc.parse_timeout(value)
            lines.append(b"%b: %b\r\n" % (name, value))
        # h2 checks the pseudo-header set; lbd checks what HTTP/1.1 would misread: a method that is not a
        # token, a path with spaces or controls, CONNECT (ALB does not tunnel).
        if (
            not method
            or not _TOKEN.issuperset(method)
            or method == b"CONNECT"
            or not path
            or any(c <= 0x20 or c == 0x7F for c in path)
        ):
            self.valid = False
            return b""
        self.head_request = method == b"HEAD"
        authority = authority or host
        if cookies:
            lines.append(b"cookie: %b\r\n" % b"; ".join(cookies))
        self.chunked = not content_length
        self.deferred = self.chunked and not self.expect
        return b"%b %b HTTP/1.1\r\nhost: %b\r\n%b" % (method, path, authority, b"".join(lines))

    # -- request side -----------------------------------------------------------------------------------

    def start(self, listener: HttpListenerRuntime, ended: bool) -> None:
        connection = self.connection
        # A listener may serve its HTTP/1.1 with another client side (a distribution's: lbd/edge/server.py).
        factory = getattr(listener, "client_side", HttpClientSide)
        client = factory(listener, connection.tracker, connection.pool, connection.slot)
        self.client = client
        client.connection_made(cast(asyncio.BaseTransport, self))
        # One h2 connection is one client connection: a stream is a request, not a connection.
        client.stats.new_connections -= 1
        client.stats.active_connections -= 1
        client.tls_info = connection.tls_info
        if self.grpc:
            client.stats.grpc_requests += 1  # GrpcRequestCount
            if self.grpc_timeout is not None:
                self._deadline = connection._loop.call_later(self.grpc_timeout, self.deadline_exceeded)
        if ended:
            self.request_done = True
            self._send_head(False)
        elif not self.deferred:
            self._send_head(self.chunked)

    def _send_head(self, chunked: bool) -> None:
        """A request whose HEADERS did not end the stream and that gave no Content-Length is chunked once
        DATA arrives; one that ends before any DATA (a GET, usually) is sent without a body, so it is not
        mistaken for a bodied GET by the desync checks."""
        self.deferred = False
        self.chunked = chunked
        head, self._head = self._head, b""
        if self.client is not None:
            self.client.data_received(
                head + b"transfer-encoding: chunked\r\n\r\n" if chunked else head + b"\r\n"
            )

    def request_data(self, data: bytes, flow_length: int) -> None:
        client = self.client
        if client is None or client.transport is None:
            self._ack(flow_length)
            return
        if self.deferred:
            if not data:
                self._ack(flow_length)
                return
            self._send_head(True)
            if client.transport is None:
                return
        if data:
            client.data_received(b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data)
        if self.reading_paused:
            self.unacked += flow_length  # the window reopens when the target takes the body
        else:
            self._ack(flow_length)

    def _ack(self, flow_length: int) -> None:
        if flow_length:
            # A stream already gone is not acknowledged; h2 credited the connection window for it.
            with suppress(h2.exceptions.ProtocolError, KeyError):
                self.connection.conn.acknowledge_received_data(flow_length, self.stream_id)

    def request_ended(self) -> None:
        if self.request_done:
            return
        self.request_done = True
        client = self.client
        if self.deferred:
            self._send_head(False)
        elif client is not None and client.transport is not None and self.chunked:
            client.data_received(b"0\r\n\r\n")
        self._maybe_done()

    def reset_by_peer(self) -> None:
        """The client reset the stream (or the connection is gone): the request is abandoned."""
        self.ended = self.finished = True
        self._pending.clear()
        self._lose_client()
        self._parser = None

    def _lose_client(self) -> None:
        client = self.client
        self.client = None
        if client is not None and client.transport is not None:
            client.stats.active_connections += 1  # connection_lost counts one down; start counted none
            client.connection_lost(None)
        if client is not None:
            # Its request parser holds its bound methods, a cycle (see H2Stream.__init__); this client side
            # is done and is fed no more, so the parser goes with it.
            client.parser = None

    # -- the transport the HTTP/1.1 client side writes to ------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return None  # the connection's TLS details are copied once, not looked up per stream
        if name == "peername":
            return self.connection.peer  # the socket's peer, or the client a PROXY header named
        transport = self.connection.transport
        return transport.get_extra_info(name, default) if transport is not None else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return self.ended

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        pass

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            unacked, self.unacked = self.unacked, 0
            if unacked and not self.ended:
                self._ack(unacked)
                self.connection.schedule_flush()

    def write(self, data: bytes) -> None:
        parser = self._parser
        if self.ended or self.response_done or self.connection.closing or parser is None:
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # a 101: the stream ends with it (HTTP/2 has no Upgrade, RFC 9113 8.6)
        except httptools.HttpParserError:
            log.exception("unparseable response for an HTTP/2 stream")
            self.abort()

    def close(self) -> None:
        """The client side is done with this stream's connection (after a response, or to reject)."""
        if not self.ended and not self.response_done:
            self.abort()  # the response broke off

    def abort(self) -> None:
        if self.finished:
            return
        self.ended = self.finished = True
        self._pending.clear()
        connection = self.connection
        if not connection.closing:
            with suppress(h2.exceptions.ProtocolError, KeyError):  # closed meanwhile
                connection.conn.reset_stream(self.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
            connection.schedule_flush()
        self._lose_client()
        connection.stream_done(self)

    # -- httptools response callbacks --------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        try:
            self._response_head()
        except (h2.exceptions.ProtocolError, KeyError):
            self.abort()  # the stream closed meanwhile (reset by the client in the same read)

    def _response_head(self) -> None:
        assert self._parser is not None  # in its own callback
        status = self._parser.get_status_code()
        headers = [(n, v) for n, v in self._headers if n not in _RESPONSE_DROPPED]
        self._headers = []
        conn = self.connection.conn
        if 100 <= status < 200:
            if status != 101:
                conn.send_headers(self.stream_id, [(b":status", b"%d" % status), *headers])
                self.connection.schedule_flush()
            return
        self.response_started = True
        self._status = status
        if self.grpc and self._generated_here():
            # An error (or a rule's answer) lbd made itself: a gRPC trailers-only response (lbd/http/grpc.py).
            reason = self._exchange_reason() or f"HTTP {status} from the load balancer"
            fields = grpc.trailers_only(grpc.status_for(status), reason)
            conn.send_headers(self.stream_id, fields, end_stream=True)
            self.connection.schedule_flush()
            self._pending.clear()
            self._response_finished()
            return
        end = self.head_request or status in (204, 304) or self.trailers_only
        conn.send_headers(self.stream_id, [(b":status", b"%d" % status), *headers], end_stream=end)
        self.connection.schedule_flush()
        if end:
            self._response_finished()

    def _generated_here(self) -> bool:
        client = self.client
        if client is None or not client.exchanges:
            return True  # rejected before an exchange began (a malformed request)
        return bool(client.exchanges[0].local_status)

    def _exchange_reason(self) -> str:
        client = self.client
        return client.exchanges[0].error_reason if client is not None and client.exchanges else ""

    def deadline_exceeded(self) -> None:
        """The call's grpc-timeout passed before its response ended: DEADLINE_EXCEEDED, and the target's
        stream is cancelled (the client side goes away)."""
        self._deadline = None
        if self.ended or self.finished:
            return
        conn = self.connection.conn
        status = grpc.DEADLINE_EXCEEDED
        with suppress(h2.exceptions.ProtocolError, KeyError):
            if self.response_started:
                conn.send_headers(self.stream_id, [(b"grpc-status", b"%d" % status)], end_stream=True)
            else:
                fields = grpc.trailers_only(status, "deadline exceeded")
                conn.send_headers(self.stream_id, fields, end_stream=True)
        self.connection.schedule_flush()
        self._pending.clear()
        self.response_done = True
        self.ended = True
        self._maybe_done()

    def on_body(self, body: bytes) -> None:
        if self.response_done:
            return
        self._pending.append(body)
        self._pending_size += len(body)
        self.pump()
        if self._pending_size > HIGH_WATER and not self.writing_paused and self.client is not None:
            self.writing_paused = True
            self.client.pause_writing()  # stop reading the target until the client opens its window

    def on_message_complete(self) -> None:
        if self.response_done or not self.response_started:
            return
        self.response_done = True
        self.pump()

    # -- sending the response ----------------------------------------------------------------------------

    def pump(self) -> None:
        """Send queued body bytes as the windows allow, then END_STREAM once the body is done."""
        if self.ended:
            return
        try:
            self._send_body()
        except (h2.exceptions.ProtocolError, KeyError):
            self.abort()

    def _send_body(self) -> None:
        connection = self.connection
        conn = connection.conn
        pending = self._pending
        sent = False
        while pending and not connection.write_paused:
            window = min(conn.local_flow_control_window(self.stream_id), conn.max_outbound_frame_size)
            if window <= 0:
                break
            chunk = pending[0]
            if len(chunk) > window:
                pending[0] = chunk[window:]
                chunk = chunk[:window]
            else:
                pending.popleft()
            self._pending_size -= len(chunk)
            conn.send_data(self.stream_id, chunk)
            connection.data_frame_sent()
            sent = True
        if pending:
            if not self.stalled_since or sent:
                self.stalled_since = monotonic()
            connection.blocked(self)
        else:
            self.stalled_since = 0.0
            if self.response_done:
                trailers = self.response_trailers
                if trailers:
                    conn.send_headers(self.stream_id, trailers, end_stream=True)  # an HTTP/2 target's
                else:
                    conn.end_stream(self.stream_id)
                sent = True
                self._response_finished()
        if sent:
            connection.schedule_flush()
        if self.writing_paused and self._pending_size < LOW_WATER and self.client is not None:
            self.writing_paused = False
            self.client.resume_writing()

    def _response_finished(self) -> None:
        self.response_done = True
        self.ended = True
        # Not at once: this runs inside the client side's write, before its exchange has finished (access
        # log, target connection back to the pool); the stream's client side goes away right after.
        self.connection._loop.call_soon(self._maybe_done)

    def _maybe_done(self) -> None:
        """The response is sent: the stream's client side goes away. A request body still coming is cut
        off with RST_STREAM NO_ERROR (RFC 9113 8.1: a complete response before the whole request)."""
        if not self.ended or self.finished:
            return
        self.finished = True
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if not self.request_done and not self.connection.closing:
            self.request_done = True
            with suppress(h2.exceptions.ProtocolError, KeyError):  # the stream closed meanwhile
                self.connection.conn.reset_stream(self.stream_id, h2.errors.ErrorCodes.NO_ERROR)
            self.connection.schedule_flush()
        self._lose_client()
        self._parser = None
        self.connection.stream_done(self)

    def slow_reader(self) -> None:
        """The client kept this stream's window shut for the idle timeout: reset it (slow read)."""
        log.info("HTTP/2 stream %d: the client's window stayed closed; resetting it", self.stream_id)
        self.stalled_since = 0.0
        self.abort()
