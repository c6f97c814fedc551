"""The PROXY protocol, versions 1 (text) and 2 (binary): one codec for every sender and receiver in lbd.

Written from HAProxy's ``doc/proxy-protocol.txt``. Senders: network target groups with
``proxy_protocol_v2`` (v2, with CRC32C, UNIQUE_ID, ALPN, AUTHORITY and AWS 0xEA TLVs; health checks send
LOCAL) and classic TCP/SSL back ends (v1). Receivers: listeners with ``accept_proxy_protocol``.

``decode`` takes the bytes read so far and returns the header and its length (the connection's payload
follows it), raises ``TruncatedHeader`` while the bytes so far are a valid beginning of a header, and
``ProxyProtocolError`` for anything malformed. It raises nothing else, whatever the input.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
# The spec's worst case for a v1 line ("PROXY UNKNOWN" with two full IPv6 addresses and ports, plus CRLF).
V1_MAX_LENGTH = 107
# Every v2 header starts with 16 fixed bytes; the length field then allows up to 65535 more.
V2_FIXED_LENGTH = 16

COMMAND_LOCAL = 0x0
COMMAND_PROXY = 0x1

FAMILY_UNSPEC = 0x0
FAMILY_INET = 0x1
FAMILY_INET6 = 0x2
FAMILY_UNIX = 0x3
TRANSPORT_UNSPEC = 0x0
TRANSPORT_STREAM = 0x1
TRANSPORT_DGRAM = 0x2
_ADDRESS_LENGTHS = {FAMILY_INET: 12, FAMILY_INET6: 36, FAMILY_UNIX: 216}
_VALID_FAMILY_BYTES = frozenset({0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32})

PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_TYPE_NETNS = 0x30
# AWS's custom TLV (0xE0-0xEF is the spec's custom range); subtype 0x01 carries the VPC endpoint id.
PP2_TYPE_AWS = 0xEA
PP2_SUBTYPE_AWS_VPCE_ID = 0x01
UNIQUE_ID_MAX_LENGTH = 128

Address = tuple[str, int]
Tlv = tuple[int, bytes]


class ProxyProtocolError(ValueError):
    """A PROXY header that is malformed, or not a PROXY header at all."""


class TruncatedHeader(ProxyProtocolError):
    """The bytes so far begin a valid header but do not complete it: read more (within the deadline)."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A decoded header. ``source``/``destination`` are None when the receiver must use the socket's own
    endpoints: LOCAL, v1 UNKNOWN, or an address family lbd does not forward (UNSPEC, UNIX)."""

    version: int
    command: int
    source: Address | None
    destination: Address | None
    length: int
    datagram: bool = False
    tlvs: tuple[Tlv, ...] = ()

    @property
    def local(self) -> bool:
        return self.command == COMMAND_LOCAL

    def tlv(self, kind: int) -> bytes | None:
        """The value of the first TLV of this type, or None."""
        for tlv_type, value in self.tlvs:
            if tlv_type == kind:
                return value
        return None

    @property
    def aws_vpce_id(self) -> str | None:
        value = self.tlv(PP2_TYPE_AWS)
        if value is None or value[:1] != bytes([PP2_SUBTYPE_AWS_VPCE_ID]):
            return None
        return value[1:].decode("ascii", "replace")


# -- CRC32C (Castagnoli, RFC 4960 appendix B), reflected, table-driven -----------------------------------


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# -- encoding --------------------------------------------------------------------------------------------


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError as exc:
        raise ProxyProtocolError(f"not an IP address: {text!r}") from exc


def _same_family(
    source: Address, destination: Address
) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Both addresses in one family: a v4 address facing a v6 one becomes v4-mapped (::ffff:a.b.c.d)."""
    src, dst = _ip(source[0]), _ip(destination[0])
    if src.version != dst.version:
        if isinstance(src, ipaddress.IPv4Address):
            src = ipaddress.IPv6Address(f"::ffff:{src}")
        if isinstance(dst, ipaddress.IPv4Address):
            dst = ipaddress.IPv6Address(f"::ffff:{dst}")
    return src, dst


def encode_v1(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """``PROXY TCP4|TCP6 src dst sport dport\\r\\n`` for a TCP connection from source to destination."""
    src, dst = _same_family(source, destination)
    proto = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {proto} {src} {dst} {int(source[1])} {int(destination[1])}\r\n".encode("ascii")


def encode_v1_unknown() -> bytes:
    return b"PROXY UNKNOWN\r\n"


def tlv(kind: int, value: bytes) -> Tlv:
    if not 0 <= kind <= 0xFF or len(value) > 0xFFFF:
        raise ProxyProtocolError(f"TLV type {kind:#x} with {len(value)} bytes does not fit")
    return kind, value


def aws_vpce_tlv(endpoint_id: str) -> Tlv:
    """AWS's 0xEA TLV carrying an endpoint id (NLB sends ``vpce-...`` for PrivateLink connections)."""
    return tlv(PP2_TYPE_AWS, bytes([PP2_SUBTYPE_AWS_VPCE_ID]) + endpoint_id.encode("ascii"))


def _pack_tlvs(tlvs: Sequence[Tlv]) -> bytes:
    return b"".join(struct.pack("!BH", kind, len(value)) + value for kind, value in tlvs)


def encode_v2(
    source: tuple[str, int] | None,
    destination: tuple[str, int] | None,
    tlvs: Sequence[Tlv] = (),
    *,
    local: bool = False,
    datagram: bool = False,
    checksum: bool = True,
) -> bytes:
    """A v2 header. ``local`` (or no addresses) sends the LOCAL command with family UNSPEC, as health checks
    do; ``checksum`` appends a CRC32C TLV computed over the whole header with its own value zeroed."""
    command = COMMAND_LOCAL if local else COMMAND_PROXY
    if local or source is None or destination is None:
        family_byte, addresses = 0x00, b""
    else:
        src, dst = _same_family(source, destination)
        family = FAMILY_INET if src.version == 4 else FAMILY_INET6
        family_byte = family << 4 | (TRANSPORT_DGRAM if datagram else TRANSPORT_STREAM)
        addresses = src.packed + dst.packed + struct.pack("!HH", int(source[1]), int(destination[1]))
    body = addresses + _pack_tlvs(tlvs)
    if checksum:
        body += struct.pack("!BH", PP2_TYPE_CRC32C, 4) + b"\x00\x00\x00\x00"
    if len(body) > 0xFFFF:
        raise ProxyProtocolError("PROXY v2 header longer than 65551 bytes")
    header = V2_SIGNATURE + struct.pack("!BBH", 0x20 | command, family_byte, len(body)) + body
    if checksum:
        header = header[:-4] + struct.pack("!I", crc32c(header))
    return header


# -- decoding --------------------------------------------------------------------------------------------


def decode(data: bytes) -> ProxyHeader:
    """The header at the start of ``data`` (v1 or v2, detected as the spec says); see the module docstring."""
    if data[:12] == V2_SIGNATURE[: len(data[:12])] and (len(data) < 12 or data[:12] == V2_SIGNATURE):
        if len(data) < V2_FIXED_LENGTH:
            raise TruncatedHeader("PROXY v2 header incomplete")
        return _decode_v2(data)
    if data[:6] == V1_PREFIX[: len(data[:6])]:
        if len(data) < len(V1_PREFIX):
            raise TruncatedHeader("PROXY v1 header incomplete")
        return _decode_v1(data)
    raise ProxyProtocolError("no PROXY protocol signature")


def _port(text: str) -> int:
    if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0") or int(text) > 65535:
        raise ProxyProtocolError(f"bad PROXY v1 port {text!r}")
    return int(text)


def _decode_v1(data: bytes) -> ProxyHeader:
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH or b"\n" in data or b"\r" in data[:-1]:
            raise ProxyProtocolError("PROXY v1 line not terminated by CRLF within 107 bytes")
        raise TruncatedHeader("PROXY v1 header incomplete")
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProxyProtocolError("PROXY v1 line is not ASCII") from exc
    if "\r" in line or "\n" in line:
        raise ProxyProtocolError("lone CR or LF in PROXY v1 line")
    fields = line.split(" ")
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        # The rest of an UNKNOWN line may be anything: the receiver uses the socket's endpoints.
        return ProxyHeader(1, COMMAND_PROXY, None, None, end + 2)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError(f"malformed PROXY v1 line {line!r}")
    version = 4 if fields[1] == "TCP4" else 6
    src, dst = _ip(fields[2]), _ip(fields[3])
    if src.version != version or dst.version != version or "%" in fields[2] + fields[3]:
        raise ProxyProtocolError(f"PROXY v1 addresses do not match {fields[1]}")
    return ProxyHeader(1, COMMAND_PROXY, (str(src), _port(fields[4])), (str(dst), _port(fields[5])), end + 2)


def _decode_v2(data: bytes) -> ProxyHeader:
    version_command, family_byte, length = struct.unpack_from("!BBH", data, 12)
    if version_command >> 4 != 2:
        raise ProxyProtocolError(f"PROXY v2 version nibble {version_command >> 4}")
    command = version_command & 0x0F
    if command not in (COMMAND_LOCAL, COMMAND_PROXY):
        raise ProxyProtocolError(f"PROXY v2 command {command}")
    total = V2_FIXED_LENGTH + length
    if len(data) < total:
        raise TruncatedHeader("PROXY v2 header incomplete")
    header = bytes(data[:total])
    family, transport = family_byte >> 4, family_byte & 0x0F
    if family_byte not in _VALID_FAMILY_BYTES:
        if command == COMMAND_PROXY:
            raise ProxyProtocolError(f"PROXY v2 family/transport byte {family_byte:#04x}")
        # LOCAL: the family is to be ignored, so the block cannot be interpreted; skip it whole.
        return ProxyHeader(2, command, None, None, total)
    address_length = _ADDRESS_LENGTHS.get(family, 0)
    if address_length > length:
        raise ProxyProtocolError("PROXY v2 length shorter than its addresses")
    source = destination = None
    if command == COMMAND_PROXY and family in (FAMILY_INET, FAMILY_INET6):
        size = 4 if family == FAMILY_INET else 16
        src_ip = ipaddress.ip_address(header[16 : 16 + size])
        dst_ip = ipaddress.ip_address(header[16 + size : 16 + 2 * size])
        sport, dport = struct.unpack_from("!HH", header, 16 + 2 * size)
        source, destination = (str(src_ip), sport), (str(dst_ip), dport)
    tlvs = _decode_tlvs(header, V2_FIXED_LENGTH + address_length)
    return ProxyHeader(2, command, source, destination, total, transport == TRANSPORT_DGRAM, tlvs)


def _decode_tlvs(header: bytes, offset: int) -> tuple[Tlv, ...]:
    tlvs = []
    while offset < len(header):
        if offset + 3 > len(header):
            raise ProxyProtocolError("PROXY v2 TLV header runs past the end")
        kind, size = struct.unpack_from("!BH", header, offset)
        value = header[offset + 3 : offset + 3 + size]
        if len(value) != size:
            raise ProxyProtocolError(f"PROXY v2 TLV {kind:#x} runs past the end")
        if kind == PP2_TYPE_CRC32C:
            if size != 4:
                raise ProxyProtocolError("PROXY v2 CRC32C TLV is not 4 bytes")
            zeroed = header[: offset + 3] + b"\x00\x00\x00\x00" + header[offset + 7 :]
            if crc32c(zeroed) != struct.unpack("!I", value)[0]:
                raise ProxyProtocolError("PROXY v2 CRC32C mismatch")
        elif kind == PP2_TYPE_UNIQUE_ID and size > UNIQUE_ID_MAX_LENGTH:
            raise ProxyProtocolError("PROXY v2 UNIQUE_ID longer than 128 bytes")
        tlvs.append((kind, value))
        offset += 3 + size
    return tuple(tlvs)
