"""The viewer side of a distribution listener: HTTP/1.1 connections (an asyncio protocol, httptools).

Requests on a connection are served one at a time in order (pipelined ones wait, reading paused); a
cache hit is answered inside ``data_received``, without a task; a miss runs as a task that asks the
origin. Limits are CloudFront's ("Quotas on headers"; RequestAndResponseBehaviorCustomOrigin): a request
line and headers over 20,480 bytes or a URL over 8,192 bytes get 413 and the connection is closed;
bodies (of methods the behavior forwards uncached) are taken up to ``MAX_BODY``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

import httptools

from lbd.edge.access_log import log_line
from lbd.edge.handler import ERROR, HIT, EdgeRequest, ViewerRequest
from lbd.edge.hit import serve_hit
from lbd.http.flow import HIGH_WATER, LOW_WATER
from lbd.listener.alpn import tls_info

if TYPE_CHECKING:
    from lbd.cache.response import CachedResponse
    from lbd.edge.runtime import EdgeListenerRuntime
    from lbd.http.upstream import UpstreamPool
    from lbd.listener.tracker import ConnectionTracker
    from lbd.runtime import HttpListenerRuntime, ListenerSlot

log = logging.getLogger("lbd.edge")

MAX_HEAD = 20_480
MAX_URL = 8_192
MAX_BODY = 10 * 1024 * 1024
IDLE_TIMEOUT = 60.0  # viewer keep-alive idle timeout


class EdgeClientSide:
    def __init__(
        self,
        runtime: EdgeListenerRuntime,
        tracker: ConnectionTracker,
        pool: UpstreamPool,
        slot: ListenerSlot | None = None,
    ) -> None:
        self.runtime = runtime
        self.stats = runtime.stats  # the listener's connection counts (HTTP/2 streams adjust them)
        self.scheme = "https" if runtime.listener.protocol == "HTTPS" else "http"
        self.tracker = tracker
        self.pool = pool
        self.slot = slot
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer: tuple[str, int] = ("", 0)
        self.tls_info: tuple[str, str, str, str] | None = None  # cipher, protocol, SNI, certificate
        self.closing = False
        self.over_h2 = False
        self.write_paused = False
        self.queue: deque[ViewerRequest] = deque()
        self.current: EdgeRequest | None = None
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._head_size = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle: asyncio.TimerHandle | None = None
        self._active_at = self._loop.time()
        self._serving = False  # inside _next: a request answered there needs no call_soon
        self._reading_paused = False
        self._in_message = False  # the parser holds part of a request: the next read continues it
        self.received = 0

    # -- transport callbacks ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        # One stream of an HTTP/2 connection; h2front (and h2) are loaded only once a listener offers h2.
        h2front = sys.modules.get("lbd.http.h2front")
        self.over_h2 = h2front is not None and isinstance(transport, h2front.H2Stream)
        peer = self.transport.get_extra_info("peername")
        if peer:
            self.peer = (peer[0], peer[1])
        ssl_object = self.transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.tls_info = tls_info(cast("HttpListenerRuntime", self.runtime), ssl_object)
        self.runtime.stats.new_connections += 1
        self.runtime.stats.active_connections += 1
        self.tracker.add(self)
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.received += len(data)
        if not self._in_message and self.current is None and not self.queue and serve_hit(self, data):
            return  # one simple request for a fresh entry, answered from one read (hit.py)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "protocol upgrades are not served by distributions")
        except httptools.HttpParserError as exc:
            if self.transport is not None and not self.closing:
                self._reject(400, f"malformed request: {exc}")

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return
        self.transport = None
        self.closing = True
        self.runtime.stats.active_connections -= 1
        self.tracker.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        if self.current is not None and self.current.fetch is not None:
            self.current.fetch.cancel()
        for task in list(self._tasks):
            if not getattr(task, "background", False):
                task.cancel()  # the viewer is gone; a background refresh finishes on its own

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.current is not None and self.current.fetch is not None:
            self.current.fetch.pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        if (
            self.current is not None
            and self.current.fetch is not None
            and self.current.fetch.sink is not None
        ):
            self.current.fetch.resume()

    # -- httptools request callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = True
        self._url = b""
        self._headers = []
        self._head_size = 0
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if len(self._url) > MAX_URL:
            self._reject(413, "URL over 8,192 bytes")
            raise httptools.HttpParserError("URL too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD:
            self._reject(413, "request line and headers over 20,480 bytes")
            raise httptools.HttpParserError("head too large")
        self._headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        # RFC 9110 10.1.1: a client that sent Expect: 100-continue waits for this before its body.
        if self.transport is not None and any(
            name == "expect" and value.lower() == "100-continue" for name, value in self._headers
        ):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > MAX_BODY:
            self._reject(413, "request body over 10 MiB")
            raise httptools.HttpParserError("body too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        parser = self.parser
        url = self._url.decode("latin-1")
        path, _, query = url.partition("?")
        path = path.partition("#")[0]
        if not path.startswith("/"):
            self._reject(400, "the request target must be a path (origin-form)")
            return
        request = ViewerRequest(
            parser.get_method().decode("latin-1"),
            path,
            query,
            parser.get_http_version(),
            self._headers,
            b"".join(self._body),
            parser.should_keep_alive(),
        )
        self.queue.append(request)
        if self.current is None:
            self._next()

    # -- serving ---------------------------------------------------------------------------------------

    def _next(self) -> None:
        """Serve queued requests in order: hits at once, here; the first that needs the origin pauses
        reading (pipelined requests wait behind it) until its task answers."""
        self._serving = True
        try:
            while self.queue and self.current is None and not self.closing:
                work = EdgeRequest(self, self.queue.popleft())
                self.current = work
                try:
                    answered = work.serve()
                except Exception:
                    log.exception("%s: internal error serving a request", self.runtime.distribution.name)
                    self.abort()
                    return
                if not answered:
                    if self.transport is not None and not self._reading_paused:
                        self._reading_paused = True
                        self.transport.pause_reading()
                    self.spawn(self._run(work), foreground=True)
        finally:
            self._serving = False
        if self.current is None and self._reading_paused and self.transport is not None and not self.closing:
            self._reading_paused = False
            self.transport.resume_reading()

    async def _run(self, work: EdgeRequest) -> None:
        try:
            await work.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: internal error serving a request", self.runtime.distribution.name)
            if work.outcome.status == 0 and self.current is work:
                work._local(500, "internal error", ERROR)
            else:
                self.abort()

    def spawn(self, coroutine: Coroutine[Any, Any, None], foreground: bool = False) -> None:
        task = self._loop.create_task(coroutine)
        if not foreground:
            task.background = True  # type: ignore[attr-defined]  # a refresh outlives its connection
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def respond(self, work: EdgeRequest, data: bytes, more: bytes = b"") -> None:
        """A whole response (head and body) for ``work``; the connection moves on to the next request."""
        self.write(data)
        if more:
            self.write(more)
        self.finished(work)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def finished(self, work: EdgeRequest) -> None:
        if work is not self.current:
            return
        self.current = None
        self._account(work)
        if not work.request.keep_alive or self.closing:
            self.close()
            return
        self._active_at = self._loop.time()
        if not self._serving:
            self._loop.call_soon(self._next)  # answered by a task: go on with what is queued

    def _account(self, work: EdgeRequest) -> None:
        dist = work.dist
        outcome = work.outcome
        stats = dist.cache.stats
        stats.count(_metric_result(outcome.result, outcome.detailed), outcome.status)
        if outcome.from_cache:
            stats.bytes_from_cache += outcome.body_bytes
        stats.bytes_sent += outcome.body_bytes
        stats.bytes_received += len(work.request.body)
        if dist.access_log is not None:
            dist.access_log.write(log_line(self, work, time.time()))

    def log_hit(
        self,
        method: str,
        path: str,
        query: str,
        version: str,
        fields: dict[str, str],
        keep_alive: bool,
        entry: CachedResponse,
        sent: int,
        request_id: bytes,
    ) -> None:
        """The access-log line of a hit answered from one read (hit.py), as the full path writes it."""
        dist = self.runtime.distribution
        if dist.access_log is None:
            return
        request = ViewerRequest(method, path, query, version, list(fields.items()), b"", keep_alive)
        work = EdgeRequest(self, request)
        work.id = request_id.decode("ascii")
        outcome = work.outcome
        outcome.result = outcome.detailed = HIT
        outcome.status, outcome.body_bytes, outcome.from_cache = entry.status, sent, True
        outcome.headers = entry.headers
        dist.access_log.write(log_line(self, work, time.time()))

    def _reject(self, status: int, why: str) -> None:
        if self.closing or self.transport is None:
            return
        reason = {400: "Bad Request", 413: "Content Too Large"}.get(status, "Error")
        body = f"{status} {reason}: {why}\n".encode()
        self.transport.write(
            b"HTTP/1.1 %d %b\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n"
            b"X-Cache: Error from %b\r\n\r\n%b"
            % (status, reason.encode(), len(body), self.runtime.distribution.edge_name.encode(), body)
        )
        self.runtime.distribution.cache.stats.count("error", status)
        self.close()

    def _arm_idle(self) -> None:
        # One timer per connection, not per request: it checks how long the connection has been idle.
        self._idle = self._loop.call_later(IDLE_TIMEOUT / 4, self._idle_check)

    def _idle_check(self) -> None:
        self._idle = None
        idle = self.current is None and not self.queue
        if idle and self._loop.time() - self._active_at >= IDLE_TIMEOUT:
            self.close()
        elif self.transport is not None:
            self._arm_idle()

    # -- the tracker's interface -----------------------------------------------------------------------

    def drain(self) -> None:
        if self.current is None and not self.queue:
            self.close()
        else:
            self.closing = True  # the response in progress says Connection: close, then the end

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def target_in_use(self) -> tuple[str, str] | None:
        return None  # origin requests are connections of their own in the tracker


def _metric_result(result: str, detailed: str) -> str:
    if detailed in ("StaleIfError", "StaleWhileRevalidate"):
        return "stale"
    return {"Hit": "hit", "RefreshHit": "refresh_hit", "Miss": "miss"}.get(result, "error")
