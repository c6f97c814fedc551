"""Distributions and web ACLs in the console and in ``lbd status``: a real lbd serving a distribution in
front of a real Python origin (aiohttp, tests/edge_origin.py) and an application load balancer with a
web ACL, real requests (misses, hits, a blocked and a counted one), Debian's Chromium headless.
LBD_UPDATE_SCREENSHOT=1 writes the sections' picture to docs/console-edge.png."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, expect

from tests.conftest import LbdFactory
from tests.edge_origin import Answer, Origin
from tests.lbdproc import Lbd, free_port, http_request
from tests.test_console_browser import browser, open_page, wait_for_chart_points  # noqa: F401 (a fixture)
from tests.test_console_status import lbd_status, line_with

DOCS_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "console-edge.png"
BOT = {"User-Agent": "crawler-bot/1.0"}


def web_acls() -> list[dict[str, Any]]:
    """One ACL on the load balancer (a block rule and a count rule), one on the distribution."""

    def match(field: dict[str, Any], positional: str, value: str) -> dict[str, Any]:
        return {"byte_match": {**field, "positional": positional, "value": value}}

    return [
        {
            "name": "protect",
            "associations": [{"load_balancer": "alb"}],
            "rules": [
                {
                    "name": "no-admin",
                    "priority": 1,
                    "action": "block",
                    "statement": match({"field": "uri_path"}, "STARTS_WITH", "/admin"),
                },
                {
                    "name": "bots",
                    "priority": 2,
                    "action": "count",
                    "statement": match({"field": "single_header", "header": "User-Agent"}, "CONTAINS", "bot"),
                },
            ],
        },
        {
            "name": "edge-guard",
            "associations": [{"distribution": "site"}],
            "rules": [
                {
                    "name": "no-private",
                    "priority": 10,
                    "action": "block",
                    "statement": match({"field": "uri_path"}, "STARTS_WITH", "/private"),
                }
            ],
        },
    ]


def edge_config(alb_port: int, edge_port: int, origin: Origin) -> dict[str, Any]:
    return {
        "node": {"zone": "zone-a", "workers": 1},
        "target_groups": [
            {
                "name": "web",
                "protocol": "HTTP",
                "health_check": {"enabled": False},
                "targets": [{"id": "127.0.0.1", "port": origin.port}],
            }
        ],
        "load_balancers": [
            {
                "name": "alb",
                "type": "application",
                "listeners": [
                    {
                        "protocol": "HTTP",
                        "address": "127.0.0.1",
                        "port": alb_port,
                        "default_actions": [{"type": "forward", "target_group": "web"}],
                    }
                ],
            }
        ],
        "distributions": [
            {
                "name": "site",
                "comment": "the shop's pages",
                "listeners": [{"protocol": "HTTP", "address": "127.0.0.1", "port": edge_port}],
                "origins": [{"id": "app", "target_group": "web"}, {"id": "spare", "target_group": "web"}],
                "origin_groups": [{"id": "ha", "members": ["app", "spare"]}],
                "default_cache_behavior": {"origin": "ha", "cache_policy": "CachingOptimized"},
                "cache_behaviors": [
                    {"path_pattern": "/api/*", "origin": "app", "cache_policy": "CachingDisabled"}
                ],
            }
        ],
        "web_acls": web_acls(),
    }


@contextlib.asynccontextmanager
async def running(lbd: LbdFactory) -> AsyncIterator[tuple[Lbd, int, int]]:
    origin = await Origin().start()
    origin.routes["/page"] = Answer(body=b"a page " * 100, headers={"Cache-Control": "max-age=600"})
    origin.routes["/api/cart"] = Answer(body=b"{}", headers={"Content-Type": "application/json"})
    origin.routes["/"] = Answer(body=b"home")
    alb_port, edge_port = free_port(), free_port()
    proc = lbd(edge_config(alb_port, edge_port, origin))
    try:
        await proc.wait_ready()
        yield proc, alb_port, edge_port
    finally:
        await origin.stop()


async def some_traffic(alb_port: int, edge_port: int) -> None:
    """Through the distribution: a miss then two hits on /page, an uncached /api/cart and one its web ACL
    blocks; through the load balancer: an allowed request, a blocked one and a counted one."""
    for _ in range(3):
        assert (await http_request(edge_port, "GET", "/page"))[0] == 200
    assert (await http_request(edge_port, "GET", "/api/cart"))[0] == 200
    assert (await http_request(edge_port, "GET", "/private/notes"))[0] == 403
    assert (await http_request(alb_port, "GET", "/"))[0] == 200
    assert (await http_request(alb_port, "GET", "/admin/users"))[0] == 403
    assert (await http_request(alb_port, "GET", "/", headers=BOT))[0] == 200


async def traffic(alb_port: int, edge_port: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(OSError, AssertionError):
            await some_traffic(alb_port, edge_port)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


async def test_the_summary_and_lbd_status_show_the_distribution_and_the_web_acl(lbd: LbdFactory) -> None:
    async with running(lbd) as (proc, alb_port, edge_port):
        await some_traffic(alb_port, edge_port)
        status, record = await proc.admin(
            "POST", "/v1/distributions/site/invalidations", json.dumps({"paths": ["/page"]}).encode()
        )
        assert status == 201, record
        status, summary = await proc.admin("GET", "/v1/summary")
        assert status == 200
        (site,) = summary["distributions"]
        assert site["listeners"] == [
            {"name": f"HTTP:{edge_port}", "protocol": "HTTP", "address": "127.0.0.1", "port": edge_port}
        ]
        assert [(b["path_pattern"], b["origins"], b["cache_policy"]["name"]) for b in site["behaviors"]] == [
            ("/api/*", ["app"], "CachingDisabled"),
            ("*", ["app", "spare"], "CachingOptimized"),
        ]
        assert site["origin_groups"] == [
            {"id": "ha", "members": ["app", "spare"], "failover_status_codes": [500, 502, 503, 504]}
        ]
        assert site["requests"] == 5 and site["results"]["hit"] == 2 and site["results"]["error"] == 1
        # The uncached behavior's request is a Miss too, as CloudFront counts it (x-edge-result-type).
        assert site["results"]["miss"] == site["cache_misses"] == 2 and site["cache_hit_ratio"] == 0.5
        assert site["responses"]["2xx"] == 4 and site["http_4xx"] == 1 and site["http_5xx"] == 0
        assert site["web_acl"] == "edge-guard"
        assert site["origin_requests"] == 2 and site["bytes_sent"] >= 3 * 700
        assert site["origin_latency"]["p50_seconds"] is not None
        assert site["invalidations"]["count"] == 1 and site["invalidations"]["in_progress"] == 0
        assert site["invalidations"]["latest"]["id"] == record["id"]
        _, _, text = await http_request(proc.admin_port, "GET", "/metrics")
        assert f'lbd_edge_cache_hits_total{{distribution="site"}} {site["cache_hits"]}.0' in text.decode()

        acl, guard = summary["web_acls"]
        assert guard["associations"] == [{"distribution": "site"}]
        assert (guard["rules"][0]["blocked"], guard["default"]["allowed"], guard["requests"]) == (1, 4, 5)
        assert (acl["name"], acl["default_action"], acl["associations"]) == (
            "protect",
            "allow",
            [{"load_balancer": "alb"}],
        )
        rules = {r["name"]: r for r in acl["rules"]}
        assert [r["name"] for r in acl["rules"]] == ["no-admin", "bots"]
        assert (rules["no-admin"]["action"], rules["no-admin"]["statement"]) == ("block", "byte_match")
        assert rules["no-admin"]["blocked"] == 1 and rules["bots"]["counted"] == 1
        assert acl["default"] == {"allowed": 2, "blocked": 0}
        assert (acl["allowed"], acl["blocked"], acl["counted"], acl["requests"]) == (2, 1, 1, 3)

        code, out, err = await lbd_status("-c", str(proc.config_path), "--interval", "0")
        assert code == 0, err
        cells = re.split(r"\s{2,}", line_with(out, "site", f"HTTP:{edge_port}"))
        assert cells[3:5] == ["50%", "50%"] and cells[-4:] == ["5", "2", "2", "1"], cells
        assert "ha (app then spare)" in line_with(out, "site", "CachingOptimized", "1/86400/31536000")
        assert "GET_HEAD" in line_with(out, "site", "/api/*", "CachingDisabled")
        cells = re.split(r"\s{2,}", line_with(out, "protect", "no-admin"))
        assert cells[3] == "block" and cells[-3:] == ["0", "1", "0"], cells
        cells = re.split(r"\s{2,}", line_with(out, "protect", "Default_Action"))
        assert cells[-3:] == ["2", "0", "-"], cells
        assert line_with(out, "protect", "(all rules)").split()[-3:] == ["2", "1", "1"]

        # Rates over a window while requests flow: the distribution's and the blocking rule's are above 0.
        stop = asyncio.Event()
        load = asyncio.create_task(traffic(alb_port, edge_port, stop))
        try:
            code, out, err = await lbd_status("-c", str(proc.config_path), "--interval", "1")
        finally:
            stop.set()
            await load
        assert code == 0, err
        cells = re.split(r"\s{2,}", line_with(out, "site", f"HTTP:{edge_port}"))
        assert float(cells[2]) > 0 and re.fullmatch(r"\d+%", cells[3]), cells  # REQ/S, HIT in the window
        cells = re.split(r"\s{2,}", line_with(out, "protect", "no-admin"))
        assert float(cells[5]) > 0, cells  # BLOCKED/S

        # An ACL replaced through the admin API: the summary shows the rules in force, and says so.
        replaced = web_acls()[0]
        replaced["rules"][1] = {**replaced["rules"][1], "name": "crawlers", "action": "block"}
        status, body = await proc.admin("PUT", "/v1/web-acls/protect", json.dumps(replaced).encode())
        assert status == 200, body
        assert (await http_request(alb_port, "GET", "/", headers=BOT))[0] == 403
        _, summary = await proc.admin("GET", "/v1/summary")
        acl = summary["web_acls"][0]
        assert acl["changed_through_api"] and [(r["name"], r["action"]) for r in acl["rules"]] == [
            ("no-admin", "block"),
            ("crawlers", "block"),
        ]
        assert acl["rules"][1]["blocked"] == 1 and acl["counted"] > 1  # the old count rule's, still counted


async def test_the_console_shows_the_distribution_and_the_web_acl_moving(
    lbd: LbdFactory,
    browser: Browser,  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    shots = tmp_path / "screenshots"
    print(f"screenshots in {shots}")
    async with running(lbd) as (proc, alb_port, edge_port):
        watched = await open_page(browser, shots)
        page = watched.page
        stop = asyncio.Event()
        load: asyncio.Task[None] | None = None
        try:
            response = await page.goto(f"http://127.0.0.1:{proc.admin_port}/?interval=1")
            assert response is not None and response.status == 200
            card = page.locator('section#distributions [data-distribution="site"]')
            await expect(card).to_contain_text(f"HTTP:{edge_port} 127.0.0.1:{edge_port}")
            await expect(card).to_contain_text("Origin group ha: app, then spare")
            await expect(card.locator("h3")).to_contain_text("web ACL edge-guard")
            await expect(card.locator('tr[data-behavior="/api/*"]')).to_contain_text(
                "CachingDisabled (not cached)"
            )
            await expect(card.locator('tr[data-behavior="*"]')).to_contain_text("ha: app → spare")
            await expect(card.locator(".total-count")).to_have_text("0")
            acl = page.locator('section#web-acls [data-web-acl="protect"]')
            await expect(acl).to_contain_text("Protects load balancer alb")
            blocked = acl.locator('tr[data-rule="no-admin"] td.blocked')
            await expect(blocked).to_have_text("0")

            # Real requests: the counts move within a refresh, then the rates and the charts.
            await some_traffic(alb_port, edge_port)
            await expect(card.locator(".total-count")).to_have_text("5")
            await expect(card.locator(".results")).to_contain_text("1 Error")
            await expect(card.locator(".results")).to_contain_text("2 Hit")
            await expect(card.locator(".results")).to_contain_text("2 Miss")
            await expect(card.locator(".hit .value")).to_contain_text("50.0% all")
            await expect(blocked).to_have_text("1")
            await expect(acl.locator('tr[data-rule="bots"] td.counted')).to_have_text("1")
            await expect(acl.locator('tr[data-rule="Default_Action"] td.allowed')).to_have_text("2")

            load = asyncio.create_task(traffic(alb_port, edge_port, stop))
            above_zero = r"(?!0\.00\b)\d+(\.\d+)?"
            await expect(card.locator(".rate .value")).to_have_text(re.compile(rf"^{above_zero} /s$"))
            await expect(card.locator(".hit .value")).to_have_text(re.compile(r"^\d+(\.\d)?% · \d.*% all$"))
            await expect(card.locator(".latency .value")).to_have_text(re.compile(r"^\d.* · \d.*s$"))
            await expect(card.locator(".rate svg.spark path.line")).to_have_count(1)
            await expect(card.locator(".errors .value .k4")).to_have_text(re.compile(rf"^{above_zero}$"))
            verdicts = acl.locator(".acl-stats .verdicts .value .k5")
            await expect(verdicts).to_have_text(re.compile(rf"^{above_zero}$"))  # blocked per second
            rule_rate = acl.locator('tr[data-rule="no-admin"] .rates .k5')
            await expect(rule_rate).to_have_text(re.compile(rf"^{above_zero}$"))
            if os.environ.get("LBD_UPDATE_SCREENSHOT"):  # docs/console.md's picture wants some history
                await wait_for_chart_points(page, "[data-distribution]", 30)
            await page.screenshot(path=str(shots / "distributions-and-web-acls.png"), full_page=True)
            if os.environ.get("LBD_UPDATE_SCREENSHOT"):
                # Tall enough that the sections are in view whole, clear of the sticky header.
                await page.set_viewport_size({"width": 1360, "height": 2200})
                await page.locator("#extensions").screenshot(path=str(DOCS_SCREENSHOT))
            assert watched.console_errors == [] and watched.page_errors == []
        finally:
            stop.set()
            if load is not None:
                await load
            await page.context.close()
