"""An awaited gateway fetch (WebSocket messages, authorizers' key fetches) leaves nothing behind for the
garbage collector: compiled, a closure in its coroutine made a reference cycle per call, with the reply
in it, that only a collection freed."""

from __future__ import annotations

import asyncio
import gc
from typing import Any, cast

from lbd.gateway.contracts import UpstreamReply
from lbd.gateway.fetch import GatewayFetch
from tests.test_gateway_inline import _Group


async def test_an_awaited_fetch_leaves_no_cycle() -> None:
    async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(2)  # the body
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok")
                await writer.drain()
        except asyncio.IncompleteReadError:  # the client closed its pooled connection
            writer.close()

    server = await asyncio.start_server(keep_alive, "127.0.0.1", 0)
    group = _Group(server.sockets[0].getsockname()[1])
    fetch = GatewayFetch(lambda: {"g": cast(Any, group)}, lambda: 1)
    try:
        await fetch("g", "POST", "/", [("content-type", "text/plain")], b"hi", 2.0)  # the connection pooled
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds unreachable stays in gc.garbage
        try:
            for _ in range(20):
                reply = await fetch("g", "POST", "/", [("content-type", "text/plain")], b"hi", 2.0)
                assert reply.body == b"ok"
            del reply
            gc.collect()
            left = [o for o in gc.garbage if isinstance(o, UpstreamReply)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        assert left == []
        assert group.succeeded == 21
    finally:
        fetch.close()
        server.close()
        await server.wait_closed()
