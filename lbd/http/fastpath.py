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

# The head is scanned byte by byte. Compiled (fastpath.pxd types ``p`` as a C pointer into the bytes object
# and the indices as C integers) this is a few nanoseconds per byte, like llhttp; interpreted, the same code
# runs as ordinary Python, only slower.


def _table(allowed: bytes) -> bytes:
    return bytes(1 if byte in allowed else 0 for byte in range(256))


_ALPHA = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# RFC 9110 5.6.2 tchar: what a method and a field name are made of.
TCHAR = _table(b"!#$%&'*+-.^_`|~0123456789" + _ALPHA)
# drop_invalid_header_fields: names of [-A-Za-z0-9] only; others take the full path, which drops them.
ALNUM_NAME = _table(b"-0123456789" + _ALPHA)
# RFC 9110 5.5 field-vchar, SP and HTAB: what a field value (with the whitespace around it) may hold; no
# control characters, no obs-fold (a CR or LF ends the line).
VALUE = _table(b"\t " + bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100)))
# A request's field values on the fast path: no obs-text either (desync mitigation classifies non-ASCII
# values as acceptable, so the full path must see them).
REQUEST_VALUE = _table(b"\t " + bytes(range(0x21, 0x7F)))
# RFC 3986 characters of an origin-form target, as llhttp takes them: visible ASCII, without "#" (a
# fragment is never sent: the full path refuses it).
TARGET = _table(bytes(c for c in range(0x21, 0x7F) if c != 0x23))

# A Host name the fast path takes as it is.
HOST_NAME = _table(b"-.0123456789" + _ALPHA)

# Flags for ``simple_request``'s ``names``: which field names the fast path may forward as they are.
REQUEST_HEAD = 0
REQUEST_HEAD_ALNUM_NAMES = 1

FAST_REQUEST_MAX = 8 * 1024  # larger heads go to the full parser, which enforces ALB's limits (R6)

# Methods lbd itself treats specially (TRACE is refused, CONNECT and HEAD change framing) take the parser.
_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}

# Request fields the fast path does not handle: framing, hop-by-hop fields, upgrades, Expect, and the fields
# lbd rewrites (X-Forwarded-*, X-Amzn-Trace-Id). Lowercase; compared case-insensitively.
_REQUEST_SPECIAL = (
    b"content-length",
    b"content_length",  # underscore lookalikes of framing fields: ambiguous (desync mitigation)
    b"transfer-encoding",
    b"transfer_encoding",
    b"connection",
    b"upgrade",
    b"expect",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-port",
    b"x-amzn-trace-id",
    b"keep-alive",
    b"te",
    b"trailer",
    b"proxy-connection",
)
_SPECIAL_LENGTHS = frozenset(len(name) for name in _REQUEST_SPECIAL)


def _name_is(data: bytes, at: int, size: int, lower: bytes) -> bool:
    """data[at:at+size] equals the lowercase token ``lower``, ignoring ASCII case."""
    if size != len(lower):
        return False
    i = 0
    while i < size:
        c = data[at + i]
        if 65 <= c <= 90:  # A-Z: ASCII case folding only (RFC 9110 5.1: names are case-insensitive)
            c += 32
        if c != lower[i]:
            return False
        i += 1
    return True


def _special_request_field(data: bytes, at: int, size: int) -> bool:
    if size not in _SPECIAL_LENGTHS:
        return False
    for name in _REQUEST_SPECIAL:  # noqa: SIM110 (a loop, not a generator: compiled, it is C)
        if _name_is(data, at, size, name):
            return True
    return False


def _decimal(data: bytes, at: int, end: int) -> int:
    """data[at:end] as a decimal number when it is 1 or more ASCII digits, else -1 (callers bound the
    length, so it cannot overflow)."""
    if at >= end:
        return -1
    p = data
    value = 0
    while at < end:
        digit = p[at] - 48
        if digit < 0 or digit > 9:
            return -1
        value = value * 10 + digit
        at += 1
    return value


def _plain_host(data: bytes, at: int, end: int) -> bool:
    """A Host value the fast path may forward: a name of letters, digits, "." and "-", then an optional
    ":" and port of at most 65535, or a valid IP literal. Every such value is a valid uri-host [":" port]
    (RFC 9110 7.2); the rest (percent-encoding, whitespace, anything invalid) takes the full path, which
    checks the whole grammar (lbd/http/requestline.py)."""
    p = data
    if end > at and p[at] == 91:  # "[": an IP literal, rare enough for the whole grammar check
        return valid_host(data[at:end]) and p[end - 1] != 32 and p[end - 1] != 9
    name = HOST_NAME
    i = at
    while i < end and name[p[i]]:
        i += 1
    if i == at:
        return False
    if i == end:
        return True
    if p[i] != 58 or end - i - 1 > 5:  # ":" and 1 to 5 digits
        return False
    port = _decimal(data, i + 1, end)
    return 0 <= port <= 65535


def simple_request(data: bytes, names: int) -> tuple[str, bytes, str, bytes, bytes, int, bool] | None:
    """``data`` as (method, url, version, header block, Host value, where the Host value starts in the
    block, keep-alive) when it is exactly one complete, bodiless, compliant request head with one Host field
    and nothing a proxy must rewrite but a Connection field of ``close`` or ``keep-alive``; else None.

    The header block is the field lines as sent, each ending in CRLF, without the final CRLF and without the
    Connection line. ``names`` is REQUEST_HEAD, or REQUEST_HEAD_ALNUM_NAMES where only [-A-Za-z0-9] names
    may pass as they are.
    """
    n = len(data)
    if n > FAST_REQUEST_MAX or n < 4 or data[n - 4 : n] != b"\r\n\r\n":
        return None
    p = data
    tchar = TCHAR
    name_table = ALNUM_NAME if names else TCHAR
    value_table = REQUEST_VALUE
    # Request line (RFC 9112 3): method SP origin-form SP "HTTP/1." DIGIT CRLF.
    i = 0
    while i < n and tchar[p[i]]:
        i += 1
    if i == 0 or i >= n or p[i] != 32:
        return None
    method = _METHODS.get(data[:i])
    if method is None:
        return None
    i += 1
    url_at = i
    if i >= n or p[i] != 47:  # "/": origin-form only (RFC 9112 3.2.1); the rest takes the full path
        return None
    target = TARGET
    while i < n and target[p[i]]:
        i += 1
    url_end = i
    if i + 11 > n or data[i : i + 8] != b" HTTP/1." or p[i + 9] != 13 or p[i + 10] != 10:
        return None
    minor = p[i + 8]
    if minor != 48 and minor != 49:
        return None
    i += 11
    block_at = i
    host_at = -1
    host_end = 0
    cut_at = -1  # the Connection line, when there is one
    cut_end = 0
    close = False
    keep_alive_option = False
    # Field lines (RFC 9112 5): token ":" OWS value OWS CRLF, until the empty line.
    while True:
        if i + 1 >= n:
            return None
        if p[i] == 13:
            if p[i + 1] != 10 or i + 2 != n:
                return None  # a bare CR, or bytes after the head (pipelining): the full path
            break
        name_at = i
        while i < n and name_table[p[i]]:
            i += 1
        size = i - name_at
        if size == 0 or i >= n or p[i] != 58:  # ":" right after a non-empty name
            return None
        connection = size == 10 and _name_is(data, name_at, 10, b"connection")
        if not connection and _special_request_field(data, name_at, size):
            return None
        i += 1
        value_at = i
        while i < n and value_table[p[i]]:
            i += 1
        if i + 1 >= n or p[i] != 13 or p[i + 1] != 10:
            return None
        if connection:
            # Connection: close or keep-alive (the connection-per-request clients), and nothing else: other
            # options name fields to drop (the full path). The line is hop-by-hop: not forwarded.
            if cut_at >= 0:
                return None
            options = _connection_options(data, value_at, i)
            if options < 0:
                return None
            close = bool(options & 2)
            keep_alive_option = bool(options & 1)
            cut_at = name_at
            cut_end = i + 2
        elif size == 4 and _name_is(data, name_at, 4, b"host"):
            if host_at >= 0:
                return None  # two Hosts: 400 on the full path (RFC 9112 3.2)
            while value_at < i and (p[value_at] == 32 or p[value_at] == 9):
                value_at += 1
            host_at = value_at
            host_end = i  # trailing whitespace stays, as llhttp reports it
        i += 2
    if host_at < 0 or not _plain_host(data, host_at, host_end):
        return None  # empty, unusual or invalid: the full path names, checks or refuses it (RFC 9112 3.2)
    host = data[host_at:host_end]
    # RFC 9112 9.3: HTTP/1.1 is persistent unless "close"; HTTP/1.0 only with "keep-alive".
    keep_alive = not close and (minor == 49 or keep_alive_option)
    if cut_at < 0:
        block = data[block_at : n - 2]
    else:
        block = data[block_at:cut_at] + data[cut_end : n - 2]
        if host_at > cut_at:
            host_at -= cut_end - cut_at
    return (
        method,
        data[url_at:url_end],
        "1.1" if minor == 49 else "1.0",
        block,
        host,
        host_at - block_at,
        keep_alive,
    )


# Response fields the fast path acts on: (lowercase name, what to do).
_KEEP = 0
_LENGTH = 1
_CONNECTION = 2
_CUT = 3  # Keep-Alive, Proxy-Connection: hop-by-hop (RFC 9110 7.6.1), dropped
_DECLINE = 4  # Transfer-Encoding, Upgrade, TE, Trailer: the full path
_RESPONSE_FIELDS = (
    (b"content-length", _LENGTH),
    (b"connection", _CONNECTION),
    (b"keep-alive", _CUT),
    (b"proxy-connection", _CUT),
    (b"transfer-encoding", _DECLINE),
    (b"upgrade", _DECLINE),
    (b"te", _DECLINE),
    (b"trailer", _DECLINE),
)
_RESPONSE_LENGTHS = frozenset(len(name) for name, _ in _RESPONSE_FIELDS)
_MAX_DIGITS = 18  # longer Content-Length values take the full path (no overflow to think about here)


def _response_field(data: bytes, at: int, size: int) -> int:
    if size not in _RESPONSE_LENGTHS:
        return _KEEP
    for name, kind in _RESPONSE_FIELDS:
        if _name_is(data, at, size, name):
            return kind
    return _KEEP


def _connection_options(data: bytes, at: int, end: int) -> int:
    """The options of a Connection value: 1 keep-alive, 2 close (bits), or -1 when it names anything else
    (fields to remove: the full path does that)."""
    found = 0
    p = data
    while True:
        while at < end and (p[at] == 32 or p[at] == 9):
            at += 1
        option_at = at
        while at < end and p[at] != 44:  # ","
            at += 1
        option_end = at
        while option_end > option_at and (p[option_end - 1] == 32 or p[option_end - 1] == 9):
            option_end -= 1
        size = option_end - option_at
        if _name_is(data, option_at, size, b"keep-alive"):
            found |= 1
        elif _name_is(data, option_at, size, b"close"):
            found |= 2
        else:
            return -1
        if at >= end:
            return found
        at += 1


def simple_response(data: bytes) -> tuple[int, bytes, int, bool, int] | None:
    """The start of a target's response as (status, head for the client without its final CRLF, content
    length, target keeps the connection, body offset in ``data``) when its head is complete in ``data``,
    framed by one Content-Length, and carries no field the fast path cannot forward; else None.

    The head keeps the target's field lines in order, without Connection, Keep-Alive and
    Proxy-Connection. Interim, 204 and 304 responses, chunked or close-delimited bodies, upgrades and
    Connection options naming other fields take the full path.
    """
    n = len(data)
    p = data
    if n > MAX_RESPONSE_HEAD:
        n = MAX_RESPONSE_HEAD  # a head must end within ALB's 32K; past that the full path answers 502
    # Status line: "HTTP/1." DIGIT SP 3DIGIT SP reason CRLF (lenient on the reason, as clients are).
    if n < 17 or data[:7] != b"HTTP/1.":
        return None
    minor = p[7]
    if (minor != 48 and minor != 49) or p[8] != 32 or p[12] != 32:
        return None
    d0 = p[9] - 48
    d1 = p[10] - 48
    d2 = p[11] - 48
    if d0 < 2 or d0 > 5 or d1 < 0 or d1 > 9 or d2 < 0 or d2 > 9:
        return None
    status = d0 * 100 + d1 * 10 + d2
    if status == 204 or status == 304:
        return None
    value_table = VALUE
    tchar = TCHAR
    i = 13
    while i < n and value_table[p[i]]:
        i += 1
    reason_end = i
    if i + 1 >= n or p[i] != 13 or p[i + 1] != 10:
        return None
    i += 2
    block_at = i
    keep_alive = minor == 49
    length = -1
    # Spans of the head to send as they are; a cut field ends one and starts the next.
    spans: list[int] = []
    kept_at = block_at
    while True:
        if i + 1 >= n:
            return None
        if p[i] == 13:
            if p[i + 1] != 10:
                return None
            break
        line_at = i
        while i < n and tchar[p[i]]:
            i += 1
        size = i - line_at
        if size == 0 or i >= n or p[i] != 58:
            return None
        kind = _response_field(data, line_at, size)
        i += 1
        value_at = i
        while i < n and value_table[p[i]]:
            i += 1
        if i + 1 >= n or p[i] != 13 or p[i + 1] != 10:
            return None
        value_end = i
        i += 2
        if kind == _KEEP:
            continue
        if kind == _DECLINE:
            return None
        if kind == _LENGTH:
            if length >= 0:
                return None  # repeated: the full parser refuses it (502)
            while value_at < value_end and (p[value_at] == 32 or p[value_at] == 9):
                value_at += 1
            while value_end > value_at and (p[value_end - 1] == 32 or p[value_end - 1] == 9):
                value_end -= 1
            if value_end - value_at > _MAX_DIGITS:
                return None
            length = _decimal(data, value_at, value_end)
            if length < 0:
                return None
            continue
        if kind == _CONNECTION:
            options = _connection_options(data, value_at, value_end)
            if options < 0:
                return None
            keep_alive = not (options & 2) and (keep_alive or bool(options & 1))
        # Connection, Keep-Alive, Proxy-Connection: not forwarded.
        if line_at > kept_at:
            spans.append(kept_at)
            spans.append(line_at)
        kept_at = i
    if length < 0:
        return None
    body_at = i + 2
    k = 0
    if minor == 49 and reason_end > 13:
        if not spans and kept_at == block_at:
            return status, data[:i], length, keep_alive, body_at  # nothing to cut: one slice
        if spans and spans[0] == block_at:
            pieces = [data[: spans[1]]]  # the status line and the first kept lines in one slice
            k = 2
        else:
            pieces = [data[:block_at]]
    else:
        # HTTP/1.0 or an empty reason phrase: lbd speaks HTTP/1.1 and sends the standard phrase.
        phrase = data[13:reason_end] or standard_phrase(status)
        pieces = [b"HTTP/1.1 %d %b\r\n" % (status, phrase)]
    while k < len(spans):
        pieces.append(data[spans[k] : spans[k + 1]])
        k += 2
    if kept_at < i:
        pieces.append(data[kept_at:i])
    return status, b"".join(pieces), length, keep_alive, body_at


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
