"""TLS for listeners (application HTTPS, network TLS) and for connections to HTTPS/TLS targets.

A listener's certificates come from the store by name. Every handshake goes through the SNI callback,
which picks the certificates for the client's server name (lbd/tls/sni.py) and switches the handshake
to a context holding them. The table behind the callback is replaced when the store's files change, so
renewed certificates serve new handshakes within seconds, without a reload, and open connections keep
the one they started with. A replacement that does not load is refused and the old one keeps serving.
"""

from __future__ import annotations

import datetime
import logging
import os
import ssl
import tempfile
import weakref
from dataclasses import dataclass, field
from typing import cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lbd.listener.tls import ServerContext
from lbd.tls.policies import POLICIES
from lbd.tls.sni import SniTable
from lbd.tls.store import CertificateRefused, CertificateStore, StoredCertificate, validate

log = logging.getLogger("lbd.tls")

# ELB's ALPN policies for network TLS listeners [N6], in ELB's preference order ("HTTP1Only: the ALPN
# preference list is http/1.1, http/1.0", ...). OpenSSL picks the first of these the client also offers.
# Application HTTPS offers h2 and http/1.1 (lbd.runtime.application_alpn).
ALPN = {
    "HTTP1Only": ["http/1.1", "http/1.0"],
    "HTTP2Only": ["h2"],
    "HTTP2Optional": ["http/1.1", "http/1.0", "h2"],
    "HTTP2Preferred": ["h2", "http/1.1", "http/1.0"],
    "None": [],
}


class TlsConfigError(Exception):
    """A listener's certificates cannot be loaded; the message names the key path."""


@dataclass(frozen=True)
class Loaded:
    table: SniTable
    contexts: dict[tuple[str, ...], ssl.SSLContext]
    stamps: dict[str, tuple[int, int]]  # name -> (mtime_ns, size) of its file when loaded
    # The context and first certificate name of each of the table's choices, by the choice's identity
    # (the table returns the same tuples every time): a handshake finds it without a key of names.
    chosen: dict[int, tuple[ssl.SSLContext, str]] = field(default_factory=dict)


class ListenerTls:
    def __init__(
        self, store: CertificateStore, names: tuple[str, ...], policy: str, alpn: list[str], where: str
    ) -> None:
        self.store = store
        self.names = names
        self.policy = POLICIES[policy]
        self.alpn = alpn
        self.where = where
        self._server_names: weakref.WeakKeyDictionary[ssl.SSLObject, str] = weakref.WeakKeyDictionary()
        self._loaded = self._load()
        # Every handshake starts on this context; the SNI callback then moves it to the one holding the
        # certificates for the client's server name.
        self.context = self._new_context(self._loaded.table.default, ServerContext)
        self.context.sni_callback = self._select

    # -- handshakes --------------------------------------------------------------------------------------

    def _select(self, ssl_object: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        loaded = self._loaded
        chosen = loaded.table.select(server_name)
        found = loaded.chosen.get(id(chosen))
        if found is None:
            found = (loaded.contexts[tuple(c.name for c in chosen)], chosen[0].name)
        ssl_object.context = found[0]
        handshake = getattr(ssl_object, "handshake", None)  # lbd.listener.tls's, on the front context
        if handshake is not None:
            handshake.sni = (server_name or "-", found[1])
        elif server_name:
            self._server_names[ssl_object] = server_name  # Python does not expose it server-side

    def handshake_info(self, ssl_object: ssl.SSLObject) -> tuple[str, str]:
        """(the client's SNI or "-", the name of the certificate chosen for it)."""
        handshake = getattr(ssl_object, "handshake", None)
        if handshake is not None and handshake.sni is not None:
            return cast("tuple[str, str]", handshake.sni)
        server_name = self._server_names.pop(ssl_object, None)
        return server_name or "-", self._loaded.table.select(server_name)[0].name

    # -- loading and renewal -----------------------------------------------------------------------------

    def _load(self) -> Loaded:
        certificates: list[StoredCertificate] = []
        stamps: dict[str, tuple[int, int]] = {}
        for index, name in enumerate(self.names):
            path = self.store.path(name)
            try:
                stat = path.stat()
                certificates.append(_checked(name, path.read_bytes()))
            except FileNotFoundError:
                raise TlsConfigError(
                    f"{self.where}.certificates[{index}]: no certificate named {name!r} in the store "
                    f"{self.store.directory} (lbd cert import --name {name} ...)"
                ) from None
            except (OSError, CertificateRefused) as exc:
                raise TlsConfigError(f"{self.where}.certificates[{index}]: {name}: {exc}") from None
            stamps[name] = (stat.st_mtime_ns, stat.st_size)
        table = SniTable(certificates)
        contexts: dict[tuple[str, ...], ssl.SSLContext] = {}
        by_choice: dict[int, tuple[ssl.SSLContext, str]] = {}
        for chosen in [table.default, *table.exact.values(), *table.wildcard.values()]:
            key = tuple(c.name for c in chosen)
            if key not in contexts:
                contexts[key] = self._new_context(chosen)
            by_choice[id(chosen)] = (contexts[key], chosen[0].name)
        return Loaded(table, contexts, stamps, by_choice)

    def _new_context(
        self, certificates: tuple[StoredCertificate, ...], kind: type[ssl.SSLContext] = ssl.SSLContext
    ) -> ssl.SSLContext:
        context = kind(ssl.PROTOCOL_TLS_SERVER)
        self.policy.apply(context)
        for certificate in certificates:
            # load_cert_chain reads files: give it the bytes that were validated, not the store file,
            # which may have been replaced since.
            with tempfile.NamedTemporaryFile(prefix="lbd-cert-", suffix=".pem") as copy:
                os.fchmod(copy.fileno(), 0o600)
                copy.write(certificate.bundle())
                copy.flush()
                context.load_cert_chain(copy.name)
        if self.alpn:
            context.set_alpn_protocols(self.alpn)
        return context

    def changed(self) -> bool:
        return self._stamps_now() != self._loaded.stamps

    def renew(self) -> bool:
        """Reload the certificates if their files changed; keep the old ones if the new ones are broken."""
        if not self.changed():
            return False
        try:
            loaded = self._load()
        except (TlsConfigError, ssl.SSLError, ValueError) as exc:
            log.error(
                "%s: certificate change refused, the previous certificates keep serving: %s", self.where, exc
            )
            # Remember the broken files so the error is logged once, not every second.
            old = self._loaded
            self._loaded = Loaded(old.table, old.contexts, self._stamps_now(), old.chosen)
            return False
        self._loaded = loaded
        log.info("%s: certificates reloaded from the store (%s)", self.where, ", ".join(self.names))
        return True

    def _stamps_now(self) -> dict[str, tuple[int, int]]:
        """(mtime, size) of each certificate file; (0, 0) for one that cannot be read."""
        stamps = {}
        for name in self.names:
            try:
                stat = self.store.path(name).stat()
            except OSError:
                stamps[name] = (0, 0)
                continue
            stamps[name] = (stat.st_mtime_ns, stat.st_size)
        return stamps


def _checked(name: str, bundle: bytes) -> StoredCertificate:
    """A store file as a listener will serve it: parse it and apply the import checks again."""
    certs = x509.load_pem_x509_certificates(bundle)
    key = serialization.load_pem_private_key(bundle, password=None)
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    certificate = validate(
        name,
        certs[0].public_bytes(pem),
        key_pem,
        b"".join(c.public_bytes(pem) for c in certs[1:]),
        datetime.datetime.now(datetime.UTC),
    )
    return certificate


def target_context(verify: bool = False, ca_file: str | None = None) -> ssl.SSLContext:
    """For HTTPS and TLS target groups: like ELB, target certificates are not verified unless asked."""
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
