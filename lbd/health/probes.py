"""Active health-check probes: TCP connect, HTTP and HTTPS GET (AWS: "Health checks for your target groups").

Low rate (one request per target per interval), so the HTTP client is h11 over asyncio streams rather
than the data path's httptools. As ELB does, the request carries ``Host: <target>:<port>`` and a
health-checker User-Agent, and target certificates are not verified.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

import h11

from lbd.health.state import FAILED_HEALTH_CHECKS, RESPONSE_CODE_MISMATCH, TIMEOUT, Matcher, ProbeResult
from lbd.l4.proxy_protocol import encode_v2

USER_AGENT = "lbd-HealthChecker/1.0"
MAX_RESPONSE_HEAD = 64 * 1024
PROXY_LOCAL = encode_v2(None, None, local=True)


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    protocol: str  # TCP | HTTP | HTTPS | SSL (classic)
    host: str
    port: int
    timeout: float
    path: str = "/"
    matcher: Matcher | None = None
    # The group sends PROXY v2 to its targets: checks send the LOCAL command first, as NLB's do, so a
    # target that requires the header accepts them.
    proxy_protocol: bool = False
    tls: bool = False  # GRPC checks of HTTPS groups go over TLS (lbd/health/grpc_probe.py)


def _insecure_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # ELB does not verify target certificates
    return context


_TLS = _insecure_context()


async def probe(spec: ProbeSpec) -> ProbeResult:
    try:
        async with asyncio.timeout(spec.timeout):
            if spec.protocol in ("TCP", "SSL"):
                return await _tcp(spec)
            if spec.protocol == "GRPC":
                return await _grpc(spec)
            return await _http(spec)
    except TimeoutError:
        return ProbeResult(False, TIMEOUT)
    except (OSError, h11.ProtocolError, ssl.SSLError) as exc:
        return ProbeResult(False, FAILED_HEALTH_CHECKS, _describe(exc))


async def _grpc(spec: ProbeSpec) -> ProbeResult:
    # h2 loads with the first gRPC health check: a supervisor without one does not hold it.
    import h2.exceptions

    from lbd.health.grpc_probe import grpc_check

    assert spec.matcher is not None
    try:
        return await grpc_check(spec.host, spec.port, spec.path, spec.matcher, spec.tls)
    except h2.exceptions.ProtocolError as exc:
        return ProbeResult(False, FAILED_HEALTH_CHECKS, f"malformed response ({exc})")


async def _tcp(spec: ProbeSpec) -> ProbeResult:
    if spec.protocol == "SSL":
        # SSL (Classic Load Balancers): the check passes when the TLS handshake completes.
        _, writer = await asyncio.open_connection(spec.host, spec.port, ssl=_TLS)
    else:
        _, writer = await asyncio.open_connection(spec.host, spec.port)
        if spec.proxy_protocol:
            writer.write(PROXY_LOCAL)
            await writer.drain()
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ProbeResult.success()


async def _http(spec: ProbeSpec) -> ProbeResult:
    tls = _TLS if spec.protocol == "HTTPS" else None
    reader, writer = await asyncio.open_connection(spec.host, spec.port, ssl=tls)
    try:
        host = f"[{spec.host}]" if ":" in spec.host else spec.host
        client = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD)
        request = h11.Request(
            method="GET",
            target=spec.path,
            headers=[("Host", f"{host}:{spec.port}"), ("User-Agent", USER_AGENT), ("Connection", "close")],
        )
        prefix = PROXY_LOCAL if spec.proxy_protocol else b""
        writer.write(prefix + client.send(request) + client.send(h11.EndOfMessage()))
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                if not data:
                    return ProbeResult(False, FAILED_HEALTH_CHECKS, "connection closed without a response")
                client.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                # Only the status matters; the body is not read (ELB ignores it).
                if spec.matcher is not None and event.status_code not in spec.matcher:
                    return ProbeResult(False, RESPONSE_CODE_MISMATCH, str(event.status_code))
                return ProbeResult.success()
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, h11.ProtocolError):
        return f"malformed response ({exc})"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
