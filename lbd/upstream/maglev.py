"""Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load Balancer",
NSDI 2016, section 3.4): a lookup table of a prime number of slots, each naming a target.

Every target walks its own permutation of the slots (an offset and a skip derived from its name) and, in
turns, takes the next slot of its walk that is still free, until the table is full. The table depends only
on the set of names and their weights, so every worker and every node with the same targets builds the
same table, and a flow's hash picks the same target everywhere: a flow that ECMP moves to another node
keeps its target. Removing one of N targets moves little more than its own 1/N of the slots (the paper's
figure 12), where hashing modulo N would move almost all of them.

Names are hashed with blake2b (never Python's hash(), which is salted per process), and targets are laid
out in sorted order of their names, so the order in which targets were registered does not matter.

Weights: a target of weight w takes a turn in w of every W rounds (W the largest weight), so its share of
the slots is w / (sum of weights), as Envoy's Maglev load balancer does. A weight of 0 gets no slot.

Pure: no I/O. Compiled (maglev.pxd): building a 65,537-slot table is a C loop of a few milliseconds.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from hashlib import blake2b

DEFAULT_TABLE_SIZE = 65537  # the paper's choice: a prime, about 100 times the number of targets foreseen
_NAME_PERSON = b"lbd-maglev-name"
_FLOW_PERSON = b"lbd-maglev-flow"


def is_prime(number: int) -> bool:
    if number < 2:
        return False
    divisor = 2
    while divisor * divisor <= number:
        if number % divisor == 0:
            return False
        divisor += 1
    return True


def flow_hash(key: bytes) -> int:
    """The 64-bit hash of a flow key (the same on every node: blake2b, unsalted)."""
    return int.from_bytes(blake2b(key, digest_size=8, person=_FLOW_PERSON).digest(), "big")


def _walk(name: bytes, size: int) -> tuple[int, int]:
    """A name's permutation of the slots: (offset, skip), skip in 1..size-1 (so, size being prime, the walk
    visits every slot)."""
    digest = blake2b(name, digest_size=16, person=_NAME_PERSON).digest()
    return int.from_bytes(digest[:8], "big") % size, int.from_bytes(digest[8:], "big") % (size - 1) + 1


class MaglevTable:
    """The lookup table over ``names`` (sorted here) with their ``weights``; ``lookup`` gives a name's
    index in ``names`` or -1 when no name has a positive weight."""

    def __init__(
        self, names: Sequence[bytes], weights: Sequence[int], size: int = DEFAULT_TABLE_SIZE
    ) -> None:
        if not is_prime(size):
            raise ValueError(f"a Maglev table size must be a prime, got {size}")
        if len(names) != len(weights):
            raise ValueError("one weight per name")
        order = sorted(range(len(names)), key=lambda index: names[index])
        self.names: tuple[bytes, ...] = tuple(names[index] for index in order)
        self.weights: tuple[int, ...] = tuple(max(0, int(weights[index])) for index in order)
        self.size = size
        self.slots = _populate(self.names, self.weights, size)
        self._positions = order  # sorted position -> caller's index

    def lookup(self, key: bytes) -> int:
        """The caller's index of the name for flow key ``key``."""
        if not self.slots:
            return -1
        slot: int = self.slots[flow_hash(key) % self.size]
        return self._positions[slot]

    def shares(self) -> dict[bytes, int]:
        """How many slots each name holds."""
        counts = dict.fromkeys(self.names, 0)
        for slot in self.slots:
            counts[self.names[slot]] += 1
        return counts

    def digest(self) -> str:
        """A short digest of the whole table (names and slots): nodes with equal digests pick alike."""
        hasher = blake2b(digest_size=16, person=_NAME_PERSON)
        for name, weight in zip(self.names, self.weights, strict=True):
            hasher.update(b"%d %d %s\n" % (len(name), weight, name))
        hasher.update(self.slots.tobytes())
        return hasher.hexdigest()


def _populate(names: tuple[bytes, ...], weights: tuple[int, ...], size: int) -> array[int]:
    """The paper's Populate (its pseudocode 1), with weighted turns; empty when no weight is positive."""
    count = len(names)
    heaviest = max(weights, default=0)
    if heaviest <= 0:
        return array("i")
    table = array("i", [-1]) * size
    walks = [_walk(name, size) for name in names]
    at = array("q", [walk[0] for walk in walks])  # where each target's walk goes on
    skips = array("q", [walk[1] for walk in walks])
    turns = array("q", [0]) * count  # a target takes a slot in the round where round * weight >= this
    step = array("q", weights)
    slots = table  # typed views of the arrays when compiled (maglev.pxd)
    position_at = at
    skip_of = skips
    turn_of = turns
    weight_of = step
    filled = 0
    round_ = 1
    while True:
        for index in range(count):
            weight = weight_of[index]
            if weight <= 0 or round_ * weight < turn_of[index]:
                continue
            turn_of[index] += heaviest
            position = position_at[index]
            skip = skip_of[index]
            while slots[position] >= 0:
                position = (position + skip) % size
            slots[position] = index
            position_at[index] = (position + skip) % size
            filled += 1
            if filled == size:
                return table
        round_ += 1
