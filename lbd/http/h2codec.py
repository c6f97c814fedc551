"""lbd's own HTTP/2 server-side codec: frames, HPACK and stream state for downstream connections.

The ``h2`` library (pure Python) was half of a worker's CPU per HTTP/2 request; this module does the
same job for the server side of a connection, compiled (lbd/build.py COMPILED, h2codec.pxd), with an
interface close to ``h2.connection.H2Connection`` (``receive_data`` returns events; ``send_headers``,
``send_data``, ``reset_stream``, ``acknowledge_received_data``, ``data_to_send``). lbd/http/h2front.py
drives it; the upstream side (lbd/http/h2upstream.py) keeps using ``h2``.

What it implements:

- frames (RFC 9113 section 4 and 6): DATA, HEADERS + CONTINUATION, PRIORITY (read, counted, ignored: RFC
  9113 5.3.2 deprecates it), RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE; unknown types are ignored
  (4.1) and PUSH_PROMISE from a client is a PROTOCOL_ERROR (8.4);
- HPACK (RFC 7541): the static and dynamic tables, Huffman decoding (Appendix B, as a 4-bit state machine);
  the encoder sends static-table indexes and literals without indexing (6.2.2), so it keeps no state;
- stream states (RFC 9113 5.1) and flow-control windows both ways (5.2, 6.9);
- request field validation as ``h2`` does it (RFC 9113 8.2 and 8.3): lowercase names, no illegal
  characters, no connection-specific fields, pseudo-header rules, :authority/Host agreement;
- limits: header lists decoded to at most ``max_header_list_size`` (checked while decoding, the
  HPACK-bomb defence), at most ``MAX_CONTINUATIONS`` CONTINUATION frames and ``MAX_BLOCK`` bytes per block.

Connection errors raise ``ConnectionError_`` after the GOAWAY is queued (send ``data_to_send()``, then
close); stream errors reset the stream and report it as a ``RESET`` event with ``remote_reset`` false.
"""

from __future__ import annotations

import struct

from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 6) and flags.
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9
FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20

# Error codes (RFC 9113 7).
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB

# Settings (RFC 9113 6.5.2).
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6

MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65535
DEFAULT_FRAME_SIZE = 16384
HEADER_TABLE_SIZE = 4096  # what lbd's decoder allows (the RFC 7541 default: not advertised)
MAX_CONTINUATIONS = 64  # per header block, as h2 allows (the CONTINUATION-flood defence)
MAX_CLOSED = 4096  # closed streams remembered, to tell a late frame from one on a stream never opened

# Event kinds: what ``receive_data`` reports.
REQUEST = 1  # a request's header block: headers, end_stream
DATA_RECEIVED = 2  # data, flow_length, end_stream
TRAILERS = 3  # a request's trailers (the request ends with them)
RESET = 4  # the stream is gone: remote_reset says who reset it, error_code why
WINDOW_UPDATED = 5  # stream_id 0 for the connection
PING_RECEIVED = 6  # answered already
SETTINGS_CHANGED = 7  # window_changed: the peer changed SETTINGS_INITIAL_WINDOW_SIZE
PRIORITY_RECEIVED = 8
TERMINATED = 9  # the peer sent GOAWAY: error_code

# Why a closed stream closed: frames after a local reset are dropped, others get STREAM_CLOSED.
_ENDED = 0
_RESET_HERE = 1
_RESET_THERE = 2

_FRAME_HEAD = struct.Struct(">BHBBL")
_SETTING = struct.Struct(">HL")
_U32 = struct.Struct(">L")

# RFC 9113 8.2.2: connection-specific fields are malformed in HTTP/2 requests.
_CONNECTION_FIELDS = frozenset(
    {b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"}
)
_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path", b":protocol"})

# -- HPACK tables ---------------------------------------------------------------------------------------

STATIC_TABLE: tuple[tuple[bytes, bytes], ...] = tuple(HeaderTable.STATIC_TABLE)  # RFC 7541 Appendix A
_STATIC_FIELD: dict[tuple[bytes, bytes], int] = {}
_STATIC_NAME: dict[bytes, int] = {}
for _index, _entry in enumerate(STATIC_TABLE, 1):
    _STATIC_FIELD.setdefault(_entry, _index)
    _STATIC_NAME.setdefault(_entry[0], _index)


def _huffman_tables() -> tuple[bytes, bytes, bytes, bytes]:
    """The Huffman code (RFC 7541 Appendix B) as a machine that reads 4 bits at a time: for each of the
    256 inner nodes of the code's tree and each nibble, the node it ends at, the symbol it completes (a
    code is at least 5 bits long, so at most one per nibble) and whether that was EOS (a decoding error,
    5.2); and per node whether the string may end there (padding: at most 7 one bits, the EOS prefix)."""
    children: list[list[int]] = [[-1, -1]]  # inner nodes; a leaf is -(symbol + 1)
    for symbol in range(257):
        code, length = REQUEST_CODES[symbol], REQUEST_CODES_LENGTH[symbol]
        node = 0
        for shift in range(length - 1, -1, -1):
            bit = (code >> shift) & 1
            if shift == 0:
                children[node][bit] = -(symbol + 1)
            else:
                if children[node][bit] < 0:
                    children.append([-1, -1])
                    children[node][bit] = len(children) - 1
                node = children[node][bit]
    nodes = len(children)
    next_node = bytearray(nodes * 16)
    symbols = bytearray(nodes * 16)
    flags = bytearray(nodes * 16)  # 1: emits symbols[...]; 2: EOS, an error
    for node in range(nodes):
        for nibble in range(16):
            at = node
            for shift in (3, 2, 1, 0):
                child = children[at][(nibble >> shift) & 1]
                if child < 0:
                    symbol = -child - 1
                    if symbol == 256:
                        flags[node * 16 + nibble] = 2
                    else:
                        flags[node * 16 + nibble] |= 1
                        symbols[node * 16 + nibble] = symbol
                    at = 0
                else:
                    at = child
            next_node[node * 16 + nibble] = at
    accepting = bytearray(nodes)
    at = 0
    for _ in range(8):  # the root and up to 7 one bits below it
        accepting[at] = 1
        at = children[at][1]
    return bytes(next_node), bytes(symbols), bytes(flags), bytes(accepting)


_HUFFMAN_NEXT, _HUFFMAN_SYMBOL, _HUFFMAN_FLAGS, _HUFFMAN_ACCEPT = _huffman_tables()


class ConnectionError_(Exception):
    """A connection error (RFC 9113 5.4.1): GOAWAY with ``error_code`` is queued already."""

    def __init__(self, error_code: int, reason: str) -> None:
        super().__init__(reason)
        self.error_code = error_code


class StreamClosed(KeyError):
    """Sending on a stream that is closed (or closed for sending): a KeyError, as for a stream not found."""


class HpackError(Exception):
    def __init__(self, error_code: int, reason: str) -> None:
        super().__init__(reason)
        self.error_code = error_code


def huffman_decode(data: bytes) -> bytes:
    """RFC 7541 5.2 and Appendix B."""
    # Compiled, these are C pointers to unsigned bytes (h2codec.pxd); interpreted, the same bytes.
    p = data
    nxt = _HUFFMAN_NEXT
    sym = _HUFFMAN_SYMBOL
    flags = _HUFFMAN_FLAGS
    acc = _HUFFMAN_ACCEPT
    out = bytearray()
    state = 0
    accept = 1
    for i in range(len(data)):
        octet = p[i]
        at = state * 16 + (octet >> 4)
        flag = flags[at]
        if flag & 2:
            raise HpackError(COMPRESSION_ERROR, "EOS in a Huffman-coded string")
        if flag:
            out.append(sym[at])
        state = nxt[at]
        at = state * 16 + (octet & 0xF)
        flag = flags[at]
        if flag & 2:
            raise HpackError(COMPRESSION_ERROR, "EOS in a Huffman-coded string")
        if flag:
            out.append(sym[at])
        state = nxt[at]
        accept = acc[state]
    if not accept:
        raise HpackError(COMPRESSION_ERROR, "bad Huffman padding")
    return bytes(out)


class HpackDecoder:
    """RFC 7541 section 3 and 6: one connection's decoding context (its dynamic table)."""

    def __init__(self, max_header_list_size: int, max_table_size: int = HEADER_TABLE_SIZE) -> None:
        self.table: list[tuple[bytes, bytes]] = []  # newest last
        self.table_size = 0
        self.max_table_size = max_table_size  # the current limit, set by size updates (6.3)
        self.settings_table_size = max_table_size  # the bound the updates may not exceed
        self.max_header_list_size = max_header_list_size
        self._pos = 0

    def decode(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """A header block's fields; HpackError (COMPRESSION_ERROR, or ENHANCE_YOUR_CALM as soon as the
        list decodes to more than ``max_header_list_size``, 6.5.2's size: name + value + 32 each)."""
        headers: list[tuple[bytes, bytes]] = []
        end = len(data)
        self._pos = 0
        total = 0
        while self._pos < end:
            octet = data[self._pos]
            if octet & 0x80:  # indexed field (6.1)
                index = self._integer(data, end, 7)
                field = self._field(index)
                name = field[0]
                value = field[1]
            elif octet & 0x40:  # literal with incremental indexing (6.2.1)
                index = self._integer(data, end, 6)
                name = self._field(index)[0] if index else self._string(data, end)
                value = self._string(data, end)
                self._add(name, value)
            elif octet & 0x20:  # dynamic table size update (6.3), only before the first field (4.2)
                if headers:
                    raise HpackError(COMPRESSION_ERROR, "table size update after a field")
                size = self._integer(data, end, 5)
                if size > self.settings_table_size:
                    raise HpackError(COMPRESSION_ERROR, "table size update over the limit")
                self.max_table_size = size
                self._evict(0)
                continue
            else:  # literal without indexing (6.2.2) or never indexed (6.2.3)
                index = self._integer(data, end, 4)
                name = self._field(index)[0] if index else self._string(data, end)
                value = self._string(data, end)
            total += len(name) + len(value) + 32
            if total > self.max_header_list_size:
                raise HpackError(ENHANCE_YOUR_CALM, "header list over the size limit")
            headers.append((name, value))
        return headers

    def _integer(self, data: bytes, end: int, prefix: int) -> int:
        """RFC 7541 5.1; at most 2^28 + prefix, far above anything a field may be."""
        mask = (1 << prefix) - 1
        at = self._pos
        value = data[at] & mask
        at += 1
        if value == mask:
            shift = 0
            while True:
                if at >= end:
                    raise HpackError(COMPRESSION_ERROR, "truncated integer")
                octet = data[at]
                at += 1
                value += (octet & 0x7F) << shift
                if not octet & 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise HpackError(COMPRESSION_ERROR, "integer too large")
        self._pos = at
        return value

    def _string(self, data: bytes, end: int) -> bytes:
        if self._pos >= end:
            raise HpackError(COMPRESSION_ERROR, "truncated string")
        huffman = data[self._pos] & 0x80
        length = self._integer(data, end, 7)
        at = self._pos
        if at + length > end:
            raise HpackError(COMPRESSION_ERROR, "truncated string")
        self._pos = at + length
        raw = data[at : at + length]
        return huffman_decode(raw) if huffman else raw

    def _field(self, index: int) -> tuple[bytes, bytes]:
        if index <= 0:
            raise HpackError(COMPRESSION_ERROR, "index 0")
        if index <= 61:
            return STATIC_TABLE[index - 1]
        dynamic = index - 62
        if dynamic >= len(self.table):
            raise HpackError(COMPRESSION_ERROR, "index beyond the dynamic table")
        return self.table[len(self.table) - 1 - dynamic]

    def _add(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + 32
        if size > self.max_table_size:  # 4.4: an entry larger than the table empties it
            self.table.clear()
            self.table_size = 0
            return
        self._evict(size)
        self.table.append((name, value))
        self.table_size += size

    def _evict(self, room: int) -> None:
        table = self.table
        while table and self.table_size + room > self.max_table_size:
            name, value = table.pop(0)
            self.table_size -= len(name) + len(value) + 32


def _encode_integer(out: bytearray, value: int, prefix: int, first: int) -> None:
    mask = (1 << prefix) - 1
    if value < mask:
        out.append(first | value)
        return
    out.append(first | mask)
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _encode_field(name: bytes, value: bytes) -> bytes:
    """One field: a static-table index (6.1) or a literal without indexing (6.2.2), never Huffman."""
    out = bytearray()
    index = _STATIC_FIELD.get((name, value), 0)
    if index:
        out.append(0x80 | index)
        return bytes(out)
    index = _STATIC_NAME.get(name, 0)
    _encode_integer(out, index, 4, 0)
    if not index:
        _encode_integer(out, len(name), 7, 0)
        out += name
    _encode_integer(out, len(value), 7, 0)
    out += value
    return bytes(out)


class HpackEncoder:
    """A stateless encoder (no dynamic table, so the peer's table size does not matter): encoded fields
    are cached, since responses repeat the same fields."""

    def __init__(self) -> None:
        self._cache: dict[tuple[bytes, bytes], bytes] = {}
        self.table_size_update = -1  # the peer lowered SETTINGS_HEADER_TABLE_SIZE: say so (RFC 7541 4.2)

    def encode(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        cache = self._cache
        parts: list[bytes] = []
        if self.table_size_update >= 0:
            update = bytearray()
            _encode_integer(update, self.table_size_update, 5, 0x20)
            parts.append(bytes(update))
            self.table_size_update = -1
        for field in headers:
            encoded = cache.get(field)
            if encoded is None:
                encoded = _encode_field(field[0], field[1])
                if len(cache) < 256:
                    cache[field] = encoded
            parts.append(encoded)
        return b"".join(parts)


# -- request field validation (RFC 9113 8.2, 8.3) -------------------------------------------------------


def _name_ok(name: bytes, pseudo_allowed: bool) -> bool:
    """8.2.1: no characters 0x00-0x20, 0x41-0x5a (uppercase) or 0x7f-0xff; a colon only to begin a
    pseudo-header's name."""
    if not name:
        return False
    start = 1 if name[0] == 0x3A and pseudo_allowed else 0
    for i in range(start, len(name)):
        c = name[i]
        if c <= 0x20 or 0x41 <= c <= 0x5A or c >= 0x7F or c == 0x3A:
            return False
    return True


def _value_ok(value: bytes) -> bool:
    """8.2.1: no NUL, CR or LF; no leading or trailing SP or HTAB."""
    size = len(value)
    if not size:
        return True
    if value[0] in (0x20, 0x09) or value[size - 1] in (0x20, 0x09):
        return False
    return b"\0" not in value and b"\r" not in value and b"\n" not in value


def check_request(headers: list[tuple[bytes, bytes]]) -> str:
    """Why a request header block is malformed, or "" (RFC 9113 8.2.1, 8.2.2, 8.3.1)."""
    seen: set[bytes] = set()
    regular = False
    method = b""
    authority: bytes | None = None
    host: bytes | None = None
    for field in headers:
        name = field[0]
        value = field[1]
        if not _name_ok(name, True):
            return "bad field name"
        if not _value_ok(value):
            return "bad field value"
        if name[0] == 0x3A:
            if regular:
                return "pseudo-header after a regular field"
            if name not in _REQUEST_PSEUDO:
                return "unknown pseudo-header"
            if name in seen:
                return "duplicate pseudo-header"
            seen.add(name)
            if name == b":method":
                method = value
            elif name == b":authority":
                authority = value
            elif name == b":path" and not value:
                return "empty :path"
            continue
        regular = True
        if name in _CONNECTION_FIELDS:
            return "connection-specific field"
        if name == b"te" and value.lower() != b"trailers":
            return "TE other than trailers"
        if name == b"host":
            if host is not None:
                return "more than one Host"
            host = value
    if b":method" not in seen:
        return "no :method"
    if method == b"CONNECT" and b":protocol" not in seen:
        if b":scheme" in seen or b":path" in seen:
            return "CONNECT with :scheme or :path"
    else:
        if b":scheme" not in seen or b":path" not in seen:
            return "no :scheme or :path"
        if b":protocol" in seen and method != b"CONNECT":
            return ":protocol outside CONNECT"
    if authority is None and host is None:
        return "neither :authority nor Host"
    if authority is not None and host is not None and authority != host:
        return ":authority and Host differ"
    return ""


def check_trailers(headers: list[tuple[bytes, bytes]]) -> str:
    for field in headers:
        name = field[0]
        if not _name_ok(name, False):
            return "bad trailer name"  # a pseudo-header among them too (8.1)
        if not _value_ok(field[1]):
            return "bad trailer value"
        if name in _CONNECTION_FIELDS:
            return "connection-specific trailer"
    return ""


def _content_length(headers: list[tuple[bytes, bytes]]) -> int:
    """The declared body length, -1 for none, -2 for a malformed one (8.1.1)."""
    length = -1
    for field in headers:
        if field[0] == b"content-length":
            value = field[1]
            if not value or not value.isdigit() or len(value) > 18:
                return -2
            if length >= 0 and int(value) != length:
                return -2
            length = int(value)
    return length


# -- connection ---------------------------------------------------------------------------------------------


class Event:
    """What the peer did; which attributes mean something depends on ``kind``."""

    def __init__(self, kind: int, stream_id: int) -> None:
        self.kind = kind
        self.stream_id = stream_id
        self.headers: list[tuple[bytes, bytes]] = []
        self.data = b""
        self.flow_length = 0
        self.end_stream = False
        self.remote_reset = True
        self.error_code = 0
        self.window_changed = False


class Stream:
    """One stream's state (RFC 9113 5.1) and windows (6.9)."""

    def __init__(self, stream_id: int, inbound: int, outbound: int) -> None:
        self.stream_id = stream_id
        self.inbound = inbound  # what the peer may still send us
        self.outbound = outbound  # what we may still send
        self.unacked = 0  # received and consumed, not yet given back by WINDOW_UPDATE
        self.remote_open = True
        self.local_open = True
        self.expected = -1  # content-length, if given
        self.received = 0


class H2ServerConnection:
    """The server side of one HTTP/2 connection, without I/O: bytes in, events out, frames queued."""

    def __init__(
        self,
        max_concurrent_streams: int = 128,
        max_header_list_size: int = 65536,
        stream_window: int = DEFAULT_WINDOW,
        connection_window: int = DEFAULT_WINDOW,
    ) -> None:
        self.max_concurrent_streams = max_concurrent_streams
        self.max_header_list_size = max_header_list_size
        self.stream_window = stream_window
        self.connection_window = connection_window
        self.max_outbound_frame_size = DEFAULT_FRAME_SIZE
        self.remote_initial_window = DEFAULT_WINDOW
        self.streams: dict[int, Stream] = {}
        self.highest_stream_id = 0
        self.closed = False
        self._closed_streams: dict[int, int] = {}
        self._decoder = HpackDecoder(max_header_list_size)
        self._encoder = HpackEncoder()
        self._out = bytearray()
        self._buffer = b""
        self._preface = False
        self._settings_seen = False
        self._inbound = DEFAULT_WINDOW  # the connection's receive window
        self._unacked = 0
        self._outbound = DEFAULT_WINDOW  # the connection's send window (only WINDOW_UPDATE moves it)
        self._block = bytearray()
        self._block_stream = 0  # a header block awaiting CONTINUATION frames
        self._block_end_stream = False
        self._block_frames = 0
        self._events: list[Event] = []

    # -- out -------------------------------------------------------------------------------------------

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        size = len(payload)
        self._out += _FRAME_HEAD.pack(size >> 16, size & 0xFFFF, kind, flags, stream_id)
        if size:
            self._out += payload

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def initiate_connection(self) -> None:
        """The server's preface (RFC 9113 3.4): SETTINGS, then the connection window opened up."""
        settings = b"".join(
            _SETTING.pack(code, value)
            for code, value in (
                (SETTINGS_ENABLE_PUSH, 0),  # 8.4: a server's value, if sent, is 0
                (SETTINGS_MAX_CONCURRENT_STREAMS, self.max_concurrent_streams),
                (SETTINGS_INITIAL_WINDOW_SIZE, self.stream_window),
                (SETTINGS_MAX_HEADER_LIST_SIZE, self.max_header_list_size),
            )
        )
        self._frame(SETTINGS, 0, 0, settings)
        if self.connection_window > DEFAULT_WINDOW:
            self._frame(WINDOW_UPDATE, 0, 0, _U32.pack(self.connection_window - DEFAULT_WINDOW))
            self._inbound = self.connection_window

    def send_goaway(self, error_code: int, last_stream_id: int = -1) -> None:
        last = self.highest_stream_id if last_stream_id < 0 else last_stream_id
        self._frame(GOAWAY, 0, 0, _U32.pack(last) + _U32.pack(error_code))

    def close_connection(self, error_code: int = NO_ERROR, last_stream_id: int | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        self.send_goaway(error_code, -1 if last_stream_id is None else last_stream_id)

    def _sendable(self, stream_id: int) -> Stream:
        stream = self.streams.get(stream_id)
        if stream is None or not stream.local_open or self.closed:
            raise StreamClosed(stream_id)
        return stream

    def send_headers(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool = False
    ) -> None:
        stream = self._sendable(stream_id)
        block = self._encoder.encode(headers)
        limit = self.max_outbound_frame_size
        flags = FLAG_END_STREAM if end_stream else 0
        if len(block) <= limit:
            self._frame(HEADERS, flags | FLAG_END_HEADERS, stream_id, block)
        else:
            self._frame(HEADERS, flags, stream_id, block[:limit])
            at = limit
            while at < len(block):
                piece = block[at : at + limit]
                at += limit
                self._frame(CONTINUATION, FLAG_END_HEADERS if at >= len(block) else 0, stream_id, piece)
        if end_stream:
            self._local_end(stream)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        stream = self._sendable(stream_id)
        size = len(data)
        if size > self._outbound or size > stream.outbound or size > self.max_outbound_frame_size:
            raise ValueError("DATA larger than the flow-control window or the frame size")
        self._outbound -= size
        stream.outbound -= size
        self._frame(DATA, FLAG_END_STREAM if end_stream else 0, stream_id, data)
        if end_stream:
            self._local_end(stream)

    def end_stream(self, stream_id: int) -> None:
        self.send_data(stream_id, b"", True)

    def reset_stream(self, stream_id: int, error_code: int = NO_ERROR) -> None:
        """RST_STREAM (6.4) on an open stream; nothing for one already closed."""
        stream = self.streams.get(stream_id)
        if stream is None or self.closed:
            return
        self._frame(RST_STREAM, 0, stream_id, _U32.pack(error_code))
        self._close(stream, _RESET_HERE)

    def local_flow_control_window(self, stream_id: int) -> int:
        """How much DATA may be sent on the stream now (both windows)."""
        stream = self._sendable(stream_id)
        return min(self._outbound, stream.outbound)

    def acknowledge_received_data(self, size: int, stream_id: int) -> None:
        """The application consumed ``size`` flow-controlled bytes: windows reopen by WINDOW_UPDATE once
        half of one is consumed (6.9.1), the stream's only while the peer may still send on it."""
        if size <= 0 or self.closed:
            return
        self._unacked += size
        if self._unacked >= self.connection_window // 2:
            self._frame(WINDOW_UPDATE, 0, 0, _U32.pack(self._unacked))
            self._inbound += self._unacked
            self._unacked = 0
        stream = self.streams.get(stream_id)
        if stream is not None and stream.remote_open:
            stream.unacked += size
            if stream.unacked >= self.stream_window // 2:
                self._frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(stream.unacked))
                stream.inbound += stream.unacked
                stream.unacked = 0

    def _local_end(self, stream: Stream) -> None:
        stream.local_open = False
        if not stream.remote_open:
            self._close(stream, _ENDED)

    def _remote_end(self, stream: Stream) -> None:
        stream.remote_open = False
        if not stream.local_open:
            self._close(stream, _ENDED)

    def _close(self, stream: Stream, how: int) -> None:
        del self.streams[stream.stream_id]
        closed = self._closed_streams
        closed[stream.stream_id] = how
        if len(closed) > MAX_CLOSED:
            del closed[next(iter(closed))]

    # -- in ----------------------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Frames in, events out (all of the read's frames are processed before the caller sees any
        event). Raises ConnectionError_ on a connection error, its GOAWAY queued."""
        events: list[Event] = []
        if self.closed:
            return events
        self._events = events
        try:
            self._receive(data)
        except HpackError as exc:
            self._connection_error(exc.error_code, str(exc))
        return events

    def _connection_error(self, error_code: int, reason: str) -> None:
        self.close_connection(error_code)
        self._buffer = b""
        raise ConnectionError_(error_code, reason)

    def _receive(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        at = 0
        end = len(buffer)
        if not self._preface:
            size = len(PREFACE)
            if end < size:
                if not PREFACE.startswith(buffer):
                    self._connection_error(PROTOCOL_ERROR, "bad connection preface")
                self._buffer = buffer
                return
            if buffer[:size] != PREFACE:
                self._connection_error(PROTOCOL_ERROR, "bad connection preface")
            self._preface = True
            at = size
        while end - at >= 9 and not self.closed:
            length = (buffer[at] << 16) | (buffer[at + 1] << 8) | buffer[at + 2]
            if length > DEFAULT_FRAME_SIZE:  # lbd never raises SETTINGS_MAX_FRAME_SIZE (4.2)
                self._connection_error(FRAME_SIZE_ERROR, "frame over SETTINGS_MAX_FRAME_SIZE")
            if end - at - 9 < length:
                break
            kind = buffer[at + 3]
            flags = buffer[at + 4]
            stream_id = (
                ((buffer[at + 5] & 0x7F) << 24)
                | (buffer[at + 6] << 16)
                | (buffer[at + 7] << 8)
                | buffer[at + 8]
            )
            payload = buffer[at + 9 : at + 9 + length]
            at += 9 + length
            self._dispatch(kind, flags, stream_id, payload)
        self._buffer = buffer[at:] if at < end else b""

    def _dispatch(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._block_stream and (kind != CONTINUATION or stream_id != self._block_stream):
            self._connection_error(PROTOCOL_ERROR, "header block interrupted")  # 6.10
        if not self._settings_seen:
            if kind != SETTINGS or flags & FLAG_ACK:
                self._connection_error(PROTOCOL_ERROR, "the client preface lacks SETTINGS")  # 3.4
            self._settings_seen = True
        if kind == DATA:
            self._data(flags, stream_id, payload)
        elif kind == HEADERS:
            self._headers(flags, stream_id, payload)
        elif kind == CONTINUATION:
            self._continuation(flags, stream_id, payload)
        elif kind == RST_STREAM:
            self._rst_stream(stream_id, payload)
        elif kind == SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == PING:
            self._ping(flags, stream_id, payload)
        elif kind == PRIORITY:
            self._priority(stream_id, payload)
        elif kind == GOAWAY:
            if stream_id:
                self._connection_error(PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                self._connection_error(FRAME_SIZE_ERROR, "short GOAWAY")
            event = Event(TERMINATED, 0)
            event.error_code = _U32.unpack_from(payload, 4)[0]
            self._events.append(event)
            self.closed = True  # nothing more is read; the caller closes
        elif kind == PUSH_PROMISE:
            self._connection_error(PROTOCOL_ERROR, "PUSH_PROMISE from a client")  # 8.4
        # Other types are extensions: ignored (4.1, 5.5).

    def _unpad(self, flags: int, payload: bytes) -> bytes:
        if not flags & FLAG_PADDED:
            return payload
        if not payload or payload[0] >= len(payload):
            self._connection_error(PROTOCOL_ERROR, "padding longer than the frame")  # 6.1, 6.2
        return payload[1 : len(payload) - payload[0]]

    def _stream_error(self, stream: Stream | None, stream_id: int, error_code: int) -> None:
        """RFC 9113 5.4.2: RST_STREAM, and the stream's user is told it is gone."""
        self._frame(RST_STREAM, 0, stream_id, _U32.pack(error_code))
        if stream is not None:
            self._close(stream, _RESET_HERE)
            event = Event(RESET, stream_id)
            event.remote_reset = False
            event.error_code = error_code
            self._events.append(event)

    def _closed_stream(self, stream_id: int) -> int:
        """How a stream that is not open closed: -1 for one never opened (idle, 5.1), -2 for one below
        the last stream id that is not remembered (skipped, so implicitly closed, or long gone)."""
        if stream_id > self.highest_stream_id or not stream_id & 1:
            return -1
        return self._closed_streams.get(stream_id, -2)

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            self._connection_error(PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        if size > self._inbound:
            self._connection_error(FLOW_CONTROL_ERROR, "DATA over the connection window")
        self._inbound -= size
        stream = self.streams.get(stream_id)
        if stream is None or not stream.remote_open:
            how = _ENDED if stream is not None else self._closed_stream(stream_id)
            if how == -1:
                self._connection_error(PROTOCOL_ERROR, "DATA on an idle stream")
            self.acknowledge_received_data(size, 0)  # counted against the connection: given back
            if how != _RESET_HERE:
                self._stream_error(stream, stream_id, STREAM_CLOSED)  # 5.1, half-closed (remote)
            return
        if size > stream.inbound:
            self._connection_error(FLOW_CONTROL_ERROR, "DATA over the stream window")
        stream.inbound -= size
        data = self._unpad(flags, payload)
        end = bool(flags & FLAG_END_STREAM)
        stream.received += len(data)
        if stream.expected >= 0 and (
            stream.received > stream.expected or (end and stream.received != stream.expected)
        ):
            self.acknowledge_received_data(size, 0)
            self._stream_error(stream, stream_id, PROTOCOL_ERROR)  # 8.1.1: content-length mismatch
            return
        event = Event(DATA_RECEIVED, stream_id)
        event.data = data
        event.flow_length = size
        event.end_stream = end
        self._events.append(event)
        if end:
            self._remote_end(stream)

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id or not stream_id & 1:
            self._connection_error(PROTOCOL_ERROR, "HEADERS on stream 0 or a server's stream id")  # 5.1.1
        fragment = self._unpad(flags, payload)
        if flags & FLAG_PRIORITY:
            if len(fragment) < 5:
                self._connection_error(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            if _U32.unpack_from(fragment)[0] & 0x7FFFFFFF == stream_id:
                self._connection_error(PROTOCOL_ERROR, "a stream depending on itself")  # 5.3.1
            fragment = fragment[5:]
        end_stream = bool(flags & FLAG_END_STREAM)
        if flags & FLAG_END_HEADERS:
            self._header_block(stream_id, fragment, end_stream)
        else:
            self._block = bytearray(fragment)
            self._block_stream = stream_id
            self._block_end_stream = end_stream
            self._block_frames = 0

    def _continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not self._block_stream:
            self._connection_error(PROTOCOL_ERROR, "CONTINUATION without HEADERS")  # 6.10
        self._block_frames += 1
        if self._block_frames > MAX_CONTINUATIONS:
            self._connection_error(PROTOCOL_ERROR, "too many CONTINUATION frames")
        self._block += payload
        if len(self._block) > 2 * self.max_header_list_size:
            self._connection_error(ENHANCE_YOUR_CALM, "header block over the size limit")
        if flags & FLAG_END_HEADERS:
            block = bytes(self._block)
            self._block = bytearray()
            self._block_stream = 0
            self._header_block(stream_id, block, self._block_end_stream)

    def _header_block(self, stream_id: int, block: bytes, end_stream: bool) -> None:
        # Decoded whatever the stream's state: the HPACK context must stay in step (RFC 7541 2.2).
        headers = self._decoder.decode(block)
        stream = self.streams.get(stream_id)
        if stream is None:
            how = self._closed_stream(stream_id)
            if how == -1:
                self._new_stream(stream_id, headers, end_stream)
            elif how == -2:
                self._connection_error(PROTOCOL_ERROR, "HEADERS on a stream id below the last one")  # 5.1.1
            elif how != _RESET_HERE:  # after a reset of ours, frames in flight are ignored (5.4.2)
                self._stream_error(None, stream_id, STREAM_CLOSED)  # 5.1, closed
            return
        if not stream.remote_open:
            self._stream_error(stream, stream_id, STREAM_CLOSED)  # 5.1, half-closed (remote)
            return
        if not end_stream:
            self._stream_error(stream, stream_id, PROTOCOL_ERROR)  # 8.1: trailers end the stream
            return
        reason = check_trailers(headers)
        if reason:
            self._connection_error(PROTOCOL_ERROR, reason)
        if stream.expected >= 0 and stream.received != stream.expected:
            self._stream_error(stream, stream_id, PROTOCOL_ERROR)  # 8.1.1
            return
        event = Event(TRAILERS, stream_id)
        event.headers = headers
        event.end_stream = True
        self._events.append(event)
        self._remote_end(stream)

    def _new_stream(self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        self.highest_stream_id = stream_id
        reason = check_request(headers)
        if reason:
            self._connection_error(PROTOCOL_ERROR, reason)  # as h2 treats a malformed request
        stream = Stream(stream_id, self.stream_window, self.remote_initial_window)
        self.streams[stream_id] = stream
        expected = _content_length(headers)
        if expected == -2 or (end_stream and expected > 0):
            self._frame(RST_STREAM, 0, stream_id, _U32.pack(PROTOCOL_ERROR))  # 8.1.1; never reported
            self._close(stream, _RESET_HERE)
            return
        stream.expected = expected
        event = Event(REQUEST, stream_id)
        event.headers = headers
        event.end_stream = end_stream
        self._events.append(event)
        if end_stream:
            stream.remote_open = False

    def _rst_stream(self, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            self._connection_error(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            self._connection_error(FRAME_SIZE_ERROR, "RST_STREAM not 4 octets")  # 6.4
        stream = self.streams.get(stream_id)
        if stream is None:
            if self._closed_stream(stream_id) == -1:
                self._connection_error(PROTOCOL_ERROR, "RST_STREAM on an idle stream")
            return
        self._close(stream, _RESET_THERE)
        event = Event(RESET, stream_id)
        event.error_code = _U32.unpack(payload)[0]
        self._events.append(event)

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            self._connection_error(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & FLAG_ACK:
            if payload:
                self._connection_error(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            self._connection_error(FRAME_SIZE_ERROR, "SETTINGS not a multiple of 6 octets")
        event = Event(SETTINGS_CHANGED, 0)
        for at in range(0, len(payload), 6):
            code, value = _SETTING.unpack_from(payload, at)
            if code == SETTINGS_ENABLE_PUSH:
                if value > 1:
                    self._connection_error(PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1")
            elif code == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    self._connection_error(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE too large")
                delta = value - self.remote_initial_window
                self.remote_initial_window = value
                for stream in self.streams.values():  # 6.9.2: open streams' windows move by the change
                    stream.outbound += delta
                    if stream.outbound > MAX_WINDOW:
                        self._connection_error(FLOW_CONTROL_ERROR, "a stream window over 2^31-1")
                event.window_changed = True
            elif code == SETTINGS_MAX_FRAME_SIZE:
                if value < DEFAULT_FRAME_SIZE or value > 16777215:
                    self._connection_error(PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                self.max_outbound_frame_size = value
            elif code == SETTINGS_HEADER_TABLE_SIZE and value < HEADER_TABLE_SIZE:
                # The encoder keeps no dynamic table, but a decoder whose limit shrank below the size it
                # assumes may expect the update that says so (RFC 7541 4.2).
                self._encoder.table_size_update = value
            # MAX_CONCURRENT_STREAMS and MAX_HEADER_LIST_SIZE are advisory for a server that never pushes.
        self._frame(SETTINGS, FLAG_ACK, 0, b"")
        self._events.append(event)

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            self._connection_error(FRAME_SIZE_ERROR, "WINDOW_UPDATE not 4 octets")  # 6.9
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if not stream_id:
            if not increment:
                self._connection_error(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self._outbound += increment
            if self._outbound > MAX_WINDOW:
                self._connection_error(FLOW_CONTROL_ERROR, "the connection window over 2^31-1")  # 6.9.1
        else:
            stream = self.streams.get(stream_id)
            if stream is None:
                if self._closed_stream(stream_id) == -1:
                    self._connection_error(PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
            elif not increment:
                self._stream_error(stream, stream_id, PROTOCOL_ERROR)
                return
            else:
                stream.outbound += increment
                if stream.outbound > MAX_WINDOW:
                    self._stream_error(stream, stream_id, FLOW_CONTROL_ERROR)
                    return
        self._events.append(Event(WINDOW_UPDATED, stream_id))

    def _ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            self._connection_error(PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            self._connection_error(FRAME_SIZE_ERROR, "PING not 8 octets")  # 6.7
        if not flags & FLAG_ACK:
            self._frame(PING, FLAG_ACK, 0, payload)
            self._events.append(Event(PING_RECEIVED, 0))

    def _priority(self, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            self._connection_error(PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            stream = self.streams.get(stream_id)
            self._stream_error(stream, stream_id, FRAME_SIZE_ERROR)  # 6.3
            return
        if _U32.unpack_from(payload)[0] & 0x7FFFFFFF == stream_id:
            self._stream_error(self.streams.get(stream_id), stream_id, PROTOCOL_ERROR)  # 5.3.1
            return
        self._events.append(Event(PRIORITY_RECEIVED, stream_id))
