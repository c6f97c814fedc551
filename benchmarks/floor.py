"""The cheapest proxies Python and uvloop can be: floors under any load balancer written with them.

Each client connection gets its own target connection. Two floors:
- bytes (default): bytes pass both ways untouched; no parsing, routing, headers or metrics.
- ``--http``: the first HTTP prototype, httptools (llhttp) parsing both directions, the request head rebuilt
  with X-Forwarded-For, the response head and body passed on as parsed. No rules, no checks, no metrics.

Only correct for traffic where that is enough (the harness's small keep-alive requests): they exist to be
measured. What lbd spends per request above them is its HTTP logic; what they spend is the price of the
language, the event loop and the parser.

    python -m benchmarks.floor --listen 18090 --target 19001 [--http]
"""

from __future__ import annotations

import argparse
import asyncio

import httptools
import uvloop


class TargetSide(asyncio.Protocol):
    def __init__(self, client: ClientSide) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        if self.client.transport is not None:
            self.client.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client.transport is not None:
            self.client.transport.close()


class ClientSide(asyncio.Protocol):
    target_side: type[TargetSide] = TargetSide

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            upstream, _ = await loop.create_connection(lambda: self.target_side(self), *self.target)
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        if self.transport is None:
            upstream.close()
            return
        self.upstream = upstream
        for data in self.early:
            upstream.write(data)
        self.early.clear()

    def data_received(self, data: bytes) -> None:
        if self.upstream is not None:
            self.upstream.write(data)
        else:
            self.early.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.upstream is not None:
            self.upstream.close()


class HttpTargetSide(TargetSide):
    """Parses the response with httptools and passes it on (Content-Length bodies only)."""

    def __init__(self, client: ClientSide) -> None:
        super().__init__(client)
        self.parser = httptools.HttpResponseParser(self)
        self.out: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)
        if self.client.transport is not None and self.out:
            self.client.transport.write(b"".join(self.out))
        self.out.clear()

    def on_status(self, status: bytes) -> None:
        self.out.append(b"HTTP/1.1 %d %b\r\n" % (self.parser.get_status_code(), status))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.out += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        self.out.append(b"\r\n")

    def on_body(self, body: bytes) -> None:
        self.out.append(body)


class HttpClientSide(ClientSide):
    """Parses the request with httptools and sends the target a rebuilt head with X-Forwarded-For."""

    target_side = HttpTargetSide

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__(target)
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        head = b"%b %b HTTP/1.1\r\n%bX-Forwarded-For: 127.0.0.1\r\n\r\n" % (
            self.parser.get_method(),
            self.url,
            b"".join(self.headers),
        )
        self.headers = []
        super().data_received(head)


async def serve(listen: int, target: int, http: bool = False) -> None:
    loop = asyncio.get_running_loop()
    side = HttpClientSide if http else ClientSide
    server = await loop.create_server(lambda: side(("127.0.0.1", target)), "127.0.0.1", listen, backlog=4096)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--target", type=int, required=True)
    parser.add_argument("--http", action="store_true", help="parse HTTP/1.1 both ways with httptools")
    args = parser.parse_args(argv)
    uvloop.run(serve(args.listen, args.target, args.http))


if __name__ == "__main__":
    main()
