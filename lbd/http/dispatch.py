"""Per-listener request handling for the HTTP proxy: which action a request gets, and the headers it carries.

Compiled once per Snapshot (DESIGN.md section 3: rule tables compiled once, header rewriting on the raw
header list). Fixed responses are rendered to bytes here, so serving one costs a dictionary lookup.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from random import getrandbits
from typing import TYPE_CHECKING

from lbd.config.schema import Action, FixedResponseAction, ForwardAction, Listener, RedirectAction
from lbd.http.messages import HttpError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from lbd.http.proxy import Exchange
    from lbd.runtime import HttpListenerRuntime, TargetGroupRuntime


@dataclass(slots=True)
class RouteDecision:
    kind: str  # "forward" | "respond"
    target_group: TargetGroupRuntime | None
    response: bytes
    priority: int  # matched rule priority for the access log: 0 = default rule


@dataclass(slots=True)
class RewrittenRequest:
    headers: list[tuple[bytes, bytes]]
    chunked: bool
    expect_continue: bool
    upgrade: bytes
    host: bytes


HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
REPLACED = frozenset({b"x-forwarded-proto", b"x-forwarded-port"})


def render_fixed_response(action: FixedResponseAction) -> bytes:
    body = action.message_body.encode()
    head = [f"HTTP/1.1 {action.status_code} {_reason(action.status_code)}", "Server: lbd"]
    if action.content_type:
        head.append(f"Content-Type: {action.content_type}")
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class HttpDispatcher:
    def __init__(
        self,
        runtime: HttpListenerRuntime,
        listener: Listener,
        target_groups: Mapping[str, TargetGroupRuntime],
    ) -> None:
        self.runtime = runtime
        self.target_groups = target_groups
        self.port = str(listener.port).encode()
        self.scheme = b"https" if listener.protocol == "HTTPS" else b"http"
        self.xff_mode = runtime.load_balancer.xff_header_processing
        self.xff_client_port = runtime.load_balancer.xff_client_port
        self.default = self._decide(listener.default_actions[-1], 0)

    def _decide(self, action: Action, priority: int) -> RouteDecision:
        if isinstance(action, ForwardAction):
            return RouteDecision("forward", self.target_groups[action.target_groups[0].name], b"", priority)
        if isinstance(action, FixedResponseAction):
            return RouteDecision("respond", None, render_fixed_response(action), priority)
        assert isinstance(action, RedirectAction)
        raise NotImplementedError("redirect actions arrive with the routing module")

    def route(self, exchange: Exchange, head: object) -> RouteDecision:
        return self.default

    def rewrite_request(self, exchange: Exchange, peer: tuple[str, int]) -> RewrittenRequest:
        out: list[tuple[bytes, bytes]] = []
        chunked = False
        expect_continue = False
        upgrade = b""
        host = b""
        forwarded_for: list[bytes] = []
        trace = b""
        connection_listed: set[bytes] = set()
        for name, value in exchange.headers:
            lower = name.lower()
            if lower in HOP_BY_HOP:
                if lower == b"transfer-encoding":
                    if value.strip().lower() != b"chunked":
                        raise HttpError(501, "UnsupportedTransferEncoding")
                    chunked = True
                elif lower == b"connection":
                    connection_listed.update(t.strip().lower() for t in value.split(b","))
                elif lower == b"upgrade":
                    upgrade = value
                continue
            if lower == b"expect" and value.lower() == b"100-continue":
                expect_continue = True
                continue
            if lower == b"x-forwarded-for":
                forwarded_for.append(value)
                continue
            if lower == b"x-amzn-trace-id":
                trace = value
                continue
            if lower in REPLACED:
                continue
            if lower == b"host":
                host = value
            out.append((name, value))
        if connection_listed:
            out = [(n, v) for n, v in out if n.lower() not in connection_listed]
        if chunked:
            out = [(n, v) for n, v in out if n.lower() != b"content-length"]
        client = peer[0].encode()
        if self.xff_client_port:
            client = (b"[%b]:%d" if b":" in client else b"%b:%d") % (client, peer[1])
        if self.xff_mode == "append":
            out.append((b"X-Forwarded-For", b", ".join([*forwarded_for, client])))
        elif self.xff_mode == "preserve" and forwarded_for:
            out.append((b"X-Forwarded-For", b", ".join(forwarded_for)))
        out.append((b"X-Forwarded-Proto", self.scheme))
        out.append((b"X-Forwarded-Port", self.port))
        out.append(
            (
                b"X-Amzn-Trace-Id",
                trace or b"Root=1-%08x-%024x" % (int(time.time()), getrandbits(96)),
            )
        )
        return RewrittenRequest(out, chunked, expect_continue, upgrade, host)
