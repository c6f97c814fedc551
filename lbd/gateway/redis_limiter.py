"""Usage-plan throttles and quotas shared by a fleet, in Redis (``shared_state.redis``).

Every lbd node that points at the same Redis draws from the same token buckets and the same quota
counters, so a plan's limits hold for the fleet as Amazon API Gateway's hold for an account ("Throttle
requests to your REST APIs for better throughput in API Gateway"; "Usage plans and API keys for REST APIs
in API Gateway"). One Lua script (ADMIT_SCRIPT) checks every bucket and the quota and takes from all or
none: Redis runs a script alone, so two nodes can never both take the last token (no read-modify-write
race), and a throttled request uses no quota.

Clocks: the buckets refill by the Redis server's TIME, read inside the script, so nodes whose clocks
differ still agree on how many tokens a bucket holds (bucket_clock="caller" uses the ``now`` each node
passes instead: for tests that drive time, or fleets with synchronised clocks). The quota's period is
named by its key, which the caller derives from its own clock (Quota.key); nodes whose clocks differ by
``d`` disagree on the period only during ``d`` around a boundary.

Keys (``key_prefix`` "lbd:" by default):

- ``lbd:bucket:<Bucket.key>``: a hash {tokens, at}; it expires (PEXPIRE) once it would have refilled,
  burst / rate seconds after its last use, since an absent bucket is a full one.
- ``lbd:quota:<Quota.key>``: the period's count (INCR); it expires (PEXPIREAT) a day after the period
  ends, so the last period's usage stays readable and past periods do not pile up.

When Redis is unreachable or slower than ``timeout_ms``, a circuit breaker opens: requests stop waiting
for Redis and, with on_failure "open", are decided by the in-process ``fallback`` limiter, or with
"closed" answered UNAVAILABLE (503). A background task pings Redis every ``retry_interval`` seconds and
closes the breaker when Redis answers in time. Each outage is logged once when it starts and once when
it ends. Redis Cluster is not supported (one script touches keys in several slots); use one primary.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from lbd.gateway.contracts import Admission, Bucket, Clock, Limiter, Quota

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

    from lbd.config.gateway_auth import SharedState

log = logging.getLogger("lbd.gateway")

# A quota's counter outlives its period by this much (seconds): the admin API can still read the usage of
# the period that just ended.
QUOTA_GRACE = 86_400.0

# KEYS: the buckets' keys in the order they are checked, then the quota's key if there is a quota.
# ARGV: the number of buckets, the time to use ("" for the server's TIME), each bucket's rate and burst,
#       then the quota's limit and the epoch milliseconds its key expires at.
# Returns {0, 0} admitted, {1, i} throttled by bucket i (1-based), {2, 0} quota exceeded; nothing is
# written unless admitted. Numbers are written with %.17g: Lua's default tostring keeps 14 digits, too
# few for epoch seconds with microseconds.
ADMIT_SCRIPT = """
local n = tonumber(ARGV[1])
local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local levels, stamps = {}, {}
for i = 1, n do
  local rate, burst = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local state = redis.call('HMGET', KEYS[i], 'tokens', 'at')
  local level, at = burst, now
  if state[1] then
    local held, last = tonumber(state[1]), tonumber(state[2])
    if last > now then
      -- A node whose clock is behind (bucket_clock "caller"): no refill, and time does not go back.
      level, at = math.min(burst, held), last
    else
      level = math.min(burst, held + (now - last) * rate)
    end
  end
  if level < 1 then return {1, i} end
  levels[i], stamps[i] = level, at
end
if #KEYS > n then
  local quota = KEYS[n + 1]
  if tonumber(redis.call('GET', quota) or '0') >= tonumber(ARGV[3 + 2 * n]) then return {2, 0} end
  redis.call('INCR', quota)
  redis.call('PEXPIREAT', quota, ARGV[4 + 2 * n])
end
for i = 1, n do
  local rate, burst = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  redis.call('HSET', KEYS[i], 'tokens', string.format('%.17g', levels[i] - 1),
             'at', string.format('%.17g', stamps[i]))
  if rate > 0 then
    redis.call('PEXPIRE', KEYS[i], math.ceil(burst / rate * 1000) + 1000)
  end
end
return {0, 0}
"""


class SharedStateUnavailable(ConnectionError):
    """Redis cannot answer and on_failure is "closed": there is no count to give."""


class RedisLimiter:
    """The Limiter protocol over Redis, with a circuit breaker in front of it.

    Counters for metrics (read them, do not write them): ``outages`` (breaker openings),
    ``failures`` (requests' Redis calls that failed or timed out), ``probe_failures`` (the background
    reconnection's pings that did), ``fallback_decisions``
    (requests decided by the in-process fallback, on_failure "open") and ``unavailable_decisions``
    (requests answered UNAVAILABLE, on_failure "closed"); ``available`` is False during an outage.
    """

    def __init__(
        self,
        url: str,
        timeout_ms: int,
        on_failure: Literal["open", "closed"],
        fallback: Limiter,
        clock: Clock,
        *,
        retry_interval: float = 1.0,
        key_prefix: str = "lbd:",
        bucket_clock: Literal["redis", "caller"] = "redis",
        max_connections: int = 32,
    ) -> None:
        # Imported here: workers without shared_state never load the client.
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        self.url = url
        self.timeout = timeout_ms / 1000
        self.on_failure = on_failure
        self.fallback = fallback
        self.clock = clock
        self.retry_interval = retry_interval
        self.key_prefix = key_prefix
        self.bucket_clock = bucket_clock
        # A bounded pool that requests wait for (within their timeout): the default pool raises "Too many
        # connections" past its size, which a burst of concurrent requests would reach. No retries inside
        # the client: the breaker decides when to try again, and a request must not wait for several
        # attempts.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=self.timeout,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._redis: Redis = Redis.from_pool(pool)  # closing the client closes the pool
        # redis-py's Script sends EVALSHA and, on NOSCRIPT (a restarted or flushed server), loads the
        # script and sends it again.
        self._script: AsyncScript = self._redis.register_script(ADMIT_SCRIPT)
        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
        self._down_since: float | None = None
        self._decided_before = 0  # degraded decisions made before the current outage
        self._probe: asyncio.Task[None] | None = None
        self.outages = 0
        self.failures = 0
        self.probe_failures = 0
        self.fallback_decisions = 0
        self.unavailable_decisions = 0

    @property
    def available(self) -> bool:
        return self._down_since is None

    async def admit(self, buckets: Sequence[Bucket], quota: Quota | None, now: float) -> Admission:
        if not buckets and quota is None:
            return Admission.ADMIT  # nothing to count: no round trip
        if self._down_since is None:
            keys, args = self._script_input(buckets, quota, now)
            try:
                async with asyncio.timeout(self.timeout):
                    reply = await self._script(keys=keys, args=args)
            except self._errors as exc:
                self._outage(exc)
            else:
                return _admission(reply)
        if self.on_failure == "closed":
            self.unavailable_decisions += 1
            return Admission.UNAVAILABLE
        self.fallback_decisions += 1
        return await self.fallback.admit(buckets, quota, now)

    async def used(self, quota: Quota) -> int:
        """The period's count from Redis; during an outage the fallback's in-process count (on_failure
        "open"), or SharedStateUnavailable ("closed")."""
        if self._down_since is None:
            try:
                async with asyncio.timeout(self.timeout):
                    value = await self._redis.get(self._quota_key(quota))
            except self._errors as exc:
                self._outage(exc)
            else:
                return int(value or 0)
        if self.on_failure == "closed":
            raise SharedStateUnavailable(f"shared state {self.url} is unreachable")
        return await self.fallback.used(quota)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
            self._probe = None
        await self._redis.aclose()
        await self.fallback.close()

    def _script_input(
        self, buckets: Sequence[Bucket], quota: Quota | None, now: float
    ) -> tuple[list[str], list[str | int | float]]:
        keys = [f"{self.key_prefix}bucket:{bucket.key}" for bucket in buckets]
        args: list[str | int | float] = [len(buckets), repr(now) if self.bucket_clock == "caller" else ""]
        for bucket in buckets:
            args += (repr(float(bucket.rate)), bucket.burst)
        if quota is not None:
            keys.append(self._quota_key(quota))
            args += (quota.limit, math.ceil((quota.period_end + QUOTA_GRACE) * 1000))
        return keys, args

    def _quota_key(self, quota: Quota) -> str:
        return f"{self.key_prefix}quota:{quota.key}"

    def _outage(self, exc: BaseException) -> None:
        self.failures += 1
        if self._down_since is not None:
            return
        self._down_since = self.clock()
        self._decided_before = self._degraded_decisions()
        self.outages += 1
        meanwhile = (
            "failing open: the in-process limiter decides meanwhile"
            if self.on_failure == "open"
            else "failing closed: requests get 503 meanwhile"
        )
        log.warning("shared state %s unreachable (%s); %s", self.url, _reason(exc), meanwhile)
        self._probe = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        """Ping Redis every retry_interval until it answers within the timeout, then close the breaker.
        Requests never wait for this: they see the breaker open until it is closed."""
        while True:
            await asyncio.sleep(self.retry_interval)
            try:
                async with asyncio.timeout(self.timeout):
                    await self._redis.ping()
            except self._errors:
                self.probe_failures += 1
                continue
            break
        down_since, self._down_since = self._down_since, None
        self._probe = None
        elapsed = self.clock() - down_since if down_since is not None else 0.0
        log.warning(
            "shared state %s reachable again after %.1f s; %d requests %s meanwhile",
            self.url,
            elapsed,
            self._degraded_decisions() - self._decided_before,
            "decided in process" if self.on_failure == "open" else "answered 503",
        )

    def _degraded_decisions(self) -> int:
        return self.fallback_decisions + self.unavailable_decisions


def shared_limiter(shared: SharedState | None, fallback: Limiter, clock: Clock) -> Limiter:
    """The limiter a worker uses: ``fallback`` (in process) without ``shared_state.redis``, otherwise a
    RedisLimiter that falls back to it as ``shared_state.on_failure`` says."""
    if shared is None or shared.redis is None:
        return fallback
    return RedisLimiter(shared.redis, shared.timeout_ms, shared.on_failure, fallback, clock)


def _admission(reply: object) -> Admission:
    code = reply[0] if isinstance(reply, list | tuple) and reply else None
    if code == 0:
        return Admission.ADMIT
    if code == 1:
        return Admission.THROTTLED
    if code == 2:
        return Admission.QUOTA_EXCEEDED
    raise ValueError(f"unexpected reply from the admit script: {reply!r}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
