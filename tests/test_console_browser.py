"""The console in a real browser: Debian's Chromium, headless, driven by Playwright, against a real lbd
with real Python targets. Screenshots of each step are saved under the test's tmp dir (the path is
printed); LBD_UPDATE_SCREENSHOT=1 also writes the last one to docs/console.png, the README's picture."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.async_api import Browser, ConsoleMessage, Page, Route, async_playwright, expect

from tests.conftest import LbdFactory
from tests.http_backend import HttpBackend
from tests.lbdproc import FAST_HTTP_CHECK, Lbd, free_port, wait_for

CHROMIUM = "/usr/bin/chromium"  # Debian's package (scripts/test-tools.sh installs it)
EXPECT_TIMEOUT = 30_000  # ms: health checks every 2 s, two to change state, on a loaded machine
DOCS_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "console.png"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


class Watched:
    """A page and everything it said on its console or threw."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.console_errors.append(f"{message.type}: {message.text}")


async def open_page(browser: Browser, shots: Path) -> Watched:
    shots.mkdir(exist_ok=True)
    context = await browser.new_context(viewport={"width": 1360, "height": 900})
    expect.set_options(timeout=EXPECT_TIMEOUT)
    return Watched(await context.new_page())


async def wait_for_chart_points(page: Page, chart: str, points: int, timeout: float = 120_000) -> None:
    """Until the first rate chart under ``chart`` (a CSS selector) draws a line through more than
    ``points`` samples: the charts grow with each refresh (a docs picture wants some history)."""
    await page.wait_for_function(
        """([chart, points]) => {
            const line = document.querySelector(`${chart} .rate svg.spark path.line`);
            return line !== null && line.getAttribute('d').split('L').length > points;
        }""",
        arg=[chart, points],
        timeout=timeout,
    )


def example_config(port: int, web: list[int], api: list[int]) -> dict[str, Any]:
    """conf/application.yaml's shape, on loopback: rules to an api group, the rest to web."""
    return {
        "node": {"zone": "zone-a", "workers": 1},
        "load_balancers": [
            {
                "name": "web-front",
                "type": "application",
                "listeners": [
                    {
                        "protocol": "HTTP",
                        "address": "127.0.0.1",
                        "port": port,
                        "rules": [
                            {
                                "priority": 10,
                                "conditions": [{"field": "path-pattern", "values": ["/api/*", "/hang"]}],
                                "actions": [{"type": "forward", "target_group": "api"}],
                            },
                            {
                                "priority": 30,
                                "conditions": [{"field": "path-pattern", "values": ["/old/*"]}],
                                "actions": [
                                    {"type": "redirect", "status_code": "HTTP_301", "path": "/new/#{path}"}
                                ],
                            },
                        ],
                        "default_actions": [{"type": "forward", "target_group": "web"}],
                    }
                ],
            }
        ],
        "target_groups": [
            {
                "name": "web",
                "protocol": "HTTP",
                "health_check": FAST_HTTP_CHECK,
                "targets": [{"id": "127.0.0.1", "port": p} for p in web],
            },
            {
                "name": "api",
                "protocol": "HTTP",
                "health_check": FAST_HTTP_CHECK,
                "deregistration_delay_seconds": 120,  # the drain ends early only once nothing is in flight
                "targets": [{"id": "127.0.0.1", "port": p} for p in api],
            },
        ],
    }


def target_row(page: Page, group: str, port: int) -> Any:
    return page.locator(f'[data-group="{group}"] tr[data-target="127.0.0.1:{port}"]')


async def get(port: int, path: str) -> bytes:
    """One GET on its own connection (without the Content-Length: 0 that http_request sends)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        return await reader.read(-1)
    finally:
        writer.close()


async def traffic(port: int, stop: asyncio.Event) -> None:
    """A steady trickle of requests, a few of them 4xx and 5xx, so the charts have something to draw."""
    paths = ["/", "/api/things", "/", "/status/404", "/", "/status/503", "/old/page", "/status/404"]
    while not stop.is_set():
        for path in paths:
            with contextlib.suppress(OSError):
                await get(port, path)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


async def hold_a_request(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /hang HTTP/1.1\r\nHost: test\r\n\r\n")
    await writer.drain()
    return reader, writer


@pytest.mark.slow  # a browser, an lbd, four targets and several health-check rounds: ~20 s
async def test_the_console_shows_lbd_live_and_drives_the_admin_api(
    lbd: LbdFactory,
    http_backends: Callable[[str], Awaitable[HttpBackend]],
    browser: Browser,
    tmp_path: Path,
) -> None:
    web_a, web_b, api_a, api_b = [await http_backends(name) for name in ("web-a", "web-b", "api-a", "api-b")]
    port = free_port()
    config = example_config(port, [web_a.port, web_b.port], [api_a.port])
    proc = lbd(config)
    await proc.wait_ready()
    stop = asyncio.Event()
    load = asyncio.create_task(traffic(port, stop))
    shots = tmp_path / "screenshots"
    print(f"screenshots in {shots}")
    watched = await open_page(browser, shots)
    page = watched.page
    held: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    try:
        # The README's picture wants a longer history: polls every second, forty of them.
        readme = bool(os.environ.get("LBD_UPDATE_SCREENSHOT"))
        query = "?interval=1" if readme else ""
        response = await page.goto(f"http://127.0.0.1:{proc.admin_port}/{query}")
        assert response is not None and response.status == 200

        # Every load balancer, listener and rule table; every target with its state, zone and weight.
        card = page.locator('[data-load-balancer="web-front"]')
        listener = card.locator(f'tr[data-listener="HTTP:{port}"]')
        await expect(listener).to_contain_text(f"127.0.0.1:{port}")
        rules = card.locator("details.rules")
        await expect(rules).to_contain_text("path-pattern: /api/* | /hang")
        await expect(rules).to_contain_text("forward → api")
        await expect(rules).to_contain_text("redirect HTTP_301 path=/new/#{path}")
        await expect(rules).to_contain_text("forward → web")
        for group, backend in (("web", web_a), ("web", web_b), ("api", api_a)):
            row = target_row(page, group, backend.port)
            await expect(row.locator("td.state")).to_have_text("healthy")
            await expect(row).to_contain_text("zone-a")

        # Live numbers: the request rate and the error rates move, and the charts draw lines.
        above_zero = r"(?!0\.00\b)\d+(\.\d+)?"
        await expect(listener.locator(".rate .value")).to_have_text(re.compile(rf"^{above_zero} /s$"))
        await expect(listener.locator(".errors .value .k5")).to_have_text(re.compile(rf"^{above_zero}$"))
        await expect(listener.locator(".latency .value")).to_have_text(re.compile(r"^\d.* · \d.*s$"))
        await expect(listener.locator(".rate svg.spark path.line")).to_have_count(1)
        await expect(listener.locator(".latency svg.spark path.line")).to_have_count(2)
        # The charts grow with each refresh: a line through several samples.
        await wait_for_chart_points(
            page, "tr[data-listener]", 40 if readme else 3, 120_000 if readme else EXPECT_TIMEOUT
        )
        await page.screenshot(path=str(shots / "1-overview.png"), full_page=True)
        assert watched.console_errors == [] and watched.page_errors == []

        # A target whose backend goes away turns unhealthy, with ELB's reason code.
        await web_a.kill()
        row = target_row(page, "web", web_a.port)
        await expect(row.locator("td.state")).to_have_text("unhealthy")
        await expect(row.locator("td.reason")).to_have_text("Target.FailedHealthChecks")
        await expect(target_row(page, "web", web_b.port).locator("td.state")).to_have_text("healthy")
        await page.screenshot(path=str(shots / "2-unhealthy.png"), full_page=True)

        # Deregister through the button (two clicks): with a request in flight the target drains.
        held = await hold_a_request(port)
        await wait_for(lambda: any(r.target == "/hang" for r in api_a.requests), what="/hang at api-a")
        api_row = target_row(page, "api", api_a.port)
        button = api_row.locator("button.danger")
        await button.click()
        await expect(button).to_have_text("Confirm")
        await button.click()
        await expect(api_row.locator("td.state")).to_have_text("draining")
        await expect(page.locator('[data-group="api"] .message')).to_contain_text("draining")

        async def draining_on_the_server() -> bool:
            status, body = await proc.admin("GET", "/v1/target-groups/api/targets")
            return status == 200 and body["targets"][0]["state"] == "draining"

        await wait_for(draining_on_the_server, what="api-a draining in the admin API")
        before = await page.locator("#node").inner_text()
        await expect(page.locator("#node")).not_to_have_text(before)  # a refresh later, still draining
        await expect(api_row.locator("td.state")).to_have_text("draining")

        # Register a target with the form: it shows up in its group.
        form = page.locator('form[data-register="api"]')
        await form.locator('input[name="id"]').fill("127.0.0.1")
        await form.locator('input[name="port"]').fill(str(api_b.port))
        await form.locator('input[name="weight"]').fill("3")
        await form.locator("button[type=submit]").click()
        new_row = target_row(page, "api", api_b.port)
        await expect(new_row.locator("td.num").first).to_have_text("3")
        await expect(new_row.locator("td.state")).to_have_text("healthy")
        await page.screenshot(path=str(shots / "3-draining-and-registered.png"), full_page=True)
        assert watched.console_errors == [] and watched.page_errors == []

        # A reload of a broken file: refused, and the page says why, naming the key.
        broken = yaml.safe_load(proc.config_path.read_text())
        broken["load_balancers"][0]["listeners"][0]["protocl"] = "HTTP"
        proc.config_path.write_text(yaml.safe_dump(broken, sort_keys=False))
        await page.locator("#reload").click()
        notice = page.locator("#notice")
        await expect(notice).to_be_visible()
        await expect(notice).to_contain_text("not reloaded")
        await expect(notice.locator("li")).to_contain_text(
            "load_balancers[0].listeners[0].protocl: unknown key"
        )
        await page.screenshot(path=str(shots / "4-failed-reload.png"), full_page=True)
        if readme:
            shutil.copyfile(shots / "4-failed-reload.png", DOCS_SCREENSHOT)
        # The hook for what comes next: a key listed in EXTENSIONS gets a plain table once the summary
        # carries it, and none before. Every key lbd serves today has a section of its own, so the test
        # lists a made-up one and adds it to the real summary on its way to the page.
        await page.evaluate(
            'EXTENSIONS.push({key: "widgets", title: "Widgets", columns: ["name", "domain", "requests"]})'
        )

        async def with_widgets(route: Route) -> None:
            response = await route.fetch()
            body = await response.json()
            body["widgets"] = [{"name": "static", "domain": "cdn.test", "requests": 2}]
            await route.fulfill(response=response, json=body)

        await page.route("**/v1/summary", with_widgets)
        widgets = page.locator("section#widgets")
        await expect(widgets).to_contain_text("Widgets")
        await expect(widgets.locator("td").first).to_have_text("static")
        await page.unroute("**/v1/summary")
        await expect(widgets).to_have_count(0)
        # No APIs, usage plans, distributions or web ACLs in this config: no sections for them
        # (tests/test_console_gateway.py and tests/test_console_edge.py have them).
        assert await page.locator("#apis, #usage-plans, #distributions, #web-acls").count() == 0

        # The browser logs the 422 itself; nothing else may have gone wrong.
        assert [e for e in watched.console_errors if "status of 422" not in e] == []
        assert watched.page_errors == []
    finally:
        stop.set()
        await load
        if held is not None:
            held[1].close()
        await page.context.close()


async def test_with_a_token_the_console_wants_a_login_and_keeps_the_token_in_a_strict_cookie(
    lbd: LbdFactory,
    http_backends: Callable[[str], Awaitable[HttpBackend]],
    browser: Browser,
    tmp_path: Path,
) -> None:
    web = await http_backends("web")
    token = tmp_path / "admin.token"
    token.write_text("console-s3cret\n")
    port = free_port()
    config = example_config(port, [web.port], [])
    config["admin"] = {"token_file": str(token)}
    proc: Lbd = lbd(config)
    await proc.wait_ready()
    watched = await open_page(browser, tmp_path / "screenshots")
    page = watched.page
    admin = f"http://127.0.0.1:{proc.admin_port}"
    try:
        await page.goto(f"{admin}/")
        await expect(page.locator('input[name="token"]')).to_be_visible()
        assert (await page.request.get(f"{admin}/v1/summary")).status == 401
        await page.screenshot(path=str(tmp_path / "screenshots" / "login.png"))

        await page.locator('input[name="token"]').fill("not-it")
        await page.locator("button[type=submit]").click()
        await expect(page.locator(".login-form .error")).to_contain_text("not the admin token")

        await page.locator('input[name="token"]').fill("console-s3cret")
        await page.locator("button[type=submit]").click()
        await expect(page.locator(f'tr[data-listener="HTTP:{port}"]')).to_be_visible()
        await expect(target_row(page, "web", web.port).locator("td.state")).to_have_text("healthy")
        (cookie,) = await page.context.cookies()
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"

        # The cookie alone reads, but changes need the console's header too (cross-site request forgery).
        assert (await page.request.get(f"{admin}/v1/summary")).status == 200
        assert (await page.request.post(f"{admin}/v1/reload")).status == 403
        await page.locator("#reload").click()
        await expect(page.locator("#notice")).to_contain_text("Config reloaded")

        await page.locator("#logout button").click()
        await expect(page.locator('input[name="token"]')).to_be_visible()
        assert (await page.request.get(f"{admin}/v1/summary")).status == 401
        assert watched.console_errors == [] and watched.page_errors == []
    finally:
        await page.context.close()
