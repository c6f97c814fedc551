"""The node's discovery providers: one per target group with ``discovery``, started and stopped as the
config comes and goes (a reload that leaves a group's discovery as it was keeps its provider running)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from lbd.discovery.targets import ProviderState, Targets

if TYPE_CHECKING:
    from lbd.config.schema import Config, TargetGroup
    from lbd.discovery.dns import DnsProvider, Publish
    from lbd.discovery.etcd import EtcdProvider

    Provider = DnsProvider | EtcdProvider

log = logging.getLogger("lbd.discovery")


def make_provider(group: TargetGroup, node_zone: str, publish: Publish) -> Provider | None:
    config = group.discovery
    if config is None:
        return None
    # Each provider's client (dnspython, aiohttp's) loads with the first group that uses it: a supervisor
    # without discovery holds neither.
    if config.type == "dns":
        from lbd.discovery.dns import DnsProvider

        return DnsProvider(group, config, node_zone, publish)
    from lbd.discovery.etcd import EtcdProvider

    return EtcdProvider(group, config, node_zone, publish)


class NodeDiscovery:
    def __init__(self, publish: Publish) -> None:
        self._publish = publish
        self._running: dict[str, tuple[tuple[Any, ...], Provider, asyncio.Task[None]]] = {}

    def update(self, config: Config) -> list[str]:
        """Start, restart or stop providers for ``config``; the groups whose provider stopped (their
        discovered targets are to be withdrawn)."""
        wanted: dict[str, tuple[Any, ...]] = {}
        groups = {group.name: group for group in config.target_groups}
        for group in config.target_groups:
            if group.discovery is not None:
                # What a provider's behaviour depends on: a change restarts it.
                wanted[group.name] = (group.discovery, config.node.zone, group.port)
        stopped = []
        for name, (signature, _, task) in list(self._running.items()):
            if wanted.get(name) != signature:
                task.cancel()
                del self._running[name]
                if name not in wanted:
                    stopped.append(name)
        for name, signature in wanted.items():
            if name in self._running:
                continue
            provider = make_provider(groups[name], config.node.zone, self._publish)
            assert provider is not None
            task = asyncio.get_running_loop().create_task(provider.run(), name=f"discovery {name}")
            task.add_done_callback(_report_crash)
            self._running[name] = (signature, provider, task)
            log.info(
                "target group %s: %s discovery of %s started",
                name,
                provider.state.type,
                provider.state.source,
            )
        return stopped

    async def stop(self) -> None:
        tasks = [task for _, _, task in self._running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._running.clear()

    def state(self, group: str) -> ProviderState | None:
        running = self._running.get(group)
        return running[1].state if running is not None else None

    def states(self) -> list[ProviderState]:
        return [provider.state for _, provider, _ in self._running.values()]


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("internal error in %s", task.get_name(), exc_info=task.exception())


__all__ = ["NodeDiscovery", "Publish", "Targets"]
