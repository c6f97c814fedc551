"""In-process replay: lbd's own per-request cost on the HTTP path, without sockets or the kernel.

A real Snapshot is built from a config, a client connection and a pooled target connection are given fake
transports whose ``write`` only records, and recorded requests and responses are fed to them in turn. What
is left is exactly the Python (or compiled) code lbd runs per request: recognising the request, rules,
X-Forwarded-* and trace id, target choice, the pool, the response, counters and bookkeeping.

    python -m benchmarks.replay [--requests N] [--scenario NAME]

Prints nanoseconds per request for each scenario and whether the data path is compiled. Run it before and
after a data-path change; the socket-level harness (``python -m benchmarks``) measures the rest.
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

SMALL_GET = b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
MANY_HEADERS = (
    b"GET /index.html HTTP/1.1\r\nHost: example.com\r\n"
    + b"".join(b"X-Header-%d: value number %d\r\n" % (i, i) for i in range(30))
    + b"\r\n"
)
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


SCENARIOS = [
    Scenario("small-get", SMALL_GET),
    Scenario("small-get-20-rules", SMALL_GET, TWENTY_RULES),
    Scenario("small-get-20-host-rules", SMALL_GET, TWENTY_HOST_RULES),
    Scenario("30-headers", MANY_HEADERS),
    Scenario("split-head", SMALL_GET),
    Scenario("post-body", POST_BODY),
    Scenario("small-get-waf-5-rules", SMALL_GET, web_acls=WAF_5_RULES),
    Scenario("small-get-waf-20-rules", SMALL_GET, web_acls=WAF_20_RULES),
]


async def replay(scenario: Scenario, requests: int) -> float:
    """Nanoseconds per request for ``requests`` keep-alive exchanges on one client connection."""
    snapshot = Snapshot.build(parse_config(CONFIG % scenario.rules + scenario.web_acls), 1, StatsRegistry())
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
        answer(RESPONSE)
    started = time.perf_counter_ns()
    if halves is None:
        for _ in range(requests):
            feed(request)
            answer(RESPONSE)
    else:
        first, second = halves
        for _ in range(requests):
            feed(first)
            feed(second)
            answer(RESPONSE)
    elapsed = time.perf_counter_ns() - started
    if runtime.stats.target_responses[2] != requests + 2:
        raise RuntimeError(f"{scenario.name}: not every request was answered")
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
        print(f"{scenario.name:23} {ns / 1000:8.2f} us/request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
