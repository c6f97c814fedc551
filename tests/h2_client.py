"""HTTP/2 clients for the tests: a well-behaved one (the h2 library as a client) and a raw one that writes
and reads frames itself (hyperframe + hpack), the way an attacker's or a conformance tester's client does."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings
from hpack import Encoder
from hyperframe.frame import Frame, GoAwayFrame, SettingsFrame

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
READ_DEADLINE = 20.0


def tls_context(alpn: tuple[str, ...] = ("h2",)) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(list(alpn))
    return context


async def open_stream(
    port: int, tls: bool, alpn: tuple[str, ...] = ("h2",)
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if tls:
        return await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls_context(alpn), server_hostname="localhost"
        )
    return await asyncio.open_connection("127.0.0.1", port)


@dataclass
class Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    reset: int | None = None  # the RST_STREAM error code, if the stream was reset
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class H2Client:
    """A real HTTP/2 client: h2's state machine, flow control and HPACK; many streams at once."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.responses: dict[int, Response] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = asyncio.Event()
        self._window = asyncio.Event()  # set when the server opens a flow-control window
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, port: int, tls: bool = True) -> H2Client:
        client = cls(*await open_stream(port, tls))
        client.conn.initiate_connection()
        client.conn.increment_flow_control_window(16 * 1024 * 1024)
        client._flush()
        client._task = asyncio.get_running_loop().create_task(client._read())
        return client

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                for event in self.conn.receive_data(data):
                    self._event(event)
                self._flush()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed.set()
            self._window.set()  # a body sender waiting on a window sees the connection is gone
            for response in self.responses.values():
                response.done.set()

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            response = self.responses[event.stream_id]
            response.headers = list(event.headers)
            response.status = int(dict(event.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            self.responses[event.stream_id].body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            self.responses[event.stream_id].trailers = list(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            self.responses[event.stream_id].done.set()
        elif isinstance(event, h2.events.StreamReset):
            response = self.responses.get(event.stream_id)
            if response is not None:
                response.reset = int(event.error_code)
                response.done.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._window.set()

    def start(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        authority: str = "localhost",
    ) -> Response:
        stream_id = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", "https"), (":authority", authority), (":path", path)]
        fields += headers or []
        response = self.responses[stream_id] = Response()
        self.conn.send_headers(stream_id, fields, end_stream=not body)
        if body:
            asyncio.get_running_loop().create_task(self._send_body(stream_id, body))
        self._flush()
        return response

    async def _send_body(self, stream_id: int, body: bytes) -> None:
        view = memoryview(body)
        while view:
            window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if window <= 0:
                if self.closed.is_set():
                    return
                self._window.clear()
                await self._window.wait()  # a WINDOW_UPDATE (read by _read) opens it again
                continue
            self.conn.send_data(stream_id, bytes(view[:window]))
            view = view[window:]
            self._flush()
            await self.writer.drain()
        self.conn.end_stream(stream_id)
        self._flush()

    async def request(self, method: str, path: str, **kwargs: object) -> Response:
        response = self.start(method, path, **kwargs)  # type: ignore[arg-type]
        await asyncio.wait_for(response.done.wait(), READ_DEADLINE)
        return response

    async def close(self) -> None:
        if not self.writer.is_closing():
            self.conn.close_connection()
            self._flush()
            self.writer.close()
        if self._task is not None:
            await asyncio.wait_for(self._task, READ_DEADLINE)


class RawH2:
    """Frames on the wire: send exactly what a test says, read back exactly what lbd sent."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.encoder = Encoder()
        self.frames: list[Frame] = []

    @classmethod
    async def connect(
        cls, port: int, tls: bool = False, preface: bool = True, settings: dict[int, int] | None = None
    ) -> RawH2:
        raw = cls(*await open_stream(port, tls))
        if preface:
            raw.write(PREFACE + SettingsFrame(0, settings=settings or {}).serialize())
        return raw

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    def send(self, *frames: Frame) -> None:
        self.writer.write(b"".join(frame.serialize() for frame in frames))

    def block(self, fields: list[tuple[str, str]]) -> bytes:
        return bytes(self.encoder.encode(fields))

    @staticmethod
    def request_fields(path: str = "/", method: str = "GET") -> list[tuple[str, str]]:
        return [(":method", method), (":scheme", "http"), (":authority", "localhost"), (":path", path)]

    async def next_frame(self) -> Frame | None:
        """The next frame lbd sent, or None at EOF."""
        try:
            header = await asyncio.wait_for(self.reader.readexactly(9), READ_DEADLINE)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        frame, length = Frame.parse_frame_header(memoryview(header))
        body = await asyncio.wait_for(self.reader.readexactly(length), READ_DEADLINE) if length else b""
        frame.parse_body(memoryview(body))
        self.frames.append(frame)
        return frame

    async def until(self, kind: type[Frame], stream_id: int | None = None) -> Frame:
        while True:
            frame = await self.next_frame()
            if frame is None:
                raise AssertionError(f"connection closed before a {kind.__name__}; got {self.frames}")
            if isinstance(frame, kind) and (stream_id is None or frame.stream_id == stream_id):
                return frame

    async def goaway(self) -> GoAwayFrame:
        """Read to the GOAWAY, then check the connection is closed after it."""
        frame = await self.until(GoAwayFrame)
        assert isinstance(frame, GoAwayFrame)
        return frame

    async def closed(self) -> bool:
        """True when lbd closes the connection (reading the frames it sends until then)."""
        while await self.next_frame() is not None:
            pass
        return True

    def close(self) -> None:
        self.writer.close()


SETTINGS_INITIAL_WINDOW_SIZE = h2.settings.SettingCodes.INITIAL_WINDOW_SIZE
