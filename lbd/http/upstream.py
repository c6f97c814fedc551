"""HTTP/1.1 connections to targets, and the keep-alive pool they return to between requests.

ALB talks HTTP/1.1 keep-alive to targets and reuses back-end connections across clients (R19). The pool
keeps idle connections per target, most recently used first (a warm connection is least likely to have
been closed by the target's own keep-alive timeout), and retires them:
- when they have been idle longer than the pool's idle timeout,
- when the Snapshot generation that opened them is no longer current (asyncpg's trick: after a reload
  a target's settings may have changed, so old connections are not handed out again),
- when the target closes them (connection_lost while idle).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import httptools

from lbd.http import fastpath, messages
from lbd.http.errors import StopParsing
from lbd.http.flow import HIGH_WATER, LOW_WATER
from lbd.upstream.target import Target

if TYPE_CHECKING:
    from lbd.http.exchange import Exchange


class HttpTargetSide:
    """One HTTP/1.1 connection to a target; serves one Exchange at a time, then goes back to the pool."""

    def __init__(self, pool: UpstreamPool, target: Target, generation: int) -> None:
        self.pool = pool
        self.target = target
        self.generation = generation
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.parser = httptools.HttpResponseParser(self)
        # The response head being parsed: collected here, handed to the exchange when it is complete.
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.idle_since = 0.0
        self.reused = False
        self.tunnel: Callable[[bytes], None] | None = None
        self._in_message = False  # the parser is inside a response (the fast path waits for a boundary)
        self._fast_keep_alive = True
        self.remaining = 0  # body bytes still to come of a response the fast path took
        self._head_bytes = 0  # bytes read while a response head is incomplete (the 32K limit)

    # -- transport callbacks ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel(data)
            return
        exchange = self.exchange
        if exchange is None:
            # A target must not talk while idle (RFC 9112 9.3: no unsolicited responses); drop it.
            self.close()
            return
        if self.remaining:
            self._body_more(exchange, data)
            return
        if not self._in_message and not exchange.upgrade and not exchange.head_request:
            parsed = fastpath.simple_response(data)
            if parsed is not None:
                status, head, length, keep_alive, body_at = parsed
                body = data[body_at : body_at + length]
                if len(data) - body_at > length:
                    keep_alive = False  # bytes after the response: the target is out of step (RFC 9112 6.3)
                self.remaining = length - len(body)
                exchange.response_fast(status, head, body, keep_alive)
                if not self.remaining:
                    exchange.response_complete(keep_alive)
                else:
                    self._fast_keep_alive = keep_alive
                return
        client = exchange.client
        client.cork()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            exchange.target_upgraded(data[upgrade.args[0] :])
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, StopParsing):
                self.parser = httptools.HttpResponseParser(self)
                self._in_message = False
            else:
                raise
        except httptools.HttpParserError as exc:
            exchange.target_failed(f"malformed response from target: {exc}", malformed=True)
        else:
            if self._in_message and not exchange.response_started and self.exchange is exchange:
                self._head_bytes += len(data)  # the head is still incomplete: bound what it buffers
                if self._head_bytes > messages.MAX_RESPONSE_HEAD:
                    exchange.target_failed("response head from target over 32 KiB", malformed=True)
        finally:
            client.uncork()

    def eof_received(self) -> bool:
        if self.tunnel is not None and self.exchange is not None:
            return self.exchange.tunnel_target_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            if self.tunnel is not None:
                exchange.tunnel_target_lost(exc)
            else:
                exchange.target_lost(self, exc)
        else:
            self.pool.forget(self)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.target_pause_writing()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.target_resume_writing()

    # -- httptools response callbacks (forwarded to the exchange) ---------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = True
        self.reason = b""
        self.headers = []

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._head_bytes = 0
        if self.exchange is not None:
            if messages.response_head_size(self.reason, self.headers) > messages.MAX_RESPONSE_HEAD:
                self.exchange.target_failed("response head from target over 32 KiB", malformed=True)
                raise StopParsing
            parser = self.parser
            self.exchange.response_headers_complete(
                parser.get_status_code(), self.reason, self.headers, parser.should_keep_alive()
            )

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.response_body(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        if self.exchange is not None:
            self.exchange.response_complete(self.parser.should_keep_alive())

    def _body_more(self, exchange: Exchange, data: bytes) -> None:
        """More of a Content-Length body the fast path is forwarding."""
        remaining = self.remaining - len(data)
        if remaining > 0:
            self.remaining = remaining
            exchange.client.write(data)
            return
        self.remaining = 0
        if remaining < 0:
            # More than the announced length: the target is out of step (RFC 9112 6.3); do not reuse it.
            exchange.client.write(data[:remaining])
            exchange.response_complete(False)
            return
        exchange.client.write(data)
        exchange.response_complete(self._fast_keep_alive)

    # -- used by the exchange ----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    @property
    def alive(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()


class UpstreamPool:
    """Idle keep-alive connections of one worker, per target."""

    # Idle connections kept per target. An HTTP/2 client multiplexes up to 128 streams per connection,
    # and each stream to an HTTP1 group holds a target connection of its own: a cap below the streams in
    # flight closed connections after every wave of responses and opened them again for the next (a
    # connect and a TIME_WAIT socket per request or two). Idle ones still go after idle_timeout.
    def __init__(self, *, max_idle_per_target: int = 1024, idle_timeout: float = 30.0) -> None:
        self.max_idle_per_target = max_idle_per_target
        self.idle_timeout = idle_timeout
        self._idle: dict[bytes, list[HttpTargetSide]] = {}  # by "id:port"
        self._loop = asyncio.get_running_loop()
        self._sweeper: asyncio.TimerHandle | None = None
        self.generation = 0
        self.opened = 0  # connections opened over the pool's life (tests and metrics)
        self.h2: Any = None  # HTTP/2 connections to HTTP2 and GRPC groups' targets (lbd/http/h2upstream.py)

    def acquire(self, target: Target) -> HttpTargetSide | None:
        idle = self._idle.get(target.hash_key)
        while idle:
            conn = idle.pop()
            if conn.alive and conn.generation == self.generation:
                conn.reused = True
                return conn
            conn.close()
        if self.h2 is not None:
            # An HTTP2 or GRPC group's target with a free stream slot on an open h2 connection.
            return cast(HttpTargetSide | None, self.h2.acquire(target))
        return None

    async def connect(
        self,
        target: Target,
        timeout: float,
        tls: ssl.SSLContext | None = None,
        verify: bool = False,
        http2: bool = False,
    ) -> HttpTargetSide:
        if http2:
            # A stream on one of the target's shared h2 connections, behind an HttpTargetSide of its own.
            if self.h2 is None:
                from lbd.http.h2upstream import H2Upstream

                self.h2 = H2Upstream(self)
            return cast(HttpTargetSide, await self.h2.open_stream(target, timeout, tls, verify))
        conn = HttpTargetSide(self, target, self.generation)
        async with asyncio.timeout(timeout):
            # An extension type when compiled, so not an asyncio.Protocol subclass: it has its methods.
            await self._loop.create_connection(
                lambda: cast(asyncio.Protocol, conn),
                target.id,
                target.port,
                ssl=tls,
                server_hostname=target.tls_name(verify) if tls is not None else None,
            )
        self.opened += 1
        return conn

    def release(self, conn: HttpTargetSide) -> None:
        conn.exchange = None
        if not conn.alive or conn.generation != self.generation:
            conn.close()
            return
        idle = self._idle.setdefault(conn.target.hash_key, [])
        if len(idle) >= self.max_idle_per_target:
            conn.close()
            return
        conn.idle_since = self._loop.time()
        idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(self.idle_timeout / 2, self._sweep)

    def forget(self, conn: HttpTargetSide) -> None:
        idle = self._idle.get(conn.target.hash_key)
        if idle and conn in idle:
            idle.remove(conn)

    def retire(self, generation: int) -> None:
        """A new Snapshot is in service: close idle connections opened under older ones."""
        self.generation = generation
        if self.h2 is not None:
            self.h2.retire(generation)
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
            idle.clear()

    def close_all(self) -> None:
        self.retire(self.generation)
        if self.h2 is not None:
            self.h2.close_all()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _sweep(self) -> None:
        self._sweeper = None
        cutoff = self._loop.time() - self.idle_timeout
        remaining = 0
        for idle in self._idle.values():
            keep = [conn for conn in idle if conn.idle_since > cutoff and conn.alive]
            for conn in idle:
                if conn not in keep:
                    conn.close()
            idle[:] = keep
            remaining += len(keep)
        if remaining:
            self._sweeper = self._loop.call_later(self.idle_timeout / 2, self._sweep)

    def stats(self) -> dict[str, Any]:
        stats = {"opened": self.opened, "idle": sum(len(v) for v in self._idle.values())}
        if self.h2 is not None:
            stats.update(self.h2.stats())
        return stats
