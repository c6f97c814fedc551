"""``lbd status`` against a running lbd (real targets, one of them down), and its text from summaries."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from lbd.console.status import base_url, render
from lbd.observe.stats import LATENCY_BUCKETS
from lbd.observe.summary import quantile
from tests.conftest import LbdFactory
from tests.http_backend import HttpBackend
from tests.lbdproc import FAST_HTTP_CHECK, application_config, free_port, http_request, refused_port, wait_for


async def lbd_status(*args: str) -> tuple[int, str, str]:
    """``lbd status`` in a subprocess (without blocking the loop the test's targets run on)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lbd",
        "status",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def get(port: int, path: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
    await reader.read(-1)
    writer.close()


def line_with(text: str, *words: str) -> str:
    found = [line for line in text.splitlines() if all(word in line for word in words)]
    assert len(found) == 1, f"no single line with {words} in:\n{text}"
    return found[0]


async def test_lbd_status_prints_rates_errors_and_target_states(
    lbd: LbdFactory, http_backends: Callable[[str], Awaitable[HttpBackend]], tmp_path: Path
) -> None:
    backend = await http_backends("up")
    down = refused_port()  # nothing listens there
    port = free_port()
    config = application_config(port, [backend.port, down])
    config["target_groups"][0]["health_check"] = FAST_HTTP_CHECK
    token = tmp_path / "admin.token"
    token.write_text("status-token\n")
    config["admin"] = {"token_file": str(token)}
    proc = lbd(config)
    await proc.wait_ready()

    async def one_down() -> bool:
        auth = {"Authorization": "Bearer status-token"}
        status, _, body = await http_request(
            proc.admin_port, "GET", "/v1/target-groups/web/targets", headers=auth
        )
        states = {t["port"]: t["state"] for t in json.loads(body)["targets"]} if status == 200 else {}
        return states == {backend.port: "healthy", down: "unhealthy"}

    await wait_for(one_down, what="one target healthy, the other unhealthy")
    for path in ["/", "/status/404", "/status/500", "/"]:
        await get(port, path)

    code, out, err = await lbd_status("-c", str(proc.config_path), "--interval", "0")
    assert code == 0, err
    assert "generation 1, 1/1 worker(s) answering, totals since start" in out
    row = line_with(out, "alb", f"HTTP:{port}").split()
    # TOTAL 4XX 5XX: the two 200s, the 404 and the 500 reached the healthy target.
    assert row[-3:] == ["4", "1", "1"]
    assert line_with(out, f"127.0.0.1:{backend.port}").split()[4] == "healthy"
    unhealthy = line_with(out, f"127.0.0.1:{down}")
    assert "unhealthy" in unhealthy and "Target.FailedHealthChecks" in unhealthy
    assert "Health checks failed" in unhealthy

    # Rates over a window: requests while lbd status waits --interval show as a rate above zero.
    done = asyncio.Event()

    async def trickle() -> None:
        while not done.is_set():
            await get(port, "/")

    traffic = asyncio.create_task(trickle())
    admin = ["--admin", f"127.0.0.1:{proc.admin_port}", "--token-file", str(token)]
    code, out, err = await lbd_status(*admin, "--interval", "1")
    done.set()
    await traffic
    assert code == 0, err
    assert re.search(r"rates over \d+\.\d s", out)
    assert float(line_with(out, "alb", f"HTTP:{port}").split()[2]) > 0
    # Without the token the admin API refuses, and lbd status says how to give it.
    code, out, err = await lbd_status("--admin", f"127.0.0.1:{proc.admin_port}")
    assert code == 1 and "401" in err and "--token-file" in err


async def test_lbd_status_says_when_lbd_is_not_there(tmp_path: Path) -> None:
    code, out, err = await lbd_status("--admin", f"127.0.0.1:{free_port()}", "--interval", "0")
    assert code == 1 and out == "" and "cannot reach the admin API" in err
    missing = tmp_path / "nope.yaml"
    code, _, err = await lbd_status("-c", str(missing))
    assert code == 2 and "cannot read" in err


# -- the text from summaries (no lbd) ---------------------------------------------------------------------


def summary(time: float, requests: int, http_5xx: int, counts: list[int]) -> dict[str, Any]:
    return {
        "generation": 4,
        "time": time,
        "workers": {"configured": 2, "answering": 2},
        "latency_buckets": list(LATENCY_BUCKETS),
        "listeners": [
            {
                "load_balancer": "front",
                "listener": "HTTP:80",
                "type": "application",
                "requests": requests,
                "new_connections": requests,
                "active_connections": 3,
                "http_4xx": 0,
                "http_5xx": http_5xx,
                "request_duration": {"counts": counts, "sum": 0.0},
            }
        ],
        "target_groups": [
            {
                "name": "web",
                "fail_open": True,
                "zonal_failover": False,
                "targets": [
                    {
                        "target": "10.0.0.1:80",
                        "zone": "a",
                        "weight": 1,
                        "state": "draining",
                        "reason": "Target.DeregistrationInProgress",
                        "description": "Target deregistration is in progress",
                        "requests": requests,
                    },
                ],
            }
        ],
    }


def test_rates_and_percentiles_are_over_the_window_between_two_summaries() -> None:
    buckets = len(LATENCY_BUCKETS) + 1
    before = summary(100.0, 1000, 10, [0] * buckets)
    # In the 2 s between them: 50 requests, 4 of them 5xx, all between 1 and 2.5 ms.
    window = [0] * buckets
    window[LATENCY_BUCKETS.index(0.0025)] = 50
    after = summary(102.0, 1050, 14, window)
    text = render(after, before, "http://127.0.0.1:9900")
    assert text.startswith(
        "lbd at http://127.0.0.1:9900: generation 4, 2/2 worker(s) answering, rates over 2.0 s"
    )
    cells = line_with(text, "front", "HTTP:80").split()
    assert cells[2:5] == ["25.0", "0.00", "2.00"]  # req/s, 4xx/s, 5xx/s
    assert cells[5] == "3"  # open connections
    assert " ".join(cells[6:10]) == "1.8 ms 2.5 ms"  # p50, p99 in the 1-2.5 ms bucket
    draining = line_with(text, "10.0.0.1:80")
    assert "draining" in draining and "Target.DeregistrationInProgress" in draining
    assert "target group web: fail open" in text


def test_a_counter_that_went_back_is_no_negative_rate() -> None:
    buckets = len(LATENCY_BUCKETS) + 1
    text = render(summary(10.0, 5, 0, [0] * buckets), summary(9.0, 500, 0, [0] * buckets), "x")
    assert line_with(text, "front").split()[2] == "0.00"


@pytest.mark.parametrize(
    ("counts", "q", "expected"),
    [
        ([0] * 18, 0.5, None),  # no observation, no answer
        ([0, 0, 0, 10] + [0] * 14, 0.5, 0.00075),  # the middle of the 0.5-1 ms bucket
        ([10] + [0] * 17, 1.0, 0.0001),
        ([0] * 17 + [4], 0.99, 30.0),  # +Inf: the highest finite bound
        ([90] + [0] * 8 + [10] + [0] * 8, 0.99, 0.1 - 0.05 * 0.1),  # 9 of the 10 slow ones, 50-100 ms
    ],
)
def test_quantile_interpolates_within_a_bucket_like_prometheus(
    counts: list[int], q: float, expected: float | None
) -> None:
    result = quantile(counts, q)
    assert result == expected if expected is None else result == pytest.approx(expected)


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("127.0.0.1:9900", "http://127.0.0.1:9900"),
        ("0.0.0.0:9900", "http://127.0.0.1:9900"),
        ("[::]:9900", "http://[::1]:9900"),
        ("[::1]:9901", "http://[::1]:9901"),
        ("http://lb.internal:9900/", "http://lb.internal:9900"),
    ],
)
def test_the_admin_address_becomes_a_url_on_loopback_for_wildcards(address: str, url: str) -> None:
    assert base_url(address) == url
