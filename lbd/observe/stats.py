"""Per-worker counters on the hot path: plain integers on plain objects.

DESIGN.md section 3: the data path only increments integers (and, for latencies, one bucket of a fixed
histogram). The supervisor collects every worker's counters over the control channel when /metrics or
/v1/stats is asked for, sums them into node totals and hands them to prometheus-client
(lbd/observe/metrics.py). Counters live in a registry keyed by load balancer and listener (and target
group and target) so they survive reloads that keep those names.
"""

from __future__ import annotations

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
        # A linear scan: most observations land in the first few buckets (a local target answers in
        # well under a millisecond), so this beats a bisection.
        index = 0
        last = len(LATENCY_BUCKETS)
        while index < last and seconds > LATENCY_BUCKETS[index]:
            index += 1
        self.counts[index] += 1
        self.sum += seconds

    def as_dict(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sum": self.sum}


class ListenerStats:
    """Counters of one listener in one worker (CloudWatch twin in the comment)."""

    def __init__(self) -> None:
        self.new_connections = 0  # NewConnectionCount / NewFlowCount
        self.active_connections = 0  # ActiveConnectionCount / ActiveFlowCount
        self.rejected_connections = 0  # RejectedConnectionCount: nothing to send it to
        self.processed_bytes = 0  # ProcessedBytes, both directions
        self.target_connection_errors = 0  # TargetConnectionErrorCount
        self.client_resets = 0  # TCP_Client_Reset_Count
        self.target_resets = 0  # TCP_Target_Reset_Count
        self.idle_timeouts = 0  # flows closed by the idle timeout
        self.client_tls_negotiation_errors = 0  # ClientTLSNegotiationErrorCount
        # UDP (and the UDP half of TCP_UDP) listeners
        self.udp_new_flows = 0  # NewFlowCount_UDP
        self.udp_active_flows = 0  # ActiveFlowCount_UDP
        self.udp_processed_bytes = 0  # ProcessedBytes_UDP, both directions
        self.processed_packets = 0  # ProcessedPackets (UDP datagrams, both directions)
        self.udp_dropped_packets = 0  # datagrams no target could take or that could not be sent on
        # Listeners with accept_proxy_protocol: headers that were malformed, late or truncated
        self.proxy_protocol_errors = 0
        # Classic listeners with max_connections_per_instance (lbd/surge.py)
        self.surge_queue_length = 0  # SurgeQueueLength: requests or connections waiting (a gauge)
        self.spillover_count = 0  # SpilloverCount: refused because the surge queue was full
        # HTTP listeners
        self.requests = 0  # RequestCount: requests for which a target was chosen
        self.non_compliant_requests = 0  # DesyncMitigationMode_NonCompliant_Request_Count
        self.redirects = 0  # HTTP_Redirect_Count
        self.fixed_responses = 0  # HTTP_Fixed_Response_Count
        self.grpc_requests = 0  # GrpcRequestCount
        # Index = status class (2 for 2xx ...): HTTPCode_ELB_nXX_Count and HTTPCode_Target_nXX_Count.
        self.elb_responses: list[int] = [0] * 6
        self.target_responses: list[int] = [0] * 6
        self.elb_statuses: dict[int, int] = {}  # HTTPCode_ELB_500/502/503/504_Count ...
        self.target_response_time = Histogram()  # TargetResponseTime
        self.request_duration = Histogram()  # first request byte to last response byte

    def elb_response(self, status: int) -> None:
        self.elb_responses[status // 100] += 1
        self.elb_statuses[status] = self.elb_statuses.get(status, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in COUNTERS}
        for name, classes in (
            ("elb_responses", self.elb_responses),
            ("target_responses", self.target_responses),
        ):
            for status_class in range(1, 6):
                out[f"{name}_{status_class}xx"] = classes[status_class]
        out["elb_statuses"] = {str(k): v for k, v in self.elb_statuses.items()}
        out["target_response_time"] = self.target_response_time.as_dict()
        out["request_duration"] = self.request_duration.as_dict()
        return out


# ListenerStats' plain counters, as /v1/stats and the metrics exporter name them.
COUNTERS = (
    "new_connections",
    "active_connections",
    "rejected_connections",
    "processed_bytes",
    "target_connection_errors",
    "client_resets",
    "target_resets",
    "idle_timeouts",
    "client_tls_negotiation_errors",
    "udp_new_flows",
    "udp_active_flows",
    "udp_processed_bytes",
    "processed_packets",
    "udp_dropped_packets",
    "proxy_protocol_errors",
    "requests",
    "non_compliant_requests",
    "redirects",
    "fixed_responses",
    "surge_queue_length",
    "spillover_count",
    "grpc_requests",
)


class TargetStats:
    """Counters of one target of one target group in one worker."""

    def __init__(self) -> None:
        self.requests = 0  # RequestCountPerTarget (requests or flows sent to it)
        self.connection_errors = 0  # TargetConnectionErrorCount, per target

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
