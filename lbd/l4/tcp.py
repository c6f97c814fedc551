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
- PROXY protocol v2 (``proxy_protocol_v2`` on the group): the header goes first on the target connection,
  with the client's addresses (the real ones when a trusted PROXY header brought them), a unique id, the
  ALPN and SNI of a TLS listener, and the AWS 0xEA TLV when an endpoint id is configured. On plain TCP it
  rides in the first write with whatever the client sent meanwhile; for TLS target groups it is sent on
  the raw socket before the handshake, as NLB does.

Both protocols are extension types when compiled (tcp.pxd): typed fields, counters as C integers, no
``asyncio.Protocol`` base (uvloop only needs the methods).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING, cast

from lbd.l4.proxy_protocol import (
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_UNIQUE_ID,
    aws_vpce_tlv,
    encode_v1,
    encode_v2,
    tlv,
)
from lbd.listener.tracker import ConnectionTracker
from lbd.observe.access_log import timestamp
from lbd.upstream.target import Target

if TYPE_CHECKING:
    from lbd.runtime import ListenerRuntime, TargetGroupRuntime

log = logging.getLogger("lbd.l4")

# 256 KiB is enough to keep a loopback or LAN pipe full (measured in benchmarks/) while bounding the memory
# one stalled peer can pin.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024

# PROXY v2 UNIQUE_ID: a random prefix per process and a counter, unique per flow without a syscall each.
_ID_PREFIX = os.urandom(8)
_flow_ids = [0]


def _unique_id() -> bytes:
    _flow_ids[0] += 1
    return _ID_PREFIX + _flow_ids[0].to_bytes(8, "big")


class TcpClientSide:
    """The accepted client connection of one flow; owns the flow's lifetime."""

    def __init__(self, listener: ListenerRuntime, tracker: ConnectionTracker) -> None:
        self.listener = listener
        self._tracker = tracker
        self.transport: asyncio.Transport | None = None
        self.target_side: TcpTargetSide | None = None
        self.target: Target | None = None
        self.surge_target: Target | None = None  # the instance whose surge-queue slot it holds
        # Set before connection_made by a PROXY header from a trusted source; else read from the socket.
        self.peer: tuple[str, int] = ("", 0)
        self.destination: tuple[str, int] = ("", 0)
        self.proxy_header: bytes | None = None
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
        self._stats = listener.stats

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
        if not self.peer[0]:
            peer = transport.get_extra_info("peername")
            if peer:
                self.peer = (peer[0], peer[1])
            local = transport.get_extra_info("sockname")
            if local:
                self.destination = (local[0], local[1])
        group = self.listener.target_group
        if group is not None and group.config.proxy_protocol_v2:
            self.proxy_header = self._proxy_v2(transport, group.config.proxy_protocol_endpoint_id)
        elif self.listener.listener.proxy_protocol:
            # Classic TCP and SSL listeners with proxy_protocol: a PROXY v1 line ahead of the client's bytes,
            # naming the client and the address it connected to (AWS: "Configure proxy protocol support for
            # your Classic Load Balancer").
            self.proxy_header = encode_v1(self.peer, self.destination)
        self._connect_task = self._loop.create_task(self._connect(self._flow_key()))
        self._arm_idle_timer()

    def data_received(self, data: bytes) -> None:
        size = len(data)
        self._moved += size
        self._received += size
        self._stats.processed_bytes += size
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
        group = self.listener.target_group
        if group is not None and group.surge is not None:
            group.surge.release(self)  # its slot, or its place in the queue
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
        size = len(data)
        self._moved += size
        self._stats.processed_bytes += size
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

    def _flow_key(self) -> bytes:
        # NLB hashes protocol, source IP:port and destination IP:port (R19), so a flow keeps its target.
        # With source_ip stickiness only the client's address is hashed: all its flows go to one target.
        group = self.listener.target_group
        sticky = group.config.stickiness if group is not None else None
        if sticky is not None and sticky.enabled and sticky.type == "source_ip":
            return f"ip|{self.peer[0]}".encode()
        peer, destination = self.peer, self.destination
        return f"tcp|{peer[0]}|{peer[1]}|{destination[0]}|{destination[1]}".encode()

    def _proxy_v2(self, transport: asyncio.Transport, endpoint_id: str | None) -> bytes:
        """The PROXY v2 header for this flow's target connections (once per flow, never per read)."""
        tlvs = [tlv(PP2_TYPE_UNIQUE_ID, _unique_id())]
        tls = self.listener.tls
        ssl_object = transport.get_extra_info("ssl_object") if tls is not None else None
        if ssl_object is not None and tls is not None:
            alpn = ssl_object.selected_alpn_protocol()
            if alpn:
                tlvs.append(tlv(PP2_TYPE_ALPN, alpn.encode("ascii")))
            server_name, _ = tls.handshake_info(ssl_object)
            if server_name != "-":
                tlvs.append(tlv(PP2_TYPE_AUTHORITY, server_name.encode("utf-8")))
        if endpoint_id:
            tlvs.append(aws_vpce_tlv(endpoint_id))
        return encode_v2(self.peer, self.destination, tlvs)

    async def _connect(self, flow_key: bytes) -> None:
        group = self.listener.target_group
        assert group is not None  # network listeners always forward (config-checked)
        stats = self.listener.stats
        tried: set[Target] = set()
        surge = group.surge
        while True:
            if surge is None:
                target = group.pick(flow_key, tried)
            else:
                # A classic listener with max_connections_per_instance (lbd/surge.py): wait for a slot.
                exclude = surge.admit(self, tried)
                target = group.pick(flow_key, exclude) if exclude is not None else None
                if target is None and (exclude is None or surge.must_wait(tried)):
                    self._connect_task = None  # surge_resume starts another
                    if not surge.wait(self) and self.transport is not None:
                        log.info(
                            "%s %s: surge queue full; closing connection from %s:%s",
                            self.listener.load_balancer.name,
                            self.listener.name,
                            *self.peer,
                        )
                        self.transport.close()  # SpilloverCount
                    return
                if target is not None:
                    surge.take(self, target)
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
                    await self._open(group, target)
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

    async def _open(self, group: TargetGroupRuntime, target: Target) -> None:
        # An extension type when compiled, so not an asyncio.Protocol subclass: it has its methods.
        factory = cast(Callable[[], asyncio.Protocol], functools.partial(TcpTargetSide, self, target))
        server_hostname = target.tls_name(group.verify) if group.tls is not None else None
        if group.tls is None or self.proxy_header is None:
            # Plain TCP: a PROXY header goes out with the first write (target_connected).
            await self._loop.create_connection(
                factory, target.id, target.port, ssl=group.tls, server_hostname=server_hostname
            )
            return
        # TLS to the target with PROXY v2: the header precedes the handshake on the raw socket.
        infos = await self._loop.getaddrinfo(target.id, target.port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await self._loop.sock_connect(sock, address)
            await self._loop.sock_sendall(sock, self.proxy_header)
            await self._loop.create_connection(
                factory, sock=sock, ssl=group.tls, server_hostname=server_hostname
            )
        except BaseException:
            sock.close()
            raise

    def surge_resume(self) -> None:
        """Out of the surge queue: a slot freed up."""
        if self.transport is not None:
            self._connect_task = self._loop.create_task(self._connect(self._flow_key()))

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
        group = self.listener.target_group
        if self.proxy_header is not None and group is not None and group.tls is None:
            pending = [self.proxy_header, *(pending or ())]
        if pending:
            target_side.transport.write(b"".join(pending))
        if self._client_eof:
            target_side.transport.write_eof()
        else:
            self.transport.resume_reading()

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


class TcpTargetSide:
    """The connection to the target of one flow; forwards everything to its TcpClientSide."""

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
