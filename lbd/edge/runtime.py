"""Distributions compiled for one Snapshot: behaviors, origins, origin groups and their listeners.

A distribution's viewer listeners are listener runtimes of kind ``edge`` (the worker serves them with
lbd/edge/server.py), built with the load balancer's sockets, TLS contexts and SNI certificate choice.
Each origin gets a listener runtime of its own whose only action forwards to the origin's target group:
origin requests run through it (lbd/edge/origin.py). The caches themselves are the worker's
(lbd/edge/store.py) and outlive the Snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lbd.config.plain import replaced, template
from lbd.edge import compression
from lbd.edge.access_log import HEADER
from lbd.edge.api_origin import api_origin_groups, origin_group_name
from lbd.edge.behaviors import MANAGED, Behavior, ResolvedPolicy, make_behavior, resolve_policy
from lbd.edge.hit import HitRoute
from lbd.edge.store import STATE, DistributionCache
from lbd.observe.access_log import AccessLogFile, AccessLogs
from lbd.observe.stats import ListenerStats
from lbd.runtime import (
    HttpListenerRuntime,
    ListenerKey,
    ListenerRuntime,
    TargetGroupRuntime,
    UnsupportedConfig,
    _listener_tls,
    listener_keys,
)
from lbd.waf.acl import CompiledAcl, WafState

if TYPE_CHECKING:
    # Models or their plain records (lbd/config/plain.py): workers never import pydantic.
    from lbd.config.edge import CustomErrorResponse, Distribution, EdgeListener, Origin, OriginAccess
    from lbd.config.schema import Config, Listener, LoadBalancer

log = logging.getLogger("lbd.edge")
MB = 1024 * 1024
_HEADED: set[str] = set()  # log files this worker has written CloudFront's header lines to


@dataclass(frozen=True)
class OriginRuntime:
    id: str
    target_group: str
    listener: HttpListenerRuntime  # forwards to the origin's target group
    origin_path: str
    header_lines: bytes  # custom headers, and the origin access secret header, as raw field lines
    access: OriginAccess | None
    secret: str


@dataclass(frozen=True)
class OriginGroupRuntime:
    id: str
    members: tuple[str, ...]
    failover_codes: frozenset[int]


class DistributionRuntime:
    def __init__(
        self,
        config: Distribution,
        origins: Mapping[str, OriginRuntime],
        cache: DistributionCache,
    ) -> None:
        self.config = config
        self.name = config.name
        self.edge_name = config.edge_name
        self.origins = dict(origins)
        self.groups = {
            g.id: OriginGroupRuntime(g.id, g.members, frozenset(g.failover_status_codes))
            for g in config.origin_groups
        }
        policies: dict[str, ResolvedPolicy] = dict(MANAGED)
        for policy in config.cache_policies:
            policies[policy.name] = resolve_policy(policy, policy.name)
        self.behaviors: tuple[Behavior, ...] = tuple(
            make_behavior(b, b.path_pattern, policies) for b in config.cache_behaviors
        )
        self.default = make_behavior(config.default_cache_behavior, None, policies)
        if any(b.compress and b.policy.key.brotli for b in (*self.behaviors, self.default)):
            # Loaded with the config, not on the first request that compresses: an import then could
            # meet a worker out of file descriptors and fail that request.
            compression.brotli_module()
        self.errors: dict[int, CustomErrorResponse] = {e.error_code: e for e in config.custom_error_responses}
        self.cache = cache
        self.max_object = int(config.cache.max_object_mb * MB)
        self.waf: CompiledAcl | None = None  # the web ACL protecting it, if any
        self.access_log: AccessLogFile | None = None  # set by the worker (attach_log), which owns files
        self.hits = HitRoute(self)  # what a hit answered from one read needs (lbd/edge/hit.py)

    def members(self, origin: str) -> tuple[tuple[OriginRuntime, ...], frozenset[int]]:
        """The origins to try in order for a behavior's target, and the statuses that fail over."""
        group = self.groups.get(origin)
        if group is None:
            return (self.origins[origin],), frozenset()
        return tuple(self.origins[m] for m in group.members), group.failover_codes


def attach_log(distribution: DistributionRuntime, logs: AccessLogs) -> None:
    """The distribution's access log, from the worker's files (SIGUSR1 reopens them, shutdown flushes
    them); a file gets CloudFront's #Version and #Fields lines when this worker first opens it."""
    settings = distribution.config.access_log
    if settings is None:
        return
    sink = logs.get(settings.path, "alb", f"edge/{distribution.name}").sink
    if settings.path not in _HEADED:
        _HEADED.add(settings.path)
        sink.write(HEADER)
    distribution.access_log = sink


class EdgeListenerRuntime(ListenerRuntime):
    """A distribution's viewer listener."""

    kind = "edge"

    def __init__(
        self,
        key: ListenerKey,
        load_balancer: LoadBalancer,
        listener: Listener,
        target_groups: Mapping[str, TargetGroupRuntime],
        stats: ListenerStats,
        generation: int,
        distribution: DistributionRuntime,
    ) -> None:
        super().__init__(key, load_balancer, listener, target_groups, stats, generation)
        self.distribution = distribution
        from lbd.edge.server import EdgeClientSide

        # HTTP/2 streams (lbd/http/h2front.py) and ALPN (lbd/listener/alpn.py) serve HTTP/1.1 with this.
        self.client_side = EdgeClientSide
        self.name = f"{listener.protocol}:{listener.port}"


_VIEWER_STATS: dict[tuple[str, str], ListenerStats] = {}  # connection counts, kept across reloads


def _forward(config: Config, target_group: str) -> Any:
    """ForwardAction(type="forward", target_group=...): its validator's one weighted group too."""
    forward = template(config, "forward")
    weighted = replaced(forward.target_groups[0], name=target_group)
    return replaced(forward, target_group=target_group, target_groups=(weighted,))


def _stand_in(
    config: Config, dist: Distribution, origin: Origin, timeout: float, listener: Listener
) -> LoadBalancer:
    """The load balancer an origin's requests go through: one listener forwarding to its group."""
    forward = _forward(config, origin_group_name(origin))
    lb: LoadBalancer = replaced(
        template(config, "load_balancer"),
        name=dist.name,
        type="application",
        cross_zone=True,
        idle_timeout_seconds=max(1, int(timeout)),  # ELB's 504 after this long without a response
        preserve_host_header=True,  # the viewer's Host goes to the origin
        listeners=(replaced(listener, default_actions=(forward,), certificates=()),),
    )
    return lb


def _as_listener(config: Config, listener: EdgeListener) -> Listener:
    """The load balancer listener a viewer listener is served as (the same sockets, TLS and SNI code);
    EdgeListener.as_listener's fields, without the schema."""
    made: Listener = replaced(
        template(config, "listener"),
        protocol=listener.protocol,
        port=listener.port,
        address=listener.address,
        certificates=listener.certificates,
        ssl_policy=listener.ssl_policy,
        max_connections=listener.max_connections,
    )
    return made


def _secret_value(access: OriginAccess) -> str:
    """OriginAccess.secret_value, for a model or its record."""
    if access.secret is not None:
        return access.secret
    assert access.secret_file is not None
    return Path(access.secret_file).read_text(encoding="utf-8").strip()


def _header_lines(origin: Origin) -> tuple[bytes, str]:
    lines = [f"{name}: {value}\r\n" for name, value in origin.custom_headers.items()]
    secret = ""
    if origin.origin_access is not None:
        secret = _secret_value(origin.origin_access)
        if origin.origin_access.type == "header":
            lines.append(f"{origin.origin_access.header_name}: {secret}\r\n")
    return "".join(lines).encode("latin-1"), secret


def _web_acls(config: Config, waf: WafState | None) -> dict[str, CompiledAcl]:
    """The web ACL of each distribution that has one (AWS WAF on CloudFront: evaluated before the
    cache, so a blocked request is never answered from it)."""
    if not any(a.distribution for acl in config.web_acls for a in acl.associations):
        return {}
    from lbd.config.web_acl_reading import read_ip_set_files

    files, issues = read_ip_set_files(config.web_acls)
    if issues:
        raise UnsupportedConfig("; ".join(str(issue) for issue in issues))
    state = waf if waf is not None else WafState()
    compiled: dict[str, CompiledAcl] = {}
    for acl in config.web_acls:
        names = [a.distribution for a in acl.associations if a.distribution is not None]
        if names:
            engine = CompiledAcl(acl, files, state)
            compiled.update((name, engine) for name in names)
    return compiled


def distribution_listeners(
    config: Config,
    target_groups: Mapping[str, TargetGroupRuntime],
    generation: int,
    waf: WafState | None = None,
) -> dict[ListenerKey, ListenerRuntime]:
    """The viewer listeners of every enabled distribution (Snapshot.build adds them to its own)."""
    listeners: dict[ListenerKey, ListenerRuntime] = {}
    acls = _web_acls(config, waf)
    for d_index, dist in enumerate(config.distributions):
        if not dist.enabled:
            continue
        viewer = tuple(_as_listener(config, listener) for listener in dist.listeners)
        plain: Listener = replaced(
            template(config, "listener"), protocol="HTTP", port=viewer[0].port, address=viewer[0].address
        )
        origins: dict[str, OriginRuntime] = {}
        groups = {**target_groups, **dict(api_origin_groups(config, dist))}  # APIs as origins too
        for origin in dist.origins:
            lb = _stand_in(config, dist, origin, origin.response_timeout_seconds, plain)
            runtime = HttpListenerRuntime(
                ListenerKey(plain.address, plain.port, "tcp"),
                lb,
                lb.listeners[0],
                groups,
                ListenerStats(),
                generation,
            )
            lines, secret = _header_lines(origin)
            origins[origin.id] = OriginRuntime(
                origin.id,
                origin_group_name(origin),
                runtime,
                origin.origin_path,
                lines,
                origin.origin_access,
                secret,
            )
        cache = STATE.cache(dist.name, int(dist.cache.capacity_mb * MB), int(dist.cache.max_object_mb * MB))
        distribution = DistributionRuntime(dist, origins, cache)
        distribution.waf = acls.get(dist.name)
        first = dist.origins[0]
        for l_index, listener in enumerate(viewer):
            lb = _stand_in(config, dist, first, 60, listener)
            http2 = dist.listeners[l_index].http2_enabled  # h2 by ALPN on HTTPS (CloudFront: http2)
            lb = replaced(lb, http2_enabled=http2, listeners=(listener,))
            stats = _VIEWER_STATS.setdefault(
                (dist.name, f"{listener.protocol}:{listener.port}"), ListenerStats()
            )
            keys = listener_keys(listener)
            runtime_listener = replaced(
                lb.listeners[0], default_actions=(_forward(config, origin_group_name(first)),)
            )
            edge = EdgeListenerRuntime(keys[0], lb, runtime_listener, groups, stats, generation, distribution)
            edge.tls = _listener_tls(config, lb, listener, f"distributions[{d_index}].listeners[{l_index}]")
            listeners[keys[0]] = edge
    return listeners
