"""Usage plans for one API stage, compiled per Snapshot: which buckets and quota a request draws from.

API Gateway ("Usage plans and API keys", "Throttle API requests for better throughput"): a request on a
route that requires an API key draws, in this order, from the plan's per-route throttle, the plan's
throttle, the stage's per-route throttle and the stage's throttle, and counts against the plan's quota
for that key (counted per key across every stage of the plan). Routes that need no key skip the plan and
meet the stage's throttles only. Pure.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from lbd.gateway.contracts import Bucket, Quota

if TYPE_CHECKING:
    from lbd.config.gateway import Quota as QuotaConfig
    from lbd.config.gateway import Throttle, UsagePlan

MAX_REMEMBERED = 10_000  # keys' bucket lists and quotas kept per plan


@dataclass(frozen=True, slots=True)
class CompiledPlan:
    name: str
    throttle: Throttle | None
    route_throttles: Mapping[str, Throttle]
    quota: QuotaConfig | None
    # The current period (start, end, label), so a request inside it does no calendar arithmetic.
    _period: list[tuple[float, float, str]] = field(default_factory=list, compare=False)
    # What a key draws from on a route, and its quota in the current period: the same objects for every
    # request of a key (bounded; dropped whole when full, or when the period moves on).
    _drawn: dict[tuple[str, str], list[Bucket]] = field(default_factory=dict, compare=False)
    _quotas: dict[str, Quota] = field(default_factory=dict, compare=False)

    def buckets(self, counter: str, route_key: str) -> list[Bucket]:
        out = []
        route = self.route_throttles.get(route_key)
        if route is not None:
            out.append(
                Bucket(
                    f"plan:{self.name}:key:{counter}:route:{route_key}", route.rate_limit, route.burst_limit
                )
            )
        if self.throttle is not None:
            out.append(
                Bucket(f"plan:{self.name}:key:{counter}", self.throttle.rate_limit, self.throttle.burst_limit)
            )
        return out

    def buckets_for(self, counter: str, route_key: str, stage: list[Bucket]) -> list[Bucket]:
        """The plan's buckets for the key, then the stage's ``stage`` (the route's), in API Gateway's
        order; the list is shared, not to be changed."""
        drawn = self._drawn.get((counter, route_key))
        if drawn is None:
            if len(self._drawn) >= MAX_REMEMBERED:
                self._drawn.clear()
            drawn = self._drawn[(counter, route_key)] = [*self.buckets(counter, route_key), *stage]
        return drawn

    def quota_for(self, counter: str, now: float) -> Quota | None:
        if self.quota is None:
            return None
        period = self._period
        if period and period[0][0] <= now < period[0][1]:
            quota = self._quotas.get(counter)
            if quota is not None:
                return quota
            start, end, label = period[0]
        else:
            start, end = quota_period(self.quota, now)
            label = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d")
            period[:] = [(start, end, label)]
            self._quotas.clear()
        if len(self._quotas) >= MAX_REMEMBERED:
            self._quotas.clear()
        quota = self._quotas[counter] = Quota(
            f"quota:{self.name}:{counter}:{label}", self.quota.limit, start, end
        )
        return quota


def stage_plans(plans: tuple[UsagePlan, ...], api: str, stage: str) -> dict[str, CompiledPlan]:
    """The plans that cover ``api``/``stage``, by name."""
    out: dict[str, CompiledPlan] = {}
    for plan in plans:
        for entry in plan.apis:
            if entry.api == api and entry.stage == stage:
                routes = {r.route_key: r.throttle for r in entry.throttle}
                out[plan.name] = CompiledPlan(plan.name, plan.throttle, routes, plan.quota)
    return out


def stage_buckets(
    api: str, stage: str, route_key: str, route: Throttle | None, default: Throttle | None
) -> list[Bucket]:
    out = []
    if route is not None:
        out.append(Bucket(f"stage:{api}/{stage}:route:{route_key}", route.rate_limit, route.burst_limit))
    if default is not None:
        out.append(Bucket(f"stage:{api}/{stage}", default.rate_limit, default.burst_limit))
    return out


def quota_period(quota: QuotaConfig, now: float) -> tuple[float, float]:
    """The UTC period ``now`` falls in: DAY from midnight; WEEK from the offset's weekday (0 = Sunday,
    API_QuotaSettings); MONTH from day ``offset + 1`` of the month."""
    moment = datetime.fromtimestamp(now, UTC)
    midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if quota.period == "DAY":
        start = midnight
        end = start + timedelta(days=1)
    elif quota.period == "WEEK":
        sunday_based = (midnight.weekday() + 1) % 7  # Monday is 0 in Python; Sunday is 0 in API Gateway
        start = midnight - timedelta(days=(sunday_based - quota.offset) % 7)
        end = start + timedelta(days=7)
    else:
        day = quota.offset + 1
        start = midnight.replace(day=day)
        if moment < start:
            start = _add_months(start, -1)
        end = _add_months(start, 1)
    return start.timestamp(), end.timestamp()


def _add_months(moment: datetime, months: int) -> datetime:
    month = moment.month - 1 + months
    year = moment.year + month // 12
    month = month % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])  # offsets stop at 27, so day <= 28 anyway
    return moment.replace(year=year, month=month, day=day)
