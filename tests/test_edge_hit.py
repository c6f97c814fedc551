"""Cache hits answered from one read (lbd/edge/hit.py) against the full path (handler.py).

The head scanner's choices are checked on their own; then a distribution's viewer connection is fed the
same request whole (the one-read path) and split in two reads (which always takes the full path,
httptools and handler.py), and both answers must be the same bytes but for the request id, with the same
counters. In process, with a recording transport: what is compared is exactly what lbd writes.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, cast

import pytest

from lbd.cache.freshness import response_freshness
from lbd.config.loader import parse_config
from lbd.edge.access_log import FIELDS
from lbd.edge.handler import EdgeRequest, ViewerRequest
from lbd.edge.hit import request_id, scan_request
from lbd.edge.runtime import EdgeListenerRuntime
from lbd.edge.server import EdgeClientSide
from lbd.edge.store import STATE
from lbd.http.upstream import UpstreamPool
from lbd.listener.tracker import ConnectionTracker
from lbd.observe.stats import StatsRegistry
from lbd.runtime import Snapshot

# -- the scanner -------------------------------------------------------------------------------------------


def test_simple_gets_and_heads_are_scanned_into_the_full_paths_fields() -> None:
    scanned = scan_request(
        b"GET /a/b.css?v=1&x HTTP/1.1\r\nHost: example.com\r\nAccept-Encoding: \t gzip, br\r\n"
        b"Cookie: a=1\r\ncookie: b=2\r\nX-Many: 1\r\nX-many: 2\r\n\r\n"
    )
    assert scanned == (
        "GET",
        "/a/b.css",
        "v=1&x",
        {"host": "example.com", "accept-encoding": "gzip, br", "cookie": "a=1; b=2", "x-many": "1, 2"},
        True,
        "1.1",
    )
    head = scan_request(b"HEAD / HTTP/1.0\r\nHost: h\r\n\r\n")
    assert head == ("HEAD", "/", "", {"host": "h"}, False, "1.0")


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\nHost: h\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\nHost: h\r\nConnection: Keep-Alive\r\n\r\n", True),
    ],
)
def test_keep_alive_follows_rfc_9112_section_9_3(head: bytes, keep_alive: bool) -> None:
    scanned = scan_request(head)
    assert scanned is not None and scanned[4] is keep_alive


@pytest.mark.parametrize(
    "head",
    [
        b"POST / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"OPTIONS / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: x-drop-me\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nRange: bytes=0-1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nIf-Range: x\r\n\r\n",
        b'GET / HTTP/1.1\r\nHost: h\r\nIf-None-Match: "x"\r\n\r\n',
        b"GET / HTTP/1.1\r\nHost: h\r\nIF-MODIFIED-SINCE: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n",  # split: the rest comes in the next read
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",  # pipelined
        b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",  # absolute-form
        b"GET /#f HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\n\r\n",
        b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
        b"GET / HTTP/1.1\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9\r\n\r\n",  # obs-text
        b"GET / HTTP/1.1\r\nHost: h \r\n\r\n",  # trailing whitespace
        b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
    ],
)
def test_anything_else_declines_to_the_full_path(head: bytes) -> None:
    assert scan_request(head) is None


def test_request_ids_are_56_url_safe_characters_and_unique() -> None:
    ids = [request_id() for _ in range(1000)]  # more than one batch
    assert all(re.fullmatch(rb"[A-Za-z0-9_-]{56}", i) for i in ids)
    assert len(set(ids)) == len(ids)


# -- the one-read path against the full path ---------------------------------------------------------------

CONFIG = """
target_groups:
  - name: app
    protocol: HTTP
    health_check: {enabled: false}
    targets: [{id: 127.0.0.1, port: 9}]
distributions:
  - name: hits
    edge_name: pop1
    listeners: [{protocol: HTTP, port: 8080, address: 127.0.0.1}]
    origins: [{id: app, target_group: app}]
    cache_policies:
      - {name: keyed, query_strings: {whitelist: [v]}, headers: [x-variant], cookies: {whitelist: [s]}}
    cache_behaviors:
      - {path_pattern: /keyed/*, origin: app, cache_policy: keyed}
      - {path_pattern: /nocache/*, origin: app, cache_policy: CachingDisabled}
    default_cache_behavior: {origin: app, cache_policy: CachingOptimized}
"""


class Recorder:
    """The viewer connection's transport: what lbd writes, and whether it closed."""

    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def viewer(runtime: EdgeListenerRuntime) -> tuple[EdgeClientSide, Recorder]:
    conn = EdgeClientSide(runtime, ConnectionTracker(), UpstreamPool())
    transport = Recorder()
    conn.connection_made(cast(asyncio.Transport, transport))
    return conn, transport


@pytest.fixture
def runtime() -> EdgeListenerRuntime:
    STATE.caches.pop("hits", None)  # a fresh cache for each test
    snapshot = Snapshot.build(parse_config(CONFIG), 1, StatsRegistry())
    return cast(EdgeListenerRuntime, next(iter(snapshot.listeners.values())))


def store(
    runtime: EdgeListenerRuntime,
    request: bytes,
    headers: list[tuple[str, str]],
    body: bytes,
    status: int = 200,
) -> None:
    """Store a response as a miss for ``request`` stores it (handler.py's key, Vary and entry)."""
    conn, _ = viewer(runtime)
    line, *lines = request.split(b"\r\n\r\n")[0].decode().split("\r\n")
    method, target, _ = line.split(" ")
    path, _, query = target.partition("?")
    fields = [(n.lower(), v.strip()) for n, _, v in (item.partition(":") for item in lines)]
    work = EdgeRequest(conn, ViewerRequest(method, path, query, "1.1", fields, b"", True))
    dist = runtime.distribution
    work.behavior = next((b for b in dist.behaviors if b.matches(path)), dist.default)
    fields_of = {n.lower(): v for n, v in headers}
    freshness = response_freshness(status, fields_of, work.behavior.policy.ttl, time.time())
    work.primary_key()
    key = work._store_key(fields_of)
    assert key is not None
    entry = work._entry(status, headers, body, time.time() - 5, freshness)
    assert dist.cache.put(key, entry, freshness.ttl, dist.cache.epoch)


class NoParser:
    def feed_data(self, data: bytes) -> None:
        raise AssertionError("the full path parsed a request the one-read path should answer")


def answer(
    runtime: EdgeListenerRuntime, request: bytes, split: bool, one_read: bool = False
) -> tuple[bytes, bool, dict[str, Any]]:
    """What the viewer gets for ``request`` sent whole or in two reads (the full path), the request id
    masked; whether the connection closed; the distribution's counters after. ``one_read``: the parser
    must not be used (the one-read path answers)."""
    conn, transport = viewer(runtime)
    if one_read:
        conn.parser = cast(Any, NoParser())
    if split:
        conn.data_received(request[:10])
        conn.data_received(request[10:])
    else:
        conn.data_received(request)
    report = runtime.distribution.cache.report()
    masked = re.sub(rb"X-Amz-Cf-Id: [A-Za-z0-9_-]{56}\r\n", b"X-Amz-Cf-Id: ID\r\n", transport.written)
    return masked, transport.closed, report


ORIGIN = [("Content-Type", "text/css"), ("ETag", '"v1"'), ("Cache-Control", "max-age=600")]
GET = b"GET /static/app.css HTTP/1.1\r\nHost: example.com\r\nUser-Agent: test\r\n\r\n"


COUNTERS = ("requests", "results", "responses", "bytes_from_cache", "bytes_sent", "origin_requests")


def counted(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """What the counters gained between two reports."""
    out: dict[str, Any] = {}
    for name in COUNTERS:
        if isinstance(after[name], dict):
            out[name] = {k: v - before[name].get(k, 0) for k, v in after[name].items()}
        else:
            out[name] = after[name] - before[name]
    return out


def same_answers(runtime: EdgeListenerRuntime, request: bytes) -> bytes:
    """The answer to ``request``, checked to be the same from one read and from the full path, with
    the same counts (one hit each, nothing asked of the origin)."""
    start = runtime.distribution.cache.report()
    whole, whole_closed, middle = answer(runtime, request, split=False, one_read=True)
    split, split_closed, end = answer(runtime, request, split=True)
    assert whole == split
    assert whole_closed == split_closed
    assert counted(middle, start) == counted(end, middle)
    assert counted(middle, start)["results"]["hit"] == 1
    assert counted(middle, start)["origin_requests"] == 0
    return whole


async def test_a_hit_answers_alike_from_one_read_and_from_the_full_path(runtime: EdgeListenerRuntime) -> None:
    store(runtime, GET, ORIGIN, b"body{}")
    response = same_answers(runtime, GET)
    head, _, body = response.partition(b"\r\n\r\n")
    assert body == b"body{}"
    assert head.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: text/css\r\n")
    assert b"\r\nAge: 5\r\n" in head and b"\r\nX-Cache: Hit from pop1\r\n" in head
    assert b"\r\nVia: 1.1 pop1 (lbd)\r\nContent-Length: 6\r\nAccept-Ranges: bytes\r\n" in head
    report = runtime.distribution.cache.report()
    assert report["results"] == {"hit": 2} and report["bytes_from_cache"] == 12


@pytest.mark.parametrize(
    "request_head",
    [
        b"HEAD /static/app.css HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"GET /static/app.css HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
        b"GET /static/app.css HTTP/1.0\r\nHost: example.com\r\n\r\n",
        b"GET /static/app.css HTTP/1.1\r\nHost: example.com\r\nAccept-Encoding: identity\r\n\r\n",
    ],
)
async def test_heads_and_closing_connections_answer_alike(
    runtime: EdgeListenerRuntime, request_head: bytes
) -> None:
    store(runtime, request_head, ORIGIN, b"body{}")
    same_answers(runtime, request_head)


async def test_keys_with_query_strings_headers_cookies_and_vary_answer_alike(
    runtime: EdgeListenerRuntime,
) -> None:
    def get(query: str, variant: str, cookie: str, language: str) -> bytes:
        return (
            f"GET /keyed/x?{query} HTTP/1.1\r\nHost: h\r\nX-Variant: {variant}\r\nCookie: {cookie}\r\n"
            f"Accept-Language: {language}\r\n\r\n"
        ).encode()

    headers = [*ORIGIN, ("Vary", "Accept-Language")]
    store(runtime, get("v=1&z=9", "a", "s=1; t=2", "en"), headers, b"one")
    store(runtime, get("v=2", "a", "s=1", "en"), headers, b"two")
    store(runtime, get("v=1", "b", "s=1", "en"), headers, b"three")
    store(runtime, get("v=1", "a", "s=1", "fr"), headers, b"four")
    assert same_answers(runtime, get("z=0&v=1", "a", "s=1; t=3", "en")).endswith(b"\r\n\r\none")
    assert same_answers(runtime, get("v=2", "a", "s=1", "en")).endswith(b"\r\n\r\ntwo")
    assert same_answers(runtime, get("v=1", "b", "s=1", "en")).endswith(b"\r\n\r\nthree")
    assert same_answers(runtime, get("v=1", "a", "s=1", "fr")).endswith(b"\r\n\r\nfour")


async def test_compressed_variants_and_cached_errors_answer_alike(runtime: EdgeListenerRuntime) -> None:
    br = b"GET /static/app.js HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip, br\r\n\r\n"
    plain = b"GET /static/app.js HTTP/1.1\r\nHost: h\r\n\r\n"
    store(runtime, br, [*ORIGIN, ("Content-Encoding", "br"), ("Vary", "Accept-Encoding")], b"BR")
    store(runtime, plain, ORIGIN, b"PLAIN")
    assert same_answers(runtime, br).endswith(b"\r\n\r\nBR")
    assert same_answers(runtime, plain).endswith(b"\r\n\r\nPLAIN")
    missing = b"GET /static/gone HTTP/1.1\r\nHost: h\r\n\r\n"
    store(runtime, missing, [("Content-Type", "text/plain")], b"not here", status=404)
    response = same_answers(runtime, missing)
    assert response.startswith(b"HTTP/1.1 404 Not Found\r\n") and b"Accept-Ranges" not in response


async def test_what_the_one_read_path_declines_still_gets_its_full_answer(
    runtime: EdgeListenerRuntime,
) -> None:
    store(runtime, GET, ORIGIN, b"body{}")
    # A conditional request: a 304 from the stored validators (handler.py), not the one-read path's 200.
    conditional = GET[:-2] + b'If-None-Match: "v1"\r\n\r\n'
    response, _, report = answer(runtime, conditional, split=False)
    assert response.startswith(b"HTTP/1.1 304 Not Modified\r\n")
    # A method the behavior does not allow is refused by the full path.
    response, closed, _ = answer(runtime, b"DELETE /static/app.css HTTP/1.1\r\nHost: h\r\n\r\n", split=False)
    assert response.startswith(b"HTTP/1.1 403 Forbidden\r\n") and not closed
    assert report["results"] == {"hit": 1}


class LogSink:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, line: str) -> None:
        self.lines.append(line)


async def test_an_access_logged_hit_gets_the_full_paths_line(runtime: EdgeListenerRuntime) -> None:
    sink = LogSink()
    runtime.distribution.access_log = cast(Any, sink)
    request = b"GET /static/app.css?a=1 HTTP/1.0\r\nHost: h\r\nUser-Agent: a b\r\nReferer: /r\r\n\r\n"
    store(runtime, request, ORIGIN, b"body{}")
    same_answers(runtime, request)
    one_read, full = (line.split("\t") for line in sink.lines)
    for field in ("date", "time", "x-edge-request-id", "time-taken", "time-to-first-byte"):
        at = FIELDS.index(field)
        one_read[at] = full[at] = "-"
    assert one_read == full
    assert full[FIELDS.index("x-edge-result-type")] == "Hit"
    assert full[FIELDS.index("cs(User-Agent)")] == "a%20b"
    assert full[FIELDS.index("cs-protocol-version")] == "HTTP/1.0"
