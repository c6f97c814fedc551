"""Range requests answered from a cached whole object (RFC 9110 section 14).

CloudFront ("How CloudFront processes partial requests for an object (range GETs)"): a single range is
served as 206 with Content-Range; a range that starts past the object's end is 416 with
``Content-Range: bytes */<length>``; ranges that are not ascending, that overlap or that do not parse
are ignored and the whole object is served (200). lbd also serves the whole object for several ranges
(CloudFront answers those with multipart/byteranges; a single range is what players and resumable
downloads ask for).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, total: int) -> str:
        return f"bytes {self.start}-{self.end}/{total}"


class Unsatisfiable:
    """The range asked for lies wholly past the end: answer 416."""


UNSATISFIABLE = Unsatisfiable()


def parse_range(value: str | None, length: int) -> ByteRange | Unsatisfiable | None:
    """The one range to serve, UNSATISFIABLE, or None to serve the whole object."""
    if value is None:
        return None
    unit, sep, spec = value.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None  # an unknown range unit is ignored (RFC 9110 14.2)
    specs = [s.strip() for s in spec.split(",")]
    if len(specs) != 1 or not specs[0]:
        return None
    first, dash, last = specs[0].partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if (first and not first.isdigit()) or (last and not last.isdigit()) or not (first or last):
        return None
    if not first:  # suffix range: the last N bytes
        count = int(last)
        if count == 0:
            return UNSATISFIABLE
        return ByteRange(max(0, length - count), length - 1) if length else UNSATISFIABLE
    start = int(first)
    end = int(last) if last else length - 1
    if last and end < start:
        return None  # invalid: serve the whole object
    if start >= length:
        return UNSATISFIABLE
    return ByteRange(start, min(end, length - 1))
