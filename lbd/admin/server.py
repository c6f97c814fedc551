"""The admin HTTP API (JSON) on ``admin.listen``, served by the supervisor on its event loop.

The HTTP layer is aiohttp.web: a maintained server with a strict parser, header limits, routing and (for
the console to come) static files and WebSockets, instead of a parser of our own. What lbd adds:

- every answer is JSON, errors included (404 unknown path, 405 wrong method, 413 body too large, 408 a
  body that does not arrive in time, 400 a body that is not the JSON asked for);
- limits, so that one client cannot pin the admin port: a request head must be complete within
  ``header_timeout`` of the connection opening (or of the previous answer on a kept-alive connection),
  its body within ``body_timeout`` of the head, and a body is at most ``max_body`` bytes (1 MiB);
- ``/healthz`` and ``/readyz`` are open (liveness and readiness probes run without credentials, as with
  Kubernetes); every other path needs ``Authorization: Bearer <token>`` when ``admin.token_file`` is set,
  or the console's cookie (lbd/console/web.py), which a browser gets from the console's login form;
- routes added with ``public=True`` (the console's page and login form) answer without the token and
  decide themselves what to show.

Handlers (the supervisor's) see an ``AdminRequest`` and return an ``AdminResponse``: they do not depend
on aiohttp, so the endpoints are plain coroutines.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler as WebHandler
from aiohttp.typedefs import Middleware

log = logging.getLogger("lbd.admin")

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
MAX_BODY = 1024 * 1024  # bytes; registrations are small, and this bounds what one request can hold
HEADER_TIMEOUT = 10.0  # seconds for a request head (also the idle keep-alive time)
BODY_TIMEOUT = 10.0  # seconds for a body once its head is in
LINGER = 2.0  # seconds to drain an unread body after an error answer, so the client sees the answer


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
    path: str  # an aiohttp pattern: "/v1/target-groups/{name}/targets"
    handler: Handler
    public: bool = False  # answers without the token (an exact path; the handler checks credentials)


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, path: str, handler: Handler, public: bool = False) -> None:
        self.routes.append(Route(method, path, handler, public))


# -- answers ---------------------------------------------------------------------------------------------


def to_web(response: AdminResponse) -> web.Response:
    # The header as given: aiohttp's content_type argument refuses parameters such as Prometheus's
    # "text/plain; version=0.0.4; charset=utf-8".
    headers = {"Content-Type": response.content_type}
    headers["Server"] = "lbd"  # not aiohttp's default, which names the Python and aiohttp versions
    headers.update(response.headers)
    if response.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="lbd-admin"'
    return web.Response(status=response.status, body=response.encode(), headers=headers)


def error(status: int, message: str, **extra: Any) -> web.Response:
    return to_web(AdminResponse(status, {"error": message, **extra}))


def _http_error(exc: web.HTTPException, request: web.Request, limits: Limits) -> web.Response:
    """aiohttp's own refusals (routing, body size) as JSON, keeping headers such as Allow."""
    if isinstance(exc, web.HTTPNotFound):
        message = f"no such endpoint: {request.path}"
    elif isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        message = f"method {request.method} not allowed on {request.path} (allowed: {allowed})"
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        message = f"the request body is larger than {limits.max_body} bytes"
    else:
        message = exc.reason
    response = error(exc.status, message)
    if "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


# -- authentication --------------------------------------------------------------------------------------


def authorized(header: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``; the scheme is case-insensitive (RFC 7235), the token is not."""
    scheme, _, credentials = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    # surrogateescape: aiohttp keeps undecodable header bytes as surrogates; they must compare, not raise.
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


def _allowed(request: web.Request, token: str | None, open_paths: frozenset[str] = OPEN_PATHS) -> bool:
    if token is None or request.path in open_paths:
        return True
    return credentials_ok(request.headers.get("Authorization"), request.headers.get("Cookie"), token)


def _forged(request: web.Request, token: str | None) -> bool:
    """A change authenticated by the console's cookie alone, without the console's header."""
    if token is None or request.method in SAFE_METHODS or CONSOLE_HEADER in request.headers:
        return False
    return not authorized(request.headers.get("Authorization"), token)


def _middleware(token: str | None, limits: Limits, open_paths: frozenset[str] = OPEN_PATHS) -> Middleware:
    @web.middleware
    async def admin_middleware(request: web.Request, handler: WebHandler) -> web.StreamResponse:
        # Before routing answers, so that without the token even a 404 tells nothing about the paths.
        if not _allowed(request, token, open_paths):
            return error(401, "missing or wrong bearer token")
        if request.path not in open_paths and _forged(request, token):
            return error(403, f"a change made with the console's cookie needs the {CONSOLE_HEADER} header")
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _http_error(exc, request, limits)
        return response

    return admin_middleware


# -- endpoints -------------------------------------------------------------------------------------------


async def read_body(request: web.Request, limits: Limits) -> bytes:
    """The whole body, however many reads it takes; 413 past the limit, TimeoutError if too slow."""
    if request.content_length is not None and request.content_length > limits.max_body:
        raise web.HTTPRequestEntityTooLarge(limits.max_body, request.content_length)
    async with asyncio.timeout(limits.body_timeout):
        return await request.read()  # counts against client_max_size across reads: 413 past it


def _endpoint(handler: Handler, limits: Limits) -> WebHandler:
    async def serve(request: web.Request) -> web.StreamResponse:
        try:
            body = await read_body(request, limits)
        except TimeoutError:
            response = error(408, f"the request body did not arrive within {limits.body_timeout:g} s")
            response.force_close()
            return response
        admin_request = AdminRequest(
            request.method,
            request.path,
            request.query_string,
            {k.lower(): v for k, v in request.headers.items()},
            body,
            dict(request.match_info),
        )
        try:
            return to_web(await handler(admin_request))
        except BadRequest as exc:
            return error(400, str(exc))
        except (ValueError, KeyError, TypeError) as exc:
            return error(400, f"bad request: {exc}")
        except Exception:
            log.exception("admin %s %s failed", request.method, request.path)
            return error(500, "internal error, see the lbd log")

    return serve


def make_app(router: Router, token: str | None, limits: Limits = Limits()) -> web.Application:
    open_paths = OPEN_PATHS | {route.path for route in router.routes if route.public}
    app = web.Application(
        middlewares=[_middleware(token, limits, open_paths)], client_max_size=limits.max_body
    )
    for route in router.routes:
        app.router.add_route(route.method, route.path, _endpoint(route.handler, limits))
    return app


# -- the server ------------------------------------------------------------------------------------------


class AdminServer:
    def __init__(self, runner: web.AppRunner, site: web.BaseSite) -> None:
        self._runner = runner
        self._site = site

    @property
    def port(self) -> int:
        """The bound port (tests listen on port 0)."""
        address = self._runner.addresses[0]
        return int(address[1])

    @property
    def requests_started(self) -> int:
        """Requests whose head aiohttp has parsed (counted before the body is read)."""
        server = self._runner.server
        return server.requests_count if server is not None else 0

    async def close(self) -> None:
        await self._runner.cleanup()


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9900"`` or ``"[::1]:9900"`` to (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def _runner(router: Router, token: str | None, limits: Limits) -> web.AppRunner:
    return web.AppRunner(
        make_app(router, token, limits),
        handle_signals=False,  # the supervisor owns SIGTERM, SIGINT, SIGHUP
        access_log=None,  # lbd's access logs are for the data path; admin calls that change things log
        # aiohttp closes a connection that has no complete request head this long after it opened or
        # after its previous answer: the header-read deadline that stops a slowloris client.
        keepalive_timeout=limits.header_timeout,
        lingering_time=LINGER,
        # An admin change (a reload, a registration) carries on when its client goes away: cancelling it
        # halfway would leave workers between two generations.
        handler_cancellation=False,
        shutdown_timeout=2.0,
    )


async def start_admin_server(
    listen: str, router: Router, token: str | None, limits: Limits = Limits()
) -> AdminServer:
    """Listen on ``listen``; OSError (the supervisor's exit code 3) if the address cannot be bound."""
    host, port = parse_listen(listen)
    runner = _runner(router, token, limits)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return AdminServer(runner, site)
