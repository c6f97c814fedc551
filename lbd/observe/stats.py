"""Per-worker counters on the hot path: plain integers on plain objects.

DESIGN.md section 3: the data path only increments integers; a timer folds them into prometheus-client
(the observability work does that). Counters live in a registry keyed by load balancer and listener so
they survive reloads that keep the listener.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


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
    # HTTP listeners
    requests: int = 0  # RequestCount
    non_compliant_requests: int = 0  # DesyncMitigationMode_NonCompliant_Request_Count
    # Index = status class (2 for 2xx ...): HTTPCode_ELB_nXX_Count and HTTPCode_Target_nXX_Count.
    elb_responses: list[int] = field(default_factory=lambda: [0] * 6)
    target_responses: list[int] = field(default_factory=lambda: [0] * 6)

    def as_dict(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                for status_class in range(1, 6):
                    out[f"{f.name}_{status_class}xx"] = value[status_class]
            else:
                out[f.name] = value
        return out


class StatsRegistry:
    def __init__(self) -> None:
        self._listeners: dict[tuple[str, str], ListenerStats] = {}

    def listener(self, load_balancer: str, listener: str) -> ListenerStats:
        key = (load_balancer, listener)
        stats = self._listeners.get(key)
        if stats is None:
            stats = self._listeners[key] = ListenerStats()
        return stats

    def items(self) -> list[tuple[tuple[str, str], ListenerStats]]:
        return list(self._listeners.items())
