"""lbd's HTTP/2 server codec (lbd/http/h2codec.py) without sockets: RFC 7541 Appendix C's HPACK examples,
and frames written by hyperframe/hpack (a real client's encoder) read back, and lbd's frames read by them."""

from __future__ import annotations

import random
from contextlib import suppress
from typing import Any

import pytest
from hpack import Decoder, Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from lbd.http import h2codec
from lbd.http.h2codec import ConnectionError_, H2ServerConnection, HpackDecoder, HpackError, StreamClosed


def unhex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# -- RFC 7541 Appendix C ------------------------------------------------------------------------------------

REQUEST_1 = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":path", b"/"),
    (b":authority", b"www.example.com"),
]
REQUEST_2 = [*REQUEST_1, (b"cache-control", b"no-cache")]
REQUEST_3 = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":path", b"/index.html"),
    (b":authority", b"www.example.com"),
    (b"custom-key", b"custom-value"),
]
REQUESTS = [(REQUEST_1, 57), (REQUEST_2, 110), (REQUEST_3, 164)]
DATE_1 = b"Mon, 21 Oct 2013 20:13:21 GMT"
RESPONSE_1 = [
    (b":status", b"302"),
    (b"cache-control", b"private"),
    (b"date", DATE_1),
    (b"location", b"https://www.example.com"),
]
RESPONSE_2 = [(b":status", b"307"), *RESPONSE_1[1:]]
RESPONSE_3 = [
    (b":status", b"200"),
    (b"cache-control", b"private"),
    (b"date", b"Mon, 21 Oct 2013 20:13:22 GMT"),
    (b"location", b"https://www.example.com"),
    (b"content-encoding", b"gzip"),
    (b"set-cookie", b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"),
]
RESPONSES = [(RESPONSE_1, 222), (RESPONSE_2, 222), (RESPONSE_3, 215)]

APPENDIX_C = {
    "C.3 requests": (
        4096,
        REQUESTS,
        [
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ],
    ),
    "C.4 requests, Huffman": (
        4096,
        REQUESTS,
        [
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ],
    ),
    "C.5 responses": (
        256,
        RESPONSES,
        [
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a"
            " 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "4803 3330 37c1 c0bf",
            "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04"
            " 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49"
            " 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
        ],
    ),
    "C.6 responses, Huffman": (
        256,
        RESPONSES,
        [
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e"
            " 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            "4883 640e ffc1 c0bf",
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7"
            " 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed"
            " 4ee5 b106 3d50 07",
        ],
    ),
}


@pytest.mark.parametrize("example", list(APPENDIX_C))
def test_appendix_c_header_block_sequences(example: str) -> None:
    table_size, expected, blocks = APPENDIX_C[example]
    decoder = HpackDecoder(65536, table_size)
    for block, (fields, size) in zip(blocks, expected, strict=True):
        assert decoder.decode(unhex(block)) == fields
        assert decoder.table_size == size  # the dynamic table evolves as the RFC shows


@pytest.mark.parametrize(
    ("block", "field", "table_size"),
    [
        (
            "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
            (b"custom-key", b"custom-header"),
            55,
        ),  # C.2.1 literal with indexing
        ("040c 2f73 616d 706c 652f 7061 7468", (b":path", b"/sample/path"), 0),  # C.2.2 without indexing
        ("1008 7061 7373 776f 7264 0673 6563 7265 74", (b"password", b"secret"), 0),  # C.2.3 never indexed
        ("82", (b":method", b"GET"), 0),  # C.2.4 indexed
    ],
)
def test_appendix_c2_field_representations(block: str, field: tuple[bytes, bytes], table_size: int) -> None:
    decoder = HpackDecoder(65536)
    assert decoder.decode(unhex(block)) == [field]
    assert decoder.table_size == table_size


def test_integer_and_huffman_errors_are_compression_errors() -> None:
    for bad in (
        b"\x80",  # index 0
        b"\xff\x80\x80\x80\x80\x80\x01",  # integer far too large
        b"\x41\x85\xff",  # string longer than the block
        b"\xc0",  # beyond the (empty) dynamic table
        b"\x82\x3f\xe1\x1f",  # table size update after a field
        b"\x3f\xe2\x1f",  # table size update over the limit (4097)
        b"\x00\x81\xff\x00",  # Huffman string with 8 bits of padding (EOS prefix too long)
    ):
        with pytest.raises(HpackError) as raised:
            HpackDecoder(65536).decode(bad)
        assert raised.value.error_code == h2codec.COMPRESSION_ERROR, bad


def test_huffman_decoding_of_every_symbol_matches_hpack() -> None:
    encoder = Encoder()
    text = bytes(range(256)) * 3
    block = encoder.encode([(b"x-all", text)], huffman=True)
    assert HpackDecoder(65536).decode(block) == [(b"x-all", text)]


def test_header_list_size_is_checked_while_decoding() -> None:
    encoder = Encoder()
    block = encoder.encode([(b"x-bomb", b"b" * 4000)]) + b"\xbe" * 30  # one entry, then 30 references
    with pytest.raises(HpackError) as raised:
        HpackDecoder(65536).decode(block)
    assert raised.value.error_code == h2codec.ENHANCE_YOUR_CALM


def test_encoder_output_is_read_by_hpack() -> None:
    fields = [
        (b":status", b"200"),  # fully in the static table
        (b"content-type", b"text/plain"),  # static name
        (b"x-custom", b"v" * 200),  # new name, value length over a 7-bit prefix
        (b"content-length", b"5"),
    ]
    encoder = h2codec.HpackEncoder()
    decoder = Decoder()
    for _ in range(2):  # the second time from the encoder's cache
        assert decoder.decode(encoder.encode(fields), raw=True) == fields
    assert len(decoder.header_table.dynamic_entries) == 0  # nothing indexed


# -- frames -------------------------------------------------------------------------------------------------


def frames(data: bytes) -> list[Any]:
    out = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        out.append(frame)
        data = data[9 + length :]
    return out


class Peer:
    """A client: hpack's encoder and hyperframe's frames, fed to a server codec."""

    def __init__(self, **kwargs: int) -> None:
        self.conn = H2ServerConnection(**kwargs)
        self.conn.initiate_connection()
        self.encoder = Encoder()
        self.greeting = frames(self.conn.data_to_send())

    def send(self, *frames: Frame, preface: bool = False) -> list[h2codec.Event]:
        data = b"".join(f.serialize() for f in frames)
        return self.conn.receive_data((h2codec.PREFACE if preface else b"") + data)

    def start(self, settings: dict[int, int] | None = None) -> None:
        events = self.send(SettingsFrame(0, settings=settings or {}), preface=True)
        assert [e.kind for e in events] == [h2codec.SETTINGS_CHANGED]

    def block(self, fields: list[tuple[str, str]]) -> bytes:
        return self.encoder.encode(fields)

    def out(self) -> list[Any]:
        return frames(self.conn.data_to_send())


GET = [(":method", "GET"), (":scheme", "https"), (":path", "/x"), (":authority", "example.com")]


def test_server_preface_settings_and_connection_window() -> None:
    peer = Peer(max_concurrent_streams=128, stream_window=262144, connection_window=4 << 20)
    settings, update = peer.greeting
    assert isinstance(settings, SettingsFrame) and isinstance(update, WindowUpdateFrame)
    assert settings.settings[SettingsFrame.MAX_CONCURRENT_STREAMS] == 128
    assert settings.settings[SettingsFrame.INITIAL_WINDOW_SIZE] == 262144
    assert update.window_increment == (4 << 20) - 65535


def test_request_data_trailers_and_response_round_trip() -> None:
    peer = Peer()
    peer.start()
    assert isinstance(peer.out()[0], SettingsFrame)  # the ACK
    post = [(":method", "POST"), *GET[1:], ("content-length", "6")]
    events = peer.send(
        HeadersFrame(1, peer.block(post), flags=["END_HEADERS"]),
        DataFrame(1, b"abc", flags=["PADDED"], pad_length=4),
        DataFrame(1, b"def"),
        HeadersFrame(1, peer.block([("x-trailer", "t")]), flags=["END_HEADERS", "END_STREAM"]),
    )
    request, first, second, trailers = events
    assert (request.kind, request.stream_id, request.end_stream) == (h2codec.REQUEST, 1, False)
    assert request.headers == [(n.encode(), v.encode()) for n, v in post]
    assert (first.data, first.flow_length, second.data, second.flow_length) == (b"abc", 8, b"def", 3)
    assert trailers.kind == h2codec.TRAILERS and trailers.headers == [(b"x-trailer", b"t")]
    conn = peer.conn
    conn.send_headers(1, [(b":status", b"200"), (b"content-type", b"text/plain")])
    assert conn.local_flow_control_window(1) == 65535
    conn.send_data(1, b"hello")
    conn.end_stream(1)
    headers, data, end = peer.out()
    assert isinstance(headers, HeadersFrame) and "END_HEADERS" in headers.flags
    assert Decoder().decode(headers.data, raw=True) == [
        (b":status", b"200"),
        (b"content-type", b"text/plain"),
    ]
    assert isinstance(data, DataFrame) and data.data == b"hello"
    assert isinstance(end, DataFrame) and "END_STREAM" in end.flags
    assert 1 not in conn.streams
    with pytest.raises(StreamClosed):
        conn.send_data(1, b"late")


def test_header_block_over_continuation_frames_and_large_response_headers() -> None:
    peer = Peer()
    peer.start()
    block = peer.block([*GET, ("x-long", "z" * 40000)])
    pieces = [block[i : i + 16384] for i in range(0, len(block), 16384)]
    events = peer.send(
        HeadersFrame(1, pieces[0], flags=["END_STREAM"]),
        *(ContinuationFrame(1, p) for p in pieces[1:-1]),
        ContinuationFrame(1, pieces[-1], flags=["END_HEADERS"]),
    )
    assert events[0].headers[-1] == (b"x-long", b"z" * 40000) and events[0].end_stream
    peer.out()
    peer.conn.send_headers(1, [(b":status", b"200"), (b"x-big", b"q" * 40000)], end_stream=True)
    out = peer.out()
    assert [type(f) for f in out] == [HeadersFrame, ContinuationFrame, ContinuationFrame]
    assert "END_HEADERS" in out[-1].flags and "END_STREAM" in out[0].flags
    assert list(Decoder().decode(b"".join(f.data for f in out), raw=True))[1] == (b"x-big", b"q" * 40000)


def test_flow_control_both_ways() -> None:
    peer = Peer(stream_window=1000, connection_window=100_000)
    peer.start({SettingsFrame.INITIAL_WINDOW_SIZE: 10})
    peer.out()
    peer.send(HeadersFrame(1, peer.block(GET), flags=["END_HEADERS"]))
    conn = peer.conn
    conn.send_headers(1, [(b":status", b"200")])
    assert conn.local_flow_control_window(1) == 10  # the client's initial window
    conn.send_data(1, b"x" * 10)
    assert conn.local_flow_control_window(1) == 0
    with pytest.raises(ValueError):
        conn.send_data(1, b"y")
    events = peer.send(WindowUpdateFrame(1, window_increment=5))
    assert [(e.kind, e.stream_id) for e in events] == [(h2codec.WINDOW_UPDATED, 1)]
    assert conn.local_flow_control_window(1) == 5
    events = peer.send(SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 20}))
    assert events[0].window_changed and conn.local_flow_control_window(1) == 15  # 6.9.2
    peer.out()
    # Inbound: a WINDOW_UPDATE once half a window is consumed.
    events = peer.send(DataFrame(1, b"d" * 600))
    conn.acknowledge_received_data(events[0].flow_length, 1)
    (update,) = peer.out()
    assert (update.stream_id, update.window_increment) == (1, 600)
    with pytest.raises(ConnectionError_) as raised:
        peer.send(DataFrame(1, b"d" * 1001))  # over the stream window
    assert raised.value.error_code == h2codec.FLOW_CONTROL_ERROR
    assert isinstance(peer.out()[-1], GoAwayFrame)


def test_ping_priority_reset_and_goaway() -> None:
    peer = Peer()
    peer.start()
    peer.out()
    events = peer.send(PingFrame(0, opaque_data=b"12345678"), PriorityFrame(3, depends_on=1))
    assert [e.kind for e in events] == [h2codec.PING_RECEIVED, h2codec.PRIORITY_RECEIVED]
    (pong,) = peer.out()
    assert isinstance(pong, PingFrame) and "ACK" in pong.flags and pong.opaque_data == b"12345678"
    events = peer.send(HeadersFrame(1, peer.block(GET), flags=["END_HEADERS"]), RstStreamFrame(1, 8))
    assert [(e.kind, e.remote_reset, e.error_code) for e in events][1] == (h2codec.RESET, True, 8)
    assert not peer.conn.streams
    assert not peer.send(DataFrame(1, b"late"))  # after the peer's reset: RST_STREAM STREAM_CLOSED
    assert [(type(f), f.error_code) for f in peer.out()] == [(RstStreamFrame, h2codec.STREAM_CLOSED)]
    events = peer.send(GoAwayFrame(0, last_stream_id=0, error_code=0))
    assert events[0].kind == h2codec.TERMINATED and peer.conn.closed


def test_smaller_peer_table_is_announced_and_unknown_frames_are_ignored() -> None:
    peer = Peer()
    peer.start({SettingsFrame.HEADER_TABLE_SIZE: 0})
    unknown = b"\x00\x00\x03\xfa\x00\x00\x00\x00\x00abc"  # an extension frame type (RFC 9113 4.1)
    events = peer.conn.receive_data(
        unknown + HeadersFrame(1, peer.block(GET), flags=["END_HEADERS", "END_STREAM"]).serialize()
    )
    assert [e.kind for e in events] == [h2codec.REQUEST]
    peer.out()
    peer.conn.send_headers(1, [(b":status", b"200")], end_stream=True)
    (headers,) = peer.out()
    assert headers.data[:1] == b"\x20"  # dynamic table size update to 0 first (RFC 7541 6.3)
    decoder = Decoder()
    decoder.max_allowed_table_size = 0
    assert decoder.decode(headers.data, raw=True) == [(b":status", b"200")]


def test_frames_after_a_local_reset_are_ignored() -> None:
    peer = Peer()
    peer.start()
    peer.send(HeadersFrame(1, peer.block(GET), flags=["END_HEADERS"]))
    peer.conn.reset_stream(1, h2codec.NO_ERROR)
    peer.out()
    events = peer.send(
        DataFrame(1, b"body"),
        HeadersFrame(1, peer.block([("x-t", "1")]), flags=["END_HEADERS", "END_STREAM"]),
    )
    assert not events and not peer.out()
    # The HPACK context stayed in step: the next request decodes.
    assert peer.send(HeadersFrame(3, peer.block(GET), flags=["END_HEADERS", "END_STREAM"]))[0].stream_id == 3


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (DataFrame(1, b"x"), h2codec.PROTOCOL_ERROR),  # on an idle stream
        (HeadersFrame(2, b"\x82", flags=["END_HEADERS"]), h2codec.PROTOCOL_ERROR),  # even stream id
        (ContinuationFrame(1, b"\x82"), h2codec.PROTOCOL_ERROR),  # no HEADERS before it
        (RstStreamFrame(5, 0), h2codec.PROTOCOL_ERROR),  # on an idle stream
        (HeadersFrame(1, b"\x82", depends_on=1, flags=["END_HEADERS", "PRIORITY"]), h2codec.PROTOCOL_ERROR),
        (PushPromiseFrame(1, promised_stream_id=2, data=b"\x82"), h2codec.PROTOCOL_ERROR),
        (WindowUpdateFrame(0, window_increment=2**31 - 1), h2codec.FLOW_CONTROL_ERROR),
        (WindowUpdateFrame(0, window_increment=0), h2codec.PROTOCOL_ERROR),
        (SettingsFrame(0, settings={SettingsFrame.MAX_FRAME_SIZE: 100}), h2codec.PROTOCOL_ERROR),
        (SettingsFrame(0, settings={SettingsFrame.ENABLE_PUSH: 2}), h2codec.PROTOCOL_ERROR),
        (SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 2**31}), h2codec.FLOW_CONTROL_ERROR),
    ],
)
def test_connection_errors(frame: Frame, code: int) -> None:
    peer = Peer()
    peer.start()
    peer.out()
    with pytest.raises(ConnectionError_) as raised:
        peer.send(frame)
    assert raised.value.error_code == code
    goaway = peer.out()[-1]
    assert isinstance(goaway, GoAwayFrame) and goaway.error_code == code
    assert not peer.send(PingFrame(0, opaque_data=b"ignored!"))  # nothing is read after GOAWAY


def test_oversized_frame_and_bad_preface() -> None:
    peer = Peer()
    with pytest.raises(ConnectionError_):
        peer.conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    peer = Peer()
    peer.start()
    with pytest.raises(ConnectionError_) as raised:
        peer.conn.receive_data(b"\x00\x40\x01\x00\x00\x00\x00\x00\x01")  # 16385 bytes announced
    assert raised.value.error_code == h2codec.FRAME_SIZE_ERROR


def test_frames_split_across_reads() -> None:
    peer = Peer()
    data = h2codec.PREFACE + SettingsFrame(0).serialize()
    data += HeadersFrame(1, peer.block(GET), flags=["END_HEADERS", "END_STREAM"]).serialize()
    events = [e for i in range(len(data)) for e in peer.conn.receive_data(data[i : i + 1])]
    assert [e.kind for e in events] == [h2codec.SETTINGS_CHANGED, h2codec.REQUEST]


@pytest.mark.parametrize(
    "fields",
    [
        [(":method", "GET"), (":scheme", "http"), (":authority", "x")],
        [*GET, (":bogus", "1")],
        [(":method", "GET"), ("x-a", "1"), (":scheme", "http"), (":path", "/")],
        [*GET, ("connection", "keep-alive")],
        [*GET, ("te", "gzip")],
        [*GET, ("X-Upper", "1")],
        [*GET, ("x-bad", " padded")],
        [*GET, ("host", "other.example")],
        [*GET, (":method", "POST")],
    ],
)
def test_malformed_requests_are_protocol_errors(fields: list[tuple[str, str]]) -> None:
    peer = Peer()
    peer.start()
    with pytest.raises(ConnectionError_) as raised:
        peer.send(HeadersFrame(1, peer.block(fields), flags=["END_HEADERS", "END_STREAM"]))
    assert raised.value.error_code == h2codec.PROTOCOL_ERROR


def test_content_length_mismatch_is_a_stream_error() -> None:
    peer = Peer()
    peer.start()
    peer.out()
    post = [(":method", "POST"), *GET[1:], ("content-length", "2")]
    events = peer.send(
        HeadersFrame(1, peer.block(post), flags=["END_HEADERS"]), DataFrame(1, b"abc", flags=["END_STREAM"])
    )
    assert [(e.kind, e.remote_reset) for e in events] == [(h2codec.REQUEST, True), (h2codec.RESET, False)]
    (reset,) = [f for f in peer.out() if isinstance(f, RstStreamFrame)]
    assert reset.error_code == h2codec.PROTOCOL_ERROR


def test_random_header_lists_from_hpack_decode_the_same() -> None:
    """hpack's encoder (dynamic table, Huffman, table size changes) against lbd's decoder, block after
    block on one connection's context."""
    rnd = random.Random(7)
    encoder = Encoder()
    decoder = HpackDecoder(1 << 20)
    for _ in range(200):
        fields = [
            (
                bytes(rnd.choice(b"abcdefgh-") for _ in range(rnd.randint(1, 12))),
                rnd.randbytes(rnd.randint(0, 60)),
            )
            for _ in range(rnd.randint(1, 8))
        ]
        fields += [(b":path", b"/x"), (b"user-agent", b"curl")]
        if rnd.random() < 0.1:
            encoder.header_table_size = rnd.choice([0, 100, 4096])
        assert decoder.decode(encoder.encode(fields, huffman=rnd.random() < 0.7)) == fields


def test_random_bytes_are_compression_errors_or_fields() -> None:
    rnd = random.Random(3)
    for _ in range(5000):
        with suppress(HpackError):  # anything else fails the test
            HpackDecoder(65536).decode(rnd.randbytes(rnd.randint(0, 40)))
