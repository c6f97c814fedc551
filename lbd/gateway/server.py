"""The client side of an API listener: HTTP/1.1 (RFC 9112) parsed by httptools, one request at a time.

A thin Protocol: it collects each request (head and whole body: integrations and authorizers see
whole payloads, and API Gateway's 10 MB limit bounds them), hands it to the API's pipeline
(lbd/gateway/pipeline.py) and writes the answer. Pipelined requests wait their turn; reading pauses
while more than a few are queued. What cannot be served ends with a gateway response and a closed
connection, never a hang: a request that does not parse (400), a body or head over the limits (413,
431), a connection idle for the API's idle timeout (closed), a body that never completes (the same
timeout).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import deque
from time import monotonic
from typing import TYPE_CHECKING, Any, cast

import httptools

from lbd.gateway.edge_viewer import edge_viewer
from lbd.gateway.pipeline import MAX_PAYLOAD, Outcome
from lbd.gateway.request import GatewayRequest
from lbd.gateway.responses import Answer, render_head
from lbd.http import fastpath

if TYPE_CHECKING:
    from lbd.gateway.listener import ApiListenerRuntime
    from lbd.listener.tracker import ConnectionTracker

log = logging.getLogger("lbd.gateway")

MAX_HEAD = 10_240 + 8_192  # API Gateway: request line and headers 10,240 bytes, URL up to 8,192
MAX_QUEUED = 8  # pipelined requests held before reading pauses
LINGER = 2.0  # seconds a refused connection keeps reading before it closes


class GatewayClientSide:
    """An asyncio protocol (an extension type when compiled, server.pxd: not an asyncio.Protocol
    subclass, so it has Protocol's methods itself)."""

    def __init__(self, runtime: ApiListenerRuntime, tracker: ConnectionTracker) -> None:
        self.runtime = runtime
        self.pipeline = runtime.pipeline  # the Snapshot's, for the connection's life (as the runtime is)
        self.tracker = tracker
        self.stats = runtime.stats
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = ("", 0)
        self.queue: deque[tuple[GatewayRequest, bool, float]] = deque()
        self.task: asyncio.Task[None] | None = None  # a request whose pipeline waits on an engine
        self.current: tuple[GatewayRequest, bool, float, Outcome] | None = None  # the request in flight
        self._inline = False  # inside pipeline.serve: an answer there is not followed by _serve again
        self.timer: asyncio.TimerHandle | None = None
        self.idle_since = 0.0
        self.closing = False
        self.paused = False
        # the request being parsed
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._head_size = 0
        self._started = 0.0
        self._refused = False
        self._partial = False  # the parser is inside a request
        self.scheme = "https" if runtime.tls is not None else "http"
        self.port = str(runtime.key.port)
        self.edge = runtime.api.endpoint_type == "EDGE"  # called through a distribution (edge_viewer.py)
        self._forwarded = b""  # _forwarded_lines, made for _forwarded_peer
        self._forwarded_peer: tuple[str, int] | None = None

    # -- transport callbacks -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()  # once: each call of it is a getpid() system call
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = (str(peer[0]), int(peer[1]))
        self.tracker.add(self)
        self.stats.new_connections += 1
        self.stats.active_connections += 1
        self._arm()

    def pause_writing(self) -> None:
        return None  # answers are written whole; the transport buffers them

    def resume_writing(self) -> None:
        return None

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a refusal: what the client still sends is read and dropped
        if self.closing:
            return
        self.stats.processed_bytes += len(data)
        if not self._partial:
            # The common case, one whole bodiless request in one read, by the proxy's compiled scan
            # (lbd/http/fastpath.py) instead of a parser callback per field.
            parsed = fastpath.simple_request(data, fastpath.REQUEST_HEAD)
            if parsed is not None:
                method, url, _, block, _, host_at, keep_alive = parsed
                self._started = monotonic()
                headers = block_fields(block)
                raw = without_field(block, host_at)
                self._enqueue(method, url.decode("latin-1"), headers, b"", keep_alive, raw)
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.closing = True  # WebSocket APIs are not served: answer what was asked, then close
            self._stop_reading()
        except httptools.HttpParserCallbackError:
            if not self._refused:
                raise
        except httptools.HttpParserError:
            self._refuse("BAD_REQUEST", 400)

    def eof_received(self) -> bool:
        if self._refused:
            return False
        self.closing = True
        return self.current is not None or bool(self.queue)  # answer what is queued, then close

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.tracker.discard(self)
        self.stats.active_connections -= 1
        if self.timer is not None:
            self.timer.cancel()
        self.current = None
        self.queue.clear()
        if self.task is not None:
            self.task.cancel()
            self.task = None

    # -- httptools callbacks ------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._partial = True
        self._url = b""
        self._headers = {}
        self._body = []
        self._size = 0
        self._head_size = 0
        self._started = monotonic()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_grew(len(url))

    def _head_grew(self, size: int) -> None:
        self._head_size += size
        if self._head_size > MAX_HEAD:
            self._refuse("BAD_REQUEST", 431)  # RFC 6585 5: Request Header Fields Too Large
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_grew(len(name) + len(value))
        _add_field(self._headers, name.decode("latin-1").lower(), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_PAYLOAD:
            self._refuse("REQUEST_TOO_LARGE")
            raise _Stop

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_PAYLOAD:
            self._refuse("REQUEST_TOO_LARGE")
            raise _Stop
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._partial = False
        self._enqueue(
            self.parser.get_method().decode(),
            self._url.decode("latin-1"),
            self._headers,
            b"".join(self._body),
            self.parser.should_keep_alive(),
            b"",
        )

    def _enqueue(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes,
        keep_alive: bool,
        raw: bytes,
    ) -> None:
        path, _, query = url.partition("?")
        # API Gateway adds these for the integration (and a REQUEST authorizer sees them).
        source, scheme, port = self.peer[0], self.scheme, self.port
        if self.edge:
            source, scheme, port = edge_viewer(headers, source, scheme, port)
        forwarded = headers.get("x-forwarded-for")
        headers["x-forwarded-for"] = f"{forwarded}, {self.peer[0]}" if forwarded else self.peer[0]
        headers["x-forwarded-proto"] = scheme
        headers["x-forwarded-port"] = port
        if self.edge:
            raw = b""  # the viewer's X-Forwarded-* are not the connection's: the fields from the dict
        pipeline = self.pipeline
        request = GatewayRequest(
            method,
            path,
            query,
            headers,
            body,
            source,
            pipeline.name,
            pipeline.stage,
            "",
            None,  # path_parameters: set by the route's match
            _request_id(),
            time.time(),  # received_at
            raw,  # raw_fields
            self._forwarded_lines() if raw else b"",  # raw_forwarded (positional: no keyword dict)
        )
        self.queue.append((request, keep_alive, self._started))
        if len(self.queue) >= MAX_QUEUED:
            self._stop_reading()
        if self.current is None:
            self._serve()

    def _forwarded_lines(self) -> bytes:
        """What _enqueue adds to a request that came without X-Forwarded-* fields, as field lines: the
        same for every request of the connection's client."""
        if self._forwarded_peer is not self.peer:
            self._forwarded_peer = self.peer
            forwarded = f"x-forwarded-for: {self.peer[0]}\r\nx-forwarded-proto: {self.scheme}\r\n"
            self._forwarded = f"{forwarded}x-forwarded-port: {self.port}\r\n".encode("latin-1", "replace")
        return self._forwarded

    # -- serving ----------------------------------------------------------------------------------------

    def _serve(self) -> None:
        """Answer queued requests in order. The pipeline answers in line or later (``_answered``); no task
        or coroutine per request unless an engine must wait (lbd/gateway/pipeline.py)."""
        while self.queue and self.transport is not None and self.current is None:
            request, keep_alive, started = self.queue.popleft()
            outcome = Outcome()
            self.current = (request, keep_alive, started, outcome)
            self._inline = True
            try:
                self.task = self.pipeline.serve(request, outcome, self._answered)
            except Exception:
                log.exception(
                    "api %s: internal error on %s %s",
                    self.pipeline.name,
                    request.method,
                    request.path,
                )
                if self.current is not None and self.current[0] is request:
                    outcome.response_type = "API_CONFIGURATION_ERROR"
                    self._answered(self.pipeline.refuse("API_CONFIGURATION_ERROR"))
            finally:
                self._inline = False
        if self.current is None:
            self._served()

    def _answered(self, answer: Answer) -> None:
        current = self.current
        if current is None:
            return  # the connection went away meanwhile
        self.current = None
        self.task = None
        request, keep_alive, started, outcome = current
        if not (keep_alive and not self.closing):
            self.closing = True
        self._write(answer, request.method == "HEAD", request.request_id)
        self.runtime.record(request, answer, outcome, monotonic() - started)
        if self.paused and len(self.queue) < MAX_QUEUED and not self.closing:
            self.paused = False
            if self.transport is not None:
                self.transport.resume_reading()
        if not self._inline:
            self._serve()  # answered later, by a callback: go on with what is queued

    def _served(self) -> None:
        """Nothing in flight and nothing queued: close if asked to, else wait for the next request."""
        if self.transport is not None and not self.queue:
            if self.closing:
                self.transport.close()
            else:
                self._arm()

    def _write(self, answer: Answer, head: bool, request_id: str) -> None:
        transport = self.transport
        if transport is None:
            return
        body = answer.body
        start = answer.head or render_head(answer.status, answer.headers, len(body))
        close = "connection: close\r\n" if self.closing else ""
        tail = f"x-amzn-requestid: {request_id}\r\n{close}\r\n".encode("latin-1", "replace")
        out = start + tail if head else b"".join([start, tail, body])  # one copy of the body, not two
        transport.write(out)
        self.stats.processed_bytes += len(out)

    def _refuse(self, kind: str, status: int | None = None) -> None:
        """A request the connection cannot carry on from: answer with the gateway response, then close."""
        self._refused = True
        self.closing = True
        answer = self.pipeline.refuse(kind, status)
        if self.current is not None:
            self._stop_reading()
            return  # an answer is being written; the connection closes after it
        self._write(answer, False, _request_id())
        self.runtime.record_refusal(answer, self.peer[0])
        transport = self.transport
        if transport is None:
            return
        # Linger: half-close, then read and drop what the client is still sending for a moment, so that
        # closing with unread data does not reset the connection before the client reads the answer.
        if transport.can_write_eof():
            transport.write_eof()
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(LINGER, transport.close)

    def _stop_reading(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def _arm(self) -> None:
        # One timer per connection, moved lazily: an answer only notes the time, and the timer, when it
        # fires early, sleeps again for the rest (no cancel and re-create per request).
        loop = self._loop
        self.idle_since = loop.time()
        if self.timer is None:
            self.timer = loop.call_at(self.idle_since + self.runtime.idle_timeout, self._idle)

    def _idle(self) -> None:
        self.timer = None
        if self.transport is None or self._refused:
            return
        loop = self._loop
        due = self.idle_since + self.runtime.idle_timeout
        if self.current is not None:  # busy: the idle time counts from the answer
            self.timer = loop.call_later(self.runtime.idle_timeout, self._idle)
            return
        if loop.time() < due:
            self.timer = loop.call_at(due, self._idle)
            return
        self.stats.idle_timeouts += 1
        self.transport.close()

    # -- the tracker's interface --------------------------------------------------------------------------

    def drain(self) -> None:
        self.closing = True
        if self.current is None and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def target_in_use(self) -> tuple[str, str] | None:
        return None

    def get_extra_info(self, name: str, default: Any = None) -> Any:  # pragma: no cover - for shims
        return self.transport.get_extra_info(name, default) if self.transport is not None else default


def block_fields(block: bytes) -> dict[str, str]:
    """The fields of a head block ``fastpath.simple_request`` accepted (valid, CRLF-ended field lines), by
    lower-case name. Each name and value is decoded straight from its bytes (no decoded copy of the
    block, no split lines, no partition or strip copies: the JWT is a long value), the CR taken with the
    whitespace around the value (RFC 9110 5.5); a line's end is found with memchr (``find``)."""
    headers: dict[str, str] = {}
    size = len(block)
    at = 0
    while at < size:
        end = block.find(b"\n", at)
        if end < 0:
            end = size
        if end > at:
            # The name: up to the colon (the whole line when there is none, as partition gives it), lower
            # cased only when it has a byte lower() would change.
            colon = at
            upper = False
            while colon < end and block[colon] != 58:  # ":"
                c = block[colon]
                if (65 <= c <= 90) or c >= 128:
                    upper = True
                colon += 1
            name = block[at:colon].decode("latin-1")
            if upper:
                name = name.lower()
            start = colon + 1 if colon < end else end
            stop = end
            while start < stop and block[start] in b" \t\r":
                start += 1
            while stop > start and block[stop - 1] in b" \t\r":
                stop -= 1
            value = block[start:stop].decode("latin-1")
            if name in headers:
                _add_field(headers, name, value)
            else:
                headers[name] = value
        at = end + 1
    return headers


def without_field(block: bytes, at: int) -> bytes:
    """``block`` without the field line holding offset ``at`` (the Host line, by its value's offset)."""
    start = at
    while start > 0 and block[start - 1] != 10:  # back to the line's start: a few bytes ("Host: ")
        start -= 1
    end = block.find(b"\n", at) + 1
    if start == 0:
        return block[end:]  # the first line, as clients send Host
    return block[:start] + block[end:]


def _add_field(headers: dict[str, str], name: str, value: str) -> None:
    """Repeated fields joined with "," (RFC 9110 5.3), cookies with "; " (RFC 6265 5.4)."""
    previous = headers.get(name)
    if previous is None:
        headers[name] = value
    else:
        headers[name] = f"{previous}; {value}" if name == "cookie" else f"{previous},{value}"


class _Stop(Exception):
    """Raised in a parser callback to stop parsing a request that was refused."""


_ID_RANDOM = os.urandom(8).hex()
_ID_PREFIX = f"{_ID_RANDOM[:8]}-{_ID_RANDOM[8:12]}-{_ID_RANDOM[12:16]}-"
_ID_PREFIX_LOW = _ID_PREFIX + "0000-"
_ID_WRAP = 1 << 48
_ids = itertools.count(1)


def _request_id() -> str:
    """A UUID-shaped request id ($context.requestId): a random prefix per worker process and a counter,
    unique without a system call per request."""
    n = next(_ids)
    if n < _ID_WRAP:  # always, in practice: the last group's twelve digits, zero-padded by the set bit
        return _ID_PREFIX_LOW + hex(_ID_WRAP | n)[3:]
    return f"{_ID_PREFIX}{n >> 48 & 0xFFFF:04x}-{n & 0xFFFFFFFFFFFF:012x}"
