"""Targets from etcd: every key under a prefix holds one target as JSON, read once and then watched.

etcd's v3 API through its JSON gateway (etcd.io, "gRPC gateway"): ``POST /v3/kv/range`` with the prefix
and its range end (the prefix with its last byte incremented: every key that starts with it) gives the
targets and the store's revision; ``POST /v3/watch`` from the next revision then streams every change as
it happens, one JSON message per line, so a target put under the prefix reaches the node at once. Keys and
values travel base64-encoded. When the watch breaks (etcd restarted, the history compacted, the
connection lost) the provider reads the whole prefix again, from the next endpoint, and watches from
there: whatever changed meanwhile is seen. A watch that stays silent for ``RESYNC_SECONDS`` is re-read
the same way, so a connection that died without a word cannot hide changes for long.

A value that is not a target is left out (and named in the admin API); the others are used.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from lbd.discovery.targets import InvalidTarget, ProviderState, Targets, as_target
from lbd.upstream.registry import target_key

if TYPE_CHECKING:
    from lbd.config.schema import EtcdDiscovery, TargetGroup

log = logging.getLogger("lbd.discovery")

Publish = Callable[[str, Targets], Awaitable[None]]
RETRY_FIRST = 0.5
RETRY_MOST = 30.0
RESYNC_SECONDS = 300.0
READ_BUFFER = 1 << 22  # a watch message (a batch of events) may be up to twice this


class WatchBroken(Exception):
    """The watch ended: read the prefix again."""


# What an etcd member that is down, restarting or answering nonsense raises: try again, from the next one.
FAILURES = (aiohttp.ClientError, TimeoutError, WatchBroken, ValueError, KeyError)


def failure(endpoint: str, exc: BaseException) -> str:
    """One of FAILURES as a log line names it (some have no message: TimeoutError)."""
    return f"{endpoint}: {type(exc).__name__}: {exc}" if str(exc) else f"{endpoint}: {type(exc).__name__}"


def prefix_end(prefix: bytes) -> bytes:
    """The range end that selects every key starting with ``prefix`` (etcd's clientv3.GetPrefixRangeEnd)."""
    end = bytearray(prefix)
    for index in range(len(end) - 1, -1, -1):
        if end[index] < 0xFF:
            end[index] += 1
            return bytes(end[: index + 1])
    return b"\0"  # every key


async def post(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """One request to the JSON gateway (``/v3/kv/range``, ``/v3/kv/put``...), its JSON reply."""
    async with asyncio.timeout(timeout):
        async with session.post(url, json=body) as response:
            if response.status != 200:
                raise WatchBroken(f"HTTP {response.status} from {url}: {(await response.text())[:200]}")
            reply: dict[str, Any] = await response.json(content_type=None)
            return reply


async def watch(
    session: aiohttp.ClientSession, endpoint: str, key: bytes, range_end: bytes | None, start_revision: int
) -> AsyncGenerator[list[dict[str, Any]], None]:
    """The events on ``key`` (up to ``range_end``: a prefix; None: that key alone) from ``start_revision``
    on, a batch at a time as etcd sends them; ends after a quiet RESYNC_SECONDS (the caller reads again and
    watches anew); WatchBroken when etcd cancels the watch or the stream ends."""
    create: dict[str, Any] = {"key": b64(key), "start_revision": str(start_revision)}
    if range_end is not None:
        create["range_end"] = b64(range_end)
    async with session.post(f"{endpoint}/v3/watch", json={"create_request": create}) as response:
        if response.status != 200:
            raise WatchBroken(f"HTTP {response.status} from {endpoint}/v3/watch")
        while True:
            try:
                async with asyncio.timeout(RESYNC_SECONDS):
                    line = await response.content.readuntil(b"\n")
            except TimeoutError:
                return  # quiet: re-read, then watch again
            if not line:
                raise WatchBroken("the watch stream ended")
            if line.strip():
                events = _events(json.loads(line))
                if events:
                    yield events


def _events(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A watch message's events (none in the message that confirms the watch's creation)."""
    if "error" in message:
        raise WatchBroken(str(message["error"].get("message", message["error"])))
    result = message.get("result", {})
    if result.get("canceled") or "compact_revision" in result:
        raise WatchBroken(f"the watch was canceled: {result.get('cancel_reason') or 'history compacted'}")
    return list(result.get("events", ()))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


class EtcdProvider:
    def __init__(self, group: TargetGroup, config: EtcdDiscovery, node_zone: str, publish: Publish) -> None:
        self.group = group.name
        self.config = config
        self.zone = node_zone
        self.port = group.port
        self.prefix = config.prefix.encode()
        self.range_end = prefix_end(self.prefix)
        self.state = ProviderState(group.name, "etcd", config.prefix)
        self._publish = publish
        self._entries: dict[bytes, dict[str, Any]] = {}  # etcd key -> target

    async def run(self) -> None:
        retry = RETRY_FIRST
        attempt = 0
        timeout = aiohttp.ClientTimeout(total=None, connect=self.config.timeout_seconds)
        async with aiohttp.ClientSession(timeout=timeout, read_bufsize=READ_BUFFER) as session:
            while True:
                endpoint = self.config.endpoints[attempt % len(self.config.endpoints)].rstrip("/")
                try:
                    revision = await self._read(session, endpoint)
                    retry = RETRY_FIRST
                    await self._watch(session, endpoint, revision)
                except FAILURES as exc:
                    message = failure(endpoint, exc)
                    self.state.failed(message)
                    log.warning(
                        "target group %s: etcd discovery of %s failed (%s); keeping the last %d known "
                        "target(s)",
                        self.group,
                        self.config.prefix,
                        message,
                        self.state.targets,
                    )
                    attempt += 1
                    await asyncio.sleep(retry)
                    retry = min(retry * 2, RETRY_MOST)

    async def _read(self, session: aiohttp.ClientSession, endpoint: str) -> int:
        """Every key under the prefix; the store's revision."""
        body = {"key": b64(self.prefix), "range_end": b64(self.range_end)}
        reply = await post(session, f"{endpoint}/v3/kv/range", body, self.config.timeout_seconds)
        self._entries = {}
        self.state.invalid = {}
        for kv in reply.get("kvs", ()):
            self._put(unb64(kv["key"]), unb64(kv.get("value", "")))
        await self._changed()
        return int(reply["header"]["revision"])

    async def _watch(self, session: aiohttp.ClientSession, endpoint: str, revision: int) -> None:
        """Apply changes as they come; return to re-read after a quiet RESYNC_SECONDS."""
        changes = watch(session, endpoint, self.prefix, self.range_end, revision + 1)
        async with contextlib.aclosing(changes):
            async for events in changes:
                await self._apply(events)

    async def _apply(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            kv = event["kv"]
            key = unb64(kv["key"])
            if event.get("type") == "DELETE":
                self._entries.pop(key, None)
                self.state.invalid.pop(key.decode("utf-8", "replace"), None)
            else:
                self._put(key, unb64(kv.get("value", "")))
        await self._changed()

    def _put(self, key: bytes, value: bytes) -> None:
        name = key.decode("utf-8", "replace")
        try:
            try:
                item = json.loads(value)
            except ValueError:
                raise InvalidTarget("not JSON") from None
            target = as_target(item, zone=self.zone, port=self.port)
        except InvalidTarget as exc:
            self._entries.pop(key, None)
            if self.state.invalid.get(name) != str(exc):
                log.warning("target group %s: etcd key %s is not a target: %s", self.group, name, exc)
            self.state.invalid[name] = str(exc)
            return
        self.state.invalid.pop(name, None)
        self._entries[key] = target

    async def _changed(self) -> None:
        targets = {target_key(t["id"], t["port"]): t for t in self._entries.values()}
        self.state.succeeded(len(targets))
        await self._publish(self.group, targets)
