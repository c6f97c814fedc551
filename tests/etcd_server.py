"""A real etcd member (Debian's etcd-server) on free loopback ports with a temporary data directory, and the
``etcd`` fixture that starts one per test. Tests can stop it (an outage) and start it again on the same
ports and data (recovery: its keys are still there).
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.lbdproc import free_port, wait_for


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Etcd:
    """One etcd member on free loopback ports with a temporary data directory; clients speak HTTPS to it
    when ``tls`` names its certificate and key (files), which ``ssl`` then trusts."""

    def __init__(self, data_dir: Path, tls: tuple[Path, Path] | None = None) -> None:
        self.data_dir = data_dir
        self.client_port = free_port()
        self.peer_port = free_port()
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.client_port}"
        self.ssl = ssl.create_default_context(cafile=tls[0]) if tls else True
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.process = subprocess.Popen(
            [
                "etcd",
                "--name=lbd-test",
                f"--data-dir={self.data_dir}",
                f"--listen-client-urls={self.url}",
                f"--advertise-client-urls={self.url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=lbd-test={peer}",
                *([f"--cert-file={self.tls[0]}", f"--key-file={self.tls[1]}"] if self.tls else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.data_dir.parent / "etcd.log").open("ab"),
        )

    async def ready(self) -> None:
        async def healthy() -> bool:
            try:
                await self.post("/v3/kv/range", {"key": _b64("probe")})
            except (aiohttp.ClientError, OSError):
                return False
            return True

        await wait_for(healthy, what="etcd to answer")

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.url + path, json=body, ssl=self.ssl) as response,
        ):
            response.raise_for_status()
            reply: dict[str, Any] = await response.json(content_type=None)
            return reply

    async def put(self, key: str, value: Any) -> None:
        text = value if isinstance(value, str) else json.dumps(value)
        await self.post("/v3/kv/put", {"key": _b64(key), "value": _b64(text)})

    async def delete(self, key: str) -> None:
        await self.post("/v3/kv/deleterange", {"key": _b64(key)})

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
async def etcd(tmp_path: Path) -> AsyncIterator[Etcd]:
    assert shutil.which("etcd"), "etcd is missing: scripts/test-tools.sh installs Debian's etcd-server"
    server = Etcd(tmp_path / "etcd-data")
    server.start()
    try:
        await server.ready()
        yield server
    finally:
        server.stop()
