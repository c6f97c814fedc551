"""Identity sources: where an authorizer finds the caller's credentials in a request (pure).

HTTP APIs write ``$request.header.NAME``, ``$request.querystring.NAME`` and ``$context.NAME``; REST APIs
``method.request.header.NAME`` and ``method.request.querystring.NAME`` ("Working with AWS Lambda
authorizers for HTTP APIs", identity sources; "Use API Gateway Lambda authorizers"). Header names match
without regard to case; query names exactly. A repeated query parameter gives its values joined by commas,
as HTTP APIs' queryStringParameters do.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl

from lbd.gateway.contracts import GatewayRequest


def query_parameters(query: str) -> dict[str, str]:
    joined: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        joined[name] = f"{joined[name]},{value}" if name in joined else value
    return joined


def context_variables(request: GatewayRequest) -> Mapping[str, str]:
    """The ``$context`` variables an identity source may name."""
    return {
        "routeKey": request.route_key,
        "stage": request.stage,
        "apiId": request.api,
        "requestId": request.request_id,
        "httpMethod": request.method,
        "path": request.path,
        "identity.sourceIp": request.source_ip,
        "http.method": request.method,
        "http.path": request.path,
        "http.sourceIp": request.source_ip,
    }


def identity_value(request: GatewayRequest, source: str) -> str | None:
    """The value ``source`` names in ``request``; None when absent or empty (both count as missing)."""
    value: str | None = None
    for prefix in ("$request.header.", "method.request.header."):
        if source.startswith(prefix):
            value = request.header(source[len(prefix) :])
    for prefix in ("$request.querystring.", "method.request.querystring."):
        if source.startswith(prefix):
            value = query_parameters(request.query).get(source[len(prefix) :])
    if source.startswith("$context."):
        value = context_variables(request).get(source[len("$context.") :])
    return value if value else None
