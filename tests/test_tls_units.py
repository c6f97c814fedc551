"""TLS building blocks with real certificates and real OpenSSL handshakes (in memory, no sockets): ELB
policies accept and refuse the protocol versions they should; SNI picks exact, wildcard, default, and
ECDSA over RSA for clients that support it."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from lbd.config.schema import ELB_POLICIES
from lbd.tls.policies import POLICIES, Policy
from lbd.tls.sni import SniTable
from lbd.tls.store import StoredCertificate, issue

# The legacy policies are tested with TLS 1.0/1.1 clients, which Python marks deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")


def handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, server_name: str | None = None
) -> ssl.SSLObject:
    """A full TLS handshake between two SSLObjects through memory buffers; raises ssl.SSLError if refused."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    client_side = client.wrap_bio(c_in, c_out, server_hostname=server_name)
    done = {"client": False, "server": False}
    for _ in range(20):
        for label, side in (("client", client_side), ("server", server_side)):
            if done[label]:
                continue
            try:
                side.do_handshake()
                done[label] = True
            except ssl.SSLWantReadError:
                pass
            s_in.write(c_out.read())
            c_in.write(s_out.read())
        if all(done.values()):
            return client_side
    raise AssertionError("handshake did not finish")


def server_context(policy: Policy, certificate: StoredCertificate, tmp_path: Path) -> ssl.SSLContext:
    bundle = tmp_path / f"{certificate.name}.pem"
    bundle.write_bytes(certificate.bundle())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    policy.apply(context)
    context.load_cert_chain(bundle)
    return context


def client_context(version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = context.maximum_version = version
    if version < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


@pytest.fixture(scope="module")
def rsa_cert() -> StoredCertificate:
    # RSA: the legacy policies' RSA-key-exchange suites need an RSA certificate.
    return issue("site", ["site.example"], key_type="rsa")


def test_every_policy_name_in_the_config_has_settings() -> None:
    assert set(POLICIES) == set(ELB_POLICIES)


V10, V11, V12, V13 = (
    ssl.TLSVersion.TLSv1,
    ssl.TLSVersion.TLSv1_1,
    ssl.TLSVersion.TLSv1_2,
    ssl.TLSVersion.TLSv1_3,
)


@pytest.mark.parametrize(
    ("policy", "accepted", "refused"),
    [
        ("ELBSecurityPolicy-TLS13-1-2-2021-06", [V12, V13], [V10, V11]),
        ("ELBSecurityPolicy-TLS13-1-2-Res-2021-06", [V12, V13], [V10, V11]),
        ("ELBSecurityPolicy-TLS13-1-3-2021-06", [V13], [V10, V11, V12]),
        ("ELBSecurityPolicy-FS-1-2-Res-2020-10", [V12], [V10, V11, V13]),
        ("ELBSecurityPolicy-TLS-1-2-2017-01", [V12], [V10, V11, V13]),
        ("ELBSecurityPolicy-2016-08", [V10, V11, V12], [V13]),
    ],
)
def test_policies_accept_and_refuse_protocol_versions(
    policy: str,
    accepted: list[ssl.TLSVersion],
    refused: list[ssl.TLSVersion],
    rsa_cert: StoredCertificate,
    tmp_path: Path,
) -> None:
    server = server_context(POLICIES[policy], rsa_cert, tmp_path)
    for version in accepted:
        connection = handshake(server, client_context(version))
        assert connection.version() == {V10: "TLSv1", V11: "TLSv1.1", V12: "TLSv1.2", V13: "TLSv1.3"}[version]
    for version in refused:
        with pytest.raises(ssl.SSLError):
            handshake(server, client_context(version))


def test_tls12_policies_only_offer_their_ciphers(rsa_cert: StoredCertificate, tmp_path: Path) -> None:
    server = server_context(POLICIES["ELBSecurityPolicy-FS-1-2-Res-2020-10"], rsa_cert, tmp_path)
    client = client_context(V12)
    client.set_ciphers("AES128-SHA256:ECDHE-RSA-AES128-SHA256")  # neither is in the policy
    with pytest.raises(ssl.SSLError):
        handshake(server, client)
    client.set_ciphers("ECDHE-RSA-AES256-GCM-SHA384")
    cipher = handshake(server, client).cipher()
    assert cipher is not None and cipher[0] == "ECDHE-RSA-AES256-GCM-SHA384"


def test_sni_exact_then_wildcard_then_default() -> None:
    default = issue("default", ["default.example"])
    exact = issue("exact", ["api.example.com"])
    wild = issue("wild", ["*.example.com"])
    table = SniTable([default, exact, wild])
    assert table.select("api.example.com") == (exact,)
    assert table.select("API.Example.com.") == (exact,)  # case and a trailing dot do not matter
    assert table.select("www.example.com") == (wild,)
    assert table.select("a.b.example.com") == (default,)  # a wildcard covers one label only
    assert table.select("example.com") == (default,)
    assert table.select(None) == (default,)


def test_sni_offers_ecdsa_and_rsa_and_openssl_prefers_ecdsa(tmp_path: Path) -> None:
    ecdsa = issue("ec", ["shop.example"], key_type="ec")
    rsa = issue("rsa", ["shop.example"], key_type="rsa")
    chosen = SniTable([rsa, ecdsa]).select("shop.example")
    assert {c.name for c in chosen} == {"ec", "rsa"}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    POLICIES["ELBSecurityPolicy-TLS13-1-2-2021-06"].apply(context)
    for certificate in chosen:
        path = tmp_path / f"{certificate.name}.pem"
        path.write_bytes(certificate.bundle())
        context.load_cert_chain(path)
    # A client that can use ECDSA gets the ECDSA certificate; one that cannot gets the RSA one.
    modern = client_context(V12)
    cipher = handshake(context, modern).cipher()
    assert cipher is not None and "ECDSA" in cipher[0]
    rsa_only = client_context(V12)
    rsa_only.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    cipher = handshake(context, rsa_only).cipher()
    assert cipher is not None and cipher[0] == "ECDHE-RSA-AES128-GCM-SHA256"
