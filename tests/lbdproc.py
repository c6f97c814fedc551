"""Run the real ``lbd run`` in a subprocess for functional tests, and talk to it over loopback."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

DEADLINE = 30.0

# Health checks fast enough for a test to see transitions (1 s intervals are lbd's floor; 2 s leaves slack).
FAST_HTTP_CHECK: dict[str, Any] = {
    "protocol": "HTTP",
    "path": "/health",
    "interval_seconds": 2,
    "timeout_seconds": 1,
    "healthy_threshold": 2,
    "unhealthy_threshold": 2,
    "matcher": "200-299",
}  # generous: a loaded 2-core machine can be slow to start Python processes


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


_handed_out = itertools.count(random.randrange(1 << 16))  # a walk through the range, from a random start


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free for both TCP and UDP, outside the kernel's ephemeral range, never handed out twice.

    A port the kernel hands out for ``bind(0)`` is one it may hand out again to any outgoing connection
    (a client's source port) or any backend bound to port 0 before lbd binds it: CI once lost a run to
    exactly that. Ports below the ephemeral range are never chosen by the kernel; walking through them in
    turn (not at random) means two ports asked for before either is bound are never the same; and a
    TCP_UDP listener needs the port free for both protocols. ``kind`` is kept for callers that name the
    one they use.
    """
    del kind
    low, _high = _ephemeral_range()
    floor = 20000 if low > 21000 else 1024
    for _ in range(1000):
        port = floor + next(_handed_out) % (low - floor)
        if _bindable(port):
            return port
    raise RuntimeError("no free port below the ephemeral range")


_held: list[socket.socket] = []


def refused_port() -> int:
    """A TCP port that refuses every connection for as long as the tests run: bound, never listening (the
    kernel answers a SYN to it with RST), and held, so that no other process can take it meanwhile, as
    one could take a port that ``free_port`` only found free."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    _held.append(held)
    port: int = held.getsockname()[1]
    return port


async def wait_for(predicate: Any, timeout: float = DEADLINE, interval: float = 0.02, what: str = "") -> Any:
    """Poll ``predicate`` (sync or async) until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(interval)


async def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    host: str = "127.0.0.1",
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request with Connection: close; returns (status, headers, body)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        writer.write(head.encode() + body)
        raw = await reader.read(-1)
    finally:
        writer.close()
    header_block, _, payload = raw.partition(b"\r\n\r\n")
    lines = header_block.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    parsed = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return status, parsed, payload


class Lbd:
    """One ``lbd run`` process with its config file, log file and admin port."""

    def __init__(self, tmp_path: Path, config: dict[str, Any], workers: int = 1) -> None:
        self.tmp_path = tmp_path
        self.admin_port = free_port()
        config.setdefault("admin", {})["listen"] = f"127.0.0.1:{self.admin_port}"
        config.setdefault("node", {}).setdefault("shutdown_timeout_seconds", 10)
        self.config_path = tmp_path / "lbd.yaml"
        self.log_path = tmp_path / "lbd.log"
        self.write_config(config)
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None
        self.source = ""  # what -c names instead of config_path: an etcd key (tests/test_config_etcd.py)

    def write_config(self, config: dict[str, Any]) -> None:
        config.setdefault("admin", {})["listen"] = f"127.0.0.1:{self.admin_port}"
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        os.replace(tmp, self.config_path)

    def start(self, *extra: str, preexec: Callable[[], None] | None = None) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lbd",
                "run",
                "-c",
                self.source or str(self.config_path),
                "--workers",
                str(self.workers),
                "--log-level",
                "debug",
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=preexec,  # e.g. a lower RLIMIT_NOFILE, inherited by the workers
        )
        log.close()

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def admin(self, method: str, path: str, body: bytes = b"") -> tuple[int, Any]:
        status, _, payload = await http_request(self.admin_port, method, path, body)
        return status, json.loads(payload) if payload else None

    async def readyz(self) -> dict[str, Any] | None:
        try:
            status, body = await self.admin("GET", "/readyz")
        except OSError:
            return None
        return body if status == 200 else None

    async def wait_ready(self) -> dict[str, Any]:
        def ready() -> Any:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"lbd exited with {self.process.returncode}:\n{self.log}")
            return self.readyz()

        result: dict[str, Any] = await wait_for(ready, what="lbd /readyz")
        return result

    async def wait_generation(self, generation: int) -> None:
        async def at_generation() -> bool:
            body = await self.readyz()
            return body is not None and body["generation"] >= generation

        await wait_for(at_generation, what=f"generation {generation}")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait_exit(self, timeout: float = DEADLINE) -> int:
        assert self.process is not None
        process = self.process
        await wait_for(lambda: process.poll() is not None, timeout=timeout, what="lbd to exit")
        return int(process.returncode)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def network_config(listen_port: int, targets: list[int], **group: Any) -> dict[str, Any]:
    """A network load balancer with one TCP listener forwarding to one TCP target group."""
    return {
        "node": {"zone": "zone-a", "workers": 1},
        "load_balancers": [
            {
                "name": "nlb",
                "type": "network",
                "listeners": [
                    {
                        "protocol": "TCP",
                        "port": listen_port,
                        "address": "127.0.0.1",
                        "default_actions": [{"type": "forward", "target_group": "pool"}],
                    }
                ],
            }
        ],
        "target_groups": [
            {
                "name": "pool",
                "protocol": "TCP",
                "algorithm": group.pop("algorithm", "round_robin"),
                "health_check": {"enabled": False},
                "targets": [{"id": "127.0.0.1", "port": port} for port in targets],
                **group,
            }
        ],
    }


def application_config(
    listen_port: int,
    targets: list[int],
    *,
    rules: list[dict[str, Any]] | None = None,
    extra_groups: list[dict[str, Any]] | None = None,
    **load_balancer: Any,
) -> dict[str, Any]:
    """An application load balancer with one HTTP listener forwarding to target group ``web``."""
    return {
        "node": {"zone": "zone-a", "workers": 1},
        "load_balancers": [
            {
                "name": "alb",
                "type": "application",
                "listeners": [
                    {
                        "protocol": "HTTP",
                        "port": listen_port,
                        "address": "127.0.0.1",
                        "default_actions": [{"type": "forward", "target_group": "web"}],
                        "rules": rules or [],
                    }
                ],
                **load_balancer,
            }
        ],
        "target_groups": [
            {
                "name": "web",
                "protocol": "HTTP",
                "health_check": {"enabled": False},
                "targets": [{"id": "127.0.0.1", "port": port} for port in targets],
            },
            *(extra_groups or []),
        ],
    }
