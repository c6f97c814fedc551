"""A target as the data path sees it: where to connect, plus the runtime state balancers read."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(eq=False, slots=True)
class Target:
    """One registered target of one target group (identity is the object, not its fields).

    ``routable`` is the single switch balancers look at; health checks, draining and outlier detection set
    the fields it is computed from.
    """

    id: str
    port: int
    zone: str
    weight: int = 1
    healthy: bool = True
    draining: bool = False
    outstanding: int = 0
    hash_key: bytes = field(init=False)

    def __post_init__(self) -> None:
        # Used by flow-hash balancing: the same bytes on every worker and every node, so all agree.
        self.hash_key = f"{self.id}:{self.port}".encode()

    @property
    def routable(self) -> bool:
        return self.healthy and not self.draining and self.weight > 0

    @property
    def label(self) -> str:
        host = f"[{self.id}]" if ":" in self.id else self.id
        return f"{host}:{self.port}"
