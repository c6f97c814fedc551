"""The admin listener's access rules: loopback needs no token; any other address needs admin.token_file,
refuses to start without it, and then wants ``Authorization: Bearer <token>`` on all but the probes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from lbd.admin.server import (
    MAX_BODY,
    AdminRequest,
    AdminResponse,
    AdminServer,
    Limits,
    Router,
    start_admin_server,
)
from tests.conftest import LbdFactory
from tests.lbdproc import application_config, free_port, http_request, wait_for


def public_admin(proc_config: Path, port: int, token_file: Path | None) -> None:
    config = yaml.safe_load(proc_config.read_text())
    config["admin"] = {"listen": f"0.0.0.0:{port}"}
    if token_file is not None:
        config["admin"]["token_file"] = str(token_file)
    proc_config.write_text(yaml.safe_dump(config))


async def test_public_admin_without_a_token_refuses_to_start(lbd: LbdFactory) -> None:
    proc = lbd(application_config(free_port(), [free_port()]), start=False)
    public_admin(proc.config_path, proc.admin_port, None)
    proc.start()
    assert await proc.wait_exit() == 2
    assert "admin.token_file" in proc.log


async def test_public_admin_wants_the_bearer_token(lbd: LbdFactory, tmp_path: Path) -> None:
    token = tmp_path / "admin.token"
    token.write_text("s3cret-token\n")
    proc = lbd(application_config(free_port(), [free_port()]), start=False)
    public_admin(proc.config_path, proc.admin_port, token)
    proc.start()

    async def ready() -> bool:
        try:
            status, _, _ = await http_request(proc.admin_port, "GET", "/readyz")
        except OSError:
            return False
        return status == 200

    await wait_for(ready, what="ready")  # probes stay open for orchestrators
    status, _, _ = await http_request(proc.admin_port, "GET", "/v1/target-groups")
    assert status == 401
    status, _, _ = await http_request(
        proc.admin_port, "GET", "/v1/target-groups", headers={"Authorization": "Bearer wrong"}
    )
    assert status == 401
    status, _, body = await http_request(
        proc.admin_port, "GET", "/v1/target-groups", headers={"Authorization": "Bearer s3cret-token"}
    )
    assert status == 200 and b'"web"' in body
    status, _, body = await http_request(
        proc.admin_port, "GET", "/v1/target-groups", headers={"Authorization": "bearer s3cret-token"}
    )
    assert status == 200 and b'"web"' in body


async def test_admin_endpoints_answer_json_for_unknown_paths_and_methods(lbd: LbdFactory) -> None:
    proc = lbd(application_config(free_port(), [free_port()]))
    await proc.wait_ready()
    assert await proc.admin("GET", "/v1/target-groups/web/nothing") == (
        404,
        {"error": "no such endpoint: /v1/target-groups/web/nothing"},
    )
    status, body = await proc.admin("PUT", "/v1/target-groups/web/targets")
    assert status == 405 and body["error"].startswith("method PUT not allowed")
    status, body = await proc.admin("GET", "/v1/reload")
    assert status == 405 and "allowed: POST" in body["error"]


async def test_a_busy_admin_port_exits_3(lbd: LbdFactory) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        proc = lbd(application_config(free_port(), [free_port()]), start=False)
        proc.admin_port = squatter.getsockname()[1]
        proc.write_config(yaml.safe_load(proc.config_path.read_text()))
        proc.start()
        assert await proc.wait_exit() == 3
    assert "admin.listen: cannot listen on" in proc.log


# -- the HTTP layer, in this process on a real loopback socket ------------------------------------------

TOKEN = "s3cret-token"


async def echo(request: AdminRequest) -> AdminResponse:
    """Says what arrived: the body's length and its JSON (parse errors become 400 in the server)."""
    return AdminResponse(200, {"length": len(request.body), "json": request.json(), **request.params})


async def hello(request: AdminRequest) -> AdminResponse:
    return AdminResponse(200, {"status": "ok"})


@pytest.fixture
async def admin() -> AsyncIterator[Callable[..., Awaitable[AdminServer]]]:
    started: list[AdminServer] = []

    async def start(token: str | None = None, limits: Limits | None = None) -> AdminServer:
        router = Router()
        router.add("GET", "/healthz", hello)
        router.add("GET", "/v1/things", hello)
        router.add("POST", "/v1/echo", echo)
        router.add("DELETE", "/v1/things/{thing}", echo)
        server = await start_admin_server("127.0.0.1:0", router, token, limits or Limits())
        started.append(server)
        return server

    yield start
    for server in started:
        await server.close()


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


async def read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes (a reset after its answer counts as the end)."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := await reader.read(65536):
            data += chunk
    return data


async def raw_exchange(server: AdminServer, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Sends ``raw`` and parses the one answer, read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(raw)
    answer = await asyncio.wait_for(read_all(reader), 30)  # the server closing is what ends this
    writer.close()
    return parse_response(answer)


def post_head(length: int | None, path: str = "/v1/echo") -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{framing}\r\n\r\n".encode()


async def test_a_body_arriving_in_several_reads_is_read_whole(admin: Any) -> None:
    server = await admin()
    body = json.dumps({"targets": [{"id": "10.0.0.1", "port": 80}] * 200}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(post_head(len(body)) + body[:100])
    # The head is parsed and the endpoint is reading the body before the rest of it is even sent.
    await wait_for(lambda: server.requests_started == 1, what="the request head parsed")
    for start in range(100, len(body), 1000):
        writer.write(body[start : start + 1000])
        await writer.drain()
    status, _, payload = parse_response(await asyncio.wait_for(read_all(reader), 30))
    writer.close()
    assert status == 200
    assert json.loads(payload) == {"length": len(body), "json": json.loads(body)}


async def test_the_body_limit_is_one_mib_counted_across_reads(admin: Any) -> None:
    server = await admin()
    whole = b'"' + b"x" * (MAX_BODY - 2) + b'"'  # exactly 1 MiB: accepted
    status, _, payload = await http_request(server.port, "POST", "/v1/echo", whole)
    assert status == 200 and json.loads(payload)["length"] == MAX_BODY == 1024 * 1024

    # Chunked, so no Content-Length announces it: the limit has to count what arrives, read by read.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(post_head(None))
    chunk = b"x" * (256 * 1024)
    for _ in range(5):  # 1.25 MiB
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    status, headers, payload = parse_response(await asyncio.wait_for(read_all(reader), 30))
    writer.close()
    assert (status, headers["content-type"]) == (413, "application/json")
    assert json.loads(payload) == {"error": f"the request body is larger than {MAX_BODY} bytes"}

    # An announced length over the limit is refused before the body is read.
    status, _, payload = await http_request(server.port, "POST", "/v1/echo", whole + b" ")
    assert status == 413


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "the body is not JSON lbd accepts: nested too deeply"),
        (b'{"targets": [', "the body is not JSON: Expecting value"),
        (b"\xff\xfe\xff", "the body is not JSON"),
        (b"", "the body is empty; send a JSON document"),
    ],
    ids=["deeply nested", "truncated", "not utf-8", "empty"],
)
async def test_bodies_that_are_not_json_are_400_with_the_reason(
    admin: Any, body: bytes, message: str
) -> None:
    server = await admin()
    status, _, payload = await http_request(server.port, "POST", "/v1/echo", body)
    assert status == 400
    assert json.loads(payload)["error"].startswith(message)


async def test_unknown_paths_are_404_and_wrong_methods_405_in_json(admin: Any) -> None:
    server = await admin()
    status, headers, payload = await http_request(server.port, "GET", "/v1/nope")
    assert (status, headers["content-type"]) == (404, "application/json")
    assert json.loads(payload) == {"error": "no such endpoint: /v1/nope"}
    status, headers, payload = await http_request(server.port, "POST", "/v1/things")
    assert (status, headers["content-type"]) == (405, "application/json")
    assert json.loads(payload)["error"].startswith("method POST not allowed on /v1/things")
    assert "GET" in headers["allow"]
    assert headers["server"] == "lbd"  # not aiohttp's, which names versions


async def test_path_parameters_are_percent_decoded(admin: Any) -> None:
    server = await admin()
    status, _, payload = await http_request(server.port, "DELETE", "/v1/things/%5B%3A%3A1%5D%3A8080", b"1")
    assert status == 200 and json.loads(payload)["thing"] == "[::1]:8080"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_the_bearer_scheme_is_case_insensitive(admin: Any, scheme: str) -> None:
    server = await admin(token=TOKEN)
    auth = {"Authorization": f"{scheme} {TOKEN}"}
    status, _, _ = await http_request(server.port, "GET", "/v1/things", headers=auth)
    assert status == 200


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", f"Bearer {TOKEN}x", f"Bearer {TOKEN.upper()}", f"Basic {TOKEN}", TOKEN],
)
async def test_anything_but_the_token_is_401(admin: Any, authorization: str | None) -> None:
    server = await admin(token=TOKEN)
    headers = {} if authorization is None else {"Authorization": authorization}
    status, answer, payload = await http_request(server.port, "GET", "/v1/things", headers=headers)
    assert status == 401 and answer["www-authenticate"].startswith("Bearer")
    assert json.loads(payload) == {"error": "missing or wrong bearer token"}
    # Unknown paths too: without the token, nothing says which paths exist.
    status, _, _ = await http_request(server.port, "GET", "/v1/nope", headers=headers)
    assert status == 401
    status, _, _ = await http_request(server.port, "GET", "/healthz", headers=headers)
    assert status == 200


async def test_slow_clients_are_closed_and_do_not_pin_the_port(admin: Any) -> None:
    limits = Limits(header_timeout=1.0, body_timeout=1.0)
    server = await admin(limits=limits)
    trickling = True

    async def trickle(writer: asyncio.StreamWriter, data: bytes) -> None:
        """Slowloris: a byte now and then, never finishing, until the server hangs up."""
        with contextlib.suppress(ConnectionError):
            for byte in data:
                if not trickling:
                    return
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.1)

    async def slow(first: bytes, rest: bytes) -> tuple[float, bytes]:
        started = time.monotonic()  # before connecting: the server's deadlines start later than this
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(first)
        task = asyncio.create_task(trickle(writer, rest))
        answer = await asyncio.wait_for(read_all(reader), 20)  # the server closing is what ends this
        elapsed = time.monotonic() - started
        task.cancel()
        writer.close()
        return elapsed, answer

    head = b"GET /v1/things HTTP/1.1\r\nHost: x\r\n"
    header_clients = [slow(head, b"X-Slow: " + b"a" * 1000) for _ in range(3)]
    body_clients = [slow(post_head(1000) + b"{", b"x" * 1000) for _ in range(3)]
    clients = asyncio.gather(*header_clients, *body_clients)
    # While they hang on, the admin API answers others.
    await wait_for(lambda: server.requests_started >= 3, what="slow bodies started")
    status, _, _ = await http_request(server.port, "GET", "/v1/things")
    assert status == 200
    results = await clients
    trickling = False
    for elapsed, answer in results[:3]:
        assert answer == b""  # no complete head: closed without an answer
        assert elapsed >= limits.header_timeout * 0.95
    for elapsed, answer in results[3:]:
        status, _, payload = parse_response(answer)
        assert status == 408
        assert json.loads(payload) == {"error": "the request body did not arrive within 1 s"}
        assert elapsed >= limits.body_timeout * 0.95


async def test_a_token_header_that_is_not_utf_8_is_401(admin: Any) -> None:
    server = await admin(token=TOKEN)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"GET /v1/things HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n"
    )
    status, _, _ = parse_response(await asyncio.wait_for(read_all(reader), 30))
    writer.close()
    assert status == 401


@pytest.mark.parametrize("second", [f"Bearer {TOKEN}", "Bearer wrong"])
async def test_two_authorization_fields_are_400_and_close(admin: Any, second: str) -> None:
    """A proxy in front may pass on the first and lbd read the last (or the other way round): neither
    order authenticates."""
    server = await admin(token=TOKEN)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        f"GET /v1/things HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Authorization: {second}\r\n\r\n".encode()
    )
    answer = await asyncio.wait_for(read_all(reader), 30)  # read to the end: lbd closes
    writer.close()
    status, headers, payload = parse_response(answer)
    assert status == 400 and headers["connection"] == "close"
    assert json.loads(payload) == {"error": "more than one Authorization field"}


# -- the HTTP layer (h11 under an asyncio Protocol): framing, keep-alive, refusals ------------------------


async def test_pipelined_requests_are_answered_in_order_on_one_connection(admin: Any) -> None:
    server = await admin()
    body = b'{"n": 1}'
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    # An unknown path with a body (answered without reading it: the body is skipped, the connection
    # kept), a POST, and a GET that closes: all in one write.
    writer.write(
        b"POST /v1/nope HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        + f"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
        + b"GET /v1/things HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    raw = await asyncio.wait_for(read_all(reader), 30)
    writer.close()
    answers = raw.split(b"HTTP/1.1 ")[1:]
    statuses = [int(answer[:3]) for answer in answers]
    assert statuses == [404, 200, 200]
    assert b'"json": {\n    "n": 1\n  }' in answers[1] and b'"status": "ok"' in answers[2]
    assert server.requests_started == 3


async def test_a_kept_alive_connection_serves_requests_one_after_another(admin: Any) -> None:
    server = await admin()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    for _ in range(3):
        writer.write(b"GET /v1/things HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        status, headers, _ = parse_response(head)
        payload = await reader.readexactly(int(headers["content-length"]))
        assert status == 200 and json.loads(payload) == {"status": "ok"}
        assert "connection" not in headers and headers["server"] == "lbd" and "date" in headers
    writer.close()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /v1/things HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
        # RFC 9112 section 6.1: a transfer coding the server does not understand is 501.
        (b"GET /v1/things HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    ],
    ids=["request line", "two lengths", "unknown coding", "bad chunk"],
)
async def test_malformed_requests_are_refused_in_json_and_closed(
    admin: Any, raw: bytes, expected: int
) -> None:
    status, headers, payload = await raw_exchange(await admin(), raw)
    assert (status, headers["connection"], headers["content-type"]) == (expected, "close", "application/json")
    assert json.loads(payload)["error"].startswith("malformed request: ")


async def test_head_is_not_answered_on_a_get_route(admin: Any) -> None:
    """As with aiohttp's add_route: a route answers its one method; the 405 to HEAD has no body."""
    head = b"HEAD /v1/things HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    status, headers, payload = await raw_exchange(await admin(), head)
    assert (status, headers["allow"], payload) == (405, "GET", b"")
    assert int(headers["content-length"]) > 0  # what a GET-like answer would carry (RFC 9110 9.3.2)


async def test_a_client_expecting_100_continue_gets_it_before_sending_the_body(admin: Any) -> None:
    server = await admin()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\n"
    )
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    assert interim.startswith(b"HTTP/1.1 100 ")
    writer.write(b"[]")
    status, _, payload = parse_response(await asyncio.wait_for(read_all(reader), 30))
    writer.close()
    assert status == 200 and json.loads(payload) == {"length": 2, "json": []}


async def test_a_refusal_to_a_client_expecting_100_continue_closes_instead_of_waiting(admin: Any) -> None:
    head = b"POST /v1/nope HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    status, headers, _ = await raw_exchange(await admin(), head)
    assert (status, headers["connection"]) == (404, "close")


async def test_closing_the_server_closes_idle_connections_and_lets_an_answer_finish() -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def gated(request: AdminRequest) -> AdminResponse:
        entered.set()
        await release.wait()
        return AdminResponse(200, {"done": True})

    router = Router()
    router.add("GET", "/v1/gated", gated)
    server = await start_admin_server("127.0.0.1:0", router, None)
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", server.port)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /v1/gated HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive: closed after its answer
    await asyncio.wait_for(entered.wait(), 30)
    closing = asyncio.create_task(server.close())
    assert await asyncio.wait_for(read_all(idle_reader), 30) == b""  # closed while the other is answered
    release.set()
    status, _, payload = parse_response(await asyncio.wait_for(read_all(reader), 30))
    assert status == 200 and json.loads(payload) == {"done": True}
    await asyncio.wait_for(closing, 30)
    idle_writer.close()
    writer.close()


async def test_a_head_over_16_kib_is_431_whether_it_arrives_whole_or_in_pieces(admin: Any) -> None:
    server = await admin()
    big = b"GET /v1/things HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\nConnection: close\r\n\r\n"
    status, _, payload = await raw_exchange(server, big)  # one write: usually one read at the server
    assert status == 431 and "too large" in json.loads(payload)["error"]
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    for offset in range(0, len(big), 4096):
        writer.write(big[offset : offset + 4096])
        await writer.drain()
    status, _, _ = parse_response(await asyncio.wait_for(read_all(reader), 30))
    writer.close()
    assert status == 431
    # A head under the bound with a large body behind it is not mistaken for a large head.
    body = json.dumps({"pad": "b" * 30000}).encode()
    status, _, payload = await raw_exchange(server, post_head(len(body)) + body)
    assert status == 200 and json.loads(payload)["length"] == len(body)
