"""Hardening of the HTTP proxy through a real ``lbd run``: response-head limits, truncated responses in the
access log, Connection: close while draining, the exact header deadline, descriptor exhaustion and
max_connections, rate-limited warnings."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import shlex
import signal
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from lbd.observe.access_log import ALB_FIELDS
from tests.conftest import Alb, LbdFactory, TcpBackend
from tests.http_client import Client
from tests.lbdproc import Lbd, application_config, free_port, http_request, refused_port, wait_for

Backends = Callable[..., Awaitable[TcpBackend]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def log_lines(path: Path) -> list[dict[str, str]]:
    text = path.read_text() if path.exists() else ""
    return [dict(zip(ALB_FIELDS, shlex.split(line), strict=True)) for line in text.splitlines()]


async def start_lbd(lbd: LbdFactory, target_port: int, tmp_path: Path, **extra: Any) -> tuple[Lbd, int, Path]:
    port = free_port()
    log_path = tmp_path / "access.log"
    config = application_config(port, [target_port], access_log={"path": str(log_path)}, **extra)
    proc = lbd(config)
    await proc.wait_ready()
    return proc, port, log_path


async def test_response_head_over_32k_is_a_502(lbd: LbdFactory, backends: Backends, tmp_path: Path) -> None:
    """ALB: response headers over 32K are a 502 (R6, R10). Both a head that arrives whole and one that
    trickles in (8 MB of header, which lbd must not buffer) are refused."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: TcpBackend) -> None:
        request = await read_request(reader)
        if b"/whole" in request:
            writer.write(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 40000 + b"\r\nContent-Length: 2\r\n\r\nok")
        elif b"/small" in request:
            writer.write(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 30000 + b"\r\nContent-Length: 2\r\n\r\nok")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nX-Huge: ")
            for _piece in range(8 * 64):
                writer.write(b"a" * 16384)
                await writer.drain()  # fails once lbd gives up on the connection
        await writer.drain()
        await reader.read()

    backend = await backends(handler)
    _, port, log_path = await start_lbd(lbd, backend.port, tmp_path)
    for path, status in (("/whole", 502), ("/trickle", 502), ("/small", 200)):
        client = await Client.connect(port)
        response = await client.request("GET", path)
        assert response.status == status, path
        client.close()
    entries = await wait_for(
        lambda: len(log_lines(log_path)) >= 3 and log_lines(log_path), what="3 log lines"
    )
    assert [e["elb_status_code"] for e in entries] == ["502", "502", "200"]


async def test_truncated_responses_get_an_access_log_line(
    lbd: LbdFactory, backends: Backends, tmp_path: Path
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: TcpBackend) -> None:
        request = await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        if b"/reset" in request:
            writer.write(b"x" * 1000)
            await writer.drain()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # RST mid-body
            return
        await writer.drain()  # /close: FIN after the head

    backend = await backends(handler)
    _, port, log_path = await start_lbd(lbd, backend.port, tmp_path)
    for path in ("/reset", "/close"):
        client = await Client.connect(port)
        client.send(b"GET %b HTTP/1.1\r\nHost: example.com\r\n\r\n" % path.encode())
        try:
            answer = await client.read_all()
        except ConnectionError:
            answer = b""
        assert len(answer) < 100000, path  # never a complete-looking response
        client.close()
    entries = await wait_for(
        lambda: len(log_lines(log_path)) >= 2 and log_lines(log_path), what="2 log lines"
    )
    assert [e["request"].split()[1].rsplit("/", 1)[1] for e in entries] == ["reset", "close"]
    assert all(e["target_status_code"] == "200" for e in entries)
    assert all(e["error_reason"] == "TargetClosedConnection" for e in entries)


async def test_responses_after_sigterm_say_connection_close(alb: Alb) -> None:
    proc, port, backend = await alb()
    client = await Client.connect(port)
    assert (await client.request("GET", "/first")).keep_alive
    client.send(b"GET /sleep/1500 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    await wait_for(lambda: any(r.target == "/sleep/1500" for r in backend.requests), what="request at target")
    proc.signal(signal.SIGTERM)
    response = await client.response()
    assert response.status == 200
    assert not response.keep_alive and response.header("connection") == "close"
    assert await client.read_all() == b""
    assert await proc.wait_exit() == 0


async def test_header_deadline_is_the_idle_timeout_not_later(alb: Alb) -> None:
    """The 408 for an incomplete head comes idle_timeout after its first byte (R10), not at the next
    half-timeout check after that."""
    # 4 s, not 2: a half-timeout check would answer at about 6 s, which leaves a loaded machine 1.5 s of
    # slack before the bound below, and the 408 can never come early.
    _, port, _ = await alb(idle_timeout_seconds=4)
    client = await Client.connect(port)
    started = time.monotonic()
    client.send(b"GET / HTTP/1.1\r\nHost: exa")
    answer = await client.read_all()
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert 3.95 <= elapsed < 5.5, elapsed


async def stats(proc: Lbd) -> dict[str, Any]:
    status, body = await proc.admin("GET", "/v1/stats")
    assert status == 200
    listener: dict[str, Any] = body["listeners"][0]
    return listener


async def test_max_connections(lbd: LbdFactory, http_backends: Callable[[str], Awaitable[Any]]) -> None:
    backend = await http_backends("b")
    port = free_port()
    config = application_config(port, [backend.port])
    config["load_balancers"][0]["listeners"][0]["max_connections"] = 2
    proc = lbd(config)
    await proc.wait_ready()
    held = [await Client.connect(port) for _ in range(2)]
    for client in held:
        assert (await client.request("GET", "/")).status == 200  # connected and counted
    extra = await Client.connect(port)
    extra.send(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    with contextlib.suppress(ConnectionError):  # closed at once (FIN or RST), never answered
        assert await extra.read_all() == b""
    assert (await stats(proc))["rejected_connections"] == 1
    held[0].close()
    await wait_for(lambda: _active(proc, 1), what="one connection left")
    again = await Client.connect(port)
    assert (await again.request("GET", "/")).status == 200
    assert (await stats(proc))["rejected_connections"] == 1
    _, _, metrics = await http_request(proc.admin_port, "GET", "/metrics")
    assert b'lbd_rejected_connections_total{listener="HTTP:%d",load_balancer="alb"} 1.0' % port in metrics


async def _active(proc: Lbd, count: int) -> bool:
    return bool((await stats(proc))["active_connections"] == count)


async def test_out_of_descriptors_is_counted_and_serving_goes_on(
    tmp_path: Path, http_backends: Callable[[str], Awaitable[Any]]
) -> None:
    """accept() failing with EMFILE: the connection is closed at once, counted and logged (rate-limited),
    and lbd serves again once descriptors are free."""
    backend = await http_backends("b")
    port = free_port()
    proc = Lbd(tmp_path, application_config(port, [backend.port]))
    limit = 64

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    proc.start(preexec=low_limit)
    try:
        await proc.wait_ready()
        held: list[socket.socket] = []
        for _ in range(limit + 20):  # more than the worker has descriptors for
            held.append(socket.create_connection(("127.0.0.1", port)))
        await wait_for(lambda: _rejected(proc), what="rejected connections counted")
        assert "out of file descriptors" in proc.log
        assert proc.log.count("out of file descriptors") < 5  # rate-limited, not one line per connection
        for sock in held:
            sock.close()
        client = await wait_for(lambda: _served(port), what="served again")
        assert client == 200
    finally:
        proc.stop()


async def _rejected(proc: Lbd) -> bool:
    return bool((await stats(proc))["rejected_connections"] > 0)


async def _served(port: int) -> int | None:
    try:
        status, _, _ = await asyncio.wait_for(http_request(port, "GET", "/"), 5)
    except (OSError, TimeoutError, IndexError, ValueError):
        return None
    return status


async def test_target_connect_warnings_are_rate_limited(alb: Alb, lbd: LbdFactory) -> None:
    dead = refused_port()  # nothing listens: every connect is refused
    port = free_port()
    proc = lbd(application_config(port, [dead]))
    await proc.wait_ready()
    for _ in range(6):
        client = await Client.connect(port)
        assert (await client.request("GET", "/")).status == 502
        client.close()
    assert (await stats(proc))["target_connection_errors"] == 6
    assert proc.log.count("connect to target") == 1
