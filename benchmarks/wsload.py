"""The ws scenario's two ends, over wsproto and uvloop: a WebSocket echo server (the direct ceiling) and a
load generator.

    python -m benchmarks.wsload echo PORT
    python -m benchmarks.wsload load PORT CONNECTIONS SECONDS

``load`` opens CONNECTIONS WebSockets, each sending a small text message and waiting for the answer
before the next (one message in flight per connection), for SECONDS; it prints
``messages``, ``seconds``, ``errors``, ``p50_ms`` and ``p99_ms``, one per line.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import cast

import uvloop
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    Request,
    TextMessage,
)

MESSAGE = '{"action": "echo", "data": "0123456789abcdef0123456789abcdef"}'


class EchoServer(asyncio.Protocol):
    def __init__(self) -> None:
        self.ws = WSConnection(ConnectionType.SERVER)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.ws.receive_data(data)
        out = b""
        for event in self.ws.events():
            if isinstance(event, Request):
                out += self.ws.send(AcceptConnection())
            elif isinstance(event, Message):
                out += self.ws.send(event)
            elif isinstance(event, Ping):
                out += self.ws.send(event.response())
            elif isinstance(event, CloseConnection):
                out += self.ws.send(event.response())
                self.transport.write(out)
                self.transport.close()
                return
        if out:
            self.transport.write(out)


class LoadClient(asyncio.Protocol):
    def __init__(self, port: int, stats: Stats) -> None:
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.port = port
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.sent_at = 0.0
        self.parts: list[str] = []
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.ws.send(Request(host=f"127.0.0.1:{self.port}", target="/bench")))

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self._send()
            elif isinstance(event, Message):
                if not event.message_finished:
                    continue
                self.stats.answered(time.perf_counter() - self.sent_at)
                if self.stats.running:
                    self._send()
                else:
                    self._finish()
            elif isinstance(event, CloseConnection):
                self.stats.errors += 1
                self._finish()

    def _send(self) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter()
        self.transport.write(self.ws.send(TextMessage(data=MESSAGE)))

    def _finish(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class Stats:
    def __init__(self) -> None:
        self.running = True
        self.measuring = False
        self.messages = 0
        self.errors = 0
        self.latencies: list[float] = []

    def answered(self, latency: float) -> None:
        if self.measuring:
            self.messages += 1
            if len(self.latencies) < 200_000:
                self.latencies.append(latency)


async def load(port: int, connections: int, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    stats = Stats()
    clients = []
    for _ in range(connections):
        _, client = await loop.create_connection(lambda: LoadClient(port, stats), "127.0.0.1", port)
        clients.append(client)
    stats.measuring = True
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    stats.measuring = False
    elapsed = time.perf_counter() - started
    stats.running = False
    await asyncio.wait([c.closed for c in clients], timeout=10)
    ordered = sorted(stats.latencies) or [0.0]
    print(f"messages {stats.messages}")
    print(f"seconds {elapsed:.3f}")
    print(f"errors {stats.errors}")
    print(f"p50_ms {statistics.median(ordered) * 1000:.3f}")
    print(f"p99_ms {ordered[int(len(ordered) * 0.99)] * 1000:.3f}")


async def echo(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoServer, "127.0.0.1", port, reuse_address=True)
    await server.serve_forever()


def main(argv: list[str]) -> None:
    if argv[0] == "echo":
        uvloop.run(echo(int(argv[1])))
    else:
        uvloop.run(load(int(argv[1]), int(argv[2]), float(argv[3])))


if __name__ == "__main__":
    main(sys.argv[1:])
