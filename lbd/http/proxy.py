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
from time import monotonic
from typing import TYPE_CHECKING, cast

import httptools

from lbd.http import desync, errors, fastpath, timeouts
from lbd.http.exchange import Exchange
from lbd.http.flow import HIGH_WATER, LOW_WATER, PAUSE_PIPELINE
from lbd.http.upstream import HttpTargetSide, UpstreamPool
from lbd.listener.tracker import ConnectionTracker

if TYPE_CHECKING:
    from lbd.runtime import HttpListenerRuntime, ListenerSlot

log = logging.getLogger("lbd.http")

# ALB limits (R6): request line 16K, one header 16K, all request headers 64K.
MAX_URL = 16 * 1024
MAX_HEADER = 16 * 1024
MAX_HEADERS_TOTAL = 64 * 1024


class HttpClientSide:
    """One client connection on an application listener (an asyncio protocol; an extension type compiled)."""

    def __init__(
        self,
        listener: HttpListenerRuntime,
        tracker: ConnectionTracker,
        pool: UpstreamPool,
        slot: ListenerSlot | None = None,
    ) -> None:
        self.listener = listener
        self.stats = listener.stats  # the listener's counters, typed when compiled (stats.pxd)
        self.dispatcher = listener.dispatcher
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
        # An idle keep-alive connection holds as little as it can (its memory is the node's, times the
        # connections): llhttp is made for the first request the fast path passes on, and the exchanges
        # are a list (0 or 1 of them, but for pipelining) where a deque would take a 64-slot block.
        self.parser: httptools.HttpRequestParser | None = None
        self.exchanges: list[Exchange] = []
        self.peer: tuple[str, int] = ("", 0)
        self.closing = False
        self.draining = False
        self.tunnel_target: HttpTargetSide | None = None
        self.tunnel_eofs = 0
        self.upgrading = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] | None = None  # on_message_begin makes one
        self._header_bytes = 0
        self._paused = 0
        self._out: list[bytes] | None = None
        self._loop = pool._loop  # the worker's; asyncio.get_running_loop() makes a getpid() system call
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
        stats = self.stats
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
        self.stats.processed_bytes += len(data)
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
        self._latest_listener()
        parsed = fastpath.simple_request(data, self.dispatcher.fast_pattern)
        if parsed is None:
            return False
        method, url, version, block, host, host_at, keep_alive = parsed
        exchange = Exchange(self, method, url, version, None, keep_alive, False)
        self.exchanges.append(exchange)
        exchange.start_fast(block, host, host_at)
        return True

    def _latest_listener(self) -> HttpListenerRuntime:
        """Between requests, move to the listener's newest generation (health, draining, rules)."""
        if self.slot is not None:
            latest = self.slot.runtime
            if latest is not self.listener and latest.kind == "http":
                self.listener = cast("HttpListenerRuntime", latest)
                self.stats = self.listener.stats
                self.dispatcher = self.listener.dispatcher
        return self.listener

    def _feed(self, data: bytes, *, replay: bool) -> None:
        head_raw = self._head_raw
        fresh = not self._in_message
        self._begun = 0
        parser = self.parser
        if parser is None:
            parser = self.parser = self._new_parser()
        try:
            parser.feed_data(data)
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
        self.stats.active_connections -= 1
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
        assert self._headers is not None  # on_message_begin came first
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_raw = None
        if not self.exchanges:
            self._latest_listener()
        parser = self.parser
        assert parser is not None  # it is what called back
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
        if self.exchanges:  # none: answered locally before its body (a 464, a 503), and closing
            self.exchanges[-1].request_body(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        if self.exchanges:
            self.exchanges[-1].request_end()

    # -- called by exchanges ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.sent_bytes += len(data)
        self.stats.processed_bytes += len(data)
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
        del self.exchanges[0]
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
        self.stats.non_compliant_requests += 1
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
        self.stats.elb_response(error.status)
        if self.listener.access_log is not None:
            self.listener.access_log.rejected(self, error, monotonic())
        if error.desync:
            self.stats.non_compliant_requests += 1
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
        self.stats.processed_bytes += len(data)
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
