"""Web ACL rate counts shared by a fleet, in Redis (``shared_state.redis``): the ``RateStore`` of
lbd/waf/rate.py for every worker of every node that points at the same Redis.

The engine evaluates rate-based rules synchronously, in the request's own call (lbd/waf/statements.py), so
a request never waits on Redis here. Each worker counts its hits locally and, every ``FLUSH_INTERVAL``
seconds (sooner while a key's hits come in a burst, at most every ``MIN_GAP``), one Lua script per rule
adds them to the current slice of each key in Redis and reads back the fleet's total over the window; a
request is then judged by that total plus the hits this worker made since.
AWS WAF's own counts are estimates refreshed every few seconds, so a rate-based rule starts and stops
acting with a delay ("Rate-based rule statement" and "Rate-based rule caveats", AWS WAF Developer Guide);
lbd's delay is one flush interval plus a Redis round trip, and the fleet can let through, beyond the limit,
what its other workers and nodes served to that key in that time (docs/waf.md, "Across a fleet").

Keys (``lbd:`` prefix): ``lbd:waf:<acl>:<rule>:<window>:<aggregate key>:<slice>``, one counter per tenth
of the window (INCRBY), expiring (PEXPIRE) once it has left the window. Slices are numbered by each node's
wall clock: nodes whose clocks differ by ``d`` disagree on the current slice for ``d`` after each boundary.

When Redis is unreachable or slower than ``shared_state.timeout_ms``, rates fall back to the in-process
count (each worker its own, against limit / workers, as without shared state), whatever ``on_failure``
says (that setting is the usage plans'; a web ACL that blocked everyone during an outage would be an
outage itself). The outage is logged once when it starts and once when it ends; flushes keep trying every
interval, and the hits counted meanwhile are not sent afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from lbd.waf.rate import SLOTS, WindowCounter

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

    # Models or their plain records (lbd/config/plain.py): workers never import pydantic.
    from lbd.config import web_acls as model
    from lbd.config.gateway_auth import SharedState
    from lbd.waf.acl import WafState

log = logging.getLogger("lbd.waf")

FLUSH_INTERVAL = 0.1  # seconds between a worker's flushes: the fleet's counts lag by about this much
MIN_GAP = 0.01  # seconds between early flushes, however fast a key's hits come
EARLY = 20  # a key that made limit / EARLY hits since the last flush is flushed early (a flood or burst)
MAX_BATCH = 500  # keys per script call

# KEYS: one base key per aggregate key. ARGV: the current slice's number, the slices in a window, the
# milliseconds a slice's counter lives, then each key's increment. Returns each key's total over the window.
FLUSH_SCRIPT = """
local slot, slots, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local totals = {}
for i, base in ipairs(KEYS) do
  local add = tonumber(ARGV[3 + i])
  if add > 0 then
    local counter = base .. ':' .. slot
    redis.call('INCRBY', counter, add)
    redis.call('PEXPIRE', counter, ttl)
  end
  local names = {}
  for s = slot - slots + 1, slot do names[#names + 1] = base .. ':' .. s end
  local total = 0
  for _, value in ipairs(redis.call('MGET', unpack(names))) do
    if value then total = total + tonumber(value) end
  end
  totals[i] = total
end
return totals
"""

# (keys, increments) taken for one flush
Batch = tuple[list[str], list[int]]


class SharedWindow:
    """One rate-based rule's counts: fleet totals from the last flush, plus this worker's hits since."""

    fleet_wide = True  # the rule compares the count with its whole limit (lbd/waf/statements.py)

    def __init__(
        self, sync: RedisRates, base: str, window_seconds: float, limit: int, state: WafState
    ) -> None:
        self.sync = sync
        self.early = max(1, limit // EARLY)
        self.base = base
        self.window = window_seconds
        self.slice = window_seconds / SLOTS
        self.state = state
        self.local = WindowCounter(window_seconds)  # this worker's own: the count during an outage
        self.known: dict[str, int] = {}  # the fleet's total at the last flush
        self.pending: dict[str, int] = {}  # hits not sent yet
        self.sending: dict[str, int] = {}  # hits sent, the reply not in yet
        self.seen: dict[str, float] = {}  # key -> its last local hit (monotonic): keys to keep fresh

    def hit(self, key: str, now: float) -> int:
        own = self.local.hit(key, now)
        pending = self.pending[key] = self.pending.get(key, 0) + 1
        self.seen[key] = now
        sync = self.sync
        if sync.task is None:
            sync.start()
        if not sync.available:
            return own * max(1, self.state.workers)  # as the in-process store: limit / workers each
        if pending == self.early:
            sync.wake.set()  # a burst: do not wait for the interval
        return self.known.get(key, 0) + self.sending.get(key, 0) + pending

    def sweep(self, now: float) -> None:
        self.local.sweep(now)
        stale = [key for key, last in self.seen.items() if now - last > self.window]
        for key in stale:
            del self.seen[key]
            self.known.pop(key, None)
            self.pending.pop(key, None)

    def take(self, every_key: bool = True) -> list[Batch]:
        """What the next flush sends: every key hit in the window (its increment may be 0, to read the
        others' hits), or for an early flush only the keys with new hits, in batches."""
        self.sending, self.pending = self.pending, {}
        keys = list(self.seen) if every_key else list(self.sending)
        return [
            (chunk, [self.sending.get(key, 0) for key in chunk])
            for chunk in (keys[i : i + MAX_BATCH] for i in range(0, len(keys), MAX_BATCH))
        ]

    def synced(self, keys: list[str], totals: list[int]) -> None:
        for key, total in zip(keys, totals, strict=True):
            self.known[key] = int(total)
            self.sending.pop(key, None)

    def failed(self) -> None:
        self.sending = {}  # counted in process meanwhile; not replayed into later slices


class RedisRates:
    """One worker's connection to the shared state for web ACL rates, and its flush loop (started by the
    first hit: Snapshot.build also runs in the supervisor, which must not connect to Redis)."""

    def __init__(self, shared: SharedState, interval: float = FLUSH_INTERVAL) -> None:
        assert shared.redis is not None
        self.url = shared.redis
        self.timeout = shared.timeout_ms / 1000
        self.interval = interval
        self.stores: dict[str, SharedWindow] = {}
        self.available = True
        self.task: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()  # set by a hit that should not wait for the interval
        self.outages = 0
        self._down_since = 0.0

    def store(self, acl: str, rule: str, spec: model.RateBased, state: WafState) -> SharedWindow:
        base = f"lbd:waf:{acl}:{rule}:{spec.window_seconds}"
        found = self.stores.get(base)
        if found is None:
            found = self.stores[base] = SharedWindow(self, base, spec.window_seconds, spec.limit, state)
        return found

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _run(self) -> None:
        # Imported here: workers without shared state never load the client.
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        pool = BlockingConnectionPool.from_url(
            self.url,
            max_connections=2,
            timeout=self.timeout,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),
        )
        client: Redis = Redis.from_pool(pool)
        script = client.register_script(FLUSH_SCRIPT)
        errors = (RedisError, OSError, TimeoutError)
        loop = asyncio.get_running_loop()
        last_full = loop.time()
        try:
            while True:
                try:
                    async with asyncio.timeout(max(0.0, last_full + self.interval - loop.time())):
                        await self.wake.wait()
                    await asyncio.sleep(MIN_GAP)
                except TimeoutError:
                    pass
                self.wake.clear()
                # Every interval, every key the worker saw (to read the others' hits); in between, early
                # flushes of the keys with new hits only.
                every_key = loop.time() >= last_full + self.interval
                if every_key:
                    last_full = loop.time()
                try:
                    if not await self.flush(script, every_key) and not self.available:
                        async with asyncio.timeout(self.timeout):
                            await client.ping()  # nothing to send: ask whether Redis is back
                except Exception as exc:  # Redis's errors; anything else too, so the loop goes on
                    if not isinstance(exc, errors):
                        log.exception("web ACL rate flush failed")
                    self._down(exc)
                else:
                    self._up()
        finally:
            await client.aclose()

    async def flush(self, script: AsyncScript, every_key: bool = True) -> int:
        """Send every store's hits and read back the fleet's totals; the number of script calls made."""
        slot_time = time.time()
        calls = 0
        failed: Exception | None = None
        for store in list(self.stores.values()):
            batches = store.take(every_key)
            if failed is not None:
                store.failed()
                continue
            ttl = int(store.window * 1000 + store.slice * 1000) + 1000
            args_head: list[int | float | str] = [int(slot_time // store.slice), SLOTS, ttl]
            try:
                for keys, increments in batches:
                    calls += 1
                    async with asyncio.timeout(self.timeout):
                        totals = await script(
                            keys=[f"{store.base}:{key}" for key in keys], args=[*args_head, *increments]
                        )
                    store.synced(keys, totals)
            except Exception as exc:  # re-raised once the other stores' batches are dropped too
                store.failed()
                failed = exc
        if failed is not None:
            raise failed
        return calls

    def _down(self, exc: BaseException) -> None:
        if not self.available:
            return
        self.available = False
        self.outages += 1
        self._down_since = time.monotonic()
        log.warning(
            "shared state %s unreachable (%s); web ACL rate counts are per worker meanwhile",
            self.url,
            _reason(exc),
        )

    def _up(self) -> None:
        if self.available:
            return
        self.available = True
        log.warning(
            "shared state %s reachable again after %.1f s; web ACL rate counts are fleet-wide again",
            self.url,
            time.monotonic() - self._down_since,
        )


_RATES: dict[tuple[str, int], RedisRates] = {}


def install(state: WafState, shared: SharedState) -> None:
    """Make ``state``'s rate-based rules count in ``shared.redis`` (one connection per worker)."""
    assert shared.redis is not None
    ident = (shared.redis, shared.timeout_ms)
    for other, old in _RATES.items():
        if other != ident:
            old.stop()  # settings changed: the old connection's flushes end (a later hit restarts them)
    rates = _RATES.get(ident)
    if rates is None:
        rates = _RATES[ident] = RedisRates(shared)
    state.shared = lambda acl, rule, spec: rates.store(acl, rule, spec, state)
    state.shared_key = ident


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
