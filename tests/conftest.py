"""Shared fixtures: real lbd processes and real TCP backends on loopback."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.etcd_server import etcd  # noqa: F401 (the fixture: a real etcd member per test)
from tests.http_backend import HttpBackend
from tests.lbdproc import Lbd, application_config, free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "TcpBackend"], Awaitable[None]]


class TcpBackend:
    """A real TCP server on 127.0.0.1:0 whose per-connection behaviour is a coroutine."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.server: asyncio.Server | None = None
        self.port = 0
        self.connections = 0
        self.received: list[bytes] = []
        self.sent = 0
        self.saw_eof = 0

    async def start(self) -> TcpBackend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, backend: TcpBackend) -> None:
    """Echo everything; on the client's FIN, finish echoing and send our own FIN."""
    while data := await reader.read(256 * 1024):
        writer.write(data)
        await writer.drain()
    backend.saw_eof += 1
    writer.write_eof()
    await writer.drain()


def identify_then_echo(name: bytes) -> Handler:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, backend: TcpBackend
    ) -> None:
        writer.write(name + b"\n")
        await echo(reader, writer, backend)

    return handler


@pytest.fixture
async def backends() -> AsyncIterator[Callable[[Handler], Awaitable[TcpBackend]]]:
    started: list[TcpBackend] = []

    async def start(handler: Handler = echo) -> TcpBackend:
        backend = await TcpBackend(handler).start()
        started.append(backend)
        return backend

    yield start
    for backend in started:
        await backend.close()


@pytest.fixture
def lbd(tmp_path: Path) -> Iterator[Callable[..., Lbd]]:
    """Factory: ``proc = lbd(config_dict, workers=1)``; stopped (and its log shown on failure) at teardown."""
    made: list[Lbd] = []

    def make(config: dict[str, Any], workers: int = 1, start: bool = True) -> Lbd:
        directory = tmp_path / f"lbd{len(made)}"
        directory.mkdir()
        proc = Lbd(directory, config, workers)
        made.append(proc)
        if start:
            proc.start()
        return proc

    yield make
    for proc in made:
        proc.stop()
        print(f"--- lbd log ({proc.log_path}) ---\n{proc.log}")


def digest(chunks: list[bytes]) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


LbdFactory = Callable[..., Lbd]
Alb = Callable[..., Awaitable[tuple[Lbd, int, HttpBackend]]]


@pytest.fixture
async def http_backends() -> AsyncIterator[Callable[[str], Awaitable[HttpBackend]]]:
    started: list[HttpBackend] = []

    async def start(name: str = "backend") -> HttpBackend:
        backend = await HttpBackend(name).start()
        started.append(backend)
        return backend

    yield start
    for backend in started:
        await backend.close()


@pytest.fixture
async def alb(
    lbd: LbdFactory, http_backends: Callable[[str], Awaitable[HttpBackend]]
) -> Callable[..., Awaitable[tuple[Lbd, int, HttpBackend]]]:
    async def make(**load_balancer: Any) -> tuple[Lbd, int, HttpBackend]:
        backend = await http_backends("b1")
        port = free_port()
        proc = lbd(application_config(port, [backend.port], **load_balancer))
        await proc.wait_ready()
        return proc, port, backend

    return make
