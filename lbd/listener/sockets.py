"""Listening sockets.

Each worker binds its own SO_REUSEPORT socket for every listener, after it has started, so the kernel
spreads new connections evenly over the workers (one socket shared across forked workers concentrates
load on whichever process wakes first).
"""

from __future__ import annotations

import errno
import socket

from lbd.runtime import ListenerKey

BACKLOG = 4096


class BindError(Exception):
    def __init__(self, key: ListenerKey, exc: OSError) -> None:
        reason = {
            errno.EADDRINUSE: "address already in use by another process",
            errno.EACCES: "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)",
            errno.EADDRNOTAVAIL: "address not available on this host",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        super().__init__(f"cannot listen on {key}: {reason}")
        self.key = key


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def bind_listener(key: ListenerKey, *, reuse_port: bool = True) -> socket.socket:
    kind = socket.SOCK_DGRAM if key.transport == "udp" else socket.SOCK_STREAM
    sock = socket.socket(_family(key.address), kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if sock.family == socket.AF_INET6:
            # "::" means IPv6 only; an IPv4 listener on the same port is a separate listener.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((key.address, key.port))
        if kind == socket.SOCK_STREAM:
            sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise BindError(key, exc) from exc
    return sock


def probe_free(key: ListenerKey) -> None:
    """Raise BindError if another process already holds ``key``.

    Workers bind with SO_REUSEPORT, which would silently share the port with any other process of the same
    user that also set it (a second lbd, say) and split the traffic. Binding once *without* SO_REUSEPORT
    first detects that.
    """
    bind_listener(key, reuse_port=False).close()
