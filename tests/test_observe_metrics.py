"""GET /metrics through a real ``lbd run``: traffic of every kind (target 2xx and 4xx, 502, 503, 504, a
malformed request, a redirect, a fixed response, a health transition) moves exactly the counters and
histograms it should, summed over one or two workers, parsed with prometheus-client's own parser."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import LbdFactory
from tests.http_backend import HttpBackend
from tests.http_client import Client
from tests.lbdproc import FAST_HTTP_CHECK, Lbd, application_config, free_port, http_request, wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(proc: Lbd) -> Samples:
    status, headers, body = await http_request(proc.admin_port, "GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    def total(samples: Samples) -> float:
        return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls)

    return total(after) - total(before)


def config(port: int, target: int) -> dict[str, Any]:
    rules = [
        {
            "priority": 1,
            "conditions": [{"field": "path-pattern", "values": ["/fixed"]}],
            "actions": [{"type": "fixed-response", "status_code": 200, "message_body": "ok"}],
        },
        {
            "priority": 2,
            "conditions": [{"field": "path-pattern", "values": ["/moved"]}],
            "actions": [{"type": "redirect", "status_code": "HTTP_301", "host": "example.org"}],
        },
        {
            "priority": 3,
            "conditions": [{"field": "path-pattern", "values": ["/empty"]}],
            "actions": [{"type": "forward", "target_group": "empty"}],
        },
    ]
    empty = {"name": "empty", "protocol": "HTTP", "health_check": {"enabled": False}, "targets": []}
    built = application_config(port, [target], rules=rules, extra_groups=[empty], idle_timeout_seconds=2)
    built["target_groups"][0]["health_check"] = FAST_HTTP_CHECK
    return built


async def get(port: int, path: str) -> int:
    client = await Client.connect(port)
    try:
        return (await client.request("GET", path)).status
    finally:
        client.close()


@pytest.mark.parametrize("workers", [1, 2])
async def test_counters_and_histograms_follow_the_traffic(lbd: LbdFactory, workers: int) -> None:
    backend = await HttpBackend("b").start()
    port = free_port()
    proc = lbd(config(port, backend.port), workers=workers)
    await proc.wait_ready()

    async def healthy() -> bool:
        return (await scrape(proc)).get(
            ("lbd_healthy_targets", frozenset({("target_group", "web"), ("zone", "zone-a")}))
        ) == 1

    await wait_for(healthy, what="target healthy")
    before = await scrape(proc)
    statuses = Counter(
        [
            await get(port, p)
            for p in ("/", "/", "/status/404", "/garbage", "/hang", "/fixed", "/moved", "/empty")
        ]
    )
    assert statuses == {200: 3, 404: 1, 502: 1, 504: 1, 301: 1, 503: 1}
    malformed = await Client.connect(port)
    malformed.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
    assert (await malformed.response()).status == 400
    malformed.close()

    async def settled() -> Samples | None:
        samples = await scrape(proc)
        idle = all(v == 0 for (n, _), v in samples.items() if n == "lbd_active_connections")
        return samples if idle else None

    after: Samples = await wait_for(settled, what="connections closed")
    lb = {"load_balancer": "alb"}
    assert delta(before, after, "lbd_requests_total", **lb) == 5  # a target was chosen: / / 404 garbage hang
    assert delta(before, after, "lbd_new_connections_total", **lb) == 9
    assert delta(before, after, "lbd_http_responses_total", source="target", code="2xx") == 2
    assert delta(before, after, "lbd_http_responses_total", source="target", code="4xx") == 1
    assert delta(before, after, "lbd_http_responses_total", source="lb", code="5xx") == 3
    assert delta(before, after, "lbd_http_responses_total", source="lb", code="4xx") == 1
    assert delta(before, after, "lbd_http_responses_total", source="lb", code="3xx") == 1
    assert (
        delta(before, after, "lbd_http_responses_total", source="lb", code="2xx") == 1
    )  # the fixed response
    for status in ("502", "503", "504", "400"):
        assert delta(before, after, "lbd_http_lb_responses_total", status=status) == 1, status
    assert delta(before, after, "lbd_redirects_total") == 1
    assert delta(before, after, "lbd_fixed_responses_total") == 1
    assert delta(before, after, "lbd_non_compliant_requests_total") == 1
    target = f"127.0.0.1:{backend.port}"
    assert delta(before, after, "lbd_target_requests_total", target_group="web", target=target) == 5
    # Histograms: target response time for the 3 answered requests; duration for all 8 exchanges.
    assert delta(before, after, "lbd_target_response_seconds_count") == 3
    assert delta(before, after, "lbd_target_response_seconds_bucket", le="+Inf") == 3
    assert delta(before, after, "lbd_request_duration_seconds_count") == 8
    assert delta(before, after, "lbd_request_duration_seconds_bucket", le="0.0001") <= 8
    slow = delta(before, after, "lbd_request_duration_seconds_bucket", le="+Inf") - delta(
        before, after, "lbd_request_duration_seconds_bucket", le="1.0"
    )
    assert slow == 1  # only the 504 took longer than a second (the 2 s idle timeout)
    assert delta(before, after, "lbd_request_duration_seconds_sum") >= 2.0
    assert after[("lbd_workers", frozenset({("state", "answering")}))] == workers

    # A health transition shows up in the gauges of the single checker.
    backend.health_status = 500
    zone = frozenset({("target_group", "web"), ("zone", "zone-a")})

    async def unhealthy() -> bool:
        return (await scrape(proc)).get(("lbd_unhealthy_targets", zone)) == 1

    await wait_for(unhealthy, what="target unhealthy")
    final = await scrape(proc)
    assert final[("lbd_healthy_targets", zone)] == 0
    assert final[("lbd_target_group_fail_open", frozenset({("target_group", "web")}))] == 1
    await backend.close()


async def test_promtool_accepts_the_exposition(lbd: LbdFactory) -> None:
    promtool = shutil.which("promtool")
    # make test installs it (scripts/test-tools.sh); without it a developer is told, not silently skipped.
    assert promtool, "promtool not found: apt-get install prometheus (make test does as root)"
    backend = await HttpBackend("b").start()
    port = free_port()
    proc = lbd(config(port, backend.port))
    await proc.wait_ready()
    assert await get(port, "/") == 200
    status, _, body = await http_request(proc.admin_port, "GET", "/metrics")
    assert status == 200
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    await backend.close()
