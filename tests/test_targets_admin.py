"""Runtime registration through the admin API (RegisterTargets / DeregisterTargets): new targets take
traffic, deregistered ones drain (no new requests, open connections finish until the delay ends, then
are closed), and registrations survive reload and restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lbd.cli import main
from tests.conftest import LbdFactory
from tests.http_backend import HttpBackend
from tests.http_client import Client
from tests.lbdproc import Lbd, application_config, free_port, wait_for


async def listed(proc: Lbd) -> dict[int, dict[str, Any]]:
    status, body = await proc.admin("GET", "/v1/target-groups/web/targets")
    assert status == 200, body
    return {t["port"]: t for t in body["targets"]}


async def backends_hit(port: int, requests: int) -> set[str]:
    client = await Client.connect(port)
    try:
        names = set()
        for _ in range(requests):
            response = await client.request("GET", "/")
            assert response.status == 200
            names.add(response.body.decode().split()[-1])
        return names
    finally:
        client.close()


def register_body(*ports: int, **extra: Any) -> bytes:
    return json.dumps({"targets": [{"id": "127.0.0.1", "port": p, **extra} for p in ports]}).encode()


async def test_registered_target_takes_traffic_and_survives_reload_and_restart(lbd: LbdFactory) -> None:
    a, b = await HttpBackend("a").start(), await HttpBackend("b").start()
    port = free_port()
    proc = lbd(application_config(port, [a.port]))
    await proc.wait_ready()
    assert await backends_hit(port, 4) == {"a"}

    status, body = await proc.admin("POST", "/v1/target-groups/web/targets", register_body(b.port, weight=1))
    assert status == 200, body
    assert body["registered"] == [{"id": "127.0.0.1", "port": b.port, "zone": "zone-a", "weight": 1}]
    assert await backends_hit(port, 4) == {"a", "b"}
    # Health checks are off in this group: ELB calls such targets "unavailable", and they serve.
    assert (await listed(proc))[b.port]["state"] == "unavailable"

    status, body = await proc.admin("POST", "/v1/reload")
    assert status == 200, body
    assert await backends_hit(port, 4) == {"a", "b"}

    proc.stop()
    proc.start()
    await proc.wait_ready()
    assert set(await listed(proc)) == {a.port, b.port}
    assert await backends_hit(port, 4) == {"a", "b"}
    await a.close()
    await b.close()


async def test_invalid_registrations_name_the_bad_field(lbd: LbdFactory) -> None:
    port = free_port()
    proc = lbd(application_config(port, [free_port()]))
    await proc.wait_ready()
    status, body = await proc.admin("POST", "/v1/target-groups/web/targets", register_body(70000) + b"")
    assert status == 400
    assert body["errors"] == ["targets[0].port: Input should be less than or equal to 65535"]
    status, body = await proc.admin("POST", "/v1/target-groups/web/targets", b'{"targets": []}')
    assert status == 400
    status, body = await proc.admin("POST", "/v1/target-groups/nope/targets", register_body(80))
    assert (status, body["error"]) == (404, "no target group named 'nope'")
    status, body = await proc.admin("DELETE", "/v1/target-groups/web/targets/127.0.0.1:1")
    assert status == 404


async def test_deregistered_target_drains_then_its_connections_close(lbd: LbdFactory) -> None:
    a, b = await HttpBackend("a").start(), await HttpBackend("b").start()
    port = free_port()
    config = application_config(port, [a.port, b.port])
    config["target_groups"][0]["deregistration_delay_seconds"] = 3
    proc = lbd(config)
    await proc.wait_ready()

    # An upgraded connection is in flight for as long as it is open: the drain has to wait for it.
    tunnel = await Client.connect(port)
    tunnel.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    head = await tunnel.head_response()
    assert head.status == 101
    serving = a if any(r.target == "/ws" for r in a.requests) else b
    other = b if serving is a else a

    status, body = await proc.admin("DELETE", f"/v1/target-groups/web/targets/127.0.0.1:{serving.port}")
    assert (status, body["state"]) == (200, "draining")
    target = (await listed(proc))[serving.port]
    assert (target["state"], target["reason"]) == ("draining", "Target.DeregistrationInProgress")
    assert await backends_hit(port, 6) == {other.name}  # no new requests for a draining target
    tunnel.send(b"still here")
    assert await tunnel.read_exactly(10) == b"still here"  # open connections keep flowing

    # When the delay ends, lbd closes what is left and the target is gone.
    assert await asyncio.wait_for(tunnel.reader.read(), 30) == b""
    await wait_for(lambda: _gone(proc, serving.port), what="target removed")
    tunnel.close()
    await a.close()
    await b.close()


async def _gone(proc: Lbd, port: int) -> bool:
    return port not in await listed(proc)


async def test_drain_ends_early_when_nothing_is_in_flight(lbd: LbdFactory) -> None:
    a, b = await HttpBackend("a").start(), await HttpBackend("b").start()
    port = free_port()
    proc = lbd(application_config(port, [a.port, b.port]))  # ELB's default delay: 300 s
    await proc.wait_ready()
    status, _ = await proc.admin("DELETE", f"/v1/target-groups/web/targets/127.0.0.1:{b.port}")
    assert status == 200
    await wait_for(lambda: _gone(proc, b.port), what="idle target removed before the 300 s delay")
    assert await backends_hit(port, 4) == {"a"}
    # The file's target stays deregistered across a restart (the state file remembers).
    proc.stop()
    proc.start()
    await proc.wait_ready()
    assert set(await listed(proc)) == {a.port}
    await a.close()
    await b.close()


async def test_reload_that_drops_a_target_drains_it(lbd: LbdFactory) -> None:
    a, b = await HttpBackend("a").start(), await HttpBackend("b").start()
    port = free_port()
    config = application_config(port, [a.port, b.port])
    proc = lbd(config)
    await proc.wait_ready()
    slow = await Client.connect(port)
    # Round robin: the first request goes to a; hold it in flight across the reload.
    slow.send(b"GET /sleep/1500 HTTP/1.1\r\nHost: x\r\n\r\n")
    await wait_for(lambda: any(r.target == "/sleep/1500" for r in a.requests + b.requests))
    holder = a if any(r.target == "/sleep/1500" for r in a.requests) else b
    keep = b if holder is a else a
    proc.write_config(application_config(port, [keep.port]))
    status, body = await proc.admin("POST", "/v1/reload")
    assert status == 200, body
    assert (await listed(proc))[holder.port]["state"] == "draining"
    response = await slow.response()
    assert response.status == 200 and response.body == f"hello from {holder.name}\n".encode()
    await wait_for(lambda: _gone(proc, holder.port), what="drained target removed")
    slow.close()
    await a.close()
    await b.close()


async def test_registered_ids_must_be_ip_addresses_or_host_names(lbd: LbdFactory) -> None:
    target = free_port()
    proc = lbd(application_config(free_port(), [target]))
    await proc.wait_ready()
    bad = ["10.0.0.300", "bad_host", "[::1]", "a..b", "-edge.internal", "x" * 64 + ".internal"]
    body = json.dumps(
        {"targets": [{"id": i, "port": 80} for i in ["10.0.0.8", *bad, "api.internal", "fd00::8"]]}
    )
    status, answer = await proc.admin("POST", "/v1/target-groups/web/targets", body.encode())
    assert status == 400 and answer["error"] == "invalid targets"
    assert [e.split(":")[0] for e in answer["errors"]] == [f"targets[{i}].id" for i in range(1, 7)]
    for error, target_id in zip(answer["errors"], bad, strict=True):
        assert repr(target_id) in error  # each error names the bad id
    assert answer["errors"][0] == "targets[1].id: '10.0.0.300' is neither an IP address nor a host name"
    assert answer["errors"][2] == "targets[3].id: '[::1]': write an IPv6 address without brackets"
    assert set(await listed(proc)) == {target}  # nothing registered


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 50_000 + b"]" * 50_000, "the body is not JSON lbd accepts: nested too deeply"),
        (b'{"targets": [{"id": "10.0.0.1",', "the body is not JSON: "),
        (
            b'{"targets": {"id": "10.0.0.1", "port": 80}}',
            'body must be {"targets": [{"id": ..., "port": ...}, ...]}',
        ),
        (b"[1, 2]", 'body must be {"targets": '),
        (b'{"targets": [7]}', "invalid targets"),
    ],
    ids=["nested", "truncated", "targets not a list", "not an object", "target not an object"],
)
async def test_register_bodies_of_the_wrong_shape_are_400(lbd: LbdFactory, body: bytes, message: str) -> None:
    proc = lbd(application_config(free_port(), [free_port()]))
    await proc.wait_ready()
    status, answer = await proc.admin("POST", "/v1/target-groups/web/targets", body)
    assert status == 400 and answer["error"].startswith(message), answer
    status, _ = await proc.admin("GET", "/readyz")
    assert status == 200  # and lbd carries on


async def test_deregister_takes_bracketed_and_percent_encoded_ipv6(lbd: LbdFactory) -> None:
    port = free_port()
    config = application_config(port, [free_port()])
    config["target_groups"][0]["deregistration_delay_seconds"] = 0  # gone at once, no draining
    proc = lbd(config)
    await proc.wait_ready()
    first, second, third = free_port(), free_port(), free_port()
    body = json.dumps({"targets": [{"id": "::1", "port": p} for p in (first, second, third)]}).encode()
    status, answer = await proc.admin("POST", "/v1/target-groups/web/targets", body)
    assert status == 200, answer
    assert {first, second, third} <= set(await listed(proc))

    for path, port_gone in (
        (f"%5B%3A%3A1%5D%3A{first}", first),
        (f"[::1]:{second}", second),
        (f"::1:{third}", third),  # the registry's own key form
    ):
        status, answer = await proc.admin("DELETE", f"/v1/target-groups/web/targets/{path}")
        assert (status, answer["target"], answer["state"]) == (200, f"::1:{port_gone}", "unused"), answer
        assert port_gone not in await listed(proc)

    status, answer = await proc.admin("DELETE", "/v1/target-groups/web/targets/%5B10.0.0.1%5D%3A80")
    assert (status, answer["error"]) == (400, "target '[10.0.0.1]:80': only an IPv6 address goes in brackets")
    status, answer = await proc.admin("DELETE", "/v1/target-groups/web/targets/no-port")
    assert status == 400 and "write it as id:port" in answer["error"]


def test_lbd_check_names_bad_target_ids_with_their_key_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = application_config(8080, [8081])
    config["target_groups"][0]["targets"] = [
        {"id": "10.0.0.7", "port": 80},
        {"id": "10.0.0.256", "port": 80},
        {"id": "db.internal", "port": 80},
        {"id": "under_score", "port": 80},
        {"id": "::1", "port": 80},
    ]
    path = tmp_path / "lbd.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["check", "-c", str(path)]) == 2
    out = capsys.readouterr().err  # errors go to stderr
    assert "target_groups[0].targets[1].id: '10.0.0.256' is neither an IP address nor a host name" in out
    assert "target_groups[0].targets[3].id: 'under_score' is not a host name" in out
    assert f"{path}: 2 errors" in out
