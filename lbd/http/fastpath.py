"""The common case of HTTP/1.1 proxying, recognised whole by a few C-level scans instead of parser callbacks.

Most requests a load balancer sees are a complete, bodiless, compliant head in one read; most responses are
a complete head with a Content-Length. For those, lbd does not need llhttp's ~17 Python callbacks per
exchange: one regular expression validates the whole head (RFC 9112 grammar, strict), a handful of
``bytes.find`` calls on its lowercased copy find the few fields a proxy must act on, and the head is
forwarded as one slice with lbd's own fields added (uvicorn's httptools protocol and HAProxy's header
index make the same trade: look only at what must be looked at).

Everything else declines the fast path and goes to the full parser, which then sees exactly the bytes it
would have seen: requests with a body, framing fields, hop-by-hop fields, upgrades, anything that does not
match the strict grammar (so every malformed or ambiguous request is still classified by desync
mitigation), heads split across reads, pipelined requests, and responses without a Content-Length.
The fast path is a subset of the full one: for the requests it accepts, the target gets the same head,
up to field order. tests/test_http_fastpath.py checks that equivalence.

Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import overload

from lbd.http.messages import MAX_RESPONSE_HEAD, standard_phrase
from lbd.http.requestline import valid_host

# RFC 9110 5.6.2 token and RFC 9112 field-line grammar, with no obs-fold and no control characters.
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# drop_invalid_header_fields: names of [-A-Za-z0-9] only; others take the full path, which drops them.
_ALNUM_NAME = rb"[-0-9A-Za-z]+"
_VALUE = rb"(?:[\x21-\x7e](?:[\t \x21-\x7e]*[\x21-\x7e])?)?"  # obs-text: the full path classifies it


def _request_head(name: bytes) -> re.Pattern[bytes]:
    field = rb"%s:[ \t]*%s[ \t]*\r\n" % (name, _VALUE)
    # origin-form targets only (RFC 9112 3.2.1), without "#"; absolute-form and the rest take the full path.
    return re.compile(rb"(%s) (/[\x21\x22\x24-\x7e]*) HTTP/1\.([01])\r\n((?:%s)*)\r\n" % (_TOKEN, field))


REQUEST_HEAD = _request_head(_TOKEN)
REQUEST_HEAD_ALNUM_NAMES = _request_head(_ALNUM_NAME)

# Request fields the fast path does not handle (searched in the lowercased head; "\n" anchors a line start).
_REQUEST_SPECIAL = re.compile(
    rb"\n(?:content[-_]length|transfer[-_]encoding|connection|upgrade|expect|x-forwarded-(?:for|proto|port)"
    rb"|x-amzn-trace-id|keep-alive|te|trailer|proxy-connection|host:.*\nhost):",
    re.S,
)
FAST_REQUEST_MAX = 8 * 1024  # larger heads go to the full parser, which enforces ALB's limits (R6)

# Methods lbd itself treats specially (TRACE is refused, CONNECT and HEAD change framing).
_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}


def simple_request(data: bytes, pattern: re.Pattern[bytes]) -> tuple[str, bytes, str, bytes, bytes] | None:
    """``data`` as (method, url, version, header block, Host value) when it is exactly one complete,
    bodiless, compliant request head with one Host field and nothing a proxy must rewrite; else None.

    The header block is the field lines as sent, each ending in CRLF, without the final CRLF.
    """
    if len(data) > FAST_REQUEST_MAX or data[-4:] != b"\r\n\r\n":
        return None
    lowered = data.lower()
    if _REQUEST_SPECIAL.search(lowered) is not None:
        return None  # checked first: the cheapest way to decline (a body, Connection: close ...)
    match = pattern.fullmatch(data)
    if match is None:
        return None
    method = _METHODS.get(match[1])
    if method is None:
        return None
    at = lowered.find(b"\nhost:")
    if at < 0:
        return None
    end = data.index(b"\r", at)
    host = data[at + 6 : end].lstrip(b" \t")  # trailing whitespace stays, as llhttp reports it
    if not valid_host(host):
        return None  # empty or invalid: the full path names or refuses it (RFC 9112 3.2)
    return method, match[2], "1.1" if match[3] == b"1" else "1.0", match[4], host


_TEXT = rb"[\t \x21-\x7e\x80-\xff]*"
# A response head: status line and field lines (lenient on values, as clients are; strict on names).
_RESPONSE_HEAD = re.compile(
    rb"HTTP/1\.([01]) ([2-5][0-9][0-9]) (%s)\r\n((?:%s:%s\r\n)*)\r\n" % (_TEXT, _TOKEN, _TEXT)
)
# The response fields the fast path looks at (in the lowercased head, where "\n" anchors a line start):
# framing (RFC 9112 6), hop-by-hop fields to remove (RFC 9110 7.6.1), and upgrades.
_RESPONSE_FIELDS = re.compile(
    rb"\n(content-length|connection|keep-alive|proxy-connection|transfer-encoding|upgrade|te|trailer):"
    rb"[ \t]*([^\r]*)"
)
# Connection options that name no other field; any other option names fields to remove (the full path).
_CONNECTION_OPTIONS = frozenset({b"keep-alive", b"close"})


def simple_response(data: bytes) -> tuple[int, bytes, int, bool, int] | None:
    """The start of a target's response as (status, head for the client without its final CRLF, content
    length, target keeps the connection, body offset in ``data``) when its head is complete in ``data``,
    framed by one Content-Length, and carries no field the fast path cannot forward; else None.

    The head keeps the target's field lines in order, without Connection, Keep-Alive and
    Proxy-Connection. Interim, 204 and 304 responses, chunked or close-delimited bodies, upgrades and
    Connection options naming other fields take the full path.
    """
    match = _RESPONSE_HEAD.match(data)
    if match is None or match.end() > MAX_RESPONSE_HEAD:
        return None  # over ALB's 32K: the full path answers 502
    version, code, reason, _ = match.groups()
    status = int(code)
    if status == 204 or status == 304:
        return None
    block_at = match.start(4) - 1  # the status line's "\n"
    body_at = match.end()
    length = -1
    keep_alive = version == b"1"
    cuts: list[tuple[int, int]] = []
    for field in _RESPONSE_FIELDS.finditer(data[block_at:body_at].lower()):
        name, value = field.groups()
        if name == b"content-length":
            value = value.rstrip(b" \t")
            if length >= 0 or not value.isdigit():
                return None  # repeated or invalid: the full parser refuses it (502)
            length = int(value)
            continue
        if name == b"connection":
            options = {option.strip() for option in value.split(b",")}
            if not options <= _CONNECTION_OPTIONS:
                return None
            keep_alive = b"close" not in options and (keep_alive or b"keep-alive" in options)
        elif name != b"keep-alive" and name != b"proxy-connection":
            return None
        cuts.append(field.span())  # "\n<line>" without its CRLF: cut with the CR before it, keep its LF
    if length < 0:
        return None
    if version == b"1" and reason:
        head = data[: body_at - 2]
    else:
        status_line = b"HTTP/1.1 %d %b" % (status, reason or standard_phrase(status))
        head = status_line + data[block_at - 1 : body_at - 2]
        block_at += len(status_line) + 1 - block_at
        data = head + b"\r\n"
    if cuts:
        pieces = []
        start = 0
        for cut_at, cut_end in cuts:
            pieces.append(data[start : block_at + cut_at - 1])
            start = block_at + cut_end
        pieces.append(head[start:])
        head = b"".join(pieces)
    return status, head, length, keep_alive, body_at


_FIELD_LINE = re.compile(rb"([^:\r\n]+):[ \t]*([^\r\n]*)\r\n")


class FieldLines(Sequence[tuple[bytes, bytes]]):
    """The fields of a header block the fast path took, parsed only if something looks at them (a host or
    header rule, a stickiness cookie, the access log's user agent); most requests never need them."""

    __slots__ = ("_block", "_fields")

    def __init__(self, block: bytes) -> None:
        self._block = block
        self._fields: list[tuple[bytes, bytes]] | None = None

    def _parsed(self) -> list[tuple[bytes, bytes]]:
        if self._fields is None:
            self._fields = field_lines(self._block)
        return self._fields

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(self._parsed())

    def __len__(self) -> int:
        return len(self._parsed())

    @overload
    def __getitem__(self, index: int) -> tuple[bytes, bytes]: ...
    @overload
    def __getitem__(self, index: slice) -> list[tuple[bytes, bytes]]: ...
    def __getitem__(self, index: int | slice) -> tuple[bytes, bytes] | list[tuple[bytes, bytes]]:
        return self._parsed()[index]


def field_lines(block: bytes) -> list[tuple[bytes, bytes]]:
    """The (name, value) pairs of a header block ``simple_request`` accepted, as llhttp reports them: without
    the whitespace before the value, with any after it."""
    return _FIELD_LINE.findall(block)
