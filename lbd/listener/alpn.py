"""Which protocol serves a new application-listener connection: HTTP/1.1 or HTTP/2.

- HTTPS: the protocol TLS ALPN negotiated (RFC 7301; RFC 9113 3.2): ``h2`` gets the HTTP/2 connection,
  anything else (``http/1.1``, ``http/1.0`` or no ALPN) the HTTP/1.1 one. ``AlpnSwitch`` is the app
  protocol uvloop's SSL transport sees first; on ``connection_made`` (the handshake is done) it puts the
  chosen protocol in its place, so it costs nothing per read.
- HTTP with ``h2c: true`` (an lbd extension: ALB offers no cleartext HTTP/2): the first bytes decide.
  The HTTP/2 connection preface (RFC 9113 3.4) gets HTTP/2 with prior knowledge; anything else HTTP/1.1.
  ``Upgrade: h2c`` from an HTTP/1.1 client is not honoured (the request is served as HTTP/1.1, and the
  Upgrade field, hop-by-hop, never reaches a target).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, cast

from lbd.http.proxy import HttpClientSide

if TYPE_CHECKING:
    from lbd.http.h2front import H2ClientSide
    from lbd.http.upstream import UpstreamPool
    from lbd.listener.tracker import ConnectionTracker
    from lbd.runtime import HttpListenerRuntime, ListenerSlot

# The HTTP/2 connection preface (RFC 9113 3.4), as lbd.http.h2front has it: that module (and the h2
# library) is imported when a connection negotiates h2, or a listener offers it (``load_h2``), not before.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def load_h2() -> type[H2ClientSide]:
    from lbd.http.h2front import H2ClientSide

    return H2ClientSide


class _Chooser:
    def __init__(
        self,
        listener: HttpListenerRuntime,
        tracker: ConnectionTracker,
        pool: UpstreamPool,
        slot: ListenerSlot | None,
    ) -> None:
        self.listener = listener
        self.tracker = tracker
        self.pool = pool
        self.slot = slot
        # The client's real address when a PROXY header named it (lbd/listener/proxy.py assign_client):
        # handed on to the protocol chosen, which would otherwise read the socket's peer.
        self.peer: tuple[str, int] = ("", 0)

    def _hand_on_peer(self, app: object) -> None:
        if self.peer[0]:
            app.peer = self.peer  # type: ignore[attr-defined]

    def _http1(self) -> asyncio.Protocol:
        factory = getattr(
            self.listener, "client_side", HttpClientSide
        )  # a distribution's: lbd/edge/server.py
        return cast(asyncio.Protocol, factory(self.listener, self.tracker, self.pool, self.slot))

    def _h2(self) -> H2ClientSide:
        return load_h2()(self.listener, self.tracker, self.pool, self.slot)


class AlpnSwitch(_Chooser):
    """HTTPS: serve the connection with the protocol ALPN chose."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            app = self._http1()
            transport.set_protocol(app)
            app.connection_made(transport)
            self._hand_on_peer(app)
            return
        h2 = self._h2()
        transport.set_protocol(cast(asyncio.Protocol, h2))
        h2.connection_made(transport, tls_info(self.listener, ssl_object))
        self._hand_on_peer(h2)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # only before a handshake completed, when there is nothing to clean up

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


def tls_info(listener: HttpListenerRuntime, ssl_object: ssl.SSLObject) -> tuple[str, str, str, str] | None:
    """For the access log: ssl_cipher, ssl_protocol, domain_name, chosen_cert_arn."""
    if listener.tls is None:
        return None
    cipher = ssl_object.cipher()
    server_name, certificate = listener.tls.handshake_info(ssl_object)
    return (cipher[0] if cipher else "-", ssl_object.version() or "-", server_name, certificate)


class PriorKnowledge(_Chooser):
    """HTTP with h2c: the connection preface picks HTTP/2; anything else is HTTP/1.1."""

    def __init__(
        self,
        listener: HttpListenerRuntime,
        tracker: ConnectionTracker,
        pool: UpstreamPool,
        slot: ListenerSlot | None,
    ) -> None:
        super().__init__(listener, tracker, pool, slot)
        self.transport: asyncio.Transport | None = None
        self.received = b""
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        # A client that sends nothing is closed after the idle timeout, as on any listener.
        self._timer = asyncio.get_running_loop().call_later(self.listener.idle_timeout, self._idle)

    def data_received(self, data: bytes) -> None:
        received = self.received + data
        if len(received) < len(PREFACE) and PREFACE.startswith(received):
            self.received = received  # too short to tell yet
            return
        transport = self.transport
        assert transport is not None
        if self._timer is not None:
            self._timer.cancel()
        h2 = received.startswith(PREFACE)
        app = cast(asyncio.Protocol, self._h2()) if h2 else self._http1()
        transport.set_protocol(app)
        app.connection_made(transport)
        self._hand_on_peer(app)
        app.data_received(received)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.transport = None

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def _idle(self) -> None:
        if self.transport is not None:
            self.transport.close()
