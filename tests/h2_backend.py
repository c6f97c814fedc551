"""An HTTP/2 target for the tests (the h2 library as a server, prior knowledge): it advertises a chosen
SETTINGS_MAX_CONCURRENT_STREAMS and records the most streams it ever had open on one connection, and it can
go away (GOAWAY) after a number of streams without processing the stream that crossed the line.

``GET|POST /slow/<ms>`` answers after that many milliseconds; any other path at once. Responses carry
``x-stream`` and end with an ``x-body-length`` trailer (the request body's length).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings
from hyperframe.frame import GoAwayFrame


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytearray = field(default_factory=bytearray)
    trailers: dict[str, str] = field(default_factory=dict)


class H2Backend:
    def __init__(self, max_streams: int = 100, goaway_after: int = 0) -> None:
        self.max_streams = max_streams
        self.goaway_after = goaway_after  # GOAWAY on the n-th stream of each connection, which is dropped
        self.requests: list[Seen] = []
        self.peak = 0
        self.connections = 0
        self.goaways = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> H2Backend:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class _Connection(asyncio.Protocol):
    def __init__(self, backend: H2Backend) -> None:
        self.backend = backend
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Seen] = {}
        self.seen = 0
        self.open = 0
        self.last_stream_id: int | None = None  # set once it went away

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.backend.connections += 1
        self.conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.backend.max_streams},
        )
        self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self._request(event)
            elif isinstance(event, h2.events.DataReceived):
                seen = self.streams.get(event.stream_id)
                if seen is not None:
                    seen.body += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                seen = self.streams.get(event.stream_id)
                if seen is not None:
                    seen.trailers = dict(event.headers)  # type: ignore[arg-type]
            elif isinstance(event, h2.events.StreamEnded):
                seen = self.streams.get(event.stream_id)
                if seen is not None:
                    path = seen.path.partition("?")[0]
                    delay = float(path.split("/")[2]) / 1000 if path.startswith("/slow/") else 0
                    asyncio.get_running_loop().call_later(delay, self._respond, event.stream_id)
            elif isinstance(event, h2.events.StreamReset) and self.streams.pop(event.stream_id, None):
                self.open -= 1
        self.flush()

    def _request(self, event: h2.events.RequestReceived) -> None:
        backend = self.backend
        stream_id = event.stream_id
        if self.last_stream_id is not None:
            return  # after GOAWAY: not processed
        self.seen += 1
        if backend.goaway_after and self.seen == backend.goaway_after:
            # Going away: this stream and any after it are not processed (RFC 9113 6.8).
            self.last_stream_id = stream_id - 2
            backend.goaways += 1
            self.flush()
            assert self.transport is not None
            self.transport.write(GoAwayFrame(0, last_stream_id=self.last_stream_id).serialize())
            if not self.open:
                self.transport.close()
            return
        headers = dict(event.headers or [])
        seen = Seen(str(headers[":method"]), str(headers[":path"]), headers)  # type: ignore[arg-type]
        self.streams[stream_id] = seen
        backend.requests.append(seen)
        self.open += 1
        backend.peak = max(backend.peak, self.open)

    def _respond(self, stream_id: int) -> None:
        seen = self.streams.pop(stream_id, None)
        if seen is None or self.transport is None:
            return
        self.conn.send_headers(
            stream_id, [(":status", "200"), ("content-type", "text/plain"), ("x-stream", str(stream_id))]
        )
        self.conn.send_data(stream_id, f"{seen.method} {seen.path}\n".encode())
        self.conn.send_headers(stream_id, [("x-body-length", str(len(seen.body)))], end_stream=True)
        self.open -= 1
        self.flush()
        if self.last_stream_id is not None and not self.open:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
