"""The certificate store with real certificates made by ``cryptography``: every ACM import refusal with
its message, atomic 0600 files, and the ``lbd cert`` commands end to end."""

from __future__ import annotations

import datetime
import json
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from lbd.cli import main
from lbd.config.names import certificate_name_error
from lbd.tls.store import CertificateRefused, CertificateStore, validate

NOW = datetime.datetime.now(datetime.UTC)
PEM = serialization.Encoding.PEM

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass
class Made:
    cert: x509.Certificate
    key: Key

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def make(
    common_name: str,
    *,
    issuer: Made | None = None,
    key: Key | None = None,
    ca: bool = False,
    sans: tuple[str, ...] = (),
    valid: tuple[datetime.timedelta, datetime.timedelta] = (
        datetime.timedelta(days=-1),
        datetime.timedelta(days=90),
    ),
) -> Made:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + valid[0])
        .not_valid_after(NOW + valid[1])
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False
        )
    return Made(builder.sign(issuer.key if issuer else key, hashes.SHA256()), key)


@pytest.fixture(scope="module")
def pki() -> dict[str, Made]:
    root = make("Test Root CA", ca=True)
    intermediate = make("Test Intermediate CA", issuer=root, ca=True)
    return {
        "root": root,
        "intermediate": intermediate,
        "leaf": make(
            "shop.example.com", issuer=intermediate, sans=("shop.example.com", "*.shop.example.com")
        ),
        "rsa": make(
            "rsa.example.com",
            issuer=root,
            key=rsa.generate_private_key(65537, 2048),
            sans=("rsa.example.com",),
        ),
        "rsa1024": make("weak.example.com", issuer=root, key=rsa.generate_private_key(65537, 1024)),
        "expired": make(
            "old.example.com", issuer=root, valid=(datetime.timedelta(days=-30), datetime.timedelta(days=-1))
        ),
        "future": make(
            "soon.example.com", issuer=root, valid=(datetime.timedelta(days=1), datetime.timedelta(days=30))
        ),
    }


def chain(*made: Made) -> bytes:
    return b"".join(m.cert_pem for m in made)


def test_a_valid_import_with_its_chain(pki: dict[str, Made]) -> None:
    leaf = pki["leaf"]
    stored = validate("shop", leaf.cert_pem, leaf.key_pem, chain(pki["intermediate"], pki["root"]))
    assert stored.names == ["shop.example.com", "*.shop.example.com"]
    assert stored.key_type == "EC P-256" and stored.is_ecdsa
    assert len(stored.chain) == 2
    rsa_stored = validate("rsa", pki["rsa"].cert_pem, pki["rsa"].key_pem, pki["root"].cert_pem)
    assert rsa_stored.key_type == "RSA 2048" and not rsa_stored.is_ecdsa


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("expired", "the certificate expired on"),
        ("future", "the certificate is not valid before"),
        ("mismatched key", "the private key does not match the certificate's public key"),
        ("rsa 1024", "the private key is RSA 1024, which is too weak"),
        ("encrypted key", "the private key is encrypted; import it unencrypted"),
        ("ed25519 key", "Ed25519PrivateKey keys are not accepted"),
        ("chain out of order", "chain certificate 1 (CN=Test Root CA) did not issue the certificate"),
        ("leaf in chain", "chain certificate 1 is the leaf itself"),
        ("two certificates", "the certificate file holds 2 certificates"),
        ("not pem", "the certificate is not a PEM-encoded X.509 certificate"),
        ("huge key", "at most 5120 are accepted"),
        ("bad name", "use 1-128 letters"),
    ],
)
def test_each_refusal_says_why(pki: dict[str, Made], case: str, message: str) -> None:
    leaf, intermediate, root = pki["leaf"], pki["intermediate"], pki["root"]
    name, cert, key, chain_pem = "shop", leaf.cert_pem, leaf.key_pem, chain(intermediate, root)
    if case in ("expired", "future", "rsa 1024"):
        made = pki[case.replace(" ", "")]
        cert, key, chain_pem = made.cert_pem, made.key_pem, root.cert_pem
    elif case == "mismatched key":
        key = pki["rsa"].key_pem
    elif case == "encrypted key":
        key = leaf.key.private_bytes(
            PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"secret")
        )
    elif case == "ed25519 key":
        key = ed25519.Ed25519PrivateKey.generate().private_bytes(
            PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    elif case == "chain out of order":
        chain_pem = chain(root, intermediate)
    elif case == "leaf in chain":
        chain_pem = chain(leaf, intermediate, root)
    elif case == "two certificates":
        cert = chain(leaf, intermediate)
    elif case == "not pem":
        cert = b"hello"
    elif case == "huge key":
        key = leaf.key_pem + b"\n" * 6000
    elif case == "bad name":
        name = "../escape"
    with pytest.raises(CertificateRefused) as refused:
        validate(name, cert, key, chain_pem)
    assert message in str(refused.value)


def test_store_files_are_private_and_replaced_whole(pki: dict[str, Made], tmp_path: Path) -> None:
    store = CertificateStore(tmp_path / "certs")
    leaf = pki["leaf"]
    path = store.put(validate("shop", leaf.cert_pem, leaf.key_pem, pki["intermediate"].cert_pem))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = store.get("shop")
    assert first.fingerprint == leaf.cert.fingerprint(hashes.SHA256()).hex(":")
    rsa_made = pki["rsa"]
    store.put(validate("shop", rsa_made.cert_pem, rsa_made.key_pem))
    assert store.get("shop").key_type == "RSA 2048"
    assert store.names() == ["shop"]  # no temporary file left behind
    assert store.delete("shop") and not store.delete("shop")


def lbd_cert(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lbd", "cert", *args], capture_output=True, text=True)


def test_cert_commands_end_to_end(pki: dict[str, Made], tmp_path: Path) -> None:
    files = {}
    for label, made in (("leaf", pki["leaf"]), ("expired", pki["expired"])):
        (tmp_path / f"{label}.crt").write_bytes(made.cert_pem)
        (tmp_path / f"{label}.key").write_bytes(made.key_pem)
        files[label] = (str(tmp_path / f"{label}.crt"), str(tmp_path / f"{label}.key"))
    (tmp_path / "chain.pem").write_bytes(chain(pki["intermediate"], pki["root"]))
    store = str(tmp_path / "store")

    def importing(name: str, label: str, *extra: str) -> subprocess.CompletedProcess[str]:
        cert, key = files[label]
        return lbd_cert("import", "--store", store, "--name", name, "--cert", cert, "--key", key, *extra)

    done = importing("shop", "leaf", "--chain", str(tmp_path / "chain.pem"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("imported shop: CN=shop.example.com")
    refused = importing("old", "expired")
    assert refused.returncode == 2
    assert "refused: the certificate expired on" in refused.stderr

    # A self-signed certificate, and one signed by a local CA.
    (tmp_path / "ca.pem").write_bytes(pki["root"].cert_pem + pki["root"].key_pem)
    assert (
        lbd_cert("request", "--store", store, "--name", "internal", "--domain", "svc.internal").returncode
        == 0
    )
    domains = ("--domain", "a.test", "--domain", "b.test")
    ca = ("--ca", str(tmp_path / "ca.pem"), "--key-type", "rsa")
    signed = lbd_cert("request", "--store", store, "--name", "signed", *domains, *ca)
    assert signed.returncode == 0 and "signed by CN=Test Root CA" in signed.stdout

    listed = lbd_cert("list", "--store", store, "--json")
    entries = {e["name"]: e for e in json.loads(listed.stdout)}
    assert set(entries) == {"shop", "internal", "signed"}
    assert entries["signed"]["names"] == ["a.test", "b.test"] and entries["signed"]["key"] == "RSA 2048"
    assert (
        entries["internal"]["subject"] == "CN=svc.internal" and 360 <= entries["internal"]["days_left"] <= 365
    )
    assert entries["shop"]["fingerprint_sha256"] == pki["leaf"].cert.fingerprint(hashes.SHA256()).hex(":")
    table = lbd_cert("list", "--store", store).stdout
    assert "shop" in table and "EC P-256" in table

    assert lbd_cert("delete", "--store", store, "--name", "internal").returncode == 0
    missing = lbd_cert("delete", "--store", store, "--name", "internal")
    assert missing.returncode == 1 and "no certificate named internal" in missing.stderr


# -- names that would escape the store, and what `lbd cert request` refuses -------------------------------

ESCAPING = ["../victim", "/abs/victim", "a/b", ".", "..", "", "a\x00b", "shop\n", ".hidden", "-dash"]


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content: what a command may not have changed."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def cert(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["cert", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("name", ESCAPING, ids=repr)
def test_the_store_refuses_names_that_are_not_one_file_in_it(
    pki: dict[str, Made], tmp_path: Path, name: str
) -> None:
    store = CertificateStore(tmp_path / "store")
    leaf = pki["leaf"]
    for attempt in (
        lambda: store.path(name),
        lambda: store.delete(name),
        lambda: store.get(name),
        lambda: validate(name, leaf.cert_pem, leaf.key_pem),
    ):
        with pytest.raises(CertificateRefused, match="use 1-128 letters"):
            attempt()
    assert certificate_name_error(name) is not None


@pytest.mark.parametrize("name", ["../victim", "ABS", "a/../../victim"])
def test_cert_delete_outside_the_store_deletes_nothing(
    pki: dict[str, Made], tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    store = tmp_path / "store"
    CertificateStore(store).put(validate("shop", pki["leaf"].cert_pem, pki["leaf"].key_pem))
    victim = tmp_path / "victim.pem"  # what "../victim" named: <store>/../victim.pem
    victim.write_text("keep me\n")
    name = str(tmp_path / "victim") if name == "ABS" else name
    before = tree(tmp_path)
    code, output = cert(capsys, "delete", "--store", str(store), "--name", name)
    assert code == 2 and "refused: name" in output
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    "name", ["../escaped", "/abs/escaped", "sub/escaped", "..", "shop\n", "a\x00b"], ids=repr
)
def test_cert_request_outside_the_store_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    store = tmp_path / "a" / "store"
    (tmp_path / "a" / "sub").mkdir(parents=True)
    name = name.replace("/abs", str(tmp_path))
    code, output = cert(capsys, "request", "--store", str(store), "--name", name, "--domain", "svc.internal")
    assert code == 2 and "refused: name" in output
    assert tree(tmp_path) == {} and not store.exists()


def test_cert_request_does_not_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    args = ("request", "--store", str(store), "--name", "svc", "--domain", "svc.internal")
    assert cert(capsys, *args)[0] == 0
    first = CertificateStore(store).get("svc").fingerprint
    code, output = cert(capsys, *args)
    assert code == 2 and "a certificate named svc already exists" in output and "--force" in output
    assert CertificateStore(store).get("svc").fingerprint == first
    assert cert(capsys, *args, "--force")[0] == 0
    assert CertificateStore(store).get("svc").fingerprint != first
    assert CertificateStore(store).names() == ["svc"]


def test_put_without_replace_keeps_a_certificate_that_appeared_meanwhile(
    pki: dict[str, Made], tmp_path: Path
) -> None:
    store = CertificateStore(tmp_path)
    store.put(validate("shop", pki["leaf"].cert_pem, pki["leaf"].key_pem))
    with pytest.raises(CertificateRefused, match="already exists"):
        store.put(validate("shop", pki["rsa"].cert_pem, pki["rsa"].key_pem), replace=False)
    assert store.get("shop").key_type == "EC P-256"
    assert [p.name for p in tmp_path.iterdir()] == ["shop.pem"]  # the temporary is gone too


@pytest.mark.parametrize("days", ["0", "-1", "-365", "3651", "100000000"])
def test_cert_request_days_must_be_one_to_3650(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], days: str
) -> None:
    store = tmp_path / "store"
    code, output = cert(
        capsys, "request", "--store", str(store), "--name", "x", "--domain", "x.test", "--days", days
    )
    assert code == 2 and f"days: must be 1 to 3650 (ten years), got {int(days)}" in output
    assert not store.exists()


def test_cert_request_days_at_the_edges(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    for name, days in (("one", "1"), ("ten-years", "3650")):
        assert (
            cert(
                capsys, "request", "--store", str(store), "--name", name, "--domain", "x.test", "--days", days
            )[0]
            == 0
        )
    assert CertificateStore(store).get("one").days_left() == 0
    assert 3649 <= CertificateStore(store).get("ten-years").days_left() <= 3650


@pytest.mark.parametrize(
    "domain",
    [
        "bad_domain.test",
        "-edge.test",
        "edge-.test",
        "a..b",
        ".a.test",
        "a.test.",
        "*.*.test",
        "a.*.test",
        "*a.test",
        "*",
        "",
        "1.2.3.4",
        "sp ace.test",
        "x" * 64 + ".test",  # a label is at most 63
        ".".join(["a" * 63] * 4) + ".test",  # over 253 in all
        "caf\u00e9.test",
    ],
    ids=repr,
)
def test_cert_request_refuses_invalid_domains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], domain: str
) -> None:
    store = tmp_path / "store"
    code, output = cert(
        capsys, "request", "--store", str(store), "--name", "x", "--domain", "ok.test", f"--domain={domain}"
    )
    assert code == 2 and "refused: domain" in output
    assert not store.exists()


def test_cert_request_takes_wildcards_and_rfc_1123_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    domains = [
        "shop.example.com",
        "*.shop.example.com",
        "localhost",
        "xn--caf-dma.test",
        "1a.test",
        "a" * 63 + ".test",
    ]
    args = [arg for d in domains for arg in ("--domain", d)]
    assert cert(capsys, "request", "--store", str(store), "--name", "shop", *args)[0] == 0
    assert CertificateStore(store).get("shop").names == domains


def test_the_first_domain_fits_a_common_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    long = "a" * 60 + ".test"  # 65: a valid DNS name, but too long for X.509's common name
    code, output = cert(capsys, "request", "--store", str(tmp_path / "s"), "--name", "x", "--domain", long)
    assert code == 2 and "at most 64 characters" in output
    assert (
        cert(
            capsys,
            "request",
            "--store",
            str(tmp_path / "s"),
            "--name",
            "x",
            "--domain",
            "a.test",
            "--domain",
            long,
        )[0]
        == 0
    )


def test_lbd_check_validates_listener_certificate_names_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listener = {
        "protocol": "HTTPS",
        "port": 8443,
        "certificates": ["site", "../../etc/passwd", "ok.name", "trailing\n"],
        "default_actions": [{"type": "forward", "target_group": "web"}],
    }
    config = {
        "load_balancers": [{"name": "web", "type": "application", "listeners": [listener]}],
        "target_groups": [{"name": "web", "protocol": "HTTP", "port": 80, "targets": [{"id": "127.0.0.1"}]}],
    }
    path = tmp_path / "lbd.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["check", "-c", str(path)]) == 2
    out = capsys.readouterr().err  # errors go to stderr
    where = "load_balancers[0].listeners[0].certificates"
    assert f"{where}[1]: name '../../etc/passwd': use 1-128 letters" in out
    assert f"{where}[3]: name 'trailing\\n': use 1-128 letters" in out
    assert f"{path}: 2 errors" in out
