"""Requests to origins, through the load balancer's own HTTP/1.1 data path.

An origin is a target group, so a request to it is what a load balancer listener forwarding to that
group would send: the same balancer pick, health and outlier state, pooled keep-alive connections, TLS
to the targets, retries of a failed connect on another target, and ELB's 502/503/504 when nothing
answers. ``OriginFetch`` is the bridge HTTP/2 uses too (lbd/http/h2front.py): it is the transport of an
``HttpClientSide`` on a listener runtime whose only action forwards to the origin's group; the request
is written into it as HTTP/1.1 and the response it writes back is parsed (httptools). A response lbd
made itself (no target answered) is told apart from one an origin sent by the exchange's status fields,
so an origin group can fail over on connection errors.

Flow control: the response is buffered up to a bound (what the cache may store); past it the caller
switches to streaming, and ``pause``/``resume`` stop and restart reading from the origin, as the viewer
drains its side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import httptools

from lbd.http.proxy import HttpClientSide

if TYPE_CHECKING:
    from lbd.http.upstream import UpstreamPool
    from lbd.listener.tracker import ConnectionTracker
    from lbd.runtime import HttpListenerRuntime


class OriginFetch:
    """One request to an origin and its response."""

    def __init__(
        self,
        listener: HttpListenerRuntime,
        tracker: ConnectionTracker,
        pool: UpstreamPool,
        peer: tuple[str, int],
        limit: int,
        head_request: bool = False,
    ) -> None:
        self.peer = peer
        self.head_request = head_request
        self.limit = limit  # bytes buffered before the caller must stream
        self.client: HttpClientSide | None = HttpClientSide(listener, tracker, pool, None)
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.local = False  # the response is lbd's own (no origin answered): a connection error
        self.target = ""
        self.ended = False
        self.failed = ""
        self.sink: Callable[[bytes], None] | None = None
        self._loop = asyncio.get_running_loop()
        self._head: asyncio.Future[None] = self._loop.create_future()
        self._event: asyncio.Future[None] | None = None
        self._paused = False

    # -- driving it -------------------------------------------------------------------------------------

    def start(self, request: bytes) -> None:
        client = self.client
        assert client is not None
        client.connection_made(cast(asyncio.BaseTransport, self))
        client.data_received(request)

    async def head(self) -> None:
        """Until the response head is in (or the fetch failed: ``failed`` says why)."""
        await self._head

    async def read_all(self) -> bytes | None:
        """The whole body, or None once more than ``limit`` bytes came (reading from the origin is
        paused then, with what came kept for ``stream``)."""
        while not self.ended and not self.failed and self.size <= self.limit:
            self._event = self._loop.create_future()
            await self._event
        if self.size > self.limit and not self.ended:
            return None
        return b"".join(self.chunks)

    def stream(self, write: Callable[[bytes], None]) -> list[bytes]:
        """Hand the rest of the body to ``write`` as it comes; returns what was buffered so far."""
        buffered, self.chunks = self.chunks, []
        self.sink = write
        self.resume()
        return buffered

    async def done(self) -> None:
        while not self.ended and not self.failed:
            self._event = self._loop.create_future()
            await self._event

    def pause(self) -> None:
        if not self._paused and self.client is not None:
            self._paused = True
            self.client.pause_writing()

    def resume(self) -> None:
        if self._paused and self.client is not None:
            self._paused = False
            self.client.resume_writing()

    def cancel(self) -> None:
        """The viewer went away: drop the origin request (its target connection is not reused)."""
        if not self.ended:
            self.failed = self.failed or "cancelled"
            self.sink = None
            self._lose_client()

    def _wake(self) -> None:
        event, self._event = self._event, None
        if event is not None and not event.done():
            event.set_result(None)

    def _fail(self, reason: str) -> None:
        if self.ended or self.failed:
            return
        self.failed = reason
        if not self._head.done():
            self._head.set_result(None)
        self._wake()

    def _lose_client(self) -> None:
        client, self.client = self.client, None
        if client is not None and client.transport is not None:
            client.connection_lost(None)

    # -- the transport the HttpClientSide writes to ------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return self.ended or bool(self.failed)

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass  # the request is written whole at once

    def resume_reading(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        if self.ended or self.failed:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"unparseable response: {exc}")

    def close(self) -> None:
        # The client side is done (it was asked for Connection: close): let it go on the next turn.
        if not self.ended:
            self._fail("the origin response broke off")
        self._loop.call_soon(self._lose_client)

    def abort(self) -> None:
        self._fail("the origin request was aborted")
        self._loop.call_soon(self._lose_client)

    # -- httptools callbacks -----------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self.headers = []
            return
        self.status = status
        client = self.client
        exchange = client.exchanges[0] if client is not None and client.exchanges else None
        if exchange is not None:
            self.local = exchange.target_status == 0
            if exchange.target is not None:
                self.target = exchange.target.label
        if not self._head.done():
            self._head.set_result(None)
        if self.head_request or status in (204, 304):
            self.on_message_complete()  # no body follows (RFC 9110 6.4.1), whatever the framing says

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink(body)
            return
        self.chunks.append(body)
        self.size += len(body)
        if self.size > self.limit:
            self.pause()
            self._wake()

    def on_message_complete(self) -> None:
        if self.status == 0 or self.ended:
            return  # an interim response, or a bodiless one already complete
        self.ended = True
        if not self._head.done():
            self._head.set_result(None)
        self._wake()
