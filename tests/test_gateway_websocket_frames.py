"""The whole-frame fast path (lbd/gateway/websocket/frames.py) against wsproto itself: the same octets,
cut the same ways, must give the same events, the same answer on the wire and the same state from a
session that reads common frames itself as from one that leaves every frame to wsproto."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import Ping, Request, TextMessage

from lbd.gateway.websocket import frames
from lbd.gateway.websocket.session import Session


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True, size: int = -1
) -> bytes:
    """A client frame, valid or not: ``size`` forces the length encoding (126 or 127)."""
    n = len(payload)
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    bit = 0x80 if mask else 0
    if size == 126 or (size < 0 and 125 < n <= 0xFFFF):
        head = bytes((first, bit | 126)) + struct.pack("!H", n)
    elif size == 127 or (size < 0 and n > 0xFFFF):
        head = bytes((first, bit | 127)) + struct.pack("!Q", n)
    else:
        head = bytes((first, bit | n))
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


TEXT, BINARY, CONT, CLOSE = 0x1, 0x2, 0x0, 0x8
CASES = {
    "text": frame(TEXT, b'{"action": "echo"}'),
    "empty text": frame(TEXT, b""),
    "binary": frame(BINARY, bytes(range(256)) * 3),
    "utf-8": frame(TEXT, "h\u00e9llo \U0001f600".encode()),
    "125 octets": frame(TEXT, b"x" * 125),
    "126 octets": frame(TEXT, b"x" * 126),
    "at the frame quota": frame(BINARY, b"x" * 1000),
    "over the frame quota": frame(BINARY, b"x" * 1001),
    "several in one read": frame(TEXT, b"a") + frame(BINARY, b"b") + frame(TEXT, b"c" * 300),
    "then a partial one": frame(TEXT, b"a") + frame(TEXT, b"bcdef")[:4],
    "invalid utf-8": frame(TEXT, b"ok\xff"),
    "utf-8 cut short": frame(TEXT, "\u00e9".encode()[:1]),
    "unmasked": frame(TEXT, b"hi", mask=False),
    "rsv1": frame(TEXT, b"hi", rsv=4),
    "rsv3": frame(BINARY, b"hi", rsv=1),
    "reserved opcode": frame(0x3, b"hi"),
    "non-minimal 16-bit length": frame(TEXT, b"hi", size=126),
    "64-bit length": frame(BINARY, b"x" * 200, size=127),
    "fragments": frame(TEXT, b"He", fin=False) + frame(CONT, b"llo"),
    "a ping between fragments": frame(TEXT, b"He", fin=False) + frame(0x9, b"p") + frame(CONT, b"llo"),
    "fragment then a whole frame": frame(TEXT, b"He", fin=False) + frame(TEXT, b"x"),
    "continuation first": frame(CONT, b"x") + frame(TEXT, b"y"),
    "whole frame then continuation": frame(TEXT, b"x") + frame(CONT, b"y"),
    "close": frame(TEXT, b"x") + frame(CLOSE, struct.pack("!H", 1000) + b"bye"),
    "after a close": frame(CLOSE, struct.pack("!H", 1000)) + frame(TEXT, b"x"),
    "message over the message quota": frame(TEXT, b"x" * 900, fin=False) + frame(CONT, b"y" * 900),
}


def opened(fast: bool) -> Session:
    session = Session(max_frame=1000, max_message=1500)
    session.fast = fast
    client = WSConnection(ConnectionType.CLIENT)
    session.receive(client.send(Request(host="x", target="/")))
    session.accept()
    session.data_to_send()
    return session


def cuts(data: bytes) -> Iterator[list[bytes]]:
    yield [data]  # whole
    for at in (1, 2, 5, 6, len(data) // 2, len(data) - 1):  # in two reads
        if 0 < at < len(data):
            yield [data[:at], data[at:]]
    if len(data) < 64:
        yield [data[i : i + 1] for i in range(len(data))]  # octet by octet


def run(session: Session, reads: list[bytes]) -> list[object]:
    seen: list[object] = []
    for chunk in [*reads, None]:
        seen.append(session.receive(chunk))
        seen.append(session.data_to_send())
        seen.append((session.open, session.closed, session.done, session.failed))
    return seen


@pytest.mark.parametrize("name", list(CASES))
def test_the_fast_path_reads_as_wsproto_does(name: str) -> None:
    assert frames.SUPPORTED  # this wsproto has what frames.py reads: the fast path is on
    for reads in cuts(CASES[name]):
        assert run(opened(True), reads) == run(opened(False), reads), (name, [len(r) for r in reads])


def test_a_session_keeps_reading_after_fast_frames_as_wsproto_does() -> None:
    """Fast frames, a fragmented message, a ping, fast frames again: every read compared."""
    reads = [CASES["text"], CASES["fragments"][:9], CASES["fragments"][9:], frame(0x9, b"p"), CASES["binary"]]
    assert run(opened(True), reads) == run(opened(False), reads)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 999, 1000, 1001, 4000, 70_000])
@pytest.mark.parametrize("kind", [str, bytes])
def test_frames_out_are_wsproto_s(size: int, kind: type) -> None:
    data: str | bytes = ("\u00e9" * size) if kind is str else os.urandom(size)
    fast, slow = opened(True), opened(False)
    assert fast.send(data) and slow.send(data)
    assert fast.data_to_send() == slow.data_to_send()
    # And a client reads them back as the message sent.
    client = Connection(ConnectionType.CLIENT)
    fast.send(data)
    client.receive_data(fast.data_to_send())
    parts = [e.data for e in client.events() if not isinstance(e, Ping)]
    assert (b"" if kind is bytes else "").join(parts) == data  # type: ignore[attr-defined]


def test_a_wsproto_client_frame_is_read_whole() -> None:
    octets = Connection(ConnectionType.CLIENT).send(TextMessage(data="caf\u00e9"))
    assert frames.whole_frame(octets, 0, 1000) == ("caf\u00e9", 5, len(octets))
    assert frames.whole_frame(octets[:-1], 0, 1000) is None  # not all here yet: wsproto's
