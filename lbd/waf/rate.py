"""Counters for rate-based rules: requests per aggregation key over a sliding evaluation window.

AWS WAF counts requests per key over the rule's window (60, 120, 300 or 600 s) and applies the rule's
action while the count is over the limit; its counts are estimates that it refreshes every few seconds
(AWS WAF Developer Guide, "Rate-based rule statement" and "Rate-based rule caveats"). lbd keeps, per key,
the counts of ``SLOTS`` slices of the window in a ring: a request adds one to the current slice, and slices
older than the window fall off, so the count ends within one slice (window / 10) of the window's end.

Where counts live is the ``RateStore`` interface: ``WindowCounter`` here is in-process (each worker
counts its own requests; docs/waf.md says how lbd splits a limit across workers). The store backed by
``shared_state.redis`` (lbd/gateway/redis_rates.py) implements the same two methods, adding its local hits
to the shared counts in the background, so the data path never waits on the network (WAF's own counts lag
by seconds too); it says ``fleet_wide = True``, and rules then compare its counts with the whole limit.
"""

from __future__ import annotations

from typing import Protocol

SLOTS = 10
MAX_KEYS = 100_000  # per rule and worker; beyond it the least recently started keys are forgotten


class RateStore(Protocol):
    def hit(self, key: str, now: float) -> int:
        """Count one request for ``key`` at ``now`` (monotonic seconds); the count in the window to now."""
        ...

    def sweep(self, now: float) -> None:
        """Forget keys with nothing left in the window (called about once a second)."""
        ...


class _Ring:
    """One key's counts: a slice per ``SLOTS`` of the window (an extension type when compiled: rate.pxd)."""

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.counts = [0] * SLOTS
        self.total = 0


class WindowCounter:
    """In-process sliding-window counts, one ring of ``SLOTS`` slices per key."""

    def __init__(self, window_seconds: float) -> None:
        self.window = window_seconds
        self.slice = window_seconds / SLOTS
        self._rings: dict[str, _Ring] = {}

    def hit(self, key: str, now: float) -> int:
        slot = int(now // self.slice)
        ring = self._rings.get(key)
        if ring is None:
            if len(self._rings) >= MAX_KEYS:
                self._evict(now)
            ring = self._rings[key] = _Ring(slot)
        elif slot != ring.slot:
            _advance(ring, slot)
        ring.counts[slot % SLOTS] += 1
        ring.total += 1
        return ring.total

    def count(self, key: str, now: float) -> int:
        ring = self._rings.get(key)
        if ring is None:
            return 0
        _advance(ring, int(now // self.slice))
        return ring.total

    def sweep(self, now: float) -> None:
        slot = int(now // self.slice)
        stale = [key for key, ring in self._rings.items() if slot - ring.slot >= SLOTS]
        for key in stale:
            del self._rings[key]

    def __len__(self) -> int:
        return len(self._rings)

    def _evict(self, now: float) -> None:
        self.sweep(now)
        while len(self._rings) >= MAX_KEYS:
            del self._rings[next(iter(self._rings))]


def _advance(ring: _Ring, slot: int) -> None:
    """Move the ring to ``slot``, emptying the slices that fell out of the window."""
    steps = slot - ring.slot
    if steps <= 0:
        return
    if steps >= SLOTS:
        ring.counts = [0] * SLOTS
        ring.total = 0
    else:
        counts = ring.counts
        for step in range(1, steps + 1):
            index = (ring.slot + step) % SLOTS
            ring.total -= counts[index]
            counts[index] = 0
    ring.slot = slot
