"""Snapshot: one compiled, immutable view of the config that the data path reads.

A worker holds exactly one current Snapshot and swaps it atomically on reload (the generation number
says which one a connection started on). Connections keep a reference to the listener runtime they were
accepted on, so requests in flight finish on the Snapshot they started with.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import random
import ssl
import time
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from lbd.observe.stats import ListenerStats, StatsRegistry
from lbd.upstream.balancers import Balancer, make_balancer
from lbd.upstream.target import Target
from lbd.waf.acl import WafState

if TYPE_CHECKING:
    # A worker builds its Snapshot from the supervisor's plain records (lbd/config/plain.py), which have
    # these models' attributes: the schema, pydantic and the TLS tooling are not imported to serve.
    from lbd.config.schema import Config, Listener, LoadBalancer, TargetGroup
    from lbd.http.access import HttpAccessLog
    from lbd.http.exchange import Exchange
    from lbd.observe.access_log import AccessLog
    from lbd.routing.hashkey import HashKey
    from lbd.routing.stickiness import TargetStickiness
    from lbd.surge import SurgeQueue
    from lbd.tls.server import ListenerTls

log = logging.getLogger("lbd.targets")

_NO_TARGETS: frozenset[Target] = frozenset()
HTTP = ("HTTP", "HTTPS")


class UnsupportedConfig(Exception):
    """A valid config that asks for something this build of lbd does not serve yet."""


@dataclass(frozen=True, slots=True)
class ListenerKey:
    """What makes a listening socket: two listeners with the same key can share one socket."""

    address: str
    port: int
    transport: str  # "tcp" | "udp"

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.transport}://{host}:{self.port}"


class TargetGroupRuntime:
    """A target group's targets, who among them takes traffic, and the balancer that picks among those.

    Who takes traffic follows ELB (AWS: Elastic Load Balancing, "Health checks for your target groups"
    and "Cross-zone load balancing"):

    - healthy targets (the node's health checker decides; ``apply_health``), minus those a worker ejected
      for failing requests (passive outlier detection) and those draining;
    - fail open: when fewer targets are healthy than ``minimum_healthy_targets`` asks, every registered
      target takes traffic, healthy or not;
    - zones: with cross-zone off only targets in this node's zone; when none of them is healthy the other
      zones take over (ELB would withdraw the node's address from DNS; one host must keep serving);
    - slow start: a target that turns healthy while others serve ramps its weight up linearly.

    ``refresh`` recomputes the plain ``eligible``/``effective_weight`` attributes balancers read, so the
    request path never does this work.
    """

    def __init__(
        self,
        config: TargetGroup,
        *,
        node_zone: str = "zone-a",
        cross_zone: bool = True,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        stats: StatsRegistry | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.node_zone = node_zone
        self.cross_zone = cross_zone
        self.clock = clock
        self.targets = tuple(Target(t.id, t.port, t.zone, t.weight) for t in config.targets)
        if stats is not None:
            for target in self.targets:
                target.stats = stats.target(self.name, target.key)
        self.local = tuple(t for t in self.targets if t.zone == node_zone)
        self.everywhere: Balancer = make_balancer(config.algorithm, self.targets, rng)
        self.zonal: Balancer = make_balancer(config.algorithm, self.local, rng)
        self.balancer: Balancer = self.everywhere if cross_zone else self.zonal
        self.connect_timeout = config.connect_timeout_seconds
        # HTTPS and TLS target groups re-encrypt to their targets; like ELB, without verifying them.
        self.tls = _target_context(config) if config.protocol in ("HTTPS", "TLS") else None
        self.verify = config.verify
        # HTTP2 and GRPC groups: HTTP/2 to the targets (lbd/http/h2upstream.py), h2 chosen by ALPN over TLS,
        # and the requests such a group refuses with 464 (lbd/http/grpc.py).
        self.http2 = config.protocol_version != "HTTP1"
        self.admit: Callable[[Exchange], bool] | None = None
        if self.http2:
            if self.tls is not None:
                self.tls.set_alpn_protocols(["h2"])
            from lbd.http.h2upstream import admission

            self.admit = admission(config.protocol_version)
        self.checks_enabled = config.health_check.enabled
        # Cookie stickiness, set by Snapshot.build (it holds the keys); None: the balancer alone picks.
        self.sticky: TargetStickiness | HashKey | None = None
        # Classic listeners with max_connections_per_instance: their surge queue, set by Snapshot.build.
        self.surge: SurgeQueue | None = None
        self.fail_open = False
        self.zonal_failover = False
        self.ramping: dict[Target, float] = {}  # target -> when its slow start began
        self.failures: dict[Target, int] = {}  # consecutive failed requests, per target (outlier detection)
        self.ejections: dict[Target, tuple[float, int]] = {}  # target -> (ejected until, times in a row)
        outliers = config.outlier_detection
        self.outlier_threshold = outliers.consecutive_failures
        self.ejection_seconds = outliers.ejection_seconds
        self.counters = {"fail_open_transitions": 0, "zonal_failovers": 0, "ejections": 0}
        # Until the checker's first verdicts arrive every target is "initial" and the group fails open;
        # that is how a fresh start serves at once, not news worth a warning.
        self._verdicts = not self.checks_enabled
        self._announced = False
        for target in self.targets:
            target.healthy = not self.checks_enabled  # initial until the checker says otherwise
        self.refresh()

    # -- the request path ------------------------------------------------------------------------------

    def pick(self, flow_key: bytes | None = None, exclude: Container[Target] = _NO_TARGETS) -> Target | None:
        target = self.balancer.pick(flow_key, exclude)
        if target is None and self.balancer is not self.everywhere:
            # Every target of this zone failed for this request: another zone may still answer.
            target = self.everywhere.pick(flow_key, exclude)
        return target

    def request_failed(self, target: Target) -> None:
        """A connect error or a 5xx from ``target`` (passive outlier detection)."""
        if not self.outlier_threshold:
            return
        count = self.failures.get(target, 0) + 1
        self.failures[target] = count
        if count >= self.outlier_threshold and not target.ejected:
            self._eject(target)

    def request_succeeded(self, target: Target) -> None:
        if self.failures:
            self.failures.pop(target, None)

    # -- state changes ---------------------------------------------------------------------------------

    def apply_health(self, healthy: Mapping[str, bool], passed: Iterable[str] = ()) -> None:
        """The checker's verdicts (key ``id:port``); ``passed``: targets whose latest check passed."""
        now = self.clock()
        serving = any(t.routable and t not in self.ramping for t in self.targets)
        for target in self.targets:
            verdict = healthy.get(target.key)
            if verdict is None or not self.checks_enabled:
                continue
            if verdict and not target.healthy and self.config.slow_start_seconds and serving:
                self.ramping[target] = now
                target.ramp = 0.0
            elif not verdict:
                self.ramping.pop(target, None)
                target.ramp = 1.0
            target.healthy = verdict
            self._verdicts = True
        for key in passed:
            for target in self.targets:
                if target.key == key and target.ejected:
                    self._uneject(target, "an active health check passed")
        self.refresh()

    def set_draining(self, keys: Iterable[str]) -> None:
        """Deregistered targets: no new requests, while those in flight finish (ELB draining)."""
        draining = set(keys)
        for target in self.targets:
            target.draining = target.key in draining
        self.refresh()

    def tick(self) -> bool:
        """Advance slow start and end ejections; True while there is more to do later."""
        now = self.clock()
        changed = False
        duration = self.config.slow_start_seconds
        for target, began in list(self.ramping.items()):
            share = (now - began) / duration if duration else 1.0
            if share >= 1.0:
                del self.ramping[target]
                share = 1.0
            target.ramp = share
            changed = True
        for target, (until, _) in list(self.ejections.items()):
            if target.ejected and now >= until:
                self._uneject(target, "its ejection period ended")
                changed = True
        if changed:
            self.refresh()
        return bool(self.ramping) or any(t.ejected for t in self.targets)

    def _eject(self, target: Target) -> None:
        if sum(1 for t in self.targets if t.routable) <= 1:
            return  # never eject the last target that takes traffic: fail-open would take it back anyway
        _, times = self.ejections.get(target, (0.0, 0))
        period = self.ejection_seconds * 2 ** min(times, 6)
        self.ejections[target] = (self.clock() + period, times + 1)
        target.ejected = True
        self.failures.pop(target, None)
        self.counters["ejections"] += 1
        log.warning(
            "target group %s: target %s ejected for %.0f s after %d failed requests in a row",
            self.name,
            target.label,
            period,
            self.outlier_threshold,
        )
        self.refresh()

    def _uneject(self, target: Target, why: str) -> None:
        target.ejected = False
        log.info("target group %s: target %s back in service: %s", self.name, target.label, why)

    def refresh(self) -> None:
        registered = [t for t in self.targets if t.weight > 0 and not t.draining]
        healthy = sum(1 for t in registered if t.routable)
        minimum = self.config.minimum_healthy_targets
        needed = minimum.count
        if minimum.percentage is not None:
            needed = max(needed, math.ceil(len(registered) * minimum.percentage / 100))
        fail_open = bool(registered) and healthy < needed
        self.fail_open = fail_open
        if fail_open and self._verdicts and not self._announced:
            self._announced = True
            self.counters["fail_open_transitions"] += 1
            log.warning(
                "target group %s: %d of %d targets healthy (minimum %d): failing open, every target "
                "takes traffic",
                self.name,
                healthy,
                len(registered),
                needed,
            )
        elif not fail_open and self._announced:
            self._announced = False
            log.info("target group %s: %d targets healthy again; no longer failing open", self.name, healthy)
        for target in self.targets:
            target.refresh(fail_open)
        if self.cross_zone:
            return
        local_ok = any(t.eligible for t in self.local)
        failover = not local_ok and any(t.eligible for t in self.targets)
        self.balancer = self.zonal if local_ok else self.everywhere
        if failover != self.zonal_failover:
            self.zonal_failover = failover
            if failover:
                self.counters["zonal_failovers"] += 1
                log.warning(
                    "target group %s: no healthy target in zone %s; sending its traffic to other zones",
                    self.name,
                    self.node_zone,
                )
            else:
                log.info("target group %s: zone %s has healthy targets again", self.name, self.node_zone)

    def report(self) -> dict[str, object]:
        return {
            "target_group": self.name,
            "healthy_targets": sum(1 for t in self.targets if t.routable),
            "unhealthy_targets": sum(1 for t in self.targets if not t.healthy and not t.draining),
            "ejected_targets": sum(1 for t in self.targets if t.ejected),
            "fail_open": self.fail_open,
            "zonal_failover": self.zonal_failover,
            **self.counters,
        }


class ListenerRuntime:
    """Everything a connection accepted on one listener needs, resolved once per Snapshot."""

    kind = "tcp"

    def __init__(
        self,
        key: ListenerKey,
        load_balancer: LoadBalancer,
        listener: Listener,
        target_groups: Mapping[str, TargetGroupRuntime],
        stats: ListenerStats,
        generation: int,
    ) -> None:
        self.key = key
        self.load_balancer = load_balancer
        self.listener = listener
        self.stats = stats
        self.generation = generation
        self.idle_timeout = float(load_balancer.idle_timeout_seconds)
        self.name = f"{listener.protocol}:{listener.port}"
        action = listener.default_actions[-1]
        self.target_group = target_groups[action.target_groups[0].name] if action.type == "forward" else None
        self.flow_log: AccessLog | None = None  # network listeners' access log; set by the worker
        self.tls: ListenerTls | None = None  # HTTPS and TLS listeners
        self.udp_idle_timeout = float(listener.udp_idle_timeout_seconds)
        accept = listener.accept_proxy_protocol
        # Sources allowed to send a PROXY header (and then required to); empty: PROXY not accepted.
        self.proxy_sources: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
            tuple(ipaddress.ip_network(cidr, strict=False) for cidr in accept.trusted_sources)
            if accept is not None
            else ()
        )
        self.proxy_timeout = accept.timeout_seconds if accept is not None else 0.0


class ListenerSlot(Protocol):
    """Holds the current runtime of one listening socket (the worker's BoundListener)."""

    runtime: ListenerRuntime


class HttpListenerRuntime(ListenerRuntime):
    """An application load balancer listener: rules, actions and header policy for the HTTP proxy."""

    kind = "http"

    def __init__(
        self,
        key: ListenerKey,
        load_balancer: LoadBalancer,
        listener: Listener,
        target_groups: Mapping[str, TargetGroupRuntime],
        stats: ListenerStats,
        generation: int,
    ) -> None:
        super().__init__(key, load_balancer, listener, target_groups, stats, generation)
        from lbd.http.dispatch import HttpDispatcher

        self.dispatcher = HttpDispatcher(self, listener, target_groups)
        self.access_log: HttpAccessLog | None = None  # set by the worker, which owns the files
        self.route = self.dispatcher.route
        self.rewrite_request = self.dispatcher.rewrite_request


def listener_keys(listener: Listener) -> tuple[ListenerKey, ...]:
    """The sockets a listener needs: TCP_UDP takes the same port over both transports."""
    transports = {"UDP": ("udp",), "TCP_UDP": ("tcp", "udp")}.get(listener.protocol, ("tcp",))
    return tuple(ListenerKey(listener.address, listener.port, transport) for transport in transports)


class Snapshot:
    def __init__(
        self,
        generation: int,
        config: Config,
        target_groups: Mapping[str, TargetGroupRuntime],
        listeners: Mapping[ListenerKey, ListenerRuntime],
    ) -> None:
        self.generation = generation
        self.config = config
        self.target_groups = dict(target_groups)
        self.listeners = dict(listeners)

    @classmethod
    def build(
        cls, config: Config, generation: int, stats: StatsRegistry, waf: WafState | None = None
    ) -> Snapshot:
        # Features this build does not serve never get here: lbd run refuses them before it binds, in
        # the check lbd check shares (lbd/config/preflight.py).
        zone = config.node.zone
        inherited = _inherited_cross_zone(config)
        target_groups = {
            tg.name: TargetGroupRuntime(
                tg,
                node_zone=zone,
                cross_zone=tg.cross_zone if isinstance(tg.cross_zone, bool) else inherited.get(tg.name, True),
                stats=stats,
            )
            for tg in config.target_groups
        }
        _stickiness(config, target_groups)
        listeners: dict[ListenerKey, ListenerRuntime] = {}
        for lb_index, lb in enumerate(config.load_balancers):
            for l_index, listener in enumerate(lb.listeners):
                where = f"load_balancers[{lb_index}].listeners[{l_index}]"
                keys = listener_keys(listener)
                layer7 = lb.type == "application" or (lb.type == "classic" and listener.protocol in HTTP)
                kind = HttpListenerRuntime if layer7 else ListenerRuntime
                runtime = kind(
                    keys[0],
                    lb,
                    listener,
                    target_groups,
                    stats.listener(lb.name, f"{listener.protocol}:{listener.port}"),
                    generation,
                )
                runtime.tls = _listener_tls(config, lb, listener, where)
                group = runtime.target_group
                if lb.type == "classic" and lb.max_connections_per_instance and group is not None:
                    from lbd.surge import SurgeQueue

                    # One group per classic listener (lbd/classic.py): the group's queue is the listener's.
                    group.surge = SurgeQueue(
                        group, lb.max_connections_per_instance, lb.surge_queue_length, runtime.stats
                    )
                for key in keys:
                    listeners[key] = runtime  # TCP_UDP: both sockets serve the same listener
        if config.distributions:
            from lbd.edge.runtime import distribution_listeners  # CloudFront-style distributions

            listeners.update(distribution_listeners(config, target_groups, generation, waf))
        if config.apis:
            from lbd.gateway.listener import api_listeners

            listeners.update(api_listeners(config, target_groups, stats, generation))
        _web_acls(config, listeners, waf)
        return cls(generation, config, target_groups, listeners)


def _web_acls(config: Config, listeners: Mapping[ListenerKey, ListenerRuntime], waf: WafState | None) -> None:
    """Web ACLs on the listeners of the load balancers they protect (lbd/http/firewall.py)."""
    from lbd.http import firewall

    try:
        firewall.attach(config, listeners, waf if waf is not None else WafState())
    except firewall.FirewallError as exc:
        raise UnsupportedConfig(str(exc)) from None


def _stickiness(config: Config, target_groups: Mapping[str, TargetGroupRuntime]) -> None:
    """Cookie stickiness per target group, sealed with the key file's keys (re-read on every reload, so a
    key prepended to the file rotates); the group stickiness of weighted forwards uses the same keys."""
    from lbd.classic import classic_stickiness
    from lbd.routing import stickiness
    from lbd.routing.hashkey import HashKey

    try:
        keys = stickiness.load_keys(stickiness_key_file(config))
    except (OSError, stickiness.KeyFileError) as exc:
        raise UnsupportedConfig(f"node.stickiness_key_file: {exc}") from None
    stickiness.use_keys(keys)
    classic = classic_stickiness(config)
    for name, group in target_groups.items():
        scope, listener_stickiness = classic.get(name, (name, None))
        group.sticky = stickiness.target_stickiness(
            group, scope, group.config.protocol, group.config.stickiness, listener_stickiness, keys
        )
        if group.config.consistent_hash is not None:  # the schema keeps it apart from stickiness
            group.sticky = HashKey(group.config.consistent_hash)


def stickiness_key_file(config: Config) -> str | None:
    """node.stickiness_key_file, else stickiness.keys in the state directory when one is configured."""
    if config.node.stickiness_key_file:
        return config.node.stickiness_key_file
    return str(Path(config.state_dir) / "stickiness.keys") if config.state_dir else None


def _inherited_cross_zone(config: Config) -> dict[str, bool]:
    """cross_zone: inherit takes the setting of the load balancer whose listeners forward to the group."""
    inherited: dict[str, bool] = {}
    for lb in config.load_balancers:
        for listener in lb.listeners:
            actions = [*listener.default_actions, *(a for rule in listener.rules for a in rule.actions)]
            for action in actions:
                if action.type == "forward":
                    for weighted in action.target_groups:
                        inherited.setdefault(weighted.name, lb.cross_zone)
    return inherited


def _target_context(config: TargetGroup) -> ssl.SSLContext:
    from lbd.tls.server import target_context  # only for groups that re-encrypt

    return target_context(config.verify, config.ca_bundle)


def application_alpn(lb: LoadBalancer, listener: Listener) -> list[str]:
    """What an HTTPS listener offers: h2 then http/1.1 (ALB), narrowed by an alpn_policy if one is set."""
    from lbd.tls.server import ALPN

    offered = ["h2", "http/1.1"] if lb.http2_enabled else ["http/1.1"]
    if listener.alpn_policy == "None":
        return offered
    return [name for name in ALPN[listener.alpn_policy] if name in offered]


def _listener_tls(config: Config, lb: LoadBalancer, listener: Listener, where: str) -> ListenerTls | None:
    if listener.protocol not in ("HTTPS", "TLS", "SSL"):
        return None
    # The certificate tooling (cryptography) is loaded by listeners that terminate TLS, and only by them.
    from lbd.tls.server import ALPN, ListenerTls, TlsConfigError
    from lbd.tls.store import CertificateStore

    # Network TLS takes ELB's ALPN policy; application HTTPS offers h2 unless http2_enabled is false; classic
    # HTTPS offers http/1.1 and classic SSL none (CLB negotiates no ALPN beyond HTTP/1.1).
    if lb.type == "application":
        alpn = application_alpn(lb, listener)
    elif listener.protocol == "HTTPS":
        alpn = ["http/1.1"]
    else:
        alpn = ALPN[listener.alpn_policy]
    try:
        return ListenerTls(
            CertificateStore(config.certificates.store),
            listener.certificates,
            listener.ssl_policy,
            alpn,
            where,
        )
    except TlsConfigError as exc:
        raise UnsupportedConfig(str(exc)) from None
