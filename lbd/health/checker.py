"""The node's health checker: one per node, in the supervisor, never one per worker.

Each target of each target group with checks enabled gets its own loop: probe, record the result in its
TargetHealth, sleep an interval. The first check of a target comes within a second of its registration
(ELB checks new targets at once) at a random offset; after that each sleep is the interval with ±10%
jitter, so checks that started together drift apart instead of firing in bursts.

Workers learn the verdicts through ``on_change`` (the supervisor broadcasts them over the control
channel): the routable map after every state change, and, batched once a second, the targets whose check
just passed (which ends a worker's passive ejection of them).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lbd.health.probes import ProbeSpec, probe
from lbd.health.state import DRAINING, Matcher, ProbeResult, TargetHealth

if TYPE_CHECKING:
    from lbd.config.schema import Config, TargetGroup

log = logging.getLogger("lbd.health")

FIRST_CHECK_WITHIN = 1.0
JITTER = 0.1
PASSED_FLUSH_SECONDS = 1.0

Probe = Callable[[ProbeSpec], Awaitable[ProbeResult]]
# (target group, "id:port") -> routable; and the keys whose latest check passed.
HealthListener = Callable[[dict[str, dict[str, bool]], dict[str, list[str]]], None]


@dataclass
class TargetCheck:
    group: str
    key: str  # "id:port"
    zone: str
    weight: int
    spec: ProbeSpec | None  # None: checks disabled
    interval: float
    health: TargetHealth
    task: asyncio.Task[None] | None = None
    last_result: ProbeResult | None = None
    signature: tuple[object, ...] = field(default=())


def probe_spec(group: TargetGroup, target_id: str, port: int) -> ProbeSpec | None:
    check = group.health_check
    if not check.enabled:
        return None
    return ProbeSpec(
        protocol=check.protocol,
        host=target_id,
        port=port if check.port == "traffic-port" else int(check.port),
        timeout=float(check.timeout_seconds),
        path=check.path,
        matcher=Matcher(check.matcher) if check.protocol in ("HTTP", "HTTPS", "GRPC") else None,
        proxy_protocol=group.proxy_protocol_v2,
        tls=group.protocol == "HTTPS",
    )


# CLB's DescribeInstanceHealth while connection draining runs (AWS: "Configure connection draining").
CLASSIC_DRAINING = "Instance deregistration currently in progress"


class HealthChecker:
    def __init__(
        self,
        on_change: HealthListener,
        *,
        probe_fn: Probe = probe,
        rng: random.Random | None = None,
    ) -> None:
        self._on_change = on_change
        self._probe = probe_fn
        self._rng = rng or random.Random()
        self.checks: dict[tuple[str, str], TargetCheck] = {}
        self._passed: dict[str, list[str]] = {}
        self._flush: asyncio.TimerHandle | None = None

    # -- configuration -------------------------------------------------------------------------------

    def update(self, config: Config, draining: Collection[tuple[str, str]] = ()) -> None:
        """Check exactly the targets of ``config``: keep the state of targets whose check is unchanged.

        ``draining`` (target group, "id:port") are deregistered targets on their way out: not checked.
        """
        wanted: dict[tuple[str, str], TargetCheck] = {}
        for group in config.target_groups:
            check = group.health_check
            for target in group.targets:
                key = f"{target.id}:{target.port}"
                spec = probe_spec(group, target.id, target.port)
                signature = (spec, check.interval_seconds, check.healthy_threshold, check.unhealthy_threshold)
                existing = self.checks.get((group.name, key))
                registered_again = existing is not None and existing.health.state == "draining"
                registered_again = registered_again and (group.name, key) not in draining
                if existing is not None and existing.signature == signature and not registered_again:
                    existing.zone, existing.weight = target.zone, target.weight
                    wanted[(group.name, key)] = existing
                    continue
                health = TargetHealth(
                    check.healthy_threshold, check.unhealthy_threshold, enabled=spec is not None
                )
                wanted[(group.name, key)] = TargetCheck(
                    group.name,
                    key,
                    target.zone,
                    target.weight,
                    spec,
                    float(check.interval_seconds),
                    health,
                    signature=signature,
                )
        for ident, old in self.checks.items():
            if wanted.get(ident) is not old and old.task is not None:
                old.task.cancel()
        self.checks = wanted
        for ident in draining:
            leaving = wanted.get(ident)
            if leaving is not None and leaving.health.drain():
                log.info("target group %s: target %s draining", *ident)
                if leaving.task is not None:
                    leaving.task.cancel()
        for target_check in wanted.values():
            if target_check.health.state == "draining":
                continue
            if target_check.spec is not None and target_check.task is None:
                target_check.task = asyncio.get_running_loop().create_task(self._run(target_check))
        self._on_change(self.routable(), {})

    def stop(self) -> None:
        for check in self.checks.values():
            if check.task is not None:
                check.task.cancel()
        if self._flush is not None:
            self._flush.cancel()

    # -- views -----------------------------------------------------------------------------------------

    def routable(self) -> dict[str, dict[str, bool]]:
        """Targets with a verdict: routable or not. Targets still ``initial`` are left out (no verdict)."""
        view: dict[str, dict[str, bool]] = {}
        for check in self.checks.values():
            if check.health.state != "initial":
                view.setdefault(check.group, {})[check.key] = check.health.routable
        return view

    def describe(self, group: str) -> list[dict[str, object]]:
        out = []
        for check in self.checks.values():
            if check.group != group:
                continue
            target_id, _, port = check.key.rpartition(":")
            health = check.health.as_dict()
            if ":" in group and health.get("state") == DRAINING:
                # A classic load balancer's group (lbd/classic.py): CLB's words for connection draining.
                health["description"] = CLASSIC_DRAINING
            out.append(
                {
                    "id": target_id,
                    "port": int(port),
                    "zone": check.zone,
                    "weight": check.weight,
                    **health,
                }
            )
        return out

    # -- checking --------------------------------------------------------------------------------------

    async def _run(self, check: TargetCheck) -> None:
        assert check.spec is not None
        await asyncio.sleep(self._rng.uniform(0, min(FIRST_CHECK_WITHIN, check.interval)))
        while True:
            result = await self._probe(check.spec)
            self._record(check, result)
            await asyncio.sleep(check.interval * self._rng.uniform(1 - JITTER, 1 + JITTER))

    def _record(self, check: TargetCheck, result: ProbeResult) -> None:
        check.last_result = result
        before = check.health.state
        if check.health.record(result):
            level = logging.INFO if check.health.routable else logging.WARNING
            log.log(
                level,
                "target group %s: target %s %s -> %s%s",
                check.group,
                check.key,
                before,
                check.health.state,
                f" ({check.health.reason}: {check.health.description})" if check.health.reason else "",
            )
            self._on_change(self.routable(), {})
        if result.ok:
            self._passed.setdefault(check.group, []).append(check.key)
            if self._flush is None:
                self._flush = asyncio.get_running_loop().call_later(PASSED_FLUSH_SECONDS, self._flush_passed)

    def _flush_passed(self) -> None:
        self._flush = None
        passed, self._passed = self._passed, {}
        if passed:
            self._on_change({}, passed)
