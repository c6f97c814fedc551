"""The benchmark harness's pure parts: wrk parsing and config rendering (no load is generated here), and
the floor proxies it can measure lbd against."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml

from benchmarks.harness import (
    SCENARIOS,
    Result,
    Sample,
    haproxy_conf,
    lbd_conf,
    nginx_lb_conf,
    parse_h2load,
    parse_wrk,
    ratio,
    table,
)
from lbd.config.loader import parse_config
from tests.http_backend import HttpBackend
from tests.http_client import Client
from tests.lbdproc import free_port, wait_for

WRK = """Running 10s test @ http://127.0.0.1:8080/small
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   710.00us  200.00us   5.00ms   90.00%
  Latency Distribution
     50%  690.00us
     75%  800.00us
     90%  1.00ms
     99%    1.70ms
  540000 requests in 10.00s, 88.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  53993.10
Transfer/sec:      8.90MB
"""


def test_parse_wrk() -> None:
    stats = parse_wrk(WRK)
    assert stats["rps"] == 53993.10
    assert stats["requests"] == 540000
    assert abs(stats["p50_ms"] - 0.69) < 1e-9  # 690 us
    assert stats["p99_ms"] == 1.7
    assert stats["bytes_per_s"] == 8.9 * 1024 * 1024
    assert stats["errors"] == 7


def test_lbd_bench_configs_are_valid_lbd_configs() -> None:
    for scenario in SCENARIOS.values():
        config = parse_config(lbd_conf(scenario, 18080, 19900, [18001, 18002], 2))
        if scenario.cache:  # a distribution, not a load balancer
            assert config.distributions[0].listeners[0].port == 18080
        else:
            lb = config.load_balancers[0]
            assert lb.type == ("network" if scenario.layer == "l4" else "application")
        assert [t.port for t in config.target_groups[0].targets] == [18001, 18002]
        yaml.safe_load(lbd_conf(scenario, 1, 2, [3], 1))


def test_peer_configs_match_the_scenario() -> None:
    l4, l7 = SCENARIOS["tcp-small"], SCENARIOS["http-small"]
    assert "mode tcp" in haproxy_conf(l4, 1, [2, 3], 1) and "nbthread 1" in haproxy_conf(l4, 1, [2, 3], 1)
    assert "mode http" in haproxy_conf(l7, 1, [2, 3], 2) and "http-reuse always" in haproxy_conf(
        l7, 1, [2], 2
    )
    assert "stream {" in nginx_lb_conf(Path("/tmp"), l4, 1, [2, 3], 1)
    assert "keepalive 64" in nginx_lb_conf(Path("/tmp"), l7, 1, [2, 3], 1)


def test_the_cache_scenario_caches_on_every_load_balancer() -> None:
    edge = SCENARIOS["cache"]
    assert "proxy_cache edge; proxy_cache_valid 200 1d" in nginx_lb_conf(Path("/tmp"), edge, 1, [2, 3], 1)
    haproxy = haproxy_conf(edge, 1, [2, 3], 1)
    assert "http-request cache-use edge" in haproxy and "\ncache edge\n" in haproxy
    assert "cache_policy: CachingOptimized" in lbd_conf(edge, 1, 2, [3], 1)


def test_udp_and_proxy_scenarios_configure_every_load_balancer_alike() -> None:
    udp, ppv2 = SCENARIOS["udp"], SCENARIOS["tcp-small-ppv2"]
    lbd = parse_config(lbd_conf(udp, 18080, 19900, [18001], 1))
    assert lbd.load_balancers[0].listeners[0].protocol == "UDP"
    assert lbd.target_groups[0].protocol == "UDP"
    assert "listen 127.0.0.1:1 udp reuseport" in nginx_lb_conf(Path("/tmp"), udp, 1, [2], 1)
    assert parse_config(lbd_conf(ppv2, 18080, 19900, [18001], 1)).target_groups[0].proxy_protocol_v2
    assert "server t0 127.0.0.1:2 send-proxy-v2" in haproxy_conf(ppv2, 1, [2], 1)
    assert "proxy_protocol on;" in nginx_lb_conf(Path("/tmp"), ppv2, 1, [2], 1)


def test_table_reports_ratios_of_medians() -> None:
    def result(name: str, rps: list[float], cpu: list[float], workers: int = 1) -> Result:
        samples = [Sample(r, 0, 1, 2, 100, 0, c, 10) for r, c in zip(rps, cpu, strict=True)]
        return Result("tcp-small", name, workers, samples)

    results = [result("lbd", [90, 100, 200], [20, 22, 99]), result("haproxy", [100, 100, 1], [20, 20, 20])]
    text = table(results)
    assert "1.00x; 1.10x" in text  # medians 100 vs 100 req/s and 22 vs 20 µs
    assert ratio(1, 0) == "-"
    assert "scaling" not in text
    # With two worker counts the table ends with each load balancer's scaling.
    results += [result("lbd", [150], [20], workers=2), result("haproxy", [180], [20], workers=2)]
    assert "tcp-small   lbd 1.50x, haproxy 1.80x" in table(results)


def test_unsupported_scenarios_are_reported_not_run() -> None:
    text = table([Result("grpc", "lbd", 1, [], unsupported="lbd has no gRPC yet")])
    assert re.search(r"^grpc +lbd +1 not supported: lbd has no gRPC yet$", text, re.M), text


def test_h2_scenario_offers_h2_by_alpn_on_every_load_balancer_and_parses_h2load() -> None:
    h2 = SCENARIOS["h2"]
    assert (h2.kind, h2.tls, h2.connections) == ("h2load", True, 10)
    assert "ssl crt /c.pem alpn h2,http/1.1" in haproxy_conf(h2, 1, [2], 1, "/c.pem")
    assert "listen 127.0.0.1:1 ssl http2" in nginx_lb_conf(Path("/tmp"), h2, 1, [2], 1, "/c.pem")
    listener = parse_config(lbd_conf(h2, 1, 2, [3], 1, "/certs")).load_balancers[0].listeners[0]
    assert listener.protocol == "HTTPS"  # lbd offers h2 by ALPN on HTTPS listeners by default
    output = (
        "finished in 5.00s, 1872.40 req/s, 104.52KB/s\n"
        "requests: 9362 total, 9362 started, 9362 done, 9360 succeeded, 2 failed, 0 errored, 0 timeout\n"
        "time for request:    62.29ms    563.10ms    259.47ms     60.24ms    71.95%\n"
    )
    assert parse_h2load(output) == {
        "rps": 1872.40,
        "bytes_per_s": 104.52 * 1024,
        "requests": 9362.0,
        "errors": 2.0,
        "mean_ms": 259.47,
    }
    # A fixed-count run (h2's) that ends within a second reports milliseconds.
    fast = output.replace("finished in 5.00s, 1872.40", "finished in 830.12ms, 108143.00")
    assert parse_h2load(fast)["rps"] == 108143.00


def test_grpc_scenario_speaks_h2_to_grpc_targets_on_every_load_balancer() -> None:
    scenario = SCENARIOS["grpc"]
    assert (scenario.kind, scenario.tls) == ("grpc", True)
    assert "server t0 127.0.0.1:2 proto h2" in haproxy_conf(scenario, 1, [2], 1, "/c.pem")
    nginx = nginx_lb_conf(Path("/tmp"), scenario, 1, [2], 1, "/c.pem")
    assert "listen 127.0.0.1:1 ssl http2" in nginx and "grpc_pass grpc://be;" in nginx
    group = parse_config(lbd_conf(scenario, 1, 2, [3], 1, "/certs")).target_groups[0]
    assert (group.protocol, group.protocol_version) == ("HTTP", "GRPC")


def test_https_scenarios_terminate_tls_on_every_load_balancer() -> None:
    https = SCENARIOS["https-handshake"]
    config = parse_config(lbd_conf(https, 1, 2, [3], 1, "/certs"))
    listener = config.load_balancers[0].listeners[0]
    assert (listener.protocol, listener.certificates, config.certificates.store) == (
        "HTTPS",
        ("bench",),
        "/certs",
    )
    assert "bind 127.0.0.1:1 ssl crt /c.pem" in haproxy_conf(https, 1, [2], 1, "/c.pem")
    assert "listen 127.0.0.1:1 ssl" in nginx_lb_conf(Path("/tmp"), https, 1, [2], 1, "/c.pem")
    assert https.close


def test_rule_scenario_gives_every_load_balancer_20_rules() -> None:
    rules = SCENARIOS["http-rules"]
    config = parse_config(lbd_conf(rules, 1, 2, [3], 1))
    assert len(config.load_balancers[0].listeners[0].rules) == 20
    assert haproxy_conf(rules, 1, [2], 1).count("use_backend be if rule") == 20
    assert nginx_lb_conf(Path("/tmp"), rules, 1, [2], 1).count("location /api") == 20


async def test_floor_proxies_forward_a_request(
    http_backends: Callable[[str], Awaitable[HttpBackend]],
) -> None:
    """benchmarks/floor.py, both floors, through real sockets to a real target (what the harness measures)."""
    backend = await http_backends("b1")
    for mode in ([], ["--http"]):
        port = free_port()
        command = [
            sys.executable,
            "-m",
            "benchmarks.floor",
            "--listen",
            str(port),
            "--target",
            str(backend.port),
        ]
        proc = await asyncio.create_subprocess_exec(*command, *mode)
        try:
            client = await wait_for(lambda p=port: connect(p), what=f"the floor proxy on port {port}")
            response = await client.request("GET", "/x")
            assert (response.status, response.body) == (200, b"hello from b1\n")
            client.close()
        finally:
            proc.terminate()
            await proc.wait()
    forwarded = [seen.header("x-forwarded-for") for seen in backend.requests]
    assert forwarded == [None, "127.0.0.1"]  # the HTTP floor rebuilds the head; the byte floor does not


async def connect(port: int) -> Client | None:
    try:
        return await Client.connect(port)
    except OSError:
        return None


def test_ws_scenario_is_a_valid_websocket_api_with_a_two_way_default_route() -> None:
    from benchmarks.harness import lbd_ws_conf

    scenario = SCENARIOS["ws"]
    config = parse_config(lbd_ws_conf(scenario, 18080, 19900, [18001, 18002], 1))
    [api] = config.apis
    assert api.protocol == "WEBSOCKET"
    [route] = api.routes
    assert (route.route_key, route.route_response_selection_expression) == ("$default", "$default")
    assert route.integration.path == scenario.path
