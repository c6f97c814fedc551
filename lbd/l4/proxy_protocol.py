"""PROXY protocol (HAProxy's "The PROXY protocol", versions 1 and 2): the header a load balancer sends a
back end ahead of a connection's bytes, naming the client's address.

Minimal version for classic load balancers: only ``encode_v1``. The network load balancer work replaces this
module with the full codec (v2 and decoding) keeping ``encode_v1``'s signature.
"""

from __future__ import annotations

import ipaddress


def encode_v1(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """``PROXY TCP4 <src> <dst> <sport> <dport>\\r\\n`` (or TCP6), ``PROXY UNKNOWN\\r\\n`` when the addresses
    are not both IPv4 or both IPv6 (spec section 2.1: the receiver then uses the real connection's)."""
    try:
        src = ipaddress.ip_address(source[0])
        dst = ipaddress.ip_address(destination[0])
    except ValueError:
        return b"PROXY UNKNOWN\r\n"
    if isinstance(src, ipaddress.IPv6Address) and src.ipv4_mapped is not None:
        src = src.ipv4_mapped
    if isinstance(dst, ipaddress.IPv6Address) and dst.ipv4_mapped is not None:
        dst = dst.ipv4_mapped
    if src.version != dst.version or not (0 <= source[1] <= 65535 and 0 <= destination[1] <= 65535):
        return b"PROXY UNKNOWN\r\n"
    family = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {family} {src.compressed} {dst.compressed} {source[1]} {destination[1]}\r\n".encode()
