"""Target health as ELB reports it: a state, a reason code and a description (pure: no I/O, no clock).

States and reason codes are ELB's (AWS API reference: DescribeTargetHealth, TargetHealth):

    initial --(1 success)--> healthy --(unhealthy_threshold failures)--> unhealthy
    initial --(unhealthy_threshold failures)--> unhealthy --(healthy_threshold successes)--> healthy
    any --(deregistered)--> draining --(delay over or nothing in flight)--> unused

A newly registered target must pass one check to become healthy (ELB); after that, the thresholds count
consecutive results. With health checks disabled a target is ``unavailable`` and receives traffic.
"""

from __future__ import annotations

from dataclasses import dataclass

INITIAL = "initial"
HEALTHY = "healthy"
UNHEALTHY = "unhealthy"
UNAVAILABLE = "unavailable"
DRAINING = "draining"
UNUSED = "unused"

# Reason codes (ELB's TargetHealth.Reason).
INITIAL_CHECKING = "Elb.InitialHealthChecking"
TIMEOUT = "Target.Timeout"
RESPONSE_CODE_MISMATCH = "Target.ResponseCodeMismatch"
FAILED_HEALTH_CHECKS = "Target.FailedHealthChecks"
HEALTH_CHECK_DISABLED = "Target.HealthCheckDisabled"
DEREGISTRATION_IN_PROGRESS = "Target.DeregistrationInProgress"
NOT_REGISTERED = "Target.NotRegistered"

DESCRIPTIONS = {
    INITIAL_CHECKING: "Initial health checks in progress",
    TIMEOUT: "Request timed out",
    RESPONSE_CODE_MISMATCH: "Health checks failed with these codes: [{detail}]",
    FAILED_HEALTH_CHECKS: "Health checks failed: {detail}",
    HEALTH_CHECK_DISABLED: "Health checks disabled",
    DEREGISTRATION_IN_PROGRESS: "Target deregistration is in progress",
    NOT_REGISTERED: "Target is not registered to the target group",
}


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of one health check: ok, or the reason code and a detail (status code, error text)."""

    ok: bool
    reason: str = ""
    detail: str = ""

    @classmethod
    def success(cls) -> ProbeResult:
        return cls(True)


class Matcher:
    """ELB's success codes: "200", "200,302", "200-299" (AWS API reference: Matcher)."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._ranges: list[tuple[int, int]] = []
        for part in spec.split(","):
            low, _, high = part.strip().partition("-")
            self._ranges.append((int(low), int(high or low)))

    def __contains__(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self._ranges)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Matcher) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self.spec)


class TargetHealth:
    """One target's health state machine."""

    __slots__ = (
        "description",
        "failures",
        "healthy_threshold",
        "reason",
        "state",
        "successes",
        "unhealthy_threshold",
    )

    def __init__(self, healthy_threshold: int, unhealthy_threshold: int, *, enabled: bool = True) -> None:
        self.healthy_threshold = healthy_threshold
        self.unhealthy_threshold = unhealthy_threshold
        self.successes = 0
        self.failures = 0
        if enabled:
            self.state, self.reason = INITIAL, INITIAL_CHECKING
        else:
            self.state, self.reason = UNAVAILABLE, HEALTH_CHECK_DISABLED
        self.description = DESCRIPTIONS[self.reason]

    @property
    def routable(self) -> bool:
        """Does this target take new requests (fail-open aside)?"""
        return self.state in (HEALTHY, UNAVAILABLE)

    def record(self, result: ProbeResult) -> bool:
        """Count one check result; True when the state changed."""
        if self.state in (DRAINING, UNUSED, UNAVAILABLE):
            return False
        before = self.state
        if result.ok:
            self.successes += 1
            self.failures = 0
            needed = 1 if self.state == INITIAL else self.healthy_threshold
            if self.state != HEALTHY and self.successes >= needed:
                self._set(HEALTHY, "", "")
        else:
            self.failures += 1
            self.successes = 0
            if self.state == UNHEALTHY or self.failures >= self.unhealthy_threshold:
                # An unhealthy target's reason follows its latest failure, as ELB's does.
                self._set(UNHEALTHY, result.reason, result.detail)
        return self.state != before

    def drain(self) -> bool:
        if self.state in (DRAINING, UNUSED):
            return False
        self._set(DRAINING, DEREGISTRATION_IN_PROGRESS, "")
        return True

    def retire(self) -> None:
        self._set(UNUSED, NOT_REGISTERED, "")

    def _set(self, state: str, reason: str, detail: str) -> None:
        self.state = state
        self.reason = reason
        template = DESCRIPTIONS.get(reason, "")
        self.description = template.format(detail=detail) if template else detail

    def as_dict(self) -> dict[str, str]:
        return {"state": self.state, "reason": self.reason, "description": self.description}
