"""The whole config from one etcd key (``lbd run -c etcd://host:2379/lbd/config``): read, and watched.

Reading (``read_config``) is what the validating child (lbd/validator.py) and ``lbd check`` do in place of
reading a file: one ``POST /v3/kv/range`` for the key, through etcd's v3 JSON gateway (etcd.io, "gRPC
gateway"), from the first member that answers. Its value is the YAML a file would hold; the key's
``mod_revision`` (the store revision of its last put) says which version was read.

Watching (``ConfigKeyWatch``) is the supervisor's: a v3 watch on the key (lbd/discovery/etcd.py's, the
target discovery's helpers), and a reload (the one SIGHUP runs: the child reads the key again and
validates it, then every worker moves or none does) each time it is put or deleted, so a put reaches
every node of a fleet within about a second. A deleted key or an invalid value is refused as a bad file
is: the running config keeps serving. Puts in quick succession coalesce into one reload of the latest.
When etcd stops answering the node keeps serving, logs it, and tries again with backoff, from the next
member; once one answers, a key that changed meanwhile is reloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from lbd.config.issues import ConfigError
from lbd.config.source import EtcdKey, SourceUnavailable, etcd_key
from lbd.discovery.etcd import (
    FAILURES,
    READ_BUFFER,
    RETRY_FIRST,
    RETRY_MOST,
    b64,
    failure,
    post,
    unb64,
    watch,
)

log = logging.getLogger("lbd.config")
TIMEOUT = 5.0  # seconds to connect to a member and to have its answer to a read


@dataclass(frozen=True)
class KeyValue:
    value: bytes | None  # None: there is no such key
    mod_revision: int  # the revision of the key's last put (0: no such key)
    revision: int  # the store's revision when read: watch from the next one


async def read_key(session: aiohttp.ClientSession, source: EtcdKey, first: int = 0) -> tuple[str, KeyValue]:
    """The key from the first member that answers, starting at ``first``; SourceUnavailable if none does."""
    problems = []
    count = len(source.endpoints)
    for endpoint in (source.endpoints[(first + i) % count] for i in range(count)):
        try:
            reply = await post(session, f"{endpoint}/v3/kv/range", {"key": b64(source.key.encode())}, TIMEOUT)
            revision = int(reply["header"]["revision"])
            kvs = reply.get("kvs", ())
            if not kvs:
                return endpoint, KeyValue(None, 0, revision)
            kv = kvs[0]
            return endpoint, KeyValue(unb64(kv.get("value", "")), int(kv["mod_revision"]), revision)
        except FAILURES as exc:
            problems.append(failure(endpoint, exc))
    raise SourceUnavailable.single("", f"no etcd member answered ({'; '.join(problems)})")


def read_config(name: str) -> tuple[str, int]:
    """The YAML text held by the key ``name`` (an etcd:// URL) and its mod_revision; ConfigError when the
    key is absent or not text, SourceUnavailable when no member answers."""
    source = etcd_key(name)

    async def once() -> KeyValue:
        timeout = aiohttp.ClientTimeout(total=None, connect=TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            return (await read_key(session, source))[1]

    found = asyncio.run(once())
    if found.value is None:
        raise ConfigError.single("", f"the key {source.key} does not exist")
    try:
        return found.value.decode("utf-8"), found.mod_revision
    except UnicodeDecodeError:
        raise ConfigError.single("", f"the value of the key {source.key} is not UTF-8 text") from None


class ConfigKeyWatch:
    """Calls ``reload`` whenever the key changes; ``revision`` is the key's mod_revision that is serving."""

    def __init__(self, name: str, revision: int, reload: Callable[[], Awaitable[Any]]) -> None:
        self.source = etcd_key(name)
        self.seen = revision  # the key's mod_revision last read or watched (0: deleted)
        self._reload = reload
        self._changed = asyncio.Event()
        self.watching = False
        self.error = ""  # why etcd does not answer, while it does not
        self.last: dict[str, Any] = {}  # the last reload the watch made: its outcome

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._follow())
                tasks.create_task(self._reload_on_change())
        except Exception:  # a bug: say so rather than stop watching without a word
            self.watching = False
            self.error = "internal error: not watching (SIGHUP and POST /v1/reload still reload)"
            log.exception("%s: %s", self.source.name, self.error)

    def describe(self, serving: int) -> dict[str, Any]:
        """For the admin API (``GET /v1/fleet``): the version of the key in service (``serving``), the one
        seen last, whether it is watching, and what the last reload the watch made came to."""
        body: dict[str, Any] = {
            "source": self.source.name,
            "key": self.source.key,
            "serving_mod_revision": serving,
            "seen_mod_revision": self.seen,
            "watching": self.watching,
        }
        if self.error:
            body["error"] = self.error
        if self.last:
            body["last_reload"] = self.last
        return body

    async def _reload_on_change(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()  # puts that come during the reload make one more, of the latest
            seen = self.seen
            try:
                result = await self._reload()
            except Exception:  # a bug: say so, and keep watching (the next put tries again)
                log.exception("%s: internal error in the reload of mod_revision %d", self.source.name, seen)
                continue
            self.last = {"mod_revision": seen, "ok": result.ok, "errors": list(result.errors)}

    def _saw(self, mod_revision: int) -> None:
        if mod_revision != self.seen:
            self.seen = mod_revision
            self._changed.set()

    async def _follow(self) -> None:
        retry = RETRY_FIRST
        attempt = 0
        timeout = aiohttp.ClientTimeout(total=None, connect=TIMEOUT)
        # A watch message holds the whole value: a config may be larger than aiohttp's default buffer.
        async with aiohttp.ClientSession(timeout=timeout, read_bufsize=READ_BUFFER) as session:
            while True:
                try:
                    endpoint, found = await read_key(session, self.source, attempt)
                    if self.error:
                        log.info("%s: etcd answers again (%s)", self.source.name, endpoint)
                        self.error = ""
                        if self.last and not self.last["ok"]:
                            self._changed.set()  # it may have failed for want of etcd: once more
                    self._saw(found.mod_revision)  # a change while not watching: reload it now
                    retry = RETRY_FIRST
                    await self._watch(session, endpoint, found.revision + 1)
                    continue  # quiet for RESYNC_SECONDS: read again, watch anew
                except SourceUnavailable as exc:
                    self._lost(str(exc), retry)
                except FAILURES as exc:  # from the watch (read_key catches its own)
                    self._lost(failure(endpoint, exc), retry)
                attempt += 1
                await asyncio.sleep(retry)
                retry = min(retry * 2, RETRY_MOST)

    def _lost(self, error: str, retry: float) -> None:
        self.watching = False
        self.error = error
        log.warning(
            "%s: cannot watch the key (%s); the config read last keeps serving; trying again in %.1f s",
            self.source.name,
            error,
            retry,
        )

    async def _watch(self, session: aiohttp.ClientSession, endpoint: str, start: int) -> None:
        changes = watch(session, endpoint, self.source.key.encode(), None, start)
        self.watching = True
        async with contextlib.aclosing(changes):
            async for events in changes:
                last = events[-1]
                self._saw(0 if last.get("type") == "DELETE" else int(last["kv"]["mod_revision"]))
        self.watching = False
