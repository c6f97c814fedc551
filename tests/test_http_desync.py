"""Malformed and ambiguous requests: ALB's status codes, never forwarded, desync mitigation modes.

Every case goes through a real ``lbd run`` to a real backend that records what reached it.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Alb
from tests.http_client import Client
from tests.lbdproc import Lbd, wait_for

H = b"Host: example.com\r\n"


async def listener_stats(proc: Lbd) -> dict[str, Any]:
    status, stats = await proc.admin("GET", "/v1/stats")
    assert status == 200
    listeners: list[dict[str, Any]] = stats["listeners"]
    return listeners[0]


# (name, raw request, expected status) with the default desync_mitigation_mode (defensive).
CORPUS: list[tuple[str, bytes, int]] = [
    (
        "two different Content-Length",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        400,
    ),
    ("Content-Length not a number", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1x\r\n\r\na", 400),
    ("negative Content-Length", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400),
    ("Content-Length with a plus", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +1\r\n\r\na", 400),
    (
        "Content-Length overflow",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999\r\n\r\n",
        400,
    ),
    ("Content-Length list", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1, 2\r\n\r\nab", 400),
    (
        "chunked then identity",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, identity\r\n\r\n",
        400,
    ),
    (
        "chunked twice",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
    ),
    ("gzip coding", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n", 501),
    (
        "gzip then chunked",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    ("unknown coding", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n", 501),
    (
        "control char in Transfer-Encoding",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\x01\r\n\r\n",
        400,
    ),
    (
        "chunk size not hex",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
        400,
    ),
    (
        "space after chunk size",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n2 \r\nab\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunk longer than its size",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n2\r\nabXX\r\n0\r\n\r\n",
        400,
    ),
    ("space in header name", b"GET / HTTP/1.1\r\n" + H + b"Bad Header: y\r\n\r\n", 400),
    ("space before colon", b"GET / HTTP/1.1\r\n" + H + b"X-A : y\r\n\r\n", 400),
    ("DEL in header name", b"GET / HTTP/1.1\r\n" + H + b"X\x7f: y\r\n\r\n", 400),
    ("control char in header value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n", 400),
    ("bare LF between headers", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\nX-B: b\r\n\r\n", 400),
    ("header line starting with a space", b"GET / HTTP/1.1\r\n Host: example.com\r\n\r\n", 400),
    ("header without colon", b"GET / HTTP/1.1\r\n" + H + b"NoColon\r\n\r\n", 400),
    ("HTTP/3.1 version", b"GET / HTTP/3.1\r\n" + H + b"\r\n", 505),
    ("HTTP/1.2 version", b"GET / HTTP/1.2\r\n" + H + b"\r\n", 505),
    ("invalid method", b"GE@T / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("space in URI", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("NUL in URI", b"GET /\x00 HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("request line over 16K", b"GET /" + b"a" * (17 * 1024) + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    ("one header over 16K", b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * (17 * 1024) + b"\r\n\r\n", 431),
    (
        "headers over 64K",
        b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-H%d: %b\r\n" % (i, b"v" * 8000) for i in range(9)) + b"\r\n",
        431,
    ),
    (
        "31 X-Forwarded-For addresses",
        b"GET / HTTP/1.1\r\n" + H + b"X-Forwarded-For: " + b", ".join([b"10.0.0.1"] * 31) + b"\r\n\r\n",
        463,
    ),
    ("two Host headers", b"GET / HTTP/1.1\r\n" + H + b"Host: other.example\r\n\r\n", 400),
    ("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400),
    ("TRACE", b"TRACE / HTTP/1.1\r\n" + H + b"\r\n", 405),
    (
        "obs-fold with different Content-Length",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 1\r\n 2\r\n\r\na",
        400,
    ),
]
# A bad chunk is found while the body streams, after the head went to a target: the target connection is
# aborted there, so the target never sees a whole request, but it did see a connection.
BODY_ERRORS = {"chunk size not hex", "space after chunk size", "chunk longer than its size"}


@pytest.mark.parametrize(("name", "raw", "status"), CORPUS, ids=[c[0] for c in CORPUS])
async def test_malformed_request_is_answered_and_never_forwarded(
    alb: Alb, name: str, raw: bytes, status: int
) -> None:
    proc, port, backend = await alb()
    client = await Client.connect(port)
    client.send(raw)
    answer = await client.read_all()  # read_all returns when lbd closes the connection
    assert answer.startswith(b"HTTP/1.1 %d " % status), (name, answer[:200])
    assert b"Connection: close" in answer.partition(b"\r\n\r\n")[0]
    assert backend.requests == [], f"{name} reached the target"
    if name not in BODY_ERRORS:
        assert backend.connections == 0
    assert (await listener_stats(proc))[f"elb_responses_{status // 100}xx"] == 1


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 30


# Ambiguous requests: forwarded normalised in monitor and defensive mode (defensive closes both connections
# after), refused in strictest mode.
AMBIGUOUS: list[tuple[str, bytes, str, str]] = [
    (
        "Transfer-Encoding with Content-Length",
        b"POST /echo HTTP/1.1\r\n"
        + H
        + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "content-length",
        "",
    ),
    (
        "duplicate identical Content-Length",
        b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        "content-length",
        "3",
    ),
    (
        "obs-fold",
        b"POST /echo HTTP/1.1\r\n" + H + b"X-Folded: a\r\n b\r\nContent-Length: 3\r\n\r\nabc",
        "x-folded",
        "a b",
    ),
]


@pytest.mark.parametrize("mode", ["monitor", "defensive", "strictest"])
@pytest.mark.parametrize(("name", "raw", "header", "value"), AMBIGUOUS, ids=[a[0] for a in AMBIGUOUS])
async def test_ambiguous_requests_follow_the_desync_mode(
    alb: Alb, mode: str, name: str, raw: bytes, header: str, value: str
) -> None:
    proc, port, backend = await alb(desync_mitigation_mode=mode)
    client = await Client.connect(port)
    client.send(raw)
    if mode == "strictest":
        assert (await client.read_all()).startswith(b"HTTP/1.1 400 ")
        assert backend.requests == []
    else:
        response = await client.response()
        assert response.status == 200 and response.body == b"abc"
        seen = backend.requests[0]
        assert seen.body == b"abc"
        assert (seen.header(header) or "") == value  # framing normalised: one length, or chunked alone
        if mode == "defensive":
            assert not response.keep_alive
            assert await client.read_all() == b""  # lbd closed the client connection
            await wait_for(lambda: backend.closed_connections == 1, what="target connection closed")
        else:
            assert response.keep_alive
            assert (await client.request("GET", "/")).status == 200
    assert (await listener_stats(proc))["non_compliant_requests"] == 1


@pytest.mark.parametrize(("mode", "allowed"), [("defensive", True), ("strictest", False)])
async def test_get_with_zero_content_length_is_acceptable_except_in_strictest(
    alb: Alb, mode: str, allowed: bool
) -> None:
    proc, port, backend = await alb(desync_mitigation_mode=mode)
    client = await Client.connect(port)
    client.send(b"GET / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n")
    if allowed:
        response = await client.response()
        assert response.status == 200 and response.keep_alive
    else:
        assert (await client.read_all()).startswith(b"HTTP/1.1 400 ")
        assert backend.requests == []
    assert (await listener_stats(proc))["non_compliant_requests"] == 1


async def test_pipelined_request_after_an_ambiguous_one_is_not_served_in_defensive_mode(alb: Alb) -> None:
    _, port, backend = await alb()
    client = await Client.connect(port)
    client.send(
        b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\nx"
        b"GET /second HTTP/1.1\r\n" + H + b"\r\n"
    )
    answer = await client.read_all()
    assert answer.count(b"HTTP/1.1 ") == 1 and answer.startswith(b"HTTP/1.1 200 ")
    assert [r.target for r in backend.requests] == ["/echo"]


SMUGGLED = b"GET /smuggled HTTP/1.1\r\n" + H + b"\r\n"


@pytest.mark.parametrize("mode", ["monitor", "defensive", "strictest"])
@pytest.mark.parametrize(
    ("nominated", "framing"),
    [
        ("Content-Length", b"Content-Length: %d\r\n" % len(SMUGGLED)),
        ("content-length, keep-alive", b"Content-Length: %d\r\n" % len(SMUGGLED)),
        (
            "Transfer-Encoding",
            b"Transfer-Encoding: chunked\r\n",
        ),
        ("Host", b"Content-Length: %d\r\n" % len(SMUGGLED)),
    ],
)
async def test_connection_cannot_nominate_framing_or_host(
    alb: Alb, mode: str, nominated: str, framing: bytes
) -> None:
    """A Connection header naming Content-Length, Transfer-Encoding or Host must not strip them: the body
    would reach the target unframed and run there as a second request (request smuggling)."""
    _, port, backend = await alb(desync_mitigation_mode=mode)
    body = b"%x\r\n%b\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED) if b"chunked" in framing else SMUGGLED
    client = await Client.connect(port)
    client.send(
        b"POST /echo HTTP/1.1\r\n"
        + H
        + b"Connection: "
        + nominated.encode()
        + b"\r\n"
        + framing
        + b"\r\n"
        + body
    )
    response = await client.response()
    assert response.status == 200 and response.body == SMUGGLED
    assert (await client.request("GET", "/after")).status == 200
    assert [r.target for r in backend.requests] == ["/echo", "/after"]
    assert backend.requests[0].body == SMUGGLED
    assert (backend.requests[0].header("host") or "").startswith("example.com")
