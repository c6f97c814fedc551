"""The supervisor <-> worker control channel: length-prefixed JSON messages over a Unix socketpair.

Messages are small and rare (start, reload prepare/commit/abort, health transitions), so JSON keeps them
readable in a debugger; a 4-byte big-endian length prefix frames them on the stream socket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections.abc import Callable
from typing import Any, cast

log = logging.getLogger("lbd.control")

Message = dict[str, Any]
_HEADER = struct.Struct("!I")
MAX_MESSAGE = 64 * 1024 * 1024  # a config text is far smaller; anything larger is a bug


def encode(message: Message) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return _HEADER.pack(len(body)) + body


class MessageDecoder:
    """Incremental decoder: feed bytes, get the complete messages they finish."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        messages: list[Message] = []
        while len(self._buffer) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buffer)
            if length > MAX_MESSAGE:
                raise ValueError(f"control message of {length} bytes exceeds {MAX_MESSAGE}")
            end = _HEADER.size + length
            if len(self._buffer) < end:
                break
            messages.append(cast(Message, json.loads(self._buffer[_HEADER.size : end])))
            del self._buffer[:end]
        return messages


class ControlProtocol(asyncio.Protocol):
    """Delivers each decoded message to ``on_message``; ``on_close`` runs once when the peer goes away."""

    def __init__(self, on_message: Callable[[Message], None], on_close: Callable[[], None]) -> None:
        self._on_message = on_message
        self._on_close = on_close
        self._decoder = MessageDecoder()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        for message in self._decoder.feed(data):
            try:
                self._on_message(message)
            except Exception:
                # One message that fails must not close the channel: for a worker, a lost control
                # channel means "the supervisor is gone, stop".
                log.exception("control message %r failed", message.get("op"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._on_close()

    def send(self, message: Message) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode(message))
