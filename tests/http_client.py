"""A raw HTTP/1.1 client for tests: exact bytes out, responses parsed with httptools, one connection."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httptools


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    keep_alive: bool

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name.lower()]
        return ", ".join(values) if values else None


class _Collector:
    """Keeps one parser per connection; each completed response is queued, so pipelined ones separate."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[Response] = []
        self.upgraded = False
        self._headers: list[tuple[str, str]] = []
        self._body = bytearray()
        self.in_body = False

    def on_message_begin(self) -> None:
        self._headers = []
        self._body = bytearray()
        self.in_body = False

    def on_headers_complete(self) -> None:
        self.in_body = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode().lower(), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.in_body = False
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # interim response
        self.done.append(Response(status, self._headers, bytes(self._body), self.parser.should_keep_alive()))


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = b""  # bytes after an upgrade response
        self.collector = _Collector()
        self.interim: list[bytes] = []

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Response:
        headers = headers or {}
        head = f"{method} {path} HTTP/1.1\r\n"
        if not any(name.lower() == "host" for name in headers):
            head += "Host: example.com\r\n"
        for name, value in headers.items():
            head += f"{name}: {value}\r\n"
        if body or method in ("POST", "PUT"):
            head += f"Content-Length: {len(body)}\r\n"
        self.send(head.encode() + b"\r\n" + body)
        if method == "HEAD":
            return await self.head_response()
        return await self.response()

    async def response(self, timeout: float = 30) -> Response:
        return await asyncio.wait_for(self._response(), timeout)

    async def _response(self) -> Response:
        collector = self.collector
        while not collector.done:
            data = await self.reader.read(262144)
            if not data:
                if collector.in_body:  # a close-delimited body ends here (RFC 9112 6.3)
                    collector.on_message_complete()
                    break
                raise ConnectionError("connection closed before a complete response")
            try:
                collector.parser.feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                self.buffer = data[upgrade.args[0] :]
                collector.on_message_complete()
        return collector.done.pop(0)

    async def head_response(self) -> Response:
        """A response to HEAD: headers only, whatever Content-Length says (RFC 9110 9.3.2)."""
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 30)
        lines = raw.decode("latin-1").split("\r\n")
        headers = [
            (k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line)
        ]
        self.collector = _Collector()  # the next response starts clean
        return Response(int(lines[0].split()[1]), headers, b"", True)

    async def read_exactly(self, n: int) -> bytes:
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        if len(out) < n:
            out += await asyncio.wait_for(self.reader.readexactly(n - len(out)), 30)
        return out

    async def read_all(self) -> bytes:
        return self.buffer + await asyncio.wait_for(self.reader.read(-1), 30)

    def close(self) -> None:
        self.writer.close()
