"""The HTTP fast path (lbd/http/fastpath.py) against the full path it stands in for.

Differential tests: for any request or response the fast path accepts, llhttp must parse the same bytes to
the same message, and the head lbd sends on must be the one the full path builds. Generated inputs mix
well-formed messages with every field the fast path must refuse, odd spacing, case and bad characters.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httptools
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbd.config.loader import parse_config
from lbd.http import fastpath, messages
from lbd.http.exchange import Exchange
from lbd.http.proxy import HttpClientSide
from lbd.http.upstream import UpstreamPool
from lbd.listener.tracker import ConnectionTracker
from lbd.observe.stats import StatsRegistry
from lbd.runtime import HttpListenerRuntime, Snapshot
from tests.conftest import Handler, LbdFactory, TcpBackend
from tests.http_client import Client
from tests.lbdproc import application_config, free_port

# -- generated messages ---------------------------------------------------------------------------------

# Mostly fields the fast path takes, so that many examples reach the comparison; the rest must send it
# to the full parser.
PLAIN_NAMES = [
    b"User-Agent",
    b"Accept",
    b"X-Custom",
    b"x_under",
    b"Cookie",
    b"Te-St",
    b"Hostname",
    b"X-Forwarded-Host",
]
TRICKY_NAMES = [
    b"host", b"HOST", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Upgrade", b"Expect",
    b"Keep-Alive", b"TE", b"Trailer", b"Proxy-Connection", b"X-Forwarded-For", b"x-forwarded-proto",
    b"X-Forwarded-Port", b"X-Amzn-Trace-Id", b"Bad Name", b"Bad\x7fName", b"",
]  # fmt: skip
NAMES = st.one_of(st.sampled_from(PLAIN_NAMES), st.sampled_from(PLAIN_NAMES), st.sampled_from(TRICKY_NAMES))
PLAIN_VALUES = [
    b"example.com", b"Example.COM:8080", b"127.0.0.1:18080", b"[::1]:80", b"0", b"5", b"chunked",
    b"keep-alive", b"close", b"", b" padded ", b"\tx\t", b"caf%C3%A9", b"1.2.3.4, 5.6.7.8",
]  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(PLAIN_VALUES),
    st.sampled_from([b"a\x00b", b"x\ry", b"caf\xc3\xa9"]),
    st.binary(max_size=12),
)
METHODS = st.one_of(
    *[st.sampled_from([b"GET", b"POST", b"DELETE", b"OPTIONS"])] * 4,
    st.sampled_from([b"HEAD", b"TRACE", b"CONNECT", b"get", b"PROPFIND", b"G T"]),
)
TARGETS = st.one_of(
    *[st.sampled_from([b"/", b"/a/b?x=1&y", b"/%41", b"/#f", b"/~a.b"])] * 4,
    st.sampled_from([b"*", b"http://h/p", b"/sp ace", b"", b"/caf\xc3\xa9"]),
    st.binary(min_size=1, max_size=10).map(lambda b: b"/" + b),
)
VERSIONS = st.one_of(*[st.sampled_from([b"1", b"0"])] * 4, st.just(b"2"))
PLAIN_SEPARATORS = st.sampled_from([b": ", b":", b":\t", b":  "])
SEPARATORS = st.one_of(PLAIN_SEPARATORS, st.just(b" : "))
ENDINGS = st.one_of(st.just(b"\r\n"), st.just(b"\r\n"), st.sampled_from([b"\n", b"\r\n ", b"\r"]))
PLAIN_FIELD = st.tuples(
    st.sampled_from(PLAIN_NAMES), PLAIN_SEPARATORS, st.sampled_from(PLAIN_VALUES), st.just(b"\r\n")
)
ANY_FIELD = st.tuples(NAMES, SEPARATORS, VALUES, ENDINGS)
FIELDS = st.lists(
    st.one_of(PLAIN_FIELD, PLAIN_FIELD, PLAIN_FIELD, PLAIN_FIELD, PLAIN_FIELD, ANY_FIELD), max_size=6
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    line = b"%b %b HTTP/1.%b\r\n" % (draw(METHODS), draw(TARGETS), draw(VERSIONS))
    fields = draw(FIELDS)
    if draw(st.integers(0, 9)):
        fields.insert(draw(st.integers(0, len(fields))), (b"Host", b": ", b"example.com", b"\r\n"))
    return line + b"".join(n + s + v + e for n, s, v, e in fields) + b"\r\n"


@st.composite
def plain_requests(draw: st.DrawFn) -> bytes:
    """Requests of the shape the fast path exists for: it must take every one of them."""
    method = draw(st.sampled_from([b"GET", b"POST", b"DELETE", b"OPTIONS", b"PUT", b"PATCH"]))
    # no "#": a fragment is not part of a request-target (RFC 9112 3.2), the full path refuses it
    target = draw(st.sampled_from([b"/", b"/a/b?x=1&y", b"/%41", b"/f?a=%23", b"/~a.b"]))
    fields = draw(st.lists(PLAIN_FIELD, max_size=5))
    host = draw(st.sampled_from([b"example.com", b"Example.COM", b"a:8080", b"[::1]", b"127.0.0.1:18080"]))
    fields.insert(draw(st.integers(0, len(fields))), (b"Host", b": ", host, b"\r\n"))
    line = b"%b %b HTTP/1.%b\r\n" % (method, target, draw(st.sampled_from([b"1", b"0"])))
    return line + b"".join(n + s + v + e for n, s, v, e in fields) + b"\r\n"


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    status = draw(st.sampled_from([b"200", b"201", b"204", b"301", b"304", b"404", b"500", b"503", b"101",
                                   b"100", b"999", b"20x"]))  # fmt: skip
    reason = draw(st.sampled_from([b"OK", b"", b"Not Found", b"Weird  reason"]))
    line = b"HTTP/1.%b %b %b\r\n" % (draw(st.sampled_from([b"1", b"0"])), status, reason)
    fields = draw(FIELDS)
    length = draw(st.integers(0, 20))
    if draw(st.integers(0, 3)):
        fields.insert(draw(st.integers(0, len(fields))), (b"Content-Length", b": ", b"%d" % length, b"\r\n"))
    body = draw(st.binary(min_size=0, max_size=25))
    return line + b"".join(n + s + v + e for n, s, v, e in fields) + b"\r\n" + body


# -- the full path, for comparison ------------------------------------------------------------------------


class ParsedRequest:
    def __init__(self, data: bytes) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        self.parser = httptools.HttpRequestParser(self)
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # llhttp resets its flags after the message


class ParsedResponse:
    def __init__(self, data: bytes) -> None:
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.complete = False
        self.parser = httptools.HttpResponseParser(self)
        self.parser.feed_data(data)

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # llhttp resets its flags after the message


LISTENER_VARIANTS: list[dict[str, Any]] = [
    {},
    {"preserve_host_header": True, "xff_header_processing": "preserve"},
    {"xff_client_port": True, "drop_invalid_header_fields": True},
    {"xff_header_processing": "remove", "desync_mitigation_mode": "strictest"},
]


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def client_for(loop: asyncio.AbstractEventLoop, port: int, variant: dict[str, Any]) -> HttpClientSide:
    """A client connection object (no socket: only the header logic is used) on a real listener runtime."""
    config = parse_config(yaml.safe_dump(application_config(port, [9], **variant)), source="test")

    async def build() -> HttpClientSide:
        snapshot = Snapshot.build(config, 1, StatsRegistry())
        listener = next(iter(snapshot.listeners.values()))
        assert isinstance(listener, HttpListenerRuntime)
        client = HttpClientSide(listener, ConnectionTracker(), UpstreamPool())
        client.peer = ("192.0.2.7", 40000)
        return client

    return loop.run_until_complete(build())


@pytest.fixture(
    scope="module", params=[(port, i) for port in (80, 8080) for i in range(len(LISTENER_VARIANTS))]
)
def client(request: pytest.FixtureRequest, loop: asyncio.AbstractEventLoop) -> HttpClientSide:
    port, variant = request.param
    return client_for(loop, port, LISTENER_VARIANTS[variant])


TRACE = re.compile(rb"X-Amzn-Trace-Id: Root=1-[0-9a-f]{8}-[0-9a-f]{24}\r\n")


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(requests(), plain_requests()))
def test_accepted_requests_get_the_full_paths_head(client: HttpClientSide, data: bytes) -> None:
    listener = client.listener
    taken = fastpath.simple_request(data, listener.dispatcher.fast_pattern)
    if taken is None:
        return
    method, url, version, block, host, host_at, keep_alive = taken
    assert block[host_at : host_at + len(host)] == host
    parsed = ParsedRequest(data)  # llhttp accepts whatever the fast path accepts
    assert parsed.complete
    assert (method.encode(), url) == (parsed.parser.get_method(), parsed.url)
    assert version == parsed.parser.get_http_version()
    assert keep_alive == parsed.keep_alive
    # The fields as sent, less the Connection line (hop-by-hop: close or keep-alive, never forwarded).
    assert fastpath.field_lines(block) == [(n, v) for n, v in parsed.headers if n.lower() != b"connection"]
    assert [v for n, v in parsed.headers if n.lower() == b"host"] == [host]

    fast = Exchange(client, method, url, version, None, keep_alive, False)
    fast_head, trace = listener.dispatcher.fast_head(fast, block, host, host_at)
    full = Exchange(client, method, url, version, parsed.headers, parsed.keep_alive, False)
    full_head = messages.prepare_request(full, listener)
    assert not (full_head.chunked or full_head.expect_continue or full_head.close_after)
    assert full_head.host == host
    assert full.classification == ""  # compliant: desync mitigation has nothing to say
    # The same request line and fields in the same order; the fast path keeps each line's spacing as sent.
    fast_sent, full_sent = (
        ParsedRequest(TRACE.sub(b"", fast_head)),
        ParsedRequest(TRACE.sub(b"", full_head.data)),
    )
    assert fast_sent.complete and full_sent.complete
    assert fast_head.partition(b"\r\n")[0] == full_head.data.partition(b"\r\n")[0]
    assert fast_sent.headers == full_sent.headers
    assert b"X-Amzn-Trace-Id: %b\r\n" % trace in fast_head


@settings(max_examples=600)
@given(data=responses())
def test_accepted_responses_frame_as_the_full_path(data: bytes) -> None:
    taken = fastpath.simple_response(data)
    if taken is None:
        return
    status, head, length, keep_alive, body_at = taken
    parsed = ParsedResponse(data[:body_at] + data[body_at : body_at + length])
    assert parsed.parser.get_status_code() == status
    assert parsed.complete == (len(data) - body_at >= length)
    assert parsed.body == data[body_at : body_at + length]
    assert not parsed.complete or keep_alive == parsed.keep_alive
    framing = messages.response_framing(status, parsed.headers, False, "1.1")
    assert not framing.chunked and not framing.close_delimited
    full = messages.response_head(status, parsed.reason, framing.headers, chunked=False, close=False)
    fast_lines = head.split(b"\r\n")
    full_lines = full[:-2].split(b"\r\n")
    assert fast_lines[0] == full_lines[0]  # the status line
    # The same fields with the same values; the fast path leaves Content-Length where the target put it.
    assert sorted(normalise(fast_lines[1:])) == sorted(normalise(full_lines[1:]))


def normalise(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    return [(n, v.strip(b" \t")) for n, _, v in (line.partition(b":") for line in lines if line)]


@given(data=plain_requests())
def test_plain_requests_take_the_fast_path(data: bytes) -> None:
    assert fastpath.simple_request(data, fastpath.REQUEST_HEAD) is not None


# -- fixed cases ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",  # framing: the full path classifies it
        b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # two Hosts: 400 on the full path
        b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",  # obs-fold: ambiguous
        b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\nGET / HTTP/1.1\r\n",  # pipelined: not one head
        b"GET / HTTP/1.1\r\nHost: a\r\n",  # incomplete
        b"GET / HTTP/1.1\r\nX: 1\r\n\r\n",  # no Host
        b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",  # the response framing depends on it
        b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n",  # 405 on the full path
        b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",  # absolute-form
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",  # severe: invalid name
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",  # severe: control character in a value
        b"GET / HTTP/1.1\nHost: a\n\n",  # bare LF
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, x-private\r\n\r\n",  # names a field
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent_Length: 1\r\n\r\n",  # lookalikes: desync classes them
        b"GET / HTTP/1.1\r\nHost: a\r\ntransfer_ENCODING: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHOST: a\r\nhost: b\r\n\r\n",  # two Hosts, in any case
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Amzn-Trace-Id: Root=1-2-3\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",  # long: the full parser checks limits
    ],
)
def test_requests_the_fast_path_leaves_to_the_parser(data: bytes) -> None:
    assert fastpath.simple_request(data, fastpath.REQUEST_HEAD) is None


def test_a_plain_request_is_taken() -> None:
    data = b"GET /a?b=1 HTTP/1.1\r\nHost: Example.com\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n"
    assert fastpath.simple_request(data, fastpath.REQUEST_HEAD) == (
        "GET",
        b"/a?b=1",
        "1.1",
        b"Host: Example.com\r\nUser-Agent: curl/8\r\nAccept: */*\r\n",
        b"Example.com",
        6,
        True,
    )
    # drop_invalid_header_fields: a name outside [-A-Za-z0-9] must reach the full path to be dropped.
    underscored = b"GET / HTTP/1.1\r\nHost: a\r\nX_Y: 1\r\n\r\n"
    assert fastpath.simple_request(underscored, fastpath.REQUEST_HEAD) is not None
    assert fastpath.simple_request(underscored, fastpath.REQUEST_HEAD_ALNUM_NAMES) is None


@pytest.mark.parametrize(
    ("data", "keep_alive"),
    [
        (b"GET / HTTP/1.1\r\nConnection: close\r\nHost: a\r\nX: 1\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n", True),
        (b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\nHost: a\r\nconnection:keep-alive \r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n", False),
    ],
)
def test_connection_close_or_keep_alive_is_taken_and_not_forwarded(data: bytes, keep_alive: bool) -> None:
    # Connection-per-request clients send Connection: close on every request: the fast path takes them,
    # answers with Connection: close, and the Connection line never reaches the target (hop-by-hop).
    taken = fastpath.simple_request(data, fastpath.REQUEST_HEAD)
    assert taken is not None
    _, _, _, block, host, host_at, persistent = taken
    assert persistent == keep_alive == ParsedRequest(data).keep_alive
    assert b"onnection" not in block
    assert (block[host_at : host_at + len(host)], host) == (b"a", b"a")


def test_host_rewrite_keeps_the_field_in_place(loop: asyncio.AbstractEventLoop) -> None:
    client = client_for(loop, 8080, {})
    data = b"GET / HTTP/1.1\r\nAccept: */*\r\nHost: Example.COM\r\nX-A: 1\r\n\r\n"
    taken = fastpath.simple_request(data, client.listener.dispatcher.fast_pattern)
    assert taken is not None
    method, url, version, block, host, host_at, _ = taken
    exchange = Exchange(client, method, url, version, None, True, False)
    head, _ = client.listener.dispatcher.fast_head(exchange, block, host, host_at)
    assert head.startswith(
        b"GET / HTTP/1.1\r\nAccept: */*\r\nHost: example.com:8080\r\nX-A: 1\r\n"
        b"X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: 8080\r\n"
    )


def test_nginx_response_loses_its_hop_by_hop_fields() -> None:
    data = (
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\nConnection: keep-alive\r\n"
        b"Keep-Alive: timeout=5\r\nX-A: 1\r\n\r\nhello"
    )
    assert fastpath.simple_response(data) == (
        200,
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\nX-A: 1\r\n",
        5,
        True,
        len(data) - 5,
    )
    # A hop-by-hop field as the first line, and nothing else to cut (found by the differential test).
    first = b"HTTP/1.1 200 OK\r\nProxy-Connection: example.com\r\nContent-Length: 0\r\n\r\n"
    assert fastpath.simple_response(first) == (
        200,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n",
        0,
        True,
        len(first),
    )
    closing = b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    assert fastpath.simple_response(closing) == (
        404,
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n",
        0,
        False,
        len(closing),
    )


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\nuntil close",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: X-Private\r\nX-Private: 1\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n",  # incomplete head
        b"HTTP/1.1 200 OK\r\nBad Name: 1\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_responses_the_fast_path_leaves_to_the_parser(data: bytes) -> None:
    assert fastpath.simple_response(data) is None


# -- through lbd, against a target that sends exactly the bytes a test scripts ------------------------------


def scripted(responses: dict[str, bytes]) -> Handler:
    """A target that answers each request with ``responses[path]``, verbatim (requests have no body)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: TcpBackend) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            writer.write(responses[head.split(b" ")[1].decode()])
            await writer.drain()

    return handler


Backends = Callable[[Handler], Awaitable[TcpBackend]]


BIG = bytes(range(256)) * 4096  # 1 MiB: many reads on the way through


async def test_fast_responses_through_lbd(lbd: LbdFactory, backends: Backends) -> None:
    target = await backends(
        scripted(
            {
                "/hop": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n"
                b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-A: 1\r\n\r\nhello",
                "/big": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(BIG), BIG),
                "/extra": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
                "/close": b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                "/empty-reason": b"HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n",
            }
        )
    )
    port = free_port()
    await lbd(application_config(port, [target.port])).wait_ready()
    client = await Client.connect(port)

    response = await client.request("GET", "/hop")
    assert (response.status, response.body, response.keep_alive) == (200, b"hello", True)
    assert response.header("x-a") == "1"
    assert [response.header(n) for n in ("connection", "keep-alive", "proxy-connection")] == [
        None,
        None,
        None,
    ]
    response = await client.request("GET", "/big")
    assert response.body == BIG
    assert target.connections == 1  # the target connection went back to the pool after each response

    # More bytes than Content-Length: the client gets the announced body; the target is out of step, so its
    # connection is not used again.
    response = await client.request("GET", "/extra")
    assert (response.status, response.body) == (200, b"ok")
    response = await client.request("GET", "/hop")
    assert response.body == b"hello"
    assert target.connections == 2

    # Connection: close from the target: answered, then a new target connection for the next request.
    response = await client.request("GET", "/close")
    assert (response.status, response.body, response.keep_alive) == (201, b"ok", True)
    response = await client.request("GET", "/empty-reason")
    assert response.status == 404 and target.connections == 3
    client.close()


async def test_request_head_sent_in_pieces_is_served(lbd: LbdFactory, backends: Backends) -> None:
    """A head in pieces cannot take the fast path (it needs the whole head in one read): llhttp serves it."""
    target = await backends(scripted({"/": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"}))
    port = free_port()
    await lbd(application_config(port, [target.port])).wait_ready()
    client = await Client.connect(port)
    client.send(b"GET / HTTP/1.1\r\nHo")
    await client.writer.drain()
    client.send(b"st: example.com\r\n\r\n")
    response = await client.response()
    assert (response.status, response.body) == (200, b"ok")
    client.close()
