"""The open connections of one worker, so shutdown can drain them and then force-close the rest."""

from __future__ import annotations

import asyncio
from typing import Protocol


class Connection(Protocol):
    def drain(self) -> None:
        """Stop taking new work: idle keep-alive connections close now, busy ones after their response."""

    def abort(self) -> None:
        """Close at once (the shutdown deadline passed)."""

    def target_in_use(self) -> tuple[str, str] | None:
        """(target group, "id:port") this connection is talking to right now, if any."""


class ConnectionTracker:
    def __init__(self) -> None:
        self.connections: set[Connection] = set()
        self._empty = asyncio.Event()
        self._empty.set()

    def add(self, connection: Connection) -> None:
        self.connections.add(connection)
        self._empty.clear()

    def discard(self, connection: Connection) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self._empty.set()

    def __len__(self) -> int:
        return len(self.connections)

    def drain_all(self) -> None:
        for connection in list(self.connections):
            connection.drain()

    async def wait_empty(self) -> None:
        await self._empty.wait()

    def abort_all(self) -> None:
        for connection in list(self.connections):
            connection.abort()
