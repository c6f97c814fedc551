"""The admin HTTP API (JSON) on ``admin.listen``, served by the supervisor on its event loop.

The HTTP layer is h11 (a strict, maintained sans-IO HTTP/1.1 parser and serializer, the one uvicorn
uses) under a thin asyncio Protocol: parsing, framing, keep-alive and ``Expect: 100-continue`` stay in a
real library, not in a parser of our own. (aiohttp.web served it before; it cost the supervisor about
12 MiB of memory for a handful of JSON endpoints, issue 11.) What lbd adds:

- every answer is JSON, errors included (404 unknown path, 405 wrong method with ``Allow``, 413 body too
  large, 408 a body that does not arrive in time, 400 a body that is not the JSON asked for, 400 a
  request h11 refuses as malformed (501 an unknown transfer coding, 431 a head larger than 16 KiB);
  these close the connection);
- limits, so that one client cannot pin the admin port: a request head must be complete within
  ``header_timeout`` of the connection opening (or of the previous answer on a kept-alive connection),
  else the connection is closed without an answer; its body within ``body_timeout`` of the head; a body
  is at most ``max_body`` bytes (1 MiB), refused from its ``Content-Length`` before it is read, or as
  it arrives when it is chunked;
- keep-alive and pipelining: the requests of a connection are answered one at a time, in order; reading
  pauses while one is being answered, so a client cannot queue more than a buffer's worth;
- an error answer that closes the connection while the client may still be sending is followed by a
  half-close and up to ``LINGER`` seconds of reading and discarding, so the client reads the answer
  instead of a reset (RFC 9112 section 9.6);
- ``/healthz`` and ``/readyz`` are open (liveness and readiness probes run without credentials, as with
  Kubernetes); every other path needs ``Authorization: Bearer <token>`` when ``admin.token_file`` is set,
  or the console's cookie (lbd/console/web.py), which a browser gets from the console's login form;
- routes added with ``public=True`` (the console's page and login form) answer without the token and
  decide themselves what to show;
- a route answers its one method: HEAD on a GET route is 405, as it was with aiohttp's ``add_route``.

Handlers (the supervisor's) see an ``AdminRequest`` and return an ``AdminResponse``: they do not depend
on the HTTP layer, so the endpoints are plain coroutines.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import h11

log = logging.getLogger("lbd.admin")

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
MAX_BODY = 1024 * 1024  # bytes; registrations are small, and this bounds what one request can hold
HEADER_TIMEOUT = 10.0  # seconds for a request head (also the idle keep-alive time)
BODY_TIMEOUT = 10.0  # seconds for a body once its head is in
MAX_HEAD = 16 * 1024  # bytes of request line and fields (h11's own bound applies only to a head in pieces)
LINGER = 2.0  # seconds to drain an unread body after an error answer, so the client sees the answer
SHUTDOWN_TIMEOUT = 2.0  # seconds that answers in progress get to finish when the server closes


class BadRequest(ValueError):
    """The request is not what the endpoint takes: 400 with this message."""


@dataclass(frozen=True)
class AdminRequest:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    params: Mapping[str, str] = field(default_factory=dict)  # from the route pattern, percent-decoded

    def json(self) -> Any:
        return parse_json(self.body)


@dataclass(frozen=True)
class AdminResponse:
    status: int
    body: Any
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)  # more headers: Set-Cookie, Location ...

    def encode(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return (json.dumps(self.body, indent=2) + "\n").encode()


Handler = Callable[[AdminRequest], Awaitable[AdminResponse]]


def parse_json(body: bytes) -> Any:
    """The body as JSON, or BadRequest saying why not (never a 500, whatever the client sent)."""
    if not body.strip():
        raise BadRequest("the body is empty; send a JSON document")
    try:
        return json.loads(body)
    except RecursionError:
        # json's C scanner recurses once per nesting level: [[[[...]]]] a few thousand deep ends here.
        raise BadRequest("the body is not JSON lbd accepts: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both are
        raise BadRequest(f"the body is not JSON: {exc}") from None


@dataclass(frozen=True)
class Limits:
    max_body: int = MAX_BODY
    header_timeout: float = HEADER_TIMEOUT
    body_timeout: float = BODY_TIMEOUT


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # a pattern: "/v1/target-groups/{name}/targets"; a {name} is one non-empty segment
    handler: Handler
    public: bool = False  # answers without the token (an exact path; the handler checks credentials)


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, path: str, handler: Handler, public: bool = False) -> None:
        self.routes.append(Route(method, path, handler, public))

    def match(self, method: str, raw_path: str) -> tuple[Route | None, dict[str, str], list[str]]:
        """The route for ``method`` on ``raw_path`` (as sent, percent-encoded) with its parameters, or
        None and the methods the path does allow (empty: no such path).

        The path is split on "/" before each segment is percent-decoded, so that an encoded "/" stays
        inside its parameter (a target id such as ``[::1]:8080`` arrives encoded)."""
        segments = [unquote(segment) for segment in raw_path.split("/")]
        allowed: list[str] = []
        for route in self.routes:
            params = _bind(route.path, segments)
            if params is None:
                continue
            if route.method == method:
                return route, params, []
            allowed.append(route.method)
        return None, {}, allowed


def _bind(pattern: str, segments: list[str]) -> dict[str, str] | None:
    parts = pattern.split("/")
    if len(parts) != len(segments):
        return None
    params: dict[str, str] = {}
    for part, segment in zip(parts, segments, strict=True):
        if part.startswith("{") and part.endswith("}"):
            if not segment:
                return None
            params[part[1:-1]] = segment
        elif part != segment:
            return None
    return params


# -- authentication --------------------------------------------------------------------------------------


def authorized(header: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``; the scheme is case-insensitive (RFC 7235), the token is not."""
    scheme, _, credentials = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    # surrogateescape: header bytes that are not UTF-8 arrive as surrogates (_decode_headers); they must
    # compare, not raise.
    return hmac.compare_digest(credentials.strip().encode("utf-8", "surrogateescape"), token.encode())


# The console's session cookie: the token itself (base64url, so that any token is a valid cookie value,
# RFC 6265 4.1.1). HttpOnly keeps it from scripts; SameSite=Strict keeps other sites' pages from sending it.
COOKIE_NAME = "lbd_admin_token"
# A request that only the cookie authenticates and that changes something must carry this header: a page
# on another port of the same host is "same-site" (SameSite is by host, not origin), but cannot add a
# custom header to a cross-origin request without a CORS preflight, which the admin API never grants.
CONSOLE_HEADER = "X-Lbd-Console"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def cookie_value(token: str) -> str:
    return base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def cookie_authorized(cookie_header: str | None, token: str) -> bool:
    """The console's cookie in a ``Cookie`` header holds this token (compared in constant time)."""
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(cookie_header or "")
    except CookieError:
        return False
    morsel = cookies.get(COOKIE_NAME)
    if morsel is None:
        return False
    presented = morsel.value.encode("utf-8", "surrogateescape")
    return hmac.compare_digest(presented, cookie_value(token).encode())


def credentials_ok(authorization: str | None, cookie_header: str | None, token: str | None) -> bool:
    """The bearer header or the console's cookie carries the token (or no token is configured)."""
    if token is None:
        return True
    return authorized(authorization, token) or cookie_authorized(cookie_header, token)


# -- answers ---------------------------------------------------------------------------------------------


def error(status: int, message: str, **extra: Any) -> AdminResponse:
    return AdminResponse(status, {"error": message, **extra})


def response_headers(response: AdminResponse, length: int) -> list[tuple[str, str]]:
    """The answer's header fields: ours, then the handler's (which may replace ours)."""
    headers = {"Content-Type": response.content_type, "Server": "lbd"}
    # RFC 9110 section 6.6.1: an origin server with a clock sends Date.
    headers["Date"] = formatdate(usegmt=True)
    headers.update(response.headers)
    if response.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="lbd-admin"'
    if _has_body(response.status):
        headers["Content-Length"] = str(length)
    return list(headers.items())


_STATUSES = frozenset(status.value for status in HTTPStatus)


def _has_body(status: int) -> bool:
    return status >= 200 and status not in (204, 304)  # RFC 9110 sections 15.3.5 and 15.4.5


class _Admin:
    """What the connections of one server share: the routes, the token, the limits, a request count."""

    def __init__(self, router: Router, token: str | None, limits: Limits) -> None:
        self.router = router
        self.token = token
        self.limits = limits
        self.open_paths = OPEN_PATHS | {route.path for route in router.routes if route.public}
        self.requests_started = 0  # request heads parsed (counted before the body is read)
        self.connections: set[_AdminProtocol] = set()

    def route(
        self, method: str, raw_path: str, path: str, headers: Mapping[str, str]
    ) -> tuple[Route, dict[str, str]] | AdminResponse:
        """The route a request head asks for, or the answer it gets without its body being read."""
        # Before routing, so that without the token even a 404 tells nothing about the paths.
        if not self._allowed(path, headers):
            return error(401, "missing or wrong bearer token")
        if path not in self.open_paths and self._forged(method, headers):
            return error(403, f"a change made with the console's cookie needs the {CONSOLE_HEADER} header")
        route, params, allowed = self.router.match(method, raw_path)
        if route is not None:
            return route, params
        if not allowed:
            return error(404, f"no such endpoint: {path}")
        methods = ", ".join(sorted(set(allowed)))
        response = error(405, f"method {method} not allowed on {path} (allowed: {methods})")
        return AdminResponse(response.status, response.body, headers={"Allow": methods})

    def _allowed(self, path: str, headers: Mapping[str, str]) -> bool:
        if self.token is None or path in self.open_paths:
            return True
        return credentials_ok(headers.get("authorization"), headers.get("cookie"), self.token)

    def _forged(self, method: str, headers: Mapping[str, str]) -> bool:
        """A change authenticated by the console's cookie alone, without the console's header."""
        if self.token is None or method in SAFE_METHODS or CONSOLE_HEADER.lower() in headers:
            return False
        return not authorized(headers.get("authorization"), self.token)

    async def respond(self, route: Route, request: AdminRequest) -> AdminResponse:
        try:
            return await route.handler(request)
        except BadRequest as exc:
            return error(400, str(exc))
        except (ValueError, KeyError, TypeError) as exc:
            return error(400, f"bad request: {exc}")
        except Exception:
            log.exception("admin %s %s failed", request.method, request.path)
            return error(500, "internal error, see the lbd log")


def _decode_headers(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    # h11 gives names lowercased. Values that are not UTF-8 keep their bytes as surrogates, so that a
    # token compares (and fails) instead of raising; a repeated field keeps its last value.
    return {name.decode("latin-1"): value.decode("utf-8", "surrogateescape") for name, value in headers}


def _repeated_credentials(fields: list[tuple[bytes, bytes]]) -> bool:
    """Authorization is a singleton field (RFC 9110 section 11.6.2 defines no list syntax for it): two
    of them are a request that a proxy in front and lbd may read differently, so it is refused."""
    return sum(1 for name, _ in fields if name == b"authorization") > 1


def _split_target(target: bytes) -> tuple[str, str]:
    """The request target's path (still percent-encoded) and query; absolute-form too (RFC 9112 3.2)."""
    text = target.decode("latin-1")
    if not text.startswith("/") and "://" in text:
        parts = urlsplit(text)
        return parts.path or "/", parts.query
    path, _, query = text.partition("?")
    return path, query


# -- the connection --------------------------------------------------------------------------------------


class _Refused(Exception):
    """The request gets this answer and the connection closes (its body is too large, slow or broken)."""

    def __init__(self, response: AdminResponse) -> None:
        super().__init__(response.status)
        self.response = response


class _AdminProtocol(asyncio.Protocol):
    """One admin connection: bytes in and out of h11, and one task that answers its requests in turn."""

    def __init__(self, admin: _Admin) -> None:
        self._admin = admin
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self._transport: asyncio.Transport | None = None
        self._arrived = asyncio.Event()  # data or the end of it, for a task waiting on either
        self._waiting = False
        self._eof = False
        self._discarding = False  # lingering after an error answer: what arrives is dropped
        self._writable = asyncio.Event()
        self._writable.set()
        self._busy = False  # between a request head and its answer
        self._stalled = False  # the client did not read an answer in time
        self._shutting_down = False  # the server is closing: no request after the current one
        self._task: asyncio.Task[None] | None = None

    # asyncio's side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._admin.connections.add(self)
        self._task = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        if self._discarding or self._eof:
            return
        self._h11.receive_data(data)
        self._arrived.set()
        if not self._waiting and self._transport is not None:
            # Nobody reads until the current answer is sent: leave the rest in the kernel's buffer.
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        self._end()
        return True  # keep the transport open to write the answer; _serve closes it

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def _end(self) -> None:
        if not self._eof:
            self._eof = True
            if not self._discarding:
                self._h11.receive_data(b"")
        self._arrived.set()

    # the task's side

    async def _serve(self) -> None:
        try:
            while await self._exchange():
                self._h11.start_next_cycle()
        except Exception:
            log.exception("admin connection failed")
        finally:
            self._admin.connections.discard(self)
            if self._transport is not None:
                self._transport.close()

    async def _exchange(self) -> bool:
        """Reads one request and answers it; False when the connection is to close."""
        loop = asyncio.get_running_loop()
        limits = self._admin.limits
        try:
            event = await self._next_event(loop.time() + limits.header_timeout)
        except TimeoutError:
            return False  # no complete head in time (a slowloris client): closed without an answer
        except h11.RemoteProtocolError as exc:
            await self._refuse(error(exc.error_status_hint, f"malformed request: {exc}"))
            return False
        if not isinstance(event, h11.Request):
            return False  # the client closed between requests
        self._busy = True
        self._admin.requests_started += 1
        method = event.method.decode("ascii")
        raw_path, query = _split_target(event.target)
        path = unquote(raw_path)
        fields = list(event.headers)
        headers = _decode_headers(fields)
        if _repeated_credentials(fields):
            await self._refuse(error(400, "more than one Authorization field"), method)
            return False
        routed = self._admin.route(method, raw_path, path, headers)
        if isinstance(routed, AdminResponse):
            if self._h11.client_is_waiting_for_100_continue:
                # The client may never send the body it announced (RFC 9110 section 10.1.1): close
                # rather than wait for it.
                await self._refuse(routed, method)
                return False
            await self._send(routed, method)
            if not await self._skip_body():
                await self._linger()
                return False
            return self._reusable()
        try:
            body = await self._read_body(event, loop.time() + limits.body_timeout)
        except _Refused as refused:
            await self._refuse(refused.response, method)
            return False
        route, params = routed
        response = await self._admin.respond(route, AdminRequest(method, path, query, headers, body, params))
        await self._send(response, method)
        return self._reusable()

    def _reusable(self) -> bool:
        self._busy = False
        done = self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE
        return done and not self._stalled and not self._shutting_down

    async def _next_event(self, deadline: float) -> Any:
        while True:
            if self._h11.their_state is h11.IDLE:
                self._check_head_size()
            event = self._h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            await self._wait(deadline)

    def _check_head_size(self) -> None:
        """A head larger than MAX_HEAD is refused however it arrives: h11 bounds only a head that is still
        incomplete, so one that came whole in a single read (up to the transport's read size) would pass."""
        buffered, _closed = self._h11.trailing_data
        if len(buffered) <= MAX_HEAD:
            return
        window = buffered[: MAX_HEAD + 4]
        if b"\r\n\r\n" not in window and b"\n\n" not in window:
            raise h11.RemoteProtocolError("request head too large", error_status_hint=431)

    async def _wait(self, deadline: float) -> None:
        self._arrived.clear()
        if self._transport is not None:
            self._transport.resume_reading()
        self._waiting = True
        try:
            async with asyncio.timeout_at(deadline):
                await self._arrived.wait()
        finally:
            self._waiting = False

    async def _read_body(self, request: h11.Request, deadline: float) -> bytes:
        """The whole body, however many reads it takes; _Refused past the limit or the deadline."""
        limits = self._admin.limits
        too_large = _Refused(error(413, f"the request body is larger than {limits.max_body} bytes"))
        length = dict(request.headers).get(b"content-length")  # h11 has checked it is one number
        if length is not None and int(length) > limits.max_body:
            raise too_large  # announced: refused before it is read
        if self._h11.client_is_waiting_for_100_continue:
            self._write(self._h11.send(h11.InformationalResponse(status_code=100, headers=[])))
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                event = await self._next_event(deadline)
                if isinstance(event, h11.EndOfMessage):
                    return b"".join(chunks)
                if isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > limits.max_body:
                        raise too_large  # chunked: counted as it arrives
                    chunks.append(event.data)
        except TimeoutError:
            message = f"the request body did not arrive within {limits.body_timeout:g} s"
            raise _Refused(error(408, message)) from None
        except h11.RemoteProtocolError as exc:
            raise _Refused(error(exc.error_status_hint, f"malformed request: {exc}")) from None

    async def _skip_body(self) -> bool:
        """Reads and drops the body of a request answered without it, to keep the connection; False if
        it is larger than a body may be, slower than LINGER, or broken."""
        if self._h11.their_state is not h11.SEND_BODY or self._h11.our_state is not h11.DONE:
            return self._h11.their_state is h11.DONE
        deadline = asyncio.get_running_loop().time() + LINGER
        size = 0
        try:
            while True:
                event = await self._next_event(deadline)
                if isinstance(event, h11.EndOfMessage):
                    return True
                if isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > self._admin.limits.max_body:
                        return False
        except (TimeoutError, h11.RemoteProtocolError):
            return False

    async def _refuse(self, response: AdminResponse, method: str = "GET") -> None:
        """An error answer, then the connection closes (after lingering)."""
        closing = AdminResponse(
            response.status, response.body, response.content_type, {**response.headers, "Connection": "close"}
        )
        if self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            await self._send(closing, method)
        await self._linger()

    async def _send(self, response: AdminResponse, method: str) -> None:
        body = response.encode() if _has_body(response.status) else b""
        headers = response_headers(response, len(body))
        reason = HTTPStatus(response.status).phrase if response.status in _STATUSES else ""
        head = h11.Response(status_code=response.status, headers=headers, reason=reason)
        data = self._h11.send(head)
        if body and method != "HEAD":  # a HEAD answer says the length and sends nothing (RFC 9110 9.3.2)
            data += self._h11.send(h11.Data(data=body))
        self._write(data + self._h11.send(h11.EndOfMessage()))
        try:
            # A client that does not read cannot make the answer pile up in memory.
            async with asyncio.timeout(self._admin.limits.body_timeout):
                await self._writable.wait()
        except TimeoutError:
            self._stalled = True  # the connection closes at once

    def _write(self, data: bytes | None) -> None:
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def _linger(self) -> None:
        """Half-closes and drops what arrives until the client closes or LINGER passes: closing with
        unread data would send a reset, which can destroy the answer before the client reads it."""
        transport = self._transport
        if transport is None or transport.is_closing() or self._eof or self._stalled:
            return
        self._discarding = True
        if transport.can_write_eof():
            transport.write_eof()
        deadline = asyncio.get_running_loop().time() + LINGER
        with contextlib.suppress(TimeoutError):
            while not self._eof:
                await self._wait(deadline)

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    def shut_down(self) -> None:
        """The server is closing: an idle connection closes now; one being answered finishes first."""
        self._shutting_down = True
        if not self._busy and self._task is not None:
            self._task.cancel()


# -- the server ------------------------------------------------------------------------------------------


class AdminServer:
    def __init__(self, server: asyncio.Server, admin: _Admin) -> None:
        self._server = server
        self._admin = admin

    @property
    def port(self) -> int:
        """The bound port (tests listen on port 0)."""
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def requests_started(self) -> int:
        """Requests whose head has been parsed (counted before the body is read)."""
        return self._admin.requests_started

    async def close(self) -> None:
        self._server.close()
        connections = list(self._admin.connections)
        for connection in connections:
            connection.shut_down()
        # An admin change (a reload, a registration) carries on when its client goes away: cancelling it
        # halfway would leave workers between two generations. It gets SHUTDOWN_TIMEOUT to finish.
        tasks = [task for connection in connections if (task := connection.task) is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_TIMEOUT)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._server.wait_closed()


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9900"`` or ``"[::1]:9900"`` to (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


async def start_admin_server(
    listen: str, router: Router, token: str | None, limits: Limits = Limits()
) -> AdminServer:
    """Listen on ``listen``; OSError (the supervisor's exit code 3) if the address cannot be bound."""
    host, port = parse_listen(listen)
    admin = _Admin(router, token, limits)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _AdminProtocol(admin), host, port, reuse_address=True)
    return AdminServer(server, admin)
