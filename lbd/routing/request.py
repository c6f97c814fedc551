"""The parts of a request that listener rules look at, each computed at most once and only when a rule
asks for it (a listener with only a default action never builds any of them)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RequestView:
    __slots__ = (
        "_host",
        "_host_field",
        "_host_key",
        "_path",
        "_query",
        "_raw_path",
        "_source",
        "headers",
        "method",
        "peer_ip",
        "url",
    )

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
        self._host_key: bytes | None = None
        self._path: str | None = None
        self._raw_path: bytes | None = None
        self._query: list[tuple[str, str]] | None = None
        self._source: IPAddress | None = None

    @property
    def host(self) -> str:
        """The Host header without its port, lowercased (host-header conditions are case-insensitive)."""
        if self._host is None:
            self._host = _bare_host(self._host_value())
        return self._host

    @property
    def host_key(self) -> bytes:
        """``host`` as bytes (latin-1), computed without decoding when the value is ASCII (valid Host
        values always are, RFC 9110 7.2): what byte-level host-header matchers compare."""
        if self._host_key is None:
            value = self._host_value()
            if value.isascii():
                host = value.strip(_STR_WHITESPACE).lower()
                self._host_key = host[: host.find(b"]") + 1] if host[:1] == b"[" else host.partition(b":")[0]
            else:
                self._host_key = self.host.encode("latin-1")
        return self._host_key

    def _host_value(self) -> bytes:
        value = self._host_field or b""
        for name, raw in () if value else self.headers:
            if len(name) == 4 and name.lower() == b"host":
                value = raw
                break
        return value or _authority(self.url)

    @property
    def path(self) -> str:
        """The path without the query (path-pattern conditions never see the query string)."""
        if self._path is None:
            self._path = self.raw_path.decode("latin-1")
        return self._path

    @property
    def raw_path(self) -> bytes:
        """``path`` as the bytes sent, for byte-level path matchers (latin-1: one byte, one character)."""
        if self._raw_path is None:
            self._raw_path = request_path(self.url)
        return self._raw_path

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


def request_path(url: bytes) -> bytes:
    """A request target's path, without the query."""
    if not url.startswith(b"/"):
        # absolute-form (RFC 9112 3.2.2): http://host/path?query
        after_scheme = url.partition(b"://")[2]
        slash = after_scheme.find(b"/")
        url = after_scheme[slash:] if slash >= 0 else b"/"
    return url.partition(b"?")[0]


# What str.strip() removes from an ASCII string (str.isspace also counts the separators \x1c-\x1f).
_STR_WHITESPACE = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"


def _authority(url: bytes) -> bytes:
    if url.startswith(b"/"):
        return b""
    return url.partition(b"://")[2].partition(b"/")[0]


def _bare_host(value: bytes) -> str:
    """A Host value without its port, lowercased."""
    host = value.decode("latin-1").strip().lower()
    return host[: host.find("]") + 1] if host.startswith("[") else host.partition(":")[0]
