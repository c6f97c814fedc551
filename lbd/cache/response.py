"""A response as the cache holds it: immutable, so one entry can be served to many requests at once."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CachedResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    stored_at: float  # clock() when the origin's response arrived
    # The edge cache's RFC 9111 extras (the stage cache leaves them at their defaults): how long past
    # its TTL the entry may be served while it is refreshed (stale-while-revalidate, RFC 5861 section 3)
    # or while the origin fails (stale-if-error, RFC 5861 section 4), and the Age the origin sent.
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    initial_age: int = 0
    # The edge's served field lines, built once when stored ("Name: value\r\n" each, Via included), so a
    # hit does not walk the fields again; empty: built per response.
    field_lines: str = ""
    # A hit's response head up to the Age value, serialised once when stored: the status line, the field
    # lines, Content-Length, Accept-Ranges and "Age: " (lbd/edge/hit.py adds the rest); empty: none.
    hit_head: bytes = b""

    def age(self, now: float) -> int:
        """Seconds since the response was stored, for the ``Age`` header (RFC 9111 section 5.1: a
        non-negative integer, so never negative when clocks step back)."""
        return max(0, int(now - self.stored_at)) + self.initial_age

    @property
    def size(self) -> int:
        """The bytes the response holds: its body, its header names and values (UTF-8) and its
        serialised head."""
        fields = sum(len(name.encode()) + len(value.encode()) for name, value in self.headers)
        return len(self.body) + fields + len(self.hit_head)
