"""WebSocket APIs end to end: a real lbd, real WebSocket clients (the ``websockets`` package, and wsproto
over a raw socket for what a well-behaved client never sends), real Python HTTP integrations."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request

from tests.conftest import LbdFactory
from tests.gateway_auth_servers import AUDIENCE, ISSUER, AuthorizerEndpoint, jwk, rsa_key, token
from tests.http_backend import HttpBackend, SeenRequest
from tests.lbdproc import Lbd, free_port, http_request, wait_for
from tests.redis_server import RedisServer
from tests.test_gateway_api import Backends, create_key, group, metric, proxy
from tests.test_gateway_authorizers import policy


def ws_api(port: int, routes: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "name": "chat",
        "protocol": "WEBSOCKET",
        "listeners": [{"protocol": "HTTP", "port": port, "address": "127.0.0.1"}],
        "route_selection_expression": "$request.body.action",
        "routes": routes,
        **extra,
    }


def route(key: str, path: str, two_way: bool = False, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"route_key": key, "integration": proxy(path), **extra}
    if two_way:
        out["route_response_selection_expression"] = "$default"
    return out


CHAT_ROUTES = [
    route("$connect", "/connect"),
    route("$disconnect", "/disconnect"),
    route("echo", "/echo", two_way=True),
    route("quiet", "/echo"),  # one-way: the integration's answer is not sent back
]


async def start_chat(
    lbd: LbdFactory, backend: HttpBackend, routes: list[dict[str, Any]] = CHAT_ROUTES, **extra: Any
) -> tuple[Lbd, int]:
    port = free_port()
    config = {"target_groups": [group("app", backend)], "apis": [ws_api(port, routes, **extra)]}
    proc = lbd(config)
    await proc.wait_ready()
    return proc, port


def events(backend: HttpBackend, kind: str) -> list[SeenRequest]:
    return [r for r in backend.requests if r.header("x-amzn-event-type") == kind]


async def connection_id(backend: HttpBackend, before: int = 0) -> str:
    """The id the $connect integration was told (the backend's way to learn it, as on API Gateway)."""
    seen = await wait_for(lambda: events(backend, "CONNECT")[before:], what="$connect at the integration")
    return str(seen[0].header("x-amzn-connection-id"))


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    """Read until the server closes; its close frame's code and reason."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(ws.recv(), 20)
    assert info.value.rcvd is not None, "the server ended the connection without a close frame"
    return info.value.rcvd.code, info.value.rcvd.reason


# -- routes, integrations and the close ---------------------------------------------------------------------


async def test_routes_two_way_error_frame_and_disconnect(
    lbd: LbdFactory, http_backends: Backends, tmp_path: Path
) -> None:
    backend = await http_backends("app")
    log_path = tmp_path / "access.log"
    proc, port = await start_chat(lbd, backend, access_log={"path": str(log_path)})
    forged = {"x-amzn-authorizer-principal-id": "admin", "x-amzn-trace-id": "Root=1-abc"}
    url = f"ws://127.0.0.1:{port}/room?user=ann"
    async with connect(url, user_agent_header="test-client/1", additional_headers=forged) as ws:
        conn_id = await connection_id(backend)
        connect_seen = events(backend, "CONNECT")[0]
        # $connect sees the upgrade request's path, query and headers, and the connection's context.
        assert connect_seen.target == "/connect?user=ann"
        assert connect_seen.header("user-agent") == "test-client/1"
        assert connect_seen.header("x-amzn-route-key") == "$connect"
        assert connect_seen.header("sec-websocket-key") is None
        # A client cannot pose as lbd: its x-amzn-* fields are dropped (X-Ray's trace id passes).
        assert connect_seen.header("x-amzn-authorizer-principal-id") is None
        assert connect_seen.header("x-amzn-trace-id") == "Root=1-abc"

        await ws.send(json.dumps({"action": "echo", "text": "hi"}))
        assert json.loads(await ws.recv()) == {"action": "echo", "text": "hi"}  # two-way: /echo's body
        seen = events(backend, "MESSAGE")[-1]
        assert (seen.method, seen.target) == ("POST", "/echo")
        assert seen.header("x-amzn-connection-id") == conn_id
        assert seen.header("x-amzn-route-key") == "echo"
        assert seen.header("content-type") == "application/json"

        # A custom key that is not a route, a message without the key, a non-JSON text, a binary
        # message: no $default route, so API Gateway's error frame, naming the connection.
        for message in (
            json.dumps({"action": "nosuch"}),
            json.dumps({"text": "no action"}),
            "plain",
            b"\x00",
        ):
            await ws.send(message)
            frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
            assert frame["message"] == "Forbidden"
            assert frame["connectionId"] == conn_id
            assert frame["requestId"]

        # One-way: the integration is called, nothing comes back (the next answer is the echo's).
        await ws.send(json.dumps({"action": "quiet", "n": 1}))
        await ws.send(json.dumps({"action": "echo", "n": 2}))
        assert json.loads(await ws.recv()) == {"action": "echo", "n": 2}
        assert [json.loads(r.body)["n"] for r in events(backend, "MESSAGE")[-2:]] == [1, 2]
        await ws.close(4001, "bye now")

    gone = await wait_for(lambda: events(backend, "DISCONNECT"), what="$disconnect")
    assert gone[0].target == "/disconnect"
    assert gone[0].header("x-amzn-connection-id") == conn_id
    assert gone[0].header("x-amzn-disconnect-status-code") == "4001"
    assert json.loads(gone[0].body) == {"statusCode": 4001, "reason": "bye now"}

    labels = {"api": "chat", "stage": "prod"}
    assert await metric(proc, "lbd_api_websocket_connects_total", route="$connect", **labels) == 1
    assert await metric(proc, "lbd_api_websocket_messages_total", route="echo", direction="in") == 2
    assert await metric(proc, "lbd_api_websocket_messages_total", route="echo", direction="out") == 2
    assert await metric(proc, "lbd_api_websocket_client_errors_total", route="-", **labels) == 4
    assert await wait_for(lambda: _zero_open(proc), what="lbd_api_websocket_connections back to 0")

    # One access-log line per connect, message and disconnect, with API Gateway's $context names.
    def logged() -> list[dict[str, Any]] | None:
        lines = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.exists() else []
        return lines if lines and lines[-1]["eventType"] == "DISCONNECT" else None

    lines = await wait_for(logged, what="the DISCONNECT access-log line")
    assert [line["eventType"] for line in lines] == ["CONNECT"] + ["MESSAGE"] * 7 + ["DISCONNECT"]
    assert {line["connectionId"] for line in lines} == {conn_id}
    assert (lines[0]["status"], lines[0]["routeKey"]) == (101, "$connect")
    assert (lines[1]["routeKey"], lines[1]["integrationStatus"]) == ("echo", 200)
    assert (lines[2]["routeKey"], lines[2]["errorType"]) == ("-", "RESOURCE_NOT_FOUND")
    assert (lines[-1]["status"], lines[-1]["routeKey"]) == (4001, "$disconnect")


async def _zero_open(proc: Lbd) -> bool:
    _, _, body = await http_request(proc.admin_port, "GET", "/metrics")
    return 'lbd_api_websocket_connections{api="chat",stage="prod"} 0.0' in body.decode()


async def test_wss_on_an_https_listener(lbd: LbdFactory, http_backends: Backends, tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from lbd.tls.store import CertificateStore, issue

    store = CertificateStore(tmp_path / "store")
    store.put(issue("site", ["chat.test"]))
    backend = await http_backends("app")
    port = free_port()
    api = ws_api(port, [route("$default", "/echo", two_way=True)])
    api["listeners"] = [{"protocol": "HTTPS", "port": port, "address": "127.0.0.1", "certificates": ["site"]}]
    proc = lbd(
        {
            "certificates": {"store": str(store.directory)},
            "target_groups": [group("app", backend)],
            "apis": [api],
        }
    )
    await proc.wait_ready()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the certificate is checked below, against the store
    async with connect(f"wss://127.0.0.1:{port}/", ssl=context, server_hostname="chat.test") as ws:
        der = ws.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
        presented = x509.load_der_x509_certificate(der)
        assert presented.fingerprint(hashes.SHA256()) == store.get("site").leaf.fingerprint(hashes.SHA256())
        await ws.send("over tls")
        assert await ws.recv() == "over tls"


async def test_default_route_takes_what_no_custom_route_does(
    lbd: LbdFactory, http_backends: Backends
) -> None:
    backend = await http_backends("app")
    routes = [route("echo", "/echo", two_way=True), route("$default", "/echo", two_way=True)]
    _, port = await start_chat(lbd, backend, routes)
    async with connect(f"ws://127.0.0.1:{port}/") as ws:
        for message in ("not json", json.dumps({"action": "other"}), json.dumps([1, 2]), b"\x01\x02"):
            await ws.send(message)
            assert await ws.recv() == message  # binary comes back binary, text as text
        keys = [r.header("x-amzn-route-key") for r in events(backend, "MESSAGE")]
        assert keys == ["$default"] * 4
        assert events(backend, "MESSAGE")[-1].header("content-type") == "application/octet-stream"
        await ws.send(json.dumps({"action": "echo"}))
        await ws.recv()
        assert events(backend, "MESSAGE")[-1].header("x-amzn-route-key") == "echo"


async def test_integration_failures_and_a_mock_route(lbd: LbdFactory, http_backends: Backends) -> None:
    """An integration that times out: the upgrade is refused with 504 at $connect, and a message gets
    API Gateway's "Internal server error" frame (ExecutionError); a MOCK route answers by itself and its
    headers choose the subprotocol at $connect."""
    backend = await http_backends("app")
    hang = {"type": "HTTP_PROXY", "target_group": "app", "path": "/hang", "timeout_ms": 200}
    mock_connect = {"type": "MOCK", "headers": {"Sec-WebSocket-Protocol": "chat.v2"}}
    routes = [
        {"route_key": "$connect", "integration": mock_connect},
        {"route_key": "slow", "integration": hang, "route_response_selection_expression": "$default"},
        {
            "route_key": "$default",
            "integration": {"type": "MOCK", "body": '{"from": "mock"}'},
            "route_response_selection_expression": "$default",
        },
    ]
    proc, port = await start_chat(lbd, backend, routes)
    async with connect(
        f"ws://127.0.0.1:{port}/", subprotocols=[Subprotocol("chat.v1"), Subprotocol("chat.v2")]
    ) as ws:
        assert ws.subprotocol == "chat.v2"
        await ws.send(json.dumps({"action": "slow"}))
        frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert frame["message"] == "Internal server error" and frame["connectionId"]
        await ws.send("anything")
        assert json.loads(await ws.recv()) == {"from": "mock"}
    assert await metric(proc, "lbd_api_websocket_execution_errors_total", route="slow") == 1

    config = {
        "target_groups": [group("app", backend)],
        "apis": [
            ws_api(
                port, [{**routes[1], "route_key": "$connect", "route_response_selection_expression": None}]
            )
        ],
    }
    proc.write_config(config)
    assert (await proc.admin("POST", "/v1/reload"))[0] == 200
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"ws://127.0.0.1:{port}/"):
            pass
    assert info.value.response.status_code == 504  # INTEGRATION_TIMEOUT


# -- $connect: integrations and authorizers refuse the upgrade ----------------------------------------------


async def test_connect_refused_by_its_integration_and_bad_upgrades(
    lbd: LbdFactory, http_backends: Backends
) -> None:
    backend = await http_backends("app")
    routes = [
        route("$connect", "/status/403"),
        route("$disconnect", "/disconnect"),
        route("$default", "/echo"),
    ]
    proc, port = await start_chat(lbd, backend, routes)
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"ws://127.0.0.1:{port}/"):
            pass
    assert info.value.response.status_code == 403
    assert len(events(backend, "CONNECT")) == 1
    assert events(backend, "DISCONNECT") == []  # never connected: no $disconnect

    # Not an upgrade at all: 426 naming the protocol; version 8: 426 with the version lbd speaks;
    # no Sec-WebSocket-Key: 400 (RFC 6455 4.2.1, 4.2.2).
    status, headers, _ = await http_request(port, "GET", "/")
    assert status == 426 and headers.get("upgrade") == "websocket"
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    status, headers, _ = await http_request(
        port, "GET", "/", headers={**upgrade, "Sec-WebSocket-Version": "8"}
    )
    assert status == 426 and headers.get("sec-websocket-version") == "13"
    del upgrade["Sec-WebSocket-Key"]
    status, _, _ = await http_request(port, "GET", "/", headers={**upgrade, "Sec-WebSocket-Version": "13"})
    assert status == 400
    assert await metric(proc, "lbd_api_websocket_integration_errors_total", route="$connect") == 1


async def test_connect_authorizer_allows_denies_and_passes_its_context(
    lbd: LbdFactory, http_backends: Backends
) -> None:
    backend = await http_backends("app")
    endpoint = await AuthorizerEndpoint(
        lambda event: (200, policy("Allow" if event["headers"].get("authorization") == "ok" else "Deny"))
    ).start()
    try:
        port = free_port()
        authz = group("authz")
        authz["targets"] = [{"id": "127.0.0.1", "port": endpoint.port}]
        api = ws_api(
            port,
            [route("$connect", "/connect", authorizer="legacy"), route("$default", "/echo", two_way=True)],
            authorizers=[
                {
                    "name": "legacy",
                    "type": "REQUEST",
                    "endpoint": {"target_group": "authz", "path": "/authorize"},
                    "identity_sources": ["$request.header.Authorization"],
                    "ttl_seconds": 0,
                }
            ],
        )
        proc = lbd({"target_groups": [group("app", backend), authz], "apis": [api]})
        await proc.wait_ready()
        url = f"ws://127.0.0.1:{port}/"
        for headers, status in (({}, 401), ({"Authorization": "bad"}, 403)):
            with pytest.raises(InvalidStatus) as info:
                async with connect(url, additional_headers=headers):
                    pass
            assert info.value.response.status_code == status
        assert events(backend, "CONNECT") == []  # refused before the integration
        async with connect(url, additional_headers={"Authorization": "ok"}) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
        for seen in (events(backend, "CONNECT")[0], events(backend, "MESSAGE")[0]):
            # The authorizer's context on every event of the connection, not only on $connect.
            assert seen.header("x-amzn-authorizer-principal-id") == "user-7"
            assert seen.header("x-amzn-authorizer-tier") == "gold"
        assert await metric(proc, "lbd_api_websocket_client_errors_total", route="$connect") == 2
    finally:
        await endpoint.close()


async def test_connect_jwt_authorizer_with_a_token_in_the_query_string(
    lbd: LbdFactory, http_backends: Backends, tmp_path: Path
) -> None:
    """Browsers cannot set headers on a WebSocket: the token comes as ?token=, the identity source
    $request.querystring.token; its claims reach the integrations."""
    backend = await http_backends("app")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk("k1", rsa_key("k1"))]}))
    port = free_port()
    api = ws_api(
        port,
        [route("$connect", "/connect", authorizer="users"), route("$default", "/echo", two_way=True)],
        authorizers=[
            {
                "name": "users",
                "type": "JWT",
                "issuer": ISSUER,
                "audience": [AUDIENCE],
                "jwks_file": str(jwks),
                "identity_source": "$request.querystring.token",
            }
        ],
    )
    proc = lbd({"target_groups": [group("app", backend)], "apis": [api]})
    await proc.wait_ready()
    good = token(rsa_key("k1"), "k1", time.time(), sub="ann")
    forged = token(rsa_key("other"), "k1", time.time())
    for query, status in (("", 401), (f"?token={forged}", 401)):
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"ws://127.0.0.1:{port}/{query}"):
                pass
        assert info.value.response.status_code == status
    async with connect(f"ws://127.0.0.1:{port}/?token={good}") as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    assert events(backend, "MESSAGE")[0].header("x-amzn-authorizer-claim-sub") == "ann"


# -- the @connections API -----------------------------------------------------------------------------------


async def test_connections_api_posts_describes_and_disconnects(
    lbd: LbdFactory, http_backends: Backends
) -> None:
    backend = await http_backends("app")
    proc, port = await start_chat(lbd, backend)
    async with connect(f"ws://127.0.0.1:{port}/", user_agent_header="pusher/2") as ws:
        conn_id = await connection_id(backend)
        base = f"/v1/apis/chat/connections/{conn_id}"
        status, _ = await proc.admin("POST", base, b'{"news": 1}')
        assert status == 200
        assert await asyncio.wait_for(ws.recv(), 20) == '{"news": 1}'
        status, _ = await proc.admin("POST", base, b"\xff\x00")
        assert status == 200
        assert await asyncio.wait_for(ws.recv(), 20) == b"\xff\x00"  # not UTF-8: a binary frame
        status, described = await proc.admin("GET", base)
        assert status == 200
        assert described["connectionId"] == conn_id
        assert described["identity"] == {"sourceIp": "127.0.0.1", "userAgent": "pusher/2"}
        assert described["connectedAt"].endswith("Z") and described["lastActiveAt"]
        status, _ = await proc.admin("POST", base, b"x" * (128 * 1024 + 1))
        assert status == 413
        status, _ = await proc.admin("DELETE", base)
        assert status == 204
        assert await closed_with(ws) == (1000, "disconnected through the @connections API")
    gone = await wait_for(lambda: events(backend, "DISCONNECT"), what="$disconnect")
    assert gone[0].header("x-amzn-disconnect-status-code") == "1000"
    for method in ("POST", "GET", "DELETE"):
        status, body = await proc.admin(method, base, b"late" if method == "POST" else b"")
        assert status == 410, (method, body)
    assert (await proc.admin("GET", "/v1/apis/nosuch/connections/x"))[0] == 404
    assert await metric(proc, "lbd_api_websocket_messages_total", route="@connections", direction="out") == 2


async def test_a_client_that_does_not_read_gets_no_more_pushes(
    lbd: LbdFactory, http_backends: Backends
) -> None:
    """Pushes wait in lbd's buffer for a client that does not read; past 1 MiB they are refused with 429
    instead of piling up, and the client can still be disconnected."""
    backend = await http_backends("app")
    proc, port = await start_chat(lbd, backend)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fill the kernel's buffers sooner
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    _, writer, _ = await raw_client(port, sock)
    try:
        conn_id = await connection_id(backend)
        base = f"/v1/apis/chat/connections/{conn_id}"
        statuses: list[int] = []

        async def refused() -> bool:
            statuses.append((await proc.admin("POST", base, b"p" * 100_000))[0])
            return statuses[-1] != 200

        await wait_for(refused, what="a push refused")
        assert statuses[-1] == 429 and set(statuses[:-1]) == {200}
        assert (await proc.admin("DELETE", base))[0] == 204
    finally:
        writer.close()
    await wait_for(lambda: events(backend, "DISCONNECT"), what="$disconnect")


async def test_connections_across_workers(lbd: LbdFactory, http_backends: Backends) -> None:
    """Two workers: the admin API reaches the connection whichever worker holds it."""
    backend = await http_backends("app")
    port = free_port()
    proc = lbd({"target_groups": [group("app", backend)], "apis": [ws_api(port, CHAT_ROUTES)]}, workers=2)
    await proc.wait_ready()
    clients = [await connect(f"ws://127.0.0.1:{port}/") for _ in range(4)]
    try:
        await wait_for(lambda: len(events(backend, "CONNECT")) == 4, what="4 connects")
        ids = [str(r.header("x-amzn-connection-id")) for r in events(backend, "CONNECT")]
        for conn_id in ids:
            status, _ = await proc.admin("POST", f"/v1/apis/chat/connections/{conn_id}", conn_id.encode())
            assert status == 200
        received = sorted([await asyncio.wait_for(c.recv(), 20) for c in clients])
        assert received == sorted(ids)
    finally:
        for client in clients:
            await client.close()


async def test_a_reload_keeps_open_connections_and_new_ones_get_the_new_routes(
    lbd: LbdFactory, http_backends: Backends
) -> None:
    backend = await http_backends("app")
    port = free_port()
    config = {"target_groups": [group("app", backend)], "apis": [ws_api(port, CHAT_ROUTES)]}
    proc = lbd(config)
    await proc.wait_ready()
    async with connect(f"ws://127.0.0.1:{port}/") as old:
        conn_id = await connection_id(backend)
        config["apis"][0]["routes"] = [*CHAT_ROUTES, route("$default", "/echo", two_way=True)]
        proc.write_config(config)
        status, body = await proc.admin("POST", "/v1/reload")
        assert status == 200, body
        async with connect(f"ws://127.0.0.1:{port}/") as new:
            await new.send("no action")
            assert await new.recv() == "no action"  # the new $default route
        # The open connection lives on, on the routes it connected with, and can still be pushed to.
        await old.send(json.dumps({"action": "echo", "n": 1}))
        assert json.loads(await old.recv()) == {"action": "echo", "n": 1}
        await old.send("no action")
        assert json.loads(await old.recv())["message"] == "Forbidden"
        assert (await proc.admin("POST", f"/v1/apis/chat/connections/{conn_id}", b"still here"))[0] == 200
        assert await old.recv() == "still here"


# -- protocol rules and limits ------------------------------------------------------------------------------


async def test_frame_and_message_limits_close_with_1009(lbd: LbdFactory, http_backends: Backends) -> None:
    backend = await http_backends("app")
    _, port = await start_chat(lbd, backend)
    url = f"ws://127.0.0.1:{port}/"
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"action": "echo", "pad": "x" * 32_000}))  # under 32 KB: fine
        assert len(await ws.recv()) > 32_000
        await ws.send(b"x" * (32 * 1024 + 1))  # one frame over 32 KB
        code, reason = await closed_with(ws)
        assert (code, reason) == (1009, "frame larger than 32768 bytes")
    async with connect(url) as ws:
        # 5 fragments of 30 KB: every frame is allowed, the message (150 KB) is not.
        await ws.send(b"y" * 30_000 for _ in range(5))
        assert await closed_with(ws) == (1009, "message larger than 131072 bytes")
    async with connect(url) as ws:
        await ws.send(b"z" * 30_000 for _ in range(4))  # 120 KB in 4 frames: within both limits
        assert json.loads(await ws.recv())["message"] == "Forbidden"  # taken whole (no $default route)
        await ws.send(json.dumps({"action": "echo"}))
        assert json.loads(await ws.recv()) == {"action": "echo"}
    codes = await wait_for(
        lambda: (
            [r.header("x-amzn-disconnect-status-code") for r in events(backend, "DISCONNECT")]
            if len(events(backend, "DISCONNECT")) == 3
            else None
        ),
        what="3 disconnects",
    )
    assert sorted(codes) == ["1000", "1009", "1009"]


async def raw_client(
    port: int, sock: socket.socket | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, WSConnection]:
    if sock is None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    else:
        reader, writer = await asyncio.open_connection(sock=sock)
    ws = WSConnection(ConnectionType.CLIENT)
    writer.write(ws.send(Request(host=f"127.0.0.1:{port}", target="/")))
    while True:
        ws.receive_data(await asyncio.wait_for(reader.read(65536), 20))
        if any(isinstance(e, AcceptConnection) for e in ws.events()):
            return reader, writer, ws


async def read_close(reader: asyncio.StreamReader, ws: WSConnection) -> CloseConnection:
    while True:
        data = await asyncio.wait_for(reader.read(65536), 20)
        assert data, "the connection ended without a close frame"
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, CloseConnection):
                return event


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x81\x02hi", 1002),  # RFC 6455 5.1: a client frame without the mask bit
        (b"\x80\x82\x00\x00\x00\x00hi", 1002),  # 5.4: a continuation frame with nothing to continue
        (b"\x09\x80\x00\x00\x00\x00", 1002),  # 5.5: a fragmented control frame (ping without FIN)
        (b"\x83\x80\x00\x00\x00\x00", 1002),  # 5.2: a reserved opcode
        (b"\x81\x82\x00\x00\x00\x00\xc3\x28", 1007),  # 8.1: a text frame that is not UTF-8
    ],
)
async def test_frames_a_client_must_not_send(
    lbd: LbdFactory, http_backends: Backends, frame: bytes, code: int
) -> None:
    backend = await http_backends("app")
    _, port = await start_chat(lbd, backend)
    reader, writer, ws = await raw_client(port)
    try:
        writer.write(frame)
        assert (await read_close(reader, ws)).code == code
    finally:
        writer.close()
    gone = await wait_for(lambda: events(backend, "DISCONNECT"), what="$disconnect")
    assert gone[0].header("x-amzn-disconnect-status-code") == str(code)


async def test_ping_pong_idle_timeout_and_maximum_duration(lbd: LbdFactory, http_backends: Backends) -> None:
    backend = await http_backends("app")
    _, port = await start_chat(lbd, backend, idle_timeout_seconds=1)
    async with connect(f"ws://127.0.0.1:{port}/", ping_interval=None) as ws:
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 20)  # answered with the same payload (RFC 6455 5.5.3)
        assert await closed_with(ws) == (1001, "idle timeout")
    gone = await wait_for(lambda: events(backend, "DISCONNECT"), what="$disconnect")
    assert gone[0].header("x-amzn-disconnect-status-code") == "1001"


async def test_maximum_connection_duration(lbd: LbdFactory, http_backends: Backends) -> None:
    backend = await http_backends("app")
    _, port = await start_chat(lbd, backend, max_connection_seconds=1)
    async with connect(f"ws://127.0.0.1:{port}/", ping_interval=0.2) as ws:  # never idle
        assert await closed_with(ws) == (1001, "maximum connection duration reached")


# -- API keys and throttles per message ---------------------------------------------------------------------


async def test_api_key_at_connect_and_plan_throttle_per_message(
    lbd: LbdFactory, http_backends: Backends
) -> None:
    backend = await http_backends("app")
    routes = [
        route("$connect", "/connect", api_key_required=True),
        route("echo", "/echo", two_way=True, api_key_required=True),
    ]
    port = free_port()
    config = {
        "target_groups": [group("app", backend)],
        "apis": [ws_api(port, routes)],
        "usage_plans": [
            {"name": "basic", "apis": [{"api": "chat"}], "throttle": {"rate_limit": 0.001, "burst_limit": 3}}
        ],
    }
    proc = lbd(config)
    await proc.wait_ready()
    url = f"ws://127.0.0.1:{port}/"
    with pytest.raises(InvalidStatus) as info:
        async with connect(url):
            pass
    assert info.value.response.status_code == 403  # no key: INVALID_API_KEY
    key = await create_key(proc)
    async with connect(url, additional_headers={"x-api-key": key["value"]}) as ws:  # the 1st token
        assert events(backend, "CONNECT")[0].header("x-amzn-api-key-id") == key["id"]
        answers = []
        for n in range(3):
            await ws.send(json.dumps({"action": "echo", "n": n}))
            answers.append(json.loads(await ws.recv()))
        assert answers[:2] == [{"action": "echo", "n": 0}, {"action": "echo", "n": 1}]
        assert answers[2]["message"] == "Too Many Requests"  # the burst of 3 is spent
        assert len(events(backend, "MESSAGE")) == 2
    assert await metric(proc, "lbd_api_throttled_total", route="echo") == 1


# -- a fleet: pushes through Redis ------------------------------------------------------------------------


async def test_push_from_another_node_through_redis(
    lbd: LbdFactory, http_backends: Backends, tmp_path: Path
) -> None:
    """Two lbd processes share one real redis-server: the @connections API of node B reaches a client
    connected to node A (B finds A in the registry and A delivers), and the registry forgets closed
    connections."""
    redis = RedisServer(tmp_path).start()
    try:
        backend = await http_backends("app")
        ports = [free_port(), free_port()]
        nodes = []
        for port in ports:
            config = {
                "shared_state": {"redis": redis.url},
                "target_groups": [group("app", backend)],
                "apis": [ws_api(port, CHAT_ROUTES)],
            }
            nodes.append(lbd(config))
        for node in nodes:
            await node.wait_ready()
        a, b = nodes
        async with connect(f"ws://127.0.0.1:{ports[0]}/", user_agent_header="on-a") as ws:
            conn_id = await connection_id(backend)
            base = f"/v1/apis/chat/connections/{conn_id}"
            status, _ = await b.admin("POST", base, b"from node b")
            assert status == 200
            assert await asyncio.wait_for(ws.recv(), 20) == "from node b"
            status, described = await b.admin("GET", base)
            assert (status, described["identity"]["userAgent"]) == (200, "on-a")
            status, _ = await b.admin("DELETE", base)
            assert status == 204
            assert (await closed_with(ws))[0] == 1000
        await wait_for(lambda: events(backend, "DISCONNECT"), what="$disconnect")
        # Gone from the registry: both nodes answer 410.
        for node in (a, b):
            assert (await wait_for(lambda n=node: _gone(n, base), what="410 after the close")) is True

        # Redis gone: a node cannot tell whether another holds a connection (503, not 410), but its
        # own connections still work and take pushes from its own admin API.
        redis.kill()
        status, body = await b.admin("POST", "/v1/apis/chat/connections/elsewhere", b"x")
        assert status == 503, body
        async with connect(f"ws://127.0.0.1:{ports[0]}/") as ws:
            conn_id = await connection_id(backend, before=1)
            assert (await a.admin("POST", f"/v1/apis/chat/connections/{conn_id}", b"local"))[0] == 200
            assert await asyncio.wait_for(ws.recv(), 20) == "local"
    finally:
        redis.kill()


async def _gone(node: Lbd, path: str) -> bool:
    status, _ = await node.admin("POST", path, b"late")
    return status == 410
