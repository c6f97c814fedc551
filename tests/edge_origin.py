"""A real HTTP origin for the edge tests (aiohttp): scripted answers per path, every request counted.

``routes[path] = Answer(...)`` says what a path returns; ``hits[path]`` counts the requests that reached
the origin and ``seen`` keeps each one's method, path, query and headers, so a test can prove what the
edge sent (and what it did not).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"hello"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (collapsing tests hold the first miss open)
    gate: asyncio.Event | None = None  # or wait until the test opens it
    chunked: bool = False
    hold: asyncio.Event | None = None  # chunked: after the first chunk, wait until the test opens it
    size: int = 0  # a generated body of this many bytes (PATTERN repeated), streamed with Content-Length


PATTERN = bytes(range(256)) * 256  # 64 KiB


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int] = ("", 0)  # the edge's end of the connection: equal ports mean a reused one


class Origin:
    def __init__(self, name: str = "origin") -> None:
        self.name = name
        self.routes: dict[str, Answer | Callable[[Seen], Answer]] = {}
        self.hits: Counter[str] = Counter()
        self.seen: list[Seen] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> Origin:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def last(self, path: str) -> Seen:
        return [s for s in self.seen if s.path == path][-1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(
            request.method,
            request.path,
            request.query_string,
            {k.lower(): v for k, v in request.headers.items()},
            await request.read(),
            request.transport.get_extra_info("peername") if request.transport else ("", 0),
        )
        self.seen.append(seen)
        self.hits[request.path] += 1
        route = self.routes.get(request.path)
        if route is None:
            return web.Response(status=404, text=f"{self.name}: no route {request.path}\n")
        answer = route(seen) if callable(route) else route
        if answer.gate is not None:
            await answer.gate.wait()
        if answer.delay:
            await asyncio.sleep(answer.delay)
        headers = {"X-Origin": self.name, **answer.headers}
        if answer.size:
            response = web.StreamResponse(status=answer.status, headers=headers)
            response.content_length = answer.size
            await response.prepare(request)
            left = answer.size
            while left > 0:
                chunk = PATTERN[: min(left, len(PATTERN))]
                await response.write(chunk)
                left -= len(chunk)
            await response.write_eof()
            return response
        if answer.chunked:
            response = web.StreamResponse(status=answer.status, headers=headers)
            response.enable_chunked_encoding()
            await response.prepare(request)
            for start in range(0, len(answer.body), 4096):
                await response.write(answer.body[start : start + 4096])
                if start == 0 and answer.hold is not None:
                    await answer.hold.wait()
            await response.write_eof()
            return response
        return web.Response(status=answer.status, body=answer.body, headers=headers)
