"""A cache hit answered from one read: the request head scanned on its bytes, the behavior, the cache key,
the lookup, and the entry's stored head written with the per-response fields patched in.

Most requests an edge sees are a complete, bodiless GET or HEAD in one read for an object the cache holds
fresh. For those, lbd does not need httptools' callbacks, the request and outcome records or a response
head built field by field: ``scan_request`` checks the head against the RFC 9112 grammar (strictly) and
collects its fields, the key is made by the same function as the full path's (lbd/cache/edgekey.py), and
the response is the entry's ``hit_head`` (its status line, fields, Via, Content-Length and Accept-Ranges,
serialised when it was stored) with ``Age``, ``X-Cache``, ``X-Amz-Cf-Pop``, ``X-Amz-Cf-Id`` added.

Everything else declines before anything has changed and takes the full path (handler.py), which then
sees exactly the same bytes: heads split across reads or pipelined, bodies and their framing fields,
Expect, upgrades, conditional and range requests, non-ASCII values, a distribution with a web ACL, a method
the behavior does not allow, caching disabled, stale entries and misses. With an access log, the line is
the full path's (server.EdgeClientSide.log_hit). For the
requests it takes, the viewer gets the same response as from the full path (tests/test_edge_hit.py).

Pure functions over the connection's state, no I/O of their own but the transport write.
"""

from __future__ import annotations

import binascii
import os
import time
from typing import TYPE_CHECKING

from lbd.cache.edgekey import primary_key, vary_key
from lbd.edge.behaviors import behavior_index

if TYPE_CHECKING:
    from lbd.cache.engine import ResponseCache
    from lbd.edge.runtime import DistributionRuntime
    from lbd.edge.server import EdgeClientSide
    from lbd.edge.store import DistributionCache, EdgeStats


def _table(allowed: bytes) -> bytes:
    return bytes(1 if byte in allowed else 0 for byte in range(256))


_ALPHA = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# RFC 9110 5.6.2 tchar: what a field name is made of.
TCHAR = _table(b"!#$%&'*+-.^_`|~0123456789" + _ALPHA)
# RFC 9110 5.5 field-vchar, SP and HTAB, ASCII only (obs-text takes the full path, as on the ALB's).
VALUE = _table(b"\t " + bytes(range(0x21, 0x7F)))
# RFC 3986 characters of an origin-form target as llhttp takes them: visible ASCII, no "#".
TARGET = _table(bytes(c for c in range(0x21, 0x7F) if c != 0x23))

MAX_SCANNED = 8 * 1024  # larger heads take the full path, which enforces CloudFront's limits (server.py)

# Request fields that need the full path (lower case): framing and bodies, interim answers, upgrades, and
# the conditional and range fields that make a hit look at the stored fields (304, 206, 416).
DECLINED = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "expect",
        "upgrade",
        "range",
        "if-range",
        "if-none-match",
        "if-modified-since",
    }
)

_RESPONSE_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")


def _lower_is(data: bytes, at: int, end: int, lower: bytes) -> bool:
    """data[at:end] equals the lower-case token ``lower``, ignoring ASCII case."""
    if end - at != len(lower):
        return False
    p = data
    i = 0
    while at < end:
        c = p[at]
        if 65 <= c <= 90:
            c += 32
        if c != lower[i]:
            return False
        at += 1
        i += 1
    return True


def _connection_options(data: bytes, at: int, end: int) -> int:
    """The options of a Connection value: 1 keep-alive, 2 close (bits), or -1 for any other option."""
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
        if _lower_is(data, option_at, option_end, b"keep-alive"):
            found |= 1
        elif _lower_is(data, option_at, option_end, b"close"):
            found |= 2
        else:
            return -1
        if at >= end:
            return found
        at += 1


def scan_request(data: bytes) -> tuple[str, str, str, dict[str, str], bool, str] | None:
    """``data`` as (method, path, query, fields, keep-alive, HTTP version) when it is exactly one
    complete GET or HEAD head, without a body and within the grammar, that a hit can answer; else None.

    ``fields`` is what the full path makes of the head (handler.ViewerRequest.fields): lower-case names,
    values without surrounding whitespace, repeated fields joined with ", " (RFC 9110 5.3) and Cookie
    with "; " (RFC 6265 5.4).
    """
    n = len(data)
    if n > MAX_SCANNED or n < 4 or data[n - 4 : n] != b"\r\n\r\n":
        return None
    p = data
    # Request line (RFC 9112 3): method SP origin-form SP "HTTP/1." DIGIT CRLF.
    if p[0] == 71 and p[1] == 69 and p[2] == 84 and p[3] == 32:  # "GET "
        method = "GET"
        i = 4
    elif n > 5 and p[0] == 72 and p[1] == 69 and p[2] == 65 and p[3] == 68 and p[4] == 32:  # "HEAD "
        method = "HEAD"
        i = 5
    else:
        return None
    url_at = i
    if p[i] != 47:  # "/": origin-form only
        return None
    target = TARGET
    query_at = -1
    while i < n and target[p[i]]:
        if p[i] == 63 and query_at < 0:  # "?"
            query_at = i
        i += 1
    url_end = i
    if i + 11 > n or data[i : i + 8] != b" HTTP/1." or p[i + 9] != 13 or p[i + 10] != 10:
        return None
    minor = p[i + 8]
    if minor != 48 and minor != 49:
        return None
    i += 11
    if query_at < 0:
        path = data[url_at:url_end].decode("latin-1")
        query = ""
    else:
        path = data[url_at:query_at].decode("latin-1")
        query = data[query_at + 1 : url_end].decode("latin-1")
    tchar = TCHAR
    value_table = VALUE
    fields: dict[str, str] = {}
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
        while i < n and tchar[p[i]]:
            i += 1
        if i == name_at or i >= n or p[i] != 58:  # ":" right after a non-empty name
            return None
        name_end = i
        i += 1
        while i < n and (p[i] == 32 or p[i] == 9):
            i += 1
        value_at = i
        while i < n and value_table[p[i]]:
            i += 1
        if i + 1 >= n or p[i] != 13 or p[i + 1] != 10:
            return None
        value_end = i
        while value_end > value_at and (p[value_end - 1] == 32 or p[value_end - 1] == 9):
            value_end -= 1
        if value_end < i:
            return None  # trailing whitespace: the full path reports values as llhttp does
        i += 2
        name = data[name_at:name_end].decode("latin-1").lower()
        if name in DECLINED:
            return None
        value = data[value_at:value_end].decode("latin-1")
        if name == "connection":
            options = _connection_options(data, value_at, value_end)
            if options < 0:
                return None  # options naming fields to drop: the full path
            if options & 2:
                close = True
            if options & 1:
                keep_alive_option = True
        if name in fields:
            fields[name] += ("; " if name == "cookie" else ", ") + value
        else:
            fields[name] = value
    # RFC 9112 9.3: HTTP/1.1 is persistent unless "close"; HTTP/1.0 only with "keep-alive".
    keep_alive = not close and (minor == 49 or keep_alive_option)
    return method, path, query, fields, keep_alive, "1.1" if minor == 49 else "1.0"


# -- request ids -------------------------------------------------------------------------------------------

_ID_BYTES = 42  # X-Amz-Cf-Id: 56 URL-safe base64 characters
_IDS_AT_ONCE = 256
_URL_SAFE = bytes.maketrans(b"+/", b"-_")
_ids = b""
_next_id = 0


def request_id() -> bytes:
    """A request id in the shape of X-Amz-Cf-Id (56 URL-safe base64 characters of os.urandom), from a
    batch made 256 at a time: one system call and one encoding per batch rather than per request (42
    bytes are 56 characters exactly, so the batch's encoding is the ids' encodings end to end)."""
    global _ids, _next_id
    at = _next_id
    if at >= len(_ids):
        _ids = binascii.b2a_base64(os.urandom(_ID_BYTES * _IDS_AT_ONCE), newline=False).translate(_URL_SAFE)
        at = 0
    _next_id = at + 56
    return _ids[at : at + 56]


# -- the hit -----------------------------------------------------------------------------------------------


class HitRoute:
    """What a hit reads of its distribution, gathered when the distribution's runtime is made (all of
    it is fixed for the config it was made from; the web ACL and the access log are looked at per
    request, being attached after)."""

    def __init__(self, dist: DistributionRuntime) -> None:
        self.dist = dist
        self.name = dist.name
        self.behaviors = dist.behaviors
        # Per behavior, then the default one: the methods a hit may answer (none when not caching), and
        # the cache key policy.
        every = (*dist.behaviors, dist.default)
        self.methods = tuple(b.methods if b.caches else frozenset() for b in every)
        self.key_policies = tuple(b.policy.key for b in every)
        self.cache: DistributionCache = dist.cache
        self.engine: ResponseCache = dist.cache.cache
        self.stats: EdgeStats = dist.cache.stats
        # The edge's fields after Age, up to the request id's value.
        self.hit_fields = (
            f"X-Cache: Hit from {dist.edge_name}\r\nX-Amz-Cf-Pop: {dist.edge_name}\r\nX-Amz-Cf-Id: "
        ).encode("latin-1", "replace")


def serve_hit(conn: EdgeClientSide, data: bytes) -> bool:
    """Answer ``data`` from the cache when it is one simple request for a fresh entry; False (nothing
    done) for the full path."""
    route: HitRoute = conn.runtime.distribution.hits
    dist = route.dist
    if dist.waf is not None:
        return False
    scanned = scan_request(data)
    if scanned is None:
        return False
    method, path, query, fields, keep_alive, version = scanned
    index = behavior_index(route.behaviors, path)
    if index < 0:
        index = len(route.methods) - 1
    if method not in route.methods[index]:
        return False  # not allowed (a 403), or not cached: the full path
    cache = route.cache
    key = primary_key(route.name, route.key_policies[index], path, query, fields)[0]
    names = cache.vary.get(key)
    if names:
        key = key + vary_key(names, fields)
    now = time.time()
    entry = route.engine.fresh(key, now)
    if entry is None:
        return False
    head = entry.hit_head
    body = entry.body
    age = int(now - entry.stored_at)
    if age < 0:
        age = 0
    age += entry.initial_age
    close = not keep_alive or conn.closing
    tail = b"\r\n\r\n" if not close else b"\r\nConnection: close\r\n\r\n"
    sent = len(body) if method == "GET" else 0
    rid = request_id()
    if sent == 0 or sent >= 65536:
        response = b"%b%d\r\n%b%b%b" % (head, age, route.hit_fields, rid, tail)
    else:
        response = b"%b%d\r\n%b%b%b%b" % (head, age, route.hit_fields, rid, tail, body)
    transport = conn.transport
    if transport is not None and not transport.is_closing():
        transport.write(response)
        if sent >= 65536:
            transport.write(body)
    # The counters the full path keeps (server.EdgeClientSide._account, X-Cache: Hit).
    stats = route.stats
    stats.requests += 1
    results = stats.results
    results["hit"] = results.get("hit", 0) + 1
    status_class = entry.status // 100
    klass = _RESPONSE_CLASSES[status_class] if status_class < 6 else f"{status_class}xx"
    responses = stats.responses
    responses[klass] = responses.get(klass, 0) + 1
    stats.bytes_from_cache += sent
    stats.bytes_sent += sent
    if dist.access_log is not None:
        conn.log_hit(method, path, query, version, fields, keep_alive, entry, sent, rid)
    if close:
        conn.close()
    else:
        conn._active_at = conn._loop.time()
    return True
