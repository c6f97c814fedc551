"""TLS listeners through a real ``lbd run``, with certificates from the store: SNI selection, ECDSA vs
RSA, a policy refusing old clients (counted), every kind of failed handshake counted exactly once and
successful ones never, the alert a refused client gets, ECDHE-only key exchange, ALPN policies, the
access log's TLS fields, renewal without reload under a stream of handshakes, a broken replacement
refused, re-encryption to HTTPS targets, network TLS listeners."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import struct
import warnings
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from lbd.tls.store import CertificateStore, StoredCertificate, issue
from tests.certs import self_signed
from tests.conftest import LbdFactory, TcpBackend
from tests.http_backend import HttpBackend
from tests.lbdproc import Lbd, application_config, free_port, network_config, wait_for


def https_config(
    port: int, targets: list[int], store: Path, certificates: list[str], **listener: Any
) -> dict[str, Any]:
    config = application_config(port, targets)
    config["certificates"] = {"store": str(store)}
    config["load_balancers"][0]["listeners"][0].update(
        protocol="HTTPS", certificates=certificates, **listener
    )
    return config


def client_context(
    maximum: ssl.TLSVersion | None = None, ciphers: str | None = None, minimum: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0 clients, on purpose
        if minimum is not None:
            context.minimum_version = minimum
        if maximum is not None:
            context.maximum_version = maximum
    if ciphers is not None:
        context.set_ciphers(ciphers)
    return context


async def fetch(
    port: int, server_name: str | None, context: ssl.SSLContext | None = None
) -> tuple[x509.Certificate, bytes]:
    """One HTTPS request; the certificate the listener presented and the response."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context or client_context(), server_hostname=server_name or ""
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        presented = x509.load_der_x509_certificate(ssl_object.getpeercert(binary_form=True))
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return presented, await reader.read()
    finally:
        writer.close()


def fingerprint(certificate: x509.Certificate | StoredCertificate) -> bytes:
    cert = certificate.leaf if isinstance(certificate, StoredCertificate) else certificate
    return cert.fingerprint(hashes.SHA256())


async def stats(proc: Lbd) -> dict[str, Any]:
    status, body = await proc.admin("GET", "/v1/stats")
    assert status == 200
    return body["listeners"][0]  # type: ignore[no-any-return]


async def test_sni_picks_exact_wildcard_then_default_and_proto_is_https(
    lbd: LbdFactory, tmp_path: Path
) -> None:
    store = CertificateStore(tmp_path / "store")
    default, exact, wild = (
        issue("default", ["default.test"]),
        issue("exact", ["api.example.com"]),
        issue("wild", ["*.example.com"]),
    )
    for certificate in (default, exact, wild):
        store.put(certificate)
    backend = await HttpBackend("b").start()
    port = free_port()
    proc = lbd(https_config(port, [backend.port], store.directory, ["default", "exact", "wild"]))
    await proc.wait_ready()
    for server_name, expected in (
        ("api.example.com", exact),
        ("www.example.com", wild),
        ("a.b.example.com", default),
        (None, default),
    ):
        presented, response = await fetch(port, server_name)
        assert fingerprint(presented) == fingerprint(expected), server_name
        assert response.startswith(b"HTTP/1.1 200")
    assert backend.requests[0].header("x-forwarded-proto") == "https"
    assert backend.requests[0].header("x-forwarded-port") == str(port)
    await backend.close()


async def test_ecdsa_for_clients_that_take_it_rsa_for_the_others(lbd: LbdFactory, tmp_path: Path) -> None:
    store = CertificateStore(tmp_path / "store")
    store.put(issue("rsa", ["shop.test"], key_type="rsa"))
    store.put(issue("ec", ["shop.test"], key_type="ec"))
    backend = await HttpBackend("b").start()
    port = free_port()
    proc = lbd(https_config(port, [backend.port], store.directory, ["rsa", "ec"]))
    await proc.wait_ready()
    modern, _ = await fetch(port, "shop.test")
    assert modern.signature_algorithm_oid._name.startswith("ecdsa")
    legacy, _ = await fetch(
        port, "shop.test", client_context(ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-AES128-GCM-SHA256")
    )
    assert fingerprint(legacy) == fingerprint(store.get("rsa"))
    await backend.close()


async def test_tls13_only_policy_refuses_tls12_and_counts_it(lbd: LbdFactory, tmp_path: Path) -> None:
    store = CertificateStore(tmp_path / "store")
    store.put(issue("site", ["site.test"]))
    backend = await HttpBackend("b").start()
    port = free_port()
    config = https_config(
        port, [backend.port], store.directory, ["site"], ssl_policy="ELBSecurityPolicy-TLS13-1-3-2021-06"
    )
    proc = lbd(config)
    await proc.wait_ready()
    _, response = await fetch(port, "site.test")
    assert response.startswith(b"HTTP/1.1 200")
    try:
        await fetch(port, "site.test", client_context(ssl.TLSVersion.TLSv1_2))
        raise AssertionError("a TLS 1.2 client was accepted by a TLS 1.3-only policy")
    except (ssl.SSLError, ConnectionError):
        pass
    await wait_for(lambda: _errors(proc), what="the handshake failure counted")
    await backend.close()


async def _errors(proc: Lbd) -> bool:
    return bool((await stats(proc))["client_tls_negotiation_errors"] == 1)


async def negotiation_errors(proc: Lbd) -> int:
    return int((await stats(proc))["client_tls_negotiation_errors"])


def client_hello(server_name: str = "site.test") -> bytes:
    """The first flight of a real TLS client, made in memory."""
    outgoing = ssl.MemoryBIO()
    client = client_context().wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the server's answer
        client.do_handshake()
    return outgoing.read()


async def raw(port: int, data: bytes, *, reset: bool = False) -> bytes:
    """Send ``data`` over plain TCP, then close (FIN, or RST when ``reset``); what came back before that.

    Without ``reset`` and with nothing sent, the connection is left open until lbd closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    if reset:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        return b""
    if data:
        # Leave lbd the whole record: it cannot tell a cut-off hello from a slow one until the EOF.
        writer.write_eof()
    received = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    return received


async def s_client(port: int, *options: str) -> tuple[int, str]:
    """``openssl s_client`` against the listener; (exit code, everything it printed)."""
    process = await asyncio.create_subprocess_exec(
        "openssl",
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        "-servername",
        "site.test",
        *options,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode or 0, output.decode(errors="replace")


async def refused(port: int, context: ssl.SSLContext) -> ssl.SSLError:
    try:
        await fetch(port, "site.test", context)
    except ssl.SSLError as exc:
        return exc
    raise AssertionError("the handshake was accepted")


async def test_every_failed_handshake_counts_once_successful_ones_never(
    lbd: LbdFactory, tmp_path: Path
) -> None:
    store = CertificateStore(tmp_path / "store")
    store.put(issue("site", ["site.test"]))
    backend = await HttpBackend("b").start()
    port = free_port()
    proc = lbd(https_config(port, [backend.port], store.directory, ["site"]))  # TLS 1.2 and 1.3
    await proc.wait_ready()
    # Opened first, says nothing: lbd's 10-second handshake timeout closes it while the rest runs.
    silent = asyncio.create_task(raw(port, b""))

    expected = 0

    async def failed(what: str) -> None:
        nonlocal expected
        expected += 1
        await wait_for(lambda: _equals(proc, expected), what=f"{what} counted as failure {expected}")

    async def succeed() -> None:
        _, response = await fetch(port, "site.test")
        assert response.startswith(b"HTTP/1.1 200")

    await succeed()
    # A TLS 1.0 client: OpenSSL's protocol_version alert reaches it, not a bare EOF.
    old = await refused(
        port, client_context(ssl.TLSVersion.TLSv1, "DEFAULT:@SECLEVEL=0", minimum=ssl.TLSVersion.TLSv1)
    )
    assert "TLSV1_ALERT_PROTOCOL_VERSION" in str(old), old
    await failed("wrong protocol version")
    # No cipher in common (AES128-SHA is not in the default policy): handshake_failure.
    no_cipher = await refused(port, client_context(ssl.TLSVersion.TLSv1_2, "AES128-SHA"))
    assert "SSLV3_ALERT_HANDSHAKE_FAILURE" in str(no_cipher), no_cipher
    await failed("no shared cipher")
    await succeed()
    await raw(port, b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
    await failed("plain HTTP on the TLS port")
    hello = client_hello()
    await raw(port, hello[: len(hello) // 2])
    await failed("a client closing mid-hello")
    await raw(port, hello[: len(hello) // 2], reset=True)
    await failed("a client resetting mid-hello")
    await raw(port, hello)  # a whole hello, then EOF before the client's second flight
    await failed("a client closing after its hello")
    # A client offering TLS 1.2 with the downgrade signal to a server that speaks 1.3 (RFC 7507).
    code, output = await s_client(port, "-tls1_2", "-fallback_scsv")
    assert code != 0 and "alert inappropriate fallback" in output, output
    await failed("inappropriate fallback")
    await succeed()
    assert await asyncio.wait_for(silent, 30) == b""
    await failed("the handshake timeout")
    # Nothing counted twice, late: one more handshake, then the total is still exact.
    await succeed()
    assert await negotiation_errors(proc) == expected == 8
    await wait_for(lambda: proc.log.count("TLS handshake failed") == expected, what="each failure logged")
    await backend.close()


async def _equals(proc: Lbd, count: int) -> bool:
    return await negotiation_errors(proc) == count


async def test_key_exchange_is_ecdhe_only(lbd: LbdFactory, tmp_path: Path) -> None:
    store = CertificateStore(tmp_path / "store")
    # RSA: with an ECDSA P-256 certificate a TLS 1.2 client must also offer P-256, whatever it exchanges.
    store.put(issue("site", ["site.test"], key_type="rsa"))
    port = free_port()
    proc = lbd(https_config(port, [free_port()], store.directory, ["site"]))
    await proc.wait_ready()
    for group, shown in (("X25519", "X25519"), ("P-256", "prime256v1"), ("P-384", "secp384r1")):
        for version in ("-tls1_3", "-tls1_2"):
            code, output = await s_client(port, version, "-groups", group)
            assert (
                code == 0 and f"Server Temp Key: {'ECDH, ' if group != 'X25519' else ''}{shown}" in output
            ), (
                group,
                version,
                output,
            )
    # A TLS 1.3 client offering only finite-field groups gets handshake_failure (OpenSSL's default would
    # have taken ffdhe2048, ~160 times the work of X25519 on the worker's loop).
    for group in ("ffdhe2048", "ffdhe4096"):
        code, output = await s_client(port, "-tls1_3", "-groups", group)
        assert code != 0 and "alert handshake failure" in output, output
    assert await negotiation_errors(proc) == 2


async def test_renewal_without_reload_under_a_stream_of_handshakes(lbd: LbdFactory, tmp_path: Path) -> None:
    store = CertificateStore(tmp_path / "store")
    old = issue("site", ["site.test"])
    store.put(old)
    backend = await HttpBackend("b").start()
    port = free_port()
    proc = lbd(https_config(port, [backend.port], store.directory, ["site"]))
    await proc.wait_ready()
    new = issue("site", ["site.test"])
    seen: list[bytes] = []
    failures = 0

    async def stream() -> None:
        nonlocal failures
        while fingerprint(new) not in seen:
            try:
                presented, response = await fetch(port, "site.test")
                assert response.startswith(b"HTTP/1.1 200")
                seen.append(fingerprint(presented))
            except (OSError, ssl.SSLError):
                failures += 1

    streaming = asyncio.create_task(stream())
    await wait_for(lambda: len(seen) >= 3, what="handshakes with the old certificate")
    store.put(new)  # what `lbd cert import` over an existing name does: an atomic replace
    await asyncio.wait_for(streaming, 30)
    assert failures == 0
    assert seen[0] == fingerprint(old) and seen[-1] == fingerprint(new)
    assert "certificates reloaded from the store" in proc.log

    # A broken replacement is refused: the current certificate keeps serving, and the error is logged.
    store.path("site").write_bytes(
        b"-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n"
    )
    await wait_for(lambda: "certificate change refused" in proc.log, what="the refusal logged")
    presented, _ = await fetch(port, "site.test")
    assert fingerprint(presented) == fingerprint(new)
    await backend.close()


async def test_missing_certificate_refuses_to_start_naming_the_key(lbd: LbdFactory, tmp_path: Path) -> None:
    proc = lbd(https_config(free_port(), [free_port()], tmp_path / "empty", ["nope"]))
    assert await proc.wait_exit() == 2
    assert "load_balancers[0].listeners[0].certificates[0]: no certificate named 'nope'" in proc.log


async def test_https_listener_to_https_targets(lbd: LbdFactory, tmp_path: Path) -> None:
    store = CertificateStore(tmp_path / "store")
    store.put(issue("front", ["front.test"]))
    target_cert = issue("target", ["target.test"])  # self-signed: ELB does not verify targets
    bundle = tmp_path / "target.pem"
    bundle.write_bytes(target_cert.bundle())
    target_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    target_tls.load_cert_chain(bundle)
    backend = await HttpBackend("secure").start(tls=target_tls)
    port = free_port()
    config = https_config(port, [backend.port], store.directory, ["front"])
    config["target_groups"][0]["protocol"] = "HTTPS"
    proc = lbd(config)
    await proc.wait_ready()
    for _ in range(3):
        _, response = await fetch(port, "front.test")
        assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"hello from secure\n")
    assert len(backend.requests) == 3
    await backend.close()


async def test_network_tls_listener_terminates_and_splices(
    lbd: LbdFactory, backends: Any, tmp_path: Path
) -> None:
    store = CertificateStore(tmp_path / "store")
    store.put(issue("nlb", ["nlb.test"]))
    echo: TcpBackend = await backends()
    port = free_port()
    config = network_config(port, [echo.port])
    config["certificates"] = {"store": str(store.directory)}
    config["load_balancers"][0]["listeners"][0].update(
        protocol="TLS", certificates=["nlb"], alpn_policy="HTTP2Preferred"
    )
    proc = lbd(config)
    await proc.wait_ready()
    context = client_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="nlb.test")
    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
    writer.write(b"ping over tls")
    assert await reader.readexactly(13) == b"ping over tls"
    writer.close()


async def test_alpn_policies_offer_http10_like_elb(lbd: LbdFactory, backends: Any, tmp_path: Path) -> None:
    store = CertificateStore(tmp_path / "store")
    store.put(issue("nlb", ["nlb.test"]))
    echo: TcpBackend = await backends()
    ports = {policy: free_port() for policy in ("HTTP1Only", "HTTP2Optional", "HTTP2Preferred")}
    config = network_config(ports["HTTP1Only"], [echo.port])
    config["certificates"] = {"store": str(store.directory)}
    template = config["load_balancers"][0]["listeners"][0]
    config["load_balancers"][0]["listeners"] = [
        {**template, "port": port, "protocol": "TLS", "certificates": ["nlb"], "alpn_policy": policy}
        for policy, port in ports.items()
    ]
    proc = lbd(config)
    await proc.wait_ready()

    async def chosen(policy: str, offered: list[str]) -> str | None:
        context = client_context()
        context.set_alpn_protocols(offered)
        _, writer = await asyncio.open_connection(
            "127.0.0.1", ports[policy], ssl=context, server_hostname="nlb.test"
        )
        protocol: str | None = writer.get_extra_info("ssl_object").selected_alpn_protocol()
        writer.close()
        return protocol

    assert await chosen("HTTP1Only", ["http/1.0"]) == "http/1.0"
    assert await chosen("HTTP1Only", ["http/1.0", "http/1.1"]) == "http/1.1"
    assert await chosen("HTTP2Optional", ["h2", "http/1.0"]) == "http/1.0"  # HTTP/1.x first
    assert await chosen("HTTP2Optional", ["h2"]) == "h2"
    assert await chosen("HTTP2Preferred", ["http/1.0", "h2"]) == "h2"
    assert await chosen("HTTP2Preferred", ["http/1.0"]) == "http/1.0"


async def test_access_log_has_the_tls_fields(lbd: LbdFactory, tmp_path: Path) -> None:
    store = CertificateStore(tmp_path / "store")
    store.put(issue("default", ["default.test"]))
    store.put(issue("shop", ["shop.test"], key_type="rsa"))
    backend = await HttpBackend("b").start()
    port = free_port()
    log_path = tmp_path / "access.json"
    config = https_config(port, [backend.port], store.directory, ["default", "shop"])
    config["load_balancers"][0]["access_log"] = {"path": str(log_path), "format": "json"}
    proc = lbd(config)
    await proc.wait_ready()
    await fetch(port, "shop.test", client_context(ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-AES128-GCM-SHA256"))
    await fetch(port, None)
    text = await wait_for(
        lambda: log_path.exists() and len(log_path.read_text().splitlines()) == 2 and log_path.read_text(),
        what="two access-log lines",
    )
    tls12, tls13 = (json.loads(line) for line in text.splitlines())
    assert (tls12["ssl_cipher"], tls12["ssl_protocol"]) == ("ECDHE-RSA-AES128-GCM-SHA256", "TLSv1.2")
    assert (tls12["domain_name"], tls12["chosen_cert_arn"]) == ("shop.test", "shop")
    assert (tls13["ssl_cipher"], tls13["ssl_protocol"]) == ("TLS_AES_256_GCM_SHA384", "TLSv1.3")
    assert (tls13["domain_name"], tls13["chosen_cert_arn"]) == ("-", "default")
    await backend.close()


async def test_target_verification_is_off_by_default_and_can_be_turned_on(
    lbd: LbdFactory, tmp_path: Path
) -> None:
    target_cert = self_signed("target", sans=("127.0.0.1",))
    backend = await HttpBackend("secure").start(tls=target_cert.server_context(tmp_path))
    trusted = tmp_path / "trusted.pem"
    trusted.write_bytes(target_cert.cert_pem)
    stranger = tmp_path / "stranger.pem"
    stranger.write_bytes(self_signed("someone else").cert_pem)

    async def status_with(**group: Any) -> int:
        port = free_port()
        config = application_config(port, [backend.port])
        config["target_groups"][0].update(protocol="HTTPS", **group)
        proc = lbd(config)
        await proc.wait_ready()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status = int((await reader.read()).split()[1])
        writer.close()
        proc.stop()
        return status

    assert await status_with() == 200  # not verified, as on ELB
    assert await status_with(verify=True, ca_bundle=str(trusted)) == 200
    assert await status_with(verify=True, ca_bundle=str(stranger)) == 502
    await backend.close()
