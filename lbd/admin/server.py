"""The admin HTTP API (JSON) on ``admin.listen``, served by the supervisor.

Low request rate, so h11 (pure Python, strict) is the right parser here; the data path uses httptools.
``/healthz`` and ``/readyz`` are open (liveness and readiness probes run without credentials, as with
Kubernetes); every other path needs ``Authorization: Bearer <token>`` when ``admin.token_file`` is set.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import h11

log = logging.getLogger("lbd.admin")

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class AdminRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass(frozen=True)
class AdminResponse:
    status: int
    body: Any
    content_type: str = "application/json"

    def encode(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return (json.dumps(self.body, indent=2) + "\n").encode()


Handler = Callable[[AdminRequest], Awaitable[AdminResponse]]


class Router:
    """Exact paths, plus prefix routes whose handler gets the rest of the path in ``request.path``."""

    def __init__(self) -> None:
        self._exact: dict[tuple[str, str], Handler] = {}
        self._prefix: list[tuple[str, str, Handler]] = []

    def add(self, method: str, path: str, handler: Handler) -> None:
        if path.endswith("/*"):
            self._prefix.append((method, path[:-1], handler))
        else:
            self._exact[(method, path)] = handler

    def find(self, method: str, path: str) -> Handler | bool | None:
        """The handler; False if the path exists with other methods (405); None if unknown (404)."""
        handler = self._exact.get((method, path))
        if handler is not None:
            return handler
        for m, prefix, h in self._prefix:
            if path.startswith(prefix) and m == method:
                return h
        known = any(p == path for _, p in self._exact) or any(path.startswith(p) for _, p, _ in self._prefix)
        return False if known else None


class AdminProtocol(asyncio.Protocol):
    def __init__(self, router: Router, token: str | None) -> None:
        self._router = router
        self._token = token
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        self._transport: asyncio.Transport | None = None
        self._busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._conn.receive_data(data)
        self._pump()

    def eof_received(self) -> bool:
        self._conn.receive_data(b"")
        self._pump()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def _pump(self) -> None:
        if self._busy:
            return
        try:
            request = self._next_request()
        except h11.RemoteProtocolError as exc:
            self._reply_and_close(exc.error_status_hint, {"error": str(exc)})
            return
        if request is None:
            return
        self._busy = True
        asyncio.get_running_loop().create_task(self._handle(request))

    def _next_request(self) -> AdminRequest | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = self._conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                # h11 buffers the partial request itself; nothing to do until more bytes arrive.
                return None
            if isinstance(event, h11.ConnectionClosed):
                if self._transport is not None:
                    self._transport.close()
                return None
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                target = head.target.decode("latin-1")
                path, _, query = target.partition("?")
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
                return AdminRequest(head.method.decode("latin-1"), path, query, headers, bytes(body))

    async def _handle(self, request: AdminRequest) -> None:
        try:
            response = await self._dispatch(request)
        except Exception:
            log.exception("admin %s %s failed", request.method, request.path)
            response = AdminResponse(500, {"error": "internal error, see the lbd log"})
        self._send(response)
        self._busy = False
        if self._conn.our_state is h11.MUST_CLOSE or self._conn.their_state is h11.MUST_CLOSE:
            if self._transport is not None:
                self._transport.close()
            return
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()
            self._pump()

    async def _dispatch(self, request: AdminRequest) -> AdminResponse:
        if request.path not in OPEN_PATHS and self._token is not None:
            presented = request.headers.get("authorization", "")
            if not hmac.compare_digest(presented.encode(), f"Bearer {self._token}".encode()):
                return AdminResponse(401, {"error": "missing or wrong bearer token"})
        handler = self._router.find(request.method, request.path)
        if handler is None:
            return AdminResponse(404, {"error": f"no such endpoint: {request.path}"})
        if handler is False:
            return AdminResponse(405, {"error": f"method {request.method} not allowed on {request.path}"})
        try:
            return await cast(Handler, handler)(request)
        except (ValueError, KeyError, TypeError) as exc:
            return AdminResponse(400, {"error": f"bad request: {exc}"})

    def _send(self, response: AdminResponse) -> None:
        if self._transport is None:
            return
        body = response.encode()
        headers = [
            ("content-type", response.content_type),
            ("content-length", str(len(body))),
            ("server", "lbd"),
        ]
        if response.status == 401:
            headers.append(("www-authenticate", 'Bearer realm="lbd-admin"'))
        try:
            data = self._conn.send(h11.Response(status_code=response.status, headers=headers))
            data = (data or b"") + (self._conn.send(h11.Data(data=body)) or b"")
            data += self._conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            self._transport.close()
            return
        self._transport.write(data)

    def _reply_and_close(self, status: int, body: Any) -> None:
        if self._transport is None:
            return
        payload = (json.dumps(body) + "\n").encode()
        self._transport.write(
            f"HTTP/1.1 {status} Error\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n"
            "connection: close\r\n\r\n".encode()
            + payload
        )
        self._transport.close()


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9900"`` or ``"[::1]:9900"`` to (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


async def start_admin_server(listen: str, router: Router, token: str | None) -> asyncio.AbstractServer:
    host, port = parse_listen(listen)
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: AdminProtocol(router, token), host, port, reuse_address=True)
