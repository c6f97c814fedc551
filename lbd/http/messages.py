"""Message framing for the proxy: the request head sent to a target, the response head sent to a client.

Framing follows RFC 9112 section 6: a message body is delimited by Transfer-Encoding: chunked, else by
Content-Length, else (responses only) by the connection closing. lbd re-frames rather than copies framing
headers, so what a target or client sees is always unambiguous, whatever the other side sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lbd.routing.phrases import phrase

if TYPE_CHECKING:
    from lbd.http.exchange import Exchange
    from lbd.runtime import HttpListenerRuntime


# RFC 9110 7.6.1: connection-specific fields a proxy must not forward. Transfer-Encoding and
# Content-Length are handled by re-framing.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)


# ALB answers 502 when a target's response headers are over 32K (R6, R10); lbd counts the status line too.
MAX_RESPONSE_HEAD = 32 * 1024


def response_head_size(reason: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """The size of a parsed response head as sent: status line, "name: value" lines, CRLFs."""
    return 17 + len(reason) + sum(len(name) + len(value) + 4 for name, value in headers)


# Fields a response loses on the way to the client: hop-by-hop ones, and Content-Length (re-framed).
_FRAMING = HOP_BY_HOP | {b"content-length"}
# Connection options that name no other field (nginx sends "Connection: keep-alive" on every response).
_NOT_FORWARDED = HOP_BY_HOP | {b"close"}


@dataclass(slots=True)
class RequestHead:
    data: bytes  # request line and headers, ready to write to the target
    chunked: bool
    expect_continue: bool
    host: bytes
    close_after: bool
    trace: bytes


@dataclass(slots=True)
class ResponseFraming:
    headers: list[tuple[bytes, bytes]]
    chunked: bool  # lbd sends the body chunked to the client
    close_delimited: bool  # the body ends when the connection closes (HTTP/1.0 client, no length)
    target_close_delimited: bool = False  # the target ends the body by closing (RFC 9112 6.3 rule 8)


def prepare_request(exchange: Exchange, listener: HttpListenerRuntime) -> RequestHead:
    """Check framing (desync mitigation), rewrite headers, and build the head sent to the target."""
    client = exchange.client
    rewritten = listener.rewrite_request(exchange, client.peer)
    out = [exchange.method.encode(), b" ", exchange.url, b" HTTP/1.1\r\n"]
    for name, value in rewritten.headers:
        out += (name, b": ", value, b"\r\n")
    if rewritten.chunked:
        out.append(b"Transfer-Encoding: chunked\r\n")
    if exchange.upgrade and rewritten.upgrade.strip().lower() != b"h2c":
        # Upgrade: h2c (RFC 7540 3.2, removed by RFC 9113) is not honoured: the request is served as
        # HTTP/1.1 and the target never sees an offer to switch protocols on lbd's connection.
        out += (b"Connection: upgrade\r\nUpgrade: ", rewritten.upgrade, b"\r\n")
    out.append(b"\r\n")
    return RequestHead(
        b"".join(out),
        rewritten.chunked,
        rewritten.expect_continue,
        rewritten.host,
        rewritten.close_after,
        rewritten.trace,
    )


def has_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        lower = name.lower()
        if lower == b"transfer-encoding" or (lower == b"content-length" and value.strip() != b"0"):
            return True
    return False


def response_framing(
    status: int, headers: list[tuple[bytes, bytes]], bodiless: bool, client_version: str
) -> ResponseFraming:
    """Drop hop-by-hop fields and decide how the body is delimited towards the client."""
    if status == 101:
        # Switching Protocols: Connection/Upgrade are the point of the message (RFC 9110 15.2.2).
        return ResponseFraming(headers, False, False)
    kept: list[tuple[bytes, bytes]] = []
    listed: set[bytes] | None = None
    length: bytes | None = None
    chunked = False
    for name, value in headers:
        lower = name.lower()
        if lower not in _FRAMING:
            kept.append((name, value))
        elif lower == b"content-length":
            length = value
        elif lower == b"transfer-encoding":
            chunked = True
        elif lower == b"connection":
            tokens = {token.strip().lower() for token in value.split(b",")}
            listed = tokens if listed is None else listed | tokens
    if listed is not None and not listed <= _NOT_FORWARDED:
        kept = [(n, v) for n, v in kept if n.lower() not in listed]
    if bodiless:
        if length is not None:
            kept.append((b"Content-Length", length))
        return ResponseFraming(kept, False, False)
    if not chunked and length is not None:
        kept.append((b"Content-Length", length))
        return ResponseFraming(kept, False, False)
    until_close = not chunked
    if client_version == "1.1":
        return ResponseFraming(kept, True, False, until_close)
    return ResponseFraming(kept, False, True, until_close)


def response_head(
    status: int,
    reason: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    *,
    chunked: bool,
    close: bool,
    interim: bool = False,
    extra: bytes = b"",
) -> bytes:
    out = [b"HTTP/1.1 %d %b\r\n" % (status, reason or standard_phrase(status))]
    for name, value in headers:
        out += (name, b": ", value, b"\r\n")
    if not interim:
        if chunked:
            out.append(b"Transfer-Encoding: chunked\r\n")
        if status == 101:
            pass  # Connection: upgrade and Upgrade were kept from the target's response
        elif close:
            out.append(b"Connection: close\r\n")
        if extra:
            out.append(extra)
    out.append(b"\r\n")
    return b"".join(out)


_phrases: dict[int, bytes] = {}


def standard_phrase(status: int) -> bytes:
    # A target may send an empty reason phrase (RFC 9112 4 allows it); lbd sends the standard one.
    text = _phrases.get(status)
    if text is None:
        text = _phrases[status] = phrase(status).encode()
    return text
