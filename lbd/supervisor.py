"""The supervisor: ``lbd run``. Starts the workers, owns reload, shutdown, the admin API and sd_notify.

Process model:

- Every worker is ``python -m lbd.worker``, started fresh (no fork of a running event loop) and driven over
  a control socketpair. Each binds its own SO_REUSEPORT sockets.
- The config is validated (``load_for_run``, what ``lbd check`` runs) in a short-lived child process, at
  start and on every reload (lbd/validator.py): the supervisor holds the answer as plain records, never
  yaml, pydantic or the schema (issue 11, footprint; tests/test_supervisor_footprint.py).
- Reload (SIGHUP or ``POST /v1/reload``) is two-phase so that either every worker moves to the new config
  or none does: the supervisor validates the file, then asks every worker to *prepare* (parse, build the
  Snapshot, bind new sockets); only if all succeed does it send *commit*, else *abort*. An invalid file
  is logged with every error and the old config keeps serving. A config from an etcd key (``-c
  etcd://...``) is reloaded so whenever the key changes too (lbd/discovery/config_key.py watches it).
- Shutdown (SIGTERM/SIGINT): readiness turns 503, workers stop accepting, drain their flows for up to
  ``node.shutdown_timeout_seconds`` and exit; the supervisor exits 0.
- A worker that dies is restarted with the current config, with exponential backoff.

Exit codes: 0 clean shutdown, 1 internal error, 2 invalid config (anything ``lbd check`` refuses: the
same checks), 3 a listener or the admin API could not bind, 4 workers could not be started, 5 the config's
etcd key could not be read (no member answered).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import uvloop

from lbd import systemd, validator
from lbd.admin.access_keys import AccessKeyAdmin
from lbd.admin.edge import EdgeAdmin
from lbd.admin.fleet import fleet_view
from lbd.admin.gateway import GatewayAdmin
from lbd.admin.server import AdminRequest, AdminResponse, AdminServer, Router, start_admin_server
from lbd.admin.web_acls import WebAclControl
from lbd.admin.websocket import ConnectionsAdmin
from lbd.config.issues import ConfigError
from lbd.config.plain import compact, fields
from lbd.config.source import SourceUnavailable, is_etcd
from lbd.console import web as console
from lbd.control import ControlProtocol, Message
from lbd.discovery.node import NodeDiscovery, Targets
from lbd.health.checker import HealthChecker
from lbd.listener.sockets import BindError, probe_free
from lbd.observe import edge_summary
from lbd.observe.logs import FORMATS, LEVELS, setup_logging
from lbd.observe.metrics import METRICS_CONTENT_TYPE, NodeStats, render
from lbd.observe.summary import summary
from lbd.routing.cookie_keys import cookie_key
from lbd.runtime import ListenerKey, UnsupportedConfig, listener_keys
from lbd.upstream.registry import (
    Registry,
    apply_overlay,
    load_registry,
    parse_target_key,
    save_registry,
    state_path,
    target_key,
)
from lbd.validator import LoadedConfig, read_token

if TYPE_CHECKING:
    from lbd.config.schema import Config, TargetGroup
    from lbd.discovery.config_key import ConfigKeyWatch

log = logging.getLogger("lbd.supervisor")
config_log = logging.getLogger("lbd.config")  # config files read, accepted or rejected

EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_BIND, EXIT_WORKERS = 0, 1, 2, 3, 4
EXIT_SOURCE = 5  # the config's etcd key could not be read: no member answered (lbd/config/source.py)
WORKER_REPLY_TIMEOUT = 30.0
RESTART_BACKOFF_MAX = 30.0


class StartupError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class ReloadResult:
    ok: bool
    generation: int
    errors: list[str] = field(default_factory=list)


def load_checked(path: str) -> LoadedConfig:
    """Every check before binding; the same function ``lbd check`` runs (lbd/config/preflight.py), in a
    child process (lbd/validator.py) so that the supervisor never holds yaml, pydantic or the schema."""
    return validator.load(path)


def config_errors(exc: Exception) -> list[str]:
    if isinstance(exc, ConfigError):
        return [str(issue) for issue in exc.issues]
    return [str(exc)]


class WorkerHandle:
    """One worker process and its control channel, with request/reply over the channel."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.channel: ControlProtocol | None = None
        self._waiters: dict[tuple[str, int], asyncio.Future[Message]] = {}
        self.started_at = 0.0

    async def spawn(self, log_level: str, log_format: str) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "lbd.worker",
                "--control-fd",
                str(child.fileno()),
                "--worker-id",
                str(self.index),
                "--log-level",
                log_level,
                "--log-format",
                log_format,
                pass_fds=(child.fileno(),),
            )
        finally:
            child.close()
        loop = asyncio.get_running_loop()
        # Created before connecting: uvloop may deliver data before create_unix_connection returns.
        channel = self.channel = ControlProtocol(self._on_message, self._on_close)
        await loop.create_unix_connection(lambda: channel, sock=parent)
        self.started_at = time.monotonic()

    def _on_message(self, message: Message) -> None:
        key = (str(message.get("op")), int(message.get("generation", 0)))
        waiter = self._waiters.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(message)

    def _on_close(self) -> None:
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError(f"worker {self.index} went away"))
        self._waiters.clear()

    async def request(self, message: Message, reply_op: str) -> Message:
        if self.channel is None:
            raise ConnectionError(f"worker {self.index} is not running")
        key = (reply_op, int(message.get("generation", 0)))
        waiter: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiters[key] = waiter
        self.channel.send(message)
        return await asyncio.wait_for(waiter, WORKER_REPLY_TIMEOUT)

    def send(self, message: Message) -> None:
        if self.channel is not None:
            self.channel.send(message)

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signum)


class Supervisor:
    def __init__(self, loaded: LoadedConfig, workers: int, log_level: str, log_format: str) -> None:
        self.current = loaded
        self.worker_count = workers
        self.log_level = log_level
        self.log_format = log_format
        self.generation = 1
        self.workers = [WorkerHandle(i) for i in range(workers)]
        self.ready = False
        self.stopping = False
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._admin: AdminServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stats_seq = 0
        self.checker: HealthChecker | None = None
        self.registry = Registry()
        self.state_file = state_path(loaded.config, loaded.path)
        self.gateway = GatewayAdmin(self)
        self.access_keys: AccessKeyAdmin | None = None  # IAM authorizers' keys (lbd/admin/access_keys.py)
        self.discovery = NodeDiscovery(self._discovered)  # target discovery, once per node
        # Web ACLs replaced through the admin API, by name (lbd/admin/web_acls.py), sent with every prepare.
        self.web_acl_overrides: dict[str, Any] = {}
        self.web_acls = WebAclControl(self)
        self.config_watch: ConfigKeyWatch | None = None  # -c etcd://...: the key, watched
        self._config_watch_task: asyncio.Task[None] | None = None
        self.edge = EdgeAdmin(self._tell_workers, lambda: self.current.config)  # distributions' endpoints

    # -- lifecycle -------------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._spawn_task, self.reload)
        # logrotate's postrotate: every worker reopens its access-log files.
        loop.add_signal_handler(signal.SIGUSR1, self._signal_workers, signal.SIGUSR1)
        # One stickiness cookie key for all workers (inherited through the environment), so a cookie set
        # by one worker is honoured by the others and by restarted ones.
        cookie_key()
        _warn_about_the_build()
        self.checker = HealthChecker(self._broadcast_health)
        try:
            self.registry = self._load_registry()
            await self.web_acls.restore()  # the admin API's web ACL changes saved in state_dir
            self._load_api_keys()
            self.access_keys = self._open_access_keys()
            self._probe_listeners(set())
            await self._start_admin()
            await asyncio.gather(*(self._start_worker(w) for w in self.workers))
            self._update_checker()
            self._update_discovery()
        except StartupError as exc:
            log.error("%s", exc)
            await self._stop_workers(deadline=5.0)
            return exc.exit_code
        for worker in self.workers:
            self._spawn_task(self._watch, worker)
        self._spawn_task(self._drain_loop)
        self._spawn_task(self.web_acls.watch_files, lambda: self.stopping)
        self._watch_config_key()
        self.ready = True
        listeners = ", ".join(str(key) for key in self._snapshot_keys(self.current.config))
        log.info(
            "lbd ready: %d worker(s), config %s (generation %d), listening on %s",
            self.worker_count,
            self.current.path,
            self.generation,
            listeners or "nothing",
        )
        systemd.ready(f"serving {listeners}")
        await self._stop.wait()
        return await self.shutdown()

    async def shutdown(self) -> int:
        self.stopping = True
        self.ready = False
        systemd.stopping()
        deadline = self.current.config.node.shutdown_timeout_seconds
        log.info("shutting down: draining connections for up to %.0f s", deadline)
        if self.checker is not None:
            self.checker.stop()
        if self._config_watch_task is not None:
            self._config_watch_task.cancel()
        await self.discovery.stop()
        clean = await self._stop_workers(deadline + 5.0)
        if self._admin is not None:
            await self._admin.close()
        log.info("lbd stopped")
        return EXIT_OK if clean else EXIT_ERROR

    async def _stop_workers(self, deadline: float) -> bool:
        """SIGTERM every worker at once and wait for all of them together: one deadline for the node, not
        one per worker in turn (which would let shutdown take workers x deadline)."""
        running = [w for w in self.workers if w.process is not None and w.process.returncode is None]
        for worker in running:
            worker.signal(signal.SIGTERM)
        codes = await asyncio.gather(*(self._wait_worker(worker, deadline) for worker in running))
        return all(code == 0 for code in codes)

    async def _wait_worker(self, worker: WorkerHandle, deadline: float) -> int:
        assert worker.process is not None
        try:
            return await asyncio.wait_for(worker.process.wait(), deadline)
        except TimeoutError:
            log.error("worker %d did not stop in time; killing it", worker.index)
            worker.signal(signal.SIGKILL)
            return await worker.process.wait()

    def _signal_workers(self, signum: int) -> None:
        for worker in self.workers:
            worker.signal(signum)

    def _spawn_task(self, func: Any, *args: Any) -> None:
        task = asyncio.get_running_loop().create_task(func(*args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- workers ---------------------------------------------------------------------------------------

    async def _start_worker(self, worker: WorkerHandle) -> None:
        try:
            await worker.spawn(self.log_level, self.log_format)
            if self.access_keys is not None:  # ahead of the first generation on the ordered channel
                worker.send(self.access_keys.message())
            worker.send(self.gateway.keys_message())  # API keys: also before the first request
            message = self._prepare_message(self.generation, self.current.config, self.registry)
            reply = await worker.request(message, "prepared")
        except (OSError, ConnectionError, TimeoutError) as exc:
            raise StartupError(f"worker {worker.index} failed to start: {exc}", EXIT_WORKERS) from exc
        if not reply.get("ok"):
            raise StartupError(f"worker {worker.index}: {reply.get('error')}", EXIT_BIND)
        await worker.request({"op": "commit", "generation": self.generation}, "committed")
        if self.checker is not None:
            worker.send({"op": "health", "routable": self.checker.routable()})

    def _broadcast_health(self, routable: dict[str, dict[str, bool]], passed: dict[str, list[str]]) -> None:
        for worker in self.workers:
            worker.send({"op": "health", "routable": routable, "passed": passed})

    async def _watch(self, worker: WorkerHandle) -> None:
        """Restart a worker that exits while lbd is running, backing off if it keeps dying."""
        backoff = 0.5
        while True:
            assert worker.process is not None
            code = await worker.process.wait()
            if self.stopping:
                return
            uptime = time.monotonic() - worker.started_at
            if uptime > 60:
                backoff = 0.5
            log.error(
                "worker %d exited with code %s after %.1f s; restarting in %.1f s",
                worker.index,
                code,
                uptime,
                backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_BACKOFF_MAX)
            if self.stopping:
                return
            async with self._reload_lock:
                try:
                    await self._start_worker(worker)
                except StartupError as exc:
                    log.error("%s", exc)
                    continue
            log.info("worker %d restarted", worker.index)

    # -- reload ----------------------------------------------------------------------------------------

    async def reload(self) -> ReloadResult:
        async with self._reload_lock:
            systemd.reloading()
            try:
                return await self._reload()
            finally:
                systemd.ready(f"generation {self.generation}")

    async def _reload(self) -> ReloadResult:
        path = self.current.path
        config_log.info("reloading %s", path)
        try:
            loaded = await validator.load_async(path)
            self._probe_listeners(set(self._snapshot_keys(self.current.config)), loaded.config)
        except (ConfigError, UnsupportedConfig, StartupError) as exc:
            errors = config_errors(exc)
            for error in errors:
                config_log.error("reload rejected: %s: %s", path, error)
            config_log.error(
                "reload rejected (%d error(s)); still serving generation %d", len(errors), self.generation
            )
            return ReloadResult(False, self.generation, errors)
        restore_web_acls = self.web_acls.reconcile(loaded.views["web_acls"])
        registry = copy.deepcopy(self.registry)
        # Targets the new file drops start draining (ELB deregistration), unless the API registered them.
        registry.reconcile(self.current.config, loaded.config, time.monotonic())
        old_keys = set(self._snapshot_keys(self.current.config))
        result = await self._deploy(loaded, registry)
        if not result.ok:
            restore_web_acls()
            return result
        if self.registry.added or self.registry.removed or self.state_file.exists():
            self._save_registry()  # registrations of target groups the new file dropped are forgotten
        self._update_discovery()
        new_keys = set(self._snapshot_keys(loaded.config))
        if loaded.config.admin != self.current.config.admin:
            log.warning("admin settings changed; they take effect at the next restart")
        log.info(
            "reloaded: generation %d in service (%d listener(s) added, %d removed, %d kept)",
            result.generation,
            len(new_keys - old_keys),
            len(old_keys - new_keys),
            len(new_keys & old_keys),
        )
        return result

    async def _deploy(self, loaded: LoadedConfig, registry: Registry) -> ReloadResult:
        """Move every worker to a new generation of (config, registrations), or none of them."""
        generation = self.generation + 1
        try:
            message = self._prepare_message(generation, loaded.config, registry)
        except ConfigError as exc:  # the admin API's web ACLs do not fit the new file (cross_check)
            errors = config_errors(exc)
            for error in errors:
                log.error("change rejected: %s", error)
            return ReloadResult(False, self.generation, errors)
        replies = await asyncio.gather(
            *(w.request(message, "prepared") for w in self.workers), return_exceptions=True
        )
        errors = [
            f"worker {w.index}: {r if isinstance(r, BaseException) else r.get('error')}"
            for w, r in zip(self.workers, replies, strict=True)
            if isinstance(r, BaseException) or not r.get("ok")
        ]
        if errors:
            for worker in self.workers:
                worker.send({"op": "abort", "generation": generation})
            for error in errors:
                log.error("change rejected: %s", error)
            return ReloadResult(False, self.generation, errors)
        await asyncio.gather(
            *(w.request({"op": "commit", "generation": generation}, "committed") for w in self.workers),
            return_exceptions=True,
        )
        self.current, self.generation, self.registry = loaded, generation, registry
        self._update_checker()
        return ReloadResult(True, generation)

    def _update_checker(self) -> None:
        if self.checker is not None:
            effective = apply_overlay(self.current.config, self.registry.overlay(self.current.config))
            self.checker.update(effective, set(self.registry.draining))

    def _load_registry(self) -> Registry:
        try:
            registry = load_registry(self.state_file, validator.targets)
        except (OSError, ValueError) as exc:
            raise StartupError(
                f"cannot read the registration state {self.state_file}: {exc} (fix or remove the file)",
                EXIT_CONFIG,
            ) from exc
        if registry.added or registry.removed:
            log.info("runtime registrations restored from %s", self.state_file)
        return registry

    def _load_api_keys(self) -> None:
        try:
            self.gateway.load()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StartupError(
                f"cannot read the API keys {self.gateway.path}: {exc} (fix or remove the file)", EXIT_CONFIG
            ) from exc

    # -- draining --------------------------------------------------------------------------------------

    async def _drain_loop(self) -> None:
        """Once a second: end deregistrations whose delay is over or whose target has nothing in flight."""
        while not self.stopping:
            await asyncio.sleep(1.0)
            if not self.registry.draining:
                continue
            in_flight = await self._in_flight()
            now = time.monotonic()
            idle = {
                ident
                for ident in self.registry.draining
                if in_flight is not None and not _count(in_flight, ident)
            }
            done = [i for i, d in self.registry.draining.items() if now >= d.deadline or i in idle]
            if not done:
                continue
            async with self._reload_lock:
                registry = copy.deepcopy(self.registry)
                for ident in done:
                    registry.finish(*ident)
                result = await self._deploy(self.current, registry)
            if not result.ok:
                continue
            for group, key in done:
                expired = (group, key) not in idle
                log.info(
                    "target group %s: target %s deregistered%s",
                    group,
                    key,
                    " (delay over, closing its connections)" if expired else " (nothing in flight)",
                )
                for worker in self.workers:
                    worker.send({"op": "close_target", "target_group": group, "target": key})

    async def _in_flight(self) -> dict[str, dict[str, int]] | None:
        """Connections talking to each target, summed over workers; None if a worker did not answer."""
        self._stats_seq += 1
        message = {"op": "in_flight", "generation": self._stats_seq}
        replies = await asyncio.gather(
            *(w.request(message, "in_flight") for w in self.workers), return_exceptions=True
        )
        total: dict[str, dict[str, int]] = {}
        for reply in replies:
            if isinstance(reply, BaseException):
                return None
            for group, counts in reply.get("targets", {}).items():
                for key, count in counts.items():
                    total.setdefault(group, {})[key] = total.get(group, {}).get(key, 0) + int(count)
        return total

    @staticmethod
    def _snapshot_keys(config: Config) -> list[Any]:
        # The sockets the workers' Snapshots will bind, without building one here: the supervisor holds
        # neither the data path nor listeners' TLS contexts (the workers build and check those).
        keys = [key for lb in config.load_balancers for lst in lb.listeners for key in listener_keys(lst)]
        keys += [ListenerKey(lst.address, lst.port, "tcp") for api in config.apis for lst in api.listeners]
        return list(dict.fromkeys(keys))

    def _probe_listeners(self, held: set[Any], config: Config | None = None) -> None:
        for key in self._snapshot_keys(config or self.current.config):
            if key in held:
                continue
            try:
                probe_free(key)
            except BindError as exc:
                raise StartupError(str(exc), EXIT_BIND) from exc

    # -- admin API -------------------------------------------------------------------------------------

    async def _start_admin(self) -> None:
        admin = self.current.config.admin
        try:
            token = read_token(self.current.config)  # load_for_run checked it reads and is not empty
        except OSError as exc:  # removed since, say
            raise StartupError(
                f"admin.token_file: cannot read {admin.token_file}: {exc}", EXIT_CONFIG
            ) from exc
        router = Router()
        router.add("GET", "/healthz", self._healthz)
        router.add("GET", "/readyz", self._readyz)
        router.add("POST", "/v1/reload", self._reload_endpoint)
        router.add("GET", "/v1/stats", self._stats_endpoint)
        router.add("GET", "/metrics", self._metrics_endpoint)
        router.add("GET", "/v1/target-groups", self._target_groups_endpoint)
        router.add("GET", "/v1/target-groups/{name}/targets", self._targets_endpoint)
        router.add("POST", "/v1/target-groups/{name}/targets", self._register_endpoint)
        router.add("DELETE", "/v1/target-groups/{name}/targets/{target}", self._deregister_endpoint)
        self.gateway.register(router)
        ConnectionsAdmin(self).register(router)  # WebSocket APIs' @connections
        if self.access_keys is not None:
            self.access_keys.register(router)
        self.edge.register(router)  # distributions
        router.add("GET", "/v1/fleet", self._fleet_endpoint)
        router.add("GET", "/v1/load-balancers", self._load_balancers_endpoint)
        router.add("GET", "/v1/summary", self._summary_endpoint)
        console.add_routes(router, token)  # GET /: the dashboard page, fed by the endpoints above
        self.web_acls.add_routes(router)
        try:
            self._admin = await start_admin_server(admin.listen, router, token)
        except OSError as exc:
            raise StartupError(
                f"admin.listen: cannot listen on {admin.listen}: {exc.strerror or exc}", EXIT_BIND
            ) from exc
        log.info("admin API on http://%s", admin.listen)

    async def _healthz(self, request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, {"status": "ok"})

    async def _readyz(self, request: AdminRequest) -> AdminResponse:
        if not self.ready:
            return AdminResponse(503, {"status": "stopping" if self.stopping else "starting"})
        return AdminResponse(
            200, {"status": "ready", "generation": self.generation, "workers": self.worker_count}
        )

    async def _reload_endpoint(self, request: AdminRequest) -> AdminResponse:
        result = await self.reload()
        body = {"reloaded": result.ok, "generation": result.generation, "errors": result.errors}
        return AdminResponse(200 if result.ok else 422, body)

    async def _collect(self) -> tuple[NodeStats, list[dict[str, Any]]]:
        """Every worker's counters (over the control channel), summed; and each worker's own report."""
        self._stats_seq += 1
        message = {"op": "stats", "generation": self._stats_seq}
        replies = await asyncio.gather(
            *(w.request(message, "stats") for w in self.workers), return_exceptions=True
        )
        node = NodeStats(workers=len(self.workers), generation=self.generation)
        per_worker: list[dict[str, Any]] = []
        for worker, reply in zip(self.workers, replies, strict=True):
            if isinstance(reply, BaseException):
                per_worker.append({"worker": worker.index, "error": str(reply)})
                continue
            node.add_worker(reply)
            per_worker.append(
                {
                    "worker": worker.index,
                    "listeners": reply["listeners"],
                    "target_groups": reply.get("target_groups", []),
                }
            )
        return node, per_worker

    async def _stats_endpoint(self, request: AdminRequest) -> AdminResponse:
        """Listener and target-group counters: node totals, and per worker."""
        node, per_worker = await self._collect()
        listeners = [
            {"load_balancer": lb, "listener": name, **{k: v for k, v in values.items() if isinstance(v, int)}}
            for (lb, name), values in node.listeners.items()
        ]
        target_groups = [{"target_group": name, **values} for name, values in node.target_groups.items()]
        return AdminResponse(
            200,
            {
                "generation": self.generation,
                "listeners": listeners,
                "target_groups": target_groups,
                "workers": per_worker,
            },
        )

    async def _metrics_endpoint(self, request: AdminRequest) -> AdminResponse:
        """Prometheus exposition of node totals (lbd/observe/metrics.py)."""
        node, _ = await self._collect()
        if self.checker is not None:
            for group in self.current.config.target_groups:
                node.health += [{"target_group": group.name, **t} for t in self.checker.describe(group.name)]
        node.discovery = [state.describe() for state in self.discovery.states()]
        return AdminResponse(200, render(node), METRICS_CONTENT_TYPE)

    async def _target_groups_endpoint(self, request: AdminRequest) -> AdminResponse:
        groups = []
        for group in self.current.config.target_groups:
            targets = self.checker.describe(group.name) if self.checker is not None else []
            states: dict[str, int] = {}
            for target in targets:
                states[str(target["state"])] = states.get(str(target["state"]), 0) + 1
            check = group.health_check
            groups.append(
                {
                    "name": group.name,
                    "protocol": group.protocol,
                    "algorithm": group.algorithm,
                    "targets": len(targets),
                    "states": states,
                    "health_check": fields(check) if check.enabled else {"enabled": False},
                }
            )
        return AdminResponse(200, {"target_groups": groups})

    def _target_path(self, request: AdminRequest) -> tuple[TargetGroup | None, str, AdminResponse | None]:
        """/v1/target-groups/{name}/targets[/{id}:{port}] -> (group, target key or "", error)."""
        name = request.params["name"]
        group = next((g for g in self.current.config.target_groups if g.name == name), None)
        if group is None:
            return None, "", AdminResponse(404, {"error": f"no target group named {name!r}"})
        if "target" not in request.params:
            return group, "", None
        try:
            return group, parse_target_key(request.params["target"]), None
        except ValueError as exc:
            return None, "", AdminResponse(400, {"error": str(exc)})

    async def _targets_endpoint(self, request: AdminRequest) -> AdminResponse:
        group, _, error = self._target_path(request)
        if error is not None or group is None:
            return error or AdminResponse(404, {})
        targets = self.checker.describe(group.name) if self.checker is not None else []
        body: dict[str, Any] = {"target_group": group.name, "targets": targets}
        provider = self.discovery.state(group.name)
        if provider is not None:  # where the targets come from, and whether that source answers now
            discovered = self.registry.discovered.get(group.name, {})
            for target in targets:
                if target_key(str(target.get("id")), int(str(target.get("port")))) in discovered:
                    target["source"] = provider.type
            body["discovery"] = provider.describe()
        return AdminResponse(200, body)

    async def _register_endpoint(self, request: AdminRequest) -> AdminResponse:
        """RegisterTargets: body {"targets": [{"id", "port", "zone", "weight"}]}, as in the config."""
        group, _, error = self._target_path(request)
        if error is not None or group is None:
            return error or AdminResponse(404, {})
        body = request.json()  # BadRequest (400) if it is not JSON
        items = body.get("targets") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            return AdminResponse(400, {"error": 'body must be {"targets": [{"id": ..., "port": ...}, ...]}'})
        targets: list[dict[str, Any]] = []
        problems: list[str] = []
        filled: dict[int, dict[str, Any]] = {}
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                problems.append(f"targets[{index}]: must be an object with id and port")
                continue
            item = {"zone": self.current.config.node.zone, **item}
            if "port" not in item and group.port is not None:
                item["port"] = group.port
            filled[index] = item
        # Checked with the schema's own model, in the validating child (lbd/validator.py).
        try:
            answers = await validator.targets_async(list(filled.values()))
        except OSError as exc:
            return AdminResponse(500, {"error": str(exc)})
        for index, answer in zip(filled, answers, strict=True):
            if "target" in answer:
                targets.append(answer["target"])
            else:
                problems += [f"targets[{index}].{where}: {message}" for where, message in answer["errors"]]
        if problems:
            return AdminResponse(400, {"error": "invalid targets", "errors": problems})
        async with self._reload_lock:
            registry = copy.deepcopy(self.registry)
            for target in targets:
                registry.register(self.current.config, group.name, target)
            result = await self._deploy(self.current, registry)
            if not result.ok:
                return AdminResponse(500, {"error": "workers refused the change", "errors": result.errors})
            saved = self._save_registry()
        for target in targets:
            log.info(
                "target group %s: target %s registered", group.name, target_key(target["id"], target["port"])
            )
        body = {"target_group": group.name, "registered": targets, "generation": result.generation}
        if saved is not None:
            return AdminResponse(500, {**body, "error": saved})
        return AdminResponse(200, body)

    async def _deregister_endpoint(self, request: AdminRequest) -> AdminResponse:
        """DeregisterTargets: the target drains for deregistration_delay_seconds, then is gone."""
        group, key, error = self._target_path(request)
        if error is not None or group is None or not key:
            return error or AdminResponse(404, {"error": f"no such endpoint: {request.path}"})
        provider = self.discovery.state(group.name)
        discovered = self.registry.discovered.get(group.name, {})
        if provider is not None and key in discovered and key not in self.registry.added.get(group.name, {}):
            # It would come straight back from the registry: remove it there.
            message = f"target {key} comes from the group's {provider.type} discovery ({provider.source})"
            return AdminResponse(409, {"error": f"{message}; remove it there"})
        async with self._reload_lock:
            registry = copy.deepcopy(self.registry)
            target = registry.deregister(self.current.config, group.name, key, time.monotonic())
            if target is None:
                return AdminResponse(404, {"error": f"target {key} is not registered in {group.name}"})
            result = await self._deploy(self.current, registry)
            if not result.ok:
                return AdminResponse(500, {"error": "workers refused the change", "errors": result.errors})
            saved = self._save_registry()
        draining = (group.name, key) in self.registry.draining
        log.info(
            "target group %s: target %s deregistered%s",
            group.name,
            key,
            f", draining for up to {group.deregistration_delay_seconds} s" if draining else "",
        )
        if not draining:
            for worker in self.workers:
                worker.send({"op": "close_target", "target_group": group.name, "target": key})
        body = {"target_group": group.name, "target": key, "state": "draining" if draining else "unused"}
        if saved is not None:
            return AdminResponse(500, {**body, "error": saved})
        return AdminResponse(200, body)

    def _open_access_keys(self) -> AccessKeyAdmin:
        try:
            return AccessKeyAdmin.open(self.state_file.parent, self._tell_workers)
        except ValueError as exc:
            raise StartupError(str(exc), EXIT_CONFIG) from exc

    async def _tell_workers(self, message: Message, reply_op: str) -> list[str]:
        """Send ``message`` to every worker and wait for each one's ``reply_op``; the failures, if any."""
        replies = await asyncio.gather(
            *(w.request(message, reply_op) for w in self.workers), return_exceptions=True
        )
        return [
            f"worker {w.index}: {r}"
            for w, r in zip(self.workers, replies, strict=True)
            if isinstance(r, BaseException)
        ]

    # -- target discovery and the fleet view ------------------------------------------------------------

    def _watch_config_key(self) -> None:
        """-c etcd://...: every change of the key reloads, as SIGHUP does (lbd/discovery/config_key.py)."""
        if not is_etcd(self.current.path):
            return  # a file: reloaded by SIGHUP and POST /v1/reload only (and aiohttp stays unloaded)
        from lbd.discovery.config_key import ConfigKeyWatch

        watch = self.config_watch = ConfigKeyWatch(self.current.path, self.current.revision, self.reload)
        self._config_watch_task = asyncio.get_running_loop().create_task(watch.run(), name="config key")

    def _update_discovery(self) -> None:
        for group in self.discovery.update(self.current.config):
            self._spawn_task(self._discovered, group, {})  # discovery removed: its targets drain

    async def _discovered(self, group: str, targets: Targets) -> None:
        """A provider's complete list: registered and deregistered as the admin API would (not saved)."""
        async with self._reload_lock:
            if self.stopping or group not in {g.name for g in self.current.config.target_groups}:
                return
            registry = copy.deepcopy(self.registry)
            change = registry.discover(self.current.config, group, targets, time.monotonic())
            if change is None:
                return
            result = await self._deploy(self.current, registry)
        if not result.ok:
            log.error("target group %s: discovered targets not applied: %s", group, "; ".join(result.errors))
            return
        provider = self.discovery.state(group)
        if provider is not None:
            provider.last_change = time.time()
        added, removed = change
        for key in added:
            log.info("target group %s: target %s discovered", group, key)
        for key in removed:
            draining = (group, key) in self.registry.draining
            log.info(
                "target group %s: target %s gone from discovery%s",
                group,
                key,
                ", draining" if draining else "",
            )
            if not draining:
                for worker in self.workers:
                    worker.send({"op": "close_target", "target_group": group, "target": key})

    async def _fleet_endpoint(self, request: AdminRequest) -> AdminResponse:
        """What this node believes, for comparing nodes of a fleet (docs/fleet.md)."""
        config = self.current.config
        effective = apply_overlay(config, self.registry.overlay(config))
        routable = self.checker.routable() if self.checker is not None else {}
        body = fleet_view(effective, self.generation, routable, set(self.registry.draining))
        body["discovery"] = [state.describe() for state in self.discovery.states()]
        if self.config_watch is not None:  # which version of the config key this node saw last
            body["config_source"] = self.config_watch.describe(self.current.revision)
        return AdminResponse(200, body)

    async def _load_balancers_endpoint(self, request: AdminRequest) -> AdminResponse:
        # The validating child's view (the actions without their defaults takes the schema's models).
        views = self.current.views
        return AdminResponse(200, {"generation": self.generation, "load_balancers": views["load_balancers"]})

    async def _summary_endpoint(self, request: AdminRequest) -> AdminResponse:
        """Listener counters and target health in one answer (lbd/observe/summary.py)."""
        node, _ = await self._collect()
        groups = [g.name for g in self.current.config.target_groups]
        health = {}
        if self.checker is not None:
            checked = dict.fromkeys(group for group, _ in self.checker.checks)  # classic ones too
            groups += [name for name in checked if name not in groups]
            health = {name: self.checker.describe(name) for name in groups}
        body = summary(self.current.config, node, health, time.time())
        body.update(await self.gateway.summary_parts(node))  # apis, usage_plans: when configured
        acls, changed = self.web_acls.effective(), self.web_acl_overrides
        body.update(edge_summary.summary_parts(self.config, node, acls, changed, self.edge.invalidations))
        return AdminResponse(200, body)

    @property
    def config(self) -> Config:
        return self.current.config

    @property
    def file_web_acls(self) -> dict[str, dict[str, Any]]:
        return dict(self.current.views["web_acls"])

    async def redeploy(self) -> list[str]:
        """Every worker to a new generation of the current config (web ACL changes); the errors, or []."""
        result = await self._deploy(self.current, self.registry)
        return [] if result.ok else result.errors

    def _prepare_message(self, generation: int, config: Config, registry: Registry) -> Message:
        """What a worker builds a generation from: the validated config (classic listeners expanded) with
        the admin API's web ACLs and the registrations applied, as plain data (lbd/config/plain.py), and
        the overlay for the draining targets. Raises ConfigError when a replaced web ACL no longer fits."""
        config = self.web_acls.apply(config)  # replaced through the admin API (restored from state_dir)
        overlay = registry.overlay(config)
        return {
            "op": "prepare",
            "generation": generation,
            "config": compact(apply_overlay(config, overlay)),
            "overlay": overlay,
            "workers": self.worker_count,
        }

    def _save_registry(self) -> str | None:
        try:
            save_registry(self.registry, self.state_file)
        except OSError as exc:
            message = f"the change is in effect but could not be saved to {self.state_file}: {exc}"
            log.error("%s", message)
            return message
        return None


def _count(in_flight: dict[str, dict[str, int]], ident: tuple[str, str]) -> int:
    return in_flight.get(ident[0], {}).get(ident[1], 0)


def resolve_workers(option: int | None, config: Config) -> int:
    if option is not None:
        return option
    if config.node.workers == "auto":
        return os.cpu_count() or 1
    return int(config.node.workers)


WORKERS_MAX = 256  # node.workers' bound, so --workers cannot ask for more than the file may


def worker_count(text: str) -> int:
    """argparse type for --workers: an integer within node.workers' range."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if not 1 <= value <= WORKERS_MAX:
        raise argparse.ArgumentTypeError(f"must be 1-{WORKERS_MAX}, got {value}")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_format)
    try:
        loaded = load_checked(args.config)
    except SourceUnavailable as exc:  # etcd down: not the config's fault; systemd's Restart= tries again
        config_log.error("not starting: cannot read %s: %s", args.config, "; ".join(config_errors(exc)))
        return EXIT_SOURCE
    except ConfigError as exc:
        for error in config_errors(exc):
            config_log.error("%s: %s", args.config, error)
        config_log.error(
            "not starting: %s is invalid (lbd check -c %s lists the same errors)", args.config, args.config
        )
        return EXIT_CONFIG
    workers = resolve_workers(args.workers, loaded.config)
    return uvloop.run(Supervisor(loaded, workers, args.log_level, args.log_format).run())


def register(sub: argparse._SubParsersAction[Any]) -> None:
    run = sub.add_parser(
        "run",
        help="run the load balancer (supervisor and workers)",
        description="Run the load balancer: validate the config (as lbd check does), start the workers "
        "and the admin API. Exit status: 0 clean shutdown, 1 internal error, 2 invalid config, 3 a port "
        "could not be bound, 4 workers could not be started, 5 no etcd member answered (-c etcd://...).",
    )
    run.add_argument(
        "-c",
        "--config",
        required=True,
        metavar="FILE",
        help="YAML config file, or an etcd key holding it: etcd://HOST:PORT[,HOST:PORT...]/KEY (watched: "
        "a put reloads)",
    )
    run.add_argument(
        "--workers",
        type=worker_count,
        metavar="N",
        help=f"number of worker processes, 1-{WORKERS_MAX} (default: node.workers from the config)",
    )
    run.add_argument(
        "--log-level",
        choices=LEVELS,
        default=os.environ.get("LBD_LOG_LEVEL", "info"),
        help="log level (default: %(default)s, or $LBD_LOG_LEVEL)",
    )
    run.add_argument(
        "--log-format",
        choices=FORMATS,
        default=os.environ.get("LBD_LOG_FORMAT", "text"),
        help="log line format (default: %(default)s, or $LBD_LOG_FORMAT)",
    )
    run.set_defaults(func=cmd_run)


def _warn_about_the_build() -> None:
    """Say so when the data path runs interpreted (no C compiler at install) or a compiled module is stale."""
    from lbd import build

    path = build.data_path()
    if path != "compiled":
        log.warning(
            "data path: %s; lbd runs at a fraction of its speed. Install gcc and python3-dev, then reinstall "
            "lbd (pip install .) to compile it",
            path,
        )
    stale = build.stale_modules()
    if stale:
        log.warning(
            "compiled modules older than their source (reinstall lbd to rebuild): %s", ", ".join(stale)
        )
