"""TCP stream splicing for network load balancer TCP listeners.

Two asyncio Protocols per flow, one per socket, each writing what it reads into the other's transport.
Everything a flow does is a callback; the only coroutine is the target connect (one per flow, not per read).

- Flow control (DESIGN.md section 3): when one side's write buffer passes the high-water mark asyncio
  calls ``pause_writing`` on that side's protocol, which pauses reading on the *other* socket; below the
  low-water mark reading resumes. A client that stops reading therefore bounds lbd's memory to about the
  high-water mark plus one read, whatever the target sends.
- Half-close: a FIN from one side is passed on with ``write_eof`` (shutdown(SHUT_WR)) and the other
  direction keeps flowing; the flow ends when both directions have ended.
- Resets: an RST from one side (ECONNRESET) aborts the other side, so the peer sees a reset too, as NLB
  passes resets through (TCP_Client_Reset_Count / TCP_Target_Reset_Count).
- Idle timeout: NLB's 350 s by default. Checked by a timer every half timeout against a byte counter, so
  the hot path pays one integer add; a flow is closed after between 1 and 1.5 timeouts without traffic.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from time import monotonic
from typing import TYPE_CHECKING, cast

from lbd.l4.proxy_protocol import encode_v1
from lbd.listener.tracker import ConnectionTracker
from lbd.observe.access_log import timestamp
from lbd.upstream.target import Target

if TYPE_CHECKING:
    from lbd.runtime import ListenerRuntime

log = logging.getLogger("lbd.l4")

# 256 KiB is enough to keep a loopback or LAN pipe full (measured in benchmarks/) while bounding the memory
# one stalled peer can pin.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


class TcpClientSide(asyncio.Protocol):
    """The accepted client connection of one flow; owns the flow's lifetime."""

    __slots__ = (
        "_client_eof",
        "_connect_task",
        "_created_at",
        "_idle_handle",
        "_loop",
        "_moved",
        "_moved_at_check",
        "_pending",
        "_quiet_checks",
        "_received",
        "_target_eof",
        "_tracker",
        "listener",
        "peer",
        "target",
        "target_side",
        "transport",
    )

    def __init__(self, listener: ListenerRuntime, tracker: ConnectionTracker) -> None:
        self.listener = listener
        self._tracker = tracker
        self.transport: asyncio.Transport | None = None
        self.target_side: TcpTargetSide | None = None
        self.target: Target | None = None
        self.peer: tuple[str, int] = ("", 0)
        self._pending: list[bytes] | None = []
        self._client_eof = False
        self._target_eof = False
        self._connect_task: asyncio.Task[None] | None = None
        self._idle_handle: asyncio.TimerHandle | None = None
        self._moved = 0
        self._received = 0
        self._created_at = 0.0
        self._moved_at_check = 0
        self._quiet_checks = 0
        self._loop = asyncio.get_running_loop()

    # -- client socket callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        # Read nothing more until the target is connected; uvloop may still deliver data that was already
        # read, which data_received buffers in _pending.
        transport.pause_reading()
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        stats = self.listener.stats
        stats.new_connections += 1
        stats.active_connections += 1
        self._tracker.add(self)
        self._created_at = monotonic()
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = (peer[0], peer[1])
        self._connect_task = self._loop.create_task(self._connect(self._flow_key(transport)))
        self._arm_idle_timer()

    def data_received(self, data: bytes) -> None:
        self._moved += len(data)
        self._received += len(data)
        self.listener.stats.processed_bytes += len(data)
        target_side = self.target_side
        if target_side is not None and target_side.transport is not None:
            target_side.transport.write(data)
        elif self._pending is not None:
            self._pending.append(data)

    def eof_received(self) -> bool:
        self._client_eof = True
        target_side = self.target_side
        if target_side is not None and target_side.transport is not None:
            if self._target_eof:
                self._close_both()
            else:
                target_side.transport.write_eof()
        return True  # keep our write side open: the target may still be answering (half-close)

    def pause_writing(self) -> None:
        # Our client is slow: stop reading from the target until the client catches up.
        if self.target_side is not None and self.target_side.transport is not None:
            self.target_side.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.target_side is not None and self.target_side.transport is not None:
            self.target_side.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        stats = self.listener.stats
        stats.active_connections -= 1
        self._tracker.discard(self)
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
        target_side = self.target_side
        if target_side is not None and target_side.transport is not None:
            if isinstance(exc, ConnectionResetError):
                stats.client_resets += 1
                target_side.transport.abort()
            else:
                target_side.transport.close()
        if self.listener.flow_log is not None:
            self._log_flow(exc)

    def _log_flow(self, exc: Exception | None) -> None:
        """One access-log line per flow, in the spirit of NLB's (which logs TLS flows only)."""
        flow_log = self.listener.flow_log
        assert flow_log is not None
        now = monotonic()
        listener = self.listener.listener
        flow_log.emit(
            {
                "type": "tcp",
                "version": "1.0",
                "time": timestamp(flow_log.wall(now)),
                "elb": flow_log.elb,
                "listener": f"{listener.protocol}:{listener.port}",
                "client:port": f"{self.peer[0]}:{self.peer[1]}",
                "destination:port": self.target.label if self.target is not None else "-",
                "connection_time": round((now - self._created_at) * 1000),
                "received_bytes": self._received,
                "sent_bytes": self._moved - self._received,
                "connection_creation_time": timestamp(flow_log.wall(self._created_at)),
                "error_reason": "-" if self.target is not None else "NoTargetAvailable",
            },
            kind="tcp",
        )

    # -- target side, called by TcpTargetSide --------------------------------------------------------

    def target_data(self, data: bytes) -> None:
        self._moved += len(data)
        self.listener.stats.processed_bytes += len(data)
        if self.transport is not None:
            self.transport.write(data)

    def target_eof(self) -> None:
        self._target_eof = True
        if self.transport is not None:
            if self._client_eof:
                self._close_both()
            elif self.transport.can_write_eof():
                self.transport.write_eof()
            else:
                self.transport.close()  # TLS has no half-close: close_notify ends both directions

    def target_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return
        if isinstance(exc, ConnectionResetError):
            self.listener.stats.target_resets += 1
            self.transport.abort()
        else:
            self.transport.close()

    def target_pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def target_resume_writing(self) -> None:
        if self.transport is not None and self.target_side is not None:
            self.transport.resume_reading()

    # -- lifecycle -----------------------------------------------------------------------------------

    def drain(self) -> None:
        """Shutdown began: a TCP flow has no request boundary to stop at, so it runs on until it ends."""

    def target_in_use(self) -> tuple[str, str] | None:
        group = self.listener.target_group
        if self.target is None or group is None or self.transport is None:
            return None
        return group.name, self.target.key

    def abort(self) -> None:
        """Force-close both sides (shutdown deadline, deregistration)."""
        if self.target_side is not None and self.target_side.transport is not None:
            self.target_side.transport.abort()
        if self.transport is not None:
            self.transport.abort()

    def _close_both(self) -> None:
        if self.target_side is not None and self.target_side.transport is not None:
            self.target_side.transport.close()
        if self.transport is not None:
            self.transport.close()

    def _flow_key(self, transport: asyncio.Transport) -> bytes:
        # NLB hashes protocol, source IP:port and destination IP:port (R19), so a flow keeps its target.
        # With source_ip stickiness only the client's address is hashed: all its flows go to one target.
        group = self.listener.target_group
        sticky = group.config.stickiness if group is not None else None
        if sticky is not None and sticky.enabled and sticky.type == "source_ip":
            return f"ip|{self.peer[0]}".encode()
        sockname = transport.get_extra_info("sockname") or ("", 0)
        return f"tcp|{self.peer[0]}|{self.peer[1]}|{sockname[0]}|{sockname[1]}".encode()

    async def _connect(self, flow_key: bytes) -> None:
        group = self.listener.target_group
        assert group is not None  # network listeners always forward (config-checked)
        stats = self.listener.stats
        tried: set[Target] = set()
        while True:
            target = group.pick(flow_key, tried)
            if target is None:
                if not tried:
                    stats.rejected_connections += 1
                    log.warning(
                        "%s %s: no routable target in target group %s; closing connection from %s:%s",
                        self.listener.load_balancer.name,
                        self.listener.name,
                        group.name,
                        *self.peer,
                    )
                else:
                    log.warning(
                        "%s %s: every target of %s failed to connect; closing connection from %s:%s",
                        self.listener.load_balancer.name,
                        self.listener.name,
                        group.name,
                        *self.peer,
                    )
                if self.transport is not None:
                    self.transport.close()
                return
            try:
                async with asyncio.timeout(group.connect_timeout):
                    await self._loop.create_connection(
                        functools.partial(TcpTargetSide, self, target),
                        target.id,
                        target.port,
                        ssl=group.tls,
                        server_hostname=target.tls_name(group.verify) if group.tls is not None else None,
                    )
            except (OSError, TimeoutError) as exc:
                # Nothing was sent to this target yet, so trying another one is safe.
                stats.target_connection_errors += 1
                target.stats.connection_errors += 1
                group.request_failed(target)
                tried.add(target)
                log.warning(
                    "%s %s: connect to target %s failed (%s); trying another target",
                    self.listener.load_balancer.name,
                    self.listener.name,
                    target.label,
                    exc.__class__.__name__ if isinstance(exc, TimeoutError) else exc,
                )
                continue
            group.request_succeeded(target)
            target.stats.requests += 1
            return

    def target_connected(self, target_side: TcpTargetSide) -> None:
        """The target accepted: flush what the client sent meanwhile and start splicing."""
        if self.transport is None:  # the client left while we were connecting
            if target_side.transport is not None:
                target_side.transport.close()
            return
        self.target_side = target_side
        self.target = target_side.target
        assert target_side.transport is not None
        pending, self._pending = self._pending, None
        header = self._proxy_header() if self.listener.listener.proxy_protocol else b""
        if pending or header:
            target_side.transport.write(header + b"".join(pending or ()))
        if self._client_eof:
            target_side.transport.write_eof()
        else:
            self.transport.resume_reading()

    def _proxy_header(self) -> bytes:
        # Classic TCP and SSL listeners with proxy_protocol: a PROXY v1 line ahead of the client's bytes,
        # naming the client and the address it connected to (AWS: "Configure proxy protocol support for
        # your Classic Load Balancer").
        assert self.transport is not None
        sockname = self.transport.get_extra_info("sockname") or ("", 0)
        return encode_v1(self.peer, (sockname[0], sockname[1]))

    # -- idle timeout --------------------------------------------------------------------------------

    def _arm_idle_timer(self) -> None:
        self._idle_handle = self._loop.call_later(self.listener.idle_timeout / 2, self._check_idle)

    def _check_idle(self) -> None:
        if self._moved != self._moved_at_check:
            self._moved_at_check = self._moved
            self._quiet_checks = 0
        else:
            self._quiet_checks += 1
            if self._quiet_checks >= 2:
                self._idle_handle = None
                self.listener.stats.idle_timeouts += 1
                log.info(
                    "%s %s: closing flow from %s:%s idle for %.0f s",
                    self.listener.load_balancer.name,
                    self.listener.name,
                    *self.peer,
                    self.listener.idle_timeout,
                )
                self._close_both()
                return
        self._arm_idle_timer()


class TcpTargetSide(asyncio.Protocol):
    """The connection to the target of one flow; forwards everything to its TcpClientSide."""

    __slots__ = ("client_side", "target", "transport")

    def __init__(self, client_side: TcpClientSide, target: Target) -> None:
        self.client_side = client_side
        self.target = target
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        self.target.outstanding += 1
        self.client_side.target_connected(self)

    def data_received(self, data: bytes) -> None:
        self.client_side.target_data(data)

    def eof_received(self) -> bool:
        self.client_side.target_eof()
        return True

    def pause_writing(self) -> None:
        self.client_side.target_pause_writing()

    def resume_writing(self) -> None:
        self.client_side.target_resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.target.outstanding -= 1
        self.client_side.target_lost(exc)
