"""One request and its response on an application listener: routing, the target connection, the response.

The client side (lbd/http/proxy.py) makes an Exchange per request, once its head is known, and keeps them
in order (pipelining); the target side (lbd/http/upstream.py) feeds it the response. The Exchange decides
what the request gets (a forward, a redirect, a fixed response or one of ALB's own errors), picks the target,
takes a pooled connection or opens one, re-frames bodies both ways, and counts what happened for metrics
and the access log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from time import monotonic
from typing import TYPE_CHECKING

from lbd.config.web_acl_reading import BODY_LIMIT
from lbd.http import errors, fastpath, messages
from lbd.http.errors import StopParsing
from lbd.http.flow import PAUSE_BACKPRESSURE, PAUSE_CONNECTING
from lbd.observe.ratelimit import CONNECT_WARNINGS
from lbd.routing.stickiness import head_sets, response_sets
from lbd.upstream.target import Target

if TYPE_CHECKING:
    from lbd.http.firewall import Firewall
    from lbd.http.proxy import HttpClientSide
    from lbd.http.upstream import HttpTargetSide
    from lbd.routing.hashkey import HashKey
    from lbd.routing.stickiness import TargetStickiness
    from lbd.runtime import HttpListenerRuntime, TargetGroupRuntime

log = logging.getLogger("lbd.http")

_NO_TARGETS: frozenset[Target] = frozenset()


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("internal error in a target connect", exc_info=task.exception())


class Exchange:
    """One request and its response."""

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
        # Request side
        self.upgrade = upgrade
        self.head_request = method == "HEAD"
        self.head_block: bytes | None = None  # the raw field lines, when the fast path took the request
        self.chunked_request = False
        self.request_complete = False
        self.early_tunnel_data = b""
        self.desync_reason = ""  # set when the head was normalised before parsing (ambiguous request)
        self.close_target = False
        self.set_cookie = b""
        # The target group's target stickiness (or consistent-hash key), when it has one.
        self.sticky: TargetStickiness | HashKey | None = None
        self.sticky_cookie = b""  # its Set-Cookie lines for the chosen target
        self._head = b""
        self._connect_error_status = 502
        self._tried: frozenset[Target] | set[Target] = _NO_TARGETS
        self._pending_body: list[bytes] | None = []
        # Target side
        self.target: Target | None = None
        self.target_group: TargetGroupRuntime | None = None
        self.target_side: HttpTargetSide | None = None
        self.surge_target: Target | None = None  # the instance whose surge-queue slot it holds
        self.response_started = False
        self.response_done = False
        self.waiting_since = 0.0
        self._response_chunked = False
        self._response_close = False
        self._target_until_close = False
        self._switching = False
        # For metrics and the access log (ALB's fields): times on the monotonic clock, byte marks on the
        # connection's counters, what was done and why it failed.
        self.started_at = monotonic()
        self.received_mark = client.received_mark
        self.sent_mark = client.sent_bytes
        self.sent_at = 0.0
        self.response_at = 0.0
        self.target_status = 0
        self.local_status = 0
        self.action_priority = -1
        self.action = ""
        self.redirect_url = ""
        self.error_reason = ""
        self.host = b""
        self.trace_id = b""
        self.classification = ""
        self.classification_reason = ""
        self.waf_rule = ""  # the web ACL's deciding rule (or Default_Action), for the access log
        self.waf_action = ""  # allow | block
        self.waf_waiting = False  # holding the request until the body's first bytes are in (firewall.py)
        self.waf_buffered = 0  # body bytes held meanwhile

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
        waf = self.client.dispatcher.waf
        if waf is not None and waf.wants_body(self):
            # A rule of the web ACL inspects the body: decide once its first 8 KB (or all of it) are in;
            # until then the body waits in _pending_body, as it does while a target connects.
            self.waf_waiting = True
            self._head = head.data
            return
        self._dispatch(listener, head.data)

    def start_fast(self, block: bytes, host: bytes, host_at: int) -> None:
        """``start`` for a request the fast path took: a complete, bodiless, compliant head (fastpath.py)."""
        listener = self.client.listener
        self.head_block = block
        self.request_complete = True
        self.host = host
        head, self.trace_id = self.client.dispatcher.fast_head(self, block, host, host_at)
        self._dispatch(listener, head)

    def _dispatch(self, listener: HttpListenerRuntime, head: bytes) -> None:
        dispatcher = self.client.dispatcher
        waf = dispatcher.waf
        if waf is not None:
            head = self._inspect(waf, listener, head)
            if not head:
                return
        decision = dispatcher.route(self)
        self.action_priority = decision.priority
        self.action = decision.kind if waf is None else "waf," + decision.kind  # ALB: "waf,forward"
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
        self._respond_locally(decision.response, not self.keep_alive)

    def _inspect(self, waf: Firewall, listener: HttpListenerRuntime, head: bytes) -> bytes:
        """The web ACL's verdict, before listener rules: b"" when it blocked the request (answered here),
        else the head for the target, with the x-amzn-waf-* fields the ACL inserts."""
        pending = self._pending_body
        verdict = waf.check(self, b"".join(pending) if pending else b"")
        self.waf_rule = verdict.rule
        self.waf_action = verdict.action
        if verdict.action == "block":
            self.action = "waf"
            close = not self.keep_alive
            page = waf.block_page(verdict, close)
            self.local_status = int(page[9:12])
            listener.stats.elb_response(self.local_status)
            self._respond_locally(page, close)
            return b""
        if verdict.headers:
            head = head[:-2] + verdict.headers + b"\r\n"  # before the blank line that ends the head
        return head

    def _waf_resume(self) -> None:
        """The body's first bytes are in: decide, then go on as ``start`` would have."""
        self.waf_waiting = False
        self._dispatch(self.client.listener, self._head)

    def _forward(self, head: bytes) -> None:
        group = self.target_group
        if group is None:
            self._respond_error(503, "NoTargetGroupWithWeight")  # a weighted forward with all weights 0
            return
        admit = group.admit
        if admit is not None and not admit(self):
            return  # an HTTP2 or GRPC group refused the request (464, lbd/http/grpc.py)
        surge = group.surge
        if surge is not None:
            self._forward_limited(head)  # a classic listener with max_connections_per_instance
            return
        sticky = group.sticky
        if sticky is None:
            target = group.pick(None, self._tried)
        else:
            # Target stickiness (lbd/routing/stickiness.py): a cookie may name the target before balancing.
            self.sticky = sticky
            target, self.sticky_cookie = sticky.pick(self, group, self._tried)
        self._forward_to(target, head)

    def _forward_limited(self, head: bytes) -> None:
        """``_forward`` under a surge queue (lbd/surge.py): only instances below their limit are picked;
        when all are at it the request waits its turn, or is refused with 503 when the queue is full."""
        group = self.target_group
        assert group is not None and group.surge is not None
        surge = group.surge
        exclude = surge.admit(self, self._tried)
        target: Target | None = None
        if exclude is not None:
            sticky = group.sticky
            if sticky is None:
                target = group.pick(None, exclude)
            else:
                self.sticky = sticky
                target, self.sticky_cookie = sticky.pick(self, group, exclude)
        if target is None and (exclude is None or surge.must_wait(self._tried)):
            if surge.wait(self):
                self.client.pause_reading(PAUSE_CONNECTING)  # a body waits in the client's socket
            else:
                self._respond_error(503, "SurgeQueueFull")  # SpilloverCount
            return
        if target is not None:
            surge.take(self, target)
        self._forward_to(target, head)

    def surge_resume(self) -> None:
        """Out of the surge queue: a slot freed up."""
        if self.client.transport is None or self.response_done:
            return
        self.client.resume_reading(PAUSE_CONNECTING)
        self._forward_limited(self._head)

    def _forward_to(self, target: Target | None, head: bytes) -> None:
        if target is None:
            if self._tried:
                self._respond_error(self._connect_error_status, "TargetConnectionError")
            else:
                self._respond_error(503, "NoRegisteredTargets")
            return
        if self.target is None:
            self.client.stats.requests += 1  # RequestCount: only requests a target was chosen for
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
            conn = await self.client.pool.connect(
                target, group.connect_timeout, group.tls, group.verify, group.http2
            )
        except (OSError, TimeoutError) as exc:
            self.client.stats.target_connection_errors += 1
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
            # Reading resumes before the next try, in this same callback (no read can happen between):
            # another connect pauses it again, while a local error answer must leave the connection able
            # to read the client's next request or its FIN (else it hung in CLOSE_WAIT, counted active).
            self.client.resume_reading(PAUSE_CONNECTING)
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
                for chunk in pending:  # a loop, not a generator: closures cannot live in compiled methods
                    data.append(self._frame(chunk))
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
        if self.waf_waiting:
            pending = self._pending_body
            assert pending is not None
            pending.append(chunk)
            self.waf_buffered += len(chunk)
            if self.waf_buffered >= BODY_LIMIT:
                self._waf_resume()
            return
        if self.response_done and self.target_side is None:
            return  # answered locally: the body is read and dropped to keep the connection in sync
        if self.target_side is not None:
            self.target_side.write(self._frame(chunk))
        elif self._pending_body is not None:
            self._pending_body.append(chunk)

    def request_end(self) -> None:
        self.request_complete = True
        if self.waf_waiting:
            self._waf_resume()  # its dispatch sees the request complete: it sends or finishes it
            return
        if self.target_side is not None:
            if self.chunked_request:
                self.target_side.write(b"0\r\n\r\n")  # trailers are dropped: ALB does not forward them
            if not self.response_started:
                self._arm_response_timer()
        if self.response_done:
            self._finish()

    # -- local responses -----------------------------------------------------------------------------------

    def _respond_locally(self, response: bytes, close: bool) -> None:
        self.response_started = True
        self.response_done = True
        if close:
            self.keep_client = False
        self.client.write(response)
        if self.request_complete or close:
            self._finish()

    def _respond_error(self, status: int, reason: str) -> None:
        self.client.stats.elb_response(status)
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
        self._respond_locally(errors.error_response(status, close=close), close)

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
                extra=self.set_cookie if self.sticky is None else self._sticky_response(b"", headers),
            )
        )
        if status == 101:
            # llhttp reports the 101 as a complete message, then raises HttpParserUpgrade, and
            # target_upgraded takes over: the exchange must stay open until then.
            self._switching = True
            return
        if self.head_request:
            # llhttp cannot be told the request was HEAD, so it would wait for the announced body.
            self.response_complete(not self._response_close)
            raise StopParsing

    def _response_begins(self, status: int) -> None:
        """A final response from the target: metrics, and passive health (outlier ejection)."""
        stats = self.client.stats
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
        cookies = self.set_cookie if self.sticky is None else self._sticky_response(head, None)
        if self.keep_client:
            end = b"%b\r\n" % cookies if cookies else b"\r\n"
        else:
            end = b"Connection: close\r\n%b\r\n" % cookies
        self.client.write(b"%b%b%b" % (head, end, body))

    def _sticky_response(self, head: bytes, headers: list[tuple[bytes, bytes]] | None) -> bytes:
        """The Set-Cookie lines of a response under target stickiness: the group's, the target's, and those
        the target's own Set-Cookie (an application cookie) calls for."""
        sticky = self.sticky
        assert sticky is not None
        cookies = self.set_cookie + self.sticky_cookie
        if sticky.needs_response and self.target is not None:
            app = sticky.app_cookie_name
            sets = response_sets(headers, app) if headers is not None else head_sets(head, app)
            cookies += sticky.response_cookies(self, self.target, sets)
        return cookies

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
        if self.surge_target is not None:
            self._surge_release()
        client = self.client
        stats = client.stats
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
            self.response_complete(False)  # the close is how this body ends
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

    def _surge_release(self) -> None:
        group = self.target_group
        if group is not None and group.surge is not None:
            group.surge.release(self)

    def client_lost(self) -> None:
        self.waiting_since = 0.0
        if self.target_group is not None and self.target_group.surge is not None:
            self._surge_release()  # its slot, or its place in the queue
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
