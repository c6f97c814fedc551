"""Target discovery against real registries on loopback: etcd (Debian's etcd-server) and DNS (dnsmasq).

Discovered targets must behave exactly like registered ones: they show in the admin API's target listing,
take traffic, and leave through draining; a registry that fails keeps the last known targets serving and
says so in the listing and in /metrics. Also the HTTP consistent_hash algorithm end to end.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lbd.config.loader import ConfigError, parse_config
from tests.conftest import LbdFactory
from tests.etcd_server import Etcd
from tests.http_backend import HttpBackend
from tests.lbdproc import application_config, free_port, http_request, wait_for


class Dnsmasq:
    """dnsmasq answering only from its generated config, on a free loopback port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, records: list[str]) -> None:
        conf = self.directory / "dnsmasq.conf"
        lines = [
            f"port={self.port}",
            "listen-address=127.0.0.1",
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            "no-poll",
            "local-ttl=1",
            "local=/example.internal/",
            *records,
        ]
        conf.write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen(
            ["dnsmasq", "--keep-in-foreground", f"--conf-file={conf}", "--pid-file=", "--user=root"],
            stdout=subprocess.DEVNULL,
            stderr=(self.directory / "dnsmasq.log").open("ab"),
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Dnsmasq]:
    assert shutil.which("dnsmasq"), "dnsmasq is missing: scripts/test-tools.sh installs Debian's dnsmasq-base"
    server = Dnsmasq(tmp_path)
    try:
        yield server
    finally:
        server.stop()


async def backend_of(port: int, path: str = "/", headers: dict[str, str] | None = None) -> str:
    """The backend that answered, or what answered instead. "cut": the connection closed without an
    answer, which a request in flight to a target that leaves gets with deregistration_delay_seconds 0
    (lbd closes what still talks to it when the delay ends, as ELB does: docs/targets.md)."""
    try:
        status, fields, _ = await http_request(port, "GET", path, headers=headers)
    except (IndexError, ConnectionResetError):  # no status line: closed before any answer
        return "cut"
    return fields.get("x-backend", f"status {status}")


async def backends_seen(port: int, count: int = 12) -> set[str]:
    return {await backend_of(port) for _ in range(count)}


def discovered_config(port: int, discovery: dict[str, Any], **group: Any) -> dict[str, Any]:
    config = application_config(port, [])
    config["target_groups"][0].update(
        {
            "discovery": discovery,
            "deregistration_delay_seconds": 0,
            "health_check": {"enabled": False},
            **group,
        }
    )
    return config


async def targets_listing(proc: Any) -> dict[str, Any]:
    status, body = await proc.admin("GET", "/v1/target-groups/web/targets")
    assert status == 200
    result: dict[str, Any] = body
    return result


async def test_etcd_targets_are_watched_and_a_failing_etcd_keeps_them(
    etcd: Etcd, lbd: LbdFactory, http_backends: Callable[[str], Any]
) -> None:
    a: HttpBackend = await http_backends("a")
    b: HttpBackend = await http_backends("b")
    await etcd.put("/lbd/targets/web/a", {"id": "127.0.0.1", "port": a.port})
    await etcd.put("/lbd/targets/other/x", {"id": "127.0.0.1", "port": 1})  # outside the prefix
    port = free_port()
    proc = lbd(
        discovered_config(port, {"type": "etcd", "endpoints": [etcd.url], "prefix": "/lbd/targets/web/"})
    )
    await proc.wait_ready()
    await wait_for(lambda: _only(port, "a"), what="the etcd target to serve")  # 503s until etcd is read
    assert await backends_seen(port) == {"a"}

    await etcd.put("/lbd/targets/web/b", {"id": "127.0.0.1", "port": b.port, "weight": 2})
    await etcd.put("/lbd/targets/web/junk", "not json")
    await wait_for(lambda: _seen_all(port, {"a", "b"}), what="the put target to take traffic")
    listing = await targets_listing(proc)
    assert {(t["port"], t["weight"], t.get("source")) for t in listing["targets"]} == {
        (a.port, 1, "etcd"),
        (b.port, 2, "etcd"),
    }
    assert listing["discovery"]["state"] == "up"
    assert "not JSON" in listing["discovery"]["invalid"]["/lbd/targets/web/junk"]

    status, refused = await proc.admin("DELETE", f"/v1/target-groups/web/targets/127.0.0.1:{a.port}")
    assert status == 409 and "etcd discovery" in refused["error"]  # it lives in etcd, not in this node
    await etcd.delete("/lbd/targets/web/a")
    await wait_for(lambda: _only(port, "b"), what="the deleted target to leave")

    etcd.stop()

    async def failing() -> bool:
        return (await targets_listing(proc))["discovery"]["state"] == "failing"

    await wait_for(failing, what="the provider to report etcd down")
    listing = await targets_listing(proc)
    assert listing["discovery"]["note"] == "keeping the last known targets"
    assert [t["port"] for t in listing["targets"]] == [b.port]
    assert await backends_seen(port) == {"b"}
    _, _, metrics = await http_request(proc.admin_port, "GET", "/metrics")
    assert 'lbd_discovery_up{provider="etcd",target_group="web"} 0.0' in metrics.decode()
    assert "etcd discovery of /lbd/targets/web/ failed" in proc.log


async def _seen_all(port: int, names: set[str]) -> bool:
    return await backends_seen(port, 16) == names


async def _only(port: int, name: str) -> bool:
    return await backends_seen(port, 8) == {name}


async def test_dns_srv_targets_follow_the_records_and_a_dead_server_keeps_them(
    dnsmasq: Dnsmasq, lbd: LbdFactory, http_backends: Callable[[str], Any]
) -> None:
    a: HttpBackend = await http_backends("a")
    b: HttpBackend = await http_backends("b")
    host = "host-record=node.example.internal,127.0.0.1"
    dnsmasq.start(
        [
            host,
            f"srv-host=_web._tcp.example.internal,node.example.internal,{a.port},0,1",
            f"srv-host=_web._tcp.example.internal,node.example.internal,{b.port},0,3",
            # A backup (higher priority value): not spread over while the first ones are listed.
            "srv-host=_web._tcp.example.internal,node.example.internal,1,10,1",
        ]
    )
    port = free_port()
    discovery = {
        "type": "dns",
        "name": "_web._tcp.example.internal",
        "resolver": f"127.0.0.1:{dnsmasq.port}",
        "min_ttl_seconds": 0.5,
        "timeout_seconds": 1,
    }
    proc = lbd(discovered_config(port, discovery))
    await proc.wait_ready()
    await wait_for(lambda: _seen_all(port, {"a", "b"}), what="both SRV targets to serve")
    listing = await targets_listing(proc)
    assert {(t["port"], t["weight"], t["source"]) for t in listing["targets"]} == {
        (a.port, 1, "dns"),
        (b.port, 3, "dns"),
    }

    # The record for a goes away: re-resolved after its TTL, a leaves (draining, delay 0).
    dnsmasq.stop()
    dnsmasq.start([host, f"srv-host=_web._tcp.example.internal,node.example.internal,{b.port},0,3"])
    await wait_for(lambda: _only(port, "b"), what="the removed SRV record's target to leave")
    assert "gone from discovery" in proc.log

    dnsmasq.stop()

    async def failing() -> bool:
        return (await targets_listing(proc))["discovery"]["state"] == "failing"

    await wait_for(failing, what="the provider to report the DNS server down")
    assert await backends_seen(port) == {"b"}
    assert "DNS discovery of _web._tcp.example.internal failed" in proc.log


async def test_dns_a_records_on_a_port(
    dnsmasq: Dnsmasq, lbd: LbdFactory, http_backends: Callable[[str], Any]
) -> None:
    a = await HttpBackend("a").start(host="127.0.0.2")
    b = await HttpBackend("b").start(host="127.0.0.3", port=a.port)
    try:
        dnsmasq.start(
            ["host-record=web.example.internal,127.0.0.2", "host-record=web.example.internal,127.0.0.3"]
        )
        port = free_port()
        discovery = {
            "type": "dns",
            "name": "web.example.internal",
            "record_type": "A",
            "port": a.port,
            "resolver": f"127.0.0.1:{dnsmasq.port}",
        }
        proc = lbd(discovered_config(port, discovery))
        await proc.wait_ready()
        await wait_for(lambda: _seen_all(port, {"a", "b"}), what="both A records to serve")
        ids = {t["id"] for t in (await targets_listing(proc))["targets"]}
        assert ids == {"127.0.0.2", "127.0.0.3"}
    finally:
        await a.close()
        await b.close()


async def test_consistent_hash_keeps_each_user_on_one_target(
    lbd: LbdFactory, http_backends: Callable[[str], Any]
) -> None:
    pool = [await http_backends(name) for name in "abcd"]
    port = free_port()
    config = application_config(port, [b.port for b in pool])
    config["target_groups"][0].update(
        {
            "algorithm": "consistent_hash",
            "consistent_hash": {"type": "http_header", "http_header_name": "X-User"},
        }
    )
    proc = lbd(config, workers=2)
    await proc.wait_ready()
    placed = {}
    for user in range(24):
        seen = {await backend_of(port, headers={"X-User": f"user-{user}"}) for _ in range(4)}
        assert len(seen) == 1, (user, seen)  # every request of a user, on either worker, on one target
        placed[user] = seen.pop()
    assert len(set(placed.values())) >= 3  # and the users are spread
    assert await backends_seen(port, 8) == set("abcd")  # keyless requests go round robin


async def test_the_fleet_view_shows_the_maglev_digests(
    lbd: LbdFactory, http_backends: Callable[[str], Any]
) -> None:
    a, b = await http_backends("a"), await http_backends("b")
    first = lbd(application_config(free_port(), [a.port, b.port]))
    second = lbd(application_config(free_port(), [b.port, a.port]))  # listed in another order
    await first.wait_ready()
    await second.wait_ready()
    _, one = await first.admin("GET", "/v1/fleet")
    _, two = await second.admin("GET", "/v1/fleet")
    assert one["node"] == {"zone": "zone-a", "generation": 1}
    digest = one["target_groups"][0]["maglev"]["serving_digest"]
    assert digest and digest == two["target_groups"][0]["maglev"]["serving_digest"]
    status, _ = await second.admin("DELETE", f"/v1/target-groups/web/targets/127.0.0.1:{a.port}")
    assert status == 200
    _, two = await second.admin("GET", "/v1/fleet")
    assert two["target_groups"][0]["maglev"]["serving_digest"] != digest  # the nodes now disagree
    assert two["target_groups"][0]["maglev"]["serving"] == [f"127.0.0.1:{b.port}"]


# -- config: bad discovery and consistent_hash settings name their key ----------------------------------


def group_errors(**group: Any) -> list[str]:
    config = application_config(8080, [8081])
    config["target_groups"][0].update(group)
    with pytest.raises(ConfigError) as info:
        parse_config(yaml.safe_dump(config, sort_keys=False))
    return [str(issue) for issue in info.value.issues]


@pytest.mark.parametrize(
    ("group", "where", "words"),
    [
        ({"algorithm": "consistent_hash"}, "target_groups[0]", "consistent_hash: required"),
        (
            {"algorithm": "consistent_hash", "consistent_hash": {"type": "http_header"}},
            "target_groups[0].consistent_hash",
            "http_header_name: required",
        ),
        (
            {"consistent_hash": {"type": "source_ip"}},
            "target_groups[0]",
            "only with algorithm consistent_hash",
        ),
        (
            {
                "algorithm": "consistent_hash",
                "consistent_hash": {"type": "cookie", "cookie_name": "s"},
                "stickiness": {"enabled": True},
            },
            "target_groups[0]",
            "use one or the other",
        ),
        (
            {"discovery": {"type": "dns", "name": "web.example.internal"}},
            "target_groups[0]",
            "discovery.port",
        ),
        (
            {"discovery": {"type": "dns", "name": "_web._tcp.x", "resolver": "dns.example:53"}},
            "target_groups[0].discovery.resolver",
            "resolver: must be an IP address",
        ),
        (
            {"discovery": {"type": "etcd", "endpoints": ["127.0.0.1:2379"], "prefix": "/a/"}},
            "target_groups[0].discovery.endpoints[0]",
            "URL of an etcd member",
        ),
        ({"discovery": {"type": "consul"}}, "target_groups[0].discovery", "allowed: dns, etcd"),
    ],
)
def test_bad_discovery_and_hash_settings_name_their_place(
    group: dict[str, Any], where: str, words: str
) -> None:
    errors = group_errors(**group)
    assert any(error.startswith(where) and words in error for error in errors), errors


def test_registry_entries_become_targets_or_say_why_not() -> None:
    from lbd.discovery.etcd import prefix_end
    from lbd.discovery.targets import InvalidTarget, as_target

    assert prefix_end(b"/lbd/targets/web/") == b"/lbd/targets/web0"
    assert prefix_end(b"a\xff") == b"b"
    assert as_target({"id": "10.0.0.5"}, zone="zone-b", port=80) == {
        "id": "10.0.0.5",
        "port": 80,
        "zone": "zone-b",
        "weight": 1,
    }
    with pytest.raises(InvalidTarget, match="port"):
        as_target({"id": "10.0.0.5", "port": 0}, zone="zone-a")
    with pytest.raises(InvalidTarget, match="JSON object"):
        as_target(["10.0.0.5"], zone="zone-a")


async def test_a_reload_that_drops_discovery_drains_its_targets(
    etcd: Etcd, lbd: LbdFactory, http_backends: Callable[[str], Any]
) -> None:
    a: HttpBackend = await http_backends("a")
    b: HttpBackend = await http_backends("b")
    await etcd.put("/lbd/targets/web/a", {"id": "127.0.0.1", "port": a.port})
    port = free_port()
    config = discovered_config(port, {"type": "etcd", "endpoints": [etcd.url], "prefix": "/lbd/targets/web/"})
    proc = lbd(config)
    await proc.wait_ready()
    await wait_for(lambda: _only(port, "a"), what="the etcd target to serve")
    # The file now lists b itself and no discovery: a leaves (draining, delay 0), b serves.
    group = config["target_groups"][0]
    del group["discovery"]
    group["targets"] = [{"id": "127.0.0.1", "port": b.port}]
    proc.write_config(config)
    status, body = await proc.admin("POST", "/v1/reload")
    assert status == 200, body
    await wait_for(lambda: _only(port, "b"), what="the discovered target to leave")
    listing = await targets_listing(proc)
    assert [t["port"] for t in listing["targets"]] == [b.port] and "discovery" not in listing
