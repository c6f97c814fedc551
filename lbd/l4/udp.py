"""UDP relay for network load balancer UDP and TCP_UDP listeners.

NLB semantics (AWS: "Listeners for your Network Load Balancers", "Target groups for your Network Load
Balancers"):

- A flow is the 5-tuple (protocol, source IP:port, destination IP:port). Each listener socket fixes the
  protocol and destination, so a worker keys its flows by the client's address. The first datagram of a
  flow picks a target with the group's balancer (flow_hash by default: a keyed hash that is the same in
  every worker and every node, so nodes behind ECMP agree), and the flow gets its own socket connected
  to that target: the target's replies arrive on it and only it, and go back to the client through the
  listener's socket, so the client sees them come from the address it sent to.
- A flow lives while datagrams pass (either way) and expires after the idle timeout (NLB: 120 s); the
  next datagram from that client is a new flow and is hashed again. One access-log line per expired flow.
- A flow whose target stops taking traffic (unhealthy, deregistered) moves at its next datagram: the
  balancer picks again, which with flow_hash moves only the flows that were on that target.

The per-datagram path is two C loops over non-blocking sockets watched with ``add_reader``: up to
``BATCH`` datagrams per readiness callback, each read into one preallocated buffer (``recvfrom_into``)
and sent straight on (``send``/``sendto`` copy synchronously, so the buffer is reused at once). No task,
no transport, no future per datagram. A datagram that cannot be sent at once (full socket buffer, ICMP
error from the target) is dropped and counted: UDP promises nothing more, and queueing would only add
latency. The idle sweep runs every quarter of the timeout over a packet counter, so the hot path pays
integer adds only and a flow expires between 1 and 1.25 timeouts after its last datagram.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING

from lbd.observe.access_log import timestamp
from lbd.observe.ratelimit import RateLimitedLog
from lbd.upstream.target import Target

if TYPE_CHECKING:
    from lbd.runtime import ListenerRuntime, ListenerSlot

log = logging.getLogger("lbd.l4")

BATCH = 64  # datagrams per readiness callback: enough to amortise the callback, bounded for fairness
MAX_DATAGRAM = 65535
SWEEPS_PER_TIMEOUT = 4
# A datagram with no target is logged, but not every one of a flood of them.
UDP_WARNINGS = RateLimitedLog()
_TRANSIENT = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ENOBUFS})


class UdpListenerSide:
    """One worker's socket of one UDP listener, and the flows it relays."""

    def __init__(self, sock: socket.socket, slot: ListenerSlot) -> None:
        self.sock = sock
        self.slot = slot
        self.runtime: ListenerRuntime = slot.runtime
        self.flows: dict[tuple[str, int], UdpFlow] = {}
        self.buffer = bytearray(MAX_DATAGRAM)
        self.view = memoryview(self.buffer)
        self.loop = asyncio.get_running_loop()
        self.fd = sock.fileno()
        self.local: tuple[str, int] = sock.getsockname()[:2]
        self.sweeper: asyncio.TimerHandle | None = None
        self.closed = False
        # Bound once: the per-datagram loop calls them without looking a name up.
        self.recvfrom_into = sock.recvfrom_into
        self.sendto = sock.sendto

    def start(self) -> None:
        self.loop.add_reader(self.fd, self.readable)
        self._arm_sweep()

    def close(self) -> None:
        """Stop relaying: the listener socket and every flow socket are closed (UDP has nothing to drain)."""
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.fd)
        self.sock.close()
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        for flow in list(self.flows.values()):
            self.end_flow(flow, "-")

    # -- datagrams from clients --------------------------------------------------------------------------

    def readable(self) -> None:
        # The slot is read once per readiness callback, not per datagram: after a reload, new flows and
        # flows whose runtime changed pick from the new snapshot's targets.
        runtime = self.slot.runtime
        self.runtime = runtime
        recvfrom_into = self.recvfrom_into
        buffer = self.buffer
        view = self.view
        flows = self.flows
        for _ in range(BATCH):
            try:
                size, client = recvfrom_into(buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # An ICMP error queued on the listener socket (a reply to an unreachable client).
                if exc.errno in _TRANSIENT or isinstance(exc, ConnectionError):
                    continue
                log.warning("UDP receive on %s failed: %s", self.local, exc)
                return
            flow = flows.get(client)
            if flow is None:
                flow = self.new_flow(runtime, client)
                if flow is None:
                    continue
            elif (flow.runtime is not runtime or not flow.target.eligible) and not self.repick(flow, runtime):
                continue
            flow.from_client(view[:size], size)

    def new_flow(self, runtime: ListenerRuntime, client: tuple[str, int]) -> UdpFlow | None:
        stats = runtime.stats
        target = self._pick(runtime, client)
        if target is None:
            stats.udp_dropped_packets += 1
            stats.processed_packets += 1
            return None
        # Keyed by the address exactly as recvfrom gives it (IPv6: with flowinfo and scope id), which is
        # also what sendto needs.
        flow = UdpFlow(self, runtime, client, target)
        if not flow.connect(target):
            stats.udp_dropped_packets += 1
            stats.processed_packets += 1
            return None
        self.flows[flow.client] = flow
        stats.udp_new_flows += 1
        stats.udp_active_flows += 1
        target.stats.requests += 1
        return flow

    def repick(self, flow: UdpFlow, runtime: ListenerRuntime) -> bool:
        """The flow's target stopped taking traffic, or a reload replaced the targets: pick again."""
        target = self._pick(runtime, flow.client)
        if target is None:
            self.end_flow(flow, "NoTargetAvailable")
            runtime.stats.udp_dropped_packets += 1
            runtime.stats.processed_packets += 1
            return False
        flow.runtime = runtime
        if target.key == flow.target.key:
            flow.target = target  # same target, newer snapshot: keep the socket
            return True
        log.info(
            "%s %s: UDP flow from %s:%s moves from target %s to %s",
            runtime.load_balancer.name,
            runtime.name,
            flow.client[0],
            flow.client[1],
            flow.target.label,
            target.label,
        )
        flow.disconnect()
        if not flow.connect(target):
            self.end_flow(flow, "TargetConnectionError")
            return False
        target.stats.requests += 1
        return True

    def _pick(self, runtime: ListenerRuntime, client: tuple[str, int]) -> Target | None:
        group = runtime.target_group
        if group is None:
            return None
        # NLB hashes protocol, source IP:port and destination IP:port; the same bytes as TCP's flow key
        # apart from the protocol, so every worker and node agrees.
        key = f"udp|{client[0]}|{client[1]}|{self.local[0]}|{self.local[1]}".encode()
        target: Target | None = group.pick(key)
        if target is None:
            UDP_WARNINGS.warning(
                log,
                f"no-target:{runtime.key}",
                "%s %s: no routable target in target group %s; dropping datagrams from %s:%s",
                runtime.load_balancer.name,
                runtime.name,
                group.name,
                client[0],
                client[1],
            )
        return target

    def reply(self, data: memoryview, client: tuple[str, int]) -> bool:
        try:
            self.sendto(data, client)
        except OSError:
            return False
        return True

    # -- idle expiry ------------------------------------------------------------------------------------

    def _arm_sweep(self) -> None:
        interval = self.runtime.udp_idle_timeout / SWEEPS_PER_TIMEOUT
        self.sweeper = self.loop.call_later(interval, self.sweep)

    def sweep(self) -> None:
        expired = []
        for flow in self.flows.values():
            moved = flow.packets_in + flow.packets_out
            if moved != flow.packets_at_sweep:
                flow.packets_at_sweep = moved
                flow.quiet_sweeps = 0
            else:
                flow.quiet_sweeps += 1
                if flow.quiet_sweeps >= SWEEPS_PER_TIMEOUT:
                    expired.append(flow)
        for flow in expired:
            flow.runtime.stats.idle_timeouts += 1
            self.end_flow(flow, "-")
        self._arm_sweep()

    def end_flow(self, flow: UdpFlow, error_reason: str) -> None:
        if self.flows.get(flow.client) is flow:
            del self.flows[flow.client]
        flow.disconnect()
        flow.runtime.stats.udp_active_flows -= 1
        if flow.runtime.flow_log is not None:
            flow.log(error_reason)


class UdpFlow:
    """One client's flow: its connected socket to the target, and its counters."""

    def __init__(
        self, listener: UdpListenerSide, runtime: ListenerRuntime, client: tuple[str, int], target: Target
    ) -> None:
        self.listener = listener
        self.runtime = runtime
        self.stats = runtime.stats
        self.client = client
        self.target = target
        self.sock: socket.socket | None = None
        self.fd = -1
        self.send: Callable[[memoryview], int] | None = None
        self.recv_into: Callable[[bytearray], int] | None = None
        self.packets_in = 0
        self.packets_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.dropped = 0
        self.packets_at_sweep = 0
        self.quiet_sweeps = 0
        self.created_at = monotonic()

    def connect(self, target: Target) -> bool:
        """A socket connected to ``target``: UDP connect only sets the peer, so it never blocks."""
        family = socket.AF_INET6 if ":" in target.id else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect((target.id, target.port))
        except OSError as exc:
            sock.close()
            self.stats.target_connection_errors += 1
            target.stats.connection_errors += 1
            log.warning("UDP socket to target %s failed: %s", target.label, exc)
            return False
        self.sock = sock
        self.fd = sock.fileno()
        self.send = sock.send
        self.recv_into = sock.recv_into
        self.target = target
        self.listener.loop.add_reader(self.fd, self.readable)
        return True

    def disconnect(self) -> None:
        if self.sock is not None:
            self.listener.loop.remove_reader(self.fd)
            self.sock.close()
            self.sock = None
            self.send = self.recv_into = None
            self.fd = -1

    def from_client(self, data: memoryview, size: int) -> None:
        stats = self.stats
        stats.processed_packets += 1
        stats.udp_processed_bytes += size
        self.packets_in += 1
        self.bytes_in += size
        send = self.send
        if send is None:
            return
        try:
            send(data)
        except OSError:
            # Full socket buffer, or an ICMP error from the target (ECONNREFUSED): UDP drops.
            self.dropped += 1
            stats.udp_dropped_packets += 1

    def readable(self) -> None:
        """Datagrams from the target: each goes back to the client from the listener's socket."""
        recv_into = self.recv_into
        listener = self.listener
        buffer = listener.buffer
        view = listener.view
        stats = self.stats
        client = self.client
        for _ in range(BATCH):
            if recv_into is None or self.recv_into is None:
                return
            try:
                size = recv_into(buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # ECONNREFUSED and friends: the target's port is closed. Health checks decide whether it
                # is dead (NLB has no passive checks for UDP); the error itself is only consumed.
                return
            stats.processed_packets += 1
            stats.udp_processed_bytes += size
            self.packets_out += 1
            self.bytes_out += size
            if not listener.reply(view[:size], client):
                self.dropped += 1
                stats.udp_dropped_packets += 1

    def log(self, error_reason: str) -> None:
        """One access-log line per flow when it ends, in the format of lbd's TCP flow lines."""
        flow_log = self.runtime.flow_log
        assert flow_log is not None
        now = monotonic()
        listener = self.runtime.listener
        flow_log.emit(
            {
                "type": "udp",
                "version": "1.0",
                "time": timestamp(flow_log.wall(now)),
                "elb": flow_log.elb,
                "listener": f"{listener.protocol}:{listener.port}",
                "client:port": f"{self.client[0]}:{self.client[1]}",
                "destination:port": self.target.label,
                "connection_time": round((now - self.created_at) * 1000),
                "received_bytes": self.bytes_in,
                "sent_bytes": self.bytes_out,
                "received_packets": self.packets_in,
                "sent_packets": self.packets_out,
                "dropped_packets": self.dropped,
                "connection_creation_time": timestamp(flow_log.wall(self.created_at)),
                "error_reason": error_reason,
            },
            kind="udp",
        )
