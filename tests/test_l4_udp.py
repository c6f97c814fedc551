"""Network load balancer, UDP and TCP_UDP listeners: functional tests through a real ``lbd run``."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from lbd.upstream.balancers import FlowHash
from lbd.upstream.target import Target
from tests.lbdproc import Lbd, free_port, http_request, wait_for

LbdFactory = Callable[..., Lbd]


class UdpEcho(asyncio.DatagramProtocol):
    """A UDP target answering ``<name>:<datagram>`` to whoever sent it, counting the clients it saw."""

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.transport: asyncio.DatagramTransport | None = None
        self.clients: set[tuple[str, int]] = set()
        self.datagrams = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.clients.add(addr)
        self.datagrams += 1
        assert self.transport is not None
        self.transport.sendto(self.name + b":" + data, addr)


class Target2:
    """One target host: a UDP echo and a TCP echo on the same address and port (TCP_UDP), and the TCP side
    doubles as the health-check port."""

    def __init__(self, address: str, name: bytes) -> None:
        self.address = address
        self.name = name
        self.udp = UdpEcho(name)
        self.udp_transport: asyncio.DatagramTransport | None = None
        self.tcp: asyncio.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> Target2:
        loop = asyncio.get_running_loop()
        self.tcp = await asyncio.start_server(self._tcp, self.address, port)
        self.port = self.tcp.sockets[0].getsockname()[1]
        self.udp_transport, _ = await loop.create_datagram_endpoint(
            lambda: self.udp, local_addr=(self.address, self.port)
        )
        return self

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(self.name + b":" + data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        if self.tcp is not None:
            self.tcp.close()
            self.tcp = None
        if self.udp_transport is not None:
            self.udp_transport.close()
            self.udp_transport = None


@pytest.fixture
async def hosts() -> AsyncIterator[Callable[[str, bytes], Any]]:
    started: list[Target2] = []

    async def start(address: str, name: bytes) -> Target2:
        target = await Target2(address, name).start()
        started.append(target)
        return target

    yield start
    for target in started:
        target.stop()


def udp_config(
    port: int, targets: list[Target2], log: Path, *, protocol: str = "UDP", **group: Any
) -> dict[str, Any]:
    return {
        "node": {"zone": "zone-a", "workers": 1},
        "load_balancers": [
            {
                "name": "nlb",
                "type": "network",
                "access_log": {"path": str(log), "format": "json"},
                "listeners": [
                    {
                        "protocol": protocol,
                        "port": port,
                        "address": "127.0.0.1",
                        "udp_idle_timeout_seconds": group.pop("idle", 120),
                        "default_actions": [{"type": "forward", "target_group": "pool"}],
                    }
                ],
            }
        ],
        "target_groups": [
            {
                "name": "pool",
                "protocol": protocol,
                "health_check": group.pop("health_check", {"enabled": False}),
                "targets": [{"id": t.address, "port": t.port} for t in targets],
                **group,
            }
        ],
    }


class Client:
    """One UDP client socket (one flow), connected to lbd's listener."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.connect(("127.0.0.1", port))
        self.address = self.sock.getsockname()

    async def ask(self, payload: bytes) -> bytes:
        """Send until an answer comes (a datagram may be lost on a loaded machine; UDP promises nothing)."""
        loop = asyncio.get_running_loop()
        for _ in range(5):
            self.sock.send(payload)
            try:
                return await asyncio.wait_for(loop.sock_recv(self.sock, 65535), 2.0)
            except TimeoutError:
                continue
        raise AssertionError(f"no answer to {payload!r} from {self.address}")

    def close(self) -> None:
        self.sock.close()


async def listener_stats(proc: Lbd) -> dict[str, Any]:
    status, body = await proc.admin("GET", "/v1/stats")
    assert status == 200
    stats: dict[str, Any] = body["listeners"][0]
    return stats


def flow_lines(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if '"type":"udp"' in line]


async def test_udp_flows_spread_by_flow_hash_expire_and_share_the_port_with_tcp(
    lbd: LbdFactory, hosts: Callable[[str, bytes], Any], tmp_path: Path
) -> None:
    a = await hosts("127.0.0.1", b"a")
    b = await hosts("127.0.0.2", b"b")
    port = free_port(socket.SOCK_DGRAM)
    log = tmp_path / "access.log"
    proc = lbd(udp_config(port, [a, b], log, protocol="TCP_UDP", idle=1.0))
    await proc.wait_ready()

    # 40 flows, three datagrams each: every reply reaches the client that asked, from the listener's
    # address, and every datagram of a flow goes to the same target.
    clients = [Client(port) for _ in range(40)]
    answered_by: dict[tuple[str, int], bytes] = {}
    for round_ in range(3):
        for i, client in enumerate(clients):
            payload = f"flow {i} round {round_}".encode()
            reply = await client.ask(payload)
            name, _, echoed = reply.partition(b":")
            assert echoed == payload
            assert answered_by.setdefault(client.address, name) == name
    assert set(answered_by.values()) == {b"a", b"b"}
    # The target is the one lbd's flow hash gives for the 5-tuple: the same in every worker and node.
    hashing = FlowHash([Target(a.address, a.port, "zone-a"), Target(b.address, b.port, "zone-a")])
    for client in clients:
        key = f"udp|{client.address[0]}|{client.address[1]}|127.0.0.1|{port}".encode()
        chosen = hashing.pick(key)
        assert chosen is not None
        assert answered_by[client.address] == (b"a" if chosen.id == a.address else b"b")
    # The targets saw lbd's per-flow sockets, one per flow, never the clients' addresses.
    assert len(a.udp.clients) + len(b.udp.clients) == 40
    assert not {c.address for c in clients} & (a.udp.clients | b.udp.clients)

    stats = await listener_stats(proc)
    assert stats["udp_new_flows"] == 40
    assert stats["udp_active_flows"] == 40
    assert stats["processed_packets"] >= 240
    assert stats["udp_processed_bytes"] > 0

    # TCP_UDP: the same port speaks TCP to the same targets.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"over tcp")
    assert (await reader.read(100)).partition(b":")[2] == b"over tcp"
    writer.close()

    # Idle expiry (1 s here, NLB's 120 s by default): every flow ends, one access-log line each.
    async def expired() -> bool:
        return (await listener_stats(proc))["udp_active_flows"] == 0

    await wait_for(expired, what="the UDP flows to expire")
    await wait_for(lambda: len(flow_lines(log)) == 40, what="one access-log line per expired flow")
    line = next(
        entry
        for entry in flow_lines(log)
        if entry["client:port"] == f"{clients[0].address[0]}:{clients[0].address[1]}"
    )
    assert line["listener"] == f"TCP_UDP:{port}"
    assert line["received_packets"] == line["sent_packets"] >= 3
    assert line["destination:port"] in (f"{a.address}:{a.port}", f"{b.address}:{b.port}")

    # After expiry the next datagram is a new flow, hashed again (to the same target: nothing changed).
    reply = await clients[0].ask(b"again")
    assert reply.partition(b":")[0] == answered_by[clients[0].address]
    stats = await listener_stats(proc)
    assert stats["udp_new_flows"] == 41
    assert stats["idle_timeouts"] >= 40
    status, _, metrics = await http_request(proc.admin_port, "GET", "/metrics")
    assert status == 200
    text = metrics.decode()
    for name in (
        "lbd_new_flows_udp_total",
        "lbd_active_flows_udp",
        "lbd_processed_bytes_udp_total",
        "lbd_processed_packets_total",
    ):
        assert f'{name}{{listener="TCP_UDP:{port}",load_balancer="nlb"}}' in text, name
    assert f'lbd_new_flows_udp_total{{listener="TCP_UDP:{port}",load_balancer="nlb"}} 41.0' in text
    for client in clients:
        client.close()


async def test_flows_move_off_a_target_whose_health_checks_fail(
    lbd: LbdFactory, hosts: Callable[[str, bytes], Any], tmp_path: Path
) -> None:
    a = await hosts("127.0.0.1", b"a")
    b = await hosts(
        "127.0.0.2",
        b"b",
    )
    # UDP cannot be health-checked over UDP (NLB): TCP on a configured port, here a third server per host.
    health_port = free_port()
    checks = [
        await asyncio.start_server(lambda r, w: w.close(), host, health_port)
        for host in (a.address, b.address)
    ]
    port = free_port(socket.SOCK_DGRAM)
    check = {
        "protocol": "TCP",
        "port": health_port,
        "interval_seconds": 2,
        "timeout_seconds": 1,
        "healthy_threshold": 2,
        "unhealthy_threshold": 2,
    }
    proc = lbd(udp_config(port, [a, b], tmp_path / "access.log", health_check=check))
    await proc.wait_ready()

    async def states() -> dict[str, str]:
        status, body = await proc.admin("GET", "/v1/target-groups/pool/targets")
        assert status == 200, body
        return {t["id"]: t["state"] for t in body["targets"]}

    async def both_healthy() -> bool:
        return set((await states()).values()) == {"healthy"}

    await wait_for(both_healthy, what="both targets healthy")
    clients = [Client(port) for _ in range(30)]
    first = {c.address: (await c.ask(b"x")).partition(b":")[0] for c in clients}
    on_b = [c for c in clients if first[c.address] == b"b"]
    assert on_b and len(on_b) < len(clients)

    checks[1].close()  # b's health port goes away; its UDP service still answers, but lbd must move off it

    async def b_unhealthy() -> bool:
        return (await states())[b.address] == "unhealthy"

    await wait_for(b_unhealthy, what="target b unhealthy")
    for client in clients:
        answer = (await client.ask(b"y")).partition(b":")[0]
        assert answer == b"a"  # b's flows moved; a's stayed (flow hash moves only the flows on b)
    assert (await listener_stats(proc))["udp_new_flows"] == 30
    checks[0].close()
    for client in clients:
        client.close()


async def test_ipv6_flows_keep_one_socket_each(
    lbd: LbdFactory, hosts: Callable[[str, bytes], Any], tmp_path: Path
) -> None:
    target = await hosts("::1", b"six")
    port = free_port(socket.SOCK_DGRAM)
    config = udp_config(port, [target], tmp_path / "access.log")
    config["load_balancers"][0]["listeners"][0]["address"] = "::1"
    proc = lbd(config)
    await proc.wait_ready()
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(("::1", port))
        for i in range(5):
            sock.send(b"%d" % i)
            assert await asyncio.wait_for(loop.sock_recv(sock, 100), 5) == b"six:%d" % i
    # recvfrom gives IPv6 addresses with flowinfo and scope id: still one flow, one socket to the target.
    assert len(target.udp.clients) == 1
    assert (await listener_stats(proc))["udp_new_flows"] == 1
