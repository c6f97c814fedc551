"""The request as a web ACL sees it: the same inputs whichever front end (ALB listener, API stage,
distribution) calls the engine, each extracted only when a rule of the ACL inspects it.

A front end builds one ``WafRequest`` per request from what it already parsed: the method, the request
target (split into path and query only when a rule looks at either), the header fields (or, from ALB's
fast path, the raw field lines, searched for the one name a rule reads: no header list or map is built),
the first bytes of the body (up to ``BODY_LIMIT``, with the whole size when known), the client address
and, on an API stage, the API key's id. Nothing here reads a socket.

The transformed fields live in ``values``, one slot per (field, transformation prefix) of the ACL's plan
(lbd/waf/plan.py), so each transformation runs at most once per request and field.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from lbd.config.web_acl_reading import BODY_LIMIT
from lbd.waf import transforms

# An address as IP sets compare it: (IP version, the address as an integer).
Address = tuple[int, int]
# A field to inspect: (field name, header name for single_header, transformations in order).
FieldKey = tuple[str, bytes | None, tuple[str, ...]]
# The raw fields, as the plan names them (small integers: compared in C when compiled).
URI_PATH, QUERY_STRING, METHOD, BODY, SINGLE_HEADER = 0, 1, 2, 3, 4
FIELD_KINDS = {"uri_path": URI_PATH, "query_string": QUERY_STRING, "method": METHOD, "body": BODY}
_ADDRESSES: dict[str, Address | None] = {}  # parsed client addresses: keep-alive clients come back
_METHODS: dict[str, bytes] = {}  # request methods as bytes: a handful of names, encoded once


class WafRequest:
    """One request's inspectable parts (an extension type when compiled: request.pxd)."""

    def __init__(
        self,
        method: bytes,
        path: bytes,
        query: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        client: str,
        body: bytes = b"",
        body_size: int | None = None,
        api_key: str | None = None,
    ) -> None:
        self.method = method
        self.url: bytes | None = None  # the request target, while path and query wait to be split
        self.path: bytes | None = path
        self.query: bytes | None = query
        self.headers = headers
        self.block: bytes | None = None  # the fast path's raw field lines, instead of headers
        self._lowered: bytes | None = None
        self.client = client
        self.body = body[:BODY_LIMIT]
        self.body_size = len(body) if body_size is None else body_size  # the whole body, when known
        self.api_key = api_key
        self.labels: list[str] = []  # added by matching rules, for later rules' label_match
        self.values: list[object] = []  # by plan slot, set by the ACL that evaluates it (plan.py)
        self.memo: dict[FieldKey, bytes | None] | None = None  # field(), by key
        self._header_map: dict[bytes, bytes] | None = None
        self._address: Address | None = None
        self._forwarded: dict[bytes, list[Address | None]] | None = None

    @classmethod
    def from_target(
        cls,
        method: str,
        url: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        client: str,
        body: bytes = b"",
        body_size: int | None = None,
        api_key: str | None = None,
    ) -> WafRequest:
        """From an origin-form request target (``/path?query``), as HTTP front ends have it."""
        request = cls(method_bytes(method), b"", b"", headers, client, body, body_size, api_key)
        request.url = url  # split on first use
        request.path = None
        request.query = None
        return request

    @property
    def body_oversize(self) -> bool:
        return self.body_size > BODY_LIMIT

    def raw(self, kind: int, header: bytes) -> bytes | None:
        """A field as sent (``header``: the lower-case name, for SINGLE_HEADER), or None when absent."""
        if kind == SINGLE_HEADER:
            return self.header(header)
        if kind == METHOD:
            return self.method
        if kind == BODY:
            return self.body
        if self.path is None:
            self._split()
        return self.path if kind == URI_PATH else self.query

    def _split(self) -> None:
        """Path and query from the target (RFC 3986 3: path, then "?" query, then "#" fragment)."""
        url = self.url or b""
        size = len(url)
        question = hash_at = size
        at = 0
        while at < size:  # one pass in C when compiled: no method calls, no tuples
            char = url[at]
            if char == 63 and question == size:  # "?"
                question = at
            elif char == 35:  # "#"
                hash_at = at
                break
            at += 1
        if question < hash_at:
            self.path = url[:question]
            self.query = url[question + 1 : hash_at]
        else:
            self.path = url if hash_at == size else url[:hash_at]  # the common case: no copy
            self.query = b""

    def header(self, lower_name: bytes) -> bytes | None:
        """A header's value; repeated fields joined with ", " (RFC 9110 5.3)."""
        if self.block is not None:
            return self._block_header(lower_name)
        found = self._header_map
        if found is None:
            found = {}
            for name, value in self.headers:
                key = name.lower()
                previous = found.get(key)
                found[key] = value if previous is None else previous + b", " + value
            self._header_map = found
        return found.get(lower_name)

    def _block_header(self, lower_name: bytes) -> bytes | None:
        """``header`` on the fast path's raw field lines (lbd/http/fastpath.py: each ``name: value`` CRLF,
        names tokens, no obs-fold), found in one lower-cased copy of the block: the value as llhttp gives it
        (without the whitespace before it, with any after it: fastpath.field_lines)."""
        block = self.block
        assert block is not None
        lowered = self._lowered
        if lowered is None:
            lowered = self._lowered = block.lower()
        needle = lower_name + b":"
        found: bytes | None = None
        at = lowered.find(needle)
        while at >= 0:
            if at > 0 and lowered[at - 1] != 10:  # inside another line: not the start of a field
                at = lowered.find(needle, at + 1)
                continue
            start = at + len(needle)
            end = block.find(b"\r\n", start)
            if end < 0:
                end = len(block)
            value = block[start:end].lstrip(b" \t")
            found = value if found is None else found + b", " + value
            at = lowered.find(needle, end)
        return found

    def field(self, key: FieldKey) -> bytes | None:
        """The field after its transformations, or None when the request has no such field; memoised by key
        (the ACL's evaluation uses its plan's slots instead: lbd/waf/plan.py)."""
        memo = self.memo
        if memo is None:
            memo = self.memo = {}
        elif key in memo:
            return memo[key]
        name, header, chain = key
        value = self.raw(FIELD_KINDS.get(name, SINGLE_HEADER), header or b"")
        if value is not None:
            value = transforms.apply(value, chain)
        memo[key] = value
        return value

    def address(self) -> Address | None:
        """The connection's client address."""
        if self._address is None:
            self._address = parse_address(self.client)
        return self._address

    def forwarded(self, header: bytes) -> list[Address | None]:
        """The addresses a forwarded-IP header lists, in order (None for an entry that is not one)."""
        cache = self._forwarded
        if cache is None:
            cache = self._forwarded = {}
        found = cache.get(header)
        if found is None:
            value = self.header(header)
            found = (
                []
                if value is None
                else [parse_address(p.strip().decode("latin-1")) for p in value.split(b",")]
            )
            cache[header] = found
        return found


def fast_request(method: str, url: bytes, block: bytes, client: str) -> WafRequest:
    """A bodiless request ALB's fast path took (lbd/http/fastpath.py), without copying or parsing anything:
    the target is split and the field lines searched only when a rule inspects them."""
    request: WafRequest = WafRequest.__new__(WafRequest)
    request.method = method_bytes(method)
    request.url = url
    request.path = None
    request.query = None
    request.headers = ()
    request.block = block
    request._lowered = None
    request.client = client
    request.body = b""
    request.body_size = 0
    request.api_key = None
    request.labels = []
    request.values = _NO_VALUES  # the ACL's plan gives it its own (FieldPlan.begin)
    request.memo = None
    request._header_map = None
    request._address = None
    request._forwarded = None
    return request


def method_bytes(method: str) -> bytes:
    found = _METHODS.get(method)
    if found is None:
        found = method.encode("latin-1")
        if len(_METHODS) < 64:  # methods are tokens a client picks: a bound
            _METHODS[method] = found
    return found


def parse_address(text: str) -> Address | None:
    found = _ADDRESSES.get(text, _MISSING)
    if found is not _MISSING:
        return found  # type: ignore[return-value]
    try:
        parsed = ipaddress.ip_address(text.strip("[]"))
        address: Address | None = (parsed.version, int(parsed))
    except ValueError:
        address = None
    if len(_ADDRESSES) >= 4096:
        _ADDRESSES.clear()  # a bound, not an LRU
    _ADDRESSES[text] = address
    return address


_MISSING = object()
_NO_VALUES: list[object] = []  # never written: every slot is written after FieldPlan.begin
UNSET = object()  # not in the plan's values yet
