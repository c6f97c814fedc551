"""Per-worker counters on the hot path: plain integers on plain objects.

DESIGN.md section 3: the data path only increments integers (and, for latencies, one bucket of a fixed
histogram). The supervisor collects every worker's counters over the control channel when /metrics or
/v1/stats is asked for, sums them into node totals and hands them to prometheus-client
(lbd/observe/metrics.py). Counters live in a registry keyed by load balancer and listener (and target
group and target) so they survive reloads that keep those names.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field, fields
from typing import Any

# Latency buckets for a proxy: from 100 µs (a local target) to 30 s (a slow upload or a stuck target).
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class Histogram:
    """Counts per bucket (not cumulative; the last one is +Inf) and the sum, as Prometheus wants them."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds

    def as_dict(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sum": self.sum}


@dataclass(slots=True)
class ListenerStats:
    """Counters of one listener in one worker (CloudWatch twin in the comment)."""

    new_connections: int = 0  # NewConnectionCount / NewFlowCount
    active_connections: int = 0  # ActiveConnectionCount / ActiveFlowCount
    rejected_connections: int = 0  # RejectedConnectionCount: nothing to send it to
    processed_bytes: int = 0  # ProcessedBytes, both directions
    target_connection_errors: int = 0  # TargetConnectionErrorCount
    client_resets: int = 0  # TCP_Client_Reset_Count
    target_resets: int = 0  # TCP_Target_Reset_Count
    idle_timeouts: int = 0  # flows closed by the idle timeout
    client_tls_negotiation_errors: int = 0  # ClientTLSNegotiationErrorCount
    # HTTP listeners
    requests: int = 0  # RequestCount: requests for which a target was chosen
    non_compliant_requests: int = 0  # DesyncMitigationMode_NonCompliant_Request_Count
    redirects: int = 0  # HTTP_Redirect_Count
    fixed_responses: int = 0  # HTTP_Fixed_Response_Count
    # Index = status class (2 for 2xx ...): HTTPCode_ELB_nXX_Count and HTTPCode_Target_nXX_Count.
    elb_responses: list[int] = field(default_factory=lambda: [0] * 6)
    target_responses: list[int] = field(default_factory=lambda: [0] * 6)
    elb_statuses: dict[int, int] = field(default_factory=dict)  # HTTPCode_ELB_500/502/503/504_Count ...
    target_response_time: Histogram = field(default_factory=Histogram)  # TargetResponseTime
    request_duration: Histogram = field(default_factory=Histogram)  # first request byte to last response byte

    def elb_response(self, status: int) -> None:
        self.elb_responses[status // 100] += 1
        self.elb_statuses[status] = self.elb_statuses.get(status, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                for status_class in range(1, 6):
                    out[f"{f.name}_{status_class}xx"] = value[status_class]
            elif isinstance(value, Histogram):
                out[f.name] = value.as_dict()
            elif isinstance(value, dict):
                out[f.name] = {str(k): v for k, v in value.items()}
            else:
                out[f.name] = value
        return out


@dataclass(slots=True)
class TargetStats:
    """Counters of one target of one target group in one worker."""

    requests: int = 0  # RequestCountPerTarget (requests or flows sent to it)
    connection_errors: int = 0  # TargetConnectionErrorCount, per target

    def as_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "connection_errors": self.connection_errors}


class StatsRegistry:
    def __init__(self) -> None:
        self._listeners: dict[tuple[str, str], ListenerStats] = {}
        self._targets: dict[tuple[str, str], TargetStats] = {}

    def listener(self, load_balancer: str, listener: str) -> ListenerStats:
        key = (load_balancer, listener)
        stats = self._listeners.get(key)
        if stats is None:
            stats = self._listeners[key] = ListenerStats()
        return stats

    def target(self, target_group: str, target: str) -> TargetStats:
        key = (target_group, target)
        stats = self._targets.get(key)
        if stats is None:
            stats = self._targets[key] = TargetStats()
        return stats

    def items(self) -> list[tuple[tuple[str, str], ListenerStats]]:
        return list(self._listeners.items())

    def targets(self) -> list[tuple[tuple[str, str], TargetStats]]:
        return list(self._targets.items())
