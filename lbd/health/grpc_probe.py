"""The GRPC health check: one unary call over HTTP/2, its grpc-status matched against the success codes.

ALB (AWS: "Health checks for your target groups", and the API reference's Matcher.GrpcCode) calls the
health-check path (default ``/AWS.ALB/healthcheck``) as a gRPC method and compares the grpc-status of the
answer with the matcher, 0-99, default 12: a target that does not implement the default path answers 12
(UNIMPLEMENTED), and that is the sign it serves gRPC. A real ``/grpc.health.v1.Health/Check`` answers 0
for a serving target. The request is an empty message, which both of those methods accept (an empty
HealthCheckRequest asks about the whole server). HTTPS groups are checked over TLS with ALPN h2, HTTP
groups with prior knowledge; certificates are not verified, as ELB does not.

Low rate (one call per target per interval), so asyncio streams and the h2 state machine are enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

import h2.config
import h2.connection
import h2.events

from lbd.health.state import FAILED_HEALTH_CHECKS, RESPONSE_CODE_MISMATCH, Matcher, ProbeResult

# hpack logs every field it codes at debug level: far too much under lbd's --log-level debug.
logging.getLogger("hpack").setLevel(logging.WARNING)
logging.getLogger("h2").setLevel(logging.WARNING)

USER_AGENT = "lbd-HealthChecker/1.0"
EMPTY_MESSAGE = b"\x00\x00\x00\x00\x00"  # gRPC framing: not compressed, length 0


def _h2_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    return context


_TLS = _h2_context()


def verdict(http_status: int, grpc_status: str | None, matcher: Matcher) -> ProbeResult:
    """Pure: the check's result from the answer's :status and grpc-status."""
    if grpc_status is None or not grpc_status.isdigit():
        return ProbeResult(False, RESPONSE_CODE_MISMATCH, f"HTTP {http_status} without grpc-status")
    code = int(grpc_status)
    if code not in matcher:
        return ProbeResult(False, RESPONSE_CODE_MISMATCH, str(code))
    return ProbeResult.success()


async def grpc_check(host: str, port: int, path: str, matcher: Matcher, tls: bool) -> ProbeResult:
    reader, writer = await asyncio.open_connection(host, port, ssl=_TLS if tls else None)
    try:
        if tls:
            selected = writer.get_extra_info("ssl_object").selected_alpn_protocol()
            if selected != "h2":
                return ProbeResult(False, FAILED_HEALTH_CHECKS, "target did not negotiate h2 by ALPN")
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        conn.initiate_connection()
        stream_id = conn.get_next_available_stream_id()
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        conn.send_headers(
            stream_id,
            [
                (b":method", b"POST"),
                (b":scheme", b"https" if tls else b"http"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
                (b"user-agent", USER_AGENT.encode()),
            ],
        )
        conn.send_data(stream_id, EMPTY_MESSAGE, end_stream=True)
        writer.write(conn.data_to_send())
        http_status = 0
        grpc_status: str | None = None
        while True:
            data = await reader.read(65536)
            if not data:
                return ProbeResult(False, FAILED_HEALTH_CHECKS, "connection closed without a response")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    for name, value in event.headers or []:
                        if name == b":status":
                            http_status = int(value)
                        elif name == b"grpc-status":
                            grpc_status = value.decode("latin-1")
                elif isinstance(event, h2.events.DataReceived) and event.flow_controlled_length:
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    return ProbeResult(False, FAILED_HEALTH_CHECKS, "the target reset the stream")
                elif isinstance(event, h2.events.ConnectionTerminated):
                    return ProbeResult(False, FAILED_HEALTH_CHECKS, "the target went away (GOAWAY)")
                elif isinstance(event, h2.events.StreamEnded):
                    return verdict(http_status, grpc_status, matcher)
            writer.write(conn.data_to_send())
    finally:
        if tls:
            # A gRPC server keeps the connection open and need not answer TLS close_notify: waiting for
            # it would turn every passed check into a timeout.
            writer.transport.abort()
        else:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
