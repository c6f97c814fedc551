"""The surge queue of classic listeners (lbd/surge.py) through a real ``lbd run``: with
``max_connections_per_instance: 1`` and one instance, requests and connections beyond the first wait and
proceed in order; beyond ``surge_queue_length`` they are refused and counted as spillover."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import LbdFactory
from tests.http_backend import HttpBackend
from tests.http_client import Client
from tests.lbdproc import Lbd, free_port, http_request, wait_for
from tests.test_classic import RecordingServer


@dataclass
class Surge:
    proc: Lbd
    http_port: int
    tcp_port: int
    http: HttpBackend
    tcp: RecordingServer


def classic(name: str, listener: dict[str, Any], health: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "classic",
        "listeners": [{"address": "127.0.0.1", **listener}],
        "instances": [{"id": "127.0.0.1"}],
        "health_check": {
            "target": health,
            "interval_seconds": 2,
            "timeout_seconds": 1,
            "healthy_threshold": 2,
        },
        "max_connections_per_instance": 1,
        "surge_queue_length": 2,
    }


@pytest.fixture
async def surge(lbd: LbdFactory) -> AsyncIterator[Surge]:
    http = await HttpBackend("instance").start()
    tcp = await RecordingServer().start()
    http_port, tcp_port = free_port(), free_port()
    config = {
        "node": {"zone": "zone-a"},
        "load_balancers": [
            classic(
                "web",
                {
                    "protocol": "HTTP",
                    "port": http_port,
                    "instance_protocol": "HTTP",
                    "instance_port": http.port,
                },
                f"TCP:{http.port}",
            ),
            classic(
                "raw",
                {"protocol": "TCP", "port": tcp_port, "instance_protocol": "TCP", "instance_port": tcp.port},
                f"TCP:{tcp.port}",
            ),
        ],
    }
    proc = lbd(config)
    await proc.wait_ready()

    async def all_healthy() -> bool:
        status, body = await proc.admin("GET", "/v1/target-groups")
        groups = body["target_groups"] if status == 200 else []
        return len(groups) == 2 and all(g["states"] == {"healthy": 1} for g in groups)

    await wait_for(all_healthy, what="both instances healthy")
    yield Surge(proc, http_port, tcp_port, http, tcp)
    await http.close()
    await tcp.close()


async def listener(proc: Lbd, name: str) -> dict[str, Any]:
    status, body = await proc.admin("GET", "/v1/stats")
    assert status == 200
    found: list[dict[str, Any]] = [entry for entry in body["listeners"] if entry["load_balancer"] == name]
    return found[0]


async def queued(proc: Lbd, name: str, length: int) -> bool:
    return (await listener(proc, name))["surge_queue_length"] == length


async def test_http_requests_queue_then_spill(surge: Surge) -> None:
    first = await Client.connect(surge.http_port)
    first.send(b"GET /sleep/1500 HTTP/1.1\r\nHost: x\r\n\r\n")
    await wait_for(lambda: any(r.target == "/sleep/1500" for r in surge.http.requests), what="first request")
    waiting = []
    for count, name in enumerate(("/second", "/third"), 1):
        client = await Client.connect(surge.http_port)
        client.send(f"GET {name} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        waiting.append(client)
        await wait_for(lambda n=count: queued(surge.proc, "web", n), what=f"{name} in the surge queue")
    assert not any(r.target in ("/second", "/third") for r in surge.http.requests)
    _, _, metrics = await http_request(surge.proc.admin_port, "GET", "/metrics")
    assert (
        f'lbd_surge_queue_length{{listener="HTTP:{surge.http_port}",load_balancer="web"}} 2.0'
        in metrics.decode()
    )

    # The queue is full: the next request is refused with 503 and counted as spillover.
    spilled = await Client.connect(surge.http_port)
    response = await spilled.request("GET", "/fourth")
    spilled.close()
    assert response.status == 503
    stats = await listener(surge.proc, "web")
    assert stats["spillover_count"] == 1 and stats["elb_responses_5xx"] == 1

    # The first completes; the queued ones follow, in order, one at a time.
    assert (await first.response()).status == 200
    for client in waiting:
        assert (await client.response()).status == 200
        client.close()
    first.close()
    order = [r.target for r in surge.http.requests if r.target in ("/sleep/1500", "/second", "/third")]
    assert order == ["/sleep/1500", "/second", "/third"]
    assert (await listener(surge.proc, "web"))["surge_queue_length"] == 0
    assert not any(r.target == "/fourth" for r in surge.http.requests)


async def test_tcp_connections_queue_then_spill(surge: Surge) -> None:
    first_reader, first_writer = await asyncio.open_connection("127.0.0.1", surge.tcp_port)
    first_writer.write(b"one")
    assert await first_reader.readexactly(3) == b"one"
    second_reader, second_writer = await asyncio.open_connection("127.0.0.1", surge.tcp_port)
    second_writer.write(b"two")
    await wait_for(lambda: queued(surge.proc, "raw", 1), what="the second connection in the surge queue")
    third_reader, third_writer = await asyncio.open_connection("127.0.0.1", surge.tcp_port)
    await wait_for(lambda: queued(surge.proc, "raw", 2), what="the third connection in the surge queue")

    # The queue is full: the fourth connection is closed without reaching the instance.
    fourth_reader, fourth_writer = await asyncio.open_connection("127.0.0.1", surge.tcp_port)
    assert await asyncio.wait_for(fourth_reader.read(), 10) == b""
    fourth_writer.close()
    assert (await listener(surge.proc, "raw"))["spillover_count"] == 1
    assert [bytes(seen) for seen in surge.tcp.received if seen] == [b"one"]  # (health checks send nothing)

    # The first leaves: the second proceeds, with the bytes it sent while waiting; then the third.
    first_writer.close()
    assert await asyncio.wait_for(second_reader.readexactly(3), 10) == b"two"
    second_writer.close()
    third_writer.write(b"three")
    assert await asyncio.wait_for(third_reader.readexactly(5), 10) == b"three"
    third_writer.close()
    await wait_for(lambda: queued(surge.proc, "raw", 0), what="an empty surge queue")
