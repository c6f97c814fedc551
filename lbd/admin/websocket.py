"""The @connections API of WebSocket APIs on the admin listener (API Gateway's PostToConnection,
GetConnection and DeleteConnection, "Use @connections commands in your backend service"):

- ``POST /v1/apis/{api}/connections/{id}``: the body is sent to the client as one message (text when it
  is UTF-8, binary otherwise); 200. A body over 128 KB is refused with 413 (API Gateway's message limit).
- ``GET /v1/apis/{api}/connections/{id}``: ``connectedAt``, ``lastActiveAt``, ``identity`` (``sourceIp``,
  ``userAgent``), ``apiKeyId``, ``principalId``.
- ``DELETE /v1/apis/{api}/connections/{id}``: closes the connection (1000); 204. ``$disconnect`` follows.

A connection that is not open answers 410 Gone; an API that is not a WEBSOCKET API 404. Connections live
in workers: every worker of this node is asked and the one holding the connection answers; with
``shared_state.redis`` a connection on another node is reached through the fleet's registry
(lbd/gateway/websocket/bus.py).
"""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING, Any

from lbd.admin.server import AdminRequest, AdminResponse, Router
from lbd.gateway.websocket.connections import GONE, OP

if TYPE_CHECKING:
    from lbd.supervisor import Supervisor


class ConnectionsAdmin:
    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self._seq = 0

    def register(self, router: Router) -> None:
        router.add("POST", "/v1/apis/{api}/connections/{id}", self._post)
        router.add("GET", "/v1/apis/{api}/connections/{id}", self._get)
        router.add("DELETE", "/v1/apis/{api}/connections/{id}", self._delete)

    async def _post(self, request: AdminRequest) -> AdminResponse:
        from lbd.gateway.websocket.session import MAX_MESSAGE  # (with wsproto: only when a message is posted)

        if len(request.body) > MAX_MESSAGE:
            return AdminResponse(413, {"error": f"a message is at most {MAX_MESSAGE} bytes"})
        return await self._act("post", request)

    async def _get(self, request: AdminRequest) -> AdminResponse:
        return await self._act("get", request)

    async def _delete(self, request: AdminRequest) -> AdminResponse:
        return await self._act("delete", request)

    async def _act(self, action: str, request: AdminRequest) -> AdminResponse:
        api = request.params["api"]
        config = self.supervisor.current.config
        found = next((a for a in config.apis if a.name == api), None)
        if found is None or found.protocol != "WEBSOCKET":
            return AdminResponse(404, {"error": f"no WEBSOCKET API named {api!r}"})
        message: dict[str, Any] = {
            "op": OP,
            "action": action,
            "api": api,
            "id": request.params["id"],
            "data": base64.b64encode(request.body).decode() if action == "post" else "",
        }
        workers = self.supervisor.workers
        replies = await asyncio.gather(
            *(w.request(self._numbered(message), OP) for w in workers), return_exceptions=True
        )
        for reply in replies:
            if not isinstance(reply, BaseException) and reply.get("status") != GONE:
                return _answer(reply)
        if config.shared_state.redis is not None and workers:
            # Not on this node: any worker looks the connection up in the fleet's registry.
            try:
                return _answer(await workers[0].request(self._numbered({**message, "remote": True}), OP))
            except (ConnectionError, TimeoutError) as exc:
                return AdminResponse(503, {"error": f"worker 0 did not answer: {exc}"})
        failed = [str(r) for r in replies if isinstance(r, BaseException)]
        if failed:
            return AdminResponse(503, {"error": f"a worker did not answer: {failed[0]}"})
        return _answer(next(r for r in replies if not isinstance(r, BaseException)))

    def _numbered(self, message: dict[str, Any]) -> dict[str, Any]:
        self._seq += 1
        return {**message, "generation": self._seq}


def _answer(reply: dict[str, Any]) -> AdminResponse:
    status = int(reply.get("status", 500))
    body = reply.get("body")
    return AdminResponse(status, b"" if body is None else body)
