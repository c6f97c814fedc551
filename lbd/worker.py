"""A worker process: one uvloop event loop serving every listener through its own SO_REUSEPORT sockets.

The supervisor starts each worker as ``python -m lbd.worker --control-fd N`` and drives it over the
control channel (lbd/control.py):

- ``start`` / ``prepare``: build a Snapshot from the config the supervisor validated (plain data,
  lbd/config/plain.py: a worker imports neither pydantic nor yaml) and bind the sockets of listeners that
  are new; nothing is served yet. Answered with ``prepared`` (ok or the error).
- ``commit``: swap the prepared Snapshot in. Unchanged listeners keep their sockets (no accept backlog is
  lost), new ones start accepting, removed ones stop accepting while their open flows run on (drain).
- ``abort``: drop the prepared Snapshot and close the sockets it bound.

SIGTERM/SIGINT (or the supervisor going away) starts a graceful shutdown: stop accepting, wait for open
flows up to ``node.shutdown_timeout_seconds``, force-close the rest, exit 0.
"""

from __future__ import annotations

import asyncio
import gc
import getopt
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import uvloop

from lbd.config.plain import thaw
from lbd.control import ControlProtocol, Message
from lbd.gateway import access_keys
from lbd.http.access import HttpAccessLog
from lbd.http.proxy import HttpClientSide
from lbd.http.upstream import UpstreamPool
from lbd.l4.tcp import TcpClientSide
from lbd.l4.udp import UdpListenerSide
from lbd.listener.accept import Acceptor
from lbd.listener.alpn import AlpnSwitch, PriorKnowledge, load_h2
from lbd.listener.proxy import ClientAddressShim, ProxiedClient, ProxyHeaderReceiver, assign_client
from lbd.listener.sockets import BindError, bind_listener
from lbd.listener.tls import tls_protocol
from lbd.listener.tracker import ConnectionTracker
from lbd.observe.access_log import AccessLogs
from lbd.observe.logs import setup_logging
from lbd.observe.ratelimit import ACCEPT_WARNINGS
from lbd.observe.stats import StatsRegistry
from lbd.runtime import HttpListenerRuntime, ListenerKey, ListenerRuntime, Snapshot, UnsupportedConfig
from lbd.waf.acl import WafState

if TYPE_CHECKING:
    from lbd.edge.runtime import EdgeListenerRuntime
    from lbd.edge.store import EdgeState
    from lbd.gateway.listener import ApiListenerRuntime
    from lbd.gateway.websocket.listener import WebSocketListenerRuntime
    from lbd.upstream.registry import Overlay

log = logging.getLogger("lbd.worker")


@dataclass
class BoundListener:
    """A listening socket and the listener runtime new connections on it are served with."""

    key: ListenerKey
    sock: socket.socket
    runtime: ListenerRuntime
    server: Acceptor | UdpListenerSide | None = None


@dataclass
class PreparedReload:
    snapshot: Snapshot
    new_sockets: dict[ListenerKey, socket.socket] = field(default_factory=dict)


class Worker:
    def __init__(self, worker_id: int, control_fd: int) -> None:
        self.worker_id = worker_id
        self.control_fd = control_fd
        self.snapshot: Snapshot | None = None
        self.listeners: dict[ListenerKey, BoundListener] = {}
        self.prepared: dict[int, PreparedReload] = {}
        self.stats = StatsRegistry()
        self.tracker = ConnectionTracker()
        self.pool: UpstreamPool | None = None
        self.control: ControlProtocol | None = None
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.health: dict[str, dict[str, bool]] = {}  # target group -> "id:port" -> routable
        self.access_logs = AccessLogs()
        self.listener_types: dict[tuple[str, str], str] = {}  # (load balancer, listener) -> type
        self._ticker: asyncio.TimerHandle | None = None
        self.waf = WafState()  # web ACL counters and rate windows, kept across generations

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.pool = UpstreamPool()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        # SIGHUP goes to the supervisor, which validates and fans the reload out; a worker ignores it.
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
        # logrotate: the supervisor passes SIGUSR1 on; every access-log file is reopened.
        loop.add_signal_handler(signal.SIGUSR1, self.access_logs.reopen)
        sock = socket.socket(fileno=self.control_fd)
        # Created before connecting: uvloop may deliver data before create_unix_connection returns.
        self.control = ControlProtocol(self._on_message, self._stop.set)
        control = self.control
        await loop.create_unix_connection(lambda: control, sock=sock)
        self._ticker = loop.call_later(1.0, self._tick)
        await self._stop.wait()
        if self._ticker is not None:
            self._ticker.cancel()
        await self.shutdown()
        return 0

    # -- control messages ------------------------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        op = message.get("op")
        generation = int(message.get("generation", 0))
        if op == "prepare":
            self._send(
                self._prepare(
                    generation,
                    message["config"],
                    message.get("overlay") or {},
                    int(message.get("workers") or 1),
                )
            )
        elif op == "commit":
            self._commit(generation)
            self._send({"op": "committed", "generation": generation})
        elif op == "abort":
            self._abort(generation)
        elif op == "stats":
            self._send(
                {
                    "op": "stats",
                    "generation": generation,
                    "listeners": self._stats_report(),
                    "target_groups": self._target_group_report(),
                    "targets": [
                        {"target_group": group, "target": target, **stats.as_dict()}
                        for (group, target), stats in self.stats.targets()
                    ],
                    "distributions": edge_state.report() if (edge_state := _edge_state()) else [],
                    "apis": _api_report(),
                    "web_acls": self.waf.report(),
                }
            )
        elif op == "health":
            self._health(message.get("routable") or {}, message.get("passed") or {})
        elif op == "in_flight":
            self._send({"op": "in_flight", "generation": generation, "targets": self._in_flight()})
        elif op == "close_target":
            self._close_target(str(message["target_group"]), str(message["target"]))
        elif op == "invalidate":  # a distribution's invalidation, from lbd/admin/edge.py
            edge_state = _edge_state()
            removed = (
                edge_state.invalidate(str(message["distribution"]), list(message["paths"]))
                if edge_state
                else 0
            )
            self._send({"op": "invalidated", "generation": generation, "removed": removed})
        elif op in ("api_keys", "api_usage", "api_cache_flush"):
            from lbd.gateway.control import on_message

            reply = on_message(message, self.snapshot)
            if reply is not None:
                loop = asyncio.get_running_loop()
                task = loop.create_task(self._reply_later(reply))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        elif op == "ws_connection":  # the @connections API (lbd/gateway/websocket/connections.py)
            from lbd.gateway.websocket import connections

            shared = self.snapshot.config.shared_state if self.snapshot is not None else None
            task = asyncio.get_running_loop().create_task(
                self._reply_later(connections.on_message(message, shared))
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif op == "access_keys":  # IAM authorizers' keys, from lbd/admin/access_keys.py
            access_keys.install_message(message.get("keys") or [])
            self._send({"op": "access_keys_applied", "generation": generation})
        else:
            log.error("worker %d: unknown control message %r", self.worker_id, op)

    async def _reply_later(self, reply: Any) -> None:
        self._send(await reply)

    def _health(self, routable: dict[str, dict[str, bool]], passed: dict[str, list[str]]) -> None:
        """Verdicts of the node's health checker: a full routable map, and/or targets that just passed."""
        if routable:
            self.health = routable
        if self.snapshot is not None:
            for name, group in self.snapshot.target_groups.items():
                group.apply_health(self.health.get(name, {}), passed.get(name, ()))

    def _attach_access_logs(self, snapshot: Snapshot) -> None:
        if snapshot.config.apis:
            from lbd.gateway.control import attach_access_logs

            attach_access_logs(snapshot, self.access_logs)
        for runtime in snapshot.listeners.values():
            if runtime.kind == "edge":  # a distribution's CloudFront-format log (lbd/edge/runtime.py)
                from lbd.edge.runtime import attach_log as attach_edge_log

                attach_edge_log(cast("EdgeListenerRuntime", runtime).distribution, self.access_logs)
                continue
            settings = runtime.load_balancer.access_log
            if settings is None:
                continue
            prefix = "app" if runtime.load_balancer.type == "application" else "net"
            log_file = self.access_logs.get(
                settings.path, settings.format, f"{prefix}/{runtime.load_balancer.name}"
            )
            if isinstance(runtime, HttpListenerRuntime):
                runtime.access_log = HttpAccessLog(log_file, runtime)
            else:
                runtime.flow_log = log_file

    def _in_flight(self) -> dict[str, dict[str, int]]:
        """Requests (application) and flows (network) now talking to each target, over every generation."""
        counts: dict[str, dict[str, int]] = {}
        for connection in self.tracker.connections:
            using = connection.target_in_use()
            if using is not None:
                per_group = counts.setdefault(using[0], {})
                per_group[using[1]] = per_group.get(using[1], 0) + 1
        return counts

    def _close_target(self, group: str, key: str) -> None:
        """A deregistration delay ended: close what still talks to that target (ELB does the same)."""
        closed = 0
        for connection in list(self.tracker.connections):
            if connection.target_in_use() == (group, key):
                connection.abort()
                closed += 1
        if closed:
            log.info(
                "worker %d: closed %d connection(s) to deregistered target %s of %s",
                self.worker_id,
                closed,
                key,
                group,
            )

    def _tick(self) -> None:
        """Once a second: slow-start ramps, the end of outlier ejections, renewed certificates."""
        if self.snapshot is not None:
            for group in self.snapshot.target_groups.values():
                group.tick()
            for runtime in self.snapshot.listeners.values():
                if runtime.tls is not None:
                    runtime.tls.renew()
        self.waf.sweep(time.monotonic())
        self._ticker = asyncio.get_running_loop().call_later(1.0, self._tick)

    def _target_group_report(self) -> list[Message]:
        if self.snapshot is None:
            return []
        return [group.report() for group in self.snapshot.target_groups.values()]

    def _send(self, message: Message) -> None:
        if self.control is not None:
            self.control.send(message)

    def _prepare(
        self, generation: int, config: dict[str, Any], overlay: Overlay, workers: int = 1
    ) -> Message:
        """``config``: validated, classic listeners expanded, the admin API's web ACLs and the registrations
        applied by the supervisor; ``overlay`` still says which targets drain."""
        try:
            self.waf.workers = workers
            snapshot = Snapshot.build(thaw(config), generation, self.stats, self.waf)
        except UnsupportedConfig as exc:
            return {"op": "prepared", "generation": generation, "ok": False, "error": str(exc)}
        self._attach_access_logs(snapshot)
        for name, change in overlay.items():
            group = snapshot.target_groups.get(name)
            if group is not None:
                group.set_draining(change.get("draining", ()))
        prepared = PreparedReload(snapshot)
        try:
            for key in snapshot.listeners:
                if key not in self.listeners:
                    prepared.new_sockets[key] = bind_listener(key)
        except BindError as exc:
            for sock in prepared.new_sockets.values():
                sock.close()
            return {"op": "prepared", "generation": generation, "ok": False, "error": str(exc)}
        self.prepared[generation] = prepared
        return {"op": "prepared", "generation": generation, "ok": True}

    def _commit(self, generation: int) -> None:
        prepared = self.prepared.pop(generation)
        snapshot = prepared.snapshot
        loop = asyncio.get_running_loop()
        for key, bound in list(self.listeners.items()):
            if key in snapshot.listeners:
                bound.runtime = snapshot.listeners[key]
            else:
                # Removed: stop accepting; flows already open keep their old listener runtime and drain.
                if bound.server is not None:
                    bound.server.close()
                del self.listeners[key]
                log.info("worker %d: stopped listening on %s", self.worker_id, key)
        for key, sock in prepared.new_sockets.items():
            bound = BoundListener(key, sock, snapshot.listeners[key])
            self.listeners[key] = bound
            task = loop.create_task(self._serve(bound))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self.snapshot is not None and self.snapshot.config.apis:
            from lbd.gateway.control import retire

            retire(self.snapshot, snapshot)
        self.snapshot = snapshot
        if any(_offers_h2(runtime) for runtime in snapshot.listeners.values()):
            load_h2()  # now rather than in the first h2 connection's handshake
        edge_state = _edge_state()
        if edge_state is not None:
            edge_state.keep({d.name for d in snapshot.config.distributions})  # removed ones' caches go
        for runtime in snapshot.listeners.values():
            self.listener_types[(runtime.load_balancer.name, runtime.name)] = runtime.load_balancer.type
        for name, group in snapshot.target_groups.items():
            group.apply_health(self.health.get(name, {}))
        if self.pool is not None:
            self.pool.retire(generation)
        log.debug("worker %d: generation %d in service", self.worker_id, generation)

    def _abort(self, generation: int) -> None:
        prepared = self.prepared.pop(generation, None)
        if prepared is not None:
            for sock in prepared.new_sockets.values():
                sock.close()

    async def _serve(self, bound: BoundListener) -> None:
        tracker = self.tracker
        pool = self.pool
        assert pool is not None
        loop = asyncio.get_running_loop()
        if bound.key.transport == "udp":
            bound.server = UdpListenerSide(bound.sock, bound)
            bound.server.start()
            return

        def serve(runtime: ListenerRuntime, client: ProxiedClient | None) -> asyncio.BaseProtocol:
            app: asyncio.Protocol
            if runtime.kind == "edge":  # a distribution's viewer listener (lbd/edge/server.py)
                edge = cast("EdgeListenerRuntime", runtime)
                if edge.tls is not None and "h2" in edge.tls.alpn:
                    app = cast(
                        asyncio.Protocol, AlpnSwitch(cast(HttpListenerRuntime, edge), tracker, pool, bound)
                    )
                else:
                    from lbd.edge.server import EdgeClientSide

                    app = cast(asyncio.Protocol, EdgeClientSide(edge, tracker, pool, bound))
            elif runtime.kind == "api":
                from lbd.gateway.server import GatewayClientSide

                app = GatewayClientSide(cast("ApiListenerRuntime", runtime), tracker)
            elif runtime.kind == "websocket":
                from lbd.gateway.websocket.server import WebSocketClientSide

                app = WebSocketClientSide(cast("WebSocketListenerRuntime", runtime), tracker)
            elif isinstance(runtime, HttpListenerRuntime):
                if runtime.tls is not None and "h2" in runtime.tls.alpn:
                    # ALPN picks h2 or HTTP/1.1 once the handshake is done.
                    app = cast(asyncio.Protocol, AlpnSwitch(runtime, tracker, pool, bound))
                elif runtime.listener.h2c:
                    app = cast(asyncio.Protocol, PriorKnowledge(runtime, tracker, pool, bound))
                else:
                    # An extension type when compiled, not an asyncio.Protocol subclass: it has its methods.
                    app = cast(asyncio.Protocol, HttpClientSide(runtime, tracker, pool, bound))
            else:
                app = cast(asyncio.Protocol, TcpClientSide(runtime, tracker))
            if client is not None:
                assign_client(app, client)  # before connection_made: TCP hashes the flow there
            if runtime.tls is not None:
                inner = app if client is None else cast(asyncio.Protocol, ClientAddressShim(app, client))
                return tls_protocol(inner, runtime.tls.context, runtime.stats, loop)
            return app

        def accept() -> asyncio.BaseProtocol:
            # Read at accept time, so a reload re-points new connections without touching the socket.
            runtime = bound.runtime
            if runtime.proxy_sources:
                return ProxyHeaderReceiver(runtime, serve)
            return serve(runtime, None)

        def admit(pending: int) -> bool:
            # max_connections (per worker): over it, a connection is closed at once (RejectedConnectionCount).
            limit = bound.runtime.listener.max_connections
            return limit is None or bound.runtime.stats.active_connections + pending < limit

        def rejected(count: int, error: OSError | None) -> None:
            runtime = bound.runtime
            runtime.stats.rejected_connections += count
            why = (
                "max_connections reached" if error is None else f"out of file descriptors ({error.strerror})"
            )
            ACCEPT_WARNINGS.warning(
                log,
                f"{bound.key}:{error is None}",
                "worker %d: %s %s: %s; closed %d new connection(s)",
                self.worker_id,
                runtime.load_balancer.name,
                runtime.name,
                why,
                count,
            )

        bound.server = Acceptor(bound.sock, accept, admit, rejected)
        bound.server.start()

    def _stats_report(self) -> list[Message]:
        return [
            {
                "load_balancer": lb,
                "listener": name,
                "type": self.listener_types.get((lb, name), "application"),
                **stats.as_dict(),
            }
            for (lb, name), stats in self.stats.items()
        ]

    # -- shutdown --------------------------------------------------------------------------------------

    async def shutdown(self) -> None:
        for bound in self.listeners.values():
            if bound.server is not None:
                bound.server.close()
            else:
                bound.sock.close()
        self.listeners.clear()
        deadline = self.snapshot.config.node.shutdown_timeout_seconds if self.snapshot else 0.0
        self.tracker.drain_all()
        if self.tracker:
            log.info(
                "worker %d: draining %d open connections (up to %.0f s)",
                self.worker_id,
                len(self.tracker),
                deadline,
            )
            try:
                await asyncio.wait_for(self.tracker.wait_empty(), deadline)
            except TimeoutError:
                log.warning(
                    "worker %d: shutdown deadline reached, closing %d connections",
                    self.worker_id,
                    len(self.tracker),
                )
                self.tracker.abort_all()
        if self.pool is not None:
            self.pool.close_all()
        self.access_logs.close()
        # Let aborted transports run their connection_lost callbacks before the loop stops.
        await asyncio.sleep(0)


def _offers_h2(runtime: ListenerRuntime) -> bool:
    if not isinstance(runtime, HttpListenerRuntime):
        return False
    return runtime.listener.h2c or (runtime.tls is not None and "h2" in runtime.tls.alpn)


def _api_report() -> list[Message]:
    # Loaded with the first API listener; never imported here, where a worker out of descriptors (EMFILE)
    # could not open the module's file and would fail the whole stats reply.
    stats = sys.modules.get("lbd.gateway.stats")
    return stats.registry().report() if stats is not None else []


def main(argv: list[str] | None = None) -> int:
    # getopt, not argparse: the supervisor is the only caller, and argparse would cost every worker
    # half a megabyte of memory for these four options.
    options, _ = getopt.gnu_getopt(
        sys.argv[1:] if argv is None else argv, "", ["control-fd=", "worker-id=", "log-level=", "log-format="]
    )
    given = {name.removeprefix("--"): value for name, value in options}
    if "control-fd" not in given:
        sys.exit("lbd.worker: --control-fd is required (workers are started by lbd run)")
    setup_logging(
        given.get("log-level", os.environ.get("LBD_LOG_LEVEL", "info")),
        given.get("log-format", os.environ.get("LBD_LOG_FORMAT", "text")),
        process=f"worker-{given.get('worker-id', '0')}",
    )
    _tune_gc()
    worker = Worker(int(given.get("worker-id", "0")), int(given["control-fd"]))
    return uvloop.run(worker.run())


def _tune_gc() -> None:
    """What is loaded at start (modules, classes) is never garbage: frozen out of the cyclic GC's scans.
    Requests allocate many short-lived containers that refcounting frees; with the default threshold
    (700 net allocations) the in-flight ones of a busy worker (a thousand HTTP/2 streams, say) were
    scanned and promoted over and over, a fifth of the worker's time. Cycles are still collected."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


def _edge_state() -> EdgeState | None:
    """The distributions' caches (lbd/edge/store.py), if this worker ever served one: the edge loads with
    the first Snapshot that has a distribution (lbd/runtime.py), and a worker without one never holds it
    (2 MiB; issue 11, footprint)."""
    store = sys.modules.get("lbd.edge.store")
    return cast("EdgeState", store.STATE) if store is not None else None


if __name__ == "__main__":
    sys.exit(main())
