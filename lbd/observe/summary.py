"""The JSON views behind ``GET /v1/summary`` and ``GET /v1/load-balancers`` (the console and ``lbd status``).

Built from what the supervisor already has when it answers /metrics: the node totals it sums from every
worker's counters (lbd/observe/metrics.py's NodeStats), the health checker's view of each target, and
the config in service. Nothing here runs per request. Counters are totals since each listener started
(as in /metrics): a client that wants rates takes two summaries and divides the difference by the time
between them, as Prometheus's rate() does; latency histograms come with their bucket bounds so that
percentiles over that window can be worked out from the difference of the bucket counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lbd.observe.stats import LATENCY_BUCKETS

if TYPE_CHECKING:
    from lbd.config.schema import Config, Listener, LoadBalancer
    from lbd.observe.metrics import NodeStats

# Counters copied as they are from the workers' listener reports (lbd/observe/stats.py's COUNTERS).
LISTENER_COUNTERS = (
    "requests",
    "new_connections",
    "active_connections",
    "rejected_connections",
    "processed_bytes",
    "target_connection_errors",
    "client_tls_negotiation_errors",
    "non_compliant_requests",
    "redirects",
    "fixed_responses",
    "udp_new_flows",
    "udp_active_flows",
    "surge_queue_length",
    "spillover_count",
)
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def listener_name(listener: Listener) -> str:
    """The name a listener's counters are kept under (lbd/runtime.py), as in /metrics' listener label."""
    return f"{listener.protocol}:{listener.port}"


def quantile(counts: Sequence[int], q: float, bounds: Sequence[float] = LATENCY_BUCKETS) -> float | None:
    """The q-quantile (0..1) of a histogram given as counts per bucket (the last one +Inf), or None if
    it holds no observation. Linear within a bucket, as Prometheus's histogram_quantile() estimates it;
    an answer in the +Inf bucket is the highest finite bound."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count > 0 and seen + count >= rank:
            if index >= len(bounds):
                return float(bounds[-1])
            lower = float(bounds[index - 1]) if index else 0.0
            return lower + (float(bounds[index]) - lower) * (rank - seen) / count
        seen += count
    return float(bounds[-1])


def histogram(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """A summed histogram as the summary gives it (zeros when no worker reported one), with its
    quantiles since start."""
    counts = [int(c) for c in values["counts"]] if values else [0] * (len(LATENCY_BUCKETS) + 1)
    return {
        "counts": counts,
        "sum": float(values["sum"]) if values else 0.0,
        "p50_seconds": quantile(counts, 0.5),
        "p99_seconds": quantile(counts, 0.99),
    }


def _listener_stats(values: Mapping[str, Any]) -> dict[str, Any]:
    stats: dict[str, Any] = {name: int(values.get(name, 0)) for name in LISTENER_COUNTERS}
    responses = {
        source: {c: int(values.get(f"{prefix}_{c}", 0)) for c in STATUS_CLASSES}
        for source, prefix in (("lb", "elb_responses"), ("target", "target_responses"))
    }
    stats["responses"] = responses
    for status_class in ("4xx", "5xx"):
        stats[f"http_{status_class}"] = responses["lb"][status_class] + responses["target"][status_class]
    for name in ("request_duration", "target_response_time"):
        stats[name] = histogram(values.get(name))
    return stats


def _action(action: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = action.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    dumped["type"] = action.type  # a default in some models, and the one field every reader wants
    return dumped


def _listener(lb: LoadBalancer, listener: Listener) -> dict[str, Any]:
    return {
        "name": listener_name(listener),
        "protocol": listener.protocol,
        "address": listener.address,
        "port": listener.port,
        "default_actions": [_action(a) for a in listener.default_actions],
        "rules": [
            {
                "priority": rule.priority,
                "conditions": [c.model_dump(mode="json", exclude_none=True) for c in rule.conditions],
                "actions": [_action(a) for a in rule.actions],
            }
            for rule in sorted(listener.rules, key=lambda r: r.priority)
        ],
    }


def load_balancers(config: Config, generation: int) -> dict[str, Any]:
    """``GET /v1/load-balancers``: every load balancer, its listeners and their rule tables, in
    priority order (the order they are evaluated), as the config in service has them."""
    return {
        "generation": generation,
        "load_balancers": [
            {
                "name": lb.name,
                "type": lb.type,
                "scheme": lb.scheme,
                "cross_zone": lb.cross_zone,
                "idle_timeout_seconds": lb.idle_timeout_seconds,
                "listeners": [_listener(lb, listener) for listener in lb.listeners],
            }
            for lb in config.load_balancers
        ],
    }


def _target_groups(
    config: Config, node: NodeStats, health: Mapping[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    groups = []
    names = [group.name for group in config.target_groups]
    names += [name for name in health if name not in names]  # classic load balancers' own groups
    protocols = {group.name: (group.protocol, group.algorithm) for group in config.target_groups}
    for name in names:
        targets = []
        states: dict[str, int] = {}
        for described in health.get(name, []):
            key = f"{described['id']}:{described['port']}"  # the registry's key (lbd/upstream/registry.py)
            counts = node.targets.get((name, key), {})
            ipv6 = ":" in str(described["id"])
            targets.append(
                {
                    **described,
                    # As the admin API's target paths write it: [v6]:port for IPv6.
                    "target": f"[{described['id']}]:{described['port']}" if ipv6 else key,
                    "requests": counts.get("requests", 0),
                    "connection_errors": counts.get("connection_errors", 0),
                }
            )
            state = str(described["state"])
            states[state] = states.get(state, 0) + 1
        protocol, algorithm = protocols.get(name, (None, None))
        report = node.target_groups.get(name, {})
        groups.append(
            {
                "name": name,
                "protocol": protocol,
                "algorithm": algorithm,
                "states": states,
                "fail_open": bool(report.get("fail_open")),
                "zonal_failover": bool(report.get("zonal_failover")),
                "targets": targets,
            }
        )
    return groups


def summary(
    config: Config,
    node: NodeStats,
    health: Mapping[str, list[dict[str, Any]]],
    now: float,
) -> dict[str, Any]:
    """``GET /v1/summary``: every listener's counters (node totals) and every target group's targets."""
    listeners = []
    for lb in config.load_balancers:
        for listener in lb.listeners:
            name = listener_name(listener)
            values = node.listeners.get((lb.name, name), {})
            listeners.append(
                {
                    "load_balancer": lb.name,
                    "listener": name,
                    "type": lb.type,
                    **_listener_stats(values),
                }
            )
    return {
        "generation": node.generation,
        "time": now,
        "workers": {"configured": node.workers, "answering": node.workers_answering},
        "latency_buckets": list(LATENCY_BUCKETS),
        "listeners": listeners,
        "target_groups": _target_groups(config, node, health),
    }
