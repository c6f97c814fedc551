"""gRPC and HTTP/2 target groups through one real ``lbd run``: grpcio clients and a real grpcio server (unary,
server-streaming and bidirectional calls over h2c prior knowledge and over HTTPS with ALPN h2, to targets
over h2c and over TLS), status and trailers passed through, the errors lbd makes itself as trailers-only
responses, grpc-timeout, 464 for what a GRPC group refuses, GRPC health checks with ELB's states and
reasons, and HTTP2 groups to an h2 target: its MAX_CONCURRENT_STREAMS respected, its GOAWAY with no failed
request, HTTP/1.1 clients translated, connections retired on reload."""

from __future__ import annotations

import asyncio
import json
import signal
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.serialization import Encoding

from lbd.http import h2bridge
from lbd.tls.store import CertificateStore, issue
from tests.grpc_backend import GrpcBackend, raw
from tests.h2_backend import H2Backend
from tests.h2_client import H2Client, Response
from tests.lbdproc import Lbd, free_port, http_request, refused_port, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHECK = {"interval_seconds": 2, "timeout_seconds": 1, "healthy_threshold": 2, "unhealthy_threshold": 2}


def forward(group: str) -> list[dict[str, Any]]:
    return [{"type": "forward", "target_group": group}]


def h2c_listener(port: int, group: str, **extra: Any) -> dict[str, Any]:
    return {"protocol": "HTTP", "port": port, "address": "127.0.0.1", "h2c": True, **extra} | {
        "default_actions": forward(group)
    }


def group(
    name: str, port: int, version: str = "GRPC", protocol: str = "HTTP", **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "protocol": protocol,
        "protocol_version": version,
        "health_check": {"enabled": False},
        "targets": [{"id": "127.0.0.1", "port": port, "zone": "zone-a"}],
        **extra,
    }


@dataclass
class Setup:
    proc: Lbd
    backend: GrpcBackend
    h2web: H2Backend
    goaway: H2Backend
    ports: dict[str, int]
    cert_pem: bytes
    log_path: Path
    config: dict[str, Any]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    tmp = tmp_path_factory.mktemp("grpc")
    store = CertificateStore(tmp / "store")
    site = issue("site", ["localhost"])
    store.put(site)
    backend = GrpcBackend(tmp).start()
    h2web = await H2Backend(max_streams=2).start()
    goaway = await H2Backend(goaway_after=3).start()
    ports = {name: free_port() for name in ("https", "h2c", "dead", "h2web", "goaway", "slow")}
    log_path = tmp / "access.log"
    fixed = {"type": "fixed-response", "status_code": 404, "content_type": "text/plain", "message_body": "no"}
    config: dict[str, Any] = {
        "node": {"zone": "zone-a", "workers": 1},
        "certificates": {"store": str(store.directory)},
        "load_balancers": [
            {
                "name": "alb",
                "type": "application",
                "cross_zone": True,
                "idle_timeout_seconds": 60,
                "access_log": {"path": str(log_path), "format": "json"},
                "listeners": [
                    {
                        "protocol": "HTTPS",
                        "port": ports["https"],
                        "address": "127.0.0.1",
                        "certificates": ["site"],
                        "default_actions": forward("grpc-tls"),
                    },
                    h2c_listener(
                        ports["h2c"],
                        "grpc",
                        rules=[
                            {
                                "priority": 10,
                                "conditions": [{"field": "path-pattern", "values": ["/fixed.Svc/*"]}],
                                "actions": [fixed],
                            }
                        ],
                    ),
                    h2c_listener(ports["dead"], "dead"),
                    h2c_listener(ports["h2web"], "h2web"),
                    h2c_listener(ports["goaway"], "goaway"),
                ],
            },
            {
                "name": "slow",
                "type": "application",
                "cross_zone": True,
                "idle_timeout_seconds": 2,
                "listeners": [h2c_listener(ports["slow"], "grpc")],
            },
        ],
        "target_groups": [
            group(
                "grpc",
                backend.port,
                health_check={
                    "protocol": "GRPC",
                    "path": "/grpc.health.v1.Health/Check",
                    "matcher": "0",
                    **CHECK,
                },
            ),
            group("grpc-tls", backend.tls_port, protocol="HTTPS"),
            group("dead", refused_port()),
            group("h2web", h2web.port, version="HTTP2"),
            group("goaway", goaway.port, version="HTTP2"),
            # Health checks only: ALB's defaults (/AWS.ALB/healthcheck, success code 12), and code 0 there.
            group("grpc-default", backend.port, health_check={"protocol": "GRPC", **CHECK}),
            group("grpc-mismatch", backend.port, health_check={"protocol": "GRPC", "matcher": "0", **CHECK}),
            group(
                "grpc-tls-checked",
                backend.tls_port,
                protocol="HTTPS",
                health_check={"protocol": "GRPC", **CHECK},
            ),
            group("grpc-refused", refused_port(), health_check={"protocol": "GRPC", **CHECK}),
        ],
    }
    proc = Lbd(tmp, config)
    proc.start()
    try:
        await proc.wait_ready()
        cert_pem = site.leaf.public_bytes(Encoding.PEM)
        yield Setup(proc, backend, h2web, goaway, ports, cert_pem, log_path, config)
    finally:
        proc.stop()
        print(f"--- lbd log ---\n{proc.log[-20000:]}")
        backend.stop()
        await h2web.close()
        await goaway.close()


def channel(setup: Setup, name: str) -> grpc.Channel:
    if name == "https":
        credentials = grpc.ssl_channel_credentials(root_certificates=setup.cert_pem)
        return grpc.secure_channel(
            f"127.0.0.1:{setup.ports[name]}",
            credentials,
            options=[("grpc.ssl_target_name_override", "localhost")],
        )
    return grpc.insecure_channel(f"127.0.0.1:{setup.ports[name]}")


def calls(setup: Setup, name: str) -> tuple[bytes, tuple[tuple[str, str], ...], list[bytes], list[bytes]]:
    """A unary, a server-streaming and a bidirectional call (blocking: run in a thread)."""
    with channel(setup, name) as ch:
        answer, call = raw(ch, "/test.Echo/Unary").with_call(b"hello", timeout=20)
        trailers = tuple((m.key, m.value) for m in call.trailing_metadata())
        counted = list(raw(ch, "/test.Echo/Count", "unary_stream")(b"5", timeout=20))
        chat = list(raw(ch, "/test.Echo/Chat", "stream_stream")(iter([b"a", b"b", b"c"]), timeout=20))
    return answer, trailers, counted, chat


def failure(setup: Setup, name: str, method: str, request: bytes, **kwargs: Any) -> grpc.RpcError:
    with channel(setup, name) as ch:
        try:
            raw(ch, method)(request, **kwargs)
        except grpc.RpcError as exc:
            return exc
    raise AssertionError("the call succeeded")


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


GRPC_HEADERS = [("content-type", "application/grpc"), ("te", "trailers")]


# -- calls through lbd ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("listener", ["h2c", "https"])
async def test_unary_and_streaming_calls_with_trailers(setup: Setup, listener: str) -> None:
    before = len(setup.backend.metadata)
    answer, trailers, counted, chat = await asyncio.to_thread(calls, setup, listener)
    assert answer == b"olleh"
    assert ("x-trailer", "t1") in trailers  # the target's trailers reach the client
    assert counted == [b"0", b"1", b"2", b"3", b"4"]
    assert chat == [b"echo:a", b"echo:b", b"echo:c"]
    seen = setup.backend.metadata[before]
    assert seen["x-forwarded-proto"] == ("https" if listener == "https" else "http")
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-amzn-trace-id"].startswith("Root=1-")


async def test_target_status_passes_through(setup: Setup) -> None:
    error = await asyncio.to_thread(failure, setup, "h2c", "/test.Echo/Unary", b"fail", timeout=20)
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "no such thing")


async def test_errors_lbd_makes_are_trailers_only(setup: Setup) -> None:
    client = await H2Client.connect(setup.ports["dead"], tls=False)
    try:
        response = await client.request(
            "POST", "/test.Echo/Unary", headers=GRPC_HEADERS, body=grpc_frame(b"x")
        )
    finally:
        await client.close()
    # One HEADERS frame that ends the stream: status 200, gRPC content type, grpc-status 14, no body.
    assert response.status == 200
    assert response.header(b"content-type") == b"application/grpc"
    assert response.header(b"grpc-status") == b"14"
    assert not response.body and not response.trailers
    refused = await asyncio.to_thread(failure, setup, "dead", "/test.Echo/Unary", b"x", timeout=20)
    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    fixed = await asyncio.to_thread(failure, setup, "h2c", "/fixed.Svc/Do", b"x", timeout=20)
    assert fixed.code() == grpc.StatusCode.UNIMPLEMENTED  # a rule's fixed response implements no method


async def test_grpc_timeout_and_target_timeout_are_deadline_exceeded(setup: Setup) -> None:
    client = await H2Client.connect(setup.ports["h2c"], tls=False)
    try:
        headers = [*GRPC_HEADERS, ("grpc-timeout", "300m")]
        response = await client.request(
            "POST", "/test.Echo/Unary", headers=headers, body=grpc_frame(b"sleep:5")
        )
    finally:
        await client.close()
    assert response.status == 200 and response.header(b"grpc-status") == b"4"
    # No deadline from the client: the listener's idle timeout (2 s) is the target timeout (504).
    error = await asyncio.to_thread(failure, setup, "slow", "/test.Echo/Unary", b"sleep:6")
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_grpc_group_refuses_http1_and_non_post_with_464(setup: Setup) -> None:
    status, _, _ = await http_request(setup.ports["h2c"], "POST", "/test.Echo/Unary", body=b"x")
    assert status == 464
    client = await H2Client.connect(setup.ports["h2c"], tls=False)
    try:
        response = await client.request("GET", "/test.Echo/Unary")
    finally:
        await client.close()
    assert response.status == 464


async def test_grpc_requests_are_counted_and_logged(setup: Setup) -> None:
    await asyncio.to_thread(calls, setup, "https")

    async def counted() -> int:
        status, body = await setup.proc.admin("GET", "/v1/stats")
        assert status == 200
        return sum(item.get("grpc_requests", 0) for item in body["listeners"])

    assert await wait_for(counted) >= 3
    _, _, metrics = await http_request(setup.proc.admin_port, "GET", "/metrics")
    https = setup.ports["https"]
    exported = [line for line in metrics.decode().splitlines() if line.startswith("lbd_grpc_requests_total{")]
    assert any(f":{https}" in line and not line.endswith(" 0.0") for line in exported), exported

    def logged() -> set[str]:
        lines = setup.log_path.read_text().splitlines() if setup.log_path.exists() else []
        return {json.loads(line)["type"] for line in lines}

    await wait_for(lambda: "grpcs" in logged(), what="a grpcs access-log entry")


# -- GRPC health checks --------------------------------------------------------------------------------------


async def health(proc: Lbd, group: str) -> dict[str, Any]:
    status, body = await proc.admin("GET", f"/v1/target-groups/{group}/targets")
    assert status == 200, body
    target: dict[str, Any] = body["targets"][0]
    return target


async def wait_health(proc: Lbd, group: str, state: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        target = await health(proc, group)
        return target if target["state"] == state else None

    result: dict[str, Any] = await wait_for(reached, what=f"{group} {state}")
    return result


@pytest.mark.slow
async def test_grpc_health_checks_states_and_reasons(setup: Setup) -> None:
    # ALB's default check: /AWS.ALB/healthcheck is not implemented, grpc-status 12 is success.
    assert (await wait_health(setup.proc, "grpc-default", "healthy"))["reason"] == ""
    mismatch = await wait_health(setup.proc, "grpc-mismatch", "unhealthy")
    assert mismatch["reason"] == "Target.ResponseCodeMismatch"
    assert mismatch["description"] == "Health checks failed with these codes: [12]"
    await wait_health(setup.proc, "grpc-tls-checked", "healthy")  # over TLS with ALPN h2 (an HTTPS group)
    refused = await wait_health(setup.proc, "grpc-refused", "unhealthy")
    assert (refused["reason"], refused["description"]) == (
        "Target.FailedHealthChecks",
        "Health checks failed: connection refused",
    )
    await wait_health(setup.proc, "grpc", "healthy")  # grpc.health.v1.Health/Check answers 0
    setup.backend.serving.clear()
    try:
        down = await wait_health(setup.proc, "grpc", "unhealthy")
        assert down["description"] == "Health checks failed with these codes: [14]"
    finally:
        setup.backend.serving.set()
    await wait_health(setup.proc, "grpc", "healthy")


# -- HTTP2 target groups -------------------------------------------------------------------------------------


async def test_http2_group_respects_max_concurrent_streams_and_passes_trailers(setup: Setup) -> None:
    client = await H2Client.connect(setup.ports["h2web"], tls=False)
    try:
        many = [client.start("GET", f"/slow/200?n={n}") for n in range(12)]
        posted = client.start("POST", "/echo", body=b"x" * 100_000)
        await asyncio.wait_for(asyncio.gather(*(r.done.wait() for r in [*many, posted])), 30)
    finally:
        await client.close()
    assert [r.status for r in many] == [200] * 12
    assert all(bytes(r.body).startswith(b"GET /slow/200") for r in many)
    assert (b"x-body-length", b"0") in many[0].trailers  # the target's trailers, end to end over h2
    assert (b"x-body-length", b"100000") in posted.trailers
    # The target allows 2 streams per connection: lbd never opened more on one, and opened only a few
    # connections (13 requests, at most 4 connections: the rest waited for a free stream).
    assert setup.h2web.peak <= 2
    assert setup.h2web.connections <= h2bridge.MAX_CONNECTIONS_PER_TARGET


async def test_goaway_from_target_fails_no_request(setup: Setup) -> None:
    client = await H2Client.connect(setup.ports["goaway"], tls=False)
    try:
        many = [client.start("POST", f"/slow/50?n={n}", body=b"b" * n) for n in range(12)]
        await asyncio.wait_for(asyncio.gather(*(r.done.wait() for r in many)), 30)
    finally:
        await client.close()
    assert [r.status for r in many] == [200] * 12, [(r.status, bytes(r.body)) for r in many]
    assert setup.goaway.goaways >= 2  # the target went away several times; every request was answered


async def test_http1_client_to_http2_group_and_retirement_on_reload(setup: Setup) -> None:
    status, _, body = await http_request(setup.ports["h2web"], "POST", "/path?q=1", body=b"abc")
    assert status == 200 and b"POST /path?q=1\n" in body  # chunked: the target gave no length
    seen = setup.h2web.requests[-1]
    assert seen.headers[":authority"].startswith("127.0.0.1")
    assert bytes(seen.body) == b"abc"
    connections = setup.h2web.connections
    setup.proc.signal(signal.SIGHUP)
    await setup.proc.wait_generation(2)
    status, _, _ = await http_request(setup.ports["h2web"], "GET", "/after")
    assert status == 200
    assert setup.h2web.connections == connections + 1  # the old generation's connection is not reused


async def test_request_trailers_reach_an_http2_target(setup: Setup) -> None:
    client = await H2Client.connect(setup.ports["h2web"], tls=False)
    try:
        conn = client.conn
        stream_id = conn.get_next_available_stream_id()
        response = client.responses[stream_id] = Response()
        fields = [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", "localhost"),
            (":path", "/trailers"),
        ]
        conn.send_headers(stream_id, fields)
        conn.send_data(stream_id, b"body")
        conn.send_headers(stream_id, [("x-checksum", "abc")], end_stream=True)
        client._flush()
        await asyncio.wait_for(response.done.wait(), 20)
    finally:
        await client.close()
    assert response.status == 200
    seen = next(r for r in setup.h2web.requests if r.path == "/trailers")
    assert bytes(seen.body) == b"body"
    assert seen.trailers == {"x-checksum": "abc"}  # HTTP/2 client to HTTP/2 target: trailers kept


async def test_a_cancelled_call_is_cancelled_at_the_target(setup: Setup) -> None:
    client = await H2Client.connect(setup.ports["h2c"], tls=False)
    try:
        before, calls_before = setup.backend.cancelled, len(setup.backend.metadata)
        call = client.start("POST", "/test.Echo/Unary", headers=GRPC_HEADERS, body=grpc_frame(b"wait"))
        stream_id = max(client.responses)
        await wait_for(lambda: len(setup.backend.metadata) > calls_before, what="the call at the target")
        client.conn.reset_stream(stream_id, 8)  # CANCEL
        client._flush()
        # lbd resets the target's stream in turn: the server sees its call cancelled.
        await wait_for(lambda: setup.backend.cancelled > before, what="the target's call cancelled")
        assert call.status == 0  # no response was sent for it
    finally:
        await client.close()
