"""A WebSocket route's counters: API Gateway's WebSocket metrics ("Monitoring WebSocket API execution with
CloudWatch metrics") on top of an API route's (lbd/gateway/stats.py), summed by the supervisor and exported
as lbd_api_websocket_* (docs/metrics.md).

- ConnectCount: $connect requests accepted (``connects``); refusals count as client errors.
- MessageCount: messages from and to clients (``messages_in``, ``messages_out``), pushes included.
- IntegrationError: the integration answered 4xx or 5xx (``integration_errors``).
- ClientError: refused by the gateway before the integration was called: no route, a denied
  authorizer, a bad or missing API key, a throttle (``client_errors``).
- ExecutionError: calling the integration failed: unreachable, timed out (``execution_errors``).
- IntegrationLatency: the route's ``integration_latency`` histogram, as for HTTP routes.
"""

from __future__ import annotations

from typing import Any

from lbd.gateway.stats import ApiStats, registry


class WebSocketStats(ApiStats):
    __slots__ = (
        "client_errors",
        "connections",
        "connects",
        "execution_errors",
        "integration_errors",
        "messages_in",
        "messages_out",
    )

    def __init__(self) -> None:
        super().__init__()
        self.connects = 0
        self.connections = 0  # open now (on the $connect route)
        self.messages_in = 0
        self.messages_out = 0
        self.integration_errors = 0
        self.client_errors = 0
        self.execution_errors = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            **super().as_dict(),
            "connects": self.connects,
            "connections": self.connections,
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
            "integration_errors": self.integration_errors,
            "client_errors": self.client_errors,
            "execution_errors": self.execution_errors,
        }


def route_stats(api: str, stage: str, route: str) -> WebSocketStats:
    stats = registry().route(api, stage, route, WebSocketStats)
    assert isinstance(stats, WebSocketStats)
    return stats
