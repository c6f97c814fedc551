"""A gRPC target for the harness's ``grpc`` scenario: grpcio with a generic handler on raw bytes (no code
generation), ``/bench.Echo/Unary`` answering each request with its own message.

    python -m benchmarks.grpc_target --port 9101
"""

from __future__ import annotations

import argparse
from concurrent import futures

import grpc

METHOD = "/bench.Echo/Unary"


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grpc_target")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
