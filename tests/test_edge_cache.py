"""Distributions end to end: a real lbd with one distribution in front of real aiohttp origins.

Each test uses its own paths, so one lbd (one worker: one cache) serves the whole module; what reaches
the origins is counted there.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import brotli
import pytest
import pytest_asyncio

from tests.edge_origin import Answer, Origin
from tests.lbdproc import Lbd, free_port, http_request, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "s3cr3t-origin-header"


@dataclass
class Edge:
    lbd: Lbd
    port: int
    main: Origin
    backup: Origin
    flaky: Origin

    async def get(self, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        return await http_request(self.port, "GET", path, headers=headers)

    async def request(self, method: str, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        return await http_request(self.port, method, path, headers=headers)

    async def metric(self, name: str, **labels: str) -> float:
        _, _, text = await http_request(self.lbd.admin_port, "GET", "/metrics")
        wanted = "".join(f'{k}="{v}"' for k, v in labels.items())
        for line in text.decode().splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no {name}{{{wanted}}} in /metrics")


def group(name: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "protocol": "HTTP",
        "health_check": {"enabled": False},
        "targets": [{"id": "127.0.0.1", "port": port}],
    }


def distribution(port: int) -> dict[str, Any]:
    return {
        "name": "site",
        "listeners": [{"protocol": "HTTP", "port": port, "address": "127.0.0.1"}],
        "origins": [
            {"id": "main", "target_group": "main", "origin_access": {"type": "header", "secret": SECRET}},
            {"id": "backup", "target_group": "backup"},
            {"id": "flaky", "target_group": "flaky"},
            {"id": "dead", "target_group": "dead"},
        ],
        "origin_groups": [
            {"id": "ha", "members": ["main", "backup"], "failover_status_codes": [500, 503]},
            {"id": "ha-dead", "members": ["dead", "backup"]},
        ],
        "cache_policies": [
            {"name": "ttl", "min_ttl": 0, "default_ttl": 30},
            {"name": "capped", "min_ttl": 0, "default_ttl": 2, "max_ttl": 2},
            {"name": "floor", "min_ttl": 60},
            {
                "name": "keyed",
                "query_strings": {"whitelist": ["v"]},
                "headers": ["X-Variant"],
                "cookies": {"whitelist": ["session"]},
            },
        ],
        "default_cache_behavior": {"origin": "main", "cache_policy": "ttl"},
        "cache_behaviors": [
            {
                "path_pattern": "/static/*",
                "origin": "main",
                "cache_policy": "CachingOptimized",
                "compress": True,
            },
            {"path_pattern": "/q/*", "origin": "main", "cache_policy": "keyed"},
            {"path_pattern": "/off/*", "origin": "main", "cache_policy": "CachingDisabled"},
            {"path_pattern": "/floor/*", "origin": "main", "cache_policy": "floor"},
            {"path_pattern": "/capped/*", "origin": "main", "cache_policy": "capped"},
            {"path_pattern": "/ha/*", "origin": "ha", "cache_policy": "CachingDisabled"},
            {"path_pattern": "/dead/*", "origin": "ha-dead", "cache_policy": "CachingDisabled"},
            {"path_pattern": "/flaky/*", "origin": "flaky", "cache_policy": "ttl"},
            {
                "path_pattern": "/api/*",
                "origin": "main",
                "cache_policy": "CachingDisabled",
                "allowed_methods": "ALL",
            },
            {"path_pattern": "/img?/*.png", "origin": "backup", "cache_policy": "ttl"},
        ],
        "cache": {"max_object_mb": 1},  # larger objects stream through uncached
        "custom_error_responses": [
            {"error_code": 404, "error_caching_min_ttl": 300},
            {"error_code": 502, "response_page_path": "/static/oops.html", "response_code": 503},
        ],
    }


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def edge(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Edge]:
    main, backup, flaky = Origin("main"), Origin("backup"), Origin("flaky")
    for origin in (main, backup, flaky):
        await origin.start()
    # A port bound but not listening: connections to it are refused, and nothing else can take it.
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    main.routes["/static/oops.html"] = Answer(body=b"<h1>sorry</h1>", headers={"Content-Type": "text/html"})
    port = free_port()
    config = {
        "node": {"workers": 1},
        "target_groups": [
            group("main", main.port),
            group("backup", backup.port),
            group("flaky", flaky.port),
            group("dead", dead.getsockname()[1]),  # nothing listens there
        ],
        "distributions": [distribution(port)],
        "web_acls": [
            {
                "name": "edge-protect",
                "associations": [{"distribution": "site"}],
                "rules": [
                    {
                        "name": "admin-path",
                        "priority": 1,
                        "action": "block",
                        "statement": {
                            "byte_match": {
                                "field": "uri_path",
                                "positional": "STARTS_WITH",
                                "value": "/admin",
                                "transformations": ["URL_DECODE", "LOWERCASE"],
                            }
                        },
                    }
                ],
            }
        ],
    }
    lbd = Lbd(tmp_path_factory.mktemp("edge"), config)
    lbd.start()
    try:
        await lbd.wait_ready()
        yield Edge(lbd, port, main, backup, flaky)
    finally:
        lbd.stop()
        dead.close()
        for origin in (main, backup, flaky):
            await origin.stop()


# -- behaviors, hits, headers ------------------------------------------------------------------------------


async def test_a_second_request_is_a_hit_with_age_via_and_a_request_id(edge: Edge) -> None:
    edge.main.routes["/static/app.css"] = Answer(body=b"body{}", headers={"Cache-Control": "max-age=600"})
    status, first, body = await edge.get("/static/app.css")
    assert (status, body, first["x-cache"]) == (200, b"body{}", "Miss from lbd")
    assert "age" not in first
    status, second, body = await edge.get("/static/app.css")
    assert (status, body, second["x-cache"]) == (200, b"body{}", "Hit from lbd")
    assert int(second["age"]) >= 0
    assert second["via"] == "1.1 lbd (lbd)"
    assert re.fullmatch(r"[A-Za-z0-9_-]{56}", second["x-amz-cf-id"])
    assert second["x-amz-cf-id"] != first["x-amz-cf-id"]
    assert edge.main.hits["/static/app.css"] == 1
    seen = edge.main.last("/static/app.css")
    assert seen.headers["x-origin-secret"] == SECRET  # origin access: the secret header
    assert seen.headers["x-amz-cf-id"] == first["x-amz-cf-id"]
    assert seen.headers["user-agent"] == "Amazon CloudFront"
    assert seen.headers["x-forwarded-for"] == "127.0.0.1"
    assert "1.1 lbd (lbd)" in seen.headers["via"]


async def test_pipelined_requests_are_answered_in_order_on_one_connection(edge: Edge) -> None:
    edge.main.routes["/static/pipe-a"] = Answer(body=b"aaa", headers={"Cache-Control": "max-age=600"})
    edge.main.routes["/static/pipe-b"] = Answer(body=b"bbbb", headers={"Cache-Control": "max-age=600"})
    await edge.get("/static/pipe-a")
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    request = b"GET /static/pipe-%b HTTP/1.1\r\nHost: x\r\n%b\r\n"
    writer.write(request % (b"a", b"") + request % (b"b", b"") + request % (b"a", b"Connection: close\r\n"))
    raw = await asyncio.wait_for(reader.read(-1), 20)
    writer.close()
    answers = re.findall(rb"X-Cache: (\w+) from lbd.*?\r\n\r\n(a{3}|b{4})", raw, re.S)
    assert answers == [(b"Hit", b"aaa"), (b"Miss", b"bbbb"), (b"Hit", b"aaa")]


async def test_behaviors_match_in_order_with_wildcards_case_sensitively(edge: Edge) -> None:
    edge.backup.routes["/img1/a/b.png"] = Answer(body=b"png")
    edge.main.routes["/IMG1/a/b.png"] = Answer(body=b"main")
    assert (await edge.get("/img1/a/b.png"))[2] == b"png"  # ? is one character, * crosses slashes
    assert (await edge.get("/IMG1/a/b.png"))[2] == b"main"  # case-sensitive: the default behavior
    assert edge.backup.hits["/img1/a/b.png"] == 1 and edge.main.hits["/IMG1/a/b.png"] == 1


async def test_a_method_the_behavior_does_not_allow_is_refused(edge: Edge) -> None:
    status, headers, _ = await edge.request("POST", "/static/app.css")
    assert status == 403 and headers["x-cache"] == "Error from lbd"
    edge.main.routes["/api/items"] = Answer(status=201, body=b"made")
    status, headers, body = await edge.request("POST", "/api/items", Cookie="a=1")
    assert (status, body, headers["x-cache"]) == (201, b"made", "Miss from lbd")
    seen = edge.main.last("/api/items")
    assert seen.method == "POST" and seen.headers["cookie"] == "a=1"  # uncached: the viewer's fields


async def test_expect_100_continue_gets_its_interim_answer_before_the_body(edge: Edge) -> None:
    edge.main.routes["/api/upload"] = lambda seen: Answer(status=201, body=b"got %d" % len(seen.body))
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(
        b"POST /api/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
        b"Connection: close\r\n\r\n"
    )
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hello")
    final = await asyncio.wait_for(reader.read(-1), 20)
    writer.close()
    assert final.startswith(b"HTTP/1.1 201 ") and final.endswith(b"got 5")


# -- TTL rules ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cache_control", "cached"),
    [
        ("no-store", "no-store", False),
        ("no-cache", "no-cache", False),
        ("private", "private, max-age=60", False),
        ("max-age-0", "max-age=0", False),
        ("s-maxage-wins", "s-maxage=60, max-age=0", True),
        ("max-age", "max-age=60", True),
        ("absent", None, True),  # DefaultTTL (30 s in this policy)
    ],
)
async def test_cache_control_directives(
    edge: Edge, name: str, cache_control: str | None, cached: bool
) -> None:
    path = f"/ttl/{name}"
    edge.main.routes[path] = Answer(headers={"Cache-Control": cache_control} if cache_control else {})
    await edge.get(path)
    _, headers, _ = await edge.get(path)
    assert edge.main.hits[path] == (1 if cached else 2)
    assert headers["x-cache"] == ("Hit from lbd" if cached else "Miss from lbd")
    assert headers.get("cache-control") == cache_control  # viewers get the origin's own header


async def test_expires_is_a_lifetime_and_a_past_one_is_not(edge: Edge) -> None:
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120))
    edge.main.routes["/ttl/expires"] = Answer(headers={"Expires": future})
    edge.main.routes["/ttl/expired"] = Answer(headers={"Expires": "Thu, 01 Jan 1970 00:00:00 GMT"})
    for path in ("/ttl/expires", "/ttl/expired"):
        await edge.get(path)
        await edge.get(path)
    assert edge.main.hits["/ttl/expires"] == 1
    assert edge.main.hits["/ttl/expired"] == 2


async def test_min_ttl_caches_no_cache_responses(edge: Edge) -> None:
    edge.main.routes["/floor/x"] = Answer(headers={"Cache-Control": "no-cache"})
    await edge.get("/floor/x")
    _, headers, _ = await edge.get("/floor/x")
    assert edge.main.hits["/floor/x"] == 1 and headers["x-cache"] == "Hit from lbd"


async def test_max_ttl_bounds_the_origin_lifetime(edge: Edge) -> None:
    # The policy's MaxTTL is 2 s: an origin max-age of a day is cut to that, so the object is fetched
    # again once 2 s have passed.
    edge.main.routes["/capped/x"] = Answer(headers={"Cache-Control": "max-age=86400"})
    await edge.get("/capped/x")
    started = time.monotonic()

    async def fetched_again() -> bool:
        await edge.get("/capped/x")
        return edge.main.hits["/capped/x"] == 2

    await wait_for(fetched_again, interval=0.2, what="the capped object to expire")
    assert time.monotonic() - started >= 1.5


async def test_caching_disabled_sends_every_request_to_the_origin(edge: Edge) -> None:
    edge.main.routes["/off/x"] = Answer(headers={"Cache-Control": "max-age=600"})
    for _ in range(3):
        _, headers, _ = await edge.get("/off/x")
        assert headers["x-cache"] == "Miss from lbd"
    assert edge.main.hits["/off/x"] == 3
    # Through the load balancer's keep-alive pool: the three went over one origin connection.
    assert len({s.peer for s in edge.main.seen if s.path == "/off/x"}) == 1


# -- cache keys and Vary -----------------------------------------------------------------------------------


async def test_keys_hold_the_chosen_query_strings_headers_and_cookies_only(edge: Edge) -> None:
    edge.main.routes["/q/item"] = lambda seen: Answer(
        body=f"{seen.query}|{seen.headers.get('x-variant')}|{seen.headers.get('cookie')}".encode(),
        headers={"Cache-Control": "max-age=600"},
    )
    assert (await edge.get("/q/item?v=1&utm=a", Cookie="session=s1; tracking=t"))[2] == b"v=1|None|session=s1"
    assert (await edge.get("/q/item?utm=b&v=1", Cookie="tracking=u; session=s1"))[2] == b"v=1|None|session=s1"
    assert edge.main.hits["/q/item"] == 1  # utm and tracking are not in the key, nor sent
    assert (await edge.get("/q/item?v=2", Cookie="session=s1"))[2] == b"v=2|None|session=s1"
    assert (await edge.get("/q/item?v=1", Cookie="session=s2"))[2] == b"v=1|None|session=s2"
    assert (await edge.get("/q/item?v=1", Cookie="session=s1", **{"X-Variant": "b"}))[
        2
    ] == b"v=1|b|session=s1"
    assert edge.main.hits["/q/item"] == 4


async def test_vary_keeps_variants_apart(edge: Edge) -> None:
    edge.main.routes["/ttl/vary"] = lambda seen: Answer(
        body=(seen.headers.get("accept-language") or "none").encode(),
        headers={"Cache-Control": "max-age=600", "Vary": "Accept-Language"},
    )
    assert (await edge.get("/ttl/vary", **{"Accept-Language": "fr"}))[2] == b"fr"
    assert (await edge.get("/ttl/vary", **{"Accept-Language": "de"}))[2] == b"de"
    _, headers, body = await edge.get("/ttl/vary", **{"Accept-Language": "fr"})
    assert (body, headers["x-cache"]) == (b"fr", "Hit from lbd")
    # The first request is asked again with Accept-Language once Vary says it matters; then one each.
    assert edge.main.hits["/ttl/vary"] == 3


async def test_vary_star_is_never_stored(edge: Edge) -> None:
    edge.main.routes["/ttl/vary-star"] = Answer(headers={"Cache-Control": "max-age=600", "Vary": "*"})
    await edge.get("/ttl/vary-star")
    await edge.get("/ttl/vary-star")
    assert edge.main.hits["/ttl/vary-star"] == 2


# -- freshness: revalidation, stale content, collapsing --------------------------------------------------


async def test_an_expired_entry_is_revalidated_and_a_304_refreshes_it(edge: Edge) -> None:
    def answer(seen: Any) -> Answer:
        if seen.headers.get("if-none-match") == '"v1"':
            return Answer(status=304, body=b"", headers={"ETag": '"v1"', "Cache-Control": "max-age=1"})
        return Answer(body=b"version one", headers={"ETag": '"v1"', "Cache-Control": "max-age=1"})

    edge.main.routes["/ttl/reval"] = answer
    await edge.get("/ttl/reval")

    async def refreshed() -> tuple[int, dict[str, str], bytes] | None:
        reply = await edge.get("/ttl/reval")
        return reply if reply[1]["x-cache"] == "RefreshHit from lbd" else None

    status, headers, body = await wait_for(refreshed, interval=0.2, what="a RefreshHit")
    assert (status, body, headers["etag"]) == (200, b"version one", '"v1"')
    assert edge.main.last("/ttl/reval").headers["if-none-match"] == '"v1"'
    assert all(
        s.headers.get("if-none-match") in (None, '"v1"') for s in edge.main.seen if s.path == "/ttl/reval"
    )


async def test_stale_while_revalidate_answers_from_the_cache_and_refreshes_behind(edge: Edge) -> None:
    edge.main.routes["/ttl/swr"] = Answer(
        body=b"old", headers={"Cache-Control": "max-age=1, stale-while-revalidate=60"}
    )
    await edge.get("/ttl/swr")
    edge.main.routes["/ttl/swr"] = Answer(body=b"new", headers={"Cache-Control": "max-age=600"})

    async def new_body() -> bool:
        _, headers, body = await edge.get("/ttl/swr")
        assert headers["x-cache"] == "Hit from lbd"  # never a miss: stale copies answer meanwhile
        return body == b"new"

    await wait_for(new_body, interval=0.1, what="the background refresh")
    assert edge.main.hits["/ttl/swr"] == 2


async def test_stale_if_error_serves_the_expired_copy_while_the_origin_is_down(edge: Edge) -> None:
    edge.flaky.routes["/flaky/page"] = Answer(
        body=b"still here", headers={"Cache-Control": "max-age=1, stale-if-error=600"}
    )
    edge.flaky.routes["/flaky/never"] = Answer(
        body=b"x", headers={"Cache-Control": "max-age=1, stale-if-error=0"}
    )
    await edge.get("/flaky/page")
    await edge.get("/flaky/never")
    port = edge.flaky.port
    await edge.flaky.stop()  # the origin is gone: connections are refused
    try:
        await asyncio.sleep(0)

        async def expired() -> bool:
            _, headers, _ = await edge.get("/flaky/never")
            return headers["x-cache"] != "Hit from lbd"

        await wait_for(expired, interval=0.2, what="the entries to expire")
        status, _, body = await edge.get("/flaky/page")
        assert (status, body) == (200, b"still here")
        status, _, _ = await edge.get("/flaky/never")
        assert status in (502, 503)  # stale-if-error=0: the error, not the stale copy
    finally:
        await edge.flaky.start(port)


async def test_concurrent_misses_make_one_origin_request(edge: Edge) -> None:
    gate = asyncio.Event()
    edge.main.routes["/static/hot.js"] = Answer(
        body=b"x" * 5000, headers={"Cache-Control": "max-age=600"}, gate=gate
    )
    requests = [asyncio.ensure_future(edge.get("/static/hot.js")) for _ in range(100)]

    async def all_waiting() -> bool:
        return await edge.metric("lbd_edge_collapsed_waiting", distribution="site") == 99

    await wait_for(all_waiting, interval=0.1, what="99 requests waiting on the first")
    gate.set()
    replies = await asyncio.gather(*requests)
    assert all(status == 200 and body == b"x" * 5000 for status, _, body in replies)
    assert edge.main.hits["/static/hot.js"] == 1
    results = sorted(headers["x-cache"] for _, headers, _ in replies)
    assert results.count("Miss from lbd") == 1 and results.count("Hit from lbd") == 99


# -- ranges, HEAD, conditional requests -------------------------------------------------------------------


async def test_ranges_are_served_from_the_cached_object(edge: Edge) -> None:
    data = bytes(range(256)) * 40
    edge.main.routes["/ttl/blob"] = Answer(body=data, headers={"Cache-Control": "max-age=600"})
    status, headers, body = await edge.get("/ttl/blob", Range="bytes=100-199")
    assert (status, body, headers["content-range"]) == (206, data[100:200], f"bytes 100-199/{len(data)}")
    assert "range" not in edge.main.last("/ttl/blob").headers  # the whole object was fetched
    status, headers, body = await edge.get("/ttl/blob", Range="bytes=-10")
    assert (status, body) == (206, data[-10:])
    status, headers, _ = await edge.get("/ttl/blob", Range=f"bytes={len(data)}-")
    assert (status, headers["content-range"]) == (416, f"bytes */{len(data)}")
    status, _, body = await edge.get("/ttl/blob", Range="bytes=50-10")  # invalid: the whole object
    assert (status, body) == (200, data)
    assert edge.main.hits["/ttl/blob"] == 1


async def test_head_is_answered_from_the_get_entry(edge: Edge) -> None:
    edge.main.routes["/ttl/headme"] = Answer(body=b"twelve bytes", headers={"Cache-Control": "max-age=600"})
    await edge.get("/ttl/headme")
    status, headers, body = await edge.request("HEAD", "/ttl/headme")
    assert (status, body, headers["content-length"], headers["x-cache"]) == (200, b"", "12", "Hit from lbd")
    assert edge.main.hits["/ttl/headme"] == 1


async def test_conditional_viewer_requests_get_304_from_the_cache(edge: Edge) -> None:
    edge.main.routes["/ttl/etag"] = Answer(
        body=b"tagged", headers={"Cache-Control": "max-age=600", "ETag": '"t1"'}
    )
    await edge.get("/ttl/etag")
    status, headers, body = await edge.get("/ttl/etag", **{"If-None-Match": '"t1"'})
    assert (status, body, headers["etag"]) == (304, b"", '"t1"')
    assert edge.main.hits["/ttl/etag"] == 1


# -- compression -------------------------------------------------------------------------------------------


async def test_gzip_and_brotli_are_negotiated_and_cached_apart(edge: Edge) -> None:
    text = b"".join(b"line %d of a stylesheet that compresses well\n" % i for i in range(200))
    edge.main.routes["/static/big.css"] = Answer(
        body=text, headers={"Cache-Control": "max-age=600", "Content-Type": "text/css", "ETag": '"c1"'}
    )
    _, headers, body = await edge.get("/static/big.css", **{"Accept-Encoding": "gzip"})
    assert headers["content-encoding"] == "gzip" and gzip.decompress(body) == text
    assert headers["etag"] == 'W/"c1"' and "Accept-Encoding" in headers["vary"]
    _, headers, body = await edge.get("/static/big.css", **{"Accept-Encoding": "gzip, br"})
    assert headers["content-encoding"] == "br" and brotli.decompress(body) == text
    _, headers, body = await edge.get("/static/big.css")
    assert "content-encoding" not in headers and body == text
    _, headers, body = await edge.get("/static/big.css", **{"Accept-Encoding": "br;q=1, gzip;q=0.5"})
    assert headers["x-cache"] == "Hit from lbd" and brotli.decompress(body) == text
    assert edge.main.hits["/static/big.css"] == 3  # one per variant: br,gzip / br are apart too
    assert {s.headers["accept-encoding"] for s in edge.main.seen if s.path == "/static/big.css"} == {
        "gzip",
        "br,gzip",
        "identity",
    }


async def test_small_encoded_or_binary_objects_are_not_compressed(edge: Edge) -> None:
    edge.main.routes["/static/small.css"] = Answer(body=b"a{}", headers={"Content-Type": "text/css"})
    edge.main.routes["/static/photo.jpg"] = Answer(body=b"j" * 5000, headers={"Content-Type": "image/jpeg"})
    edge.main.routes["/static/pre.js"] = Answer(
        body=gzip.compress(b"x" * 5000),
        headers={"Content-Type": "text/javascript", "Content-Encoding": "gzip"},
    )
    for path in ("/static/small.css", "/static/photo.jpg"):
        _, headers, _ = await edge.get(path, **{"Accept-Encoding": "gzip, br"})
        assert "content-encoding" not in headers, path
    _, headers, body = await edge.get("/static/pre.js", **{"Accept-Encoding": "gzip, br"})
    assert headers["content-encoding"] == "gzip" and gzip.decompress(body) == b"x" * 5000


# -- objects larger than the cache takes --------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True])
async def test_objects_over_max_object_size_stream_through_uncached(edge: Edge, chunked: bool) -> None:
    data = bytes(range(256)) * 12_000  # 3 MiB: over the 1 MiB max_object_mb
    path = f"/ttl/huge-{chunked}"
    edge.main.routes[path] = Answer(body=data, chunked=chunked, headers={"Cache-Control": "max-age=600"})
    for _ in range(2):
        status, headers, body = await edge.get(path)
        assert (status, headers["x-cache"]) == (200, "Miss from lbd")
        assert body == data if not chunked else _dechunk(body) == data
    assert edge.main.hits[path] == 2


async def test_a_miss_streams_to_the_viewer_while_it_is_stored(edge: Edge) -> None:
    data = bytes(range(256)) * 1000  # 250 KiB: cacheable (under max_object_mb)
    hold = asyncio.Event()
    edge.main.routes["/ttl/slow"] = Answer(
        body=data, chunked=True, hold=hold, headers={"Cache-Control": "max-age=600"}
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"GET /ttl/slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
    first = await asyncio.wait_for(reader.read(1), 20)  # the first chunk came before the origin finished
    assert head.startswith(b"HTTP/1.1 200") and b"Miss from lbd" in head and first
    hold.set()
    rest = await asyncio.wait_for(reader.read(-1), 20)
    writer.close()
    assert _dechunk(first + rest) == data
    status, headers, body = await edge.get("/ttl/slow")
    assert (status, headers["x-cache"], body) == (200, "Hit from lbd", data)
    assert edge.main.hits["/ttl/slow"] == 1


async def test_a_range_of_an_object_too_large_to_store_is_asked_of_the_origin(edge: Edge) -> None:
    data = bytes(range(256)) * 8192  # 2 MiB: over max_object_mb

    def answer(seen: Any) -> Answer:
        wanted = seen.headers.get("range")
        if wanted is None:
            return Answer(body=data, headers={"Cache-Control": "max-age=600"})
        first, _, last = wanted.removeprefix("bytes=").partition("-")
        part = data[int(first) : int(last) + 1]
        return Answer(status=206, body=part, headers={"Content-Range": f"bytes {first}-{last}/{len(data)}"})

    edge.main.routes["/ttl/video"] = answer
    status, headers, body = await edge.get("/ttl/video", Range="bytes=1000-1099")
    assert (status, body, headers["content-range"]) == (206, data[1000:1100], f"bytes 1000-1099/{len(data)}")
    assert edge.main.last("/ttl/video").headers["range"] == "bytes=1000-1099"


def _dechunk(raw: bytes) -> bytes:
    out, at = [], 0
    while True:
        line_end = raw.index(b"\r\n", at)
        size = int(raw[at:line_end], 16)
        if size == 0:
            return b"".join(out)
        out.append(raw[line_end + 2 : line_end + 2 + size])
        at = line_end + 4 + size


# -- errors and origin groups -----------------------------------------------------------------------------


async def test_404_is_cached_for_the_error_caching_min_ttl(edge: Edge) -> None:
    status, headers, _ = await edge.get("/ttl/missing")
    assert (status, headers["x-cache"]) == (404, "Error from lbd")
    status, _, _ = await edge.get("/ttl/missing")
    assert status == 404 and edge.main.hits["/ttl/missing"] == 1


async def test_custom_error_page_and_response_code(edge: Edge) -> None:
    edge.main.routes["/ttl/broken"] = Answer(status=502, body=b"upstream trouble")
    status, headers, body = await edge.get("/ttl/broken")
    assert (status, body, headers["x-cache"]) == (503, b"<h1>sorry</h1>", "Error from lbd")


async def test_origin_group_fails_over_on_a_configured_status(edge: Edge) -> None:
    edge.main.routes["/ha/x"] = Answer(status=503, body=b"down")
    edge.backup.routes["/ha/x"] = Answer(body=b"from backup")
    edge.main.routes["/ha/y"] = Answer(status=404, body=b"not here")  # not a failover code
    edge.backup.routes["/ha/y"] = Answer(body=b"wrong")
    assert (await edge.get("/ha/x"))[:3:2] == (200, b"from backup")
    assert (await edge.get("/ha/y"))[:3:2] == (404, b"not here")
    assert edge.main.hits["/ha/x"] == 1 and edge.backup.hits["/ha/x"] == 1 and edge.backup.hits["/ha/y"] == 0
    assert await edge.metric("lbd_edge_origin_failovers_total", distribution="site") >= 1


async def test_origin_group_fails_over_on_a_connection_error(edge: Edge) -> None:
    edge.backup.routes["/dead/x"] = Answer(body=b"secondary")
    status, _, body = await edge.get("/dead/x")
    assert (status, body) == (200, b"secondary")


async def test_a_web_acl_blocks_before_the_cache_and_the_origin(edge: Edge) -> None:
    edge.main.routes["/admin/panel"] = Answer(body=b"secret", headers={"Cache-Control": "max-age=600"})
    for path in ("/admin/panel", "/%41DMIN/panel"):
        status, headers, _ = await edge.get(path)
        assert (status, headers["x-cache"]) == (403, "Error from lbd"), path
    assert edge.main.hits["/admin/panel"] == 0
    assert await edge.metric("lbd_waf_blocked_requests_total", web_acl="edge-protect", rule="admin-path") == 2


async def test_metrics_count_results_and_bytes(edge: Edge) -> None:
    edge.main.routes["/static/counted"] = Answer(body=b"c" * 100, headers={"Cache-Control": "max-age=600"})
    before = await edge.metric("lbd_edge_requests_total", distribution="site", result="hit")
    await edge.get("/static/counted")
    await edge.get("/static/counted")
    assert await edge.metric("lbd_edge_requests_total", distribution="site", result="hit") == before + 1
    assert await edge.metric("lbd_edge_bytes_total", distribution="site", source="cache") >= 100
    assert await edge.metric("lbd_edge_origin_latency_seconds_count", distribution="site") >= 1


async def test_malformed_requests_get_400_and_a_closed_connection(edge: Edge) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: zz\r\n\r\n")
    data = await asyncio.wait_for(reader.read(-1), 10)
    writer.close()
    assert data.startswith(b"HTTP/1.1 400 ")
    status, _, _ = await edge.get("/x" + "a" * 9000)
    assert status == 413
