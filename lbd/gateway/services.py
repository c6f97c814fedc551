"""What a worker's gateway keeps across Snapshots: the API keys it was sent, the in-process limiter.

The supervisor sends the whole key table on every change (``api_keys`` control message) and to every
worker it starts, so a key created, disabled or deleted through the admin API counts on every worker at
once. Throttle buckets and quota counters outlive reloads (a reload must not hand out a fresh quota).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lbd.gateway.clock import gateway_clock
from lbd.gateway.keys import KeyTable
from lbd.gateway.limiter import LocalLimiter


class GatewayServices:
    def __init__(self) -> None:
        self.keys = KeyTable()
        self.limiter = LocalLimiter()
        self.shared: Any = None  # the RedisLimiter while shared_state.redis is set
        self.shared_url: Any = None  # the SharedState settings it was made with
        self.clock = gateway_clock()

    def set_keys(self, entries: Iterable[Mapping[str, Any]]) -> None:
        self.keys = KeyTable(entries)

    def key_table(self) -> KeyTable:
        return self.keys


SERVICES = GatewayServices()
