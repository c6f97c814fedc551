"""Which certificates answer a TLS handshake, by SNI (elb-semantics.md section 4).

The listener's certificates are matched against the client's server name: an exact name first, then a
wildcard covering one label (``*.example.com`` covers ``a.example.com``, not ``a.b.example.com`` nor
``example.com``), then the listener's default certificate (its first) when there is no SNI or no match.

Among several matching certificates ALB prefers ECDSA when the client supports it. Python's ssl module
does not show the client's signature algorithms to the SNI callback, so lbd lets OpenSSL choose: the
context for a server name holds one RSA and one ECDSA certificate, and OpenSSL serves the ECDSA one to
clients that can use it. Among several of the same key type the longest key wins, then the one valid
longest (ALB's order after the key type).
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric import rsa

from lbd.tls.store import StoredCertificate


def _strength(certificate: StoredCertificate) -> tuple[int, float]:
    key = certificate.key
    size = key.key_size if isinstance(key, rsa.RSAPrivateKey) else key.curve.key_size
    return size, certificate.leaf.not_valid_after_utc.timestamp()


def best_per_key_type(candidates: Sequence[StoredCertificate]) -> tuple[StoredCertificate, ...]:
    """At most one ECDSA and one RSA certificate: OpenSSL picks between those two per client."""
    chosen: list[StoredCertificate] = []
    for ecdsa in (True, False):
        same = [c for c in candidates if c.is_ecdsa == ecdsa]
        if same:
            chosen.append(max(same, key=_strength))
    return tuple(chosen)


class SniTable:
    """Server name -> the certificates to present, computed once per listener and certificate set."""

    def __init__(self, certificates: Sequence[StoredCertificate]) -> None:
        if not certificates:
            raise ValueError("a TLS listener needs at least one certificate")
        self.default = best_per_key_type([certificates[0]])
        exact: dict[str, list[StoredCertificate]] = {}
        wildcard: dict[str, list[StoredCertificate]] = {}
        for certificate in certificates:
            for name in certificate.names:
                if name.startswith("*."):
                    wildcard.setdefault(name[2:], []).append(certificate)
                else:
                    exact.setdefault(name, []).append(certificate)
        self.exact = {name: best_per_key_type(found) for name, found in exact.items()}
        self.wildcard = {suffix: best_per_key_type(found) for suffix, found in wildcard.items()}

    def select(self, server_name: str | None) -> tuple[StoredCertificate, ...]:
        if not server_name:
            return self.default
        name = server_name.lower().rstrip(".")
        found = self.exact.get(name)
        if found:
            return found
        _, dot, parent = name.partition(".")
        if dot:
            found = self.wildcard.get(parent)
            if found:
                return found
        return self.default
