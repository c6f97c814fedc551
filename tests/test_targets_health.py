"""Active health checks through a real ``lbd run``: the node's checker probes real targets, workers route
by its verdicts, and the admin API reports ELB's states and reason codes."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from tests.certs import self_signed
from tests.conftest import LbdFactory
from tests.http_backend import HttpBackend
from tests.http_client import Client
from tests.lbdproc import (
    FAST_HTTP_CHECK,
    Lbd,
    application_config,
    free_port,
    network_config,
    refused_port,
    wait_for,
)

HTTP_CHECK = FAST_HTTP_CHECK


def with_checks(config: dict[str, Any], check: dict[str, Any], **group: Any) -> dict[str, Any]:
    config["target_groups"][0]["health_check"] = check
    config["target_groups"][0].update(group)
    return config


async def targets(proc: Lbd, group: str = "web") -> dict[int, dict[str, Any]]:
    status, body = await proc.admin("GET", f"/v1/target-groups/{group}/targets")
    assert status == 200, body
    return {t["port"]: t for t in body["targets"]}


async def wait_state(proc: Lbd, port: int, state: str, group: str = "web") -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        target = (await targets(proc, group))[port]
        return target if target["state"] == state else None

    result: dict[str, Any] = await wait_for(reached, what=f"target {port} {state}")
    return result


async def spread(port: int, requests: int) -> Counter[str]:
    client = await Client.connect(port)
    seen: Counter[str] = Counter()
    try:
        for _ in range(requests):
            response = await client.request("GET", "/")
            assert response.status == 200
            seen[response.body.decode().split()[-1]] += 1
    finally:
        client.close()
    return seen


async def group_stats(proc: Lbd, group: str = "web") -> dict[str, Any]:
    status, body = await proc.admin("GET", "/v1/stats")
    assert status == 200
    reports = [g for g in body["target_groups"] if g["target_group"] == group]
    assert reports, body
    return reports[0]


async def test_http_checks_move_traffic_and_report_elb_reasons(lbd: LbdFactory) -> None:
    good, sick = await HttpBackend("good").start(), await HttpBackend("sick").start()
    sick.health_status = 503
    port = free_port()
    proc = lbd(with_checks(application_config(port, [good.port, sick.port]), HTTP_CHECK))
    await proc.wait_ready()

    healthy = await wait_state(proc, good.port, "healthy")
    assert healthy["reason"] == ""
    unhealthy = await wait_state(proc, sick.port, "unhealthy")
    assert unhealthy["reason"] == "Target.ResponseCodeMismatch"
    assert unhealthy["description"] == "Health checks failed with these codes: [503]"
    assert await spread(port, 10) == {"good": 10}

    # The probe is ELB's: GET path, Host target:port, a health-checker User-Agent.
    probe = next(r for r in sick.requests if r.target == "/health")
    assert probe.header("host") == f"127.0.0.1:{sick.port}"
    assert probe.header("user-agent") == "lbd-HealthChecker/1.0"

    sick.health_status = 200  # recovers after healthy_threshold (2) passing checks
    await wait_state(proc, sick.port, "healthy")
    assert await spread(port, 10) == {"good": 5, "sick": 5}
    await good.close()
    await sick.close()


async def test_timeout_and_refused_connection_reasons(lbd: LbdFactory) -> None:
    hanging = await HttpBackend("hanging").start()
    hanging.health_status = 0  # accepts, never answers
    closed_port = refused_port()  # nothing listens here
    port = free_port()
    proc = lbd(with_checks(application_config(port, [hanging.port, closed_port]), HTTP_CHECK))
    await proc.wait_ready()
    timed_out = await wait_state(proc, hanging.port, "unhealthy")
    assert (timed_out["reason"], timed_out["description"]) == ("Target.Timeout", "Request timed out")
    refused = await wait_state(proc, closed_port, "unhealthy")
    assert refused["reason"] == "Target.FailedHealthChecks"
    assert "connection refused" in refused["description"]
    status, body = await proc.admin("GET", "/v1/target-groups")
    assert status == 200
    assert body["target_groups"][0]["states"] == {"unhealthy": 2}
    await hanging.close()


async def test_no_healthy_target_fails_open(lbd: LbdFactory) -> None:
    # Both targets fail their checks but serve requests: ELB sends traffic to all of them.
    a, b = await HttpBackend("a").start(), await HttpBackend("b").start()
    a.health_status = b.health_status = 500
    port = free_port()
    proc = lbd(with_checks(application_config(port, [a.port, b.port]), HTTP_CHECK))
    await proc.wait_ready()
    await wait_state(proc, a.port, "unhealthy")
    await wait_state(proc, b.port, "unhealthy")
    assert await spread(port, 10) == {"a": 5, "b": 5}
    report = await group_stats(proc)
    assert report["fail_open"] is True
    assert report["healthy_targets"] == 0
    assert "failing open" in proc.log
    await a.close()
    await b.close()


async def test_minimum_healthy_percentage_fails_open_early(lbd: LbdFactory) -> None:
    # One of two healthy is 50%, below the 60% asked for: every target takes traffic.
    a, b = await HttpBackend("a").start(), await HttpBackend("b").start()
    b.health_status = 500
    port = free_port()
    config = with_checks(
        application_config(port, [a.port, b.port]),
        HTTP_CHECK,
        minimum_healthy_targets={"count": 1, "percentage": 60},
    )
    proc = lbd(config)
    await proc.wait_ready()
    await wait_state(proc, a.port, "healthy")
    await wait_state(proc, b.port, "unhealthy")
    assert await spread(port, 10) == {"a": 5, "b": 5}
    assert (await group_stats(proc))["fail_open"] is True
    await a.close()
    await b.close()


async def test_tcp_checks_keep_new_flows_off_a_dead_target(lbd: LbdFactory, backends: Any) -> None:
    live = await backends()
    dead_port = refused_port()
    port = free_port()
    check = {"protocol": "TCP", "interval_seconds": 2, "timeout_seconds": 1, "unhealthy_threshold": 2}
    proc = lbd(with_checks(network_config(port, [live.port, dead_port]), check))
    await proc.wait_ready()
    await wait_state(proc, dead_port, "unhealthy", group="pool")
    await wait_state(proc, live.port, "healthy", group="pool")
    status, body = await proc.admin("GET", "/v1/stats")
    assert status == 200
    errors_before = body["listeners"][0]["target_connection_errors"]
    for _ in range(6):
        client = await Client.connect(port)
        client.send(b"ping")
        assert await client.reader.readexactly(4) == b"ping"
        client.close()
    status, body = await proc.admin("GET", "/v1/stats")
    assert status == 200
    # The checker already knew: no flow even tried the dead target.
    assert body["listeners"][0]["target_connection_errors"] == errors_before


async def test_reload_keeps_the_health_of_unchanged_targets(lbd: LbdFactory) -> None:
    a, b = await HttpBackend("a").start(), await HttpBackend("b").start()
    port = free_port()
    proc = lbd(with_checks(application_config(port, [a.port]), HTTP_CHECK))
    await proc.wait_ready()
    await wait_state(proc, a.port, "healthy")
    proc.write_config(with_checks(application_config(port, [a.port, b.port]), HTTP_CHECK))
    status, body = await proc.admin("POST", "/v1/reload")
    assert status == 200, body
    after = await targets(proc)
    assert after[a.port]["state"] == "healthy"  # not back to initial
    assert after[b.port]["state"] in ("initial", "healthy")
    await wait_state(proc, b.port, "healthy")
    await a.close()
    await b.close()


async def test_killed_target_turns_unhealthy_in_time_and_no_new_connection_fails(lbd: LbdFactory) -> None:
    a, b = await HttpBackend("a").start(), await HttpBackend("b").start()
    port = free_port()
    proc = lbd(with_checks(application_config(port, [a.port, b.port]), HTTP_CHECK))
    await proc.wait_ready()
    await wait_state(proc, a.port, "healthy")
    await wait_state(proc, b.port, "healthy")

    await b.kill()
    killed_at = asyncio.get_running_loop().time()
    failures = 0

    async def unhealthy_while_serving() -> bool:
        nonlocal failures
        for _ in range(3):  # new connections keep arriving while the checker notices
            client = await Client.connect(port)
            response = await client.request("GET", "/")
            client.close()
            failures += response.status != 200
        return bool((await targets(proc))[b.port]["state"] == "unhealthy")

    await wait_for(unhealthy_while_serving, what="killed target unhealthy")
    elapsed = asyncio.get_running_loop().time() - killed_at
    # ELB's bound: interval x unhealthy_threshold + timeout (plus jitter and a loaded machine's slack).
    bound = (
        HTTP_CHECK["interval_seconds"] * 1.1 * HTTP_CHECK["unhealthy_threshold"]
        + HTTP_CHECK["timeout_seconds"]
    )
    assert elapsed < bound + 5
    assert failures == 0  # a refused connect is retried on the healthy target
    assert await spread(port, 6) == {"a": 6}
    await a.close()


async def test_one_probe_per_target_per_interval_whatever_the_worker_count(lbd: LbdFactory) -> None:
    backend = await HttpBackend("b").start()
    port = free_port()
    check = {**HTTP_CHECK, "interval_seconds": 2, "timeout_seconds": 1}
    proc = lbd(with_checks(application_config(port, [backend.port]), check), workers=2)
    await proc.wait_ready()
    start = asyncio.get_running_loop().time()
    await wait_for(lambda: sum(r.target == "/health" for r in backend.requests) >= 4, what="4 probes")
    elapsed = asyncio.get_running_loop().time() - start
    probes = sum(r.target == "/health" for r in backend.requests)
    # One checker per node: about elapsed / interval probes (+1 for the first, within a second of start).
    # A checker per worker would make it twice that.
    assert probes <= elapsed / (2 * 0.9) + 2
    await backend.close()


async def test_https_checks_do_not_verify_the_target_certificate(lbd: LbdFactory, tmp_path: Path) -> None:
    # A self-signed certificate no client would trust: ELB's checks accept it, and so do lbd's.
    secure = await HttpBackend("secure").start(tls=self_signed().server_context(tmp_path))
    port = free_port()
    check = {**HTTP_CHECK, "protocol": "HTTPS"}
    proc = lbd(with_checks(application_config(port, [secure.port]), check))
    await proc.wait_ready()
    await wait_state(proc, secure.port, "healthy")
    assert any(r.target == "/health" for r in secure.requests)  # it did speak HTTP over TLS
    secure.health_status = 404
    unhealthy = await wait_state(proc, secure.port, "unhealthy")
    assert unhealthy["reason"] == "Target.ResponseCodeMismatch"
    await secure.close()
