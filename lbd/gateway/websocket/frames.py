"""The common frames of an open WebSocket read and written without wsproto's general machinery. Sans-IO.

Almost every frame a client sends an API is a whole message in one frame (FIN set, RSV bits clear, text
or binary, masked, RFC 6455 5.2) that arrives in one read, and almost every frame lbd sends is the same
from the server's side (unmasked, 5.1). wsproto's frame parser, written in pure Python for every case
(fragments, control frames, partial reads, extensions), costs several times the message's own work on
that path. ``whole_frame`` recognises only that case and checks every rule that applies to it
(5.1 masked, 5.2 minimal length encoding, 8.1 UTF-8 for text); anything else (a fragment, a control
frame, a reserved bit or opcode, a frame cut between reads, an unmasked frame, invalid UTF-8) is left
to wsproto, which then parses it and fails the connection with its code and reason as always.

``clean_state`` says when wsproto would read a new frame from a clean state: open, nothing buffered, no
frame or fragmented message in progress, no extension negotiated (lbd offers none). Only then may a
frame bypass it: wsproto's state after a whole unfragmented data frame is what it was before it, so it
can read the next frame (a fragment, a close ...) as if it had parsed this one itself. It reads
wsproto's private attributes; ``SUPPORTED`` is False (and everything goes to wsproto) if this version
of wsproto does not have them.
"""

from __future__ import annotations

from typing import Any

from wsproto.connection import Connection, ConnectionState, ConnectionType

TEXT = 0x1
BINARY = 0x2
_FIN = 0x80
_WHOLE_TEXT = _FIN | TEXT  # FIN, no RSV bit (5.2: no extension was negotiated), opcode 1
_WHOLE_BINARY = _FIN | BINARY
_MASKED = 0x80


def clean_state(connection: Connection | None) -> Any:
    """wsproto's frame protocol if ``connection`` would parse its next frame from a clean state, else
    None."""
    if connection is None or connection._state is not ConnectionState.OPEN or connection._events:
        return None
    proto = connection._proto
    decoder = proto._frame_decoder
    if decoder.header is not None or decoder.buffer.buffer or proto._message_decoder.opcode is not None:
        return None
    if proto.extensions or proto._outbound_opcode is not None:
        return None
    return proto


def whole_frame(data: bytes, at: int, limit: int) -> tuple[str | bytes, int, int] | None:
    """The message in the whole masked text or binary frame at ``data[at:]``, its payload's size and
    where the frame ends, if there is one of at most ``limit`` payload octets that breaks no rule; None
    otherwise."""
    end = len(data)
    if end - at < 6:
        return None
    first, second = data[at], data[at + 1]
    if (first != _WHOLE_TEXT and first != _WHOLE_BINARY) or not second & _MASKED:
        return None
    size = second & 0x7F
    start = at + 6
    if size == 126:
        if end - at < 8:
            return None
        size = (data[at + 2] << 8) | data[at + 3]
        if size <= 125:
            return None  # 5.2: the minimal number of bytes must be used for the length
        start = at + 8
    elif size == 127:
        return None  # beyond 64 KB: larger than any frame the API takes (the meter closes it, 1009)
    stop = start + size
    if size > limit or stop > end:
        return None
    key = data[start - 4 : start]
    payload = _unmask(key, data[start:stop], size)
    if first == _WHOLE_BINARY:
        return payload, size, stop
    try:
        return payload.decode("utf-8"), size, stop
    except UnicodeDecodeError:
        return None  # wsproto fails it (8.1: 1007)


def _unmask(key: bytes, masked: bytes, size: int) -> bytes:
    """RFC 6455 5.3: octet i XOR key[i % 4], as one integer operation (C speed for any size)."""
    if not size:
        return b""
    mask = (key * ((size + 3) // 4))[:size]
    return (int.from_bytes(masked, "little") ^ int.from_bytes(mask, "little")).to_bytes(size, "little")


def server_frame(opcode: int, payload: bytes, fin: bool) -> bytes:
    """A frame from the server: unmasked (5.1), the length in the fewest octets (5.2)."""
    size = len(payload)
    first = (_FIN if fin else 0) | opcode
    if size <= 125:
        return bytes((first, size)) + payload
    if size <= 0xFFFF:
        return bytes((first, 126)) + size.to_bytes(2, "big") + payload
    return bytes((first, 127)) + size.to_bytes(8, "big") + payload


def _supported() -> bool:
    try:
        connection = Connection(ConnectionType.SERVER)
        return clean_state(connection) is not None
    except AttributeError:
        return False


SUPPORTED = _supported()
