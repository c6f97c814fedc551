"""APIs and usage plans in the console and in ``lbd status``: a real lbd with an API in front of a real
Python target, an API key in a usage plan made through the admin API, Debian's Chromium headless."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, expect

from tests.conftest import LbdFactory
from tests.http_backend import HttpBackend
from tests.lbdproc import Lbd, free_port, http_request
from tests.test_console_browser import browser, open_page, wait_for_chart_points  # noqa: F401 (a fixture)
from tests.test_console_status import lbd_status, line_with

Backends = Callable[[str], Awaitable[HttpBackend]]
KEY_VALUE = "Console0Key0Value0123456789"
DOCS_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "console-apis.png"


def gateway_config(port: int, backend: HttpBackend) -> dict[str, Any]:
    integration = {"type": "HTTP_PROXY", "target_group": "app", "path": "/"}
    return {
        "node": {"zone": "zone-a", "workers": 1},
        "target_groups": [
            {
                "name": "app",
                "protocol": "HTTP",
                "health_check": {"enabled": False, "protocol": "HTTP", "path": "/", "matcher": "200"},
                "targets": [{"id": "127.0.0.1", "port": backend.port}],
            }
        ],
        "apis": [
            {
                "name": "shop",
                "stage": "live",
                "listeners": [{"protocol": "HTTP", "address": "127.0.0.1", "port": port}],
                "cache": {"enabled": True, "ttl_seconds": 60},
                "routes": [
                    {"route_key": "GET /open", "integration": integration},
                    {
                        "route_key": "GET /paid",
                        "integration": integration,
                        "api_key_required": True,
                        "cache": {"enabled": False},
                    },
                    {"route_key": "GET /teapot", "integration": {"type": "MOCK", "status_code": 418}},
                ],
            }
        ],
        "usage_plans": [
            {
                "name": "gold",
                "apis": [{"api": "shop", "stage": "live"}],
                "throttle": {"rate_limit": 1000, "burst_limit": 2000},
                "quota": {"limit": 100000, "period": "DAY"},
            }
        ],
    }


async def start_with_key(lbd: LbdFactory, backend: HttpBackend) -> tuple[Lbd, int, dict[str, Any]]:
    port = free_port()
    proc = lbd(gateway_config(port, backend))
    await proc.wait_ready()
    status, key = await proc.admin(
        "POST", "/v1/api-keys", json.dumps({"name": "mobile app", "value": KEY_VALUE}).encode()
    )
    assert status == 201, key
    status, joined = await proc.admin(
        "POST", "/v1/usage-plans/gold/keys", json.dumps({"key_id": key["id"]}).encode()
    )
    assert status == 200, joined
    return proc, port, key


async def requests(port: int, count: int) -> None:
    for _ in range(count):
        assert (await http_request(port, "GET", "/open"))[0] == 200
        assert (await http_request(port, "GET", "/paid", headers={"x-api-key": KEY_VALUE}))[0] == 200
        assert (await http_request(port, "GET", "/teapot"))[0] == 418


async def traffic(port: int, stop: asyncio.Event) -> None:
    """Requests to each route until ``stop`` is set."""
    while not stop.is_set():
        with contextlib.suppress(OSError, AssertionError):
            await requests(port, 1)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


async def test_the_summary_has_apis_and_usage_plans_without_key_values(
    lbd: LbdFactory, http_backends: Backends
) -> None:
    backend = await http_backends("app")
    proc, port, key = await start_with_key(lbd, backend)
    await requests(port, 3)
    assert (await http_request(port, "GET", "/nowhere"))[0] == 404
    status, summary = await proc.admin("GET", "/v1/summary")
    assert status == 200 and KEY_VALUE not in json.dumps(summary)
    (api,) = summary["apis"]
    assert (api["name"], api["protocol"], api["stage"], api["endpoint_type"]) == (
        "shop",
        "HTTP",
        "live",
        "REGIONAL",
    )
    assert api["listeners"] == [
        {"name": f"HTTP:{port}", "protocol": "HTTP", "address": "127.0.0.1", "port": port}
    ]
    routes = {r["route_key"]: r for r in api["routes"]}
    assert routes["GET /paid"]["api_key_required"] and not routes["GET /open"]["api_key_required"]
    assert routes["GET /paid"]["integration"] == {"type": "HTTP_PROXY", "target_group": "app", "path": "/"}
    assert (routes["GET /open"]["cached"], routes["GET /paid"]["cached"]) == (True, False)
    # The first /open missed the cache, the next two hit it; the same numbers as lbd_api_* in /metrics.
    assert (routes["GET /open"]["cache_hits"], routes["GET /open"]["cache_misses"]) == (2, 1)
    assert routes["GET /open"]["cache_hit_ratio"] == 2 / 3
    assert routes["GET /paid"]["requests"] == 3 and routes["GET /paid"]["http_4xx"] == 0
    assert routes["GET /teapot"]["http_4xx"] == 3
    assert routes["GET /paid"]["latency"]["p50_seconds"] is not None
    assert api["unmatched"]["requests"] == 1 and api["unmatched"]["http_4xx"] == 1
    assert api["requests"] == 10 and api["http_4xx"] == 4
    (plan,) = summary["usage_plans"]
    assert plan["throttle"] == {"rate_limit": 1000, "burst_limit": 2000}
    assert plan["quota"] == {"limit": 100000, "period": "DAY", "offset": 0}
    (member,) = plan["keys"]
    assert (member["id"], member["name"], member["enabled"]) == (key["id"], "mobile app", True)
    _, usage = await proc.admin("GET", "/v1/usage-plans/gold/usage")
    assert member["used"] == usage["keys"][key["id"]]["used"] == 3 and plan["used"] == 3
    assert member["period_end"] == usage["keys"][key["id"]]["period_end"]


async def test_lbd_status_prints_api_routes_and_usage_plan_keys(
    lbd: LbdFactory, http_backends: Backends
) -> None:
    backend = await http_backends("app")
    proc, port, key = await start_with_key(lbd, backend)
    await requests(port, 2)
    code, out, err = await lbd_status("-c", str(proc.config_path), "--interval", "0")
    assert code == 0, err
    assert KEY_VALUE not in out
    paid = line_with(out, "shop", "live", "GET /paid")
    assert "HTTP_PROXY app" in paid and "API key" in paid and paid.split()[-1] == "2"
    assert line_with(out, "GET /open").split()[-1] == "2" and "50%" in line_with(out, "GET /open")
    assert line_with(out, "GET /teapot").split()[-1] == "2"
    assert line_with(out, "shop", "(all routes)").split()[-1] == "6"
    plan = line_with(out, "gold", key["id"])
    assert "mobile app" in plan and "enabled" in plan and "2/100000" in plan and "1000.0/s burst 2000" in plan

    cells = re.split(r"\s{2,}", line_with(out, "GET /paid"))  # columns are two spaces apart or more
    assert all(re.fullmatch(r"[\d.]+ (us|ms|s)", c) for c in cells[-3:-1]), cells  # p50, p99 since start

    # Rates over a window while requests flow: /paid's rate is above zero.
    stop = asyncio.Event()
    load = asyncio.create_task(traffic(port, stop))
    try:
        code, out, err = await lbd_status("-c", str(proc.config_path), "--interval", "1")
    finally:
        stop.set()
        await load
    assert code == 0, err
    cells = re.split(r"\s{2,}", line_with(out, "GET /paid"))  # columns are two spaces apart or more
    assert cells[2:6] == ["GET /paid", "HTTP_PROXY app", "API key", cells[5]]
    assert float(cells[5]) > 0, out  # REQ/S


async def test_the_console_shows_api_routes_moving_and_a_keys_usage(
    lbd: LbdFactory,
    http_backends: Backends,
    browser: Browser,  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    backend = await http_backends("app")
    proc, port, key = await start_with_key(lbd, backend)
    shots = tmp_path / "screenshots"
    print(f"screenshots in {shots}")
    watched = await open_page(browser, shots)
    page = watched.page
    stop = asyncio.Event()
    load: asyncio.Task[None] | None = None
    try:
        response = await page.goto(f"http://127.0.0.1:{proc.admin_port}/?interval=1")
        assert response is not None and response.status == 200
        card = page.locator('section#apis [data-api="shop"]')
        await expect(card).to_contain_text("stage live")
        await expect(card).to_contain_text(f"HTTP:{port} 127.0.0.1:{port}")
        paid = card.locator('tr[data-route="GET /paid"]')
        await expect(paid).to_contain_text("HTTP_PROXY → app /")
        await expect(paid.locator(".auth")).to_contain_text("API key")
        await expect(paid.locator(".cache .value")).to_have_text("not cached")
        await expect(card.locator('tr[data-route="GET /teapot"]')).to_contain_text("MOCK 418")
        await expect(paid.locator(".total-count")).to_have_text("0")

        # Requests flow: the counts and the rates move, the charts draw.
        load = asyncio.create_task(traffic(port, stop))
        above_zero = r"(?!0\.00\b)\d+(\.\d+)?"
        await expect(paid.locator(".rate .value")).to_have_text(re.compile(rf"^{above_zero} /s$"))
        await expect(paid.locator(".total-count")).not_to_have_text("0")
        teapot = card.locator('tr[data-route="GET /teapot"]')
        await expect(teapot.locator(".errors .value .k4")).to_have_text(re.compile(rf"^{above_zero}$"))
        await expect(paid.locator(".latency .value")).to_have_text(re.compile(r"^\d.* · \d.*s$"))
        opened = card.locator('tr[data-route="GET /open"]')
        await expect(opened.locator(".cache .value")).to_have_text(re.compile(r"^\d.*% · \d.*% all$"))
        await expect(paid.locator(".rate svg.spark path.line")).to_have_count(1)
        await expect(card.locator('tr[data-route="*"] .rate .value')).to_have_text(
            re.compile(rf"^{above_zero} /s$")
        )

        # The usage plan: its key by id and name (never the value), with what it used this period.
        plan = page.locator('section#usage-plans [data-plan="gold"]')
        await expect(plan).to_contain_text("throttle 1000/s, burst 2000")
        await expect(plan).to_contain_text("quota 100,000 a day")
        row = plan.locator(f'tr[data-key="{key["id"]}"]')
        await expect(row).to_contain_text("mobile app")
        await expect(row.locator("td.state")).to_have_text("enabled")
        await expect(row.locator(".used .value")).to_have_text(re.compile(r"^[1-9][\d,]* / 100,000$"))
        await expect(row.locator(".rate .value")).to_have_text(re.compile(rf"^{above_zero} /s$"))
        await expect(row.locator("svg.usage rect.used")).to_have_count(1)
        assert KEY_VALUE not in await page.content()
        if os.environ.get("LBD_UPDATE_SCREENSHOT"):  # docs/console.md's picture wants some history
            await wait_for_chart_points(page, "tr[data-route]", 30)
        await page.screenshot(path=str(shots / "apis-and-usage-plans.png"), full_page=True)
        if os.environ.get("LBD_UPDATE_SCREENSHOT"):
            apis_and_plans = page.locator("section#apis, section#usage-plans")
            await page.locator("#extensions").screenshot(path=str(DOCS_SCREENSHOT))
            assert await apis_and_plans.count() == 2
        assert watched.console_errors == [] and watched.page_errors == []
    finally:
        stop.set()
        if load is not None:
            await load
        await page.context.close()


def test_a_websocket_api_in_the_summary_has_its_connections_and_message_counters() -> None:
    from lbd.config.schema import Config
    from lbd.observe.api_summary import apis
    from lbd.observe.metrics import NodeStats

    mock = {"type": "MOCK"}
    config = Config.model_validate(
        {
            "apis": [
                {
                    "name": "chat",
                    "protocol": "WEBSOCKET",
                    "route_selection_expression": "$request.body.action",
                    "listeners": [{"protocol": "HTTP", "address": "127.0.0.1", "port": 9500}],
                    "routes": [
                        {"route_key": "$connect", "integration": mock},
                        {"route_key": "send", "integration": mock},
                    ],
                }
            ]
        }
    )
    node = NodeStats()
    # Two workers' reports, as the supervisor sums them.
    for connections in (2, 1):
        node.add_worker(
            {
                "apis": [
                    {
                        "api": "chat",
                        "stage": "prod",
                        "route": "$connect",
                        "requests": 3,
                        "connects": 3,
                        "connections": connections,
                    },
                    {
                        "api": "chat",
                        "stage": "prod",
                        "route": "send",
                        "requests": 5,
                        "messages_in": 5,
                        "messages_out": 4,
                        "client_errors": 1,
                    },
                ]
            }
        )
    (api,) = apis(config, node)
    assert api["connections"] == 3 and api["requests"] == 16
    routes = {r["route_key"]: r for r in api["routes"]}
    assert routes["$connect"]["websocket"]["connects"] == 6
    assert routes["send"]["websocket"] == {
        "connects": 0,
        "messages_in": 10,
        "messages_out": 8,
        "integration_errors": 0,
        "client_errors": 2,
        "execution_errors": 0,
    }
