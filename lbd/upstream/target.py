"""A target as the data path sees it: where to connect, plus the runtime state balancers read."""

from __future__ import annotations

from lbd.observe.stats import TargetStats


class Target:
    """One registered target of one target group (identity is the object, not its fields).

    Balancers read two plain attributes, ``eligible`` and ``effective_weight``, so the hot path does no
    arithmetic on health. They are recomputed (``TargetGroupRuntime.refresh``) whenever what they derive
    from changes: the active checker's verdict (``healthy``), deregistration (``draining``), passive
    outlier ejection (``ejected``), slow start (``ramp``), and the group's fail-open state.
    """

    def __init__(
        self,
        id: str,
        port: int,
        zone: str,
        weight: int = 1,
        healthy: bool = True,
        draining: bool = False,
        ejected: bool = False,
        ramp: float = 1.0,  # slow start: the share of its weight a new target gets, 0..1
        outstanding: int = 0,
        eligible: bool = True,
        stats: TargetStats | None = None,  # the registry's, so counts survive reloads
    ) -> None:
        self.id = id
        self.port = port
        self.zone = zone
        self.weight = weight
        self.healthy = healthy
        self.draining = draining
        self.ejected = ejected
        self.ramp = ramp
        self.outstanding = outstanding
        self.eligible = eligible
        self.stats = stats if stats is not None else TargetStats()
        # Used by flow-hash balancing: the same bytes on every worker and every node, so all agree.
        self.hash_key = f"{self.id}:{self.port}".encode()
        self.effective_weight = float(self.weight)
        self.refresh()

    def __repr__(self) -> str:
        return f"Target({self.label}, zone={self.zone}, weight={self.weight}, eligible={self.eligible})"

    @property
    def routable(self) -> bool:
        """Takes new requests when the group is not failing open."""
        return self.healthy and not self.draining and not self.ejected and self.weight > 0

    def refresh(self, fail_open: bool = False) -> None:
        self.eligible = (
            self.weight > 0 and not self.draining and (fail_open or (self.healthy and not self.ejected))
        )
        # A ramping target keeps a small share rather than none, so slow start always makes progress.
        self.effective_weight = self.weight * max(self.ramp, 0.01)

    @property
    def server_name(self) -> str:
        """SNI towards a TLS target: its name when it has one, nothing for an IP address."""
        return "" if self.id.replace(".", "").isdigit() or ":" in self.id else self.id

    def tls_name(self, verify: bool) -> str:
        """server_hostname for a TLS connection: verification checks the id itself, IP addresses too."""
        return self.id if verify else self.server_name

    @property
    def key(self) -> str:
        return f"{self.id}:{self.port}"

    @property
    def label(self) -> str:
        host = f"[{self.id}]" if ":" in self.id else self.id
        return f"{host}:{self.port}"
