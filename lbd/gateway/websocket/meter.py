"""API Gateway's frame and message quotas, measured on the octets a client sends. Sans-IO.

"Amazon API Gateway quotas for configuring and running a WebSocket API": frames of at most 32 KB and
messages of at most 128 KB. Both are sizes of what the client sends, so they are measured on the wire,
from the frame headers' payload lengths (RFC 6455 5.2) and the payload octets as they arrive (a frame
announcing 2**60 octets is not trusted, 10.4). wsproto still parses and checks every frame; it reports
text decoded, and a code point split between two frames would count in the later one there (a frame
exactly at the quota after one that ends inside a code point would be taken for too big).

Only the lengths are read here: a header that wsproto refuses (unmasked, a reserved opcode, a
non-minimal length ...) fails the connection there first, since the octets up to a quota's breach are
handed to wsproto before the breach is reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The end of a request head as h11 (inside wsproto) finds it: a blank line, CRLF or bare LF (RFC 9112 2.2).
_BLANK_LINE = re.compile(b"\n\r?\n")
_CONTINUATION = 0x0


@dataclass(frozen=True, slots=True)
class Breach:
    within: int  # octets of the chunk that are within the quotas: hand these to the parser first
    reason: str  # the close reason that goes with 1009


class FrameMeter:
    def __init__(self, max_frame: int, max_message: int) -> None:
        self.max_frame = max_frame
        self.max_message = max_message
        self._head = bytearray()  # the frame header read so far
        self._left = 0  # payload octets of the current frame still to come
        self._data = False  # the current frame is a data frame (its payload counts)
        self._frame = 0
        self._message = 0

    def measure(self, data: bytes) -> Breach | None:
        """Count ``data``; the first octet that takes a frame or a message over its quota, if any."""
        at, end = 0, len(data)
        while at < end:
            if not self._left:
                at = self._read_head(data, at)
                continue
            take = min(self._left, end - at)
            if self._data:
                frame_room = self.max_frame - self._frame
                message_room = self.max_message - self._message
                if take > min(frame_room, message_room):
                    if frame_room <= message_room:
                        return Breach(at + frame_room, f"frame larger than {self.max_frame} bytes")
                    return Breach(at + message_room, f"message larger than {self.max_message} bytes")
                self._frame += take
                self._message += take
            self._left -= take
            at += take
        return None

    def between_frames(self) -> bool:
        """No frame header or payload is partly read."""
        return not self._left and not self._head

    def whole_frame(self, size: int) -> None:
        """Count a whole frame that is a message by itself, read elsewhere (frames.py): as ``measure``
        would have, it is the current frame and message now."""
        self._data = True
        self._frame = self._message = size

    def _read_head(self, data: bytes, at: int) -> int:
        head = self._head
        if not head and at + 2 <= len(data) and at + _head_size(data[at + 1]) <= len(data):
            self._start(data, at)  # the usual case: the whole header in this read
            return at + _head_size(data[at + 1])
        while at < len(data):
            head.append(data[at])
            at += 1
            if len(head) >= 2 and len(head) == _head_size(head[1]):
                self._start(bytes(head), 0)
                head.clear()
                break
        return at

    def _start(self, data: bytes, at: int) -> None:
        opcode, short = data[at] & 0x0F, data[at + 1] & 0x7F
        if short == 126:
            self._left = int.from_bytes(data[at + 2 : at + 4], "big")
        elif short == 127:
            self._left = int.from_bytes(data[at + 2 : at + 10], "big")
        else:
            self._left = short
        self._data = not opcode & 0x08  # control frames (5.5) are no part of a message
        if self._data:
            self._frame = 0
            if opcode != _CONTINUATION:
                self._message = 0


def _head_size(second: int) -> int:
    """A frame header's length from its second octet: 2, the extended length, the mask key."""
    short = second & 0x7F
    extended = 2 if short == 126 else 8 if short == 127 else 0
    return 2 + extended + (4 if second & 0x80 else 0)


def end_of_head(seen: bytes) -> int | None:
    """Where the opening handshake's request head ends in ``seen`` (what follows it is frames)."""
    match = _BLANK_LINE.search(seen)
    return match.end() if match is not None else None
