"""One client's WebSocket (RFC 6455) with API Gateway's limits, over wsproto. Sans-IO.

wsproto does the protocol: the opening handshake's checks (section 4.2.1), unmasking and the rule that a
client masks every frame (5.1: an unmasked frame fails the connection with 1002), fragmentation and
control-frame rules (5.4, 5.5: 1002), UTF-8 of text messages (8.1: 1007) and the close handshake (5.5.1,
7); the common frames (a whole unfragmented text or binary message in one read, and lbd's own frames) are
read and written by frames.py, which checks the same rules for them and leaves all else to wsproto. This
class adds what API Gateway adds ("Amazon API Gateway quotas for configuring and running a
WebSocket API"): frames of at most 32 KB and messages of at most 128 KB, larger ones closing the
connection with 1009 (Message Too Big, 7.4.1; measured on the wire by meter.py), and answers what needs
no application: pings (5.5.2) and the client's close (5.5.1).

Feed bytes with ``receive``; it returns what happened (``Upgrade``, ``Message``, ``Closed``); bytes to
write collect in ``data_to_send()``. Nothing here reads a clock or a socket.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from lbd.gateway.websocket import frames
from lbd.gateway.websocket.meter import FrameMeter, end_of_head

MAX_FRAME = 32 * 1024
MAX_MESSAGE = 128 * 1024
# RFC 6455 7.4.1
NORMAL = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
NO_STATUS = 1005  # what $disconnect reports when the close frame had no code (7.1.5)
ABNORMAL = 1006  # ... and when the connection ended without a close frame


@dataclass(frozen=True, slots=True)
class Upgrade:
    """A valid opening handshake; answer with ``accept`` or ``reject``."""

    target: str  # path and query as requested
    headers: Sequence[tuple[str, str]]  # lower-case names, the Host included
    subprotocols: Sequence[str]


@dataclass(frozen=True, slots=True)
class Message:
    data: str | bytes  # str: a text message


@dataclass(frozen=True, slots=True)
class Closed:
    """The WebSocket is closed (or failed): close the connection once ``data_to_send()`` is written."""

    code: int
    reason: str
    by_client: bool


Event = Upgrade | Message | Closed


class Session:
    def __init__(self, max_frame: int = MAX_FRAME, max_message: int = MAX_MESSAGE) -> None:
        self.ws = WSConnection(ConnectionType.SERVER)
        self.max_frame = max_frame
        self.max_message = max_message
        self._meter = FrameMeter(max_frame, max_message)
        self._accepted = False
        self._head_ended = False  # the opening handshake's request head is complete
        self._tail = b""  # the last octets of an incomplete request head (a blank line may span reads)
        self._early = b""  # frames sent before the 101, waiting for the accept
        self._first_line = b""  # the start of the request head: its request line
        self.open = False  # accepted and not closing
        self.closed: Closed | None = None  # set once, when the WebSocket starts to close or fails
        self.done = False  # the TCP connection may end now (the close handshake is complete)
        self._failed = False  # what the client sends now cannot be parsed: read and drop it
        self.refused = False  # the handshake was answered with an HTTP error: end the output after it
        self._out: list[bytes] = []
        self._parts: list[str | bytes] = []
        self.fast = frames.SUPPORTED  # whole frames read and written without wsproto (frames.py)

    @property
    def failed(self) -> bool:
        """The WebSocket failed (RFC 6455 7.1.7: a frame that breaks the protocol, or a refused
        handshake): nothing more is read from the client, so its closing handshake cannot complete and
        the TCP connection is to be closed at once (lbd's output ends after ``data_to_send()``)."""
        return self._failed

    # -- bytes in ------------------------------------------------------------------------------------------

    def receive(self, data: bytes | None) -> list[Event]:
        """``data`` from the client (None: it closed its side)."""
        if self.done:
            return []
        if data is None and self.closed is not None:
            self.done = True
            return []
        if self._failed:
            return []
        breach, rest = None, b""
        fast: list[Event] = []
        if data is not None:
            data = self._frames_only(data)
            if self._accepted and self.closed is None:
                if self.fast:
                    fast, data = self._whole_frames(data)
                    if not data:
                        return fast
                breach = self._meter.measure(data)
                if breach is not None:  # what comes before the breach is parsed first: its errors win
                    data, rest = data[: breach.within], data[breach.within :]
        if data is None or data:  # (b"" would be the end of input to the handshake's h11)
            try:
                self.ws.receive_data(data)
            except RemoteProtocolError as exc:
                return [self._refuse_handshake(str(exc), exc.event_hint)]
        if self.closed is not None:
            self._await_close_answer()
            return []
        out = fast
        for event in self.ws.events():
            happened = self._on(event)
            if happened is not None:
                out.append(happened)
            if self.closed is not None:
                break
        if breach is not None and self.closed is None:
            out.append(self.close(MESSAGE_TOO_BIG, breach.reason))
            if rest:  # the rest of the frame, maybe the client's close: read on as after any close
                self.ws.receive_data(rest)
                self._await_close_answer()
        if data is None and self.closed is None:
            out.append(self._end(ABNORMAL, "", by_client=True))
            self.done = True
        return out

    def _whole_frames(self, data: bytes) -> tuple[list[Event], bytes]:
        """The messages of the whole unfragmented frames ``data`` starts with (frames.py: what wsproto
        would make of them), read without it while it is between frames; the rest is for wsproto. The
        quotas are those the meter would apply to a frame that is a message by itself."""
        out: list[Event] = []
        meter = self._meter
        if meter.between_frames() and not self._parts and frames.clean_state(self.ws.connection) is not None:
            limit = min(self.max_frame, self.max_message)
            at = size = 0
            while True:
                frame = frames.whole_frame(data, at, limit)
                if frame is None:
                    break
                message, size, at = frame
                out.append(Message(message))
            if at:
                meter.whole_frame(size)
                data = data[at:]
        return out, data

    def _frames_only(self, data: bytes) -> bytes:
        """What wsproto is to parse now. Until the handshake is accepted that is only the request head:
        frames sent before the 101 (RFC 6455 4.1 says a client waits for it) wait for the accept, so
        the meter sees every frame from its first octet."""
        if self._accepted:
            if self._early:
                data, self._early = self._early + data, b""
            return data
        if self._head_ended:
            self._early += data
            return b""
        if b"\n" not in self._first_line and len(self._first_line) < 8192:
            self._first_line += data[:8192]
        seen = self._tail + data
        end = end_of_head(seen)
        if end is None:
            self._tail = seen[-2:]
            return data
        self._head_ended = True
        cut = end - len(self._tail)
        self._early = data[cut:]
        return data[:cut]

    def _await_close_answer(self) -> None:
        """After lbd's close frame, only the client's close matters (RFC 6455 5.5.1, 7.1.1)."""
        for event in self.ws.events():
            if isinstance(event, CloseConnection):
                if self.ws.state is not ConnectionState.CLOSED:
                    self._failed = True  # a frame it could not parse
                self.done = self.ws.state is ConnectionState.CLOSED
                return

    def _on(self, event: object) -> Event | None:
        if isinstance(event, Request):
            problem = _handshake_problem(self._first_line, event.extra_headers)
            if problem is not None:
                return self._refuse_handshake(problem, None)
            headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in event.extra_headers]
            headers.append(("host", event.host))
            return Upgrade(event.target, headers, tuple(event.subprotocols))
        if isinstance(event, TextMessage | BytesMessage):
            return self._data(event)
        if isinstance(event, Ping):
            self._out.append(self.ws.send(event.response()))
            return None
        if isinstance(event, CloseConnection):
            return self._close_received(event)
        return None  # Pong: nothing to do (lbd sends no pings of its own)

    def _data(self, event: TextMessage | BytesMessage) -> Event | None:
        # (Its size was measured on the wire: meter.py.)
        chunk: str | bytes = event.data if isinstance(event.data, str) else bytes(event.data)
        self._parts.append(chunk)
        if not event.message_finished:
            return None
        parts, self._parts = self._parts, []
        if isinstance(chunk, str):
            return Message("".join(str(p) for p in parts))
        return Message(b"".join(p for p in parts if isinstance(p, bytes)))

    def _close_received(self, event: CloseConnection) -> Closed:
        if self.ws.state is ConnectionState.REMOTE_CLOSING:
            # The client's close: echo its code (RFC 6455 5.5.1); then the TCP connection ends.
            self._out.append(self.ws.send(event.response()))
            self.done = True
            return self._end(event.code, event.reason or "", by_client=True)
        if self.ws.state is ConnectionState.CLOSED:
            # The client's side ended without a close frame: wsproto says 1006 (RFC 6455 7.1.5).
            self.done = True
            return self._end(event.code, "", by_client=True)
        # wsproto reports a frame it cannot accept (unmasked, bad fragmentation, bad UTF-8 ...) as a close
        # in the OPEN state: fail the connection with that code (RFC 6455 7.1.7); nothing after that
        # frame can be parsed.
        self._failed = True
        return self.close(event.code, event.reason or "")

    # -- the handshake ------------------------------------------------------------------------------------

    def accept(self, subprotocol: str | None = None, headers: Sequence[tuple[str, str]] = ()) -> None:
        extra = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]
        self._out.append(self.ws.send(AcceptConnection(subprotocol=subprotocol, extra_headers=extra)))
        self.open = self._accepted = True

    def reject(self, status: int, headers: Sequence[tuple[str, str]], body: bytes) -> Closed:
        encoded = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]
        encoded.append((b"content-length", str(len(body)).encode()))
        encoded.append((b"connection", b"close"))
        self._out.append(self.ws.send(RejectConnection(status_code=status, headers=encoded, has_body=True)))
        self._out.append(self.ws.send(RejectData(data=body)))
        self._failed = self.refused = True
        return self._end(status, "refused", by_client=False)

    def _refuse_handshake(self, problem: str, hint: object) -> Closed:
        """A request that is not a WebSocket opening handshake (RFC 6455 4.2.2): 426 when the client did
        not ask to upgrade (RFC 9110 15.5.22, naming the protocol) or asked for a version other than 13
        (with Sec-WebSocket-Version: 13, as wsproto says); 400 for the rest."""
        headers = [("content-type", "text/plain")]
        status = hint.status_code if isinstance(hint, RejectConnection) else 400
        if "Connection: Upgrade" in problem or "Upgrade: " in problem:
            status = 426
            headers.append(("upgrade", "websocket"))
        elif status == 426:
            headers.append(("sec-websocket-version", "13"))
        body = f"{problem}\n".encode()
        head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"]
        head += [f"{name}: {value}\r\n" for name, value in headers]
        head.append(f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
        self._out.append("".join(head).encode("latin-1") + body)
        self._failed = self.refused = True
        return self._end(status, problem, by_client=False)

    # -- bytes out -----------------------------------------------------------------------------------------

    def send(self, data: str | bytes) -> bool:
        """Queue a message; False if the WebSocket is no longer open."""
        if not self.open:
            return False
        # Frames of at most max_frame bytes out too, as API Gateway sends them (a character is at most
        # 4 bytes of UTF-8, so a quarter of the limit in characters always fits).
        step = self.max_frame // 4 if isinstance(data, str) else self.max_frame
        last = max(len(data) - 1, 0) // step
        if self.fast and frames.clean_state(self.ws.connection) is not None:
            # Frames written here: what wsproto would write for them (it keeps no state for a whole
            # message sent at once).
            opcode = frames.TEXT if isinstance(data, str) else frames.BINARY
            for i in range(last + 1):
                piece = data[i * step : (i + 1) * step]
                payload = piece.encode() if isinstance(piece, str) else piece
                self._out.append(frames.server_frame(opcode if i == 0 else 0, payload, i == last))
            return True
        for i in range(last + 1):
            piece = data[i * step : (i + 1) * step]
            fin = i == last
            event = (
                TextMessage(data=piece, message_finished=fin)
                if isinstance(piece, str)
                else BytesMessage(data=piece, message_finished=fin)
            )
            self._out.append(self.ws.send(event))
        return True

    def close(self, code: int, reason: str = "") -> Closed:
        """Start the close handshake (RFC 6455 7.1.2): the client's answering close ends it (``done``)."""
        if self.closed is not None:
            return self.closed
        if self.ws.state is ConnectionState.OPEN:
            self._out.append(self.ws.send(CloseConnection(code=code, reason=reason[:120])))
        else:
            self.done = True  # not open yet (or no longer): nothing to hand shake
        return self._end(code, reason, by_client=False)

    def _end(self, code: int, reason: str, by_client: bool) -> Closed:
        self.open = False
        self.closed = Closed(int(code), reason, by_client)
        self._parts = []
        return self.closed

    def data_to_send(self) -> bytes:
        out, self._out = self._out, []
        return b"".join(out)


def _handshake_problem(head: bytes, headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """What RFC 6455 4.2.1 requires of the opening handshake that wsproto does not check (4.2.2: such a
    request gets 400): HTTP/1.1 or higher, one Sec-WebSocket-Key (11.3.1) that is 16 octets in base64,
    one Sec-WebSocket-Version (11.3.5)."""
    request_line = head.split(b"\n", 1)[0].rstrip(b"\r")
    version = request_line.rsplit(b" ", 1)[-1].removeprefix(b"HTTP/")
    major, _, minor = version.partition(b".")
    if not (major.isdigit() and minor.isdigit()) or (int(major), int(minor)) < (1, 1):
        return "the opening handshake must be an HTTP/1.1 request"
    keys = [value for name, value in headers if name.lower() == b"sec-websocket-key"]
    versions = [value for name, value in headers if name.lower() == b"sec-websocket-version"]
    if len(keys) != 1 or len(versions) != 1:
        return "Sec-WebSocket-Key and Sec-WebSocket-Version must appear once each"
    try:
        key = base64.b64decode(keys[0].strip(), validate=True)
    except binascii.Error:
        key = b""
    if len(key) != 16:
        return "Sec-WebSocket-Key must be 16 octets in base64"
    return None
