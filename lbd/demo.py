"""``lbd demo``: demo targets plus lbd in front of them, for a first look.

Starts a tiny HTTP/1.1 server on every loopback target of the config, runs ``lbd run`` on the config as a
child process, and once lbd is ready prints what to try.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from lbd.config.issues import ConfigError

if TYPE_CHECKING:  # the schema loads when the demo runs, not with the CLI's parser (lbd/validator.py)
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
    for api in config.apis:
        for api_listener in api.listeners:
            host = "127.0.0.1" if api_listener.address in ("0.0.0.0", "::") else api_listener.address
            scheme = "https" if api_listener.protocol == "HTTPS" else "http"
            if api.protocol == "WEBSOCKET":  # a WebSocket client, e.g. the websockets package's
                ws = "wss" if scheme == "https" else "ws"
                hints.append(f"  python -m websockets {ws}://{host}:{api_listener.port}/   # API {api.name}")
                continue
            for route in api.routes[:3]:
                method, _, path = route.route_key.partition(" ")
                path = path.replace("{proxy+}", "a/b").replace("{", "").replace("}", "") or "/"
                flags = f"-X {method} " if method not in ("GET", "ANY", "$default") else ""
                hints.append(
                    f"  curl -i {flags}{scheme}://{host}:{api_listener.port}{path}   # API {api.name}"
                )
    if any(route.api_key_required for api in config.apis for route in api.routes):
        hints.append(
            f'  curl -s -X POST http://{config.admin.listen}/v1/api-keys -d \'{{"name": "me"}}\''
            "   # then POST /v1/usage-plans/NAME/keys with its id (docs/gateway.md)"
        )
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


# Signals passed on to lbd run: reload (SIGHUP) and reopen logs (SIGUSR1) go to it as they are; the
# demo stops by stopping lbd run (SIGTERM) and waiting for it, so no lbd is left behind without its
# demo targets.
FORWARDED = (signal.SIGHUP, signal.SIGUSR1)
STOPPING = (signal.SIGINT, signal.SIGTERM)
CHECKOUT = Path(__file__).resolve().parent.parent  # conf/ of a source checkout sits beside lbd/


def resolve_config(path: str) -> Path:
    """``path`` as given if it exists, else relative to the checkout lbd runs from: ``lbd demo -c
    conf/lbd.yaml`` (make run) works from any current directory."""
    given = Path(path)
    if not given.exists() and not given.is_absolute() and (CHECKOUT / given).exists():
        return (CHECKOUT / given).resolve()
    return given.resolve()


async def run_demo(config_path: Path, config: Config, workers: int | None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    process: asyncio.subprocess.Process | None = None

    def forward(signum: int) -> None:
        if process is not None and process.returncode is None:
            process.send_signal(signum)

    # Installed before lbd run starts, so a signal during start-up is handled instead of killing the
    # demo and orphaning its child.
    for signum in STOPPING:
        loop.add_signal_handler(signum, stop.set)
    for signum in FORWARDED:
        loop.add_signal_handler(signum, forward, signum)
    servers = []
    for host, port in _loopback_targets(config):
        try:
            servers.append(await serve_demo_backend(host, port))
        except OSError as exc:
            print(f"cannot start demo target on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
            return 3
    command = [sys.executable, "-m", "lbd", "run", "-c", str(config_path)]
    if workers is not None:
        command += ["--workers", str(workers)]
    # From the config's directory, so relative paths in it (certificate store, logs) are relative to it.
    process = await asyncio.create_subprocess_exec(*command, cwd=config_path.parent)
    waiter = asyncio.ensure_future(process.wait())
    stopper = asyncio.ensure_future(stop.wait())
    ready = asyncio.ensure_future(_ready(config.admin.listen, process))
    await asyncio.wait([ready, stopper], return_when=asyncio.FIRST_COMPLETED)
    if ready.done() and ready.result():
        targets = ", ".join(f"{h}:{p}" for h, p in _loopback_targets(config)) or "none"
        print(f"\nlbd is running (pid {process.pid}; demo targets on {targets}). Try:", flush=True)
        print("\n".join(_hints(config)), flush=True)
        print(f"  curl http://{config.admin.listen}/readyz", flush=True)
        for group in config.target_groups[:1]:
            print(f"  curl http://{config.admin.listen}/v1/target-groups/{group.name}/targets", flush=True)
        print(f"  curl http://{config.admin.listen}/metrics", flush=True)
        console = f"http://{config.admin.listen}/"
        print(f"  open {console} in a browser (the console), or: lbd status -c {config_path}", flush=True)
        print(
            f"Reload after editing {config_path}: kill -HUP {os.getpid()} (this demo passes it on). "
            "Stop: Ctrl-C.\n",
            flush=True,
        )
        await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    stopper.cancel()
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    code = await waiter
    for server in servers:
        server.close()
    return 0 if stop.is_set() and code == 0 else code


def cmd_demo(args: argparse.Namespace) -> int:
    path = resolve_config(args.config)
    try:
        from lbd.config.loader import load_config

        config = load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"{path}: {issue}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_demo(path, config, args.workers))
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    from lbd.supervisor import worker_count

    demo = sub.add_parser("demo", help="start demo targets and lbd in front of them")
    demo.add_argument(
        "-c",
        "--config",
        default="conf/lbd.yaml",
        metavar="FILE",
        help="config file; a relative path not found here is looked up in the lbd checkout",
    )
    demo.add_argument(
        "--workers",
        type=worker_count,
        metavar="N",
        help="number of worker processes, 1-256 (default: node.workers from the config)",
    )
    demo.set_defaults(func=cmd_demo)
