"""The console's page and login on a real loopback admin server in this process: which requests get the
login form, the page, the cookie, and which changes the cookie alone may not make."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import quote

import pytest

from lbd.admin.server import (
    AdminRequest,
    AdminResponse,
    AdminServer,
    Router,
    cookie_value,
    start_admin_server,
)
from lbd.console.web import add_routes
from tests.lbdproc import http_request

TOKEN = "t0ken with spaces; and = signs"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def hello(request: AdminRequest) -> AdminResponse:
    return AdminResponse(200, {"status": "ok"})


@pytest.fixture
async def console() -> AsyncIterator[Callable[[str | None], Awaitable[AdminServer]]]:
    started: list[AdminServer] = []

    async def start(token: str | None) -> AdminServer:
        router = Router()
        router.add("GET", "/v1/things", hello)
        router.add("POST", "/v1/reload", hello)
        add_routes(router, token)
        server = await start_admin_server("127.0.0.1:0", router, token)
        started.append(server)
        return server

    yield start
    for server in started:
        await server.close()


def login_body(token: str) -> bytes:
    return f"token={quote(token)}".encode()


async def signed_in_cookie(server: AdminServer) -> str:
    status, headers, _ = await http_request(server.port, "POST", "/login", login_body(TOKEN), FORM)
    assert status == 303 and headers["location"] == "/"
    return headers["set-cookie"].split(";")[0]


async def test_without_the_token_the_page_is_the_login_form(
    console: Callable[..., Awaitable[AdminServer]],
) -> None:
    server = await console(TOKEN)
    status, headers, body = await http_request(server.port, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'name="token"' in body and b"console.js" not in body
    assert "script-src 'self'" in headers["content-security-policy"]
    # Its style sheet answers without the token; the script and the data do not.
    assert (await http_request(server.port, "GET", "/console/console.css"))[0] == 200
    assert (await http_request(server.port, "GET", "/console/console.js"))[0] == 401
    assert (await http_request(server.port, "GET", "/v1/things"))[0] == 401


async def test_a_wrong_token_goes_back_to_the_form_saying_so(
    console: Callable[..., Awaitable[AdminServer]],
) -> None:
    server = await console(TOKEN)
    status, headers, _ = await http_request(server.port, "POST", "/login", login_body(TOKEN + "x"), FORM)
    assert status == 303 and headers["location"] == "/?login=failed" and "set-cookie" not in headers
    status, _, body = await http_request(server.port, "GET", "/?login=failed")
    assert status == 200 and b"not the admin token" in body


async def test_the_right_token_sets_a_strict_http_only_cookie_the_api_accepts(
    console: Callable[..., Awaitable[AdminServer]],
) -> None:
    server = await console(TOKEN)
    status, headers, _ = await http_request(server.port, "POST", "/login", login_body(TOKEN), FORM)
    attributes = [part.strip() for part in headers["set-cookie"].split(";")]
    assert status == 303 and "HttpOnly" in attributes and "SameSite=Strict" in attributes
    cookie = attributes[0]
    assert cookie == f"lbd_admin_token={cookie_value(TOKEN)}"
    status, _, body = await http_request(server.port, "GET", "/", headers={"Cookie": cookie})
    assert status == 200 and b"console.js" in body and b'data-session="cookie"' in body
    status, _, body = await http_request(server.port, "GET", "/v1/things", headers={"Cookie": cookie})
    assert status == 200 and json.loads(body) == {"status": "ok"}
    assert (await http_request(server.port, "GET", "/console/console.js", headers={"Cookie": cookie}))[
        0
    ] == 200


@pytest.mark.parametrize(
    "cookie",
    [
        f"lbd_admin_token={cookie_value(TOKEN)}x",
        f"lbd_admin_token={cookie_value('other')}",
        "lbd_admin_token=",
        f"other={cookie_value(TOKEN)}",
        'lbd_admin_token="\\',  # not a cookie header Python's parser takes
    ],
)
async def test_any_other_cookie_is_401(console: Callable[..., Awaitable[AdminServer]], cookie: str) -> None:
    server = await console(TOKEN)
    status, _, _ = await http_request(server.port, "GET", "/v1/things", headers={"Cookie": cookie})
    assert status == 401


async def test_a_change_by_cookie_needs_the_console_header(
    console: Callable[..., Awaitable[AdminServer]],
) -> None:
    server = await console(TOKEN)
    cookie = await signed_in_cookie(server)
    status, _, body = await http_request(server.port, "POST", "/v1/reload", headers={"Cookie": cookie})
    assert status == 403 and "X-Lbd-Console" in json.loads(body)["error"]
    headers = {"Cookie": cookie, "X-Lbd-Console": "1"}
    assert (await http_request(server.port, "POST", "/v1/reload", headers=headers))[0] == 200
    # The bearer header works as before, without the console's header.
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert (await http_request(server.port, "POST", "/v1/reload", headers=bearer))[0] == 200


async def test_signing_out_clears_the_cookie(console: Callable[..., Awaitable[AdminServer]]) -> None:
    server = await console(TOKEN)
    status, headers, _ = await http_request(server.port, "POST", "/logout")
    assert (
        status == 303
        and headers["set-cookie"].startswith("lbd_admin_token=;")
        and "Max-Age=0" in headers["set-cookie"]
    )


async def test_without_a_token_configured_the_page_is_served_at_once(
    console: Callable[..., Awaitable[AdminServer]],
) -> None:
    server = await console(None)
    status, _, body = await http_request(server.port, "GET", "/")
    assert status == 200 and b"console.js" in body and b'data-session="none"' in body
    status, headers, _ = await http_request(server.port, "GET", "/console/console.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    # Nothing to sign in to.
    status, headers, _ = await http_request(server.port, "POST", "/login", login_body("x"), FORM)
    assert status == 303 and "set-cookie" not in headers
