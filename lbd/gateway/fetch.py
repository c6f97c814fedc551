"""The gateway's requests to targets: the ``Fetch`` of lbd/gateway/contracts.py over a target group.

Integrations (HTTP_PROXY, HTTP) and REQUEST authorizers send one whole request and wait for one whole
response, with a deadline (the integration's timeout_ms). The target is chosen as a load balancer would:
by the group's balancer among its healthy targets (fail-open, zones, slow start, outlier ejection and
draining all as lbd/runtime.py's TargetGroupRuntime decides), and connect errors and 5xx answers count
towards outlier detection. Connections are HTTP/1.1 keep-alive (RFC 9112 9.3), kept idle per target
between requests and dropped when the Snapshot generation changes, like the proxy's own pool
(lbd/http/upstream.py; its connections are typed to the proxy's Exchange, hence this small client).

Responses are parsed by httptools and held in memory: the gateway buffers bodies anyway (API Gateway's
10 MB payload limit applies both ways), so a larger response is an integration failure.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, cast

import httptools

from lbd.gateway.contracts import UpstreamReply
from lbd.http import fastpath

if TYPE_CHECKING:
    from lbd.runtime import TargetGroupRuntime
    from lbd.upstream.target import Target

MAX_RESPONSE = 10 * 1024 * 1024  # API Gateway's payload limit
MAX_IDLE_PER_TARGET = 64  # as the proxy's pool (lbd/http/upstream.py)
# Hop-by-hop fields (RFC 9110 7.6.1) and the framing ones the gateway sets itself: not passed either way.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "upgrade",
        "host",
        "content-length",
        "trailer",
        "expect",
    }
)


class NoTarget(ConnectionError):
    """The target group has no target that takes traffic (503, not 502)."""


class _TargetConnection(asyncio.Protocol):
    def __init__(self, target: Target, generation: int) -> None:
        self.target = target
        self.generation = generation
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[UpstreamReply] | None = None
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.received = False
        self.keep_alive = True
        self.head = False  # the request is a HEAD: its response has no body whatever it announces
        self.partial = False  # the parser is inside a response

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:
            self.close()  # RFC 9112 9.3: nothing may arrive between responses
            return
        self.received = True
        if not self.partial and not self.head:
            # The common case, a whole Content-Length response in one read, by the proxy's compiled scan
            # (lbd/http/fastpath.py) instead of a parser callback per field.
            parsed = fastpath.simple_response(data)
            if parsed is not None and len(data) - parsed[4] == parsed[2]:
                status, head, _, keep_alive, body_at = parsed
                fields = fastpath.field_lines(head[head.index(b"\r\n") + 2 :])
                headers = [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in fields]
                self.keep_alive = keep_alive
                self.waiter.set_result(
                    UpstreamReply(status, [(n, v) for n, v in headers if n not in HOP_BY_HOP], data[body_at:])
                )
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"malformed response from target: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            with suppress(httptools.HttpParserError):
                self.parser.feed_data(b"")  # a response delimited by the close (RFC 9112 6.3) ends here
            self._fail(ConnectionError("the target closed the connection"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.partial = True
        self.headers = []
        self.body = []
        self.size = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        if self.head:
            # RFC 9110 9.3.2: no body follows; the parser would wait for the announced one, so this
            # connection is done for (not reused) once the head is in.
            self.keep_alive = False
            self.on_message_complete()

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_RESPONSE:
            self._fail(ConnectionError("response body over 10 MB"))
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.partial = False
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            status = self.parser.get_status_code()
            headers = [(n, v) for n, v in self.headers if n not in HOP_BY_HOP]
            waiter.set_result(UpstreamReply(status, headers, b"".join(self.body)))

    def _fail(self, exc: Exception) -> None:
        self.keep_alive = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.close()

    @property
    def alive(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[UpstreamReply]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class GatewayFetch:
    """One worker's ``Fetch``; ``groups`` gives the current Snapshot's target groups."""

    def __init__(
        self, groups: Callable[[], Mapping[str, TargetGroupRuntime]], generation: Callable[[], int]
    ) -> None:
        self._groups = groups
        self._generation = generation
        self._idle: dict[bytes, list[_TargetConnection]] = {}
        self._closed = False  # the Snapshot is out of service: connections close once their request ends

    async def __call__(
        self,
        target_group: str,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        timeout: float,
    ) -> UpstreamReply:
        group = self._groups().get(target_group)
        if group is None:
            raise NoTarget(f"no target group {target_group!r}")
        target = group.pick()
        if target is None:
            raise NoTarget(f"target group {target_group} has no target that takes traffic")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        target.outstanding += 1
        if target.stats is not None:
            target.stats.requests += 1
        try:
            reply = await self._exchange(group, target, method, path, headers, body, deadline)
        except TimeoutError:
            group.request_failed(target)
            raise
        except ConnectionError:
            group.request_failed(target)
            raise
        finally:
            target.outstanding -= 1
        if reply.status >= 500:
            group.request_failed(target)
        else:
            group.request_succeeded(target)
        return reply

    async def _exchange(
        self,
        group: TargetGroupRuntime,
        target: Target,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        deadline: float,
    ) -> UpstreamReply:
        head = [f"{method} {path} HTTP/1.1\r\nhost: {target.id}:{target.port}\r\n"]
        head += [f"{name}: {value}\r\n" for name, value in headers]
        if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            head.append(f"content-length: {len(body)}\r\n")
        request = "".join(head).encode("latin-1", "replace") + b"\r\n" + body
        for attempt in range(2):
            conn = self._acquire(target)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(group, target, deadline)
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[UpstreamReply] = loop.create_future()
            conn.waiter = waiter
            conn.received = False
            conn.head = method == "HEAD"
            assert conn.transport is not None
            conn.transport.write(request)
            # One timer for the deadline (cheaper than a timeout context per request).
            timer = loop.call_at(deadline, _expire, waiter)
            try:
                reply = await waiter
            except ConnectionError:
                # A kept-alive connection the target closed just as it was reused: try once on a new one
                # (nothing of this request reached the application, RFC 9112 9.3.1).
                if reused and not conn.received and attempt == 0:
                    continue
                raise
            except BaseException:
                conn.close()  # a timeout or cancellation: the response would come to no one
                raise
            finally:
                timer.cancel()
                conn.waiter = None
            self._release(conn)
            return reply
        raise ConnectionError("unreachable")  # pragma: no cover

    async def _connect(self, group: TargetGroupRuntime, target: Target, deadline: float) -> _TargetConnection:
        conn = _TargetConnection(target, self._generation())
        tls: ssl.SSLContext | None = group.tls
        loop = asyncio.get_running_loop()
        connect_by = loop.time() + group.connect_timeout
        # Whichever ends first: the integration's timeout (INTEGRATION_TIMEOUT) or the group's connect
        # timeout (the target is unreachable: INTEGRATION_FAILURE).
        limit = min(deadline, connect_by)
        try:
            async with asyncio.timeout_at(limit):
                await loop.create_connection(
                    lambda: conn,
                    target.id,
                    target.port,
                    ssl=tls,
                    server_hostname=target.tls_name(group.verify) if tls is not None else None,
                )
        except TimeoutError:
            if limit == deadline:
                raise
            raise ConnectionError(f"connect to {target.label} timed out") from None
        except OSError as exc:
            if target.stats is not None:
                target.stats.connection_errors += 1
            raise ConnectionError(f"connect to {target.label} failed: {exc.strerror or exc}") from None
        return conn

    def _acquire(self, target: Target) -> _TargetConnection | None:
        idle = self._idle.get(target.hash_key)
        generation = self._generation()
        while idle:
            conn = idle.pop()
            if conn.alive and conn.generation == generation:
                return conn
            conn.close()
        return None

    def _release(self, conn: _TargetConnection) -> None:
        if self._closed or not conn.keep_alive or not conn.alive or conn.generation != self._generation():
            conn.close()
            return
        idle = self._idle.setdefault(conn.target.hash_key, [])
        if len(idle) >= MAX_IDLE_PER_TARGET:
            conn.close()
            return
        idle.append(conn)

    def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
