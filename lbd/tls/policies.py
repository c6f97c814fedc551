"""ELB security policies as OpenSSL settings: protocol versions, TLS 1.2-and-older cipher lists and
key-exchange groups.

elb-semantics.md section 4 [N6]. TLS 1.3 suites are not configurable through Python's ssl module; the
three OpenSSL enables by default (TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384,
TLS_CHACHA20_POLY1305_SHA256) are exactly ELB's. Cipher order is the server's, as on ELB.

Key exchange is ECDHE only, as on ELB. OpenSSL's default group list also has the finite-field groups
(ffdhe2048 ... ffdhe8192) for TLS 1.3: a server-side handshake took 0.22 ms with X25519 but 10 ms with
ffdhe2048 and 45 ms with ffdhe4096 (docs/tls.md), all of it on the worker's event loop, so clients asking
only for ffdhe could stall every connection of a worker. Python's
ssl has no ``set_groups`` (only ``set_ecdh_curve``, one curve, TLS 1.2), so lbd calls OpenSSL's
``SSL_CTX_set1_groups_list`` through ctypes on the context's ``SSL_CTX`` (see ``set_groups``).
"""

from __future__ import annotations

import _ssl
import ctypes
import ssl
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lbd.config.schema import Config

# ELB's ECDHE groups, in the server's order of preference (X25519 is the fastest). No X448, no ffdhe.
GROUPS = ("X25519", "P-256", "P-384", "P-521")
_SSL_CTRL_SET_GROUPS_LIST = 92  # SSL_CTX_set1_groups_list is a macro over SSL_CTX_ctrl (ssl.h)

_GCM = ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"]
_GCM256 = ["ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384"]
_CBC_SHA2 = [
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-RSA-AES128-SHA256",
    "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-RSA-AES256-SHA384",
]
_RSA_KX = ["AES128-GCM-SHA256", "AES128-SHA256", "AES256-GCM-SHA384", "AES256-SHA256"]
_SHA1 = [
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-SHA",
    "AES256-SHA",
]
V10, V12, V13 = ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


@dataclass(frozen=True)
class Policy:
    name: str
    minimum: ssl.TLSVersion
    maximum: ssl.TLSVersion
    ciphers: tuple[str, ...]  # TLS 1.2 and older; empty when the policy is TLS 1.3 only

    def apply(self, context: ssl.SSLContext) -> None:
        with warnings.catch_warnings():
            # Python deprecates TLS 1.0/1.1; ELB's legacy policies still offer them, on purpose.
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = self.minimum
            context.maximum_version = self.maximum
        if self.ciphers:
            # Debian's OpenSSL refuses TLS 1.0/1.1 at its default security level; the legacy policies ask
            # for them on purpose.
            level = ":@SECLEVEL=0" if self.minimum < V12 else ""
            context.set_ciphers(":".join(self.ciphers) + level)
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        set_groups(context, GROUPS)


@cache
def _libssl() -> ctypes.CDLL:
    """The libssl Python's ssl module runs on (symbols resolve through _ssl's own dependencies)."""
    lib = ctypes.CDLL(getattr(_ssl, "__file__", None))  # None: _ssl is built into the interpreter
    lib.SSL_CTX_ctrl.restype = ctypes.c_long
    lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    lib.SSL_CTX_get_options.restype = ctypes.c_uint64
    lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
    return lib


def _ssl_ctx(context: ssl.SSLContext) -> int:
    """The SSL_CTX* of a context: CPython's PySSLContext holds it right after PyObject_HEAD.

    That layout is not an API, so the pointer is checked before use: OpenSSL must report the same options
    for it as the context does (``context.options`` is SSL_CTX_get_options on the real pointer).
    """
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not pointer or _libssl().SSL_CTX_get_options(pointer) != context.options:
        raise RuntimeError("cannot find the SSL_CTX of an ssl.SSLContext on this Python build")
    return pointer


def set_groups(context: ssl.SSLContext, groups: tuple[str, ...]) -> None:
    """Limit the key-exchange groups (TLS 1.3 key shares and TLS 1.2 ECDHE curves) of a context."""
    names = ":".join(groups).encode()
    if _libssl().SSL_CTX_ctrl(_ssl_ctx(context), _SSL_CTRL_SET_GROUPS_LIST, 0, names) != 1:
        raise ssl.SSLError(f"OpenSSL refused the key-exchange groups {':'.join(groups)}")


@cache
def missing_ciphers(policy: str) -> tuple[str, ...]:
    """The ciphers a policy names that the local OpenSSL does not have (3DES on OpenSSL 3, for one)."""
    missing = []
    for cipher in POLICIES[policy].ciphers:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.set_ciphers(f"{cipher}:@SECLEVEL=0")
        except ssl.SSLError:
            missing.append(cipher)
            continue
        if cipher not in {c["name"] for c in context.get_ciphers()}:
            missing.append(cipher)
    return tuple(missing)


def policy_warnings(config: Config) -> Iterator[str]:
    """For ``lbd check``: TLS listeners whose policy names ciphers this OpenSSL cannot offer."""
    for i, lb in enumerate(config.load_balancers):
        for j, listener in enumerate(lb.listeners):
            if listener.protocol not in ("HTTPS", "TLS"):
                continue
            missing = missing_ciphers(listener.ssl_policy)
            if missing:
                yield (
                    f"load_balancers[{i}].listeners[{j}].ssl_policy: {listener.ssl_policy}: not offered, "
                    f"the local OpenSSL ({ssl.OPENSSL_VERSION}) does not have: {', '.join(missing)}"
                )


_LEGACY = (*_GCM, *_CBC_SHA2, *_GCM256, *_SHA1, *_RSA_KX)
POLICIES = {
    p.name: p
    for p in (
        Policy("ELBSecurityPolicy-TLS13-1-2-2021-06", V12, V13, (*_GCM, *_CBC_SHA2, *_GCM256)),
        Policy("ELBSecurityPolicy-TLS13-1-2-Res-2021-06", V12, V13, (*_GCM, *_GCM256)),
        # ELB's post-quantum variant adds hybrid key exchange OpenSSL 3.0 does not have: the same suites.
        Policy("ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09", V12, V13, (*_GCM, *_GCM256)),
        Policy("ELBSecurityPolicy-TLS13-1-3-2021-06", V13, V13, ()),
        Policy("ELBSecurityPolicy-FS-1-2-Res-2020-10", V12, V12, (*_GCM, *_GCM256)),
        Policy("ELBSecurityPolicy-TLS-1-2-2017-01", V12, V12, (*_GCM, *_CBC_SHA2, *_GCM256, *_RSA_KX)),
        Policy("ELBSecurityPolicy-2016-08", V10, V12, _LEGACY),
        Policy("ELBSecurityPolicy-2015-05", V10, V12, _LEGACY),
        Policy("ELBSecurityPolicy-TLS-1-0-2015-04", V10, V12, (*_LEGACY, "DES-CBC3-SHA")),
    )
}
DEFAULT = "ELBSecurityPolicy-TLS13-1-2-2021-06"
