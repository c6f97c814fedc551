"""Per-listener request handling for the HTTP proxy: which action a request gets (the compiled rule table),
and the headers it carries to the target.

Compiled once per Snapshot (DESIGN.md section 3: rule tables compiled once, header rewriting on the raw
header list). A listener whose only rule is the default forward to one group skips matching entirely.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from random import getrandbits, randbytes
from typing import TYPE_CHECKING

from lbd.http import desync, fastpath, requestline
from lbd.http.errors import HttpError
from lbd.http.messages import HOP_BY_HOP
from lbd.routing.actions import Forward, Redirect
from lbd.routing.conditions import BytesMatcher
from lbd.routing.request import RequestView, request_path
from lbd.routing.stickiness import CookieSealer, current_keys
from lbd.routing.table import RuleTable

if TYPE_CHECKING:
    from collections.abc import Mapping

    from lbd.config.schema import Listener
    from lbd.http.exchange import Exchange
    from lbd.http.firewall import Firewall
    from lbd.runtime import HttpListenerRuntime, TargetGroupRuntime

log = logging.getLogger("lbd.http")

MAX_FORWARDED_FOR = 30  # ALB answers 463 when X-Forwarded-For holds more addresses (R10)
MAX_TRACE_HEADER = 7 * 1024  # ALB replaces larger X-Amzn-Trace-Id headers with a new Root (R8)


class RouteDecision:
    """What a request gets: the rule's action, resolved."""

    def __init__(
        self,
        kind: str,  # "forward" | "redirect" | "fixed-response"
        target_group: TargetGroupRuntime | None,
        response: bytes,  # a whole response, for "redirect" and "fixed-response"
        priority: int,  # matched rule priority for the access log: 0 = default rule
        set_cookie: bytes = b"",  # Set-Cookie lines to add to the target's response (group stickiness)
        redirect_url: str = "",
    ) -> None:
        self.kind = kind
        self.target_group = target_group
        self.response = response
        self.priority = priority
        self.set_cookie = set_cookie
        self.redirect_url = redirect_url

    def __repr__(self) -> str:
        return f"RouteDecision({self.kind!r}, priority={self.priority})"


@dataclass(slots=True)
class RewrittenRequest:
    headers: list[tuple[bytes, bytes]]
    chunked: bool
    expect_continue: bool
    upgrade: bytes
    host: bytes
    close_after: bool  # desync mitigation: close both connections once this exchange is done
    trace: bytes  # the X-Amzn-Trace-Id the target gets (the access log's trace_id)


REPLACED = frozenset({b"x-forwarded-proto", b"x-forwarded-port"})
# Fields a client's Connection header may not nominate for removal (RFC 9110 7.6.1 lets a sender list any
# field): removing a framing field would send the body to the target unframed, where it runs as a second
# request on a pooled connection (request smuggling), and removing Host would change routing. lbd ignores
# these nominations in every desync mode; the fields are framed and routed as if not listed.
PROTECTED_FROM_CONNECTION = frozenset({b"content-length", b"transfer-encoding", b"host"})
# routing.http.drop_invalid_header_fields: valid names match [-A-Za-z0-9]+ (R9).
_VALID_NAME = frozenset(b"-ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


class HttpDispatcher:
    def __init__(
        self,
        runtime: HttpListenerRuntime,
        listener: Listener,
        target_groups: Mapping[str, TargetGroupRuntime],
    ) -> None:
        lb = runtime.load_balancer
        self.runtime = runtime
        self.table: RuleTable[TargetGroupRuntime] = RuleTable(
            listener, target_groups, CookieSealer(current_keys(), b"AWSALBTG")
        )
        self.listener_port = listener.port
        self.port = str(listener.port).encode()
        self.scheme = "https" if listener.protocol == "HTTPS" else "http"
        self.scheme_bytes = self.scheme.encode()
        self.default_port = listener.port == (443 if listener.protocol == "HTTPS" else 80)
        self.xff_mode = lb.xff_header_processing
        self.xff_client_port = lb.xff_client_port
        self.desync_mode = lb.desync_mitigation_mode
        self.preserve_host = lb.preserve_host_header
        self.drop_invalid = lb.drop_invalid_header_fields
        # The fast path (fastpath.py) only takes heads whose field names survive drop_invalid_header_fields.
        self.fast_pattern = fastpath.REQUEST_HEAD_ALNUM_NAMES if self.drop_invalid else fastpath.REQUEST_HEAD
        self._target_hosts: dict[bytes, bytes] = {}
        self._forwarded_fields = b"X-Forwarded-Proto: %b\r\nX-Forwarded-Port: %b\r\n" % (
            self.scheme_bytes,
            self.port,
        )
        default = self.table.default
        group = default.single if isinstance(default, Forward) else None
        # The common case, one forward and no rules, routes without looking at the request.
        self._fast = RouteDecision("forward", group, b"", 0) if group and not self.table.has_rules else None
        # With rules that all name a path, a request whose path passes none of them gets the default forward,
        # decided on the target's bytes before any view of the request is built (RuleTable.path_gate).
        self._gate: BytesMatcher | None = None
        self._unmatched: RouteDecision | None = None
        if group is not None and isinstance(default, Forward) and default.weights[0]:
            self._gate = self.table.path_gate
            self._unmatched = RouteDecision("forward", group, b"", 0)
        # The web ACL of the load balancer, set by lbd/http/firewall.py; None: no WAF, one pointer check.
        self.waf: Firewall | None = None

    # -- routing -----------------------------------------------------------------------------------------

    def route(self, exchange: Exchange) -> RouteDecision:
        if self._fast is not None:
            return self._fast
        gate = self._gate
        unmatched = self._unmatched
        if gate is not None and unmatched is not None and not gate.matches(request_path(exchange.url)):
            return unmatched
        # exchange.host is the Host the target gets: from an absolute-form target when there is one
        # (RFC 9112 3.2.2), so rules and target agree on the name.
        request = RequestView(
            exchange.method, exchange.url, exchange.headers, exchange.client.peer[0], host=exchange.host
        )
        priority, action = self.table.match(request)
        if isinstance(action, Forward):
            group, cookies = action.pick(exchange.headers)
            return RouteDecision("forward", group, b"", priority, cookies)
        if isinstance(action, Redirect):
            location = action.location(request, self.scheme, self.listener_port)
            response = action.response(location, not exchange.keep_alive)
            return RouteDecision("redirect", None, response, priority, redirect_url=location)
        return RouteDecision("fixed-response", None, action.response, priority)

    # -- header rewriting and request checks ----------------------------------------------------------------

    def rewrite_request(self, exchange: Exchange, peer: tuple[str, int]) -> RewrittenRequest:
        """Check the request (desync classes, ALB's limits) and build the headers the target gets."""
        requestline.check_version(exchange.version)
        if exchange.method == "TRACE":
            raise HttpError(405, "MethodNotAllowed")  # ALB refuses TRACE (R10)
        target = requestline.request_target(exchange.method, exchange.url)
        exchange.url = target.url  # origin-form (or "*") for the target, the rules and the access log
        host_at = -1
        field_finding: tuple[str, str] | None = None
        out: list[tuple[bytes, bytes]] = []
        transfer_encoding: bytes | None = None
        content_length: bytes | None = None
        expect_continue = False
        upgrade = b""
        host: bytes | None = None
        forwarded_for: list[bytes] = []
        trace = b""
        connection_listed: set[bytes] = set()
        for name, value in exchange.headers:
            lower = name.lower()
            if lower in HOP_BY_HOP:
                if lower == b"transfer-encoding":  # repeated fields form one list (RFC 9110 5.3)
                    te = transfer_encoding
                    transfer_encoding = value if te is None else te + b"," + value
                elif lower == b"connection":
                    connection_listed.update(t.strip().lower() for t in value.split(b","))
                elif lower == b"upgrade":
                    upgrade = value
                continue
            if field_finding is None or field_finding[0] != desync.AMBIGUOUS:
                field_finding = desync.worst(field_finding, desync.classify_field(name, value))
            if lower == b"content-length":
                content_length = value
            elif lower == b"host":
                if host is not None:
                    raise HttpError(400, "MultipleHostHeaders", desync=True)  # RFC 9112 3.2
                host = value.strip(b" \t")
                if host and not requestline.valid_host(host):
                    raise HttpError(400, "BadHost")  # RFC 9112 3.2: an invalid Host value is a 400
                host_at = len(out)
            elif lower == b"expect":
                if value.lower() == b"100-continue":
                    expect_continue = True
                    continue
            elif lower == b"x-forwarded-for":
                forwarded_for.append(value)
                continue
            elif lower == b"x-amzn-trace-id":
                trace = value
                continue
            elif lower in REPLACED or (self.drop_invalid and not _VALID_NAME.issuperset(name)):
                continue
            out.append((name, value))
        if host is None and exchange.version == "1.1":
            raise HttpError(400, "MissingHost")  # RFC 9112 3.2: a 1.1 request without Host is invalid
        host = self._request_host(exchange, target, host)
        sent_host = host if self.preserve_host else self._target_host(host)
        if host_at >= 0:
            out[host_at] = (out[host_at][0], sent_host)
        else:
            out.insert(0, (b"Host", sent_host))  # the target always gets HTTP/1.1, which needs a Host
        close_after = self._check_framing(exchange, content_length, transfer_encoding, field_finding)
        chunked = transfer_encoding is not None
        connection_listed -= PROTECTED_FROM_CONNECTION
        if connection_listed:
            out = [(n, v) for n, v in out if n.lower() not in connection_listed]
        if chunked and content_length is not None:
            out = [(n, v) for n, v in out if n.lower() != b"content-length"]  # TE wins (RFC 9112 6.3)
        if forwarded_for and sum(v.count(b",") + 1 for v in forwarded_for) > MAX_FORWARDED_FOR:
            raise HttpError(463, "TooManyForwardedFor")
        if self.xff_mode == "append":
            out.append((b"X-Forwarded-For", b", ".join([*forwarded_for, self._client_address(peer)])))
        elif self.xff_mode == "preserve" and forwarded_for:
            out.append((b"X-Forwarded-For", b", ".join(forwarded_for)))
        out.append((b"X-Forwarded-Proto", self.scheme_bytes))
        out.append((b"X-Forwarded-Port", self.port))
        trace = trace_header(trace)
        out.append((b"X-Amzn-Trace-Id", trace))
        return RewrittenRequest(out, chunked, expect_continue, upgrade, host, close_after, trace)

    def _request_host(self, exchange: Exchange, target: requestline.Target, host: bytes | None) -> bytes:
        """The Host a request is routed and forwarded by: an absolute-form target's authority replaces
        the Host field (RFC 9112 3.2.2); a request without one (HTTP/1.0, or an empty Host) is named by
        the address and port the client connected to, so the target still gets valid HTTP/1.1."""
        if target.authority is not None:
            return target.authority
        if host:
            return host
        transport = exchange.client.transport
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        return requestline.listener_authority(sockname, self.listener_port)

    def fast_head(self, exchange: Exchange, block: bytes, host: bytes, host_at: int) -> tuple[bytes, bytes]:
        """``rewrite_request`` for a head the fast path took, as (head for the target, trace id).

        fastpath.simple_request guarantees no framing, hop-by-hop, X-Forwarded-* or trace fields and one
        Host, so the client's field lines go through as one slice and lbd's fields follow them, in the order
        ``rewrite_request`` gives.
        """
        if not self.preserve_host:
            target_host = self._target_hosts.get(host)
            if target_host is None:
                if len(self._target_hosts) >= 1024:
                    self._target_hosts.clear()  # a bound, not an LRU: clients rarely use many names
                target_host = self._target_hosts[host] = self._target_host(host)
            if target_host != host:
                # The value replaced where it stands (host_at, from simple_request); the rest as sent.
                block = b"".join((block[:host_at], target_host, block[host_at + len(host) :]))
        client = exchange.client
        cached = client.fast_forwarded
        if cached is not None and cached[0] is self:
            forwarded = cached[1]
        else:
            # The same for every request of a connection (the peer does not change); kept on the connection.
            forwarded = self._forwarded_fields
            if self.xff_mode == "append":
                forwarded = b"X-Forwarded-For: %b\r\n%b" % (self._client_address(client.peer), forwarded)
            forwarded += b"X-Amzn-Trace-Id: "
            client.fast_forwarded = (self, forwarded)
        trace = new_trace_root()
        head = b"".join(
            (
                _METHOD_BYTES[exchange.method],
                exchange.url,
                b" HTTP/1.1\r\n",
                block,
                forwarded,
                trace,
                b"\r\n\r\n",
            )
        )
        return head, trace

    def _client_address(self, peer: tuple[str, int]) -> bytes:
        client = peer[0].encode()
        if self.xff_client_port:
            client = (b"[%b]:%d" if b":" in client else b"%b:%d") % (client, peer[1])
        return client

    def _target_host(self, value: bytes) -> bytes:
        # Without preserve_host_header ALB lowercases Host and adds a non-default listener port (R19).
        value = value.lower()
        if not self.default_port and not value.endswith(b"]") and b":" not in value.rpartition(b"]")[2]:
            value += b":" + self.port
        return value

    def _check_framing(
        self,
        exchange: Exchange,
        content_length: bytes | None,
        transfer_encoding: bytes | None,
        field_finding: tuple[str, str] | None = None,
    ) -> bool:
        """Apply desync mitigation to a parsed request; True when both connections close afterwards."""
        if transfer_encoding is not None:
            desync.check_transfer_encoding(transfer_encoding)
        # Normalised by the connection before parsing (duplicate Content-Length, obs-fold): ambiguous.
        replayed = (desync.AMBIGUOUS, exchange.desync_reason) if exchange.desync_reason else None
        framing = desync.classify_framing(
            exchange.method, content_length, transfer_encoding, exchange.version
        )
        found = desync.worst(framing, replayed, field_finding)
        if found is None:
            return False
        severity, reason = found
        exchange.classification, exchange.classification_reason = severity, reason
        verdict = desync.verdict(self.desync_mode, severity)
        if verdict is desync.Verdict.BLOCK:
            raise HttpError(400, reason, desync=True)
        outcome = "forwarded" if verdict is desync.Verdict.ALLOW else "forwarded, connections closed after"
        exchange.client.count_non_compliant(reason, f"{severity}; {outcome} ({self.desync_mode} mode)")
        return verdict is desync.Verdict.CLOSE


def trace_header(existing: bytes) -> bytes:
    """X-Amzn-Trace-Id (R8): a new Root when absent; Self= added or updated when a Root is present; custom
    fields kept."""
    if not existing or len(existing) > MAX_TRACE_HEADER:
        return new_trace_root()
    stamp = b"1-%08x-%024x" % (int(time.time()), getrandbits(96))
    fields = [f.strip() for f in existing.split(b";") if f.strip()]
    if not any(f.startswith(b"Root=") for f in fields):
        return b";".join([b"Root=" + stamp, *fields])
    kept = [f for f in fields if not f.startswith(b"Self=")]
    return b";".join([b"Self=" + stamp, *kept])


class _TraceRoots:
    """New X-Amzn-Trace-Id roots, cheaply: the epoch part is formatted once a second, and the random part
    is cut from a block of random hex digits made 128 ids at a time (one random draw and one hex conversion
    instead of one each per request)."""

    def __init__(self) -> None:
        self.second = -1
        self.prefix = b""
        self.digits = b""
        self.at = 0

    def new(self) -> bytes:
        second = int(time.time())
        if second != self.second:
            self.second = second
            self.prefix = b"Root=1-%08x-" % second
        at = self.at
        if at + 24 > len(self.digits):
            self.digits = randbytes(12 * 128).hex().encode()
            at = 0
        self.at = at + 24
        return self.prefix + self.digits[at : at + 24]


_trace_roots = _TraceRoots()
_METHOD_BYTES = {m: m.encode() + b" " for m in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}


def new_trace_root() -> bytes:
    """A new X-Amzn-Trace-Id: Root=1-<epoch seconds, hex>-<96 random bits, hex> (R8)."""
    return _trace_roots.new()
