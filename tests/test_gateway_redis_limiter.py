"""The fleet's limiter against a real redis-server on loopback: buckets, quotas, atomicity, outages."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Literal

import pytest
import redis

from lbd.config.gateway_auth import SharedState
from lbd.gateway.contracts import Admission, Bucket, Quota
from lbd.gateway.redis_limiter import QUOTA_GRACE, RedisLimiter, SharedStateUnavailable, shared_limiter
from tests.lbdproc import wait_for
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
SLOW = 0.0001  # tokens a second: no refill worth a token during a test


class CountingLimiter:
    """The in-process fallback's seam: admits everything and counts what it was asked."""

    def __init__(self) -> None:
        self.admits = 0
        self.closed = False

    async def admit(self, buckets: Sequence[Bucket], quota: Quota | None, now: float) -> Admission:
        self.admits += 1
        return Admission.ADMIT

    async def used(self, quota: Quota) -> int:
        return self.admits

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.kill()


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_server.url, socket_timeout=5) as sync_client:
        yield sync_client


def make_limiter(
    server: RedisServer,
    on_failure: Literal["open", "closed"] = "open",
    timeout_ms: int = 2000,
    bucket_clock: Literal["redis", "caller"] = "redis",
) -> tuple[RedisLimiter, CountingLimiter]:
    fallback = CountingLimiter()
    limiter = RedisLimiter(
        server.url,
        timeout_ms,
        on_failure,
        fallback,
        time.time,
        retry_interval=0.05,
        bucket_clock=bucket_clock,
    )
    return limiter, fallback


@pytest.fixture
async def limiter(redis_server: RedisServer) -> AsyncIterator[RedisLimiter]:
    made, _ = make_limiter(redis_server)
    yield made
    await made.close()


def quota(key: str = "q:basic:K1:2026-12-01", limit: int = 100, end: float | None = None) -> Quota:
    end = time.time() + 3600 if end is None else end
    return Quota(key=key, limit=limit, period_start=end - 86_400, period_end=end)


async def take_until_refused(limiter: RedisLimiter, buckets: Sequence[Bucket], now: float = 0.0) -> int:
    admitted = 0
    while (await limiter.admit(buckets, None, now)) is Admission.ADMIT:
        admitted += 1
    return admitted


async def test_burst_admits_exactly_burst_then_throttles(limiter: RedisLimiter) -> None:
    bucket = Bucket("stage:pets/prod", rate=SLOW, burst=7)
    results = [await limiter.admit([bucket], None, time.time()) for _ in range(9)]
    assert results == [Admission.ADMIT] * 7 + [Admission.THROTTLED] * 2


async def test_fractional_refill_with_the_callers_clock(redis_server: RedisServer) -> None:
    limiter, _ = make_limiter(redis_server, bucket_clock="caller")
    try:
        bucket = Bucket("plan:basic:key:K1", rate=0.5, burst=2)
        assert await take_until_refused(limiter, [bucket], now=1000.0) == 2
        assert await take_until_refused(limiter, [bucket], now=1001.0) == 0  # half a token
        assert await take_until_refused(limiter, [bucket], now=1002.0) == 1
        assert await take_until_refused(limiter, [bucket], now=1005.0) == 1  # 1.5 tokens
        assert await take_until_refused(limiter, [bucket], now=1006.0) == 1  # the half left + 0.5
        assert await take_until_refused(limiter, [bucket], now=5000.0) == 2  # never more than burst
        # A node whose clock is behind neither refills the bucket nor moves its time back.
        assert await take_until_refused(limiter, [bucket], now=4000.0) == 0
        assert await take_until_refused(limiter, [bucket], now=5002.0) == 1
    finally:
        await limiter.close()


def server_time(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + micros / 1e6


def bucket_state(client: redis.Redis, bucket: Bucket) -> tuple[float, float]:
    tokens, at = client.hmget(f"lbd:bucket:{bucket.key}", ["tokens", "at"])
    return float(tokens), float(at)


async def test_refill_follows_redis_time(limiter: RedisLimiter, client: redis.Redis) -> None:
    """The bucket refills at ``rate`` by the server's clock: what a second drain takes is bounded by the
    server time measured around it, and the stored state obeys tokens' = tokens + rate * dt - taken."""
    rate = 10.5
    bucket = Bucket("stage:pets/prod", rate=rate, burst=200)  # far from the cap: refill is never clipped
    first = await take_until_refused(limiter, [bucket])
    assert first >= bucket.burst
    tokens1, at1 = bucket_state(client, bucket)
    assert 0 <= tokens1 < 1
    await asyncio.sleep(0.4)  # let time pass; the checks below measure how much did
    before = server_time(client)
    second = await take_until_refused(limiter, [bucket])
    after = server_time(client)
    assert math.floor(tokens1 + rate * (before - at1)) <= second <= tokens1 + rate * (after - at1)
    tokens2, at2 = bucket_state(client, bucket)
    assert before <= at2 <= after
    assert tokens2 == pytest.approx(tokens1 + rate * (at2 - at1) - second, abs=1e-6)


async def test_all_or_none_across_buckets(limiter: RedisLimiter) -> None:
    plan = Bucket("plan:basic:key:K1", rate=SLOW, burst=5)
    route = Bucket("plan:basic:key:K1:route:GET /pets", rate=SLOW, burst=2)
    usage = quota()
    for _ in range(2):
        assert await limiter.admit([route, plan], usage, time.time()) is Admission.ADMIT
    assert await limiter.admit([route, plan], usage, time.time()) is Admission.THROTTLED
    assert await limiter.admit([plan, route], usage, time.time()) is Admission.THROTTLED
    # The refused requests took nothing from the plan's bucket nor from the quota.
    assert await take_until_refused(limiter, [plan], time.time()) == 3
    assert await limiter.used(usage) == 2


async def test_quota_per_period_key_and_quota_refusal_takes_no_tokens(
    limiter: RedisLimiter, client: redis.Redis
) -> None:
    bucket = Bucket("plan:basic:key:K1", rate=SLOW, burst=10)
    today = quota("q:basic:K1:2026-12-01", limit=3)
    results = [await limiter.admit([bucket], today, time.time()) for _ in range(5)]
    assert results == [Admission.ADMIT] * 3 + [Admission.QUOTA_EXCEEDED] * 2
    # The next period is a new key: a full quota again.
    tomorrow = quota("q:basic:K1:2026-12-02", limit=3, end=today.period_end + 86_400)
    assert await limiter.admit([bucket], tomorrow, time.time()) is Admission.ADMIT
    assert (await limiter.used(today), await limiter.used(tomorrow)) == (3, 1)
    # 4 tokens taken: the QUOTA_EXCEEDED answers took none.
    assert await take_until_refused(limiter, [bucket], time.time()) == 6
    # Counters expire a grace day after their period; buckets once they would be full again.
    assert client.pexpiretime("lbd:quota:q:basic:K1:2026-12-01") == math.ceil(
        (today.period_end + QUOTA_GRACE) * 1000
    )
    fast = Bucket("stage:fast", rate=4.0, burst=8)
    await limiter.admit([fast], None, time.time())
    assert 0 < client.pttl("lbd:bucket:stage:fast") <= 8 / 4.0 * 1000 + 1000


async def test_idle_buckets_and_past_periods_vanish(limiter: RedisLimiter, client: redis.Redis) -> None:
    fast = Bucket("stage:fast", rate=1.0, burst=2)  # full again 2 s after its use; the key goes 1 s later
    past = quota("q:basic:K1:2026-11-30", limit=5, end=time.time() - QUOTA_GRACE + 3)
    assert await limiter.admit([fast], past, time.time()) is Admission.ADMIT
    assert client.exists("lbd:bucket:stage:fast", "lbd:quota:q:basic:K1:2026-11-30") == 2
    await wait_for(
        lambda: client.exists("lbd:bucket:stage:fast", "lbd:quota:q:basic:K1:2026-11-30") == 0,
        what="the keys to expire",
    )
    assert client.dbsize() == 0


async def test_script_reloaded_after_the_server_forgets_it(
    limiter: RedisLimiter, client: redis.Redis
) -> None:
    bucket = Bucket("stage:pets/prod", rate=SLOW, burst=3)
    assert await limiter.admit([bucket], None, time.time()) is Admission.ADMIT
    client.script_flush()
    assert await limiter.admit([bucket], None, time.time()) is Admission.ADMIT
    assert limiter.failures == 0
    assert await take_until_refused(limiter, [bucket], time.time()) == 1


WORKER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    import redis
    from lbd.gateway.contracts import Admission, Quota
    from lbd.gateway.redis_limiter import RedisLimiter

    class Refuse:
        async def admit(self, buckets, quota, now):
            raise AssertionError("the fallback must not be used")
        async def used(self, quota):
            return 0
        async def close(self):
            pass

    async def main(url, name, attempts):
        limiter = RedisLimiter(url, 5000, "closed", Refuse(), time.time)
        usage = Quota("q:fleet:K1:2026-12-01", 100, time.time() - 60, time.time() + 3600)
        gate = redis.Redis.from_url(url)
        gate.set("ready:" + name, 1)
        while not gate.exists("go"):
            time.sleep(0.005)
        results = await asyncio.gather(*(limiter.admit([], usage, time.time()) for _ in range(attempts)))
        await limiter.close()
        print(json.dumps({r.value: results.count(r) for r in Admission}))

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


async def test_two_processes_share_one_quota_exactly(redis_server: RedisServer, client: redis.Redis) -> None:
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, redis_server.url, name, "150"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name in ("a", "b")
    ]
    try:
        await wait_for(lambda: client.exists("ready:a", "ready:b") == 2, what="both workers ready")
        client.set("go", 1)
        outputs = [await asyncio.to_thread(worker.communicate, timeout=60) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err.decode()
    counts = [json.loads(out) for out, _ in outputs]
    assert sum(c["ADMIT"] for c in counts) == 100, counts
    assert sum(c["QUOTA_EXCEEDED"] for c in counts) == 200, counts
    assert int(client.get("lbd:quota:q:fleet:K1:2026-12-01") or 0) == 100


def outage_lines(caplog: pytest.LogCaptureFixture) -> tuple[list[str], list[str]]:
    messages = [r.getMessage() for r in caplog.records if r.name == "lbd.gateway"]
    return [m for m in messages if "unreachable" in m], [m for m in messages if "reachable again" in m]


async def test_fail_open_on_a_killed_redis_then_recovers(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="lbd.gateway")
    limiter, fallback = make_limiter(redis_server, on_failure="open")
    bucket = Bucket("stage:pets/prod", rate=SLOW, burst=100)
    try:
        assert await limiter.admit([bucket], None, time.time()) is Admission.ADMIT
        assert fallback.admits == 0
        redis_server.kill()
        for _ in range(5):
            assert await limiter.admit([bucket], quota(), time.time()) is Admission.ADMIT
        assert (fallback.admits, limiter.fallback_decisions, limiter.outages) == (5, 5, 1)
        assert not limiter.available
        assert await limiter.used(quota()) == 5  # the fallback's count meanwhile
        down, up = outage_lines(caplog)
        assert len(down) == 1 and "failing open" in down[0] and redis_server.url in down[0]
        assert up == []

        redis_server.start()  # the same port, empty (no persistence)
        await wait_for(lambda: limiter.available, what="the breaker to close")
        assert await limiter.admit([bucket], None, time.time()) is Admission.ADMIT
        assert fallback.admits == 5  # Redis decides again
        with redis.Redis.from_url(redis_server.url) as check:
            tokens = float(check.hget("lbd:bucket:stage:pets/prod", "tokens") or 0)
        assert tokens == pytest.approx(99, abs=0.1)  # a new, full bucket (the restart lost the old)
        down, up = outage_lines(caplog)
        assert len(down) == 1 and len(up) == 1 and "5 requests decided in process meanwhile" in up[0]

        # A second outage is logged again, with its own count.
        redis_server.kill()
        for _ in range(2):
            assert await limiter.admit([bucket], None, time.time()) is Admission.ADMIT
        redis_server.start()
        await wait_for(lambda: limiter.available, what="the breaker to close again")
        down, up = outage_lines(caplog)
        assert (len(down), len(up), limiter.outages) == (2, 2, 2)
        assert "2 requests decided in process meanwhile" in up[1]
    finally:
        await limiter.close()
    assert fallback.closed


async def test_fail_closed_on_a_stalled_redis_then_recovers(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="lbd.gateway")
    limiter, fallback = make_limiter(redis_server, on_failure="closed", timeout_ms=1000)
    bucket = Bucket("stage:pets/prod", rate=SLOW, burst=100)
    try:
        assert await limiter.admit([bucket], None, time.time()) is Admission.ADMIT
        redis_server.pause()  # connections are accepted by the kernel, nothing answers
        try:
            assert await limiter.admit([bucket], None, time.time()) is Admission.UNAVAILABLE
            # With the breaker open, requests no longer wait for Redis (no new failed call for them).
            for _ in range(3):
                assert await limiter.admit([bucket], None, time.time()) is Admission.UNAVAILABLE
            with pytest.raises(SharedStateUnavailable):
                await limiter.used(quota())
            assert limiter.unavailable_decisions == 4 and fallback.admits == 0
            assert (limiter.failures, limiter.outages) == (1, 1)
            down, _ = outage_lines(caplog)
            assert len(down) == 1 and "timed out" in down[0] and "failing closed" in down[0]
        finally:
            redis_server.resume()
        await wait_for(lambda: limiter.available, what="the breaker to close")
        assert await limiter.admit([bucket], None, time.time()) is Admission.ADMIT
        _, up = outage_lines(caplog)
        assert len(up) == 1 and "4 requests answered 503 meanwhile" in up[0]
    finally:
        await limiter.close()


def test_the_redis_client_is_loaded_only_when_a_limiter_is_made() -> None:
    probe = "import sys, lbd.gateway.redis_limiter; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_shared_limiter_follows_the_config(redis_server: RedisServer) -> None:
    fallback = CountingLimiter()
    assert shared_limiter(None, fallback, time.time) is fallback
    assert shared_limiter(SharedState(), fallback, time.time) is fallback
    shared = SharedState(redis=redis_server.url, on_failure="closed", timeout_ms=250)
    made = shared_limiter(shared, fallback, time.time)
    try:
        assert isinstance(made, RedisLimiter)
        assert (made.url, made.on_failure, made.timeout, made.fallback) == (
            redis_server.url,
            "closed",
            0.25,
            fallback,
        )
        assert await made.admit([Bucket("stage:s", rate=SLOW, burst=1)], None, time.time()) is Admission.ADMIT
    finally:
        await made.close()
