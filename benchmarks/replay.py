"""In-process replay: lbd's own per-request cost on the HTTP path, without sockets or the kernel.

A real Snapshot is built from a config, a client connection and a pooled target connection are given fake
transports whose ``write`` only records, and recorded requests and responses are fed to them in turn. What
is left is exactly the Python (or compiled) code lbd runs per request: recognising the request, rules,
X-Forwarded-* and trace id, target choice, the pool, the response, counters and bookkeeping.

    python -m benchmarks.replay [--requests N] [--scenario NAME]

Prints microseconds per request for each scenario (the process's CPU time, which other processes on a
shared machine do not inflate as they do wall-clock time) and whether the data path is compiled. Run it
before and after a data-path change; the socket-level harness (``python -m benchmarks``) measures the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import uvloop

from lbd import build
from lbd.config.loader import parse_config
from lbd.http.proxy import HttpClientSide
from lbd.http.upstream import HttpTargetSide, UpstreamPool
from lbd.listener.tracker import ConnectionTracker
from lbd.observe.stats import StatsRegistry
from lbd.runtime import HttpListenerRuntime, Snapshot

CONFIG = """
load_balancers:
  - name: replay
    type: application
    listeners:
      - protocol: HTTP
        port: 8080
        default_actions: [{type: forward, target_group: app}]
%s
target_groups:
  - name: app
    protocol: HTTP
    health_check: {enabled: false}
    targets: [{id: 127.0.0.1, port: 9001}]
"""

TWENTY_RULES = "        rules:\n" + "".join(
    f"          - priority: {n + 1}\n"
    f"            conditions: [{{field: path-pattern, values: ['/api/v{n}/*']}}]\n"
    "            actions: [{type: fixed-response, status_code: 404}]\n"
    for n in range(20)
)
# Rules without a path condition: every request builds a view of itself and each rule's host test runs.
TWENTY_HOST_RULES = "        rules:\n" + "".join(
    f"          - priority: {n + 1}\n"
    f"            conditions: [{{field: host-header, values: [api{n}.example.org, '*.v{n}.example.org']}}]\n"
    "            actions: [{type: fixed-response, status_code: 404}]\n"
    for n in range(20)
)

# A typical web ACL: an IP set, a path guard with transformations, a regex on the query, a counting
# header rule and a per-client rate limit (never reached here), all evaluated for every request.
WAF_5_RULES = """
web_acls:
  - name: protect
    associations: [{load_balancer: replay}]
    ip_sets: [{name: deny, addresses: ["192.0.2.0/24", "198.51.100.0/24", "2001:db8::/32"]}]
    rules:
      - {name: deny, priority: 1, action: block, statement: {ip_set: {name: deny}}}
      - {name: admin, priority: 2, action: block, statement: {byte_match: {field: uri_path,
         positional: STARTS_WITH, value: /admin, transformations: [URL_DECODE, LOWERCASE]}}}
      - {name: sqli, priority: 3, action: block, statement: {regex_match: {field: query_string,
         pattern: 'union\\s+select', transformations: [URL_DECODE, LOWERCASE]}}}
      - {name: scanner, priority: 4, action: count, rule_labels: ["bot:scanner"],
         statement: {byte_match: {field: single_header, header: User-Agent, positional: CONTAINS,
                                  value: sqlmap, transformations: [LOWERCASE]}}}
      - {name: flood, priority: 5, action: block, statement: {rate_based: {limit: 2000000000}}}
"""
WAF_20_RULES = WAF_5_RULES + "".join(
    f"      - {{name: path{n}, priority: {n + 10}, action: block, statement: {{byte_match: {{field: uri_path,"
    f" positional: CONTAINS, value: /secret{n}/, transformations: [URL_DECODE, LOWERCASE]}}}}}}\n"
    for n in range(15)
)


def _harness_acl() -> str:
    """The harness's http-waf web ACL (benchmarks/harness.py), on this load balancer."""
    from benchmarks.harness import SCENARIOS as HARNESS
    from benchmarks.harness import _web_acl

    return _web_acl(HARNESS["http-waf"]).replace("load_balancer: bench", "load_balancer: replay")


# The harness's ACL plus a rule on a header: the fast path's field lines searched for that one name.
WAF_HEADER_RULE = """      - {name: agent, priority: 100, action: block, statement: {byte_match: {
         field: single_header, header: User-Agent, positional: CONTAINS, value: sqlmap,
         transformations: [LOWERCASE]}}}
"""

SMALL_GET = b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
MANY_HEADERS = (
    b"GET /index.html HTTP/1.1\r\nHost: example.com\r\n"
    + b"".join(b"X-Header-%d: value number %d\r\n" % (i, i) for i in range(30))
    + b"\r\n"
)
BLOCKED_GET = b"GET /a/%53ECRET7/b HTTP/1.1\r\nHost: example.com\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
POST_BODY = b"POST /submit HTTP/1.1\r\nHost: example.com\r\nContent-Length: 11\r\n\r\nhello world"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Tue, 01 Dec 2026 08:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\nhello, world\n"
)


class FakeTransport:
    """Enough of an asyncio transport for lbd's protocols: writes are counted, never sent."""

    def __init__(self) -> None:
        self.written = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writelines(self, data: list[bytes]) -> None:
        for chunk in data:
            self.write(chunk)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def can_write_eof(self) -> bool:
        return False


@dataclass
class Scenario:
    name: str
    request: bytes
    rules: str = ""
    web_acls: str = ""
    blocked: bool = False  # the web ACL answers every request itself (403): no target response


SCENARIOS = [
    Scenario("small-get", SMALL_GET),
    Scenario("small-get-20-rules", SMALL_GET, TWENTY_RULES),
    Scenario("small-get-20-host-rules", SMALL_GET, TWENTY_HOST_RULES),
    Scenario("30-headers", MANY_HEADERS),
    Scenario("split-head", SMALL_GET),
    Scenario("post-body", POST_BODY),
    Scenario("small-get-waf-5-rules", SMALL_GET, web_acls=WAF_5_RULES),
    Scenario("small-get-waf-20-rules", SMALL_GET, web_acls=WAF_20_RULES),
    # The harness's http-waf ACL: allowed (the common case), blocked by its 17th rule, and with a header rule.
    Scenario("small-get-waf-harness", SMALL_GET, web_acls="<harness>"),
    Scenario("small-get-waf-harness-block", BLOCKED_GET, web_acls="<harness>", blocked=True),
    Scenario("small-get-waf-harness-header", SMALL_GET, web_acls="<harness>" + WAF_HEADER_RULE),
]


async def replay(scenario: Scenario, requests: int) -> float:
    """Nanoseconds per request for ``requests`` keep-alive exchanges on one client connection."""
    web_acls = scenario.web_acls.replace("<harness>", _harness_acl())
    snapshot = Snapshot.build(parse_config(CONFIG % scenario.rules + web_acls), 1, StatsRegistry())
    runtime = cast(HttpListenerRuntime, next(iter(snapshot.listeners.values())))
    target = snapshot.target_groups["app"].targets[0]
    pool = UpstreamPool()
    conn = HttpTargetSide(pool, target, pool.generation)
    conn.connection_made(cast(asyncio.Transport, FakeTransport()))
    pool.release(conn)
    client = HttpClientSide(runtime, ConnectionTracker(), pool)
    client.connection_made(cast(asyncio.Transport, FakeTransport()))
    feed: Callable[[bytes], None] = client.data_received
    answer: Callable[[bytes], None] = conn.data_received
    request = scenario.request
    halves = (request[:20], request[20:]) if scenario.name == "split-head" else None
    for _ in range(2):  # warm up: the pool hands the same connection back every time
        feed(request)
        if not scenario.blocked:
            answer(RESPONSE)
    started = time.process_time_ns()
    if scenario.blocked:
        for _ in range(requests):
            feed(request)
    elif halves is None:
        for _ in range(requests):
            feed(request)
            answer(RESPONSE)
    else:
        first, second = halves
        for _ in range(requests):
            feed(first)
            feed(second)
            answer(RESPONSE)
    elapsed = time.process_time_ns() - started
    if scenario.blocked:
        if runtime.stats.elb_statuses.get(403) != requests + 2:
            raise RuntimeError(f"{scenario.name}: not every request was blocked")
    elif runtime.stats.target_responses[2] != requests + 2:
        raise RuntimeError(f"{scenario.name}: not every request was answered")
    return elapsed / requests


EDGE_CONFIG = """
target_groups:
  - name: app
    protocol: HTTP
    health_check: {enabled: false}
    targets: [{id: 127.0.0.1, port: 9001}]
distributions:
  - name: replay
    listeners: [{protocol: HTTP, port: 8080, address: 127.0.0.1}]
    origins: [{id: app, target_group: app}]
    default_cache_behavior: {origin: app, cache_policy: CachingOptimized}
"""
# What wrk sends (the harness's cache scenario), and a browser-like request with a compressed variant.
EDGE_GETS = {
    "edge-hit": b"GET /small HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    "edge-hit-browser": (
        b"GET /small HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n"
        b"Accept: text/html,*/*;q=0.8\r\nAccept-Encoding: gzip, deflate, br\r\n"
        b"Accept-Language: en-GB,en;q=0.5\r\nCookie: session=abc123\r\nConnection: keep-alive\r\n\r\n"
    ),
}


async def replay_edge(name: str, requests: int) -> float:
    """Nanoseconds per cache hit on one keep-alive viewer connection of a distribution (the entry is
    stored first, as a miss would store it, so every measured request is a hit)."""
    from lbd.cache.freshness import response_freshness
    from lbd.edge.handler import EdgeRequest, ViewerRequest
    from lbd.edge.runtime import EdgeListenerRuntime
    from lbd.edge.server import EdgeClientSide

    snapshot = Snapshot.build(parse_config(EDGE_CONFIG), 1, StatsRegistry())
    runtime = cast(EdgeListenerRuntime, next(iter(snapshot.listeners.values())))
    client = EdgeClientSide(runtime, ConnectionTracker(), UpstreamPool())
    transport = FakeTransport()
    client.connection_made(cast(asyncio.Transport, transport))
    request = EDGE_GETS[name]
    head, _, _ = request.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ")
    fields = [(n.lower(), v.strip()) for n, _, v in (line.partition(":") for line in lines[1:])]
    work = EdgeRequest(client, ViewerRequest(method, target, "", "1.1", fields, b"", True))
    work.behavior = work.dist.default
    origin = [("Content-Type", "text/plain"), ("Date", "Tue, 01 Dec 2026 08:00:00 GMT")]
    fresh = response_freshness(200, {}, work.behavior.policy.ttl, time.time())
    work.dist.cache.put(
        work.key(), work._entry(200, origin, b"hello, world\n", time.time(), fresh), fresh.ttl, 0
    )
    feed: Callable[[bytes], None] = client.data_received
    for _ in range(2):
        feed(request)
    results = work.dist.cache.stats.results
    before = results.get("hit", 0)
    started = time.process_time_ns()  # CPU time: other processes on the machine do not count
    for _ in range(requests):
        feed(request)
    elapsed = time.process_time_ns() - started
    if results.get("hit", 0) - before != requests:
        raise RuntimeError(f"{name}: not every request was a hit")
    return elapsed / requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.replay", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--requests", type=int, default=100_000, help="requests per scenario (default 100000)"
    )
    parser.add_argument("--scenario", action="append", help="only these scenarios (repeatable)")
    args = parser.parse_args(argv)
    print(f"data path: {build.data_path()}")
    for scenario in SCENARIOS:
        if args.scenario and scenario.name not in args.scenario:
            continue
        ns = uvloop.run(replay(scenario, args.requests))
        print(f"{scenario.name:28} {ns / 1000:8.2f} us/request (CPU)")
    for name in EDGE_GETS:
        if args.scenario and name not in args.scenario:
            continue
        ns = uvloop.run(replay_edge(name, args.requests))
        print(f"{name:28} {ns / 1000:8.2f} us/request (CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
