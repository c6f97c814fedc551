"""Target-group logic without sockets: the health state machine, matchers, who takes traffic (fail open,
zones, slow start, outlier ejection), with an injected clock so every share is exact."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from lbd.config.schema import TargetGroup
from lbd.health.state import (
    FAILED_HEALTH_CHECKS,
    RESPONSE_CODE_MISMATCH,
    TIMEOUT,
    Matcher,
    ProbeResult,
    TargetHealth,
)
from lbd.runtime import TargetGroupRuntime

OK = ProbeResult.success()
TIMED_OUT = ProbeResult(False, TIMEOUT)
MISMATCH = ProbeResult(False, RESPONSE_CODE_MISMATCH, "503")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def group(targets: list[dict[str, Any]], **settings: Any) -> TargetGroup:
    return TargetGroup.model_validate(
        {
            "name": "tg",
            "protocol": "HTTP",
            "algorithm": "round_robin",
            "health_check": {"protocol": "HTTP", "path": "/", "timeout_seconds": 5, "matcher": "200"},
            "targets": targets,
            **settings,
        }
    )


def runtime(targets: list[dict[str, Any]], clock: Clock | None = None, **settings: Any) -> TargetGroupRuntime:
    zone = settings.pop("node_zone", "zone-a")
    cross = settings.pop("cross_zone_setting", True)
    return TargetGroupRuntime(
        group(targets, **settings), node_zone=zone, cross_zone=cross, clock=clock or Clock()
    )


def ports(n: int, start: int = 9000, zone: str = "zone-a") -> list[dict[str, Any]]:
    return [{"id": "127.0.0.1", "port": start + i, "zone": zone} for i in range(n)]


def shares(tg: TargetGroupRuntime, picks: int) -> Counter[int]:
    counts: Counter[int] = Counter()
    for _ in range(picks):
        target = tg.pick()
        assert target is not None
        counts[target.port] += 1
    return counts


# -- the health state machine ------------------------------------------------------------------------------


def test_new_target_needs_one_pass_then_thresholds_count() -> None:
    health = TargetHealth(healthy_threshold=3, unhealthy_threshold=2)
    assert (health.state, health.reason) == ("initial", "Elb.InitialHealthChecking")
    assert health.record(OK) and health.state == "healthy"  # one check after registration (ELB)
    assert not health.record(TIMED_OUT) and health.state == "healthy"
    assert health.record(TIMED_OUT)
    assert (health.state, health.reason, health.description) == ("unhealthy", TIMEOUT, "Request timed out")
    assert not health.record(OK) and not health.record(OK)
    assert health.record(OK) and health.state == "healthy"


def test_a_failure_resets_the_success_count_and_the_reason_follows_the_latest_failure() -> None:
    health = TargetHealth(healthy_threshold=2, unhealthy_threshold=2)
    health.record(MISMATCH)
    health.record(MISMATCH)
    assert health.description == "Health checks failed with these codes: [503]"
    health.record(OK)
    health.record(ProbeResult(False, FAILED_HEALTH_CHECKS, "connection refused"))
    assert (health.state, health.description) == ("unhealthy", "Health checks failed: connection refused")
    health.record(OK)
    assert health.state == "unhealthy"
    health.record(OK)
    assert health.state == "healthy"


def test_initial_target_turns_unhealthy_after_the_threshold() -> None:
    health = TargetHealth(healthy_threshold=5, unhealthy_threshold=3)
    health.record(TIMED_OUT)
    health.record(TIMED_OUT)
    assert health.state == "initial"
    health.record(TIMED_OUT)
    assert health.state == "unhealthy"


def test_disabled_checks_and_draining() -> None:
    disabled = TargetHealth(5, 2, enabled=False)
    assert (disabled.state, disabled.reason, disabled.routable) == (
        "unavailable",
        "Target.HealthCheckDisabled",
        True,
    )
    assert not disabled.record(TIMED_OUT)
    health = TargetHealth(5, 2)
    assert health.drain() and (health.state, health.reason) == ("draining", "Target.DeregistrationInProgress")
    assert not health.record(OK) and health.state == "draining"


@pytest.mark.parametrize(
    ("spec", "inside", "outside"),
    [("200", [200], [201, 199]), ("200,302", [200, 302], [301]), ("200-299", [200, 250, 299], [300, 199])],
)
def test_matcher(spec: str, inside: list[int], outside: list[int]) -> None:
    matcher = Matcher(spec)
    assert all(code in matcher for code in inside)
    assert not any(code in matcher for code in outside)


# -- who takes traffic -------------------------------------------------------------------------------------


def test_initial_targets_fail_open_then_only_healthy_ones_serve() -> None:
    tg = runtime(ports(3))
    assert tg.fail_open  # nothing is known healthy yet: every target serves (ELB fail open)
    assert shares(tg, 3) == {9000: 1, 9001: 1, 9002: 1}
    tg.apply_health({"127.0.0.1:9000": True, "127.0.0.1:9001": False, "127.0.0.1:9002": True})
    assert not tg.fail_open
    assert shares(tg, 4) == {9000: 2, 9002: 2}
    tg.apply_health({"127.0.0.1:9000": False, "127.0.0.1:9002": False})
    assert tg.fail_open
    assert shares(tg, 3) == {9000: 1, 9001: 1, 9002: 1}


def test_minimum_healthy_count() -> None:
    tg = runtime(ports(4), minimum_healthy_targets={"count": 2})
    tg.apply_health({"127.0.0.1:9000": True, "127.0.0.1:9001": False, "127.0.0.1:9002": False})
    assert tg.fail_open
    tg.apply_health({"127.0.0.1:9001": True})
    assert not tg.fail_open
    assert set(shares(tg, 4)) == {9000, 9001}


def elb_zone_example(cross_zone: bool) -> Counter[int]:
    """ELB's example: zone A has 2 targets and zone B 8; clients split evenly over one node per zone."""
    targets = ports(2, 9000, "zone-a") + ports(8, 9100, "zone-b")
    healthy = {f"127.0.0.1:{t['port']}": True for t in targets}
    total: Counter[int] = Counter()
    for zone in ("zone-a", "zone-b"):
        tg = runtime(targets, node_zone=zone, cross_zone_setting=cross_zone)
        tg.apply_health(healthy)
        total += shares(tg, 800)
    return total


def test_cross_zone_off_reproduces_elbs_25_and_6_25_percent() -> None:
    counts = elb_zone_example(cross_zone=False)
    assert {port: counts[port] / 1600 for port in counts} == {
        **{9000 + i: 0.25 for i in range(2)},
        **{9100 + i: 0.0625 for i in range(8)},
    }


def test_cross_zone_on_gives_every_target_10_percent() -> None:
    counts = elb_zone_example(cross_zone=True)
    assert {counts[port] / 1600 for port in counts} == {0.1}
    assert len(counts) == 10


def test_zone_without_healthy_targets_fails_over_to_other_zones() -> None:
    tg = runtime(ports(1, 9000, "zone-a") + ports(2, 9100, "zone-b"), cross_zone_setting=False)
    tg.apply_health({"127.0.0.1:9000": True, "127.0.0.1:9100": True, "127.0.0.1:9101": True})
    assert shares(tg, 3) == {9000: 3}
    tg.apply_health({"127.0.0.1:9000": False, "127.0.0.1:9100": True, "127.0.0.1:9101": True})
    assert tg.zonal_failover and tg.counters["zonal_failovers"] == 1
    assert shares(tg, 4) == {9100: 2, 9101: 2}
    tg.apply_health({"127.0.0.1:9000": True})
    assert not tg.zonal_failover
    # A connect failure on the only local target still finds another zone for this request.
    local = tg.targets[0]
    retried = tg.pick(None, {local})
    assert retried is not None and retried.zone == "zone-b"


def test_slow_start_ramps_a_recovered_target_linearly() -> None:
    clock = Clock()
    tg = runtime(ports(2), clock, slow_start_seconds=100)
    tg.apply_health({"127.0.0.1:9000": True, "127.0.0.1:9001": False})
    tg.apply_health({"127.0.0.1:9001": True})  # back while 9000 serves: ramps from 0
    newcomer = tg.targets[1]
    assert newcomer.ramp == 0.0
    clock.now += 25
    assert tg.tick()
    assert newcomer.ramp == 0.25
    counts = shares(tg, 500)
    assert counts[9001] == 100  # weight 0.25 against 1: a fifth of the picks
    clock.now += 75
    assert not tg.tick()  # ramp done, nothing left to do
    assert shares(tg, 10) == {9000: 5, 9001: 5}


def test_no_slow_start_when_every_target_starts_together() -> None:
    tg = runtime(ports(2), slow_start_seconds=100)
    tg.apply_health({"127.0.0.1:9000": True, "127.0.0.1:9001": True})
    assert all(t.ramp == 1.0 for t in tg.targets)


def test_outlier_ejection_backs_off_and_a_passing_check_ends_it() -> None:
    clock = Clock()
    tg = runtime(ports(3), clock, outlier_detection={"consecutive_failures": 3, "ejection_seconds": 10})
    tg.apply_health({f"127.0.0.1:{p}": True for p in (9000, 9001, 9002)})
    bad = tg.targets[0]
    tg.request_failed(bad)
    tg.request_failed(bad)
    tg.request_succeeded(bad)  # the run is broken: counting starts again
    for _ in range(3):
        tg.request_failed(bad)
    assert bad.ejected and 9000 not in shares(tg, 6)
    clock.now += 10
    tg.tick()
    assert not bad.ejected
    for _ in range(3):
        tg.request_failed(bad)
    clock.now += 10
    tg.tick()
    assert bad.ejected  # the second ejection lasts twice as long
    tg.apply_health({}, passed=["127.0.0.1:9000"])
    assert not bad.ejected


def test_the_last_serving_target_is_never_ejected() -> None:
    tg = runtime(ports(1), outlier_detection={"consecutive_failures": 1})
    tg.apply_health({"127.0.0.1:9000": True})
    tg.request_failed(tg.targets[0])
    assert not tg.targets[0].ejected
