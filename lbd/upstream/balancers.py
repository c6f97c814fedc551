"""Target choice within one target group (pure: no I/O, no clock, deterministic given its inputs).

Each balancer is built over the fixed tuple of targets of a Snapshot and picks among those that are
eligible and not excluded (``exclude`` carries targets whose connect already failed for this request, so a
retry never lands on the same dead target).
"""

from __future__ import annotations

import math
import random
from collections.abc import Container, Sequence
from typing import Protocol

from lbd.upstream.maglev import DEFAULT_TABLE_SIZE, MaglevTable
from lbd.upstream.target import Target

_NOTHING: frozenset[Target] = frozenset()
_FALLBACK_TABLES = 8  # tables over eligible subsets kept per balancer (one per health state seen lately)


class Balancer(Protocol):
    def pick(self, flow_key: bytes | None = None, exclude: Container[Target] = _NOTHING) -> Target | None:
        """Return the next target, or None if no target is eligible."""
        ...


class RoundRobin:
    """Smooth weighted round robin (as nginx does): weights 3:1 give a a a b, interleaved as a a b a.

    Every pick adds each eligible target's weight to its running score, takes the highest and subtracts the
    total from it; with equal weights this is plain rotation.
    """

    def __init__(self, targets: Sequence[Target]) -> None:
        self._targets = tuple(targets)
        self._scores = [0.0] * len(self._targets)

    def pick(self, flow_key: bytes | None = None, exclude: Container[Target] = _NOTHING) -> Target | None:
        scores = self._scores
        targets = self._targets
        best = -1
        total = 0.0
        index = 0
        count = len(targets)
        while index < count:
            target = targets[index]
            if target.eligible and (not exclude or target not in exclude):
                weight = target.effective_weight
                scores[index] += weight
                total += weight
                if best < 0 or scores[index] > scores[best]:
                    best = index
            index += 1
        if best < 0:
            return None
        scores[best] -= total
        result: Target = targets[best]
        return result


class FlowHash:
    """Maglev consistent hashing of a flow key (lbd/upstream/maglev.py).

    NLB hashes each flow to one target for its whole life. The Maglev table over the group's targets is the
    same on every worker and every node, so all agree, and adding or removing a target moves about 1/N of
    the flows. The table holds every target with a weight (its configured weight: slow start's ramp would
    change the table every second). A flow whose slot names a target that is not eligible now (unhealthy,
    draining, ejected, or excluded after a failed connect) is placed by the table over the targets that are,
    which is the very table nodes build once that target is gone: flows that move when a target fails or
    starts draining do not move again when it leaves, and the flows of the other targets stay where they are.
    """

    def __init__(self, targets: Sequence[Target], table_size: int = DEFAULT_TABLE_SIZE) -> None:
        self._targets = tuple(targets)
        self._size = table_size
        self.table = MaglevTable(
            [t.hash_key for t in self._targets], [t.weight for t in self._targets], table_size
        )
        self._fallbacks: dict[tuple[int, ...], MaglevTable] = {}

    def pick(self, flow_key: bytes | None = None, exclude: Container[Target] = _NOTHING) -> Target | None:
        key = flow_key or b""
        index = self.table.lookup(key)
        if index >= 0:
            target: Target = self._targets[index]
            if target.eligible and (not exclude or target not in exclude):
                return target
        return self._pick_among_eligible(key, exclude)

    def _pick_among_eligible(self, key: bytes, exclude: Container[Target]) -> Target | None:
        chosen = tuple(
            index
            for index, target in enumerate(self._targets)
            if target.eligible and (not exclude or target not in exclude)
        )
        if not chosen:
            return None
        table = self._fallbacks.get(chosen)
        if table is None:
            if len(self._fallbacks) >= _FALLBACK_TABLES:
                self._fallbacks.clear()
            targets = [self._targets[index] for index in chosen]
            table = MaglevTable([t.hash_key for t in targets], [t.weight for t in targets], self._size)
            self._fallbacks[chosen] = table
        index = table.lookup(key)
        return self._targets[chosen[index]] if index >= 0 else None


class ConsistentHash:
    """HTTP consistent hashing (lbd's ``consistent_hash``): a request with a hash key (a header, a cookie
    or the source address, lbd/routing/hashkey.py) goes where Maglev puts that key; one without goes round
    robin, rather than every keyless request to one target."""

    def __init__(self, targets: Sequence[Target]) -> None:
        self._keyed = FlowHash(targets)
        self._keyless = RoundRobin(targets)
        self.table = self._keyed.table

    def pick(self, flow_key: bytes | None = None, exclude: Container[Target] = _NOTHING) -> Target | None:
        if flow_key is None:
            return self._keyless.pick(None, exclude)
        return self._keyed.pick(flow_key, exclude)


class WeightedRandom:
    """Each eligible target with probability weight / total weight, from an injected RNG."""

    def __init__(self, targets: Sequence[Target], rng: random.Random) -> None:
        self._targets = tuple(targets)
        self._rng = rng

    def pick(self, flow_key: bytes | None = None, exclude: Container[Target] = _NOTHING) -> Target | None:
        eligible = [t for t in self._targets if t.eligible and t not in exclude]
        if not eligible:
            return None
        return self._rng.choices(eligible, weights=[t.effective_weight for t in eligible])[0]


class LeastOutstanding:
    """The target with the fewest requests in flight per unit of weight; ties go round robin.

    ALB's least_outstanding_requests. The tie-break matters at low load, where every count is zero: without
    it the first target would take everything.
    """

    def __init__(self, targets: Sequence[Target]) -> None:
        self._targets = tuple(targets)
        self._next = 0

    def pick(self, flow_key: bytes | None = None, exclude: Container[Target] = _NOTHING) -> Target | None:
        count = len(self._targets)
        best: Target | None = None
        best_load = math.inf
        for step in range(count):
            target = self._targets[(self._next + step) % count]
            if not target.eligible or target in exclude:
                continue
            load = target.outstanding / target.effective_weight
            if load < best_load:
                best, best_load = target, load
        self._next = (self._next + 1) % max(count, 1)
        return best


def make_balancer(algorithm: str, targets: Sequence[Target], rng: random.Random | None = None) -> Balancer:
    if algorithm == "flow_hash":
        return FlowHash(targets)
    if algorithm == "consistent_hash":
        return ConsistentHash(targets)
    if algorithm == "weighted_random":
        return WeightedRandom(targets, rng or random.Random())
    if algorithm == "least_outstanding_requests":
        return LeastOutstanding(targets)
    return RoundRobin(targets)
