"""In-process replay of a WebSocket API: lbd's own per-message cost on the harness's ws scenario, without
sockets or the kernel (benchmarks/replay_api.py does the same for HTTP APIs).

The harness's own config (benchmarks/harness.py ``lbd_ws_conf``: a two-way ``$default`` route whose HTTP
integration POSTs each message to a target group) is built into a Snapshot; a client connection and a
pooled target connection get fake transports whose ``write`` only records. The opening handshake is fed
once; then each round feeds the load generator's masked text frame (benchmarks/wsload.py's message),
runs the event loop until the integration request is out, feeds an nginx response and runs it until the
reply frame is written. What is left is the code the gateway runs per message: the frame, route
selection, the integration request and its answer, the reply frame, counters and the tasks between.

    python -m benchmarks.replay_ws [--messages N]

Prints microseconds per message (process CPU time) and whether the data path is compiled.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from typing import cast

import uvloop
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import Request, TextMessage

from benchmarks.harness import SCENARIOS, lbd_ws_conf
from benchmarks.replay import RESPONSE, FakeTransport
from benchmarks.replay_api import pooled_target
from benchmarks.wsload import MESSAGE
from lbd import build
from lbd.config.loader import parse_config
from lbd.gateway.websocket.listener import WebSocketListenerRuntime
from lbd.gateway.websocket.server import WebSocketClientSide
from lbd.listener.tracker import ConnectionTracker
from lbd.observe.stats import StatsRegistry
from lbd.runtime import Snapshot


async def _until(condition: object, what: str) -> None:
    """Run the loop's ready callbacks until ``condition()`` holds (a few rounds at most)."""
    for _ in range(100):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0)
    raise RuntimeError(f"ws replay: {what} never happened")


async def replay(messages: int) -> float:
    """Microseconds per message for ``messages`` two-way messages on one WebSocket."""
    config = parse_config(lbd_ws_conf(SCENARIOS["ws"], 8080, 9901, [9001], 1))
    snapshot = Snapshot.build(config, 1, StatsRegistry())
    runtime = cast(WebSocketListenerRuntime, next(iter(snapshot.listeners.values())))
    upstream = pooled_target(snapshot, runtime)
    client = WebSocketClientSide(runtime, ConnectionTracker())
    out = FakeTransport()
    client.connection_made(cast(asyncio.Transport, out))
    peer = WSConnection(ConnectionType.CLIENT)
    client.data_received(peer.send(Request(host="127.0.0.1:8080", target="/bench")))
    await _until(lambda: client.conn is not None, "the upgrade")
    frame = Connection(ConnectionType.CLIENT).send(TextMessage(data=MESSAGE))  # masked; the same each round
    feed, answer = client.data_received, upstream.data_received

    async def one() -> None:
        written = out.written
        feed(frame)
        await _until(lambda: upstream.call is not None, "the integration request")
        answer(RESPONSE)
        await _until(lambda: out.written > written and client.task is None, "the reply")

    for _ in range(100):  # warm up
        await one()
    gc.freeze()  # as a worker does (lbd/worker.py)
    gc.set_threshold(50_000, 20, 10)
    started = time.process_time_ns()
    for _ in range(messages):
        await one()
    elapsed = time.process_time_ns() - started
    client.connection_lost(None)
    return elapsed / messages / 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.replay_ws", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--messages", type=int, default=30_000, help="messages (default 30000)")
    args = parser.parse_args(argv)
    print(f"data path: {build.data_path()}")
    us = uvloop.run(replay(args.messages))
    print(f"{'ws':12} {us:8.2f} us/message")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
