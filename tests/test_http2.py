"""HTTP/2 on application listeners through one real ``lbd run``: h2 by ALPN on HTTPS and h2c with prior
knowledge, to real HTTP/1.1 targets (GET, a 50 MiB POST byte for byte, every rule condition, X-Forwarded-*,
cookies); the access log; the defences (rapid reset, CONTINUATION flood, oversized header lists, HPACK
bomb, SETTINGS/PING/empty DATA/WINDOW_UPDATE floods, stream concurrency, idle and header timeouts, a
zero-window reader); RFC 9113 conformance at the frame level; graceful GOAWAY on SIGTERM."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from h2.errors import ErrorCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from lbd.tls.store import CertificateStore, issue
from tests.h2_client import SETTINGS_INITIAL_WINDOW_SIZE, H2Client, RawH2, open_stream
from tests.http_backend import HttpBackend, pattern
from tests.lbdproc import Lbd, free_port, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

ENHANCE_YOUR_CALM = ErrorCodes.ENHANCE_YOUR_CALM
PROTOCOL_ERROR = ErrorCodes.PROTOCOL_ERROR


def fixed(body: str, status: int = 200) -> list[dict[str, Any]]:
    return [
        {"type": "fixed-response", "status_code": status, "content_type": "text/plain", "message_body": body}
    ]


def rule(priority: int, conditions: list[dict[str, Any]], body: str, status: int = 200) -> dict[str, Any]:
    return {"priority": priority, "conditions": conditions, "actions": fixed(body, status)}


def when(field: str, *values: Any, **extra: Any) -> dict[str, Any]:
    return {"field": field, "values": list(values), **extra}


RULES = [
    rule(10, [when("host-header", "*.example.org")], "host"),
    rule(20, [when("path-pattern", "/fixed*")], "fixed"),
    rule(30, [when("http-request-method", "DELETE")], "method", 403),
    rule(40, [when("http-header", "staging", http_header_name="X-Env")], "header"),
    rule(50, [when("query-string", {"key": "version", "value": "v2"})], "query"),
    rule(60, [when("source-ip", "127.0.0.0/8"), when("path-pattern", "/src")], "source"),
]


def listener(protocol: str, port: int, **extra: Any) -> dict[str, Any]:
    return {
        "protocol": protocol,
        "port": port,
        "address": "127.0.0.1",
        "default_actions": [{"type": "forward", "target_group": "web"}],
        "rules": RULES,
        **extra,
    }


@dataclass
class Setup:
    proc: Lbd
    backend: HttpBackend
    https: int  # h2 by ALPN
    h2c: int  # HTTP with prior knowledge
    h1_only: int  # HTTPS with http2_enabled: false
    idle_h2c: int  # HTTP with prior knowledge, idle timeout 2 s
    log_path: Path


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    tmp = tmp_path_factory.mktemp("h2")
    store = CertificateStore(tmp / "store")
    store.put(issue("site", ["localhost"]))
    backend = await HttpBackend("b1").start()
    https, h2c, h1_only, idle_h2c = free_port(), free_port(), free_port(), free_port()
    log_path = tmp / "access.log"
    access = {"path": str(log_path), "format": "json"}
    config: dict[str, Any] = {
        "node": {"zone": "zone-a", "workers": 1, "shutdown_timeout_seconds": 10},
        "certificates": {"store": str(store.directory)},
        "load_balancers": [
            {
                "name": "alb",
                "type": "application",
                "cross_zone": True,
                "idle_timeout_seconds": 60,
                "access_log": access,
                "listeners": [
                    listener("HTTPS", https, certificates=["site"]),
                    listener("HTTP", h2c, h2c=True),
                ],
            },
            {
                "name": "h1",
                "type": "application",
                "cross_zone": True,
                "idle_timeout_seconds": 60,
                "http2_enabled": False,
                "listeners": [listener("HTTPS", h1_only, certificates=["site"])],
            },
            {
                "name": "idle",
                "type": "application",
                "cross_zone": True,
                "idle_timeout_seconds": 2,
                "listeners": [listener("HTTP", idle_h2c, h2c=True)],
            },
        ],
        "target_groups": [
            {
                "name": "web",
                "protocol": "HTTP",
                "health_check": {"enabled": False},
                "targets": [{"id": "127.0.0.1", "port": backend.port, "zone": "zone-a"}],
            }
        ],
    }
    proc = Lbd(tmp, config)
    proc.start()
    try:
        await proc.wait_ready()
        yield Setup(proc, backend, https, h2c, h1_only, idle_h2c, log_path)
    finally:
        proc.stop()
        print(f"--- lbd log ---\n{proc.log[-20000:]}")
        await backend.close()


# -- end to end, real clients ---------------------------------------------------------------------------


async def test_get_over_alpn_h2_reaches_the_http1_target_with_alb_headers(setup: Setup) -> None:
    client = await H2Client.connect(setup.https)
    try:
        before = len(setup.backend.requests)
        response = await client.request(
            "GET",
            "/hello?a=1",
            headers=[("cookie", "a=1"), ("cookie", "b=2"), ("x-forwarded-for", "198.51.100.7")],
            authority="Shop.Test",
        )
        assert response.status == 200
        assert bytes(response.body) == b"hello from b1\n"
        seen = setup.backend.requests[before]
        assert (seen.method, seen.target) == ("GET", "/hello?a=1")
        # :authority becomes Host (lowercased, listener port added: ALB without preserve_host_header).
        assert seen.header("host") == f"shop.test:{setup.https}"
        assert seen.header("cookie") == "a=1; b=2"  # RFC 9113 8.2.3: one field, "; " between crumbs
        assert seen.header("x-forwarded-for") == "198.51.100.7, 127.0.0.1"
        assert seen.header("x-forwarded-proto") == "https"
        assert seen.header("x-forwarded-port") == str(setup.https)
        assert (seen.header("x-amzn-trace-id") or "").startswith("Root=1-")
        # Many streams at once on one connection, each answered on its own stream.
        many = [client.start("GET", f"/bytes/{1000 + i}") for i in range(40)]
        await asyncio.wait_for(asyncio.gather(*(r.done.wait() for r in many)), 20)
        assert [len(r.body) for r in many] == [1000 + i for i in range(40)]
        assert all(bytes(r.body) == pattern(1000 + i) for i, r in enumerate(many))
    finally:
        await client.close()


async def test_fifty_mib_post_is_echoed_byte_for_byte_by_curl(setup: Setup, tmp_path: Path) -> None:
    body = pattern(50 * 1024 * 1024)
    upload, download = tmp_path / "up.bin", tmp_path / "down.bin"
    upload.write_bytes(body)
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-k", "--http2", "-o", str(download), "-w", "%{http_version} %{http_code}",
        "--data-binary", f"@{upload}", "-H", "Content-Type: application/octet-stream",
        f"https://localhost:{setup.https}/echo",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert out == b"2 200", err
    assert hashlib.sha256(download.read_bytes()).digest() == hashlib.sha256(body).digest()


async def test_request_without_content_length_and_with_trailers_is_sent_chunked(setup: Setup) -> None:
    client = await H2Client.connect(setup.h2c, tls=False)
    try:
        stream_id = client.conn.get_next_available_stream_id()
        from tests.h2_client import Response

        response = client.responses[stream_id] = Response()
        fields = [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", "/echo")]
        client.conn.send_headers(stream_id, fields)
        client.conn.send_data(stream_id, b"part one, ")
        client.conn.send_data(stream_id, b"part two")
        client.conn.send_headers(stream_id, [("x-checksum", "abc")], end_stream=True)  # trailers
        client._flush()
        await asyncio.wait_for(response.done.wait(), 20)
        assert response.status == 200
        assert bytes(response.body) == b"part one, part two"
        seen = setup.backend.requests[-1]
        assert seen.header("transfer-encoding") == "chunked"
        assert seen.header("x-checksum") is None  # ALB does not forward trailers to HTTP/1.1 targets
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("method", "path", "headers", "authority", "expected"),
    [
        ("GET", "/", [], "api.example.org", (200, b"host")),
        ("GET", "/fixed/1", [], "localhost", (200, b"fixed")),
        ("DELETE", "/x", [], "localhost", (403, b"method")),
        ("GET", "/x", [("x-env", "staging")], "localhost", (200, b"header")),
        ("GET", "/x?version=v2", [], "localhost", (200, b"query")),
        ("GET", "/src", [], "localhost", (200, b"source")),
        ("GET", "/other", [], "localhost", (200, b"hello from b1\n")),
    ],
)
async def test_every_rule_condition_over_h2(
    setup: Setup, method: str, path: str, headers: list[tuple[str, str]], authority: str, expected: Any
) -> None:
    for port, tls in ((setup.https, True), (setup.h2c, False)):
        client = await H2Client.connect(port, tls=tls)
        try:
            response = await client.request(method, path, headers=headers, authority=authority)
            assert (response.status, bytes(response.body)) == expected, (port, path)
        finally:
            await client.close()


async def test_h2c_prior_knowledge_and_curl(setup: Setup) -> None:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--http2-prior-knowledge", "-w", " %{http_version}", f"http://127.0.0.1:{setup.h2c}/x",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert out == b"hello from b1\n 2"


async def test_http1_on_an_h2c_listener_and_upgrade_h2c_is_not_honoured(setup: Setup) -> None:
    reader, writer = await open_stream(setup.h2c, tls=False)
    writer.write(
        b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
    writer.close()
    assert head.startswith(b"HTTP/1.1 200"), head  # served as HTTP/1.1, not 101
    seen = setup.backend.requests[-1]
    assert seen.target == "/plain"
    assert seen.header("upgrade") is None and seen.header("http2-settings") is None


async def test_alpn_offers_h2_unless_http2_is_disabled(setup: Setup) -> None:
    for port, expected in ((setup.https, "h2"), (setup.h1_only, "http/1.1")):
        _, writer = await open_stream(port, tls=True, alpn=("h2", "http/1.1"))
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == expected
        writer.close()


async def test_access_log_entries_have_type_h2_and_http_2(setup: Setup) -> None:
    client = await H2Client.connect(setup.https)
    try:
        await client.request("GET", "/logged-over-h2")
    finally:
        await client.close()

    def entry() -> dict[str, Any] | None:
        if not setup.log_path.exists():
            return None
        for line in setup.log_path.read_text().splitlines():
            record = json.loads(line)
            if "/logged-over-h2" in record["request"]:
                return record  # type: ignore[no-any-return]
        return None

    record = await wait_for(entry, what="the access log entry")
    assert record["type"] == "h2"
    assert record["request"].endswith("/logged-over-h2 HTTP/2.0")
    assert record["ssl_protocol"].startswith("TLSv1.")


# -- defences -----------------------------------------------------------------------------------------------


async def connected(port: int, **kwargs: Any) -> RawH2:
    raw = await RawH2.connect(port, **kwargs)
    await raw.until(SettingsFrame)  # lbd's SETTINGS: the connection is up
    return raw


async def assert_goaway(raw: RawH2, code: int) -> None:
    frame = await raw.goaway()
    raw.close()
    assert frame.error_code == code, raw.frames


async def test_rapid_reset_ends_the_connection_with_enhance_your_calm(setup: Setup) -> None:
    raw = await connected(setup.h2c)
    frames = []
    for n in range(300):  # CVE-2023-44487: open and cancel at once, far more than 128 streams
        stream_id = 2 * n + 1
        frames.append(HeadersFrame(stream_id, raw.block(raw.request_fields("/fixed")), flags=["END_HEADERS"]))
        frames.append(RstStreamFrame(stream_id, error_code=ErrorCodes.CANCEL))
    raw.send(*frames)
    await assert_goaway(raw, ENHANCE_YOUR_CALM)


async def test_continuation_flood_is_cut_off(setup: Setup) -> None:
    raw = await connected(setup.h2c)
    raw.send(HeadersFrame(1, raw.block(raw.request_fields()), flags=[]))  # no END_HEADERS
    piece = raw.block([("x-flood", "y" * 10)])
    raw.send(*(ContinuationFrame(1, piece) for _ in range(200)))
    await assert_goaway(raw, PROTOCOL_ERROR)  # h2: at most 64 CONTINUATION frames per header block


async def test_oversized_header_list_is_refused(setup: Setup) -> None:
    raw = await connected(setup.h2c)
    block = raw.block([*raw.request_fields(), ("x-big", "v" * 70_000)])  # over ALB's 64K
    chunks = [block[i : i + 16384] for i in range(0, len(block), 16384)]
    raw.send(
        HeadersFrame(1, chunks[0]),
        *(ContinuationFrame(1, c) for c in chunks[1:-1]),
        ContinuationFrame(1, chunks[-1], flags=["END_HEADERS"]),
    )
    await assert_goaway(raw, ENHANCE_YOUR_CALM)


async def test_hpack_bomb_is_refused_while_decoding(setup: Setup) -> None:
    raw = await connected(setup.h2c)
    # One 4 KB field into the dynamic table, then the same field by index (one byte each): a tiny block
    # that decodes to over 64 KB.
    block = raw.block([*raw.request_fields(), ("x-bomb", "b" * 4000)]) + b"\xbe" * 30
    raw.send(HeadersFrame(1, block, flags=["END_HEADERS", "END_STREAM"]))
    await assert_goaway(raw, ENHANCE_YOUR_CALM)


@pytest.mark.parametrize("kind", ["settings", "ping", "empty-data", "window-update"])
async def test_control_frame_floods_end_the_connection(setup: Setup, kind: str) -> None:
    raw = await connected(setup.h2c)
    if kind == "settings":
        raw.send(*(SettingsFrame(0) for _ in range(200)))
    elif kind == "ping":
        raw.send(*(PingFrame(0, opaque_data=b"%08d" % n) for n in range(200)))
    elif kind == "empty-data":
        raw.send(HeadersFrame(1, raw.block(raw.request_fields("/echo", "POST")), flags=["END_HEADERS"]))
        raw.send(*(DataFrame(1, b"") for _ in range(200)))
    else:
        raw.send(*(WindowUpdateFrame(0, window_increment=1) for _ in range(500)))
    await assert_goaway(raw, ENHANCE_YOUR_CALM)


async def test_at_most_128_concurrent_streams(setup: Setup) -> None:
    raw = await connected(setup.h2c)
    # 128 streams that stay open: the target waits for request bodies that never come.
    fields = [*raw.request_fields("/echo", "POST"), ("content-length", "10")]
    raw.send(*(HeadersFrame(2 * n + 1, raw.block(fields), flags=["END_HEADERS"]) for n in range(128)))
    raw.send(PingFrame(0, opaque_data=b"allowed?"))
    pong = await raw.until(PingFrame)
    assert pong.opaque_data == b"allowed?" and not any(isinstance(f, GoAwayFrame) for f in raw.frames)
    raw.send(HeadersFrame(257, raw.block(raw.request_fields("/fixed")), flags=["END_HEADERS", "END_STREAM"]))
    reset = await raw.until(RstStreamFrame, 257)
    # RFC 9113 5.1.2: over the advertised limit, refused (not processed); the connection stays up.
    assert reset.error_code == ErrorCodes.REFUSED_STREAM
    raw.send(PingFrame(0, opaque_data=b"still up"))
    assert (await raw.until(PingFrame)).opaque_data == b"still up"
    raw.close()
    assert not any(isinstance(f, GoAwayFrame) for f in raw.frames)
    settings = next(f for f in raw.frames if isinstance(f, SettingsFrame) and "ACK" not in f.flags)
    assert settings.settings[SettingsFrame.MAX_CONCURRENT_STREAMS] == 128


async def test_idle_connection_and_unfinished_header_block_time_out(setup: Setup) -> None:
    idle = await connected(setup.idle_h2c)
    stuck = await connected(setup.idle_h2c)
    stuck.send(HeadersFrame(1, stuck.block(stuck.request_fields()), flags=[]))  # never completed
    for raw in (idle, stuck):
        frame = await raw.goaway()
        assert frame.error_code == ErrorCodes.NO_ERROR
        assert await raw.closed()
        raw.close()


async def test_zero_window_reader_is_reset_not_buffered(setup: Setup) -> None:
    raw = await connected(setup.idle_h2c, settings={SETTINGS_INITIAL_WINDOW_SIZE: 0})
    raw.send(
        SettingsFrame(0, flags=["ACK"]),
        HeadersFrame(
            1, raw.block(raw.request_fields("/bytes/20000000")), flags=["END_HEADERS", "END_STREAM"]
        ),
    )
    headers = await raw.until(HeadersFrame, 1)
    assert headers.stream_id == 1
    reset = await raw.until(RstStreamFrame, 1)  # after the idle timeout with the window shut
    raw.close()
    assert not any(isinstance(f, DataFrame) and f.data for f in raw.frames)
    assert reset.error_code == ErrorCodes.INTERNAL_ERROR


# -- RFC 9113 conformance, frame by frame -------------------------------------------------------------------


async def test_bad_preface_over_alpn_h2_is_a_protocol_error(setup: Setup) -> None:
    raw = await RawH2.connect(setup.https, tls=True, preface=False)
    raw.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # RFC 9113 3.4: the preface must come first
    await assert_goaway(raw, PROTOCOL_ERROR)


async def test_frames_on_a_closed_stream_get_stream_closed(setup: Setup) -> None:
    raw = await connected(setup.h2c)
    raw.send(HeadersFrame(1, raw.block(raw.request_fields("/fixed")), flags=["END_HEADERS", "END_STREAM"]))
    data = await raw.until(DataFrame, 1)
    while "END_STREAM" not in data.flags:
        data = await raw.until(DataFrame, 1)
    raw.send(DataFrame(1, b"late", flags=["END_STREAM"]))  # RFC 9113 5.1: stream 1 is closed
    frame = await raw.until(RstStreamFrame, 1)
    raw.close()
    assert frame.error_code == ErrorCodes.STREAM_CLOSED


@pytest.mark.parametrize(
    "fields",
    [
        [(":method", "GET"), (":scheme", "http"), (":authority", "x")],  # no :path
        [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":bogus", "1")],  # unknown pseudo
        [(":method", "GET"), ("x-a", "1"), (":scheme", "http"), (":path", "/")],  # pseudo after regular
        [(":method", "GET"), (":scheme", "http"), (":path", "/"), ("connection", "keep-alive")],
        [(":method", "GET"), (":scheme", "http"), (":path", "/"), ("transfer-encoding", "chunked")],
        [(":method", "GET"), (":scheme", "http"), (":path", "/"), ("te", "gzip")],
        [(":method", "GET"), (":scheme", "http"), (":path", "/"), ("X-Upper", "1")],
    ],
    ids=["no-path", "unknown-pseudo", "pseudo-after-field", "connection", "transfer-encoding", "te", "upper"],
)
async def test_malformed_requests_are_protocol_errors(setup: Setup, fields: list[tuple[str, str]]) -> None:
    raw = await connected(setup.h2c)
    raw.send(HeadersFrame(1, raw.block(fields), flags=["END_HEADERS", "END_STREAM"]))
    await assert_goaway(raw, PROTOCOL_ERROR)
    assert not setup.backend.requests or setup.backend.requests[-1].target != "/bogus"


async def test_path_with_spaces_is_reset_not_forwarded(setup: Setup) -> None:
    raw = await connected(setup.h2c)
    fields = [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/a b HTTP/1.1")]
    raw.send(HeadersFrame(1, raw.block(fields), flags=["END_HEADERS", "END_STREAM"]))
    frame = await raw.until(RstStreamFrame, 1)
    raw.close()
    assert frame.error_code == PROTOCOL_ERROR


async def test_window_overflow_is_a_flow_control_error(setup: Setup) -> None:
    raw = await connected(setup.h2c)
    raw.send(WindowUpdateFrame(0, window_increment=2**31 - 1))  # over 2^31-1 with the initial window
    await assert_goaway(raw, ErrorCodes.FLOW_CONTROL_ERROR)


async def test_even_stream_id_from_a_client_is_a_protocol_error(setup: Setup) -> None:
    raw = await connected(setup.h2c)
    raw.send(HeadersFrame(2, raw.block(raw.request_fields()), flags=["END_HEADERS", "END_STREAM"]))
    await assert_goaway(raw, PROTOCOL_ERROR)


# -- lifecycle (last: it stops lbd) -----------------------------------------------------------------


async def test_sigterm_sends_goaway_and_streams_in_flight_finish(setup: Setup) -> None:
    raw = await connected(setup.h2c)
    url = f"https://localhost:{setup.https}/sleep/"
    curl = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-k", "--http2", "-Z", "-w", "%{http_code} %{http_version}\\n",
        *(arg for i in range(4) for arg in ("-o", "/dev/null", f"{url}{900 + i}")),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    for stream_id in (1, 3):
        raw.send(
            HeadersFrame(
                stream_id, raw.block(raw.request_fields("/sleep/800")), flags=["END_HEADERS", "END_STREAM"]
            )
        )
    await wait_for(lambda: sum(r.target.startswith("/sleep/") for r in setup.backend.requests) >= 6)
    setup.proc.signal(signal.SIGTERM)
    goaway = await raw.goaway()
    assert (goaway.error_code, goaway.last_stream_id) == (ErrorCodes.NO_ERROR, 3)
    assert await raw.closed()  # after both streams were answered
    raw.close()
    answered = [f for f in raw.frames if isinstance(f, DataFrame) and "END_STREAM" in f.flags]
    assert sorted(f.stream_id for f in answered) == [1, 3]
    out, err = await asyncio.wait_for(curl.communicate(), 30)
    assert out.decode().split("\n")[:-1] == ["200 2"] * 4, err  # zero failed streams on a real client
    assert await setup.proc.wait_exit() == 0
