"""The TLS layer in front of a listener's protocol (application HTTPS, network TLS).

Each accepted connection gets asyncio's SSL protocol wrapped around the listener's protocol, rather than
``create_server(ssl=...)``, for one reason: its handshake waiter tells lbd when a handshake fails, so
failures are counted (ClientTLSNegotiationErrorCount) and logged instead of vanishing. (uvloop's own
server-side ``start_tls`` stalls on an accepted socket, and its SSL server reports nothing on failure.)
The listener's protocol sees ``connection_made`` only once TLS is established.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from asyncio import sslproto

from lbd.observe.stats import ListenerStats
from lbd.tls.server import HANDSHAKE_TIMEOUT

log = logging.getLogger("lbd.tls")


def tls_protocol(
    app: asyncio.Protocol, context: ssl.SSLContext, stats: ListenerStats
) -> asyncio.BaseProtocol:
    loop = asyncio.get_running_loop()
    handshake = loop.create_future()

    def done(future: asyncio.Future[None]) -> None:
        if future.cancelled() or future.exception() is None:
            return
        stats.client_tls_negotiation_errors += 1
        log.info("TLS handshake failed: %s", future.exception())

    handshake.add_done_callback(done)
    return sslproto.SSLProtocol(
        loop, app, context, handshake, server_side=True, ssl_handshake_timeout=HANDSHAKE_TIMEOUT
    )
