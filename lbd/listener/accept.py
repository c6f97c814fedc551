"""Accepting client connections: lbd's own accept loop over a listening socket.

uvloop's server (libuv) survives running out of descriptors by accepting and closing the connection
silently, so nobody learns that clients are being turned away. lbd accepts itself to see it:

- EMFILE/ENFILE (no descriptor for the new connection): the reserve descriptor is freed, the pending
  connections are accepted and closed at once (the "EMFILE trick" of libuv and nginx: a connection left
  in the backlog keeps the socket readable, and the loop would spin), the reserve is taken back, and the
  closed connections are reported (RejectedConnectionCount; a warning, rate-limited). Serving goes on.
- ``admit`` says no (the listener's ``max_connections`` is reached): the connection is closed at once and
  reported the same way, as ALB counts RejectedConnectionCount when its connection limit is reached (R16).
- Otherwise the socket becomes a transport with the listener's protocol (connect_accepted_socket).
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import logging
import os
import socket
from collections.abc import Callable, Coroutine

log = logging.getLogger("lbd.listener")

BATCH = 64  # connections accepted per readiness callback, so one busy listener cannot starve the rest
RETRY = 0.1  # seconds before accepting again when even the reserve descriptor could not be taken back
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})


class AcceptedSocket(socket.socket):
    """An accepted connection, as uvloop's connect_accepted_socket takes it (it reads the family and type,
    then detaches the socket when the transport closes).

    ``socket.socket`` turns the family and type into enums at every read, a few microseconds per
    connection that a client opening one per request pays each time; these read the plain numbers.
    """

    __slots__ = ()
    family = _socket.socket.family  # type: ignore[assignment]
    type = _socket.socket.type  # type: ignore[assignment]


def _reserve() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


class Acceptor:
    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], asyncio.BaseProtocol],
        admit: Callable[[int], bool],
        rejected: Callable[[int, OSError | None], None],
    ) -> None:
        """``admit(pending)``: may one more connection be served, with ``pending`` accepted but not yet
        connected; ``rejected(count, error)``: connections closed at once (error None: over the limit)."""
        self.sock = sock
        self._family, self._type = int(sock.family), int(sock.type)
        self._nodelay = sock.family in (socket.AF_INET, socket.AF_INET6)
        self.factory = factory
        self.admit = admit
        self.rejected = rejected
        self._loop = asyncio.get_running_loop()
        # Connections being set up (uvloop's coroutines, driven by hand): held here until they finish.
        self._pending: set[Coroutine[object, None, object]] = set()
        # Accepted connections whose protocol does not exist yet. A connection counts here from accept()
        # until its protocol is made, then in the listener's active connections from connection_made on;
        # counting the tasks instead counted a connection twice between the two, and refused clients
        # under the limit.
        self._unmade = 0
        self._reserve = _reserve()
        self._reading = False
        self._closed = False

    def start(self) -> None:
        if not self._reading and not self._closed:
            self._loop.add_reader(self.sock.fileno(), self._ready)
            self._reading = True

    def close(self) -> None:
        """Stop accepting and close the listening socket; connections already open are not touched."""
        if self._closed:
            return
        self._closed = True
        if self._reading:
            self._loop.remove_reader(self.sock.fileno())
            self._reading = False
        self.sock.close()
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None

    def _ready(self) -> None:
        for _ in range(BATCH):
            try:
                # socket.accept() without its wrapping: the descriptor, made an AcceptedSocket below.
                fd, _ = self.sock._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while in the backlog
            except OSError as exc:
                if exc.errno in _OUT_OF_DESCRIPTORS:
                    self._shed(exc)
                else:
                    log.warning("accept on %s failed: %s", self.sock.getsockname(), exc)
                return
            conn = AcceptedSocket(self._family, self._type, 0, fd)
            if not self.admit(self._unmade):
                conn.close()
                self.rejected(1, None)
                continue
            self._connect(conn)

    def _connect(self, conn: socket.socket) -> None:
        # No setblocking(False): libuv makes the descriptor non-blocking when it opens the transport
        # (uv_tcp_open), and the socket object is never used for I/O.
        if self._nodelay:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as uvloop's server does
        self._unmade += 1
        made = False

        def factory() -> asyncio.BaseProtocol:
            nonlocal made
            made = True
            self._unmade -= 1
            return self.factory()

        def failed(exc: BaseException) -> None:
            self._pending.discard(coro)
            if not made:
                self._unmade -= 1  # failed before its protocol was made
            conn.close()
            log.warning("could not serve an accepted connection: %s", exc)

        def resume(_: object) -> None:
            try:
                coro.send(None)
            except StopIteration:
                self._pending.discard(coro)
            except Exception as exc:  # any failure of one connection is that connection's alone
                failed(exc)

        # uvloop's connect_accepted_socket makes the transport at once and then only waits for
        # connection_made. Driving the coroutine by hand, resumed by that wait's future, saves a Task, its
        # scheduling and its done callback per connection: a client that opens a connection per request
        # pays for them every time.
        coro = self._loop.connect_accepted_socket(factory, conn)
        self._pending.add(coro)
        try:
            waiter = coro.send(None)
        except StopIteration:
            self._pending.discard(coro)
            return
        except Exception as exc:
            failed(exc)
            return
        if not asyncio.isfuture(waiter):
            coro.close()
            failed(RuntimeError(f"uvloop's connect_accepted_socket waited on {waiter!r}, not a future"))
            return
        waiter.add_done_callback(resume)

    def _shed(self, exc: OSError) -> None:
        """Out of descriptors: close the connections waiting in the backlog (the EMFILE trick)."""
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None
        shed = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                break
            conn.close()
            shed += 1
        self._reserve = _reserve()
        self.rejected(max(shed, 1), exc)
        if shed == 0 and self._reading:
            # Not even one descriptor to accept with: stop watching for a moment instead of spinning.
            self._loop.remove_reader(self.sock.fileno())
            self._reading = False
            self._loop.call_later(RETRY, self.start)
