"""The hash key of an HTTP request for a ``consistent_hash`` target group (lbd's extension; pure, no I/O).

The key is a request field, a cookie or the client's address, as the group's ``consistent_hash`` says;
the group's Maglev table (lbd/upstream/maglev.py) maps it to a target, the same one on every worker and
every node with the same targets, and only about 1/N of the keys move when a target comes or goes. This is
what a cache tier or a sharded service behind the load balancer wants: one user's requests on one target
without a cookie the load balancer issues (for that, use stickiness).

It sits where target stickiness sits (the target group's ``sticky``): asked for a target before the
balancer, it answers with no Set-Cookie lines of its own.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import TYPE_CHECKING, Protocol

from lbd.routing.stickiness import Group, request_cookie

if TYPE_CHECKING:
    from lbd.config.schema import ConsistentHashKey
    from lbd.upstream.target import Target


class Client(Protocol):
    @property
    def peer(self) -> tuple[str, int]: ...


class HashedRequest(Protocol):
    """What the hash key reads from an exchange (lbd.http.exchange.Exchange)."""

    head_block: bytes | None

    @property
    def client(self) -> Client: ...

    @property
    def headers(self) -> Sequence[tuple[bytes, bytes]]: ...


def header_value(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first field ``name`` (lowercase ASCII), trimmed; None if absent."""
    for field, value in headers:
        if len(field) == len(name) and field.lower() == name:
            return value.strip()
    return None


class HashKey:
    """One target group's request hash key."""

    kind = "consistent_hash"
    needs_response = False  # nothing from the response matters (no cookie is issued)
    app_cookie_name = b""

    def __init__(self, config: ConsistentHashKey) -> None:
        self.type = config.type
        self.header = (config.http_header_name or "").lower().encode("ascii")
        self.cookie = (config.cookie_name or "").encode("ascii")

    def key(self, request: HashedRequest) -> bytes | None:
        """The bytes to hash, or None when the request has no key (it is balanced round robin)."""
        if self.type == "source_ip":
            return b"ip|" + request.client.peer[0].encode("ascii", "replace")
        if self.type == "cookie":
            value = request_cookie(request, self.cookie)
            return None if value is None else b"cookie|" + value.encode("latin-1")
        found = header_value(request.headers, self.header)
        return None if found is None else b"header|" + found

    def pick(
        self, exchange: HashedRequest, group: Group, tried: Container[Target]
    ) -> tuple[Target | None, bytes]:
        """The target for a request (and no Set-Cookie lines)."""
        return group.pick(self.key(exchange), tried), b""

    def response_cookies(self, exchange: HashedRequest, target: Target, app_cookie: bytes | None) -> bytes:
        return b""
