"""Access-log lines in CloudFront's standard log format (W3C extended, tab-separated).

Fields, in CloudFront's order ("Standard logging (access logs)", "Log file format"):

    date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem sc-status cs(Referer)
    cs(User-Agent) cs-uri-query cs(Cookie) x-edge-result-type x-edge-request-id x-host-header
    cs-protocol cs-bytes time-taken x-forwarded-for ssl-protocol ssl-cipher x-edge-response-result-type
    cs-protocol-version fle-status fle-encrypted-fields c-port time-to-first-byte
    x-edge-detailed-result-type sc-content-type sc-content-len sc-range-start sc-range-end

Empty values are ``-``; user agent and other free text are URL-encoded as CloudFront writes them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from lbd.edge.handler import EdgeRequest
    from lbd.edge.server import EdgeClientSide

FIELDS = [
    "date",
    "time",
    "x-edge-location",
    "sc-bytes",
    "c-ip",
    "cs-method",
    "cs(Host)",
    "cs-uri-stem",
    "sc-status",
    "cs(Referer)",
    "cs(User-Agent)",
    "cs-uri-query",
    "cs(Cookie)",
    "x-edge-result-type",
    "x-edge-request-id",
    "x-host-header",
    "cs-protocol",
    "cs-bytes",
    "time-taken",
    "x-forwarded-for",
    "ssl-protocol",
    "ssl-cipher",
    "x-edge-response-result-type",
    "cs-protocol-version",
    "fle-status",
    "fle-encrypted-fields",
    "c-port",
    "time-to-first-byte",
    "x-edge-detailed-result-type",
    "sc-content-type",
    "sc-content-len",
    "sc-range-start",
    "sc-range-end",
]


def _text(value: str | None) -> str:
    return quote(value, safe="/:;=,()*.-_~@+&") if value else "-"


def _content_type(headers: Iterable[tuple[str, str]]) -> str | None:
    for name, value in headers:
        if name.lower() == "content-type":
            return value
    return None


def log_line(conn: EdgeClientSide, work: EdgeRequest, wall: float) -> str:
    request, outcome = work.request, work.outcome
    fields = request.fields
    taken = time.monotonic() - request.received_at
    stamp = time.gmtime(wall)
    span = outcome.range
    values = [
        time.strftime("%Y-%m-%d", stamp),
        time.strftime("%H:%M:%S", stamp),
        work.dist.edge_name,
        str(outcome.body_bytes),
        conn.peer[0] or "-",
        request.method,
        _text(fields.get("host")),
        _text(request.path),
        str(outcome.status),
        _text(fields.get("referer")),
        _text(fields.get("user-agent")),
        _text(request.query),
        _text(fields.get("cookie")),
        outcome.result,
        work.id,
        _text(fields.get("host")),
        conn.scheme,
        str(len(request.body)),
        f"{taken:.3f}",
        _text(fields.get("x-forwarded-for")),
        conn.tls_info[1] if conn.tls_info else "-",  # ssl-protocol
        conn.tls_info[0] if conn.tls_info else "-",  # ssl-cipher
        outcome.result,
        "HTTP/2.0" if conn.over_h2 else f"HTTP/{request.version}",
        "-",
        "-",
        str(conn.peer[1]),
        f"{taken:.3f}",
        outcome.detailed or outcome.result,
        _text(_content_type(outcome.headers)),
        str(outcome.body_bytes),
        str(span.start) if span is not None else "-",
        str(span.end) if span is not None else "-",
    ]
    return "\t".join(values)


HEADER = "#Version: 1.0\n#Fields: " + " ".join(FIELDS)
