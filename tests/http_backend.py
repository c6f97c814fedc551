"""A real HTTP/1.1 target for functional tests (h11 over asyncio streams) that records what reached it.

Paths choose the behaviour:
  /echo            200 with the request body echoed (chunked if the request was chunked)
  /status/NNN      that status with a short body
  /bytes/N         N bytes of a deterministic pattern, Content-Length framed
  /chunked/N       N bytes in chunks, chunked framing
  /close           close the connection without answering (-> 502)
  /garbage         an invalid response (-> 502)
  /hang            never answer (-> 504)
  /ws              101 Switching Protocols, then echo raw bytes (a stand-in for WebSocket frames)
  /sleep/MS        200 after MS milliseconds
  /health          ``health_status`` (200 unless a test changes it; 0 = never answer)
  /set-cookie/NAME 200 "hello from <name>" with ``Set-Cookie: NAME=<name>; Max-Age=3600; Path=/``
  anything else    200 "hello from <name>"
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from dataclasses import dataclass, field

import h11


def pattern(n: int) -> bytes:
    block = hashlib.shake_256(b"pattern").digest(65536)
    return (block * (n // len(block) + 1))[:n]


@dataclass
class SeenRequest:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    connection: int

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name.lower()]
        return ", ".join(values) if values else None


@dataclass
class HttpBackend:
    name: str = "backend"
    port: int = 0
    requests: list[SeenRequest] = field(default_factory=list)
    connections: int = 0
    closed_connections: int = 0
    health_status: int = 200
    server: asyncio.Server | None = None
    open_writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(
        self, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> HttpBackend:
        self.server = await asyncio.start_server(self._serve, host, port, ssl=tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def kill(self) -> None:
        """Die like a crashed process: stop listening and reset every open connection."""
        await self.close()
        for writer in list(self.open_writers):
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_writers.add(writer)
        self.connections += 1
        number = self.connections
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body, chunked = await self._read_request(conn, reader)
                if request is None:
                    return
                target = request.target.decode()
                seen = SeenRequest(
                    request.method.decode(),
                    target,
                    [(k.decode().lower(), v.decode("latin-1")) for k, v in request.headers],
                    body,
                    number,
                )
                self.requests.append(seen)
                if not await self._answer(conn, reader, writer, seen, chunked):
                    return
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.RemoteProtocolError):
            return
        finally:
            self.open_writers.discard(writer)
            self.closed_connections += 1
            writer.close()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request | None, bytes, bool]:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(262144)
                conn.receive_data(data)
                if not data and conn.their_state is h11.IDLE:
                    return None, b"", False
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                chunked = any(k == b"transfer-encoding" for k, _ in request.headers)
                return request, bytes(body), chunked
            elif isinstance(event, h11.ConnectionClosed):
                return None, b"", False

    async def _answer(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        seen: SeenRequest,
        chunked: bool,
    ) -> bool:
        path = seen.target.split("?")[0]

        def send(*events: h11.Event) -> None:
            for event in events:
                data = conn.send(event)
                if data:
                    writer.write(data)

        if path == "/health":
            if not self.health_status:
                await reader.read()  # a target that accepts and never answers (-> Target.Timeout)
                return False
            path = f"/status/{self.health_status}"
        if path.startswith("/sleep/"):
            await asyncio.sleep(int(path.rsplit("/", 1)[1]) / 1000)
            path = "/"
        if path == "/close":
            return False
        if path == "/garbage":
            writer.write(b"HTTP/1.1 2OO NOT A STATUS\r\n\r\n")
            await writer.drain()
            return False
        if path == "/hang":
            await reader.read()  # until the proxy gives up and closes
            return False
        if path == "/ws":
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            )
            # h11 already holds any bytes that arrived after the upgrade request.
            leftover, _ = conn.trailing_data
            if leftover:
                writer.write(leftover)
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            return False
        if path == "/echo":
            headers = [("X-Seen-Connection", str(seen.connection))]
            if chunked:
                send(h11.Response(status_code=200, headers=[*headers, ("Transfer-Encoding", "chunked")]))
                for i in range(0, len(seen.body), 65536):
                    send(h11.Data(data=seen.body[i : i + 65536]))
                    await writer.drain()
            else:
                send(
                    h11.Response(
                        status_code=200, headers=[*headers, ("Content-Length", str(len(seen.body)))]
                    ),
                    h11.Data(data=seen.body),
                )
            send(h11.EndOfMessage())
        elif path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            body = b"" if status in (204, 304) else f"status {status}".encode()
            headers = [] if status in (204, 304) else [("Content-Length", str(len(body)))]
            send(h11.Response(status_code=status, headers=headers))
            if body and seen.method != "HEAD":
                send(h11.Data(data=body))
            send(h11.EndOfMessage())
        elif path.startswith("/bytes/") or path.startswith("/chunked/"):
            size = int(path.rsplit("/", 1)[1])
            data = pattern(size)
            if path.startswith("/bytes/"):
                send(h11.Response(status_code=200, headers=[("Content-Length", str(size))]))
            else:
                send(h11.Response(status_code=200, headers=[("Transfer-Encoding", "chunked")]))
            if seen.method != "HEAD":
                for i in range(0, size, 262144):
                    send(h11.Data(data=data[i : i + 262144]))
                    await writer.drain()
            send(h11.EndOfMessage())
        else:
            body = f"hello from {self.name}\n".encode()
            cookie = []
            if path.startswith("/set-cookie/"):
                cookie = [("Set-Cookie", f"{path.rsplit('/', 1)[1]}={self.name}; Max-Age=3600; Path=/")]
            send(
                h11.Response(
                    status_code=200,
                    headers=[
                        ("Content-Length", str(len(body))),
                        ("X-Backend", self.name),
                        ("X-Seen-Connection", str(seen.connection)),
                        *cookie,
                    ],
                )
            )
            if seen.method != "HEAD":
                send(h11.Data(data=body))
            send(h11.EndOfMessage())
        await writer.drain()
        return True
