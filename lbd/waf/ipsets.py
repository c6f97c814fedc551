"""IP sets: IPv4 and IPv6 CIDRs, looked up by bisection over merged address ranges.

A set of any size answers in O(log n) with two integer comparisons per step, and overlapping or adjacent
CIDRs cost nothing extra (they are merged when the set is compiled, once per Snapshot).
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Iterable

from lbd.waf.request import Address


class IpMatcher:
    """A compiled IP set (an extension type when compiled: ipsets.pxd)."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        v4: list[tuple[int, int]] = []
        v6: list[tuple[int, int]] = []
        for text in cidrs:
            network = ipaddress.ip_network(text, strict=False)
            span = (int(network.network_address), int(network.broadcast_address))
            (v4 if network.version == 4 else v6).append(span)
        self._v4 = _merge(v4)
        self._v6 = _merge(v6)
        self.size = len(v4) + len(v6)

    def __contains__(self, address: Address | None) -> bool:
        return self.contains(address)

    def contains(self, address: Address | None) -> bool:
        if address is None:
            return False
        version, value = address
        starts, ends = self._v4 if version == 4 else self._v6
        at = bisect_right(starts, value) - 1
        return at >= 0 and value <= ends[at]


def _merge(spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    starts: list[int] = []
    ends: list[int] = []
    for start, end in sorted(spans):
        if ends and start <= ends[-1] + 1:
            ends[-1] = max(ends[-1], end)
        else:
            starts.append(start)
            ends.append(end)
    return starts, ends
