"""The parts of a request that listener rules look at, each computed at most once and only when a rule
asks for it (a listener with only a default action never builds any of them)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RequestView:
    __slots__ = ("_host", "_host_field", "_path", "_query", "_source", "headers", "method", "peer_ip", "url")

    def __init__(
        self,
        method: str,
        url: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        peer_ip: str,
        host: bytes | None = None,
    ) -> None:
        """``host``: the Host the request is forwarded with, when the proxy already knows it (an
        absolute-form target's authority replaces the Host field, RFC 9112 3.2.2)."""
        self.method = method
        self.url = url
        self.headers = headers
        self.peer_ip = peer_ip
        self._host: str | None = None
        self._host_field = host
        self._path: str | None = None
        self._query: list[tuple[str, str]] | None = None
        self._source: IPAddress | None = None

    @property
    def host(self) -> str:
        """The Host header without its port, lowercased (host-header conditions are case-insensitive)."""
        if self._host is None:
            value = self._host_field or b""
            for name, raw in () if value else self.headers:
                if len(name) == 4 and name.lower() == b"host":
                    value = raw
                    break
            if not value:
                value = _authority(self.url)
            self._host = _bare_host(value)
        return self._host

    @property
    def path(self) -> str:
        """The path without the query (path-pattern conditions never see the query string)."""
        if self._path is None:
            target = self.url
            if not target.startswith(b"/"):
                # absolute-form (RFC 9112 3.2.2): http://host/path?query
                after_scheme = target.partition(b"://")[2]
                slash = after_scheme.find(b"/")
                target = after_scheme[slash:] if slash >= 0 else b"/"
            self._path = target.partition(b"?")[0].decode("latin-1")
        return self._path

    @property
    def query(self) -> list[tuple[str, str]]:
        """key=value pairs as sent (not percent-decoded); a pair without "=" has an empty value."""
        if self._query is None:
            raw = self.url.partition(b"?")[2].partition(b"#")[0].decode("latin-1")
            pairs = []
            for part in raw.split("&"):
                if part:
                    key, _, value = part.partition("=")
                    pairs.append((key, value))
            self._query = pairs
        return self._query

    @property
    def source(self) -> IPAddress:
        """The socket peer (source-ip conditions never look at X-Forwarded-For)."""
        if self._source is None:
            address = ipaddress.ip_address(self.peer_ip.partition("%")[0])
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped  # an IPv4 client on a dual-stack (::) listener
            self._source = address
        return self._source

    def header_values(self, lower_name: bytes) -> list[str]:
        return [v.decode("latin-1") for n, v in self.headers if n.lower() == lower_name]


def _authority(url: bytes) -> bytes:
    if url.startswith(b"/"):
        return b""
    return url.partition(b"://")[2].partition(b"/")[0]


def _bare_host(value: bytes) -> str:
    """A Host value without its port, lowercased."""
    host = value.decode("latin-1").strip().lower()
    return host[: host.find("]") + 1] if host.startswith("[") else host.partition(":")[0]
