"""In-process replay of the API gateway: lbd's own per-request cost on the harness's api scenarios, without
sockets or the kernel (benchmarks/replay.py does the same for the load balancer's HTTP path).

The harness's own config (benchmarks/harness.py ``lbd_api_conf``: a key-required route behind an RS256 JWT
authorizer, in a usage plan with a throttle and a quota; the stage cache off, or on for ``api-cached``) is
built into a Snapshot; a client connection and a pooled target connection get fake transports whose
``write`` only records, and the wrk request and an nginx response are fed to them in turn. What is left
is the code the gateway runs per request: parsing, route, authorizer, key, limiter, cache, integration,
answer, counters.

    python -m benchmarks.replay_api [--requests N] [--scenario api|api-cached]

Prints microseconds per request for each scenario and whether the data path is compiled.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tempfile
import time
from pathlib import Path
from typing import cast

import uvloop

from benchmarks.harness import BENCH_API_KEY, SCENARIOS, lbd_api_conf
from benchmarks.replay import RESPONSE, FakeTransport
from lbd import build
from lbd.config.loader import parse_config
from lbd.gateway.fetch import _TargetConnection
from lbd.gateway.keys import KeyStore
from lbd.gateway.listener import ApiListenerRuntime
from lbd.gateway.server import GatewayClientSide
from lbd.gateway.services import SERVICES
from lbd.gateway.websocket.listener import WebSocketListenerRuntime
from lbd.listener.tracker import ConnectionTracker
from lbd.observe.stats import StatsRegistry
from lbd.runtime import Snapshot


def pooled_target(
    snapshot: Snapshot, runtime: ApiListenerRuntime | WebSocketListenerRuntime
) -> _TargetConnection:
    """A connection to the scenario's target over a fake transport, put in the gateway's pool, so that
    the listener's requests to its integration go there (its ``data_received`` is the target's answer)."""
    fetch = runtime.pipeline_fetch
    assert fetch is not None
    conn = _TargetConnection(snapshot.target_groups["backends"].targets[0], 1)
    conn.connection_made(cast(asyncio.Transport, FakeTransport()))
    fetch._release(conn)
    return conn


def wrk_request(token: str) -> bytes:
    """What wrk sends for the harness's api scenarios (its own Host, then the -H fields)."""
    return (
        f"GET /small HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nx-api-key: {BENCH_API_KEY}\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()


async def replay(name: str, requests: int) -> float:
    """Microseconds per request for ``requests`` keep-alive exchanges on one client connection."""
    scenario = SCENARIOS[name]
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        config = parse_config(lbd_api_conf(scenario, 8080, 9901, [9001], 1, state))
        store = KeyStore.from_json(json.loads((state / "lbd-api-keys.json").read_text()))
        SERVICES.set_keys(store.for_workers())
        token = (state / "bench.jwt").read_text()
        snapshot = Snapshot.build(config, 1, StatsRegistry())
        runtime = cast(ApiListenerRuntime, next(iter(snapshot.listeners.values())))
        conn = pooled_target(snapshot, runtime)
        client = GatewayClientSide(runtime, ConnectionTracker())
        out = FakeTransport()
        client.connection_made(cast(asyncio.Transport, out))
        request = wrk_request(token)
        feed, answer = client.data_received, conn.data_received
        cached = scenario.gateway == "cached"
        for _ in range(2):  # warm up: the token verified, the pool hands the same connection back
            feed(request)
            if not cached or conn.call is not None:
                answer(RESPONSE)
        gc.freeze()  # as a worker does (lbd/worker.py)
        gc.set_threshold(50_000, 20, 10)
        written = out.written
        started = time.process_time_ns()
        if cached:
            for _ in range(requests):
                feed(request)
        else:
            for _ in range(requests):
                feed(request)
                answer(RESPONSE)
        elapsed = time.process_time_ns() - started
        stats = runtime.pipeline.table.match("GET", "/small")
        assert stats is not None
        per_answer = (out.written - written) / requests
        if conn.call is not None or per_answer < 100 or stats.value.stats.errors_4xx:
            raise RuntimeError(f"{name}: not every request was answered")
        client.connection_lost(None)
        return elapsed / requests / 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.replay_api", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--requests", type=int, default=50_000, help="requests per scenario (default 50000)")
    parser.add_argument("--scenario", action="append", help="api or api-cached (repeatable; default both)")
    args = parser.parse_args(argv)
    print(f"data path: {build.data_path()}")
    for name in args.scenario or ["api", "api-cached"]:
        us = uvloop.run(replay(name, args.requests))
        print(f"{name:12} {us:8.2f} us/request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
