"""TLS building blocks with real certificates and real OpenSSL handshakes (in memory, no sockets): ELB
policies accept and refuse the protocol versions they should and exchange keys over ECDHE groups only;
ALPN policies choose as ELB's lists say; ciphers the local OpenSSL lacks are found and ``lbd check``
warns about them; SNI picks exact, wildcard, default, and ECDSA over RSA for clients that support it."""

from __future__ import annotations

import contextlib
import ssl
import types
from pathlib import Path

import pytest
import yaml

from lbd.cli import main
from lbd.config.base import ELB_POLICIES
from lbd.listener.tls import ServerContext, ServerSSLObject
from lbd.tls.policies import POLICIES, Policy, missing_ciphers, set_groups
from lbd.tls.server import ALPN
from lbd.tls.sni import SniTable
from lbd.tls.store import CertificateStore, StoredCertificate, issue
from tests.lbdproc import application_config

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


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_key_exchange_is_ecdhe_only(policy: str, rsa_cert: StoredCertificate, tmp_path: Path) -> None:
    server = server_context(POLICIES[policy], rsa_cert, tmp_path)
    version = POLICIES[policy].maximum
    for group in ("X25519", "P-256", "P-384", "P-521"):
        client = client_context(version)
        set_groups(client, (group,))
        assert handshake(server, client).version()
    # OpenSSL's own default would agree on ffdhe2048 with this client (TLS 1.3) or on no ECDHE suite at all
    # (TLS 1.2): either way the policy refuses it, there is no finite-field DH.
    for group in ("ffdhe2048", "ffdhe3072", "ffdhe8192"):
        client = client_context(version)
        set_groups(client, (group,))
        with pytest.raises(ssl.SSLError):
            handshake(server, client)


def test_without_the_groups_limit_openssl_would_take_ffdhe(
    rsa_cert: StoredCertificate, tmp_path: Path
) -> None:
    """The control for the test above: the refusal comes from lbd's group list, not from the client."""
    server = server_context(POLICIES["ELBSecurityPolicy-TLS13-1-3-2021-06"], rsa_cert, tmp_path)
    set_groups(server, ("X25519", "ffdhe2048"))
    client = client_context(V13)
    set_groups(client, ("ffdhe2048",))
    assert handshake(server, client).version() == "TLSv1.3"


def test_groups_refuse_a_name_openssl_does_not_know() -> None:
    with pytest.raises(ssl.SSLError, match="no-such-group"):
        set_groups(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), ("X25519", "no-such-group"))


@pytest.mark.parametrize(
    ("policy", "offered", "chosen"),
    [
        ("HTTP1Only", ["http/1.0"], "http/1.0"),
        ("HTTP1Only", ["http/1.0", "http/1.1"], "http/1.1"),
        ("HTTP1Only", ["h2"], None),
        ("HTTP2Only", ["http/1.1", "h2"], "h2"),
        ("HTTP2Only", ["http/1.0"], None),
        ("HTTP2Optional", ["h2", "http/1.1"], "http/1.1"),
        ("HTTP2Optional", ["h2", "http/1.0"], "http/1.0"),
        ("HTTP2Optional", ["h2"], "h2"),
        ("HTTP2Preferred", ["http/1.1", "h2"], "h2"),
        ("HTTP2Preferred", ["http/1.0"], "http/1.0"),
        ("None", ["h2", "http/1.1"], None),
    ],
)
def test_alpn_policies_choose_as_elb_lists_say(
    policy: str, offered: list[str], chosen: str | None, tmp_path: Path
) -> None:
    server = server_context(
        POLICIES["ELBSecurityPolicy-TLS13-1-2-2021-06"], issue("s", ["s.example"]), tmp_path
    )
    if ALPN[policy]:
        server.set_alpn_protocols(ALPN[policy])
    client = client_context(V13)
    client.set_alpn_protocols(offered)
    try:
        selected = handshake(server, client).selected_alpn_protocol()
    except ssl.SSLError as exc:  # OpenSSL refuses a client whose protocols the server has none of
        assert chosen is None and "NO_APPLICATION_PROTOCOL" in str(exc), exc
        return
    assert selected == chosen


def test_missing_ciphers_are_the_ones_openssl_does_not_offer() -> None:
    for name, policy in POLICIES.items():
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        policy.apply(context)
        offered = {c["name"] for c in context.get_ciphers()}
        assert missing_ciphers(name) == tuple(c for c in policy.ciphers if c not in offered), name
    # This OpenSSL (3.x, built without weak ciphers like every OpenSSL since 1.1.0) has no 3DES.
    assert missing_ciphers("ELBSecurityPolicy-TLS-1-0-2015-04") == ("DES-CBC3-SHA",)
    assert missing_ciphers("ELBSecurityPolicy-TLS13-1-2-2021-06") == ()


def test_lbd_check_warns_about_missing_ciphers_naming_the_listener(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rsa_cert: StoredCertificate
) -> None:
    config = application_config(8443, [9000])
    config["certificates"] = {"store": str(tmp_path / "store")}
    CertificateStore(tmp_path / "store").put(rsa_cert)  # lbd check loads listener certificates as run does
    modern = config["load_balancers"][0]["listeners"][0]
    modern.update(protocol="HTTPS", certificates=["site"])
    legacy = {**modern, "port": 8444, "ssl_policy": "ELBSecurityPolicy-TLS-1-0-2015-04"}
    config["load_balancers"][0]["listeners"].append(legacy)
    path = tmp_path / "lbd.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["check", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert ": OK (" in out
    warnings = err.splitlines()
    assert len(warnings) == 1, err
    assert warnings[0].startswith(f"{path}: warning: load_balancers[0].listeners[1].ssl_policy: ")
    assert "ELBSecurityPolicy-TLS-1-0-2015-04" in warnings[0] and warnings[0].endswith(": DES-CBC3-SHA")


def test_listener_ssl_objects_read_and_write_through_c_and_carry_the_data(
    rsa_cert: StoredCertificate, tmp_path: Path
) -> None:
    """uvloop caches ssl_object.read/write/pending: on a listener's context they are _ssl's C methods,
    so no Python frame runs per TLS record, and the data still goes through."""
    bundle = tmp_path / "site.pem"
    bundle.write_bytes(rsa_cert.bundle())
    server = ServerContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(bundle)
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    assert isinstance(server_side, ServerSSLObject)
    for name in ("read", "write", "pending"):
        assert isinstance(getattr(server_side, name), types.BuiltinMethodType), name
    client_side = client_context(V13).wrap_bio(c_in, c_out)
    for _ in range(10):
        for side in (client_side, server_side):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    client_side.write(b"ping")
    s_in.write(c_out.read())
    assert server_side.pending() == 0 and server_side.read(1024) == b"ping"
    buffer = bytearray(8)
    server_side.write(b"pong")
    c_in.write(s_out.read())
    client_side.write(b"again")
    s_in.write(c_out.read())
    assert server_side.read(8, buffer) == 5 and bytes(buffer[:5]) == b"again"
    assert client_side.read(1024) == b"pong"
