"""PROXY protocol: the codec (property tests, and an independent v2 decoder written from the spec), PROXY v2
from lbd to targets (TCP flows and LOCAL on health checks), and PROXY v1/v2 accepted on lbd's listeners."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lbd.l4.proxy_protocol import (
    ProxyProtocolError,
    TruncatedHeader,
    crc32c,
    decode,
    encode_v1,
    encode_v2,
)
from lbd.tls.store import CertificateStore, issue
from tests.certs import self_signed
from tests.http_backend import HttpBackend
from tests.lbdproc import Lbd, application_config, free_port, http_request, network_config, wait_for

LbdFactory = Callable[..., Lbd]

# -- an independent v2 decoder, from HAProxy's doc/proxy-protocol.txt section 2.2 ----------------------

SIGNATURE = bytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A])


def spec_crc32c(data: bytes) -> int:
    """CRC-32C bit by bit (RFC 4960 appendix B: reflected polynomial 0x82F63B78), no table."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


@dataclass
class SpecHeader:
    command: int
    family: int
    transport: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    tlvs: list[tuple[int, bytes]]
    length: int


def spec_decode(data: bytes) -> SpecHeader:
    assert data[:12] == SIGNATURE, "signature"
    assert data[12] >> 4 == 2, "version 2"
    command = data[12] & 0xF
    family, transport = data[13] >> 4, data[13] & 0xF
    length = int.from_bytes(data[14:16], "big")
    block = data[16 : 16 + length]
    assert len(block) == length, "truncated"
    source = destination = None
    offset = 0
    if family == 1:
        source = (str(ipaddress.IPv4Address(block[0:4])), int.from_bytes(block[8:10], "big"))
        destination = (str(ipaddress.IPv4Address(block[4:8])), int.from_bytes(block[10:12], "big"))
        offset = 12
    elif family == 2:
        source = (str(ipaddress.IPv6Address(block[0:16])), int.from_bytes(block[32:34], "big"))
        destination = (str(ipaddress.IPv6Address(block[16:32])), int.from_bytes(block[34:36], "big"))
        offset = 36
    tlvs = []
    while offset < length:
        kind = block[offset]
        size = int.from_bytes(block[offset + 1 : offset + 3], "big")
        value = block[offset + 3 : offset + 3 + size]
        assert len(value) == size, "TLV overruns the header"
        if kind == 0x03:
            start = 16 + offset + 3
            zeroed = data[:start] + b"\0\0\0\0" + data[start + 4 : 16 + length]
            assert spec_crc32c(zeroed) == int.from_bytes(value, "big"), "CRC32C mismatch"
        tlvs.append((kind, value))
        offset += 3 + size
    return SpecHeader(command, family, transport, source, destination, tlvs, 16 + length)


# -- the codec ----------------------------------------------------------------------------------------


def test_crc32c_known_vector() -> None:
    # RFC 3720 B.4 / the usual check value of CRC-32C.
    assert crc32c(b"123456789") == spec_crc32c(b"123456789") == 0xE3069283


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)
tlv_lists = st.lists(
    st.tuples(
        st.integers(0, 255).filter(lambda kind: kind not in (0x03, 0x05)),
        st.binary(max_size=300),
    ),
    max_size=5,
)


@given(
    family=st.sampled_from([ipv4, ipv6]).flatmap(lambda s: st.tuples(s, s)),
    sport=ports,
    dport=ports,
    tlvs=tlv_lists,
    unique=st.binary(max_size=128),
    datagram=st.booleans(),
    checksum=st.booleans(),
)
def test_v2_roundtrip_and_the_spec_decoder_agrees(
    family: tuple[str, str],
    sport: int,
    dport: int,
    tlvs: list[tuple[int, bytes]],
    unique: bytes,
    datagram: bool,
    checksum: bool,
) -> None:
    tlvs = [*tlvs, (0x05, unique)]
    header = encode_v2((family[0], sport), (family[1], dport), tlvs, datagram=datagram, checksum=checksum)
    decoded = decode(header + b"payload")
    assert decoded.version == 2 and not decoded.local
    assert decoded.length == len(header)
    assert decoded.source == (str(ipaddress.ip_address(family[0])), sport)
    assert decoded.destination == (str(ipaddress.ip_address(family[1])), dport)
    assert decoded.datagram == datagram
    assert [t for t in decoded.tlvs if t[0] != 0x03] == tlvs
    spec = spec_decode(header)
    assert (spec.source, spec.destination) == (decoded.source, decoded.destination)
    assert spec.transport == (2 if datagram else 1)
    assert [t for t in spec.tlvs if t[0] != 0x03] == tlvs
    assert any(t[0] == 0x03 for t in spec.tlvs) == checksum


@given(src=ipv4, dst=ipv4, sport=ports, dport=ports)
def test_v1_roundtrip_v4(src: str, dst: str, sport: int, dport: int) -> None:
    header = encode_v1((src, sport), (dst, dport))
    assert header.startswith(b"PROXY TCP4 ") and header.endswith(b"\r\n") and len(header) <= 56
    decoded = decode(header + b"GET / HTTP/1.1\r\n")
    assert (decoded.version, decoded.source, decoded.destination) == (1, (src, sport), (dst, dport))
    assert decoded.length == len(header)


@given(src=ipv6, dst=ipv6, sport=ports, dport=ports)
def test_v1_roundtrip_v6(src: str, dst: str, sport: int, dport: int) -> None:
    header = encode_v1((src, sport), (dst, dport))
    assert len(header) <= 104
    decoded = decode(header)
    assert decoded.source == (str(ipaddress.ip_address(src)), sport)
    assert decoded.destination == (str(ipaddress.ip_address(dst)), dport)


def _only_codec_errors(data: bytes) -> None:
    try:
        header = decode(data)
    except ProxyProtocolError:
        return
    assert header.length <= len(data)


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_the_codec_error(data: bytes) -> None:
    _only_codec_errors(data)


@settings(max_examples=400)
@given(st.sampled_from([SIGNATURE, b"PROXY ", SIGNATURE + b"\x21\x11"]), st.binary(max_size=300))
def test_random_bytes_after_a_signature_raise_only_the_codec_error(prefix: bytes, data: bytes) -> None:
    _only_codec_errors(prefix + data)


@given(st.data())
def test_every_prefix_of_a_header_is_truncated(data: st.DataObject) -> None:
    header = encode_v2(("10.0.0.1", 1234), ("10.0.0.2", 80), [(0x01, b"h2")])
    cut = data.draw(st.integers(0, len(header) - 1))
    try:
        decode(header[:cut])
    except TruncatedHeader:
        return
    raise AssertionError(f"a {cut}-byte prefix was not reported as truncated")


def test_malformed_headers_are_refused() -> None:
    good = encode_v2(("10.0.0.1", 1234), ("10.0.0.2", 80))
    flipped = bytearray(good)
    flipped[17] ^= 0xFF  # an address byte: the CRC no longer matches
    cases = [
        bytes(flipped),
        good[:12] + b"\x31" + good[13:],  # version 3
        good[:12] + b"\x2f" + good[13:],  # command 15
        good[:13] + b"\x41" + good[14:],  # family 4
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",  # leading zero in a port
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
        b"PROXY TCP4 ::1 ::1 1 2\r\n",  # family mismatch
        b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",  # double space
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # lone LF
        b"PROXY " + b"x" * 120,  # no CRLF within 107 bytes
        b"GET / HTTP/1.1\r\n\r\n",
    ]
    for case in cases:
        try:
            decode(case)
        except TruncatedHeader:
            raise AssertionError(f"{case!r} reported as merely truncated") from None
        except ProxyProtocolError:
            continue
        raise AssertionError(f"{case!r} accepted")


def test_local_and_unknown_use_the_real_endpoints() -> None:
    local = decode(encode_v2(None, None, local=True))
    assert local.local and local.source is None
    assert spec_decode(encode_v2(None, None, local=True)).command == 0
    unknown = decode(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nrest")
    assert unknown.source is None and unknown.length == len(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n")


# -- PROXY v2 to targets ----------------------------------------------------------------------------


class HeaderTarget:
    """A TCP target that requires a PROXY v2 header, decodes it with the spec decoder, then echoes."""

    def __init__(self) -> None:
        self.headers: list[SpecHeader] = []
        self.errors: list[str] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> HeaderTarget:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            fixed = await reader.readexactly(16)
            rest = await reader.readexactly(int.from_bytes(fixed[14:16], "big"))
            self.headers.append(spec_decode(fixed + rest))
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (AssertionError, asyncio.IncompleteReadError, ConnectionError) as exc:
            self.errors.append(repr(exc))
        finally:
            writer.close()


def nlb_with_proxy_v2(port: int, accepting_port: int, target: HeaderTarget, log: Path) -> dict[str, Any]:
    forward = [{"type": "forward", "target_group": "pool"}]
    return {
        "node": {"zone": "zone-a", "workers": 1},
        "load_balancers": [
            {
                "name": "nlb",
                "type": "network",
                "access_log": {"path": str(log), "format": "json"},
                "listeners": [
                    {"protocol": "TCP", "port": port, "address": "127.0.0.1", "default_actions": forward},
                    {
                        "protocol": "TCP",
                        "port": accepting_port,
                        "address": "127.0.0.1",
                        "accept_proxy_protocol": {"trusted_sources": ["127.0.0.0/8"]},
                        "default_actions": forward,
                    },
                ],
            }
        ],
        "target_groups": [
            {
                "name": "pool",
                "protocol": "TCP",
                "proxy_protocol_v2": True,
                "proxy_protocol_endpoint_id": "vpce-0123456789abcdef0",
                "health_check": {
                    "protocol": "TCP",
                    "interval_seconds": 2,
                    "timeout_seconds": 1,
                    "healthy_threshold": 2,
                },
                "targets": [{"id": "127.0.0.1", "port": target.port}],
            }
        ],
    }


async def echo_through(port: int, payload: bytes, prefix: bytes = b"") -> tuple[tuple[str, int], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(prefix + payload)
    answer = await reader.readexactly(len(payload))
    address = writer.get_extra_info("sockname")
    writer.close()
    return (address[0], address[1]), answer


async def test_proxy_v2_to_targets_and_local_on_health_checks(lbd: LbdFactory, tmp_path: Path) -> None:
    target = await HeaderTarget().start()
    port, accepting = free_port(), free_port()
    log = tmp_path / "access.log"
    proc = lbd(nlb_with_proxy_v2(port, accepting, target, log))
    await proc.wait_ready()

    # Health checks send the LOCAL command (and nothing else) before the check's own bytes.
    await wait_for(lambda: any(h.command == 0 for h in target.headers), what="a LOCAL health check")

    client_a, answer = await echo_through(port, b"first flow")
    assert answer == b"first flow"
    client_b, _ = await echo_through(port, b"second flow")
    proxied = [h for h in target.headers if h.command == 1]
    assert len(proxied) == 2, target.errors
    for header, client in zip(proxied, (client_a, client_b), strict=True):
        assert header.family == 1 and header.transport == 1
        assert header.source == client
        assert header.destination == ("127.0.0.1", port)
        tlvs = dict(header.tlvs)
        assert 0x03 in tlvs  # checked by spec_decode
        assert tlvs[0xEA] == b"\x01vpce-0123456789abcdef0"
    unique = [dict(h.tlvs)[0x05] for h in proxied]
    assert len(set(unique)) == 2 and all(0 < len(u) <= 128 for u in unique)

    # PROXY accepted on a listener, then sent onward: the target sees the client the header named.
    incoming = encode_v2(("198.51.100.20", 40000), ("192.0.2.1", 443))
    _, answer = await echo_through(accepting, b"relayed", prefix=incoming)
    assert answer == b"relayed"
    onward = [h for h in target.headers if h.command == 1][-1]
    assert onward.source == ("198.51.100.20", 40000)
    assert onward.destination == ("192.0.2.1", 443)
    v1 = encode_v1(("2001:db8::7", 5000), ("2001:db8::1", 80))
    _, answer = await echo_through(accepting, b"over v1", prefix=v1)
    assert answer == b"over v1"
    onward = [h for h in target.headers if h.command == 1][-1]
    assert onward.family == 2 and onward.source == ("2001:db8::7", 5000)

    def logged() -> list[dict[str, Any]]:
        lines = log.read_text().splitlines() if log.exists() else []
        return [json.loads(line) for line in lines]

    await wait_for(lambda: any(e["client:port"] == "198.51.100.20:40000" for e in logged()), what="log line")
    assert not target.errors


# -- PROXY accepted on an HTTP listener -------------------------------------------------------------


async def raw_exchange(port: int, data: bytes, eof: bool = False) -> bytes:
    """Send ``data`` and read until lbd closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    if eof:
        writer.write_eof()
    try:
        return await asyncio.wait_for(reader.read(-1), 10)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


async def test_proxy_accepted_on_an_http_listener(
    lbd: LbdFactory, http_backends: Callable[[str], Awaitable[HttpBackend]], tmp_path: Path
) -> None:
    backend = await http_backends("b1")
    port, untrusted_port = free_port(), free_port()
    log = tmp_path / "access.log"
    config = application_config(port, [backend.port], access_log={"path": str(log), "format": "json"})
    listener = config["load_balancers"][0]["listeners"][0]
    listener["accept_proxy_protocol"] = {"trusted_sources": ["127.0.0.0/8"], "timeout_seconds": 0.5}
    other = dict(listener, port=untrusted_port)
    other["accept_proxy_protocol"] = {"trusted_sources": ["192.0.2.0/24"]}
    config["load_balancers"][0]["listeners"].append(other)
    config["load_balancers"][0]["listeners"][1]["rules"] = []
    proc = lbd(config)
    await proc.wait_ready()
    request = b"GET /who HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"

    answer = await raw_exchange(port, b"PROXY TCP4 203.0.113.7 192.0.2.9 5555 80\r\n" + request)
    assert answer.startswith(b"HTTP/1.1 200")
    assert backend.requests[-1].header("x-forwarded-for") == "203.0.113.7"
    v2 = encode_v2(("2001:db8::5", 6000), ("2001:db8::1", 80), [(0x05, b"upstream-id")])
    answer = await raw_exchange(port, v2 + request)
    assert answer.startswith(b"HTTP/1.1 200")
    assert backend.requests[-1].header("x-forwarded-for") == "2001:db8::5"
    # LOCAL (a health check of the load balancer in front): the socket's own address.
    answer = await raw_exchange(port, encode_v2(None, None, local=True) + request)
    assert answer.startswith(b"HTTP/1.1 200")
    assert backend.requests[-1].header("x-forwarded-for") == "127.0.0.1"

    def clients() -> set[str]:
        lines = log.read_text().splitlines() if log.exists() else []
        return {json.loads(line)["client:port"] for line in lines}

    wanted = {"203.0.113.7:5555", "2001:db8::5:6000"}
    await wait_for(lambda: wanted <= clients(), what="the proxied clients in the access log")

    seen = len(backend.requests)
    # From a trusted source the header is required, first, whole and in time: else closed, no response.
    assert await raw_exchange(port, request) == b""  # no header at all
    assert await raw_exchange(port, b"PROXY TCP4 203.0.113.7 192.0.2.9 5555\r\n" + request) == b""
    assert await raw_exchange(port, v2[:20], eof=True) == b""  # truncated
    assert await raw_exchange(port, b"PROXY TCP4 203.0.113.7 19") == b""  # late: the deadline closes it
    corrupted = bytearray(v2)
    corrupted[20] ^= 1
    assert await raw_exchange(port, bytes(corrupted) + request) == b""
    assert len(backend.requests) == seen

    # From an untrusted source a header is never taken: it is just bytes, a malformed request.
    answer = await raw_exchange(untrusted_port, b"PROXY TCP4 203.0.113.7 192.0.2.9 5555 80\r\n" + request)
    assert answer.startswith(b"HTTP/1.1 400")
    status, _, _ = await http_request(untrusted_port, "GET", "/who")
    assert status == 200
    assert backend.requests[-1].header("x-forwarded-for") == "127.0.0.1"

    status, body = await proc.admin("GET", "/v1/stats")
    errors = {entry["listener"]: entry["proxy_protocol_errors"] for entry in body["listeners"]}
    assert errors[f"HTTP:{port}"] == 5
    assert errors[f"HTTP:{untrusted_port}"] == 0
    status, _, metrics = await http_request(proc.admin_port, "GET", "/metrics")
    expected = f'lbd_proxy_protocol_errors_total{{listener="HTTP:{port}",load_balancer="alb"}} 5.0'
    assert expected in metrics.decode()


# -- under TLS: the header before the handshake; ALPN and SNI onward ------------------------------------


async def test_proxy_under_tls_listeners(
    lbd: LbdFactory, http_backends: Callable[[str], Awaitable[HttpBackend]], tmp_path: Path
) -> None:
    store = CertificateStore(tmp_path / "store")
    store.put(issue("site", ["site.test"]))
    backend = await http_backends("b1")
    target = await HeaderTarget().start()
    https_port, tls_port = free_port(), free_port()
    config = application_config(https_port, [backend.port])
    config["certificates"] = {"store": str(store.directory)}
    config["load_balancers"][0]["listeners"][0].update(
        protocol="HTTPS",
        certificates=["site"],
        accept_proxy_protocol={"trusted_sources": ["127.0.0.1/32"]},
    )
    config["load_balancers"].append(
        {
            "name": "nlb",
            "type": "network",
            "listeners": [
                {
                    "protocol": "TLS",
                    "port": tls_port,
                    "address": "127.0.0.1",
                    "certificates": ["site"],
                    "alpn_policy": "HTTP2Optional",
                    "default_actions": [{"type": "forward", "target_group": "pool"}],
                }
            ],
        }
    )
    config["target_groups"].append(
        {
            "name": "pool",
            "protocol": "TCP",
            "proxy_protocol_v2": True,
            "health_check": {"enabled": False},
            "targets": [{"id": "127.0.0.1", "port": target.port}],
        }
    )
    proc = lbd(config)
    await proc.wait_ready()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    # HTTPS behind another load balancer: PROXY header in the clear, then the TLS handshake.
    reader, writer = await asyncio.open_connection("127.0.0.1", https_port)
    writer.write(encode_v1(("198.51.100.77", 1234), ("192.0.2.1", 443)))
    await writer.start_tls(context, server_hostname="site.test")
    writer.write(b"GET /who HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 200")
    writer.close()
    assert backend.requests[-1].header("x-forwarded-for") == "198.51.100.77"

    # A TLS listener sends the negotiated ALPN and the client's SNI to a PROXY v2 target.
    context.set_alpn_protocols(["http/1.1"])
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", tls_port, ssl=context, server_hostname="site.test"
    )
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    writer.close()
    (header,) = target.headers
    tlvs = dict(header.tlvs)
    assert tlvs[0x01] == b"http/1.1"
    assert tlvs[0x02] == b"site.test"
    assert header.destination == ("127.0.0.1", tls_port)


def tls_target_after_header(context: ssl.SSLContext, headers: list[SpecHeader]) -> tuple[socket.socket, int]:
    """A target that reads a PROXY v2 header in the clear, then speaks TLS (a thread: blocking sockets)."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return  # the test closed the server
            with conn:
                fixed = conn.recv(16, socket.MSG_WAITALL)
                rest = conn.recv(int.from_bytes(fixed[14:16], "big"), socket.MSG_WAITALL)
                headers.append(spec_decode(fixed + rest))
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(tls.recv(100))

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


async def test_proxy_v2_to_a_tls_group_goes_before_the_handshake(lbd: LbdFactory, tmp_path: Path) -> None:
    headers: list[SpecHeader] = []
    server, target_port = tls_target_after_header(self_signed().server_context(tmp_path), headers)
    port = free_port()
    store = CertificateStore(tmp_path / "store")
    store.put(issue("site", ["site.test"]))
    config = network_config(port, [target_port], protocol="TLS", proxy_protocol_v2=True)
    config["certificates"] = {"store": str(store.directory)}
    config["load_balancers"][0]["listeners"][0].update(protocol="TLS", certificates=["site"])
    proc = lbd(config)
    await proc.wait_ready()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="site.test"
    )
    writer.write(b"encrypted both ways")
    assert await reader.readexactly(19) == b"encrypted both ways"
    address = writer.get_extra_info("sockname")
    client = (address[0], address[1])
    writer.close()
    (header,) = headers
    assert header.command == 1 and header.source == client
    assert header.destination == ("127.0.0.1", port)
    server.close()
