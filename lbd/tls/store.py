"""An ACM-style certificate store: certificates imported from PEM, validated the way ACM validates them,
kept one file per name in one directory.

Import rules (elb-semantics.md section 4, ACM import [T3][T4][T5]):

- certificate, chain and private key come separately, each PEM; the certificate is one X.509 v3
  certificate, valid now;
- the private key is unencrypted, at most 5 KB, RSA 2048/3072/4096 or EC P-256/P-384/P-521 (ACM also
  takes RSA 1024; lbd refuses it: no supported TLS policy should serve a 1024-bit key), and it matches
  the certificate;
- each chain certificate certifies the one before it, starting from the leaf, and the leaf is not in
  the chain.

Each name is one file, ``<store>/<name>.pem``: leaf, chain, then key, mode 0600, written to a temporary
file and renamed over the old one, so a reader (a listener reloading it) sees the old bundle or the new
one, never a mix.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from lbd.config.names import MAX_DAYS, MIN_DAYS, certificate_name_error, domain_name_error

MAX_KEY_BYTES = 5 * 1024
RSA_SIZES = (2048, 3072, 4096)
EC_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class CertificateRefused(ValueError):
    """An import ACM would refuse (or lbd does); the message says why."""


@dataclass(frozen=True)
class StoredCertificate:
    name: str
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key: PrivateKey
    path: Path | None = None

    @property
    def key_type(self) -> str:
        if isinstance(self.key, rsa.RSAPrivateKey):
            return f"RSA {self.key.key_size}"
        return f"EC {EC_CURVES.get(self.key.curve.name, self.key.curve.name)}"

    @property
    def is_ecdsa(self) -> bool:
        return isinstance(self.key, ec.EllipticCurvePrivateKey)

    @property
    def names(self) -> list[str]:
        """DNS names the certificate covers: its SANs, else its common name."""
        try:
            sans = self.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns = [n.lower() for n in sans.get_values_for_type(x509.DNSName)]
            ips = [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
            if dns or ips:
                return dns + ips
        except x509.ExtensionNotFound:
            pass
        return [str(a.value).lower() for a in self.leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]

    @property
    def subject(self) -> str:
        return self.leaf.subject.rfc4514_string()

    @property
    def fingerprint(self) -> str:
        return self.leaf.fingerprint(hashes.SHA256()).hex(":")

    def days_left(self, now: datetime.datetime | None = None) -> int:
        now = now or datetime.datetime.now(datetime.UTC)
        return (self.leaf.not_valid_after_utc - now).days

    def bundle(self) -> bytes:
        """Leaf, chain, key: what the file holds and what ssl.SSLContext.load_cert_chain reads."""
        pem = serialization.Encoding.PEM
        key = self.key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        return b"".join([self.leaf.public_bytes(pem), *(c.public_bytes(pem) for c in self.chain), key])

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "subject": self.subject,
            "names": self.names,
            "key": self.key_type,
            "not_before": self.leaf.not_valid_before_utc.isoformat(),
            "not_after": self.leaf.not_valid_after_utc.isoformat(),
            "days_left": self.days_left(),
            "fingerprint_sha256": self.fingerprint,
        }


# -- validation ----------------------------------------------------------------------------------------


def validate(
    name: str,
    cert_pem: bytes,
    key_pem: bytes,
    chain_pem: bytes = b"",
    now: datetime.datetime | None = None,
) -> StoredCertificate:
    """Check an import as ACM does; raise CertificateRefused saying what is wrong."""
    checked_name(name)
    leaf = _one_certificate(cert_pem)
    if leaf.version is not x509.Version.v3:
        raise CertificateRefused(f"the certificate is X.509 {leaf.version.name}; only X.509 v3 is accepted")
    now = now or datetime.datetime.now(datetime.UTC)
    if now < leaf.not_valid_before_utc:
        raise CertificateRefused(
            f"the certificate is not valid before {leaf.not_valid_before_utc.isoformat()}"
        )
    if now > leaf.not_valid_after_utc:
        raise CertificateRefused(f"the certificate expired on {leaf.not_valid_after_utc.isoformat()}")
    key = _private_key(key_pem)
    if leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise CertificateRefused("the private key does not match the certificate's public key")
    chain = _chain(leaf, chain_pem)
    return StoredCertificate(name, leaf, chain, key)


def _one_certificate(pem: bytes) -> x509.Certificate:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise CertificateRefused("the certificate is not a PEM-encoded X.509 certificate") from None
    if len(certs) != 1:
        raise CertificateRefused(
            f"the certificate file holds {len(certs)} certificates; "
            "give only the leaf (intermediates go in the chain)"
        )
    return certs[0]


def _private_key(pem: bytes) -> PrivateKey:
    if len(pem) > MAX_KEY_BYTES:
        raise CertificateRefused(f"the private key is {len(pem)} bytes; at most {MAX_KEY_BYTES} are accepted")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise CertificateRefused("the private key is encrypted; import it unencrypted") from None
    except ValueError:
        raise CertificateRefused("the private key is not a PEM-encoded private key") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size == 1024:
            raise CertificateRefused(
                "the private key is RSA 1024, which is too weak for any supported TLS policy; "
                "use RSA 2048, 3072 or 4096, or EC P-256, P-384 or P-521"
            )
        if key.key_size not in RSA_SIZES:
            raise CertificateRefused(f"RSA {key.key_size} keys are not accepted; use RSA 2048, 3072 or 4096")
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in EC_CURVES:
            raise CertificateRefused(f"EC curve {key.curve.name} is not accepted; use P-256, P-384 or P-521")
        return key
    raise CertificateRefused(
        f"{type(key).__name__} keys are not accepted; use RSA or EC (P-256, P-384, P-521)"
    )


def _chain(leaf: x509.Certificate, pem: bytes) -> tuple[x509.Certificate, ...]:
    if not pem.strip():
        return ()
    try:
        chain = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise CertificateRefused("the chain is not PEM-encoded X.509 certificates") from None
    previous = leaf
    for index, cert in enumerate(chain):
        if cert == leaf:
            raise CertificateRefused(
                f"chain certificate {index + 1} is the leaf itself; the chain must not include it"
            )
        try:
            previous.verify_directly_issued_by(cert)
        except (ValueError, TypeError, InvalidSignature):
            raise CertificateRefused(
                f"chain certificate {index + 1} ({cert.subject.rfc4514_string()}) did not issue "
                f"{'the certificate' if previous is leaf else f'chain certificate {index}'} "
                f"({previous.subject.rfc4514_string()}); give the chain in order, issuer of the leaf first"
            ) from None
        previous = cert
    return tuple(chain)


# -- the store -------------------------------------------------------------------------------------------


def checked_name(name: str) -> str:
    """``name``, if it is one file name in the store; else CertificateRefused (``../x`` and the like)."""
    problem = certificate_name_error(name)
    if problem is not None:
        raise CertificateRefused(problem)
    return name


class CertificateStore:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, name: str) -> Path:
        """The file of ``name``; CertificateRefused for a name that is not one file name in the store."""
        return self.directory / f"{checked_name(name)}.pem"

    def put(self, certificate: StoredCertificate, *, replace: bool = True) -> Path:
        """Write the bundle; with ``replace=False``, CertificateRefused if the name is taken."""
        target = self.path(certificate.name)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{certificate.name}.", dir=self.directory)
        try:
            os.fchmod(fd, 0o600)  # the private key is in it
            with os.fdopen(fd, "wb") as out:
                out.write(certificate.bundle())
                out.flush()
                os.fsync(out.fileno())
            if replace:
                os.replace(tmp, target)
            else:
                _link_new(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return target

    def get(self, name: str) -> StoredCertificate:
        data = self.path(name).read_bytes()
        certs = x509.load_pem_x509_certificates(data)
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise CertificateRefused(f"{name}: unsupported key type")
        return StoredCertificate(name, certs[0], tuple(certs[1:]), key, self.path(name))

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.pem") if not p.name.startswith("."))

    def delete(self, name: str) -> bool:
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            return False
        return True


def _link_new(tmp: str, target: Path) -> None:
    """Give ``tmp`` the name ``target`` only if no file has it: link(2) refuses an existing name, so a
    certificate imported meanwhile is not overwritten (an exists() check before a rename could)."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise CertificateRefused(
            f"a certificate named {target.stem} already exists in {target.parent}; give --force to replace it"
        ) from None


# -- certificates lbd makes itself ------------------------------------------------------------------------

MAX_COMMON_NAME = 64  # X.509's upper bound for a common name; the first domain becomes it


def check_request(name: str, domains: list[str], days: int) -> None:
    """What ``issue`` is asked for, refused with the reason before any key is made."""
    checked_name(name)
    if not MIN_DAYS <= days <= MAX_DAYS:
        raise CertificateRefused(f"days: must be {MIN_DAYS} to {MAX_DAYS} (ten years), got {days}")
    if not domains:
        raise CertificateRefused("give at least one domain")
    for domain in domains:
        problem = domain_name_error(domain)
        if problem is not None:
            raise CertificateRefused(problem)
    if len(domains[0]) > MAX_COMMON_NAME:
        raise CertificateRefused(
            f"domain {domains[0]!r}: the first domain is the common name, at most {MAX_COMMON_NAME} "
            "characters; put a shorter one first"
        )


def issue(
    name: str,
    domains: list[str],
    *,
    days: int = 365,
    key_type: str = "ec",
    ca: tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes] | None = None,
) -> StoredCertificate:
    """A new key and a certificate for ``domains``: self-signed, or signed by a local CA."""
    check_request(name, domains, days)
    key: PrivateKey = (
        ec.generate_private_key(ec.SECP256R1()) if key_type == "ec" else rsa.generate_private_key(65537, 2048)
    )
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])])
    issuer_name, signer = (ca[0].subject, ca[1]) if ca else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    leaf = builder.sign(signer, hashes.SHA256())
    chain = (ca[0],) if ca else ()
    return StoredCertificate(name, leaf, chain, key)
