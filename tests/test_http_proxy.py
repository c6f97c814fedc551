"""Application load balancer, HTTP/1.1 proxying: functional tests through a real ``lbd run``."""

from __future__ import annotations

import asyncio
import hashlib

from tests.conftest import Alb, LbdFactory
from tests.http_backend import pattern
from tests.http_client import Client
from tests.lbdproc import application_config, free_port, http_request, wait_for

MiB = 1024 * 1024


async def test_get_is_forwarded_with_forwarded_headers(alb: Alb) -> None:
    _, port, backend = await alb()
    client = await Client.connect(port)
    response = await client.request("GET", "/hello?x=1", headers={"User-Agent": "t", "Host": "Example.COM"})
    assert response.status == 200
    assert response.body == b"hello from b1\n"
    seen = backend.requests[0]
    assert (seen.method, seen.target) == ("GET", "/hello?x=1")
    # ALB without preserve_host_header: Host lowercased, the non-default listener port added.
    assert seen.header("host") == f"example.com:{port}"
    assert seen.header("x-forwarded-for") == "127.0.0.1"
    assert seen.header("x-forwarded-proto") == "http"
    assert seen.header("x-forwarded-port") == str(port)
    assert (seen.header("x-amzn-trace-id") or "").startswith("Root=1-")
    client.close()


async def test_preserve_host_header_keeps_host_as_sent(alb: Alb) -> None:
    _, port, backend = await alb(preserve_host_header=True)
    client = await Client.connect(port)
    response = await client.request("GET", "/", headers={"Host": "Example.COM"})
    assert response.status == 200
    assert backend.requests[0].header("host") == "Example.COM"
    client.close()


async def test_keep_alive_reuses_target_connections(alb: Alb) -> None:
    _, port, backend = await alb()
    clients = [await Client.connect(port) for _ in range(4)]
    for _ in range(25):
        for client in clients:
            response = await client.request("GET", "/")
            assert response.status == 200 and response.keep_alive
    assert len(backend.requests) == 100
    assert backend.connections <= 4  # 100 requests over at most one target connection per client
    for client in clients:
        client.close()


async def test_pipelined_requests_are_answered_in_order(alb: Alb) -> None:
    _, port, _ = await alb()
    client = await Client.connect(port)
    paths = ["/status/201", "/bytes/70000", "/status/404", "/chunked/5000", "/"]
    client.send(b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in paths))
    responses = [await client.response() for _ in paths]
    assert [r.status for r in responses] == [201, 200, 404, 200, 200]
    assert responses[1].body == pattern(70000)
    assert responses[3].body == pattern(5000)
    client.close()


async def test_50_mib_chunked_upload_and_download_byte_exact(alb: Alb) -> None:
    _, port, backend = await alb()
    client = await Client.connect(port)
    client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    sent = hashlib.sha256()
    block = pattern(MiB)

    async def upload() -> None:
        for i in range(50):
            chunk = i.to_bytes(4, "big") + block[4:]
            sent.update(chunk)
            client.send(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            await client.writer.drain()
        client.send(b"0\r\n\r\n")

    _, response = await asyncio.gather(upload(), client.response(timeout=120))
    assert response.status == 200
    assert response.header("transfer-encoding") == "chunked"
    assert len(response.body) == 50 * MiB
    assert hashlib.sha256(response.body).hexdigest() == sent.hexdigest()
    assert backend.requests[0].header("transfer-encoding") == "chunked"
    client.close()


async def test_50_mib_content_length_download_byte_exact(alb: Alb) -> None:
    _, port, _ = await alb()
    client = await Client.connect(port)
    response = await client.request("GET", f"/bytes/{50 * MiB}")
    assert response.header("content-length") == str(50 * MiB)
    assert response.body == pattern(50 * MiB)
    client.close()


async def test_expect_100_continue_is_answered_by_lbd_and_stripped(alb: Alb) -> None:
    _, port, backend = await alb()
    client = await Client.connect(port)
    client.send(b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    interim = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 30)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    client.send(b"hello")
    response = await client.response()
    assert (response.status, response.body) == (200, b"hello")
    assert backend.requests[0].header("expect") is None
    client.close()


async def test_head_204_304_framing_keeps_the_connection_usable(alb: Alb) -> None:
    _, port, _ = await alb()
    client = await Client.connect(port)
    head = await client.request("HEAD", "/bytes/1000")
    assert (head.status, head.header("content-length"), head.body) == (200, "1000", b"")
    for status in (204, 304):
        response = await client.request("GET", f"/status/{status}")
        assert (response.status, response.body) == (status, b"")
    after = await client.request("GET", "/bytes/10")
    assert after.body == pattern(10)
    client.close()


async def test_http_1_0_client_is_served_and_closed(alb: Alb) -> None:
    _, port, backend = await alb()
    client = await Client.connect(port)
    client.send(b"GET /chunked/3000 HTTP/1.0\r\nHost: x\r\n\r\n")
    raw = await client.read_all()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()  # HTTP/1.0 has no chunked: the close ends the body
    assert body == pattern(3000)
    assert backend.requests[0].method == "GET"


async def test_websocket_upgrade_becomes_a_tunnel(alb: Alb) -> None:
    _, port, backend = await alb()
    client = await Client.connect(port)
    client.send(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    response = await client.response()
    assert response.status == 101
    assert (response.header("upgrade") or "").lower() == "websocket"
    assert backend.requests[0].header("upgrade") == "websocket"
    for message in (b"\x81\x05hello", b"GET / HTTP/1.1\r\n\r\n", b"x" * 100000):
        client.send(message)
        assert await client.read_exactly(len(message)) == message  # raw bytes, no HTTP parsing
    client.close()


async def test_target_errors_give_alb_status_codes(alb: Alb) -> None:
    _, port, _ = await alb(idle_timeout_seconds=1)
    client = await Client.connect(port)
    assert (await client.request("GET", "/close")).status == 502
    client = await Client.connect(port)
    assert (await client.request("GET", "/garbage")).status == 502
    client = await Client.connect(port)
    response = await client.request("GET", "/hang")
    assert response.status == 504
    client.close()


async def test_no_targets_gives_503_and_refused_target_502(lbd: LbdFactory) -> None:
    port = free_port()
    proc = lbd(application_config(port, []))
    await proc.wait_ready()
    client = await Client.connect(port)
    response = await client.request("GET", "/")
    assert response.status == 503
    assert b"503" in response.body
    client.close()

    port2 = free_port()
    proc2 = lbd(application_config(port2, [free_port()]))
    await proc2.wait_ready()
    client = await Client.connect(port2)
    assert (await client.request("GET", "/")).status == 502
    client.close()


async def test_after_a_refused_target_502_the_connection_reads_again(lbd: LbdFactory) -> None:
    # Every connect failed, so lbd answered 502 itself: the client's next request on the same keep-alive
    # connection is answered too, and its close is seen (the connection was once left paused: the second
    # request hung and the socket stayed in CLOSE_WAIT, counted as active).
    port = free_port()
    proc = lbd(application_config(port, [free_port()]))
    await proc.wait_ready()
    client = await Client.connect(port)
    assert (await client.request("GET", "/")).status == 502
    assert (await client.request("GET", "/again")).status == 502
    client.close()

    async def no_active_connections() -> bool:
        _, _, body = await http_request(proc.admin_port, "GET", "/metrics")
        lines = [line for line in body.decode().splitlines() if line.startswith("lbd_active_connections{")]
        assert lines, "no lbd_active_connections sample"
        return all(float(line.rsplit(" ", 1)[1]) == 0 for line in lines)

    await wait_for(no_active_connections, what="the active connections gauge back to 0")


async def test_malformed_request_gets_400_and_is_not_forwarded(alb: Alb) -> None:
    _, port, backend = await alb()
    client = await Client.connect(port)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
    raw = await client.read_all()
    assert raw.startswith(b"HTTP/1.1 400 ")
    assert backend.requests == []


async def test_size_limits(alb: Alb) -> None:
    _, port, backend = await alb()
    client = await Client.connect(port)
    client.send(b"GET /" + b"a" * (17 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await client.read_all()).startswith(b"HTTP/1.1 414 ")
    client = await Client.connect(port)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (17 * 1024) + b"\r\n\r\n")
    assert (await client.read_all()).startswith(b"HTTP/1.1 431 ")
    client = await Client.connect(port)
    many = b"".join(b"X-H%d: %b\r\n" % (i, b"v" * 8000) for i in range(9))
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert (await client.read_all()).startswith(b"HTTP/1.1 431 ")
    assert backend.requests == []


async def test_partial_request_gets_408_after_the_idle_timeout(alb: Alb) -> None:
    _, port, backend = await alb(idle_timeout_seconds=1)
    client = await Client.connect(port)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never finish the headers
    assert (await client.read_all()).startswith(b"HTTP/1.1 408 ")
    assert backend.requests == []


async def test_idle_keep_alive_connection_is_closed_quietly(alb: Alb) -> None:
    _, port, _ = await alb(idle_timeout_seconds=1)
    client = await Client.connect(port)
    assert (await client.request("GET", "/")).status == 200
    assert await client.read_all() == b""  # closed without a response
