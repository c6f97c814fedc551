"""One request as the gateway's engines see it (``GatewayRequest``, re-exported by
lbd/gateway/contracts.py): an extension type when compiled (request.pxd), since one is made for every
request and read by every step of the pipeline."""

from __future__ import annotations

from collections.abc import Mapping

# The fields, in the constructor's order (what a dataclass's ``fields()`` would list).
FIELDS = (
    "method",
    "path",
    "query",
    "headers",
    "body",
    "source_ip",
    "api",
    "stage",
    "route_key",
    "path_parameters",
    "request_id",
    "received_at",
    "raw_fields",
    "raw_forwarded",
)


class GatewayRequest:
    """One request as the gateway's engines see it, after route matching."""

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        source_ip: str,
        api: str,
        stage: str,
        route_key: str,
        path_parameters: Mapping[str, str] | None = None,
        request_id: str = "",
        received_at: float = 0.0,
        raw_fields: bytes = b"",
        raw_forwarded: bytes = b"",
    ) -> None:
        self.method = method  # upper case
        self.path = path  # as received, percent-encoded, without the query
        self.query = query  # raw query string without "?"
        self.headers = headers  # lower-case names; repeated fields joined with "," (cookie with "; ")
        self.body = body
        self.source_ip = source_ip
        self.api = api
        self.stage = stage
        self.route_key = route_key  # "GET /pets/{id}", "$default"
        self.path_parameters: Mapping[str, str] = {} if path_parameters is None else path_parameters
        self.request_id = request_id
        self.received_at = received_at  # time.time() when the request head arrived
        # The field lines as received but Host (lbd/http/fastpath.py's block: CRLF-ended, without
        # Connection, framing, hop-by-hop or X-Forwarded-* fields), and the connection's X-Forwarded-*
        # lines, for an HTTP_PROXY integration to pass on as they came; empty when the head took the full
        # parser, or once ``headers`` changed (a web ACL's inserted fields).
        self.raw_fields = raw_fields
        self.raw_forwarded = raw_forwarded

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def __repr__(self) -> str:
        return f"GatewayRequest({self.method} {self.path} from {self.source_ip}, route {self.route_key})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GatewayRequest):
            return NotImplemented
        return all([getattr(self, name) == getattr(other, name) for name in FIELDS])
