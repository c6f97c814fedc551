"""Balancers are pure: exact sequences and shares, no loop, no clock."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from lbd.upstream.balancers import FlowHash, LeastOutstanding, RoundRobin, WeightedRandom, make_balancer
from lbd.upstream.target import Target


def targets(*weights: int) -> list[Target]:
    return [Target(f"10.0.0.{i}", 80, "zone-a", w) for i, w in enumerate(weights, start=1)]


def names(picks: list[Target | None]) -> str:
    return "".join("-" if t is None else "abcdefgh"[int(t.id.rsplit(".", 1)[1]) - 1] for t in picks)


def test_round_robin_equal_weights_rotates() -> None:
    rr = RoundRobin(targets(1, 1, 1))
    assert names([rr.pick() for _ in range(6)]) == "abcabc"


def test_round_robin_is_smooth_weighted() -> None:
    # nginx's smooth weighted round robin: 5:1:1 gives a a b a c a a, not a a a a a b c.
    rr = RoundRobin(targets(5, 1, 1))
    assert names([rr.pick() for _ in range(7)]) == "aabacaa"


def test_round_robin_skips_unroutable_and_excluded() -> None:
    pool = targets(1, 1, 1)
    pool[1].healthy = False
    pool[1].refresh()
    rr = RoundRobin(pool)
    assert names([rr.pick() for _ in range(4)]) == "acac"
    assert rr.pick(exclude={pool[0], pool[2]}) is None
    pool[2].draining = True
    pool[2].refresh()
    assert names([rr.pick() for _ in range(2)]) == "aa"


def test_zero_weight_is_never_picked() -> None:
    for algorithm in ("round_robin", "flow_hash", "weighted_random", "least_outstanding_requests"):
        pool = targets(0, 1)
        balancer = make_balancer(algorithm, pool, random.Random(1))
        assert {balancer.pick(f"k{i}".encode()) for i in range(50)} == {pool[1]}, algorithm


def test_flow_hash_is_stable_and_the_same_for_every_instance() -> None:
    a, b = FlowHash(targets(1, 1, 1, 1)), FlowHash(targets(1, 1, 1, 1))
    for i in range(200):
        key = f"tcp|192.0.2.1|{i}|10.0.0.9|80".encode()
        assert a.pick(key) is a.pick(key)
        assert a.pick(key).id == b.pick(key).id  # type: ignore[union-attr]


def test_flow_hash_moves_only_the_flows_of_a_removed_target() -> None:
    pool = targets(1, 1, 1, 1, 1)
    hashing = FlowHash(pool)
    keys = [f"flow{i}".encode() for i in range(5000)]
    before = {k: hashing.pick(k) for k in keys}
    pool[2].healthy = False
    pool[2].refresh()
    after = {k: hashing.pick(k) for k in keys}
    moved = [k for k in keys if before[k] is not after[k]]
    assert all(before[k] is pool[2] for k in moved)
    assert len(moved) == sum(1 for k in keys if before[k] is pool[2])


def test_flow_hash_shares_follow_weights() -> None:
    pool = targets(1, 3)
    hashing = FlowHash(pool)
    counts = Counter(hashing.pick(f"f{i}".encode()) for i in range(20000))
    share = counts[pool[1]] / 20000
    assert 0.72 < share < 0.78  # 0.75 expected; 20k draws give a standard deviation of 0.003


def test_weighted_random_with_seeded_rng() -> None:
    pool = targets(1, 3)
    balancer = WeightedRandom(pool, random.Random(7))
    counts = Counter(balancer.pick() for _ in range(20000))
    assert 0.72 < counts[pool[1]] / 20000 < 0.78


def test_least_outstanding_prefers_idle_targets_and_breaks_ties_in_turn() -> None:
    pool = targets(1, 1, 1)
    balancer = LeastOutstanding(pool)
    assert names([balancer.pick() for _ in range(3)]) == "abc"
    pool[0].outstanding = 2
    pool[1].outstanding = 1
    assert balancer.pick() is pool[2]


@settings(max_examples=50)
@given(st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=6))
def test_round_robin_shares_are_exact_over_a_full_cycle(weights: list[int]) -> None:
    pool = targets(*weights)
    rr = RoundRobin(pool)
    total = sum(weights)
    if total == 0:
        assert rr.pick() is None
        return
    picks = Counter(rr.pick() for _ in range(total))
    assert picks == Counter({t: t.weight for t in pool if t.weight})
