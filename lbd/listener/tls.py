"""The TLS layer in front of a listener's protocol (application HTTPS, network TLS), on uvloop's SSL.

Every accepted connection gets uvloop's compiled ``SSLProtocol`` around the listener's protocol: uvloop's
stream hands it the socket's bytes through a C fast path (``get_buffer_impl``/``buffer_updated_impl``), so
the record layer runs without a Python frame per read, unlike asyncio's pure-Python ``sslproto``.

lbd builds the ``SSLProtocol`` itself, in the accept factory, rather than passing ``ssl=`` to
``create_server``: it is what uvloop's server does internally (streamserver.pyx ``_on_listen``), with one
difference that matters. The handshake waiter is lbd's, so a failed handshake (refused by OpenSSL,
aborted by the client, timed out) is counted (ClientTLSNegotiationErrorCount) and logged. With
``create_server(ssl=...)`` uvloop keeps the waiter, and since ``ssl.SSLError`` is an ``OSError`` its
``_fatal_error`` does not even call the loop's exception handler: failures would vanish. (Server-side
``start_tls`` is not needed either.) The listener's protocol sees ``connection_made`` once TLS is up.

Two small Python hooks run once per connection, never per record:

- ``ServerContext.wrap_bio`` (``SSLContext.sslobject_class`` is the documented way to customise the
  ``SSLObject`` a context makes) ties the handshake's ``SSLObject`` to the connection. It also binds the
  object's ``read``, ``write`` and ``pending`` to the C methods of ``_ssl`` underneath: ``ssl.SSLObject``
  defines them as Python functions that only forward, and uvloop caches whatever the attributes are, so
  without this every TLS record would still cost a Python frame.
- ``ServerSSLObject.do_handshake``: when OpenSSL refuses a handshake it writes a fatal alert
  (protocol_version, handshake_failure, inappropriate_fallback, ...) into the outgoing memory BIO, but
  uvloop (like asyncio) closes the socket without sending what is left there, so the client sees a bare
  EOF. The hook writes those bytes to the socket before uvloop closes it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

import uvloop
from uvloop.loop import SSLProtocol  # type: ignore[attr-defined]  # not in uvloop's stubs

from lbd.observe.stats import ListenerStats

log = logging.getLogger("lbd.tls")

HANDSHAKE_TIMEOUT = 10.0
_AGAIN = (ssl.SSLWantReadError, ssl.SSLWantWriteError, ssl.SSLSyscallError)


class Handshake:
    """One connection's handshake, shared by its SSLProtocol and its SSLObject."""

    __slots__ = ("established", "outgoing", "sni", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None
        self.outgoing: ssl.MemoryBIO | None = None
        self.established = False
        # (the client's server name or "-", the certificate chosen for it): set by the SNI callback for
        # the access log, on the connection's own object rather than in a table keyed by SSLObject.
        self.sni: tuple[str, str] | None = None


# The handshake whose connection_made is running. uvloop's SSLProtocol.connection_made calls wrap_bio
# synchronously (it starts the handshake), on the loop's one thread, so this is never ambiguous.
_connecting: Handshake | None = None


class ServerSSLObject(ssl.SSLObject):
    handshake: Handshake | None = None

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except _AGAIN:
            raise  # uvloop flushes the outgoing BIO and waits for more bytes
        except ssl.SSLError:
            self._send_alert()
            raise
        if self.handshake is not None:
            self.handshake.established = True

    def _send_alert(self) -> None:
        """Send the fatal alert OpenSSL produced; uvloop closes the socket right after this returns."""
        handshake = self.handshake
        if handshake is None or handshake.outgoing is None or handshake.transport is None:
            return
        alert = handshake.outgoing.read()
        if alert and not handshake.transport.is_closing():
            # uvloop writes at once when nothing is queued (nothing is, mid-handshake), so the alert is in
            # the kernel before the close that follows; closing then sends it ahead of the FIN.
            handshake.transport.write(alert)  # type: ignore[attr-defined]


class ServerContext(ssl.SSLContext):
    """A listener's front context: the one every handshake starts on, before SNI picks the certificates."""

    sslobject_class = ServerSSLObject

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        ssl_object = super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        inner = getattr(ssl_object, "_sslobj", None)  # CPython's _ssl._SSLSocket for this connection
        if inner is not None:
            # Same arguments and results as SSLObject.read(len, buffer)/write(data)/pending().
            vars(ssl_object).update(read=inner.read, write=inner.write, pending=inner.pending)
        handshake = _connecting
        if handshake is not None and isinstance(ssl_object, ServerSSLObject):
            handshake.outgoing = outgoing
            ssl_object.handshake = handshake
        return ssl_object


class ServerTlsProtocol(SSLProtocol):  # type: ignore[misc]
    """uvloop's SSLProtocol with lbd's handshake waiter; the record path stays in uvloop's C code."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        app: asyncio.BaseProtocol,
        context: ssl.SSLContext,
        stats: ListenerStats,
    ) -> None:
        waiter: asyncio.Future[None] = loop.create_future()
        super().__init__(
            loop, app, context, waiter, server_side=True, ssl_handshake_timeout=HANDSHAKE_TIMEOUT
        )
        self.lbd_handshake = Handshake()
        self.lbd_stats = stats
        waiter.add_done_callback(self._handshake_done)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        global _connecting
        self.lbd_handshake.transport = transport
        _connecting = self.lbd_handshake
        try:
            super().connection_made(transport)
        finally:
            _connecting = None

    def _handshake_done(self, waiter: asyncio.Future[None]) -> None:
        # uvloop resolves the waiter once per connection: with the handshake's error, with the
        # connection's error when it is lost or times out mid-handshake, or with None both after a
        # successful handshake and when the connection is closed cleanly before one: "established" tells
        # those two apart.
        handshake = self.lbd_handshake
        handshake.transport = handshake.outgoing = None  # drop the references the handshake needed
        if waiter.cancelled():
            return
        exc = waiter.exception()
        if exc is None and handshake.established:
            return
        self.lbd_stats.client_tls_negotiation_errors += 1
        log.info("TLS handshake failed: %s", _describe(exc))


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "connection closed before the handshake completed"
    if isinstance(exc, type):  # uvloop passes the ConnectionResetError class itself on EOF
        return "connection closed by the client during the handshake"
    if isinstance(exc, ConnectionResetError) and not str(exc):
        return "connection closed by the client during the handshake"
    return str(exc) or type(exc).__name__


def tls_protocol(
    app: asyncio.BaseProtocol,
    context: ssl.SSLContext,
    stats: ListenerStats,
    loop: asyncio.AbstractEventLoop | None = None,
) -> asyncio.BaseProtocol:
    """``loop``: the worker's, when it has it at hand (asyncio.get_running_loop() costs a getpid())."""
    loop = loop or asyncio.get_running_loop()
    if not isinstance(loop, uvloop.Loop):
        raise RuntimeError("TLS listeners run on uvloop's SSL transport; the worker's loop is not uvloop")
    return ServerTlsProtocol(loop, app, context, stats)
