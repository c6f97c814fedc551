"""The gateway's requests to targets: the ``Fetch`` of lbd/gateway/contracts.py over a target group.

Integrations (HTTP_PROXY, HTTP) and REQUEST authorizers send one whole request and wait for one whole
response, with a deadline (the integration's timeout_ms). The target is chosen as a load balancer would:
by the group's balancer among its healthy targets (fail-open, zones, slow start, outlier ejection and
draining all as lbd/runtime.py's TargetGroupRuntime decides), and connect errors and 5xx answers count
towards outlier detection. Connections are HTTP/1.1 keep-alive (RFC 9112 9.3), kept idle per target
between requests and dropped when the Snapshot generation changes, like the proxy's own pool
(lbd/http/upstream.py; its connections are typed to the proxy's Exchange, hence this small client).

Like the proxy, a request is callbacks, not a coroutine (``GatewayFetch.start``): the request is written
on a pooled connection, the response's ``data_received`` hands the reply to the caller's callback. The
deadlines of the requests in flight share one timer per worker's fetch, armed for the earliest of them
and moved on when it fires (a timer made and cancelled per request costs as much as the rest of the
request's bookkeeping). Only a connect (no idle connection to the target) runs as a task.
``GatewayFetch.__call__`` wraps the same path in a future for the callers that await (REQUEST
authorizers, the pipeline's fallback when an engine must await).

Responses are parsed by httptools and held in memory: the gateway buffers bodies anyway (API Gateway's
10 MB payload limit applies both ways), so a larger response is an integration failure.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from functools import partial
from typing import TYPE_CHECKING, cast, overload

import httptools

from lbd.gateway.contracts import UpstreamReply
from lbd.http import fastpath

if TYPE_CHECKING:
    from lbd.runtime import TargetGroupRuntime
    from lbd.upstream.target import Target

log = logging.getLogger("lbd.gateway")

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


Done = Callable[[UpstreamReply | None, Exception | None], None]  # (reply, None) or (None, the error)


class _TargetConnection:
    """One keep-alive connection to a target (an asyncio protocol; an extension type compiled)."""

    def __init__(self, target: Target, generation: int) -> None:
        self.target = target
        self.generation = generation
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.call: _Call | None = None
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.received = False
        self.reused = False
        self.keep_alive = True
        self.head = False  # the request is a HEAD: its response has no body whatever it announces
        self.partial = False  # the parser is inside a response

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    # What asyncio.Protocol would give: a whole request is written at once and a target's FIN closes.
    def pause_writing(self) -> None:
        return None

    def resume_writing(self) -> None:
        return None

    def eof_received(self) -> bool:
        return False

    def begin(self, call: _Call) -> None:
        self.call = call
        call.conn = self
        self.received = False
        self.head = call.head
        assert self.transport is not None
        self.transport.write(call.request)

    def data_received(self, data: bytes) -> None:
        if self.call is None:
            self.close()  # RFC 9112 9.3: nothing may arrive between responses
            return
        self.received = True
        if not self.partial and not self.head:
            # The common case, a whole Content-Length response in one read, by the proxy's compiled scan
            # (lbd/http/fastpath.py) instead of a parser callback per field.
            parsed = fastpath.simple_response(data)
            if parsed is not None and len(data) - parsed[4] == parsed[2]:
                status, head, _, keep_alive, body_at = parsed
                self.keep_alive = keep_alive
                # The head goes to the client as the target sent it but for Connection, Keep-Alive and
                # Proxy-Connection (which the scan cut, as the load balancer forwards it): its fields are
                # parsed only if something reads them (CORS, the stage cache, an HTTP integration).
                self._reply(UpstreamReply(status, HeadFields(head), data[body_at:], head))
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"malformed response from target: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.call is not None:
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
        if self.call is not None:
            status = self.parser.get_status_code()
            headers = [(n, v) for n, v in self.headers if n not in HOP_BY_HOP]
            self._reply(UpstreamReply(status, headers, b"".join(self.body)))

    def _reply(self, reply: UpstreamReply) -> None:
        call = self.call
        self.call = None
        if call is not None:
            call.replied(self, reply)

    def _fail(self, exc: Exception) -> None:
        self.keep_alive = False
        call = self.call
        self.call = None
        self.close()
        if call is not None:
            call.failed(self, exc)

    @property
    def alive(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Call:
    """One request to a target, from ``GatewayFetch.start`` until its callback has been called (once)."""

    def __init__(
        self,
        fetch: GatewayFetch,
        group: TargetGroupRuntime,
        target: Target,
        request: bytes,
        head: bool,
        done: Done,
    ) -> None:
        self.fetch = fetch
        self.group = group
        self.target = target
        self.request = request
        self.head = head
        self.done = done
        self.conn: _TargetConnection | None = None
        self.deadline = 0.0
        self.attempt = 0
        self.finished = False

    def replied(self, conn: _TargetConnection, reply: UpstreamReply) -> None:
        if self.finished:
            return
        self._end()
        self.fetch._release(conn)
        if reply.status >= 500:
            self.group.request_failed(self.target)
        else:
            self.group.request_succeeded(self.target)
        self.done(reply, None)

    def failed(self, conn: _TargetConnection | None, exc: Exception) -> None:
        if self.finished:
            return
        if (
            isinstance(exc, ConnectionError)
            and conn is not None
            and conn.reused
            and not conn.received
            and self.attempt == 0
        ):
            # A kept-alive connection the target closed just as it was reused: try once on a new one
            # (nothing of this request reached the application, RFC 9112 9.3.1).
            self.attempt = 1
            self.conn = None
            self.fetch._send(self)
            return
        self._end()
        self.group.request_failed(self.target)
        self.done(None, exc)

    def expire(self) -> None:
        """The integration's timeout: the response would come to no one, so the connection goes."""
        conn = self.conn
        if conn is not None and conn.call is self:
            conn.call = None
            conn.close()
        self.failed(None, TimeoutError())

    def abandon(self) -> None:
        """The caller went away (a cancelled await): end silently."""
        if self.finished:
            return
        conn = self.conn
        if conn is not None and conn.call is self:
            conn.call = None
            conn.close()
        self._end()

    def _end(self) -> None:
        self.finished = True
        self.target.outstanding -= 1
        self.fetch._inflight.pop(self, None)


class GatewayFetch:
    """One worker's ``Fetch``; ``groups`` gives the current Snapshot's target groups."""

    def __init__(
        self, groups: Callable[[], Mapping[str, TargetGroupRuntime]], generation: Callable[[], int]
    ) -> None:
        self._groups = groups
        self._generation = generation
        self._idle: dict[bytes, list[_TargetConnection]] = {}
        self._closed = False  # the Snapshot is out of service: connections close once their request ends
        self._loop: asyncio.AbstractEventLoop | None = None
        # The requests in flight (insertion order: by deadline when every route has one timeout), and the
        # one timer that expires them, due at ``_due`` (no earlier than the earliest deadline).
        self._inflight: dict[_Call, None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0

    async def __call__(
        self,
        target_group: str,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        timeout: float,
    ) -> UpstreamReply:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        waiter: asyncio.Future[UpstreamReply] = loop.create_future()
        # Not a closure: compiled, this coroutine's locals live in the scope a closure holds, and the
        # closure among them made a cycle (with the reply in it) left to the garbage collector.
        call = self.start(target_group, method, path, headers, body, timeout, partial(_settle, waiter))
        try:
            return await waiter
        except asyncio.CancelledError:
            if call is not None:
                call.abandon()
            raise

    def start(
        self,
        target_group: str,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]] | bytes,
        body: bytes,
        timeout: float,
        done: Done,
    ) -> _Call | None:
        """Send the request; ``done`` gets the reply or the error (NoTarget, ConnectionError, TimeoutError),
        maybe before this returns. None when it was answered at once (no target). ``headers``: name and
        value pairs, or field lines as they are to be sent (CRLF-ended)."""
        group = self._groups().get(target_group)
        if group is None:
            done(None, NoTarget(f"no target group {target_group!r}"))
            return None
        target = group.pick()
        if target is None:
            done(None, NoTarget(f"target group {target_group} has no target that takes traffic"))
            return None
        line = f"{method} {path} HTTP/1.1\r\nhost: {target.id}:{target.port}\r\n"
        if isinstance(headers, bytes):
            fields = headers  # field lines as received (lbd/gateway/integration.py's _passed_on)
        else:
            fields = "".join([f"{name}: {value}\r\n" for name, value in headers]).encode("latin-1", "replace")
        if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            fields += f"content-length: {len(body)}\r\n".encode()
        # One join: the fields carry the token (long), and each concatenation would copy them again.
        request = b"".join([line.encode("latin-1", "replace"), fields, b"\r\n", body])
        target.outstanding += 1
        if target.stats is not None:
            target.stats.requests += 1
        call = _Call(self, group, target, request, method == "HEAD", done)
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()  # once: each call of it is a getpid() system call
        deadline = call.deadline = loop.time() + timeout
        self._inflight[call] = None
        timer = self._timer
        if timer is None or deadline < self._due:
            if timer is not None:
                timer.cancel()
            self._due = deadline
            self._timer = loop.call_at(deadline, self._expire)
        self._send(call)
        return call

    def _expire(self) -> None:
        """The deadline timer: time out every request past its deadline, then sleep until the next one
        (a request that was answered left ``_inflight`` when it ended)."""
        self._timer = None
        assert self._loop is not None
        now = self._loop.time()
        due = [call for call in self._inflight if call.deadline <= now]
        for call in due:
            call.expire()  # ends it: out of _inflight
        if self._inflight:
            self._due = min(call.deadline for call in self._inflight)
            self._timer = self._loop.call_at(self._due, self._expire)

    def _send(self, call: _Call) -> None:
        conn = self._acquire(call.target)
        if conn is not None:
            conn.begin(call)
            return
        assert self._loop is not None
        task = self._loop.create_task(self._connect_for(call))
        task.add_done_callback(_report)

    async def _connect_for(self, call: _Call) -> None:
        try:
            conn = await self._connect(call.group, call.target)
        except ConnectionError as exc:
            call.failed(None, exc)
            return
        conn.reused = False
        if call.finished:
            self._release(conn)  # the deadline passed meanwhile: the connection is kept for the next one
            return
        conn.begin(call)

    async def _connect(self, group: TargetGroupRuntime, target: Target) -> _TargetConnection:
        conn = _TargetConnection(target, self._generation())
        tls: ssl.SSLContext | None = group.tls
        loop = asyncio.get_running_loop()
        # The integration's timeout (INTEGRATION_TIMEOUT) is the deadline timer's; the group's connect
        # timeout (the target is unreachable: INTEGRATION_FAILURE) is this one.
        try:
            async with asyncio.timeout(group.connect_timeout):
                # An extension type when compiled, so not an asyncio.Protocol subclass: it has its methods.
                await loop.create_connection(
                    lambda: cast(asyncio.Protocol, conn),
                    target.id,
                    target.port,
                    ssl=tls,
                    server_hostname=target.tls_name(group.verify) if tls is not None else None,
                )
        except TimeoutError:
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
                conn.reused = True
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


class HeadFields(Sequence[tuple[str, str]]):
    """A response head's fields as ``_reply_fields`` gives them, parsed on first use."""

    __slots__ = ("_fields", "_head")

    def __init__(self, head: bytes) -> None:
        self._head = head
        self._fields: list[tuple[str, str]] | None = None

    def _parsed(self) -> list[tuple[str, str]]:
        fields = self._fields
        if fields is None:
            fields = self._fields = _reply_fields(self._head)
        return fields

    @overload
    def __getitem__(self, index: int) -> tuple[str, str]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[str, str]]: ...

    def __getitem__(self, index: int | slice) -> tuple[str, str] | Sequence[tuple[str, str]]:
        return self._parsed()[index]

    def __len__(self) -> int:
        return len(self._parsed())

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._parsed())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def __hash__(self) -> int:
        return hash(tuple(self._parsed()))

    def __repr__(self) -> str:
        return repr(self._parsed())


def _reply_fields(head: bytes) -> list[tuple[str, str]]:
    """The fields of a response head ``fastpath.simple_response`` accepted (status line, then valid
    CRLF-ended field lines), lower-case names, without the hop-by-hop and framing ones: decoded once and
    split, a few times quicker than a match per line."""
    fields = []
    lines = head.decode("latin-1").split("\n")  # at LF, CR stripped with the value's whitespace (as
    for i in range(1, len(lines)):  # lbd/gateway/server.py's block_fields)
        line = lines[i]
        if line:
            name, _, value = line.partition(":")
            name = name.lower()
            if name not in HOP_BY_HOP:
                fields.append((name, value.strip(" \t\r")))
    return fields


def _settle(
    waiter: asyncio.Future[UpstreamReply], reply: UpstreamReply | None, error: Exception | None
) -> None:
    """``GatewayFetch.__call__``'s callback: the reply or the error to its awaiting caller."""
    if waiter.done():
        return
    if error is not None:
        waiter.set_exception(error)
    else:
        assert reply is not None
        waiter.set_result(reply)


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("internal error in a gateway target connect", exc_info=task.exception())
