"""Classic Load Balancer health checks: the ``target`` string and CLB's defaults (AWS: "Configure health
checks for your Classic Load Balancer").

A CLB check is one string, ``PROTOCOL:PORT[/PATH]``: ``TCP:80`` and ``SSL:443`` pass when a connection (for
SSL, a TLS handshake) succeeds; ``HTTP:8080/index.html`` and ``HTTPS:443/health`` pass on a 200 response
only. Defaults: 5 s timeout, 30 s interval, 10 healthy and 2 unhealthy checks in a row.
"""

from __future__ import annotations

from dataclasses import dataclass

CLB_MATCHER = "200"  # CLB counts only 200 as healthy
DEFAULT_PATH = "/index.html"  # the console's default; only HTTP and HTTPS checks have a path


@dataclass(frozen=True, slots=True)
class ClassicTarget:
    protocol: str  # TCP | SSL | HTTP | HTTPS
    port: int
    path: str  # "/" for TCP and SSL, whose checks send no request


def parse_target(target: str) -> ClassicTarget:
    """``HTTP:8080/index.html`` -> (HTTP, 8080, /index.html); ValueError when it is not a CLB target."""
    protocol, sep, rest = target.partition(":")
    if not sep or protocol not in ("TCP", "SSL", "HTTP", "HTTPS"):
        raise ValueError(f"the protocol must be TCP, SSL, HTTP or HTTPS, got {target!r}")
    digits, slash, path = rest.partition("/")
    if not digits.isdigit() or not 1 <= int(digits) <= 65535:
        raise ValueError(f"the port must be 1..65535, got {target!r}")
    if protocol in ("TCP", "SSL"):
        if slash:
            raise ValueError(f"{protocol} checks take no path, got {target!r}")
        return ClassicTarget(protocol, int(digits), "/")
    if not slash:
        raise ValueError(
            f"{protocol} checks need a path (e.g. {protocol}:{digits}/index.html), got {target!r}"
        )
    return ClassicTarget(protocol, int(digits), "/" + path)
