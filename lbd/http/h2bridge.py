"""The pure half of HTTP/2 towards targets (lbd/http/h2upstream.py does the I/O): HTTP/1.1 messages of the
data path as HTTP/2 fields and back, and which of a target's h2 connections takes a new stream.

The exchange (lbd/http/exchange.py) speaks HTTP/1.1 to every target connection; for HTTP2 and GRPC target
groups that connection is an HTTP/2 stream, so its request head becomes an HTTP/2 field block (RFC 9113
8.3.1) and the stream's response fields become an HTTP/1.1 head again.
"""

from __future__ import annotations

from collections.abc import Sequence

# RFC 9113 8.2.2: connection-specific fields are not sent in HTTP/2 (TE only as "trailers").
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"host"}
)
# Response fields the HTTP/1.1 head gets from its own framing instead.
_RESPONSE_DROPPED = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length"})

MAX_CONNECTIONS_PER_TARGET = 4  # a small number: h2 multiplexes, connections cost handshakes and memory


def request_fields(
    method: bytes, url: bytes, scheme: bytes, headers: Sequence[tuple[bytes, bytes]], grpc: bool = False
) -> list[tuple[bytes, bytes]]:
    """An HTTP/1.1 request head as an HTTP/2 field block: Host becomes :authority, names are lowercased
    (RFC 9113 8.2.1), connection-specific fields go, and TE stays only as "trailers"."""
    authority = b""
    fields: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"host":
            authority = value
        elif lowered == b"te":
            if b"trailers" in value.lower():
                fields.append((b"te", b"trailers"))
        elif lowered not in _HOP_BY_HOP:
            fields.append((lowered, value))
    if grpc and (b"te", b"trailers") not in fields:
        # The HTTP/1.1 hop dropped TE; gRPC requires "te: trailers" (gRPC over HTTP/2, "Requests").
        fields.append((b"te", b"trailers"))
    pseudo = [(b":method", method), (b":scheme", scheme), (b":authority", authority), (b":path", url)]
    if not authority:
        del pseudo[2]
    return pseudo + fields


def response_head(fields: Sequence[tuple[bytes, bytes]], bodiless: bool, grpc: bool) -> tuple[bytes, bool]:
    """An HTTP/2 response field block as an HTTP/1.1 head, and whether its body is chunked: it is
    unless its length is known and no trailers can follow it; gRPC responses always end in trailers."""
    status = 0
    length = b""
    lines: list[bytes] = []
    for name, value in fields:
        if name == b":status":
            status = int(value)
        elif name[:1] == b":":
            continue
        elif name == b"content-length":
            length = value
        elif name not in _RESPONSE_DROPPED:
            lines.append(b"%b: %b\r\n" % (name, value))
    chunked = False
    if bodiless:
        framing = b"content-length: %b\r\n" % (length or b"0") if status not in (204, 304) else b""
    elif length and not grpc:
        framing = b"content-length: %b\r\n" % length
    else:
        chunked = True
        framing = b"transfer-encoding: chunked\r\n"
    return b"HTTP/1.1 %d \r\n%b%b\r\n" % (status, b"".join(lines), framing), chunked


def place(free: Sequence[int], connecting: int) -> int:
    """Which connection takes a new stream: the index of the one with the most free stream slots (streams
    spread over the few connections), -1 to open another (all are full, none is on its way, and fewer
    than the maximum are open), -2 to wait for a slot."""
    best = -1
    most = 0
    for index, slots in enumerate(free):
        if slots > most:
            best, most = index, slots
    if best >= 0:
        return best
    if connecting == 0 and len(free) < MAX_CONNECTIONS_PER_TARGET:
        return -1
    return -2
