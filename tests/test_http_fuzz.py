"""Generated request heads, chunked bodies and junk (PROXY-protocol lines, TLS ClientHello bytes) sent to a
plain HTTP listener of one real ``lbd run``: lbd never crashes, never leaves a connection without an answer
or a close, and never lets more than one request reach the target for one client request.

Each example is one connection that sends its bytes, half-closes and reads until lbd closes. The target
is a real HTTP/1.1 server (h11) on its own event loop thread, so it lives across examples.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.http_backend import HttpBackend
from tests.lbdproc import Lbd, application_config, free_port

ANSWER_BOUND = 15.0  # seconds: idle timeout (1 s) plus a loaded machine's slack


class ThreadedBackend:
    """An HttpBackend on an event loop of its own, so synchronous hypothesis examples can share it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.backend = asyncio.run_coroutine_threadsafe(HttpBackend("fuzz").start(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.backend.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def target() -> Iterator[ThreadedBackend]:
    backend = ThreadedBackend()
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def lbd_port(tmp_path_factory: pytest.TempPathFactory, target: ThreadedBackend) -> Iterator[tuple[Lbd, int]]:
    port = free_port()
    proc = Lbd(
        tmp_path_factory.mktemp("fuzz"),
        application_config(port, [target.backend.port], idle_timeout_seconds=1),
    )
    proc.start()
    try:
        asyncio.run(proc.wait_ready())
        yield proc, port
    finally:
        proc.stop()
        print(f"--- lbd log ---\n{proc.log[-20000:]}")


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a new connection, half-close, and read until lbd closes (bounded)."""
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_BOUND) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return b""  # lbd already closed (a refused head): a close is an answer
        deadline = time.monotonic() + ANSWER_BOUND
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return received
            except TimeoutError:
                raise AssertionError(f"lbd neither answered nor closed within {ANSWER_BOUND} s") from None
            if not chunk:
                return received
            received += chunk
            if time.monotonic() > deadline:
                raise AssertionError(f"lbd kept the connection open beyond {ANSWER_BOUND} s")


def mostly(plain: list[bytes], other: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Plain values four times as often as the rest, so that many examples are forwarded."""
    return st.one_of(*[st.sampled_from(plain)] * 4, other)


METHODS = mostly(
    [b"GET", b"POST"],
    st.sampled_from([b"PUT", b"HEAD", b"OPTIONS", b"CONNECT", b"TRACE", b"PRI", b"get"]),
)
TARGETS = mostly(
    [b"/", b"/a?b=c"],
    st.one_of(
        st.sampled_from([b"*", b"http://h.example/p", b"h.example:443", b"/#x", b"", b"/a b"]),
        st.binary(max_size=12).map(lambda b: b"/" + b),
    ),
)
VERSIONS = mostly(
    [b" HTTP/1.1"],
    st.sampled_from([b" HTTP/1.0", b" HTTP/2.0", b" HTTP/0.9", b"", b" HTTP/1.2", b" http/1.1"]),
)
NAMES = st.sampled_from(
    [b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Content_Length", b"Transfer_Encoding",
     b"Expect", b"Upgrade", b"X-A", b" Host", b"Host ", b"TE", b"Trailer", b"X-Forwarded-For", b""]
)  # fmt: skip
VALUES = st.one_of(
    st.sampled_from([b"example.com", b"a, b", b"u@h", b"5", b"0", b"-1", b"1, 1", b"chunked", b"close",
                     b"gzip, chunked", b"chunked, identity", b"keep-alive", b"content-length",
                     b"100-continue", b"websocket", b"\xe9", b"a\x00b", b"x\ry", b"h:99999", b""]),
    st.binary(max_size=10),
)  # fmt: skip
LINE_ENDS = mostly([b"\r\n"], st.sampled_from([b"\n", b"\r", b"\r\n "]))
PLAIN_FIELD = st.tuples(st.sampled_from([b"X-A", b"Accept"]), st.just(b": "), st.just(b"v"), st.just(b"\r\n"))


@st.composite
def chunked_body(draw: st.DrawFn) -> bytes:
    chunks = draw(st.lists(st.binary(max_size=8), max_size=3))
    out = b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks)
    junk = draw(
        st.sampled_from([b"", b"zz\r\n", b"2 \r\nab\r\n", b"1;x\x00\r\na\r\n", b"-1\r\n", b"0\r\nX: y\r\n"])
    )
    return out + junk + draw(st.sampled_from([b"0\r\n\r\n", b"0\r\n\r\n", b"", b"0\r\n"]))


@st.composite
def request_heads(draw: st.DrawFn) -> bytes:
    line = draw(METHODS) + b" " + draw(TARGETS) + draw(VERSIONS) + draw(LINE_ENDS)
    odd_field = st.tuples(NAMES, st.sampled_from([b": ", b":", b" : "]), VALUES, LINE_ENDS)
    fields = draw(st.lists(st.one_of(PLAIN_FIELD, PLAIN_FIELD, odd_field), max_size=5))
    if draw(st.integers(0, 4)):
        fields.insert(0, (b"Host", b": ", b"example.com", b"\r\n"))
    head = line + b"".join(n + s + v + e for n, s, v, e in fields) + b"\r\n"
    body = draw(st.one_of(*[st.just(b"")] * 3, chunked_body(), st.binary(max_size=16)))
    return head + body


@st.composite
def near_valid_requests(draw: st.DrawFn) -> bytes:
    """A valid request with a body framed one of the usual ways, and at most one odd field: most reach
    the target, which is what the one-request-per-connection check needs."""
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"OPTIONS", b"DELETE"]))
    fields = draw(st.lists(PLAIN_FIELD, max_size=3))
    if draw(st.integers(0, 2)) == 0:
        fields.append(draw(st.tuples(NAMES, st.just(b": "), VALUES, st.just(b"\r\n"))))
    body = draw(st.binary(max_size=16))
    framing = draw(st.sampled_from(["length", "chunked", "none"]))
    if framing == "length":
        fields.append((b"Content-Length", b": ", b"%d" % len(body), b"\r\n"))
    elif framing == "chunked":
        fields.append((b"Transfer-Encoding", b": ", b"chunked", b"\r\n"))
        body = (b"%x\r\n%b\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    else:
        body = b""
    head = b"%b /a?b=c HTTP/1.1\r\nHost: example.com\r\n" % method
    return head + b"".join(n + sep + v + e for n, sep, v, e in fields) + b"\r\n" + body


TLS_CLIENT_HELLO = bytes.fromhex("16030100a5010000a10303") + bytes(32) + bytes.fromhex("000004c02fc0300100")
JUNK = st.one_of(
    st.sampled_from(
        [
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 80\r\n",
            b"PROXY UNKNOWN\r\n",
            b"\r\n\r\n\x00\r\nQUIT\n" + bytes.fromhex("0d0a0d0a000d0a515549540a21"),  # PROXY v2 signature
            TLS_CLIENT_HELLO,
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"\r\n\r\n\r\n",
            b"\x00" * 64,
        ]
    ),
    st.binary(min_size=1, max_size=64),
)
INPUTS = st.one_of(
    near_valid_requests(),
    near_valid_requests(),
    request_heads(),
    request_heads(),
    st.tuples(JUNK, request_heads()).map(lambda t: t[0] + t[1]),
    JUNK,
)

PLAIN = b"GET /plain HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=INPUTS)
def test_generated_input_never_crashes_hangs_or_smuggles(
    lbd_port: tuple[Lbd, int], target: ThreadedBackend, data: bytes
) -> None:
    proc, port = lbd_port
    seen = target.backend.requests
    before = len(seen)
    answer = exchange(port, data)
    assert proc.process is not None and proc.process.poll() is None, "lbd died"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 "), answer[:100]
    assert len(seen) - before <= 1, [r.target for r in seen[before:]]
    assert answer.count(b"HTTP/1.1 ") - answer.count(b"HTTP/1.1 100 ") <= 1, answer[:300]


def test_lbd_serves_after_the_fuzzing(lbd_port: tuple[Lbd, int], target: ThreadedBackend) -> None:
    proc, port = lbd_port
    assert exchange(port, PLAIN).startswith(b"HTTP/1.1 200 ")
    assert proc.process is not None and proc.process.poll() is None
    assert target.backend.requests[-1].target == "/plain"
    # The generated requests did reach the target, so the one-request-per-connection check had work to do.
    assert len(target.backend.requests) >= 10
