"""The surge queue of a classic listener (AWS: "Troubleshoot a Classic Load Balancer: HTTP errors",
SurgeQueueLength and SpilloverCount in "CloudWatch metrics for your Classic Load Balancer").

With ``max_connections_per_instance`` on a classic load balancer, each instance takes at most that many
requests (HTTP listeners) or connections (TCP listeners) at a time from one worker's listener. When every
instance that could take one is at its limit, the request or connection waits here, in arrival order, up to
``surge_queue_length`` (1,024 as CLB) per listener per worker; beyond that it is refused (503 for HTTP, the
connection closed for TCP) and counted as spillover. A slot that frees up goes to the head of the queue.

A queued item costs one entry in a deque: no timer, no task. Without the setting a group has no queue and
the data path reads one attribute (``TargetGroupRuntime.surge is None``).

Items are HTTP exchanges and TCP client sides; each has ``surge_target`` (the instance whose slot it
holds, or None) and ``surge_resume()`` (try again, called when it leaves the queue).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container
from typing import TYPE_CHECKING, Any, Protocol

from lbd.observe.stats import ListenerStats
from lbd.upstream.target import Target

if TYPE_CHECKING:
    from lbd.runtime import TargetGroupRuntime


class SurgeItem(Protocol):
    surge_target: Any

    def surge_resume(self) -> None: ...


class SurgeQueue:
    def __init__(self, group: TargetGroupRuntime, limit: int, capacity: int, stats: ListenerStats) -> None:
        self.group = group
        self.limit = limit
        self.capacity = capacity
        self.stats = stats
        self.in_use: dict[Target, int] = {}
        self.waiting: deque[SurgeItem] = deque()
        self._draining = False

    def admit(self, item: SurgeItem, tried: Container[Target]) -> Container[Target] | None:
        """Before a pick: what to exclude (``tried`` and the instances at their limit), or None when
        ``item`` must queue behind those already waiting. Gives back a slot ``item`` held (a retry)."""
        if item.surge_target is not None:
            self._give_back(item)
            self.drain()
        if self.waiting and not self._draining:
            return None
        limit = self.limit
        full = [target for target, count in self.in_use.items() if count >= limit]
        if not full:
            return tried
        exclude = set(full)
        for target in self.group.targets:
            if target in tried:
                exclude.add(target)
        return exclude

    def must_wait(self, tried: Container[Target]) -> bool:
        """No pick: is that because instances that could take it are at their limit?"""
        limit = self.limit
        for target, count in self.in_use.items():
            if count >= limit and target.eligible and target not in tried:
                return True
        return False

    def wait(self, item: SurgeItem) -> bool:
        """Queue ``item``; False (and counted as spillover) when the queue is full."""
        if len(self.waiting) >= self.capacity:
            self.stats.spillover_count += 1
            return False
        if self._draining:
            self.waiting.appendleft(item)  # it was at the head: it keeps its place
        else:
            self.waiting.append(item)
        self.stats.surge_queue_length += 1
        return True

    def take(self, item: SurgeItem, target: Target) -> None:
        self.in_use[target] = self.in_use.get(target, 0) + 1
        item.surge_target = target

    def release(self, item: SurgeItem) -> None:
        """``item`` is done (finished, or its client left): free its slot or its place in the queue."""
        if item.surge_target is not None:
            self._give_back(item)
            self.drain()
        elif self.waiting:
            try:
                self.waiting.remove(item)
            except ValueError:
                return
            self.stats.surge_queue_length -= 1

    def _give_back(self, item: SurgeItem) -> None:
        target = item.surge_target
        item.surge_target = None
        count = self.in_use.get(target, 0) - 1
        if count > 0:
            self.in_use[target] = count
        else:
            self.in_use.pop(target, None)

    def _has_room(self) -> bool:
        limit = self.limit
        in_use = self.in_use
        return any(target.eligible and in_use.get(target, 0) < limit for target in self.group.targets)

    def drain(self) -> None:
        """Hand free slots to the head of the queue, in order."""
        if self._draining:
            return
        self._draining = True
        try:
            while self.waiting and self._has_room():
                item = self.waiting.popleft()
                self.stats.surge_queue_length -= 1
                item.surge_resume()
                if self.waiting and self.waiting[0] is item:
                    break  # it could not take the slot after all: wait for the next one
        finally:
            self._draining = False
