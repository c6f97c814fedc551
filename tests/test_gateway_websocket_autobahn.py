"""Autobahn TestSuite-style protocol cases for the server side of WebSocket APIs, end to end.

One real lbd serves a WEBSOCKET API whose ``$default`` route is two-way to a real Python HTTP echo
integration (tests/http_backend.py's ``/echo``), with ``$connect`` and ``$disconnect`` routes so each
connection's id and close code can be seen at the integration. Each case opens a raw TCP connection, does
the opening handshake by hand (RFC 6455 4.1, 4.2.2) and writes hand-built frames, masked as a client must
(5.3) unless the case is about masking, then checks what lbd writes back byte by byte: the echoed
messages, the pongs, the exact close code, and that lbd then ends the TCP connection (every read has a
timeout, so a hang fails the case). The families and case numbers are those of the Autobahn TestSuite's
fuzzingclient (1.x framing, 2.x pings, 3.x reserved bits, 4.x opcodes, 5.x fragmentation, 6.x UTF-8,
7.x close, 9.x limits), adapted to API Gateway's quotas ("Amazon API Gateway quotas for configuring and
running a WebSocket API": 32 KB frames, 128 KB messages, both closing with 1009) and to an integration
that answers asynchronously (where Autobahn sends the next frame at once and accepts either outcome, a
case here waits for the echo first, so it has exactly one right answer).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.http_backend import HttpBackend, SeenRequest
from tests.lbdproc import Lbd, free_port, http_request
from tests.test_gateway_api import group, proxy

TIMEOUT = 10.0  # seconds any one read may take: generous for a loaded 2-core machine, and no hang passes
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3
MAX_FRAME = 32 * 1024
MAX_MESSAGE = 128 * 1024

# Opcodes (RFC 6455 5.2, 11.8).
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# -- frames, built by hand ----------------------------------------------------------------------------------


def _mask(payload: bytes, key: bytes) -> bytes:
    """RFC 6455 5.3: octet i XOR key[i mod 4] (as one big integer: fast for 128 KB)."""
    if not payload:
        return b""
    stream = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(payload), "big")


def frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0, masked: bool = True) -> bytes:
    """One frame (RFC 6455 5.2). ``rsv`` is the 3-bit RSV field as Autobahn numbers it: 4 = RSV1,
    2 = RSV2, 1 = RSV3. The length takes the fewest octets, as 5.2 requires."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    size = len(payload)
    if size <= 125:
        head += bytes([mask_bit | size])
    elif size <= 0xFFFF:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + _mask(payload, key)


def close(code: int | None = None, reason: bytes = b"") -> bytes:
    """A close frame (RFC 6455 5.5.1): no payload, or a 2-octet code and a UTF-8 reason."""
    return frame(CLOSE, b"" if code is None else struct.pack("!H", code) + reason)


def cut(opcode: int, payload: bytes, upto: int) -> bytes:
    """A frame announcing all of ``payload`` of which only the first ``upto`` octets are written."""
    whole = frame(opcode, payload)
    return whole[: len(whole) - len(payload) + upto]


def closes_in(data: bytes) -> bool:
    """Whether ``data``, frames one after another, holds a close frame (the last may be cut short)."""
    at = 0
    while at + 2 <= len(data):
        opcode, size, masked = data[at] & 0x0F, data[at + 1] & 0x7F, data[at + 1] & 0x80
        at += 2
        if size == 126:
            size, at = int.from_bytes(data[at : at + 2], "big"), at + 2
        elif size == 127:
            size, at = int.from_bytes(data[at : at + 8], "big"), at + 8
        if opcode == CLOSE:
            return True
        at += size + (4 if masked else 0)
    return False


def fragments(opcode: int, parts: list[bytes]) -> bytes:
    """One message in len(parts) frames: the first with ``opcode``, the rest continuations (5.4)."""
    last = len(parts) - 1
    return b"".join(frame(opcode if i == 0 else CONT, part, fin=i == last) for i, part in enumerate(parts))


# -- what a case does ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chops:
    """Write ``data`` in pieces of ``size`` octets, each its own write (Autobahn's "chopped" sends: the
    server must handle a frame arriving in any number of reads)."""

    data: bytes
    size: int = 1


@dataclass(frozen=True)
class Expect:
    """lbd's next message (its data frames reassembled) or control frame must be this."""

    opcode: int
    payload: bytes


@dataclass(frozen=True)
class Closes:
    """lbd's next frame is a close with ``code`` (None: an empty close frame); the client answers it
    with a close of its own if it has not sent one (RFC 6455 5.5.1) unless ``answer`` is False (it is in
    the middle of a frame), and lbd must then end the TCP connection."""

    code: int | None
    answer: bool = True


@dataclass(frozen=True)
class Reached:
    """The integration received a MESSAGE event from this connection with this body."""

    body: bytes


Step = bytes | Chops | Expect | Closes | Reached


def bye() -> list[Step]:
    """The client's normal close, echoed with its code."""
    return [close(1000), Closes(1000)]


def echoed(opcode: int, payload: bytes) -> list[Step]:
    return [frame(opcode, payload), Expect(opcode, payload)]


def case(case_id: str, *steps: Step | list[Step]) -> Any:
    flat: list[Step] = []
    for step in steps:
        flat.extend(step if isinstance(step, list) else [step])
    return pytest.param(flat, id=case_id)


# -- the gateway under test ---------------------------------------------------------------------------------


@dataclass
class Gateway:
    proc: Lbd
    port: int
    backend: HttpBackend

    def requests(self, event: str) -> list[SeenRequest]:
        return [r for r in list(self.backend.requests) if r.header("x-amzn-event-type") == event]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One lbd for the whole module; its integration runs on an event loop in a thread of its own, so
    the cases can be plain blocking socket code with timeouts."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="echo-integration", daemon=True)
    thread.start()
    backend = asyncio.run_coroutine_threadsafe(HttpBackend("app").start(), loop).result(TIMEOUT)
    port = free_port()
    routes = [
        {"route_key": "$connect", "integration": proxy("/connect")},
        {"route_key": "$disconnect", "integration": proxy("/disconnect")},
        {
            "route_key": "$default",
            "integration": proxy("/echo"),
            "route_response_selection_expression": "$default",
        },
    ]
    api = {
        "name": "autobahn",
        "protocol": "WEBSOCKET",
        "listeners": [{"protocol": "HTTP", "port": port, "address": "127.0.0.1"}],
        "routes": routes,
    }
    directory: Path = tmp_path_factory.mktemp("lbd")
    proc = Lbd(directory, {"target_groups": [group("app", backend)], "apis": [api]})
    proc.start()
    try:
        asyncio.run(proc.wait_ready())
        yield Gateway(proc, port, backend)
    finally:
        proc.stop()
        print(f"--- lbd log ({proc.log_path}) ---\n{proc.log}")
        asyncio.run_coroutine_threadsafe(backend.close(), loop).result(TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(TIMEOUT)
        loop.close()


def poll(predicate: Any, what: str) -> Any:
    deadline = time.monotonic() + 30
    while not (result := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return result


# -- a client that writes whatever a case says --------------------------------------------------------------


class RawClient:
    def __init__(self, gateway: Gateway, early: bytes = b"", chop: int = 0) -> None:
        """``early``: frames written with the upgrade request (in the same write, unless ``chop``: the
        request's octets per write, the frames after it)."""
        self.gateway = gateway
        self.tag = uuid.uuid4().hex  # in the upgrade's query string: finds this connection's $connect
        self.sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.sent_close = False
        self._handshake(early, chop)

    def _handshake(self, early: bytes, chop: int) -> None:
        """RFC 6455 4.1's request; 4.2.2's answer: 101, Upgrade, Connection and the key's digest."""
        key = base64.b64encode(os.urandom(16))
        request = (
            b"GET /?case=" + self.tag.encode() + b" HTTP/1.1\r\n"
            b"Host: 127.0.0.1:" + str(self.gateway.port).encode() + b"\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        if chop:
            self.chops(request, chop)
            self.sock.sendall(early)
        else:
            self.sock.sendall(request + early)
        while b"\r\n\r\n" not in self.buffer:
            self._fill("the 101 answer")
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        self.buffer = bytearray(rest)
        status, *lines = head.decode("latin-1").split("\r\n")
        assert status.startswith("HTTP/1.1 101 "), status
        headers = {
            name.strip().lower(): value.strip() for name, _, value in (ln.partition(":") for ln in lines)
        }
        assert headers["upgrade"].lower() == "websocket"
        assert "upgrade" in headers["connection"].lower()
        assert headers["sec-websocket-accept"] == base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        assert "sec-websocket-extensions" not in headers  # no extension: the RSV bits mean nothing (5.2)

    def _fill(self, what: str) -> None:
        try:
            data = self.sock.recv(262144)
        except TimeoutError:
            raise AssertionError(
                f"lbd sent nothing for {TIMEOUT} s while the case waited for {what}"
            ) from None
        assert data, f"lbd ended the connection while the case waited for {what}"
        self.buffer += data

    def _take(self, size: int, what: str) -> bytes:
        while len(self.buffer) < size:
            self._fill(what)
        out = bytes(self.buffer[:size])
        del self.buffer[:size]
        return out

    def read_frame(self, what: str) -> tuple[bool, int, bytes]:
        """One frame from lbd: (fin, opcode, payload). A server never masks (RFC 6455 5.1), sets no RSV
        bit without an extension (5.2), and sends frames of at most 32 KB (API Gateway's frame quota)."""
        first, second = self._take(2, what)
        assert first & 0x70 == 0, f"lbd set an RSV bit: {first:#04x}"
        assert not second & 0x80, "lbd masked a frame"
        fin, opcode, size = bool(first & 0x80), first & 0x0F, second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", self._take(2, what))
            assert size > 125, "lbd used the 16-bit length for a short frame"  # 5.2: the fewest octets
        elif size == 127:
            (size,) = struct.unpack("!Q", self._take(8, what))
            assert 0xFFFF < size < 1 << 63, f"lbd sent a 64-bit length of {size}"
        assert size <= MAX_FRAME, f"lbd sent a {size}-octet frame"
        if opcode & 0x08:
            assert fin and size <= 125, "lbd sent a fragmented or oversized control frame"  # 5.5
        return fin, opcode, self._take(size, what)

    def read(self, what: str) -> tuple[int, bytes]:
        """lbd's next control frame, or its next message with its fragments reassembled."""
        fin, opcode, payload = self.read_frame(what)
        if opcode & 0x08 or fin:
            return opcode, payload
        assert opcode in (TEXT, BINARY), f"lbd began a message with opcode {opcode:#x}"
        parts = [payload]
        while not fin:
            fin, more, payload = self.read_frame(what)
            assert more == CONT, f"lbd interleaved opcode {more:#x} in a fragmented message"
            parts.append(payload)
        return opcode, b"".join(parts)

    def send(self, data: bytes) -> None:
        self.sent_close = self.sent_close or closes_in(data)
        self.sock.sendall(data)

    def chops(self, data: bytes, size: int) -> None:
        self.sent_close = self.sent_close or closes_in(data)
        for i in range(0, len(data), size):
            self.sock.sendall(data[i : i + size])
            time.sleep(0.001)  # not waiting for anything: a pause so that the pieces arrive one by one

    def closes(self, code: int | None, answer: bool) -> None:
        """lbd's close: its code, a UTF-8 reason (7.1.6), then nothing more and the end of the TCP
        connection (lbd is the server: it closes first, 7.1.1)."""
        opcode, payload = self.read(f"a close frame with {code}")
        assert opcode == CLOSE, f"expected a close with {code}, got opcode {opcode:#x} {payload[:60]!r}"
        got = struct.unpack("!H", payload[:2])[0] if payload else None
        assert got == code, f"lbd closed with {got} ({payload[2:].decode(errors='replace')!r}), not {code}"
        payload[2:].decode("utf-8")
        if answer and not self.sent_close:
            self.send(close(code) if code is not None else close())
        self.expect_end()

    def expect_end(self) -> None:
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"lbd did not end the TCP connection within {TIMEOUT} s") from None
        except ConnectionResetError:
            data = b""  # ended all the same
        assert not self.buffer and not data, f"lbd sent {bytes(self.buffer) + data!r} after its close frame"

    def connection_id(self) -> str:
        seen = poll(
            lambda: [r for r in self.gateway.requests("CONNECT") if r.target.endswith(f"?case={self.tag}")],
            "this connection's $connect",
        )
        return str(seen[0].header("x-amzn-connection-id"))

    def run(self, steps: list[Step]) -> None:
        for step in steps:
            if isinstance(step, bytes):
                self.send(step)
            elif isinstance(step, Chops):
                self.chops(step.data, step.size)
            elif isinstance(step, Expect):
                got = self.read(f"opcode {step.opcode:#x}")
                assert got == (step.opcode, step.payload), f"expected {step}, got {got[0]:#x} {got[1][:80]!r}"
            elif isinstance(step, Closes):
                self.closes(step.code, step.answer)
            else:
                conn_id = self.connection_id()
                seen = [
                    r.body
                    for r in self.gateway.requests("MESSAGE")
                    if r.header("x-amzn-connection-id") == conn_id
                ]
                assert step.body in seen, f"the integration saw {seen!r} from this connection"

    def close_socket(self) -> None:
        self.sock.close()


def run_case(gateway: Gateway, steps: list[Step]) -> RawClient:
    client = RawClient(gateway)
    try:
        client.run(steps)
    finally:
        client.close_socket()
    assert gateway.proc.process is not None and gateway.proc.process.poll() is None, "lbd exited"
    return client


# -- 1.x framing: messages of every length encoding (RFC 6455 5.2), within API Gateway's quotas ------------

STAR, FE = b"*", b"\xfe"  # Autobahn's payloads: "*" for text, 0xFE for binary


def _sized(kind: str, opcode: int, filler: bytes, first: int) -> list[Any]:
    return [
        # 1.x.1: an empty message is taken (the integration receives it), but the echo integration's empty
        # answer sends nothing back: a two-way route sends the integration's body "when not empty"
        # (docs/websocket.md: lbd's choice; API Gateway's route-response pages do not say what an empty
        # body does). The next message's echo is the next thing lbd sends.
        case(f"1.{first}.1-{kind}-0", frame(opcode), echoed(TEXT, b"after"), Reached(b""), bye()),
        # 1.x.2-1.x.5: 7-bit lengths up to 125, then the 16-bit form from 126 (5.2).
        *(
            case(f"1.{first}.{n}-{kind}-{size}", echoed(opcode, filler * size), bye())
            for n, size in ((2, 125), (3, 126), (4, 127), (5, 128))
        ),
        # API Gateway's 32 KB frame quota, both sides of it (lbd closes with 1009, RFC 6455 7.4.1).
        case(f"1.{first}.q-{kind}-32768", echoed(opcode, filler * MAX_FRAME), bye()),
        case(f"1.{first}.q-{kind}-32769", frame(opcode, filler * (MAX_FRAME + 1)), Closes(1009)),
        # 1.x.6, 1.x.7: the largest 16-bit length and the smallest 64-bit one: over the frame quota.
        case(f"1.{first}.6-{kind}-65535", frame(opcode, filler * 65535), Closes(1009)),
        case(f"1.{first}.7-{kind}-65536", frame(opcode, filler * 65536), Closes(1009)),
        # 1.x.8: 65536 octets written in chops of 997.
        case(f"1.{first}.8-{kind}-65536-chopped", Chops(frame(opcode, filler * 65536), 997), Closes(1009)),
        # Under the quota, in chops all the same.
        case(
            f"1.{first}.8q-{kind}-32768-chopped",
            Chops(frame(opcode, filler * MAX_FRAME), 997),
            Expect(opcode, filler * MAX_FRAME),
            bye(),
        ),
    ]


# The quota is on frames as sent: two text frames of exactly 32 KB each, the first ending inside a code
# point (the decoded text shifts 3 octets into the second frame: lbd once counted those and closed).
SPLIT_AT_QUOTA = [STAR * (MAX_FRAME - 3) + b"\xf0\x9f\x98", b"\x80" + STAR * (MAX_FRAME - 1)]
QUOTA_AFTER_SPLIT = [
    case(
        "1.1.q-text-32768-frames-split-code-point",
        fragments(TEXT, SPLIT_AT_QUOTA),
        Expect(TEXT, b"".join(SPLIT_AT_QUOTA)),
        bye(),
    ),
    case(
        "1.1.q-text-32769-after-split-code-point",
        fragments(TEXT, [SPLIT_AT_QUOTA[0], SPLIT_AT_QUOTA[1] + STAR]),
        Closes(1009),
    ),
]


BIG, MEDIUM = frame(BINARY, FE * 65536), frame(BINARY, FE * 200)  # (one mask key each: built once)
HEADERS_CHOPPED = [
    # Every header form arriving an octet at a time: 7-bit, 16-bit and 64-bit lengths, and the mask key.
    case(
        "1.2.x-binary-125-header-chopped", Chops(frame(BINARY, FE * 125), 1), Expect(BINARY, FE * 125), bye()
    ),
    case(
        "1.2.x-binary-200-header-chopped",
        Chops(MEDIUM[:12], 1),
        MEDIUM[12:],
        Expect(BINARY, FE * 200),
        bye(),
    ),
    case("1.2.7-binary-65536-header-chopped", Chops(BIG[:20], 1), BIG[20:], Closes(1009)),
]

FRAMING = [
    *_sized("text", TEXT, STAR, 1),
    *_sized("binary", BINARY, FE, 2),
    *QUOTA_AFTER_SPLIT,
    *HEADERS_CHOPPED,
]


@pytest.mark.parametrize("steps", FRAMING)
def test_1_framing(gateway: Gateway, steps: list[Step]) -> None:
    run_case(gateway, steps)


# -- 2.x pings and pongs (RFC 6455 5.5.2, 5.5.3) -----------------------------------------------------------

PINGS = [
    case("2.1-ping-empty", frame(PING), Expect(PONG, b""), bye()),
    case("2.2-ping-text", frame(PING, b"Hello, world!"), Expect(PONG, b"Hello, world!"), bye()),
    case(
        "2.3-ping-binary",
        frame(PING, b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff"),
        Expect(PONG, b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff"),
        bye(),
    ),
    # Every payload length a control frame may have (5.5: at most 125 octets), answered with the same.
    case("2.4-ping-0..125", *[[frame(PING, FE * n), Expect(PONG, FE * n)] for n in range(126)], bye()),
    # 5.5: "All control frames MUST have a payload length of 125 bytes or less".
    case("2.5-ping-126", frame(PING, FE * 126), Closes(1002)),
    case("2.5b-pong-126", frame(PONG, FE * 126), Closes(1002)),
    case("2.6-ping-125-chopped", Chops(frame(PING, FE * 125), 1), Expect(PONG, FE * 125), bye()),
    # 5.5.3: "A Pong frame MAY be sent unsolicited ... A response to an unsolicited Pong frame is not
    # expected": nothing comes back, the connection stays open (the next message's echo comes first).
    case("2.7-pong-unsolicited", frame(PONG), echoed(TEXT, b"still open"), bye()),
    case(
        "2.8-pong-unsolicited-payload",
        frame(PONG, b"unsolicited pong payload"),
        echoed(TEXT, b"still open"),
        bye(),
    ),
    case(
        "2.9-pong-then-ping",
        frame(PONG, b"unsolicited pong payload"),
        frame(PING, b"ping payload"),
        Expect(PONG, b"ping payload"),
        bye(),
    ),
    case(
        "2.10-ten-pings",
        *[frame(PING, b"payload-%d" % i) for i in range(10)],
        *[Expect(PONG, b"payload-%d" % i) for i in range(10)],
        bye(),
    ),
    case(
        "2.11-ten-pings-chopped",
        Chops(b"".join(frame(PING, b"payload-%d" % i) for i in range(10)), 1),
        *[Expect(PONG, b"payload-%d" % i) for i in range(10)],
        bye(),
    ),
]


@pytest.mark.parametrize("steps", PINGS)
def test_2_ping_pong(gateway: Gateway, steps: list[Step]) -> None:
    run_case(gateway, steps)


# -- 3.x reserved bits (RFC 6455 5.2: "MUST be 0 unless an extension is negotiated"; none is) ------------

RESERVED_BITS = [
    case("3.1-rsv1-text", frame(TEXT, b"Hello, world!", rsv=1), Closes(1002)),
    # 3.2-3.4: a good message first (its echo awaited: the integration answers asynchronously), then the
    # bad frame and a ping that must not be answered.
    case(
        "3.2-rsv2-text",
        echoed(TEXT, b"Hello, world!"),
        frame(TEXT, b"Hello, world!", rsv=2),
        frame(PING),
        Closes(1002),
    ),
    case(
        "3.3-rsv3-text-framewise",
        echoed(TEXT, b"Hello, world!"),
        Chops(frame(TEXT, b"Hello, world!", rsv=3), 64),
        frame(PING),
        Closes(1002),
    ),
    case(
        "3.4-rsv4-text-chopped",
        echoed(TEXT, b"Hello, world!"),
        Chops(frame(TEXT, b"Hello, world!", rsv=4) + frame(PING), 1),
        Closes(1002),
    ),
    case("3.5-rsv5-binary", frame(BINARY, b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff", rsv=5), Closes(1002)),
    case("3.6-rsv6-ping", frame(PING, b"Hello, world!", rsv=6), Closes(1002)),
    case("3.7-rsv7-close", frame(CLOSE, struct.pack("!H", 1000), rsv=7), Closes(1002)),
]


@pytest.mark.parametrize("steps", RESERVED_BITS)
def test_3_reserved_bits(gateway: Gateway, steps: list[Step]) -> None:
    run_case(gateway, steps)


# -- 4.x reserved opcodes (RFC 6455 5.2: 0x3-0x7 non-control, 0xB-0xF control; 10.7: fail) ---------------


def _opcode_cases() -> list[Any]:
    out = []
    for n, opcode in enumerate((3, 4, 5, 6, 7), 1):
        out.append(
            case(
                f"4.1.{n}-opcode-{opcode}",
                echoed(TEXT, b"Hello, world!"),
                frame(opcode, b"reserved" * (n - 1)),
                frame(PING),
                Closes(1002),
            )
        )
    for n, opcode in enumerate((11, 12, 13, 14, 15), 1):
        out.append(
            case(
                f"4.2.{n}-opcode-{opcode}",
                echoed(TEXT, b"Hello, world!"),
                Chops(frame(opcode, b"reserved" * (n - 1)), 1),
                frame(PING),
                Closes(1002),
            )
        )
    return out


@pytest.mark.parametrize("steps", _opcode_cases())
def test_4_reserved_opcodes(gateway: Gateway, steps: list[Step]) -> None:
    run_case(gateway, steps)


# -- 5.x fragmentation (RFC 6455 5.4) ----------------------------------------------------------------------

F1, F2 = b"fragment1", b"fragment2"
PING_PAYLOAD = b"ping payload"

FRAGMENTATION = [
    # 5.4: "Control frames themselves MUST NOT be fragmented."
    case("5.1-ping-fragmented", frame(PING, F1, fin=False), frame(CONT, F2), Closes(1002)),
    case("5.2-pong-fragmented", frame(PONG, F1, fin=False), frame(CONT, F2), Closes(1002)),
    case("5.3-text-2-fragments", fragments(TEXT, [F1, F2]), Expect(TEXT, F1 + F2), bye()),
    case("5.4-text-2-fragments-chopped", Chops(fragments(TEXT, [F1, F2]), 1), Expect(TEXT, F1 + F2), bye()),
    case(
        "5.5-text-2-fragments-framewise",
        frame(TEXT, F1, fin=False),
        frame(CONT, F2),
        Expect(TEXT, F1 + F2),
        bye(),
    ),
    # 5.4: "Control frames MAY be injected in the middle of a fragmented message": the pong comes at once
    # (lbd answers it itself), the message's echo after its integration.
    case(
        "5.6-text-ping-between",
        frame(TEXT, F1, fin=False) + frame(PING, PING_PAYLOAD) + frame(CONT, F2),
        Expect(PONG, PING_PAYLOAD),
        Expect(TEXT, F1 + F2),
        bye(),
    ),
    case(
        "5.7-text-ping-between-chopped",
        Chops(frame(TEXT, F1, fin=False) + frame(PING, PING_PAYLOAD) + frame(CONT, F2), 1),
        Expect(PONG, PING_PAYLOAD),
        Expect(TEXT, F1 + F2),
        bye(),
    ),
    case(
        "5.8-text-ping-between-framewise",
        frame(TEXT, F1, fin=False),
        frame(PING, PING_PAYLOAD),
        Expect(PONG, PING_PAYLOAD),
        frame(CONT, F2),
        Expect(TEXT, F1 + F2),
        bye(),
    ),
    # 5.9-5.14: a continuation frame with nothing to continue, final or not, whole or chopped.
    case("5.9-continuation-alone", frame(CONT, F2), frame(TEXT, b"ignored"), Closes(1002)),
    case(
        "5.11-continuation-alone-chopped", Chops(frame(CONT, F2) + frame(TEXT, b"ignored"), 1), Closes(1002)
    ),
    case("5.12-continuation-not-final-alone", frame(CONT, F2, fin=False), Closes(1002)),
    case("5.14-continuation-not-final-alone-chopped", Chops(frame(CONT, F2, fin=False), 1), Closes(1002)),
    # 5.15: a whole fragmented message (echoed), then a continuation with nothing to continue.
    case(
        "5.15-continuation-after-message",
        fragments(TEXT, [F1, F2]),
        Expect(TEXT, F1 + F2),
        frame(CONT, b"fragment3", fin=False),
        frame(CONT, b"fragment4"),
        Closes(1002),
    ),
    case(
        "5.16-continuation-then-message",
        frame(CONT, b"fragment1", fin=False),
        fragments(TEXT, [F1, F2]),
        Closes(1002),
    ),
    # 5.18: a new data frame while a message is open: "expected CONTINUATION" (5.4).
    case("5.18-text-in-text", frame(TEXT, F1, fin=False), frame(TEXT, F2), Closes(1002)),
    case("5.18b-binary-in-text", frame(TEXT, F1, fin=False), frame(BINARY, F2), Closes(1002)),
    # 5.19, 5.20: a message in 5 frames with pings between, each pong awaited before the next fragment
    # (Autobahn waits 1 s instead).
    case(
        "5.19-text-5-fragments-pings-between",
        frame(TEXT, b"fragment1", fin=False),
        frame(CONT, b"fragment2", fin=False),
        frame(PING, b"pongme 1!"),
        Expect(PONG, b"pongme 1!"),
        frame(CONT, b"fragment3", fin=False),
        frame(CONT, b"fragment4", fin=False),
        frame(PING, b"pongme 2!"),
        Expect(PONG, b"pongme 2!"),
        frame(CONT, b"fragment5"),
        Expect(TEXT, b"fragment1fragment2fragment3fragment4fragment5"),
        bye(),
    ),
    # Fragments of one octet each, and a message whose every frame is empty but the middle one.
    case(
        "5.x-text-1-octet-fragments",
        fragments(TEXT, [bytes([c]) for c in b"Hello, world!"]),
        Expect(TEXT, b"Hello, world!"),
        bye(),
    ),
    case(
        "5.x-binary-1-octet-fragments-chopped",
        Chops(fragments(BINARY, [bytes([c]) for c in b"\x00\xff\xfe\xfd"]), 1),
        Expect(BINARY, b"\x00\xff\xfe\xfd"),
        bye(),
    ),
    case(
        "6.1.3-text-empty-fragments-around",
        fragments(TEXT, [b"", b"middle frame payload", b""]),
        Expect(TEXT, b"middle frame payload"),
        bye(),
    ),
]


@pytest.mark.parametrize("steps", FRAGMENTATION)
def test_5_fragmentation(gateway: Gateway, steps: list[Step]) -> None:
    run_case(gateway, steps)


# -- 6.x UTF-8 (RFC 6455 5.6, 8.1: text is UTF-8, RFC 3629; not UTF-8 fails the connection with 1007) ----

# "κόσμε" as Autobahn (after Markus Kuhn's UTF-8 test file) writes it, with U+1F79: 2- and 3-octet sequences.
KOSME = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
HELLO = "Hello-µ@ßöäüàá-UTF-8!!".encode()
FAIL_FAST = KOSME + b"\xf4\x90\x80\x80" + b"edited" * 20  # valid, then U+110000's octets, then more

VALID_UTF8 = {
    "6.2.1-mixed": HELLO,
    "6.5.1-kosme": KOSME,
    "6.6.2-kosme-prefix": KOSME[:2],
    "6.7.1-U+0000": b"\x00",  # the first sequence of each length
    "6.7.2-U+0080": b"\xc2\x80",
    "6.7.3-U+0800": b"\xe0\xa0\x80",
    "6.7.4-U+10000": b"\xf0\x90\x80\x80",
    "6.9.1-U+007F": b"\x7f",  # the last sequence of each length
    "6.9.2-U+07FF": b"\xdf\xbf",
    "6.9.3-U+FFFF": b"\xef\xbf\xbf",
    "6.11.1-U+D7FF": b"\xed\x9f\xbf",  # around the surrogates and the end of the range
    "6.11.2-U+E000": b"\xee\x80\x80",
    "6.11.3-U+FFFD": b"\xef\xbf\xbd",
    "6.11.4-U+10FFFF": b"\xf4\x8f\xbf\xbf",
    "6.22.1-U+FFFE": b"\xef\xbf\xbe",  # noncharacters are valid UTF-8
    "6.22.6-U+1FFFE": b"\xf0\x9f\xbf\xbe",
    "6.23.1-U+FEFF": b"\xef\xbb\xbf",
}

INVALID_UTF8 = {
    "6.3.1-surrogate-inside": KOSME + b"\xed\xa0\x80" + b"edited",
    "6.6.1-truncated-2": KOSME[:1],  # 6.6.x: "κόσμε" cut inside a sequence, at the end of the message
    "6.6.3-truncated-3": KOSME[:3],
    "6.6.4-truncated-3b": KOSME[:4],
    "6.8.1-5-octets": b"\xf8\x88\x80\x80\x80",  # RFC 3629 ends UTF-8 at 4 octets
    "6.8.2-6-octets": b"\xfc\x84\x80\x80\x80\x80",
    "6.9.4-U+1FFFFF": b"\xf7\xbf\xbf\xbf",
    "6.11.5-U+110000": b"\xf4\x90\x80\x80",  # past U+10FFFF
    "6.12.1-lone-continuation": b"\x80",
    "6.12.8-continuations": b"\x80\xbf\x80\xbf\x80\xbf\x80",
    "6.13.1-lonely-start": b"\xc0 \xc1 \xc2 ",
    "6.14.3-last-octet-missing": b"\xef\xbf",
    "6.14.10-last-octet-missing-4": b"\xf4\x8f\xbf",
    "6.15.1-incomplete-sequences": b"\xc0\xe0\x80\xf0\x80\x80\xf8\x80\x80\x80",
    "6.16.1-fe": b"\xfe",  # octets that never appear in UTF-8
    "6.16.2-ff": b"\xff",
    "6.16.3-fefeffff": b"\xfe\xfe\xff\xff",
    "6.17.1-overlong-slash-2": b"\xc0\xaf",  # overlong forms (RFC 3629 3, 10)
    "6.17.2-overlong-slash-3": b"\xe0\x80\xaf",
    "6.17.3-overlong-slash-4": b"\xf0\x80\x80\xaf",
    "6.18.1-max-overlong-2": b"\xc1\xbf",
    "6.18.2-max-overlong-3": b"\xe0\x9f\xbf",
    "6.18.3-max-overlong-4": b"\xf0\x8f\xbf\xbf",
    "6.19.1-overlong-nul": b"\xc0\x80",
    "6.19.2-overlong-nul-3": b"\xe0\x80\x80",
    "6.20.1-U+D800": b"\xed\xa0\x80",  # UTF-16 surrogates are not characters (RFC 3629 3)
    "6.20.4-U+DBFF": b"\xed\xaf\xbf",
    "6.20.5-U+DC00": b"\xed\xb0\x80",
    "6.20.7-U+DFFF": b"\xed\xbf\xbf",
    "6.21.1-surrogate-pair": b"\xed\xa0\x80\xed\xb0\x80",
    "6.21.8-surrogate-pair-high": b"\xed\xaf\xbf\xed\xbf\xbf",
}


def _utf8_cases() -> list[Any]:
    out = [case(f"{name}", echoed(TEXT, text), bye()) for name, text in VALID_UTF8.items()]
    out += [case(f"{name}", frame(TEXT, text), Closes(1007)) for name, text in INVALID_UTF8.items()]
    out += [
        # 6.1.2: an empty message in 3 empty fragments (taken; the empty echo sends nothing, see 1.1.1).
        case(
            "6.1.2-empty-fragments",
            fragments(TEXT, [b"", b"", b""]),
            echoed(TEXT, b"after"),
            Reached(b""),
            bye(),
        ),
        # 6.2.2: valid text in 2 fragments split at a code point; 6.2.3, 6.2.4: in 1-octet fragments, so
        # most frames end inside a code point (UTF-8 is checked over the message, 8.1).
        case(
            "6.2.2-split-at-code-point", fragments(TEXT, [HELLO[:9], HELLO[9:]]), Expect(TEXT, HELLO), bye()
        ),
        case(
            "6.2.3-1-octet-fragments",
            fragments(TEXT, [bytes([c]) for c in HELLO]),
            Expect(TEXT, HELLO),
            bye(),
        ),
        case(
            "6.2.4-kosme-1-octet-fragments",
            fragments(TEXT, [bytes([c]) for c in KOSME]),
            Expect(TEXT, KOSME),
            bye(),
        ),
        case(
            "6.x-4-octet-split-mid-code-point",
            fragments(TEXT, [b"\xf0\x9f", b"\x98", b"\x80!"]),
            Expect(TEXT, "😀!".encode()),
            bye(),
        ),
        case("6.5.x-kosme-chopped", Chops(frame(TEXT, KOSME), 1), Expect(TEXT, KOSME), bye()),
        # 6.3.2: invalid text in 1-octet fragments.
        case(
            "6.3.2-invalid-1-octet-fragments",
            fragments(TEXT, [bytes([c]) for c in INVALID_UTF8["6.3.1-surrogate-inside"]]),
            Closes(1007),
        ),
        # Cut inside a code point at the very end, the last fragment empty.
        case("6.x-truncated-then-empty-final-fragment", fragments(TEXT, [KOSME, b"\xce", b""]), Closes(1007)),
        # 6.4.1, 6.4.2: fail fast. Across frames: the frame that makes the text invalid fails it, before
        # the message is complete (the rest is never sent).
        case(
            "6.4.1-fail-fast-frames",
            frame(TEXT, KOSME, fin=False),
            frame(CONT, b"\xf4\x90\x80\x80", fin=False),
            Closes(1007),
        ),
        case(
            "6.4.2-fail-fast-frames-mid-code-point",
            frame(TEXT, KOSME + b"\xf4", fin=False),
            frame(CONT, b"\x90", fin=False),
            Closes(1007),
        ),
        # 6.4.3, 6.4.4: within one frame: the octets that make it invalid fail it while the frame is
        # still arriving (the client, in the middle of a frame, cannot answer with a close).
        case("6.4.3-fail-fast-inside-frame", cut(TEXT, FAIL_FAST, len(KOSME) + 4), Closes(1007, False)),
        case(
            "6.4.4-fail-fast-inside-frame-chopped",
            Chops(cut(TEXT, FAIL_FAST, len(KOSME) + 2), 1),
            Closes(1007, False),
        ),
    ]
    return out


@pytest.mark.parametrize("steps", _utf8_cases())
def test_6_utf8(gateway: Gateway, steps: list[Step]) -> None:
    run_case(gateway, steps)


# -- 7.x the close handshake (RFC 6455 5.5.1, 7) -----------------------------------------------------------

VALID_CODES = (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999)
# 7.4.1/7.4.2: 0-999 are not used; 1004 is reserved; 1005, 1006 and 1015 "MUST NOT be set as a status
# code in a Close control frame by an endpoint"; 1016-2999 are for the RFC and its extensions (none
# defines these); 5000 and up are not in any range.
INVALID_CODES = (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535)

CLOSES = [
    # 7.1.1: a message, then the close (its echo awaited first: once the client has closed, lbd may drop
    # a reply still at the integration, 5.5.1 "MUST NOT send any more data frames" after the close).
    case("7.1.1-message-then-close", echoed(TEXT, b"Hello, world!"), bye()),
    # 7.1.2-7.1.5: whatever follows the client's close is ignored (5.5.1: the close is the last frame):
    # one close frame back, then the end of the connection (checked: nothing after the close frame).
    case("7.1.2-two-closes", close(1000) + close(1000), Closes(1000)),
    case("7.1.3-ping-after-close", close(1000) + frame(PING, b"after close"), Closes(1000)),
    case("7.1.4-text-after-close", close(1000) + frame(TEXT, b"after close"), Closes(1000)),
    case(
        "7.1.5-fragment-close-continuation",
        frame(TEXT, F1, fin=False) + close(1000) + frame(CONT, F2),
        Closes(1000),
    ),
    # 7.3.1: a close without a code. 5.5.1: the answer "typically echos the status code it received";
    # there was none, and 1005 "MUST NOT be set as a status code in a Close control frame" (7.4.1), so
    # the echo is an empty close frame (a 1000 would be allowed too; lbd echoes exactly).
    case("7.3.1-close-empty", close(), Closes(None)),
    # 7.1.6: a 256 KB message (over the 128 KB quota: 1009, 7.4.1), the client's close behind it: the
    # two closes cross, which completes the handshake.
    case("7.1.6-256k-then-close", fragments(TEXT, [b"BAsd7&jh23" * 3200] * 8) + close(1000), Closes(1009)),
    # 7.3.2: a 1-octet payload cannot hold a code (5.5.1: "the first two bytes ... MUST be a 2-byte
    # unsigned integer").
    case("7.3.2-close-1-octet", frame(CLOSE, b"\x03"), Closes(1002)),
    case("7.3.3-close-1000", close(1000), Closes(1000)),
    case("7.3.4-close-1000-reason-123", close(1000, b"*" * 123), Closes(1000)),
    # 7.3.5/7.3.6: a reason of 124 octets makes a 126-octet control frame (5.5).
    case("7.3.6-close-reason-124", close(1000, b"*" * 124), Closes(1002)),
    # 7.5.1: the reason is UTF-8 (5.5.1), like a text message (8.1): 1007.
    case(
        "7.5.1-close-reason-invalid-utf8", close(1000, INVALID_UTF8["6.3.1-surrogate-inside"]), Closes(1007)
    ),
    *(case(f"7.7-close-{code}-echoed", close(code), Closes(code)) for code in VALID_CODES),
    *(case(f"7.9-close-{code}-invalid", close(code), Closes(1002)) for code in INVALID_CODES),
]


@pytest.mark.parametrize("steps", CLOSES)
def test_7_close(gateway: Gateway, steps: list[Step]) -> None:
    run_case(gateway, steps)


def test_7_close_reason_is_echoed(gateway: Gateway) -> None:
    client = RawClient(gateway)
    try:
        client.send(close(4001, "auf Wiedersehen ✓".encode()))
        opcode, payload = client.read("the close echo")
        assert (opcode, payload) == (CLOSE, struct.pack("!H", 4001) + "auf Wiedersehen ✓".encode())
        client.expect_end()
    finally:
        client.close_socket()


# -- masking (RFC 6455 5.1: "a server MUST close the connection upon receiving a frame that is not masked")


MASKING = [
    case("5.1-unmasked-text", frame(TEXT, b"Hello, world!", masked=False), Closes(1002)),
    case("5.1-unmasked-binary", frame(BINARY, FE * 200, masked=False), Closes(1002)),
    case("5.1-unmasked-ping", frame(PING, b"ping", masked=False), Closes(1002)),
    case("5.1-unmasked-close", frame(CLOSE, struct.pack("!H", 1000), masked=False), Closes(1002)),
    case(
        "5.1-unmasked-continuation", frame(TEXT, F1, fin=False), frame(CONT, F2, masked=False), Closes(1002)
    ),
    # 5.2: "the minimal number of bytes MUST be used to encode the length": 5 in the 16-bit form.
    case("5.2-length-not-minimal", b"\x81\xfe\x00\x05" + b"\x00" * 4 + b"hello", Closes(1002)),
    case(
        "5.2-64-bit-length-not-minimal",
        b"\x82\xff" + struct.pack("!Q", 5) + b"\x00" * 4 + b"hello",
        Closes(1002),
    ),
    # 5.2: "the most significant bit MUST be 0" in a 64-bit length.
    case(
        "5.2-64-bit-length-msb-set",
        b"\x82\xff" + struct.pack("!Q", 1 << 63 | 70000) + b"\x00" * 4,
        Closes(1002),
    ),
    # RFC 6455 10.4: a frame that announces 2**40 octets is measured as it arrives, not trusted or
    # buffered: 1009 once the 32 KB quota is passed. The client, in the middle of its frame, cannot
    # answer; lbd ends the connection after its linger (2 s) for the client's close.
    case(
        "10.4-frame-announcing-1-tib",
        b"\x82\xff" + struct.pack("!Q", 1 << 40) + b"\x00" * 4 + FE * (MAX_FRAME + 1),
        Closes(1009, answer=False),
    ),
]


@pytest.mark.parametrize("steps", MASKING)
def test_masking_and_length_rules(gateway: Gateway, steps: list[Step]) -> None:
    run_case(gateway, steps)


# -- 9.x-style limits: API Gateway's 128 KB message quota over many frames --------------------------------

LIMITS = [
    # Control frames are no part of a message: pings between the four 32 KB frames of a 128 KB message
    # leave it within the quota, and each is answered at once.
    case(
        "9.x-128k-with-pings-between",
        *[
            [frame(BINARY if i == 0 else CONT, FE * MAX_FRAME, fin=i == 3), frame(PING, b"%d" % i)]
            for i in range(4)
        ],
        *[Expect(PONG, b"%d" % i) for i in range(4)],
        Expect(BINARY, FE * MAX_MESSAGE),
        bye(),
    ),
    # 9.7/9.8-style: many messages back to back in one write: lbd reads them while at most 8 wait for
    # the integration (reading pauses, then resumes) and answers every one, in order.
    case(
        "9.7-100-messages-in-one-write",
        b"".join(frame(TEXT if i % 2 else BINARY, b"message %d" % i) for i in range(100)),
        *[Expect(TEXT if i % 2 else BINARY, b"message %d" % i) for i in range(100)],
        bye(),
    ),
    case(
        "9.x-binary-128k-in-64-frames",
        fragments(BINARY, [FE * 2048] * 64),
        Expect(BINARY, FE * MAX_MESSAGE),
        bye(),
    ),
    case(
        "9.x-text-128k-in-4-frames",
        fragments(TEXT, [STAR * MAX_FRAME] * 4),
        Expect(TEXT, STAR * MAX_MESSAGE),
        bye(),
    ),
    case("9.x-binary-128k-plus-1", fragments(BINARY, [FE * 2048] * 64 + [FE]), Closes(1009)),
    case(
        "9.x-text-128k-plus-1-chopped",
        Chops(fragments(TEXT, [STAR * MAX_FRAME] * 4 + [STAR]), 4096),
        Closes(1009),
    ),
]


@pytest.mark.parametrize("steps", LIMITS)
def test_9_message_limit(gateway: Gateway, steps: list[Step]) -> None:
    run_case(gateway, steps)


# -- the opening handshake (RFC 6455 4.2.1: what the server reads; 4.2.2: 400 for what does not match) -----

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 1.3's sample nonce


def upgrade_request(port: int, first: bytes = b"GET / HTTP/1.1", **fields: bytes) -> bytes:
    """An opening handshake; ``fields`` replace (or, with value b"", drop) its header fields."""
    headers = {
        "Host": b"127.0.0.1:%d" % port,
        "Upgrade": b"websocket",
        "Connection": b"Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": b"13",
    }
    headers.update({name.replace("_", "-"): value for name, value in fields.items()})
    lines = [first] + [name.encode() + b": " + value for name, value in headers.items() if value]
    return b"\r\n".join(lines) + b"\r\n\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        # 4.2.1 item 1: "An HTTP/1.1 or higher GET request".
        pytest.param(lambda p: upgrade_request(p, b"GET / HTTP/1.0"), 400, id="http-1.0"),
        pytest.param(lambda p: upgrade_request(p, b"POST / HTTP/1.1"), 400, id="not-get"),
        # Item 5: "a base64-encoded value that, when decoded, is 16 bytes in length".
        pytest.param(lambda p: upgrade_request(p, Sec_WebSocket_Key=b"c2hvcnQ="), 400, id="key-of-5-octets"),
        pytest.param(lambda p: upgrade_request(p, Sec_WebSocket_Key=b"!" * 24), 400, id="key-not-base64"),
        pytest.param(lambda p: upgrade_request(p, Sec_WebSocket_Key=b""), 400, id="no-key"),
        # 11.3.1: "The |Sec-WebSocket-Key| header field MUST NOT appear more than once".
        pytest.param(
            lambda p: upgrade_request(p).replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Key: " + KEY + b"\r\n\r\n"),
            400,
            id="two-keys",
        ),
        # Item 6 and 4.4: a version lbd does not speak gets 426 with the one it does.
        pytest.param(lambda p: upgrade_request(p, Sec_WebSocket_Version=b"8"), 426, id="version-8"),
        pytest.param(lambda p: upgrade_request(p, Upgrade=b"", Connection=b""), 426, id="not-an-upgrade"),
    ],
)
def test_handshakes_that_are_refused(gateway: Gateway, request_bytes: Any, status: int) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=TIMEOUT) as sock:
        sock.sendall(request_bytes(gateway.port))
        answer = b""
        while chunk := sock.recv(65536):  # lbd answers, then ends the connection (a timeout fails)
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]
    assert b"\r\nconnection: close\r\n" in answer.lower()


@pytest.mark.parametrize(
    "fields",
    [
        # Item 4: Connection is a list of tokens that includes "Upgrade" (Firefox sends this one);
        # item 3: "websocket" is compared without regard to case.
        pytest.param({"Connection": b"keep-alive, Upgrade"}, id="connection-token-list"),
        pytest.param({"Upgrade": b"WebSocket", "Connection": b"upgrade"}, id="tokens-any-case"),
        # Autobahn 12.x/13.x offer permessage-deflate: lbd negotiates no extension (like API Gateway),
        # so a frame with RSV1 (a compressed one) fails the connection (RFC 6455 5.2, 9.1).
        pytest.param(
            {"Sec-WebSocket-Extensions": b"permessage-deflate; client_max_window_bits"}, id="deflate"
        ),
    ],
)
def test_handshakes_that_are_accepted(gateway: Gateway, fields: dict[str, bytes]) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=TIMEOUT) as sock:
        sock.sendall(upgrade_request(gateway.port, **{k.replace("-", "_"): v for k, v in fields.items()}))
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            assert chunk, "lbd ended the connection instead of answering 101"
            answer += chunk
        head, _, rest = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=" in head.lower()  # RFC 6455 1.3's
        assert b"sec-websocket-extensions" not in head.lower()
        sock.sendall(
            frame(TEXT, b"compressed?", rsv=4) if "Sec-WebSocket-Extensions" in fields else close(1000)
        )
        answer = rest
        while chunk := sock.recv(65536):
            answer += chunk
    expected = 1002 if "Sec-WebSocket-Extensions" in fields else 1000
    # One unmasked close frame, all of what came before the end of the connection; its code.
    assert answer[0] == 0x88 and answer[1] == len(answer) - 2, answer[:80]
    assert struct.unpack("!H", answer[2:4])[0] == expected


# -- frames a client writes with its upgrade request ------------------------------------------------------


@pytest.mark.parametrize("chop", [0, 1], ids=["one-write", "chopped"])
def test_frames_written_with_the_upgrade_request(gateway: Gateway, chop: int) -> None:
    """RFC 6455 4.1 has a client wait for the 101 before it sends frames; one that does not is served
    all the same: its frames are read once $connect has accepted it, counted against the quotas from
    their first octet (the head's end found as h11 finds it, even when the blank line spans writes)."""
    early = frame(PING, b"early") + frame(TEXT, b"early message") + frame(BINARY, FE * MAX_FRAME)
    client = RawClient(gateway, early=early, chop=chop)
    try:
        client.run(
            [
                Expect(PONG, b"early"),
                Expect(TEXT, b"early message"),
                Expect(BINARY, FE * MAX_FRAME),  # exactly at the quota: the meter counted from the start
                frame(BINARY, FE * (MAX_FRAME + 1)),
                Closes(1009),
            ]
        )
    finally:
        client.close_socket()


# -- $disconnect hears the close code ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "code"),
    [
        pytest.param([close(4999, b"bye"), Closes(4999)], 4999, id="client-4999"),
        pytest.param([close(), Closes(None)], 1005, id="client-no-code"),  # 7.1.5: no code is 1005
        pytest.param([frame(7, b"x"), Closes(1002)], 1002, id="reserved-opcode"),
        pytest.param([frame(TEXT, b"\xc0\xaf"), Closes(1007)], 1007, id="invalid-utf8"),
        pytest.param([frame(BINARY, FE * (MAX_FRAME + 1)), Closes(1009)], 1009, id="frame-too-big"),
        pytest.param([], 1006, id="tcp-ended-without-close"),  # 7.1.5: 1006, no close frame
    ],
)
def test_disconnect_gets_the_close_code(gateway: Gateway, steps: list[Step], code: int) -> None:
    client = run_case(gateway, steps)
    conn_id = client.connection_id()
    gone = poll(
        lambda: [r for r in gateway.requests("DISCONNECT") if r.header("x-amzn-connection-id") == conn_id],
        "$disconnect",
    )
    assert gone[0].header("x-amzn-disconnect-status-code") == str(code)


# -- and lbd is still fine ----------------------------------------------------------------------------------


def test_lbd_survives_every_case(gateway: Gateway) -> None:
    """Last in the module: a good connection still works, no connection was left open, nothing logged a
    traceback."""
    run_case(gateway, [*echoed(TEXT, b"still here"), *echoed(BINARY, b"\x00\x01"), *bye()])

    async def open_connections() -> bool:
        _, _, body = await http_request(gateway.proc.admin_port, "GET", "/metrics")
        return 'lbd_api_websocket_connections{api="autobahn",stage="prod"} 0.0' in body.decode()

    poll(lambda: asyncio.run(open_connections()), "every connection closed after the cases ended")
    assert "Traceback" not in gateway.proc.log
