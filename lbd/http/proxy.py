"""The HTTP/1.1 reverse proxy of application load balancer listeners.

A thin asyncio Protocol over httptools (llhttp) in each direction, uvicorn-style: per-connection state
lives on ``HttpClientSide``, per-request state on ``Exchange``. Everything is callbacks; the only coroutine
is a target connect, when the pool has no idle connection.

- Pipelining: requests are answered in order. Only the oldest exchange talks to a target; reading from
  the client pauses while later ones wait, so a pipelining client cannot make lbd buffer without bound.
- Bodies stream both ways. Requests are re-framed for the target (Content-Length kept, chunked re-chunked),
  responses likewise for the client. Flow control: a full write buffer on one side pauses reading on the
  other (DESIGN.md section 3).
- Keep-alive on both sides; target connections go back to the UpstreamPool between requests.
- ``Expect: 100-continue`` is answered by lbd at once and stripped, as ALB does (R19).
- The common case skips the parser: a complete, bodiless, compliant request head and a response with a
  Content-Length are recognised whole by fastpath.py; everything else goes through llhttp.
- Upgrades (WebSocket): once the target answers 101 the connection is a byte tunnel pinned to that target;
  rules no longer apply (R1).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from time import monotonic
from typing import TYPE_CHECKING, cast

import httptools

from lbd.http import desync, errors, fastpath, messages, timeouts
from lbd.http.upstream import HIGH_WATER, LOW_WATER, HttpTargetSide, StopParsing, UpstreamPool
from lbd.listener.tracker import ConnectionTracker
from lbd.observe.ratelimit import CONNECT_WARNINGS
from lbd.upstream.target import Target

if TYPE_CHECKING:
    from lbd.runtime import HttpListenerRuntime, ListenerSlot, TargetGroupRuntime

log = logging.getLogger("lbd.http")

# ALB limits (R6): request line 16K, one header 16K, all request headers 64K.
MAX_URL = 16 * 1024
MAX_HEADER = 16 * 1024
MAX_HEADERS_TOTAL = 64 * 1024

# Reasons reading from the client is paused; reading resumes only when none is left.
PAUSE_PIPELINE = 1  # an earlier request is still being answered
PAUSE_BACKPRESSURE = 2  # the target cannot take the request body as fast as the client sends it
PAUSE_CONNECTING = 4  # body arriving before the target connection exists


class HttpClientSide(asyncio.Protocol):
    """One client connection on an application listener."""

    __slots__ = (
        "_begun",
        "_head_raw",
        "_header_bytes",
        "_headers",
        "_idle_handle",
        "_in_head",
        "_in_message",
        "_loop",
        "_moved",
        "_moved_at_check",
        "_out",
        "_paused",
        "_quiet_checks",
        "_replay_reason",
        "_replayable",
        "_request_started_at",
        "_url",
        "closing",
        "draining",
        "exchanges",
        "fast_forwarded",
        "listener",
        "parser",
        "peer",
        "pool",
        "received_bytes",
        "received_mark",
        "sent_bytes",
        "slot",
        "tls_info",
        "tracker",
        "transport",
        "tunnel_eofs",
        "tunnel_target",
        "upgrading",
    )

    def __init__(
        self,
        listener: HttpListenerRuntime,
        tracker: ConnectionTracker,
        pool: UpstreamPool,
        slot: ListenerSlot | None = None,
    ) -> None:
        self.listener = listener
        # Where the listener's current runtime is found: a keep-alive connection serves each new request
        # with the latest generation (health, draining, rules), while requests in flight finish on theirs.
        self.slot = slot
        self.received_bytes = 0  # from the client, over the connection's life (access log, metrics)
        self.sent_bytes = 0  # to the client
        self.received_mark = 0  # received_bytes when the previous exchange ended
        self.tls_info: tuple[str, str, str, str] | None = None  # cipher, protocol, SNI, certificate
        self.fast_forwarded: tuple[object, bytes] | None = None  # X-Forwarded-* lines, per dispatcher
        self.tracker = tracker
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self._replayable = desync.lenient_te_cl(listener.load_balancer.desync_mitigation_mode)
        self.parser = self._new_parser()
        self.exchanges: deque[Exchange] = deque()
        self.peer: tuple[str, int] = ("", 0)
        self.closing = False
        self.draining = False
        self.tunnel_target: HttpTargetSide | None = None
        self.tunnel_eofs = 0
        self.upgrading = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._paused = 0
        self._out: list[bytes] | None = None
        self._loop = asyncio.get_running_loop()
        self._idle_handle: asyncio.TimerHandle | None = None
        self._moved = 0
        self._moved_at_check = 0
        self._quiet_checks = 0
        self._request_started_at = 0.0
        # Desync mitigation: the raw bytes of a request head that began at the start of a read, kept
        # until the head is parsed, so an ambiguous head can be normalised and parsed again.
        self._in_message = False
        self._in_head = False
        self._begun = 0
        self._head_raw: bytes | None = None
        self._replay_reason = ""

    def _new_parser(self) -> httptools.HttpRequestParser:
        parser = httptools.HttpRequestParser(self)
        if self._replayable:
            # Transfer-Encoding with Content-Length is ambiguous, not severe: let llhttp pass it (TE wins)
            # so the dispatcher can classify it; strictest mode keeps llhttp strict.
            parser.set_dangerous_leniencies(lenient_chunked_length=True)
        return parser

    # -- transport callbacks ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        peer = self.transport.get_extra_info("peername")
        if peer:
            self.peer = (peer[0], peer[1])
        stats = self.listener.stats
        stats.new_connections += 1
        stats.active_connections += 1
        self.tracker.add(self)
        ssl_object = self.transport.get_extra_info("ssl_object") if self.listener.tls is not None else None
        if ssl_object is not None and self.listener.tls is not None:
            # For the access log: ssl_cipher, ssl_protocol, domain_name, chosen_cert_arn.
            cipher = ssl_object.cipher()
            server_name, certificate = self.listener.tls.handshake_info(ssl_object)
            self.tls_info = (
                cipher[0] if cipher else "-",
                ssl_object.version() or "-",
                server_name,
                certificate,
            )
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        self._moved += 1
        self.received_bytes += len(data)
        self.listener.stats.processed_bytes += len(data)
        if self.tunnel_target is not None:
            self.tunnel_target.write(data)
            return
        if self.closing:
            return
        if self.upgrading:
            # Sent after an upgrade request, before the target's answer: it belongs to the tunnel.
            self.exchanges[-1].early_tunnel_data += data
            return
        if not self._in_message and not self.exchanges and self._fast_request(data):
            return
        self._feed(data, replay=self._replayable)

    def _fast_request(self, data: bytes) -> bool:
        """Take a complete, simple request head without the parser (fastpath.py); False to parse it."""
        listener = self._latest_listener()
        parsed = fastpath.simple_request(data, listener.dispatcher.fast_pattern)
        if parsed is None:
            return False
        method, url, version, block, host = parsed
        exchange = Exchange(self, method, url, version, None, version == "1.1", False)
        self.exchanges.append(exchange)
        exchange.start_fast(block, host)
        return True

    def _latest_listener(self) -> HttpListenerRuntime:
        """Between requests, move to the listener's newest generation (health, draining, rules)."""
        if self.slot is not None:
            latest = self.slot.runtime
            if latest is not self.listener and latest.kind == "http":
                self.listener = cast("HttpListenerRuntime", latest)
        return self.listener

    def _feed(self, data: bytes, *, replay: bool) -> None:
        head_raw = self._head_raw
        fresh = not self._in_message
        self._begun = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            # The request that asked for the upgrade is complete; what follows belongs to the tunnel.
            if self.exchanges:
                self.upgrading = True
                self.pause_reading(PAUSE_PIPELINE)
                self.exchanges[-1].early_tunnel_data = data[upgrade.args[0] :]
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, errors.HttpError):
                self.reject(cause)
            else:
                log.exception("internal error while parsing a request", exc_info=cause)
                self.reject(errors.HttpError(500, "InternalError"))
        except httptools.HttpParserError as exc:
            error = errors.parser_error(exc)
            if error.reason == "DataAfterClose":
                return  # RFC 9112 9.6: after a request with Connection: close, ignore what follows
            if replay and error.reason in desync.REPLAYABLE:
                raw = head_raw + data if head_raw is not None else None
                if raw is None and fresh and self._begun == 1:
                    raw = data  # the refused head is the first thing in this read
                if raw is not None:
                    self._replay(raw)
                    return
            self.reject(error)
        else:
            if not replay:
                return
            if self._in_head:
                if head_raw is not None:
                    self._head_raw = head_raw + data
                elif fresh and self._begun == 1:
                    self._head_raw = data
            elif head_raw is not None:
                self._head_raw = None

    def _replay(self, raw: bytes) -> None:
        """An ambiguous head llhttp refused (duplicate Content-Length, obs-fold): parse its normal form."""
        try:
            normalised, reason = desync.normalise_head(raw)
        except errors.HttpError as error:
            self.reject(error)
            return
        self.parser = self._new_parser()
        self._head_raw = None
        self._in_message = self._in_head = False
        self._replay_reason = reason
        self._feed(normalised, replay=False)

    def eof_received(self) -> bool:
        if self.tunnel_target is not None:
            if self.tunnel_target.transport is not None and self.tunnel_target.transport.can_write_eof():
                self.tunnel_target.transport.write_eof()
            return self.tunnel_eof()
        # A client may half-close after its last request and still wait for the answer (RFC 9112 9.6).
        return bool(self.exchanges)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.listener.stats.active_connections -= 1
        self.tracker.discard(self)
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        if self.tunnel_target is not None:
            self.tunnel_target.close()
        for exchange in self.exchanges:
            exchange.client_lost()
        self.exchanges.clear()

    def pause_writing(self) -> None:
        # Our client is slow: stop reading the response from the target.
        if self.tunnel_target is not None:
            if self.tunnel_target.transport is not None:
                self.tunnel_target.transport.pause_reading()
        elif self.exchanges:
            self.exchanges[0].client_pause_writing()

    def resume_writing(self) -> None:
        if self.tunnel_target is not None:
            if self.tunnel_target.transport is not None:
                self.tunnel_target.transport.resume_reading()
        elif self.exchanges:
            self.exchanges[0].client_resume_writing()

    # -- httptools request callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = self._in_head = True
        self._begun += 1
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._request_started_at = monotonic()

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_URL:
            raise errors.HttpError(414, "RequestLineTooLong")

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        self._header_bytes += size
        if size > MAX_HEADER or self._header_bytes > MAX_HEADERS_TOTAL:
            raise errors.HttpError(431, "HeaderTooLarge")
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_raw = None
        if not self.exchanges:
            self._latest_listener()
        parser = self.parser
        exchange = Exchange(
            self,
            parser.get_method().decode("ascii", "replace"),
            self._url,
            parser.get_http_version(),
            self._headers,
            parser.should_keep_alive(),
            parser.should_upgrade(),
        )
        if self._replay_reason:
            exchange.desync_reason = self._replay_reason
            self._replay_reason = ""
        if self._request_started_at:
            exchange.started_at = self._request_started_at
        self._request_started_at = 0.0
        self.exchanges.append(exchange)
        if len(self.exchanges) == 1:
            exchange.start()
        else:
            self.pause_reading(PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        self.exchanges[-1].request_body(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        if self.exchanges:
            self.exchanges[-1].request_end()

    # -- called by exchanges ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.sent_bytes += len(data)
        self.listener.stats.processed_bytes += len(data)
        if self._out is not None:
            self._out.append(data)
        elif self.transport is not None:
            self.transport.write(data)

    def cork(self) -> None:
        """Collect writes until uncork: a response head and body read together leave in one send()."""
        if self._out is None:
            self._out = []

    def uncork(self) -> None:
        out, self._out = self._out, None
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def exchange_done(self, exchange: Exchange) -> None:
        if not self.exchanges or self.exchanges[0] is not exchange:
            return
        self.exchanges.popleft()
        self.received_mark = self.received_bytes
        if not exchange.keep_client or self.closing or (self.draining and not self.exchanges):
            self.close()
            return
        if self.exchanges:
            self.exchanges[0].start()
            if len(self.exchanges) == 1:
                self.resume_reading(PAUSE_PIPELINE)
        else:
            self.resume_reading(PAUSE_PIPELINE)

    def count_non_compliant(self, reason: str, outcome: str) -> None:
        """A request ALB's desync mitigation calls non-compliant (lbd_non_compliant_requests_total)."""
        self.listener.stats.non_compliant_requests += 1
        log.info(
            "%s %s: non-compliant request from %s:%s: %s (%s)",
            self.listener.load_balancer.name,
            self.listener.name,
            *self.peer,
            reason,
            outcome,
        )

    def reject(self, error: errors.HttpError) -> None:
        """Answer a request lbd cannot forward with ALB's status code, then close (the framing is lost)."""
        self.listener.stats.elb_response(error.status)
        if self.listener.access_log is not None:
            self.listener.access_log.rejected(self, error, monotonic())
        if error.desync:
            self.listener.stats.non_compliant_requests += 1
        log.info(
            "%s %s: rejected request from %s:%s with %d (%s)",
            self.listener.load_balancer.name,
            self.listener.name,
            *self.peer,
            error.status,
            error.reason,
        )
        if self.exchanges and self.exchanges[0].response_started:
            self.abort()
            return
        for exchange in self.exchanges:
            exchange.client_lost()
        self.exchanges.clear()
        self.write(errors.error_response(error.status, close=True))
        self.close()

    def target_in_use(self) -> tuple[str, str] | None:
        if self.tunnel_target is not None:
            exchange = self.tunnel_target.exchange
        else:
            exchange = self.exchanges[0] if self.exchanges else None
        if exchange is None or exchange.target is None or exchange.target_group is None:
            return None
        if exchange.target_side is None and self.tunnel_target is None:
            return None  # answered, or not yet connected
        return exchange.target_group.name, exchange.target.key

    def drain(self) -> None:
        """Shutdown began: close now if idle, else after the responses in progress."""
        self.draining = True
        for exchange in self.exchanges:
            exchange.keep_client = False  # responses still to come say Connection: close (RFC 9112 9.6)
        if not self.exchanges and self.tunnel_target is None:
            self.close()

    def close(self) -> None:
        self.closing = True
        self.uncork()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        self._out = None
        if self.transport is not None:
            self.transport.abort()

    def pause_reading(self, reason: int) -> None:
        if not self._paused and self.transport is not None:
            self.transport.pause_reading()
        self._paused |= reason

    def resume_reading(self, reason: int) -> None:
        if not self._paused & reason:
            return
        self._paused &= ~reason
        if not self._paused and self.transport is not None and not self.closing:
            self.transport.resume_reading()

    def become_tunnel(self, target_side: HttpTargetSide) -> None:
        self.tunnel_target = target_side
        self.upgrading = False
        self._paused = 0
        if self.transport is not None:
            self.transport.resume_reading()

    def tunnel_data(self, data: bytes) -> None:
        self._moved += 1
        self.listener.stats.processed_bytes += len(data)
        if self.transport is not None:
            self.transport.write(data)

    def tunnel_eof(self) -> bool:
        """One direction of the tunnel ended; when both have, close both (half-close as on L4)."""
        self.tunnel_eofs += 1
        if self.tunnel_eofs < 2:
            return True
        if self.tunnel_target is not None:
            self.tunnel_target.close()
        self.close()
        return False

    # -- timeouts ----------------------------------------------------------------------------------------

    def _arm_timer(self) -> None:
        # Every idle_timeout/2, or at the header deadline of a pending head if that comes first.
        delay = timeouts.next_check(self.listener.idle_timeout, self._request_started_at, monotonic())
        self._idle_handle = self._loop.call_later(delay, self._check_timeouts)

    def _check_timeouts(self) -> None:
        """Idle keep-alive connections close quietly after the idle timeout (ALB: idle_timeout).

        A request whose headers have not all arrived by then gets 408 (R10): this is also the slowloris
        defence, since trickling bytes does not extend the header deadline.
        """
        self._idle_handle = None
        if self.transport is None:
            return
        now = monotonic()  # the same clock as the loop's (CLOCK_MONOTONIC), without its 1 ms rounding
        started = self._request_started_at
        if started and now - started >= self.listener.idle_timeout:
            self.reject(errors.HttpError(408, "RequestTimeout"))
            return
        waiting = self.exchanges[0].waiting_since if self.exchanges else 0.0
        if waiting and now - waiting >= self.listener.idle_timeout:
            self.exchanges[0].response_timeout()
        if self._moved != self._moved_at_check or started or (self.exchanges and self.tunnel_target is None):
            self._moved_at_check = self._moved
            self._quiet_checks = 0
        else:
            self._quiet_checks += 1
            if self._quiet_checks >= 2:
                self.close()
                return
        self._arm_timer()


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("internal error in a target connect", exc_info=task.exception())


class Exchange:
    """One request and its response.

    No __slots__: most fields keep their class-level default for the whole exchange, so creating one sets
    only what differs per request (an exchange is made per request, on the hot path).
    """

    # Request side
    head_block: bytes | None = None  # the raw field lines, when the fast path took the request
    chunked_request = False
    request_complete = False
    upgrade = False
    head_request = False
    early_tunnel_data = b""
    desync_reason = ""  # set when the head was normalised before parsing (ambiguous request)
    close_target = False
    set_cookie = b""
    _head = b""
    _connect_error_status = 502
    _tried: frozenset[Target] | set[Target] = frozenset()
    # Target side
    target: Target | None = None
    target_group: TargetGroupRuntime | None = None
    target_side: HttpTargetSide | None = None
    response_started = False
    response_done = False
    waiting_since = 0.0
    _response_chunked = False
    _response_close = False
    _target_until_close = False
    _switching = False
    # For metrics and the access log (ALB's fields): times on the monotonic clock, byte marks on the
    # connection's counters, what was done and why it failed.
    sent_at = 0.0
    response_at = 0.0
    target_status = 0
    local_status = 0
    action_priority = -1
    action = ""
    redirect_url = ""
    error_reason = ""
    host = b""
    trace_id = b""
    classification = ""
    classification_reason = ""

    def __init__(
        self,
        client: HttpClientSide,
        method: str,
        url: bytes,
        version: str,
        headers: Sequence[tuple[bytes, bytes]] | None,
        keep_alive: bool,
        upgrade: bool,
    ) -> None:
        self.client = client
        self.method = method
        self.url = url
        self.version = version
        self._headers = headers
        self.keep_alive = self.keep_client = keep_alive
        if upgrade:
            self.upgrade = True
        if method == "HEAD":
            self.head_request = True
        self._pending_body: list[bytes] | None = []
        self.started_at = monotonic()
        self.received_mark = client.received_mark
        self.sent_mark = client.sent_bytes

    @property
    def headers(self) -> Sequence[tuple[bytes, bytes]]:
        """The fields as (name, value); after the fast path, parsed from the raw block only when read."""
        if self._headers is None:
            self._headers = fastpath.FieldLines(self.head_block or b"")
        return self._headers

    # -- request side --------------------------------------------------------------------------------------

    def start(self) -> None:
        """Route the request and act on the rule's action."""
        listener = self.client.listener
        try:
            head = messages.prepare_request(self, listener)
        except errors.HttpError as error:
            self.client.reject(error)
            return
        self.chunked_request = head.chunked
        self.host = head.host
        self.trace_id = head.trace
        if head.close_after:
            # Desync mitigation (defensive mode): forward the normalised request, then close both sides.
            self.keep_client = False
            self.close_target = True
        if head.expect_continue:
            # ALB answers 100 Continue itself and strips Expect (R19), so the body starts flowing at once.
            self.client.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._dispatch(listener, head.data)

    def start_fast(self, block: bytes, host: bytes) -> None:
        """``start`` for a request the fast path took: a complete, bodiless, compliant head (fastpath.py)."""
        listener = self.client.listener
        self.head_block = block
        self.request_complete = True
        self.host = host
        head, self.trace_id = listener.dispatcher.fast_head(self, block, host)
        self._dispatch(listener, head)

    def _dispatch(self, listener: HttpListenerRuntime, head: bytes) -> None:
        decision = listener.route(self)
        self.action_priority = decision.priority
        self.action = decision.kind
        if decision.kind == "forward":
            self.target_group = decision.target_group
            self.set_cookie = decision.set_cookie
            self._head = head
            self._forward(head)
            return
        if decision.kind == "redirect":
            listener.stats.redirects += 1
            self.redirect_url = decision.redirect_url
        else:
            listener.stats.fixed_responses += 1
        self.local_status = int(decision.response[9:12])
        listener.stats.elb_response(self.local_status)  # HTTPCode_ELB_3XX_Count counts redirects
        self._respond_locally(decision.response, close=not self.keep_alive)

    def _forward(self, head: bytes) -> None:
        group = self.target_group
        if group is None:
            self._respond_error(503, "NoTargetGroupWithWeight")  # a weighted forward with all weights 0
            return
        target = group.pick(None, self._tried)
        if target is None:
            if self._tried:
                self._respond_error(self._connect_error_status, "TargetConnectionError")
            else:
                self._respond_error(503, "NoRegisteredTargets")
            return
        if self.target is None:
            self.client.listener.stats.requests += 1  # RequestCount: only requests a target was chosen for
        self.target = target
        conn = self.client.pool.acquire(target)
        if conn is not None:
            self._attach(conn, head)
            return
        self.client.pause_reading(PAUSE_CONNECTING)
        self.client._loop.create_task(self._connect(target, head)).add_done_callback(_report_crash)

    async def _connect(self, target: Target, head: bytes) -> None:
        group = self.target_group
        assert group is not None
        try:
            conn = await self.client.pool.connect(target, group.connect_timeout, group.tls, group.verify)
        except (OSError, TimeoutError) as exc:
            self.client.listener.stats.target_connection_errors += 1
            target.stats.connection_errors += 1
            group.request_failed(target)
            self._tried = {*self._tried, target}
            # ALB: 504 when the connection to the target timed out, 502 when it was refused (R10).
            self._connect_error_status = 504 if isinstance(exc, TimeoutError) else 502
            CONNECT_WARNINGS.warning(
                log,
                target.label,
                "%s %s: connect to target %s failed (%s); trying another target",
                self.client.listener.load_balancer.name,
                self.client.listener.name,
                target.label,
                "timeout" if isinstance(exc, TimeoutError) else exc,
            )
            if self.client.transport is None:
                return
            self._forward(head)
            return
        if self.client.transport is None or self.response_done:
            self.client.pool.release(conn)
            return
        self.client.resume_reading(PAUSE_CONNECTING)
        self._attach(conn, head)

    def _attach(self, conn: HttpTargetSide, head: bytes) -> None:
        self.target_side = conn
        conn.exchange = self
        assert self.target is not None
        self.target.outstanding += 1
        self.target.stats.requests += 1
        self.sent_at = monotonic()
        pending, self._pending_body = self._pending_body, None
        if pending or self.chunked_request:
            data = [head]
            if pending:
                data.extend(self._frame(chunk) for chunk in pending)
            if self.request_complete and self.chunked_request:
                data.append(b"0\r\n\r\n")
            head = b"".join(data)
        conn.write(head)
        if self.request_complete:
            self._arm_response_timer()

    def _arm_response_timer(self) -> None:
        # ALB: 504 when the target does not answer within the idle timeout (R10). Counted from when the
        # whole request is sent, so a long upload is not mistaken for a silent target; the connection's
        # periodic check enforces it, which costs no timer per request.
        self.waiting_since = self.client._loop.time()

    def _frame(self, chunk: bytes) -> bytes:
        if self.chunked_request:
            return b"%x\r\n%b\r\n" % (len(chunk), chunk)
        return chunk

    def request_body(self, chunk: bytes) -> None:
        if self.response_done and self.target_side is None:
            return  # answered locally: the body is read and dropped to keep the connection in sync
        if self.target_side is not None:
            self.target_side.write(self._frame(chunk))
        elif self._pending_body is not None:
            self._pending_body.append(chunk)

    def request_end(self) -> None:
        self.request_complete = True
        if self.target_side is not None:
            if self.chunked_request:
                self.target_side.write(b"0\r\n\r\n")  # trailers are dropped: ALB does not forward them
            if not self.response_started:
                self._arm_response_timer()
        if self.response_done:
            self._finish()

    # -- local responses -----------------------------------------------------------------------------------

    def _respond_locally(self, response: bytes, *, close: bool) -> None:
        self.response_started = True
        self.response_done = True
        if close:
            self.keep_client = False
        self.client.write(response)
        if self.request_complete or close:
            self._finish()

    def _respond_error(self, status: int, reason: str) -> None:
        self.client.listener.stats.elb_response(status)
        self.error_reason = reason
        self.local_status = status
        log.info(
            "%s %s: %s %s -> %d (%s)",
            self.client.listener.load_balancer.name,
            self.client.listener.name,
            self.method,
            self.url.decode("latin-1")[:200],
            status,
            reason,
        )
        close = not self.request_complete or not self.keep_alive
        self._respond_locally(errors.error_response(status, close=close), close=close)

    # -- response side (called by HttpTargetSide) ----------------------------------------------------------

    def response_headers_complete(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], target_keep_alive: bool
    ) -> None:
        self.waiting_since = 0.0
        if 100 <= status < 200 and status != 101:
            # Interim responses: 100 Continue was already answered by lbd; others (103) pass through.
            if status != 100:
                self.client.write(
                    messages.response_head(
                        status,
                        reason,
                        headers,
                        chunked=False,
                        close=False,
                        interim=True,
                    )
                )
            return
        self._response_begins(status)
        bodiless = self.head_request or status in (204, 304)
        framing = messages.response_framing(status, headers, bodiless, self.version)
        self._response_chunked = framing.chunked
        self._target_until_close = framing.target_close_delimited
        if self.upgrade and status != 101:
            # The target declined the upgrade; the client may already be sending data for the new protocol.
            self.keep_client = False
        if framing.close_delimited or not self.keep_alive:
            self.keep_client = False
        self._response_close = not target_keep_alive
        self.response_started = True
        self.client.write(
            messages.response_head(
                status,
                reason,
                framing.headers,
                chunked=framing.chunked,
                close=not self.keep_client,
                extra=self.set_cookie,
            )
        )
        if status == 101:
            # llhttp reports the 101 as a complete message, then raises HttpParserUpgrade, and
            # target_upgraded takes over: the exchange must stay open until then.
            self._switching = True
            return
        if self.head_request:
            # llhttp cannot be told the request was HEAD, so it would wait for the announced body.
            self.response_complete(keep_alive=not self._response_close)
            raise StopParsing

    def _response_begins(self, status: int) -> None:
        """A final response from the target: metrics, and passive health (outlier ejection)."""
        stats = self.client.listener.stats
        self.response_at = now = monotonic()
        self.target_status = status
        stats.target_responses[status // 100] += 1
        stats.target_response_time.observe(now - self.sent_at)
        group = self.target_group
        if group is not None and self.target is not None:
            if status >= 500:
                group.request_failed(self.target)
            elif group.failures:
                group.request_succeeded(self.target)

    def response_fast(self, status: int, head: bytes, body: bytes, target_keep_alive: bool) -> None:
        """A response the fast path took (fastpath.simple_response): a head with a Content-Length, hop-by-hop
        fields already removed, and the body bytes read so far."""
        self.waiting_since = 0.0
        self._response_begins(status)
        self._response_close = not target_keep_alive
        self.response_started = True
        if self.keep_client:
            end = b"%b\r\n" % self.set_cookie if self.set_cookie else b"\r\n"
        else:
            end = b"Connection: close\r\n%b\r\n" % self.set_cookie
        self.client.write(b"%b%b%b" % (head, end, body))

    def response_body(self, chunk: bytes) -> None:
        if self._response_chunked:
            self.client.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            self.client.write(chunk)

    def response_complete(self, keep_alive: bool) -> None:
        if self.response_done or self._switching:
            return
        if self._response_chunked:
            self.client.write(b"0\r\n\r\n")
        self.response_done = True
        conn = self.target_side
        self.target_side = None
        if conn is not None:
            assert self.target is not None
            self.target.outstanding -= 1
            if keep_alive and self.request_complete and not self._response_close and not self.close_target:
                self.client.pool.release(conn)
            else:
                conn.exchange = None
                conn.close()
        if not self.request_complete:
            # The target answered before the whole request arrived: the client connection cannot be
            # reused, since the rest of the body would be read as a new request.
            self.keep_client = False
            self._finish()
            return
        self._finish()

    def _finish(self) -> None:
        client = self.client
        stats = client.listener.stats
        now = monotonic()
        stats.request_duration.observe(now - self.started_at)
        if client.listener.access_log is not None:
            client.listener.access_log.request(self, now)
        client.exchange_done(self)

    def target_lost(self, conn: HttpTargetSide, exc: Exception | None) -> None:
        """The target closed or reset the connection before the response was complete."""
        if self.target is not None and self.target_side is conn:
            self.target.outstanding -= 1
        self.target_side = None
        if self.response_done:
            return
        self.waiting_since = 0.0
        if self.response_started and self._target_until_close and exc is None:
            self.response_complete(keep_alive=False)  # the close is how this body ends
            return
        if not self.response_started and conn.reused and self._pending_body is None and self._can_retry():
            # A pooled connection the target closed while idle (a keep-alive race): nothing was answered,
            # so send the request again on a fresh connection.
            self._pending_body = []
            self._forward(self._head)
            return
        if self.response_started:
            self._cut_short("TargetClosedConnection")
            return
        self._respond_error(502, "TargetClosedConnection")

    def _cut_short(self, reason: str) -> None:
        """The response broke off mid-body: logged like any other request, then the client connection is
        reset, so the client sees a broken response, not a complete-looking one."""
        self.error_reason = reason
        self.keep_client = False
        self._finish()
        self.client.abort()

    def _can_retry(self) -> bool:
        # Only requests without a body: a body already streamed to the dead connection is gone.
        return self.request_complete and not self.chunked_request and not messages.has_body(self.headers)

    def target_failed(self, reason: str, *, malformed: bool = False) -> None:
        conn = self.target_side
        if conn is not None:
            conn.exchange = None
            conn.abort()
            if self.target is not None:
                self.target.outstanding -= 1
        self.target_side = None
        log.warning("%s %s: %s", self.client.listener.load_balancer.name, self.client.listener.name, reason)
        if self.response_started:
            self._cut_short("MalformedResponse" if malformed else "TargetError")
        else:
            self._respond_error(502, "MalformedResponse" if malformed else "TargetError")

    def response_timeout(self) -> None:
        self.waiting_since = 0.0
        if self.response_started or self.response_done:
            return
        conn = self.target_side
        self.target_side = None
        if conn is not None:
            conn.exchange = None
            conn.abort()
            if self.target is not None:
                self.target.outstanding -= 1
        self._respond_error(504, "TargetResponseTimeout")

    def client_lost(self) -> None:
        self.waiting_since = 0.0
        conn = self.target_side
        self.target_side = None
        if conn is not None:
            if self.target is not None:
                self.target.outstanding -= 1
            conn.exchange = None
            conn.close()  # mid-response: the connection cannot be reused

    # -- flow control ------------------------------------------------------------------------------------

    def target_pause_writing(self) -> None:
        self.client.pause_reading(PAUSE_BACKPRESSURE)

    def target_resume_writing(self) -> None:
        self.client.resume_reading(PAUSE_BACKPRESSURE)

    def client_pause_writing(self) -> None:
        if self.target_side is not None and self.target_side.transport is not None:
            self.target_side.transport.pause_reading()

    def client_resume_writing(self) -> None:
        if self.target_side is not None and self.target_side.transport is not None:
            self.target_side.transport.resume_reading()

    # -- upgrades ----------------------------------------------------------------------------------------

    def target_upgraded(self, rest: bytes) -> None:
        """The target answered 101: splice the two connections from now on (R1: pinned to that target)."""
        conn = self.target_side
        assert conn is not None
        client = self.client
        conn.tunnel = client.tunnel_data
        client.become_tunnel(conn)
        if rest:
            client.write(rest)
        if self.early_tunnel_data:
            conn.write(self.early_tunnel_data)
            self.early_tunnel_data = b""

    def tunnel_target_eof(self) -> bool:
        transport = self.client.transport
        if transport is not None and transport.can_write_eof():
            transport.write_eof()
        return self.client.tunnel_eof()

    def tunnel_target_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, ConnectionResetError):
            self.client.abort()
        else:
            self.client.close()
