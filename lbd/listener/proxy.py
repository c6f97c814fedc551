"""Accepting the PROXY protocol on lbd's own listeners (``accept_proxy_protocol``), for lbd behind another
load balancer.

Rules from the spec (HAProxy ``doc/proxy-protocol.txt``, section 2 and "receiver" notes):

- Only connections from ``trusted_sources`` may send a header, and those must: a header is never
  auto-detected on connections from anywhere else, so no client can forge its address. Connections from
  other sources go straight to the listener's protocol, whose parser sees any header as data.
- The header must come first, complete and well formed, within a deadline (``timeout_seconds``, 5 s by
  default; the spec asks for at least 3): anything else (bad signature, malformed, truncated by EOF,
  late) closes the connection at once and is counted (``proxy_protocol_errors``). No application byte is
  processed before the header is complete.
- v1 and v2 are both detected. LOCAL (v2) and UNKNOWN (v1) headers mean "use the real endpoints".

``ProxyHeaderReceiver`` is the protocol of such a connection until the header is read; it then builds the
listener's protocol with the real client address already set (so HTTP's X-Forwarded-For, source-ip rules
and access logs, and TCP's flow hash, logs and PROXY headers onward all see it), hands the transport to it
with ``set_protocol`` (no per-read indirection afterwards) and passes on whatever followed the header.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from lbd.l4.proxy_protocol import ProxyProtocolError, TruncatedHeader, decode
from lbd.observe.ratelimit import ACCEPT_WARNINGS

if TYPE_CHECKING:
    from lbd.runtime import ListenerRuntime

log = logging.getLogger("lbd.listener")

Address = tuple[str, int]


class ProxiedClient:
    """The addresses a PROXY header gave: the real client, and the address it connected to."""

    __slots__ = ("destination", "source")

    def __init__(self, source: Address, destination: Address) -> None:
        self.source = source
        self.destination = destination


def assign_client(app: Any, client: ProxiedClient) -> None:
    """Set the real client on a listener protocol (HttpClientSide, TcpClientSide: both have ``peer``)."""
    app.peer = client.source
    if hasattr(app, "destination"):
        app.destination = client.destination


class ClientAddressShim:
    """Under TLS the app's ``connection_made`` comes after the handshake and reads the socket's peer: this
    runs once then, re-asserts the real client and steps aside (``set_protocol``) for every later call."""

    def __init__(self, app: Any, client: ProxiedClient) -> None:
        self.app = app
        self.client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.set_protocol(cast(asyncio.BaseProtocol, self.app))
        self.app.connection_made(transport)
        assign_client(self.app, self.client)

    def connection_lost(self, exc: Exception | None) -> None:
        self.app.connection_lost(exc)  # the handshake failed before connection_made


def trusted(peer: Address, sources: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(peer[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in sources)


# Builds the listener's protocol (TLS included) for a connection, given the real client when there is one.
AppFactory = Callable[["ListenerRuntime", ProxiedClient | None], asyncio.BaseProtocol]


class ProxyHeaderReceiver(asyncio.Protocol):
    """The first protocol of a connection on a listener that accepts PROXY headers."""

    def __init__(self, runtime: ListenerRuntime, factory: AppFactory) -> None:
        self.runtime = runtime
        self.factory = factory
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if not peer or not trusted((peer[0], peer[1]), self.runtime.proxy_sources):
            self._hand_over(None, b"")
            return
        self.deadline = asyncio.get_running_loop().call_later(self.runtime.proxy_timeout, self._late)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            header = decode(self.buffer)
        except TruncatedHeader:
            return
        except ProxyProtocolError as exc:
            self._refuse(str(exc))
            return
        rest = self.buffer[header.length :]
        self.buffer = b""
        client = None
        if header.source is not None and header.destination is not None:
            client = ProxiedClient(header.source, header.destination)
        self._hand_over(client, rest)

    def eof_received(self) -> bool:
        self._refuse("connection closed before a complete PROXY header" if self.buffer else "no PROXY header")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self.transport = None

    def _late(self) -> None:
        self.deadline = None
        self._refuse(f"no complete PROXY header within {self.runtime.proxy_timeout:g} s")

    def _cancel_deadline(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _refuse(self, why: str) -> None:
        self._cancel_deadline()
        transport = self.transport
        if transport is None:
            return
        runtime = self.runtime
        runtime.stats.proxy_protocol_errors += 1
        peer = transport.get_extra_info("peername") or ("?", 0)
        ACCEPT_WARNINGS.warning(
            log,
            f"proxy:{runtime.key}",
            "%s %s: closing connection from %s:%s: %s",
            runtime.load_balancer.name,
            runtime.name,
            peer[0],
            peer[1],
            why,
        )
        self.transport = None
        transport.abort()

    def _hand_over(self, client: ProxiedClient | None, rest: bytes) -> None:
        self._cancel_deadline()
        transport = self.transport
        assert transport is not None
        self.transport = None
        runtime = self.runtime
        protocol = self.factory(runtime, client)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if client is not None and runtime.tls is None:
            assign_client(protocol, client)  # HttpClientSide reads the socket's peer in connection_made
        if rest:
            _feed(protocol, rest)


def _feed(protocol: asyncio.BaseProtocol, data: bytes) -> None:
    """Pass on the bytes that followed the header, to a plain or a buffered protocol (uvloop's SSL)."""
    if isinstance(protocol, asyncio.BufferedProtocol) or hasattr(protocol, "get_buffer"):
        buffered = cast(asyncio.BufferedProtocol, protocol)
        view = memoryview(data)
        while view:
            buffer = memoryview(buffered.get_buffer(len(view)))
            size = min(len(buffer), len(view))
            buffer[:size] = view[:size]
            buffered.buffer_updated(size)
            view = view[size:]
    else:
        cast(asyncio.Protocol, protocol).data_received(data)
