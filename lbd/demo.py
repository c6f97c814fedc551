"""``lbd demo``: demo targets plus lbd in front of them, for a first look.

Starts a tiny HTTP/1.1 server on every loopback target of the config, runs ``lbd run`` on the config as a
child process, and once lbd is ready prints what to try.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import signal
import sys
from typing import Any, cast

from lbd.config.loader import ConfigError, load_config
from lbd.config.schema import Config


class DemoTarget(asyncio.Protocol):
    """Answers every request with 200 and a line naming the target (keep-alive, Content-Length framed)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer and self.transport is not None:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length" and value.strip().isdigit():
                    length = int(value)
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            body = f"hello from target {self.name}\n{lines[0].decode('latin-1')}\n".encode()
            close = b"connection: close" in head.lower()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%b\r\n%b"
                % (len(body), b"Connection: close\r\n" if close else b"", body)
            )
            if close:
                self.transport.close()


async def serve_demo_backend(host: str, port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: DemoTarget(f"{host}:{port}"), host, port, reuse_address=True)


def _loopback_targets(config: Config) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []
    targets = [t for group in config.target_groups for t in group.targets]
    targets += [t for lb in config.load_balancers for t in lb.instances]
    for target in targets:
        try:
            loopback = ipaddress.ip_address(target.id).is_loopback
        except ValueError:
            loopback = target.id == "localhost"
        if loopback and (target.id, target.port) not in seen:
            seen.append((target.id, target.port))
    return seen


def _hints(config: Config) -> list[str]:
    hints = []
    for lb in config.load_balancers:
        for listener in lb.listeners:
            host = "127.0.0.1" if listener.address in ("0.0.0.0", "::") else listener.address
            host = f"[{host}]" if ":" in host else host
            scheme = "https" if listener.protocol in ("HTTPS", "TLS", "SSL") else "http"
            hints.append(f"  curl {'-k ' if scheme == 'https' else ''}{scheme}://{host}:{listener.port}/")
    return hints


async def _ready(admin: str, process: asyncio.subprocess.Process) -> bool:
    host, _, port = admin.rpartition(":")
    while process.returncode is None:
        try:
            reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
            writer.write(b"GET /readyz HTTP/1.1\r\nHost: lbd\r\nConnection: close\r\n\r\n")
            answer = await reader.read(-1)
            writer.close()
            if answer.startswith(b"HTTP/1.1 200"):
                return True
        except OSError:
            pass
        await asyncio.sleep(0.1)
    return False


async def run_demo(config_path: str, config: Config, workers: int | None) -> int:
    servers = []
    for host, port in _loopback_targets(config):
        try:
            servers.append(await serve_demo_backend(host, port))
        except OSError as exc:
            print(f"cannot start demo target on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
            return 3
    command = [sys.executable, "-m", "lbd", "run", "-c", config_path]
    if workers is not None:
        command += ["--workers", str(workers)]
    process = await asyncio.create_subprocess_exec(*command)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if await _ready(config.admin.listen, process):
        targets = ", ".join(f"{h}:{p}" for h, p in _loopback_targets(config)) or "none"
        print("\nlbd is running (demo targets on " + targets + "). Try:", flush=True)
        print("\n".join(_hints(config)), flush=True)
        print(f"  curl http://{config.admin.listen}/readyz", flush=True)
        for group in config.target_groups[:1]:
            print(f"  curl http://{config.admin.listen}/v1/target-groups/{group.name}/targets", flush=True)
        print(f"  curl http://{config.admin.listen}/metrics", flush=True)
        print("Reload after editing the config: kill -HUP <lbd pid>. Stop: Ctrl-C.\n", flush=True)
        waiter = asyncio.ensure_future(process.wait())
        await asyncio.wait([waiter, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    code = await process.wait()
    for server in servers:
        server.close()
    return 0 if stop.is_set() and code == 0 else code


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"{args.config}: {issue}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_demo(args.config, config, args.workers))
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    demo = sub.add_parser("demo", help="start demo targets and lbd in front of them")
    demo.add_argument("-c", "--config", default="conf/lbd.yaml", help="config file (default: conf/lbd.yaml)")
    demo.add_argument("--workers", type=int, help="number of worker processes")
    demo.set_defaults(func=cmd_demo)
