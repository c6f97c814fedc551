"""Snapshot: one compiled, immutable view of the config that the data path reads.

A worker holds exactly one current Snapshot and swaps it atomically on reload (the generation number
says which one a connection started on). Connections keep a reference to the listener runtime they were
accepted on, so requests in flight finish on the Snapshot they started with (DESIGN.md section 2).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from lbd.config.schema import Config, ForwardAction, Listener, LoadBalancer, TargetGroup
from lbd.observe.stats import ListenerStats, StatsRegistry
from lbd.upstream.balancers import Balancer, make_balancer
from lbd.upstream.target import Target


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
    """A target group's targets plus the balancer that picks among them."""

    def __init__(self, config: TargetGroup, *, rng: random.Random | None = None) -> None:
        self.config = config
        self.name = config.name
        self.targets = tuple(Target(t.id, t.port, t.zone, t.weight) for t in config.targets)
        self.balancer: Balancer = make_balancer(config.algorithm, self.targets, rng)
        self.connect_timeout = config.connect_timeout_seconds


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
        self.target_group = (
            target_groups[action.target_groups[0].name] if isinstance(action, ForwardAction) else None
        )


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
        self.route = self.dispatcher.route
        self.rewrite_request = self.dispatcher.rewrite_request


def listener_key(listener: Listener) -> ListenerKey:
    transport = "udp" if listener.protocol == "UDP" else "tcp"
    return ListenerKey(listener.address, listener.port, transport)


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
    def build(cls, config: Config, generation: int, stats: StatsRegistry) -> Snapshot:
        target_groups = {tg.name: TargetGroupRuntime(tg) for tg in config.target_groups}
        listeners: dict[ListenerKey, ListenerRuntime] = {}
        for lb_index, lb in enumerate(config.load_balancers):
            for l_index, listener in enumerate(lb.listeners):
                where = f"load_balancers[{lb_index}].listeners[{l_index}]"
                _check_supported(lb, listener, where)
                key = listener_key(listener)
                kind = HttpListenerRuntime if lb.type == "application" else ListenerRuntime
                listeners[key] = kind(
                    key,
                    lb,
                    listener,
                    target_groups,
                    stats.listener(lb.name, f"{listener.protocol}:{listener.port}"),
                    generation,
                )
        return cls(generation, config, target_groups, listeners)


def _check_supported(lb: LoadBalancer, listener: Listener, where: str) -> None:
    # Refusing loudly beats binding a port and serving nothing on it.
    supported = {"network": ("TCP",), "application": ("HTTP",)}.get(lb.type, ())
    if listener.protocol not in supported:
        raise UnsupportedConfig(
            f"{where}.protocol: {lb.type} load balancer listeners with protocol {listener.protocol} are not "
            "served by this version of lbd yet (supported: network TCP, application HTTP)"
        )
