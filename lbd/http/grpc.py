"""gRPC on application load balancers: what ALB does with gRPC requests, as pure functions (no I/O).

- A GRPC target group takes only HTTP/2 POST requests; HTTP/1.1 requests, and HTTP/2 requests with any
  other method (Connect-style GETs, CORS preflights), get 464 (AWS: "Target groups for your Application
  Load Balancers", Protocol version). An HTTP2 group takes HTTP/1.1 requests too: lbd translates them to
  HTTP/2 (a deliberate difference: ALB answers 464).
- Errors lbd makes itself for a gRPC request (no healthy target, connect failure, target timeout, a
  rule's fixed response) are trailers-only responses (gRPC over HTTP/2, "Responses": one HEADERS frame
  with END_STREAM carrying :status 200, content-type and grpc-status), so gRPC clients see UNAVAILABLE
  or DEADLINE_EXCEEDED rather than the UNKNOWN that a bare 503 maps to. ALB's own behaviour is not
  documented; this is the friendlier choice, and the HTTP code stays in the access log.
- ``grpc-timeout`` (gRPC over HTTP/2, "Requests": up to 8 digits and a unit) bounds the call.
"""

from __future__ import annotations

from urllib.parse import quote

# gRPC status codes (grpc/grpc doc/statuscodes.md).
OK = 0
CANCELLED = 1
UNKNOWN = 2
DEADLINE_EXCEEDED = 4
PERMISSION_DENIED = 7
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14
UNAUTHENTICATED = 16

# The HTTP status lbd would have answered, as the gRPC status a client would derive from it
# (grpc/grpc doc/http-grpc-status-mapping.md), except 504: lbd's own deadline (the target timed out or
# the connect did), which gRPC calls DEADLINE_EXCEEDED.
_FOR_HTTP = {
    400: INTERNAL,
    401: UNAUTHENTICATED,
    403: PERMISSION_DENIED,
    404: UNIMPLEMENTED,
    408: DEADLINE_EXCEEDED,
    429: UNAVAILABLE,
    431: INTERNAL,
    460: CANCELLED,
    502: UNAVAILABLE,
    503: UNAVAILABLE,
    504: DEADLINE_EXCEEDED,
}

_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def is_grpc(content_type: bytes) -> bool:
    """gRPC over HTTP/2, "Requests": Content-Type is application/grpc, optionally +proto, +json..."""
    lowered = content_type.lower()
    return lowered == b"application/grpc" or lowered.startswith((b"application/grpc+", b"application/grpc;"))


def parse_timeout(value: bytes) -> float | None:
    """``grpc-timeout`` in seconds; None when it is malformed (the call then has no deadline)."""
    digits, unit = value[:-1], value[-1:]
    if not 1 <= len(digits) <= 8 or not digits.isdigit() or unit not in _UNITS:
        return None
    return int(digits) * _UNITS[unit]


def status_for(http_status: int) -> int:
    """The grpc-status of a response lbd generated with ``http_status``. A rule's fixed response or a
    redirect that is not an error still implements no gRPC method: UNIMPLEMENTED."""
    if http_status < 400:
        return UNIMPLEMENTED
    return _FOR_HTTP.get(http_status, UNAVAILABLE if http_status >= 500 else UNKNOWN)


def trailers_only(grpc_status: int, message: str) -> list[tuple[bytes, bytes]]:
    """A trailers-only response: one HEADERS block that ends the stream. grpc-message is percent-encoded
    (gRPC over HTTP/2, "Responses")."""
    return [
        (b":status", b"200"),
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"%d" % grpc_status),
        (b"grpc-message", quote(message, safe=" ").encode()),
    ]


def mismatch(protocol_version: str, over_h2: bool, method: str) -> str:
    """Why a request cannot go to a group of ``protocol_version`` (then 464), or "" when it can."""
    if protocol_version == "GRPC":
        if not over_h2:
            return "GrpcGroupNeedsHttp2"
        if method != "POST":
            return "GrpcGroupNeedsPost"
    return ""
