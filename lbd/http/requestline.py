"""The request line and Host of a parsed request: which HTTP versions, request-target forms and Host values
lbd forwards (RFC 9112 sections 2.3, 3.2 and 3.2.2; RFC 3986 section 3.2 for the authority grammar).

llhttp is lenient here: it accepts HTTP/0.9 (``GET /`` without a version) and HTTP/2.0 as text, fragments
in the target, ``*`` with any method, and any bytes in Host. A load balancer that forwarded those would
hand a target a request it may read differently (a Host list picks one name for routing and another for
the application), so lbd answers them itself. Pure functions, no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from lbd.http.errors import HttpError

# RFC 9112 2.3: lbd speaks HTTP/1.0 and HTTP/1.1 to clients; ALB answers other versions 505 (R10).
SUPPORTED_VERSIONS = frozenset({"1.0", "1.1"})

# RFC 3986 3.2.2 reg-name: unreserved / pct-encoded / sub-delims, except "," (RFC 9110 5.3: a comma makes
# the field a list, and a Host list is two names for one request). IP-literal: "[" IPv6address "]"
# (IPvFuture is not accepted). port = *DIGIT, here 1-5 digits up to 65535 (a port that cannot be a TCP port
# is not a place a request can be meant for).
_HOST = re.compile(
    rb"(?:(?P<reg>(?:[A-Za-z0-9\-._~!$&'()*+;=]|%[0-9A-Fa-f]{2})+)|\[(?P<ip6>[0-9A-Fa-f:.]+)\])"
    rb"(?::(?P<port>[0-9]{1,5}))?"
)
# RFC 9112 3.2.2 absolute-form: scheme "://" authority path-abempty [ "?" query ], http and https only
# (RFC 9110 4.2). The authority may not be empty nor carry userinfo (RFC 9110 4.2.4).
_ABSOLUTE = re.compile(
    rb"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<authority>[^/?#]*)(?P<rest>[/?].*)?", re.S
)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request goes: the request-target for the target (origin-form, or ``*``) and, for an
    absolute-form request, the authority it named (which replaces Host, RFC 9112 3.2.2)."""

    url: bytes
    authority: bytes | None = None


def check_version(version: str) -> None:
    """HTTP/1.0 and HTTP/1.1 only: HTTP/0.9 (no version), HTTP/2.0 as text and others get 505 (R10)."""
    if version not in SUPPORTED_VERSIONS:
        raise HttpError(505, "UnsupportedHttpVersion")


def request_target(method: str, url: bytes) -> Target:
    """Check the request-target form against the method (RFC 9112 3.2) and return what the target gets.

    - origin-form (``/path?query``): forwarded as is.
    - absolute-form (``http://host/path``): forwarded in origin-form; its authority becomes Host.
    - asterisk-form (``*``): OPTIONS only (RFC 9112 3.2.4).
    - authority-form (``host:port``): CONNECT only, and lbd does not tunnel CONNECT: 405.
    - a fragment (``#``) is never part of a request-target (RFC 9112 3.2, RFC 3986 3.5): 400.
    """
    if method == "CONNECT":
        # A load balancer is not a forward proxy; forwarded, a CONNECT would turn the target connection
        # into a tunnel. ALB refuses methods it does not serve with 405 (TRACE, R10).
        raise HttpError(405, "MethodNotAllowed")
    if b"#" in url:
        raise HttpError(400, "FragmentInTarget")
    if url[:1] == b"/":
        return Target(url)
    if url == b"*":
        if method != "OPTIONS":
            raise HttpError(400, "AsteriskFormNotOptions")
        return Target(url)
    match = _ABSOLUTE.fullmatch(url)
    if match is None or match["scheme"].lower() not in (b"http", b"https"):
        raise HttpError(400, "BadRequestTarget")
    authority = match["authority"]
    if not valid_host(authority):
        raise HttpError(400, "BadTargetAuthority")
    rest = match["rest"] or b""
    return Target(rest if rest[:1] == b"/" else b"/" + rest, authority)


def valid_host(value: bytes) -> bool:
    """A Host field value (or absolute-form authority) is ``uri-host [ ":" port ]`` (RFC 9110 7.2): no
    userinfo, path, query, fragment, list, whitespace inside, or port outside 0-65535."""
    match = _HOST.fullmatch(value.strip(b" \t"))
    if match is None:
        return False
    port = match["port"]
    if port is not None and int(port) > 65535:
        return False
    ip6 = match["ip6"]
    if ip6 is not None:
        try:
            ipaddress.IPv6Address(ip6.decode("ascii"))
        except ValueError:
            return False
    return True


def listener_authority(sockname: object, port: int) -> bytes:
    """The Host lbd gives a request that came without one (HTTP/1.0, or an empty Host): the address the
    client connected to and the listener port, as ALB's health checks name a target (``ip:port``)."""
    address = sockname[0] if isinstance(sockname, tuple) and sockname else "localhost"
    host = f"[{address}]" if ":" in str(address) else str(address)
    return f"{host}:{port}".encode()
