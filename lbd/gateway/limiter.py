"""Usage-plan throttles and quotas in process (one node): the ``Limiter`` of lbd/gateway/contracts.py.

Throttles are token buckets ("Throttle API requests for better throughput"): a bucket holds at most
``burst`` tokens, starts full and refills at ``rate`` tokens a second (a fraction is allowed: 0.5 is one
request every two seconds); a request takes one token from each bucket that applies, or none at all.
Quotas count requests per period; a new period has a new key (lbd/gateway/plans.py names them), so the
old count is simply left behind and dropped.

Time is the caller's ``now`` (the pipeline's clock), so tests can cross period boundaries without waiting.
"""

from __future__ import annotations

from collections.abc import Sequence

from lbd.gateway.contracts import Admission, Bucket, Quota

MAX_QUOTAS = 100_000  # quota counters kept; beyond, counters of ended periods are dropped first
# The answers as module constants: a compiled lookup of a module global, not of the enum's attribute.
_ADMIT = Admission.ADMIT
_THROTTLED = Admission.THROTTLED
_QUOTA_EXCEEDED = Admission.QUOTA_EXCEEDED


class LocalLimiter:
    def __init__(self) -> None:
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, updated at]
        self._quotas: dict[str, tuple[int, float]] = {}  # key -> (used, period end)

    async def admit(self, buckets: Sequence[Bucket], quota: Quota | None, now: float) -> Admission:
        return self.admit_now(buckets, quota, now)

    def admit_now(self, buckets: Sequence[Bucket], quota: Quota | None, now: float) -> Admission:
        """``admit`` without the coroutine (the pipeline's fast path, and the fallback of the shared one)."""
        states = []
        for bucket in buckets:
            state = self._buckets.get(bucket.key)
            if state is None:
                state = self._buckets[bucket.key] = [float(bucket.burst), now]
            elif now > state[1]:
                state[0] = min(float(bucket.burst), state[0] + (now - state[1]) * bucket.rate)
                state[1] = now
            if state[0] < 1.0:
                return _THROTTLED
            states.append(state)
        if quota is not None:
            key = quota.key
            held = self._quotas.get(key)
            used = 0 if held is None else held[0]
            if used >= quota.limit:
                return _QUOTA_EXCEEDED
            if held is None and len(self._quotas) >= MAX_QUOTAS:
                self._forget_ended(now)
            self._quotas[key] = (used + 1, quota.period_end)
        for state in states:
            state[0] -= 1.0
        return _ADMIT

    async def used(self, quota: Quota) -> int:
        return self._quotas.get(quota.key, (0, 0.0))[0]

    def _forget_ended(self, now: float) -> None:
        for key in [k for k, (_, end) in self._quotas.items() if end <= now]:
            del self._quotas[key]

    async def close(self) -> None:
        return None
