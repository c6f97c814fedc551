"""Classic load balancers through a real ``lbd run``: each listener pairing (HTTP, HTTPS, TCP with PROXY v1,
SSL), each form of the health-check target string, X-Forwarded-*, and connection draining."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lbd.tls.store import CertificateStore, issue
from tests.certs import self_signed
from tests.conftest import LbdFactory
from tests.http_backend import HttpBackend
from tests.http_client import Client
from tests.lbdproc import Lbd, free_port, wait_for


@dataclass
class RecordingServer:
    """A TCP (or TLS) instance that records every byte of each connection and answers "ok\\n" + echo."""

    tls: ssl.SSLContext | None = None
    port: int = 0
    received: list[bytearray] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def start(self) -> RecordingServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen = bytearray()
        self.received.append(seen)
        try:
            while data := await reader.read(65536):
                seen += data
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


@dataclass
class Setup:
    proc: Lbd
    ports: dict[str, int]
    http: HttpBackend
    https: HttpBackend
    tcp: RecordingServer
    ssl_instance: RecordingServer


def check(target: str) -> dict[str, Any]:
    return {"target": target, "interval_seconds": 2, "timeout_seconds": 1, "healthy_threshold": 2}


def classic(name: str, listener: dict[str, Any], health: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "classic",
        "listeners": [{"address": "127.0.0.1", **listener}],
        "instances": [{"id": "127.0.0.1"}],
        "health_check": check(health),
        **extra,
    }


@pytest.fixture
async def setup(lbd: LbdFactory, tmp_path: Path) -> AsyncIterator[Setup]:
    tls = self_signed().server_context(tmp_path)
    http = await HttpBackend("http-instance").start()
    https = await HttpBackend("https-instance").start(tls=tls)
    tcp = await RecordingServer().start()
    ssl_instance = await RecordingServer(tls).start()
    store = CertificateStore(tmp_path / "store")
    store.put(issue("site", ["site.test"]))
    ports = {kind: free_port() for kind in ("http", "https", "tcp", "ssl")}
    config = {
        "node": {"zone": "zone-a"},
        "certificates": {"store": str(store.directory)},
        "load_balancers": [
            classic(
                "l7",
                {
                    "protocol": "HTTP",
                    "port": ports["http"],
                    "instance_protocol": "HTTP",
                    "instance_port": http.port,
                },
                f"HTTP:{http.port}/health",
                connection_draining_seconds=20,
            ),
            classic(
                "l7s",
                {
                    "protocol": "HTTPS",
                    "port": ports["https"],
                    "certificates": ["site"],
                    "instance_protocol": "HTTPS",
                    "instance_port": https.port,
                },
                f"HTTPS:{https.port}/health",
            ),
            classic(
                "l4",
                {
                    "protocol": "TCP",
                    "port": ports["tcp"],
                    "instance_protocol": "TCP",
                    "instance_port": tcp.port,
                    "proxy_protocol": True,
                },
                f"TCP:{tcp.port}",
            ),
            classic(
                "l4s",
                {
                    "protocol": "SSL",
                    "port": ports["ssl"],
                    "certificates": ["site"],
                    "instance_protocol": "SSL",
                    "instance_port": ssl_instance.port,
                },
                f"SSL:{ssl_instance.port}",
            ),
        ],
    }
    proc = lbd(config)
    await proc.wait_ready()

    async def all_healthy() -> bool:
        status, body = await proc.admin("GET", "/v1/target-groups")
        groups = body["target_groups"] if status == 200 else []
        return len(groups) == 4 and all(g["states"] == {"healthy": 1} for g in groups)

    await wait_for(all_healthy, what="every instance healthy by its CLB health-check target")
    yield Setup(proc, ports, http, https, tcp, ssl_instance)
    for server in (http, https, tcp, ssl_instance):
        await server.close()


def client_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def test_health_check_targets_and_groups(setup: Setup) -> None:
    _, body = await setup.proc.admin("GET", "/v1/target-groups")
    groups = {g["name"]: g for g in body["target_groups"]}
    assert {name.split(":")[0] for name in groups} == {"l7", "l7s", "l4", "l4s"}
    l7 = groups[f"l7:{setup.ports['http']}"]
    # CLB: least outstanding requests for HTTP, round robin for TCP; a 200 only; the target's path.
    assert l7["algorithm"] == "least_outstanding_requests"
    assert l7["health_check"]["matcher"] == "200" and l7["health_check"]["path"] == "/health"
    assert groups[f"l4:{setup.ports['tcp']}"]["algorithm"] == "round_robin"
    assert groups[f"l4s:{setup.ports['ssl']}"]["health_check"]["protocol"] == "SSL"
    assert any(r.target == "/health" for r in setup.https.requests)  # the HTTPS check reached the instance


async def test_http_and_https_pairings_forward_with_x_forwarded_headers(setup: Setup) -> None:
    client = await Client.connect(setup.ports["http"])
    response = await client.request("GET", "/hello")
    client.close()
    assert response.status == 200 and response.body == b"hello from http-instance\n"
    seen = [r for r in setup.http.requests if r.target == "/hello"][-1]
    assert seen.header("x-forwarded-for") == "127.0.0.1"
    assert seen.header("x-forwarded-proto") == "http"
    assert seen.header("x-forwarded-port") == str(setup.ports["http"])

    reader, writer = await asyncio.open_connection(
        "127.0.0.1", setup.ports["https"], ssl=client_tls(), server_hostname="site.test"
    )
    writer.write(b"GET /secure HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
    raw = await reader.read(-1)
    writer.close()
    assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b"hello from https-instance\n")
    seen = [r for r in setup.https.requests if r.target == "/secure"][-1]
    assert seen.header("x-forwarded-proto") == "https"


async def test_tcp_pairing_sends_proxy_v1_byte_exact(setup: Setup) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", setup.ports["tcp"])
    client_port = writer.get_extra_info("sockname")[1]
    payload = bytes(range(256)) * 64
    writer.write(payload)
    header = f"PROXY TCP4 127.0.0.1 127.0.0.1 {client_port} {setup.ports['tcp']}\r\n".encode()
    # The instance echoes what it got: the PROXY line first, then the client's bytes untouched.
    echoed = await reader.readexactly(len(header) + len(payload))
    writer.close()
    assert echoed == header + payload

    def received() -> bool:
        return any(bytes(seen) == header + payload for seen in setup.tcp.received)

    await wait_for(received, what="the PROXY line and the payload at the instance")


async def test_ssl_pairing_reencrypts(setup: Setup) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", setup.ports["ssl"], ssl=client_tls(), server_hostname="site.test"
    )
    writer.write(b"through two TLS sessions")
    assert await reader.readexactly(24) == b"through two TLS sessions"
    writer.close()
    assert any(bytes(seen) == b"through two TLS sessions" for seen in setup.ssl_instance.received)


async def test_connection_draining(setup: Setup) -> None:
    group = f"l7:{setup.ports['http']}"
    target = f"127.0.0.1:{setup.http.port}"
    # A request in flight when the instance is deregistered finishes; new requests find no instance.
    slow = await Client.connect(setup.ports["http"])
    slow.send(b"GET /sleep/1500 HTTP/1.1\r\nHost: x\r\n\r\n")
    await wait_for(lambda: any(r.target == "/sleep/1500" for r in setup.http.requests), what="slow request")
    status, body = await setup.proc.admin("DELETE", f"/v1/target-groups/{group}/targets/{target}")
    assert status == 200 and body["state"] == "draining"
    status, targets = await setup.proc.admin("GET", f"/v1/target-groups/{group}/targets")
    described = targets["targets"][0]
    assert described["state"] == "draining"
    assert described["description"] == "Instance deregistration currently in progress"
    response = await slow.response()
    slow.close()
    assert response.status == 200
    fresh = await Client.connect(setup.ports["http"])
    response = await fresh.request("GET", "/after")
    fresh.close()
    assert response.status == 503
