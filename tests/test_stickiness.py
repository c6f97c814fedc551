"""Stickiness end to end: cookie-keeping clients (aiohttp's cookie jar) against a real lbd with two workers.

Four kinds side by side, on the same three instances (127.0.0.1-3, one port, so a classic health-check
target fits them all): ALB lb_cookie (AWSALB), ALB app_cookie (AWSALBAPP-0 + the application's SESSION),
classic duration (AWSELB) and classic application-controlled (AWSELB following SESSION). Every request opens
a new connection, so the two workers' SO_REUSEPORT sockets share them: a session sticks across workers.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.conftest import LbdFactory
from tests.http_backend import HttpBackend
from tests.lbdproc import FAST_HTTP_CHECK, Lbd, free_port, wait_for

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
KINDS = ("lb_cookie", "app_cookie", "duration", "application")


@dataclass
class Instances:
    port: int
    backends: dict[str, HttpBackend]  # by host

    def by_name(self, name: str) -> HttpBackend:
        return next(b for b in self.backends.values() if b.name == name)


@pytest.fixture
async def instances() -> AsyncIterator[Instances]:
    for _ in range(20):
        port = free_port()
        started: list[HttpBackend] = []
        try:
            for host in HOSTS:
                started.append(await HttpBackend(host).start(host=host, port=port))
        except OSError:
            for backend in started:
                await backend.close()
            continue
        yield Instances(port, {b.name: b for b in started})
        for backend in started:
            await backend.close()
        return
    raise AssertionError("no port free on 127.0.0.1-3")


def config(instances: Instances, ports: dict[str, int], key_file: Path) -> dict[str, Any]:
    targets = [{"id": host, "port": instances.port} for host in HOSTS]

    def listener(kind: str, group: str) -> dict[str, Any]:
        return {
            "protocol": "HTTP",
            "port": ports[kind],
            "address": "127.0.0.1",
            "default_actions": [{"type": "forward", "target_group": group}],
        }

    def classic(kind: str, stickiness: dict[str, Any]) -> dict[str, Any]:
        return {
            "protocol": "HTTP",
            "port": ports[kind],
            "address": "127.0.0.1",
            "instance_protocol": "HTTP",
            "instance_port": instances.port,
            "stickiness": stickiness,
        }

    def group(name: str, stickiness: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": name,
            "protocol": "HTTP",
            "health_check": FAST_HTTP_CHECK,
            "stickiness": {"enabled": True, **stickiness},
            "targets": targets,
        }

    return {
        "node": {"zone": "zone-a", "stickiness_key_file": str(key_file)},
        "load_balancers": [
            {
                "name": "alb",
                "type": "application",
                "listeners": [listener("lb_cookie", "lbc"), listener("app_cookie", "appc")],
            },
            {
                "name": "clb",
                "type": "classic",
                "listeners": [
                    classic("duration", {"type": "duration", "cookie_expiration_period_seconds": 600}),
                    classic("application", {"type": "application", "cookie_name": "SESSION"}),
                ],
                "instances": [{"id": host} for host in HOSTS],
                "health_check": {
                    "target": f"HTTP:{instances.port}/health",
                    "interval_seconds": 2,
                    "timeout_seconds": 1,
                    "healthy_threshold": 2,
                    "unhealthy_threshold": 2,
                },
            },
        ],
        "target_groups": [
            group("lbc", {"type": "lb_cookie", "duration_seconds": 3600}),
            group("appc", {"type": "app_cookie", "cookie_name": "SESSION"}),
        ],
    }


class Browser:
    """One client with a cookie jar, a new connection per request (so both workers see it)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), connector=aiohttp.TCPConnector(force_close=True)
        )
        self.last_set_cookie: list[str] = []

    @property
    def path(self) -> str:
        # The application-cookie kinds need the application to set SESSION once.
        return "/set-cookie/SESSION" if self.kind in ("app_cookie", "application") else "/"

    async def get(self, port: int, path: str | None = None) -> str:
        async with self.session.get(f"http://127.0.0.1:{port}{path or self.path}") as response:
            assert response.status == 200, await response.text()
            self.last_set_cookie = response.headers.getall("Set-Cookie", [])
            return response.headers["X-Backend"]

    async def stuck(self, port: int, count: int = 12) -> str:
        """The one instance ``count`` requests all reach (the first may set the cookies)."""
        first = await self.get(port)
        for _ in range(count):
            assert await self.get(port, "/") == first
        return first

    def cookie(self, name: str) -> str:
        for cookie in self.session.cookie_jar:
            if cookie.key == name:
                return cookie.value
        raise AssertionError(f"no {name} cookie in the jar")

    def set_cookie(self, name: str, value: str) -> None:
        """Replace cookie ``name`` in the jar (as a client that changed it would)."""
        self.session.cookie_jar.clear(lambda cookie: cookie.key == name)
        self.session.cookie_jar.update_cookies({name: value}, URL("http://127.0.0.1/"))

    async def close(self) -> None:
        await self.session.close()


STICKY_COOKIE = {
    "lb_cookie": "AWSALB",
    "app_cookie": "AWSALBAPP-0",
    "duration": "AWSELB",
    "application": "AWSELB",
}


async def healthy(proc: Lbd, count: int) -> bool:
    """Whether exactly ``count`` instances are healthy in each of the four groups, as the workers see it."""
    status, body = await proc.admin("GET", "/v1/target-groups")
    groups = body["target_groups"] if status == 200 else []
    return len(groups) == 4 and all(g["states"].get("healthy") == count for g in groups)


async def all_healthy(proc: Lbd) -> bool:
    return await healthy(proc, 3)


def ports() -> dict[str, int]:
    return {kind: free_port() for kind in KINDS}


async def test_each_kind_sticks_fails_over_and_survives_reload_restart_and_a_second_node(
    lbd: LbdFactory, instances: Instances, tmp_path: Path
) -> None:
    key_file = tmp_path / "shared" / "stickiness.keys"
    node_ports = ports()
    proc = lbd(config(instances, node_ports, key_file), workers=2)
    await proc.wait_ready()
    await wait_for(lambda: all_healthy(proc), what="every instance healthy")
    assert key_file.exists()  # created on first start
    browsers = {kind: Browser(kind) for kind in KINDS}
    try:
        stuck = {kind: await b.stuck(node_ports[kind]) for kind, b in browsers.items()}
        for kind, browser in browsers.items():
            browser.cookie(STICKY_COOKIE[kind])  # the session is a sealed cookie, not a connection

        # The instance of the lb_cookie session turns unhealthy: every kind on it moves, then stays.
        victim = instances.by_name(stuck["lb_cookie"])
        victim.health_status = 500

        await wait_for(lambda: healthy(proc, 2), what="the instance unhealthy in every group")
        for kind, browser in browsers.items():
            if stuck[kind] == victim.name:
                stuck[kind] = await browser.stuck(node_ports[kind])
                assert stuck[kind] != victim.name
        victim.health_status = 200
        await wait_for(lambda: all_healthy(proc), what="the instance healthy again")
        for kind, browser in browsers.items():
            assert await browser.stuck(node_ports[kind], 6) == stuck[kind], kind  # no move back

        # A reload (SIGHUP) and a restart keep every session: the cookies are sealed with the key file.
        proc.signal(signal.SIGHUP)
        await proc.wait_generation(2)
        for kind, browser in browsers.items():
            assert await browser.stuck(node_ports[kind], 4) == stuck[kind], kind
        proc.stop()
        proc.start()
        await proc.wait_ready()
        await wait_for(lambda: all_healthy(proc), what="every instance healthy after the restart")
        for kind, browser in browsers.items():
            assert await browser.stuck(node_ports[kind], 4) == stuck[kind], kind

        # A second node sharing the key file honours the first node's cookies.
        other_ports = ports()
        other = lbd(config(instances, other_ports, key_file), workers=1)
        await other.wait_ready()
        await wait_for(lambda: all_healthy(other), what="every instance healthy on the second node")
        for kind, browser in browsers.items():
            assert await browser.stuck(other_ports[kind], 4) == stuck[kind], kind
    finally:
        for browser in browsers.values():
            await browser.close()


async def test_tampered_and_foreign_cookies_are_ignored_and_rotation_keeps_sessions(
    lbd: LbdFactory, instances: Instances, tmp_path: Path
) -> None:
    key_file = tmp_path / "stickiness.keys"
    node_ports = ports()
    proc = lbd(config(instances, node_ports, key_file), workers=2)
    await proc.wait_ready()
    await wait_for(lambda: all_healthy(proc), what="every instance healthy")
    port = node_ports["duration"]
    browser = Browser("duration")
    try:
        first = await browser.stuck(port)
        # CLB's duration cookie is set only when a client is balanced: no Set-Cookie while it is honoured.
        await browser.get(port)
        assert browser.last_set_cookie == []
        honoured = browser.cookie("AWSELB")

        for bad in (
            honoured[:-4],
            honoured[:10] + ("A" if honoured[10] != "A" else "B") + honoured[11:],
            "x",
            "",
        ):
            browser.set_cookie("AWSELB", bad)
            await browser.get(port)  # served, never an error
            assert any(c.startswith("AWSELB=") for c in browser.last_set_cookie), bad  # balanced anew
        # A cookie of another kind (the ALB's AWSALB, sealed with the same key) is not an AWSELB.
        alb = Browser("lb_cookie")
        await alb.get(node_ports["lb_cookie"])
        browser.set_cookie("AWSELB", alb.cookie("AWSALB"))
        await alb.close()
        await browser.get(port)
        assert any(c.startswith("AWSELB=") for c in browser.last_set_cookie)

        # Rotation: a new key first in the file, the old one kept: the old cookie still sticks, new cookies
        # are sealed with the new key.
        browser.set_cookie("AWSELB", honoured)
        old_key = key_file.read_text().strip()
        key_file.write_text("aa" * 32 + "\n" + old_key + "\n")
        proc.signal(signal.SIGHUP)
        await proc.wait_generation(2)
        assert await browser.stuck(port, 4) == first
        assert browser.last_set_cookie == []
        fresh = Browser("duration")
        await fresh.get(port)
        new_cookie = fresh.cookie("AWSELB")
        await fresh.close()
        # Dropping the old key ends the old sessions only: the new key's cookie is still honoured.
        key_file.write_text("aa" * 32 + "\n")
        proc.signal(signal.SIGHUP)
        await proc.wait_generation(3)
        browser.set_cookie("AWSELB", honoured)
        await browser.get(port)
        assert any(c.startswith("AWSELB=") for c in browser.last_set_cookie)
        browser.set_cookie("AWSELB", new_cookie)
        await browser.get(port)
        assert browser.last_set_cookie == []
    finally:
        await browser.close()


async def test_cookie_attributes(lbd: LbdFactory, instances: Instances, tmp_path: Path) -> None:
    node_ports = ports()
    proc = lbd(config(instances, node_ports, tmp_path / "keys"))
    await proc.wait_ready()
    seen: dict[str, list[str]] = {}
    for kind in KINDS:
        browser = Browser(kind)
        await browser.get(node_ports[kind])
        seen[kind] = browser.last_set_cookie
        await browser.close()
    lb = seen["lb_cookie"]
    assert [c.split("=", 1)[0] for c in lb] == ["AWSALB", "AWSALBCORS"]
    assert lb[0].split(";", 1)[1].strip().startswith("Expires=") and lb[0].endswith("; Path=/")
    assert lb[1].endswith("; Path=/; SameSite=None; Secure")
    app = seen["app_cookie"]
    assert [c.split("=", 1)[0] for c in app] == [
        "SESSION",
        "AWSALBAPP-0",
        "AWSALBAPP-1",
        "AWSALBAPP-2",
        "AWSALBAPP-3",
    ]
    assert all(c.startswith(f"AWSALBAPP-{n}=_remove_;") for n, c in enumerate(app[2:], 1))
    duration = seen["duration"]
    assert [c.split("=", 1)[0] for c in duration] == ["AWSELB", "AWSELBCORS"] and "Expires=" in duration[0]
    application = seen["application"]
    # AWSELB follows the application cookie's lifetime (Max-Age=3600).
    assert [c.split("=", 1)[0] for c in application] == ["SESSION", "AWSELB", "AWSELBCORS"]
    assert "Max-Age=3600" in application[1]
