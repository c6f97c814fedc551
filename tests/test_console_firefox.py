"""The console in Debian's Firefox, headless, over WebDriver BiDi (tests/bidi.py): it runs without a
logged error or warning, draws the live page and shows a refused reload, as in Chromium."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import yaml

from tests.bidi import firefox
from tests.conftest import LbdFactory
from tests.http_backend import HttpBackend
from tests.lbdproc import free_port
from tests.test_console_browser import example_config, traffic


@pytest.mark.slow  # a browser, an lbd, four targets and several health-check rounds: ~20 s
async def test_the_console_runs_in_firefox_without_errors(
    lbd: LbdFactory, http_backends: Callable[[str], Awaitable[HttpBackend]], tmp_path: Path
) -> None:
    web_a, web_b, api_a = [await http_backends(name) for name in ("web-a", "web-b", "api-a")]
    port = free_port()
    proc = lbd(example_config(port, [web_a.port, web_b.port], [api_a.port]))
    await proc.wait_ready()
    stop = asyncio.Event()
    load = asyncio.create_task(traffic(port, stop))
    try:
        async with firefox() as browser:
            await browser.goto(f"http://127.0.0.1:{proc.admin_port}/")
            await browser.wait_for(
                "document.querySelectorAll('tr[data-target] td.state.healthy').length === 3"
            )
            row = f"document.querySelector('tr[data-listener=\"HTTP:{port}\"]')"
            await browser.wait_for(f"{row} !== null && {row}.textContent.includes('127.0.0.1:{port}')")
            rules = await browser.evaluate("document.querySelector('details.rules').textContent")
            assert "path-pattern: /api/* | /hang" in rules and "forward → web" in rules
            # A few refreshes: the request-rate chart is a line through several samples, above zero.
            await browser.wait_for(
                f"({row}.querySelector('.rate path.line')?.getAttribute('d') || '').split('L').length > 3"
            )
            rate = await browser.evaluate(f"{row}.querySelector('.rate .value').textContent")
            assert re.fullmatch(r"(?!0\.00\b)\d+(\.\d+)? /s", rate), rate

            broken = yaml.safe_load(proc.config_path.read_text())
            broken["load_balancers"][0]["listeners"][0]["protocl"] = "HTTP"
            proc.config_path.write_text(yaml.safe_dump(broken, sort_keys=False))
            await browser.evaluate("document.querySelector('#reload').click()")
            notice = "document.querySelector('#notice li')?.textContent"
            await browser.wait_for(f"{notice}.includes('listeners[0].protocl: unknown key')")
            await browser.screenshot(tmp_path / "firefox.png")
            problems = [e for e in browser.entries if e.get("level") in ("error", "warn")]
            assert problems == [], problems
    finally:
        stop.set()
        await load


async def test_the_distribution_and_web_acl_sections_run_in_firefox(lbd: LbdFactory, tmp_path: Path) -> None:
    from tests.test_console_edge import running, some_traffic

    async with running(lbd) as (proc, alb_port, edge_port), firefox() as browser:
        await browser.goto(f"http://127.0.0.1:{proc.admin_port}/?interval=1")
        card = "document.querySelector('[data-distribution=\"site\"]')"
        await browser.wait_for(f"{card} !== null && {card}.textContent.includes('ha: app → spare')")
        await some_traffic(alb_port, edge_port)
        await browser.wait_for(f"{card}.querySelector('.total-count').textContent === '5'")
        blocked = 'document.querySelector(\'[data-web-acl="protect"] tr[data-rule="no-admin"] td.blocked\')'
        await browser.wait_for(f"{blocked}.textContent === '1'")
        # A second sample: the rate charts draw a line.
        await some_traffic(alb_port, edge_port)
        await browser.wait_for(f"{card}.querySelector('.rate path.line') !== null")
        await browser.screenshot(tmp_path / "firefox-edge.png")
        problems = [e for e in browser.entries if e.get("level") in ("error", "warn")]
        assert problems == [], problems
