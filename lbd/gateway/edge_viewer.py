"""Who called an EDGE API: the viewer of the distribution in front of it, not the distribution.

An edge-optimized API sees the request the distribution sends it (docs/gateway.md, "Edge-optimized
APIs"): its source address is the distribution's end of a loopback connection, and the viewer is in the
fields the distribution wrote. The distribution's origin path (lbd/edge/origin.py, the load balancer's
own data path) appends the viewer's address to ``X-Forwarded-For`` and writes ``X-Forwarded-Port`` (the
port the viewer called) and ``CloudFront-Forwarded-Proto`` (the scheme it used). API Gateway takes
``$context.identity.sourceIp`` from the same place for an edge-optimized API: the client, never the
CloudFront edge ("$context variables for data models, authorizers, mapping templates, and CloudWatch
access logging", identity.sourceIp). Only the last ``X-Forwarded-For`` entry is the distribution's own:
what comes before it the viewer may have written, so it is never taken. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress


def edge_viewer(headers: dict[str, str], peer: str, scheme: str, port: str) -> tuple[str, str, str]:
    """(source address, scheme, port) of the viewer of a request that came through a distribution on
    loopback; a peer that is not on loopback is not a distribution, and is its own viewer."""
    if not _loopback(peer):
        return peer, scheme, port
    source = peer
    forwarded = headers.get("x-forwarded-for")
    if forwarded:
        last = forwarded.rpartition(",")[2].strip()
        if _address(last):
            source = last
    proto = headers.get("cloudfront-forwarded-proto", scheme)
    if proto not in ("http", "https"):
        proto = scheme
    viewer_port = headers.get("x-forwarded-port", port)
    return source, proto, viewer_port if viewer_port.isdigit() else port


def _loopback(address: str) -> bool:
    return address.startswith("127.") or address == "::1"


def _address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
