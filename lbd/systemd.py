"""sd_notify: tell systemd (Type=notify) when lbd is ready, reloading or stopping.

The protocol is one datagram of newline-separated ``KEY=VALUE`` assignments sent to the Unix socket named
by ``$NOTIFY_SOCKET`` (sd_notify(3)); a leading ``@`` means the abstract namespace. Without the variable
(not under systemd) every call is a no-op, so callers never need to check.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("lbd.systemd")


def notify(*assignments: str) -> bool:
    """Send ``assignments`` (e.g. ``"READY=1"``) to systemd; return whether a datagram was sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(assignments).encode())
    except OSError as exc:
        # A broken notify socket must never take the load balancer down with it.
        log.warning("sd_notify to %s failed: %s", address, exc)
        return False
    return True


def ready(status: str) -> bool:
    return notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")


def reloading(status: str = "reloading configuration") -> bool:
    # systemd >= 253 expects MONOTONIC_USEC with RELOADING=1 (Type=notify-reload); older ones ignore it.
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}", f"STATUS={status}")


def stopping(status: str = "draining connections") -> bool:
    return notify("STOPPING=1", f"STATUS={status}")


def status(text: str) -> bool:
    return notify(f"STATUS={text}")
