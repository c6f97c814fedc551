"""``lbd cert import | list | delete | request``: the certificate store from the command line.

The store is ``--store DIR``, or ``certificates.store`` of the config given with ``-c FILE``. Every
refusal says why (exit 2); a missing name exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lbd.config.issues import ConfigError
from lbd.config.names import MAX_DAYS, MIN_DAYS

if TYPE_CHECKING:
    from lbd.tls.store import CertificateStore

# Every command builds the parser of every other (lbd/cli.py), ``lbd run`` too: the store and cryptography
# are imported by the cert commands when they run, so the supervisor does not hold them.

EXIT_OK, EXIT_MISSING, EXIT_REFUSED = 0, 1, 2


def store_of(args: argparse.Namespace) -> CertificateStore:
    from lbd.tls.store import CertificateStore

    if args.store:
        return CertificateStore(args.store)
    if args.config:
        try:
            from lbd.config.loader import load_config  # (not with the CLI's parser: lbd/validator.py)

            return CertificateStore(load_config(args.config).certificates.store)
        except ConfigError as exc:
            sys.exit(f"{args.config}: {exc}")
    sys.exit("give the store with --store DIR, or a config with -c FILE (certificates.store)")


def _read(path: str | None, what: str) -> bytes:
    from lbd.tls.store import CertificateRefused

    if not path:
        return b""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CertificateRefused(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def cmd_import(args: argparse.Namespace) -> int:
    from lbd.tls.store import CertificateRefused, validate

    store = store_of(args)
    try:
        certificate = validate(
            args.name,
            _read(args.cert, "certificate"),
            _read(args.key, "private key"),
            _read(args.chain, "chain"),
        )
    except CertificateRefused as exc:
        print(f"lbd cert import: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    replaced = store.path(args.name).exists()
    path = store.put(certificate)
    info = certificate.describe()
    verb = "replaced" if replaced else "imported"
    print(
        f"{verb} {args.name}: {info['subject']}, {', '.join(certificate.names)}, "
        f"{certificate.key_type}, valid until {info['not_after']} ({path})"
    )
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    store = store_of(args)
    entries = []
    for name in store.names():
        try:
            entries.append(store.get(name).describe())
        except (OSError, ValueError) as exc:
            entries.append({"name": name, "error": str(exc)})
    if args.json:
        print(json.dumps(entries, indent=2))
        return EXIT_OK
    if not entries:
        print(f"no certificates in {store.directory}")
        return EXIT_OK
    print(f"{'NAME':<20} {'KEY':<9} {'NOT AFTER':<20} {'DAYS':>5}  NAMES / SUBJECT / SHA-256")
    for entry in entries:
        if "error" in entry:
            print(f"{entry['name']:<20} unreadable: {entry['error']}")
            continue
        names = ", ".join(str(n) for n in entry["names"])  # type: ignore[attr-defined]
        print(
            f"{entry['name']:<20} {entry['key']:<9} {str(entry['not_after'])[:19]:<20} "
            f"{entry['days_left']:>5}  {names}  [{entry['subject']}]  {entry['fingerprint_sha256']}"
        )
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    from lbd.tls.store import CertificateRefused

    store = store_of(args)
    try:
        deleted = store.delete(args.name)
    except CertificateRefused as exc:
        print(f"lbd cert delete: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    if not deleted:
        print(f"lbd cert delete: no certificate named {args.name} in {store.directory}", file=sys.stderr)
        return EXIT_MISSING
    print(f"deleted {args.name}")
    return EXIT_OK


def cmd_request(args: argparse.Namespace) -> int:
    """A new certificate for tests and internal use: self-signed, or signed by a local CA (--ca)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from lbd.tls.store import CertificateRefused, check_request, issue

    store = store_of(args)
    try:
        check_request(args.name, args.domain, args.days)
    except CertificateRefused as exc:
        print(f"lbd cert request: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    if store.path(args.name).exists() and not args.force:
        print(_exists(store, args.name), file=sys.stderr)
        return EXIT_REFUSED
    ca = None
    if args.ca:
        try:
            ca_cert = x509.load_pem_x509_certificate(_read(args.ca, "CA certificate"))
            ca_key = serialization.load_pem_private_key(
                _read(args.ca_key or args.ca, "CA key"), password=None
            )
        except (CertificateRefused, ValueError, TypeError) as exc:
            print(f"lbd cert request: cannot use the CA: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        if not isinstance(ca_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            print("lbd cert request: the CA key must be RSA or EC", file=sys.stderr)
            return EXIT_REFUSED
        ca = (ca_cert, ca_key)
    certificate = issue(args.name, args.domain, days=args.days, key_type=args.key_type, ca=ca)
    try:
        path = store.put(certificate, replace=args.force)
    except CertificateRefused:  # imported meanwhile: put refuses rather than overwrite it
        print(_exists(store, args.name), file=sys.stderr)
        return EXIT_REFUSED
    signer = f"signed by {ca[0].subject.rfc4514_string()}" if ca else "self-signed"
    print(f"created {args.name}: {', '.join(args.domain)}, {certificate.key_type}, {signer} ({path})")
    return EXIT_OK


def _exists(store: CertificateStore, name: str) -> str:
    return (
        f"lbd cert request: refused: a certificate named {name} already exists in {store.directory}; "
        "give --force to replace it"
    )


def register(sub: argparse._SubParsersAction[Any]) -> None:
    cert = sub.add_parser("cert", help="the certificate store: import, list, delete, request")
    actions = cert.add_subparsers(dest="cert_command", metavar="ACTION", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, help=help_text)
        where = parser.add_mutually_exclusive_group()
        where.add_argument("--store", help="the store directory")
        where.add_argument("-c", "--config", help="a config file or etcd:// key: use its certificates.store")
        return parser

    imported = add("import", "import a certificate, its key and chain (validated as ACM does)")
    imported.add_argument("--name", required=True)
    imported.add_argument("--cert", required=True, help="PEM file with the leaf certificate")
    imported.add_argument("--key", required=True, help="PEM file with the unencrypted private key")
    imported.add_argument("--chain", help="PEM file with the chain, issuer of the leaf first")
    imported.set_defaults(func=cmd_import)

    listed = add("list", "list certificates: names, key, validity, fingerprint")
    listed.add_argument("--json", action="store_true")
    listed.set_defaults(func=cmd_list)

    deleted = add("delete", "delete a certificate")
    deleted.add_argument("--name", required=True)
    deleted.set_defaults(func=cmd_delete)

    requested = add("request", "create a certificate (self-signed, or signed by --ca)")
    requested.add_argument("--name", required=True)
    requested.add_argument("--domain", action="append", required=True, help="repeatable; the first is the CN")
    requested.add_argument("--ca", help="PEM file with the CA certificate (and its key, unless --ca-key)")
    requested.add_argument("--ca-key", help="PEM file with the CA's private key")
    requested.add_argument("--days", type=int, default=365, help=f"{MIN_DAYS}-{MAX_DAYS}, default 365")
    requested.add_argument("--force", action="store_true", help="replace a certificate of the same name")
    requested.add_argument("--key-type", choices=("ec", "rsa"), default="ec")
    requested.set_defaults(func=cmd_request)
