"""A real gRPC server for the tests: grpcio with generic handlers on raw bytes, so no code generation.

Methods (service ``test.Echo``): ``Unary`` answers the request reversed with a trailing ``x-trailer``
(``fail`` aborts with NOT_FOUND, ``sleep:<seconds>`` waits first, ``wait`` waits until cancelled),
``Count`` streams ``n`` numbered messages, ``Chat`` echoes each message of a bidirectional stream.
``grpc.health.v1.Health/Check`` answers SERVING (grpc-status 0) while ``serving`` is set, UNAVAILABLE
otherwise.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from tests.certs import self_signed

SERVING = b"\x08\x01"  # grpc.health.v1.HealthCheckResponse{status: SERVING}


class GrpcBackend:
    def __init__(self, tmp: Path) -> None:
        self.serving = threading.Event()
        self.serving.set()
        self.metadata: list[dict[str, str]] = []  # invocation metadata of each Unary call
        self.cancelled = 0  # "wait" calls that ended because the caller cancelled them
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "test.Echo",
                    {
                        "Unary": grpc.unary_unary_rpc_method_handler(self._unary),
                        "Count": grpc.unary_stream_rpc_method_handler(self._count),
                        "Chat": grpc.stream_stream_rpc_method_handler(self._chat),
                    },
                ),
                grpc.method_handlers_generic_handler(
                    "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(self._health)}
                ),
            )
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        issued = self_signed("localhost", ("localhost", "127.0.0.1"))
        self.cert_pem = issued.cert_pem
        credentials = grpc.ssl_server_credentials([(issued.key_pem, issued.cert_pem)])
        self.tls_port = self.server.add_secure_port("127.0.0.1:0", credentials)

    def start(self) -> GrpcBackend:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(grace=None)

    def _unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.metadata.append(dict(context.invocation_metadata()))  # type: ignore[arg-type]
        if request == b"fail":
            context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        if request.startswith(b"sleep:"):
            time.sleep(float(request[6:]))
        if request == b"wait":
            while context.is_active():  # until the call is cancelled (RST_STREAM from the caller)
                time.sleep(0.01)
            self.cancelled += 1
            return b""
        context.set_trailing_metadata((("x-trailer", "t1"),))
        return request[::-1]

    def _count(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for n in range(int(request)):
            yield b"%d" % n

    def _chat(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for request in requests:
            yield b"echo:" + request

    def _health(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        if not self.serving.is_set():
            context.abort(grpc.StatusCode.UNAVAILABLE, "not serving")
        return SERVING


def raw(channel: grpc.Channel, method: str, kind: str = "unary_unary") -> Any:
    """A stub for ``method`` on raw bytes (no serializers)."""
    return getattr(channel, kind)(method)
