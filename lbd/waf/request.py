"""The request as a web ACL sees it: the same inputs whichever front end (ALB listener, API stage,
distribution) calls the engine, and the per-request memo of transformed fields.

A front end builds one ``WafRequest`` per request from what it already parsed: method, path and query as
sent, the header fields, the first bytes of the body (up to ``BODY_LIMIT``, with the whole size when
known), the client address and, on an API stage, the API key's id. Nothing here reads a socket.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Sequence

from lbd.config.web_acl_reading import BODY_LIMIT
from lbd.waf import transforms

# An address as IP sets compare it: (IP version, the address as an integer).
Address = tuple[int, int]
# A field to inspect: (field name, header name for single_header, transformations in order).
FieldKey = tuple[str, bytes | None, tuple[str, ...]]
_ADDRESSES: dict[str, Address | None] = {}  # parsed client addresses: keep-alive clients come back


class WafRequest:
    """One request's inspectable parts; a field + transformation chain is computed at most once (an
    extension type when compiled: request.pxd)."""

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
        self.path = path
        self.query = query
        self.headers = headers
        self.client = client
        self.body = body[:BODY_LIMIT]
        self.body_size = len(body) if body_size is None else body_size  # the whole body, when known
        self.api_key = api_key
        self.labels: list[str] = []  # added by matching rules, for later rules' label_match
        self.memo: dict[str, bytes | None] = {}  # by memo_slot(field key)
        self._header_map: dict[bytes, bytes] | None = None
        self._address: Address | None = None
        self._forwarded: dict[bytes, list[Address | None]] = {}

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
        path, _, query = url.partition(b"#")[0].partition(b"?")
        return cls(method.encode("latin-1"), path, query, headers, client, body, body_size, api_key)

    @property
    def body_oversize(self) -> bool:
        return self.body_size > BODY_LIMIT

    def header(self, lower_name: bytes) -> bytes | None:
        """A header's value; repeated fields joined with ", " (RFC 9110 5.3)."""
        found = self._header_map
        if found is None:
            found = {}
            for name, value in self.headers:
                key = name.lower()
                previous = found.get(key)
                found[key] = value if previous is None else previous + b", " + value
            self._header_map = found
        return found.get(lower_name)

    def field(self, key: FieldKey) -> bytes | None:
        """The field after its transformations, or None when the request has no such field."""
        memo = self.memo
        slot = memo_slot(key)
        found = memo.get(slot, UNSET)
        if found is not UNSET:
            return found  # type: ignore[return-value]
        name, header, chain = key
        value = self._raw(name, header)
        if value is not None:
            for transform in chain:
                value = transforms.TRANSFORMS[transform](value)
        memo[slot] = value
        return value

    def _raw(self, name: str, header: bytes | None) -> bytes | None:
        if name == "uri_path":
            return self.path
        if name == "query_string":
            return self.query
        if name == "method":
            return self.method
        if name == "body":
            return self.body
        return self.header(header or b"")

    def address(self) -> Address | None:
        """The connection's client address."""
        if self._address is None:
            self._address = parse_address(self.client)
        return self._address

    def forwarded(self, header: bytes) -> list[Address | None]:
        """The addresses a forwarded-IP header lists, in order (None for an entry that is not one)."""
        found = self._forwarded.get(header)
        if found is None:
            value = self.header(header)
            found = (
                []
                if value is None
                else [parse_address(p.strip().decode("latin-1")) for p in value.split(b",")]
            )
            self._forwarded[header] = found
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


def memo_slot(key: FieldKey) -> str:
    """The name a field + chain is memoised under: a str, whose hash Python keeps (a tuple's it does not)."""
    slot = _SLOTS.get(key)
    if slot is None:
        name, header, chain = key
        slot = _SLOTS[key] = sys.intern(f"{name}:{(header or b'').decode('latin-1')}:{','.join(chain)}")
    return slot


_SLOTS: dict[FieldKey, str] = {}
_MISSING = object()
UNSET = object()  # not in the memo yet
