"""Two lbd processes sharing one real redis-server enforce one usage-plan quota together."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LbdFactory
from tests.lbdproc import free_port, http_request
from tests.redis_server import RedisServer
from tests.test_gateway_api import Backends, group, proxy


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.kill()


async def test_two_nodes_share_one_quota_and_one_bucket(
    lbd: LbdFactory, http_backends: Backends, redis_server: RedisServer
) -> None:
    backend = await http_backends("app")
    ports = [free_port(), free_port()]
    nodes = []
    for port in ports:
        config = {
            "shared_state": {"redis": redis_server.url, "on_failure": "closed", "timeout_ms": 1000},
            "target_groups": [group("app", backend)],
            "apis": [
                {
                    "name": "shop",
                    "listeners": [{"protocol": "HTTP", "port": port, "address": "127.0.0.1"}],
                    "routes": [
                        {"route_key": "GET /paid", "integration": proxy("/"), "api_key_required": True}
                    ],
                }
            ],
            "usage_plans": [
                {"name": "basic", "apis": [{"api": "shop"}], "quota": {"limit": 5, "period": "MONTH"}}
            ],
        }
        nodes.append(lbd(config))
    value = "SharedFleetKey" * 2
    for node in nodes:
        await node.wait_ready()
        status, key = await node.admin(
            "POST", "/v1/api-keys", json.dumps({"name": "k", "value": value}).encode()
        )
        assert status == 201, key
        status, _ = await node.admin(
            "POST", "/v1/usage-plans/basic/keys", json.dumps({"key_id": key["id"]}).encode()
        )
        assert status == 200
    statuses = []
    for i in range(8):
        status, _, _ = await http_request(ports[i % 2], "GET", "/paid", headers={"x-api-key": value})
        statuses.append(status)
    assert statuses == [200] * 5 + [429] * 3  # one quota for the fleet, not five per node
    for node in nodes:
        _, usage = await node.admin("GET", "/v1/usage-plans/basic/usage")
        assert [entry["used"] for entry in usage["keys"].values()] == [5]
