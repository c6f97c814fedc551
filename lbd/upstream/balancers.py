"""Target choice within one target group (pure: no I/O, no clock, deterministic given its inputs).

Each balancer is built over the fixed tuple of targets of a Snapshot and picks among those that are
eligible and not excluded (``exclude`` carries targets whose connect already failed for this request, so a
retry never lands on the same dead target).
"""

from __future__ import annotations

import math
import random
from collections.abc import Container, Sequence
from hashlib import blake2b
from typing import Protocol

from lbd.upstream.target import Target

_NOTHING: frozenset[Target] = frozenset()
_TWO_64 = float(1 << 64)


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
    """Weighted rendezvous (highest random weight) hashing of a flow key.

    NLB hashes each flow to one target for its whole life. Rendezvous hashing with a keyed hash that is the
    same everywhere (blake2b, not Python's salted hash()) makes every worker and every node agree, and when
    a target leaves only the flows that were on it move. Score = weight / -ln(u) with u uniform in (0, 1)
    gives each target a share proportional to its weight (Schindelhauer & Schomaker, 2005).
    """

    def __init__(self, targets: Sequence[Target]) -> None:
        self._targets = tuple(targets)

    def pick(self, flow_key: bytes | None = None, exclude: Container[Target] = _NOTHING) -> Target | None:
        key = flow_key or b""
        best: Target | None = None
        best_score = -1.0
        for target in self._targets:
            if not target.eligible or target in exclude:
                continue
            digest = blake2b(key, digest_size=8, key=target.hash_key[:64]).digest()
            uniform = (int.from_bytes(digest, "big") + 0.5) / _TWO_64
            score = target.effective_weight / -math.log(uniform)
            if score > best_score:
                best, best_score = target, score
        return best


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
    if algorithm == "weighted_random":
        return WeightedRandom(targets, rng or random.Random())
    if algorithm == "least_outstanding_requests":
        return LeastOutstanding(targets)
    return RoundRobin(targets)
