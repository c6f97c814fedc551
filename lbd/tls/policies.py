"""ELB security policies as OpenSSL settings: protocol versions and TLS 1.2-and-older cipher lists.

elb-semantics.md section 4 [N6]. TLS 1.3 suites are not configurable through Python's ssl module; the
three OpenSSL enables by default (TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384,
TLS_CHACHA20_POLY1305_SHA256) are exactly ELB's. Cipher order is the server's, as on ELB.
"""

from __future__ import annotations

import ssl
import warnings
from dataclasses import dataclass

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
