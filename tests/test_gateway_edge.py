"""EDGE APIs end to end: a real lbd with an edge-optimized API behind the distribution whose origin it is,
real targets on loopback, and viewers calling from their own loopback addresses (127.0.0.2, 127.0.0.3)
so that the address the API believes is provably the viewer's, not the distribution's.

One lbd serves the module (its usage-plan buckets run on the gateway's test clock, frozen: a bucket is
exactly its burst); each test uses its own paths and keys.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from lbd.cli import main
from lbd.gateway.edge_viewer import edge_viewer
from lbd.tls.store import CertificateStore, issue
from tests.http_backend import HttpBackend
from tests.lbdproc import Lbd, free_port, wait_for

module_loop = pytest.mark.asyncio(loop_scope="module")


async def call(
    port: int,
    method: str,
    path: str,
    source: str = "127.0.0.2",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    tls: bool = False,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request from ``source`` (a loopback address of the viewer's own)."""
    context = None
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(
        "127.0.0.1",
        port,
        local_addr=(source, 0),
        ssl=context,
        server_hostname="api.example.test" if tls else None,
    )
    fields = {"Host": "api.example.test", "Connection": "close", **(headers or {})}
    if body or method in ("POST", "PUT"):
        fields["Content-Length"] = str(len(body))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    writer.write(head.encode() + body)
    raw = await asyncio.wait_for(reader.read(-1), 30)
    writer.close()
    top, _, rest = raw.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    found: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        found[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), found, rest


@dataclass
class EdgeApi:
    lbd: Lbd
    port: int  # the distribution's viewer listener
    tls_port: int  # its HTTPS viewer listener
    api_port: int  # the API's own (loopback) listener
    target: HttpBackend
    api_log: Path
    edge_log: Path

    async def key(self, name: str) -> str:
        status, key = await self.lbd.admin("POST", "/v1/api-keys", json.dumps({"name": name}).encode())
        assert status == 201, key
        status, joined = await self.lbd.admin(
            "POST", "/v1/usage-plans/basic/keys", json.dumps({"key_id": key["id"]}).encode()
        )
        assert status == 200, joined
        return str(key["value"])


def config(
    port: int, api_port: int, target: int, api_log: Path, edge_log: Path, tls_port: int = 0
) -> dict[str, Any]:
    """The EDGE API ``pets`` behind distribution ``pets-edge``; with ``tls_port`` the distribution has an
    HTTPS viewer listener too and the API's own listener is HTTPS (the distribution's hop is TLS)."""
    proxy = {"type": "HTTP_PROXY", "target_group": "app"}
    api_listener: dict[str, Any] = {"protocol": "HTTP", "port": api_port, "address": "127.0.0.1"}
    viewers: list[dict[str, Any]] = [{"protocol": "HTTP", "port": port, "address": "127.0.0.1"}]
    if tls_port:
        api_listener.update(protocol="HTTPS", certificates=["api"])
        viewers.append(
            {"protocol": "HTTPS", "port": tls_port, "address": "127.0.0.1", "certificates": ["api"]}
        )
    return {
        "node": {"workers": 1},
        "target_groups": [
            {
                "name": "app",
                "protocol": "HTTP",
                "health_check": {"enabled": False},
                "targets": [{"id": "127.0.0.1", "port": target}],
            }
        ],
        "apis": [
            {
                "name": "pets",
                "protocol": "REST",
                "endpoint_type": "EDGE",
                "listeners": [api_listener],
                "cache": {"enabled": True, "ttl_seconds": 300},
                "routes": [
                    {
                        "route_key": "GET /pets/{id}",
                        "integration": {**proxy, "path": "/pets/{id}"},
                        "cache": {"key_parameters": ["method.request.path.id"]},
                    },
                    {"route_key": "POST /orders", "integration": {**proxy, "path": "/echo"}},
                    {
                        "route_key": "GET /paid/{n}",
                        "integration": proxy,
                        "api_key_required": True,
                        "cache": {"enabled": False},  # every answer from the target
                    },
                ],
                "access_log": {"path": str(api_log)},
            }
        ],
        "usage_plans": [
            {"name": "basic", "apis": [{"api": "pets"}], "throttle": {"rate_limit": 1, "burst_limit": 2}}
        ],
        # The API's web ACL judges the viewer's address: 127.0.0.4 is refused, through the distribution.
        "web_acls": [
            {
                "name": "viewers",
                "associations": [{"api": "pets"}],
                "rules": [
                    {
                        "name": "deny-4",
                        "priority": 1,
                        "action": "block",
                        "statement": {"ip_set": {"addresses": ["127.0.0.4/32"]}},
                    }
                ],
            }
        ],
        "distributions": [
            {
                "name": "pets-edge",
                "listeners": viewers,
                "origins": [{"id": "pets-api", "api": "pets"}],
                "default_cache_behavior": {
                    "origin": "pets-api",
                    "cache_policy": "CachingDisabled",
                    "allowed_methods": "ALL",
                },
                "access_log": {"path": str(edge_log)},
            }
        ],
    }


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def edge(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EdgeApi]:
    tmp = tmp_path_factory.mktemp("edge-api")
    clock = tmp / "clock"
    clock.write_text(repr(datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp()))
    target = await HttpBackend("app").start()
    port, api_port, tls_port = free_port(), free_port(), free_port()
    api_log, edge_log = tmp / "api.log", tmp / "edge.log"
    CertificateStore(tmp / "store").put(issue("api", ["api.example.test"]))
    data = config(port, api_port, target.port, api_log, edge_log, tls_port)
    data["certificates"] = {"store": str(tmp / "store")}
    lbd = Lbd(tmp, data)
    previous = os.environ.get("LBD_TEST_CLOCK_FILE")
    os.environ["LBD_TEST_CLOCK_FILE"] = str(clock)  # the child lbd's gateway clock
    try:
        lbd.start()
    finally:
        if previous is None:
            del os.environ["LBD_TEST_CLOCK_FILE"]
        else:
            os.environ["LBD_TEST_CLOCK_FILE"] = previous
    try:
        await lbd.wait_ready()
        yield EdgeApi(lbd, port, tls_port, api_port, target, api_log, edge_log)
    finally:
        lbd.stop()
        await target.close()


def json_lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines()]


def edge_lines(path: Path) -> list[dict[str, str]]:
    text = path.read_text() if path.exists() else ""
    fields: list[str] = []
    out = []
    for line in text.splitlines():
        if line.startswith("#Fields: "):
            fields = line.split()[1:]
        elif not line.startswith("#"):
            out.append(dict(zip(fields, line.split("\t"), strict=False)))
    return out


@module_loop
async def test_a_request_through_the_distribution_reaches_the_route_and_integration(edge: EdgeApi) -> None:
    status, headers, body = await call(edge.port, "GET", "/pets/7?lang=fr", source="127.0.0.2")
    assert status == 200, body
    # The distribution's response fields, around the API's own answer.
    assert headers["x-cache"] == "Miss from lbd"
    assert headers["via"] == "1.1 lbd (lbd)"
    assert len(headers["x-amz-cf-id"]) == 56
    assert headers["x-amzn-requestid"]  # the API's request id, passed through
    seen = edge.target.requests[-1]
    assert (seen.method, seen.target) == ("GET", "/pets/7?lang=fr")  # the route's path parameter
    # What the integration sees: the viewer first in X-Forwarded-For (the distribution's hop after it),
    # the distribution's Via and request id, the viewer's Host and scheme.
    assert seen.header("x-forwarded-for") == "127.0.0.2, 127.0.0.1"
    assert seen.header("x-forwarded-proto") == "http"  # the viewer's (the API's own listener is HTTPS)
    assert seen.header("x-forwarded-port") == str(edge.port)
    assert seen.header("via") == "1.1 lbd (lbd)"
    assert seen.header("x-amz-cf-id") == headers["x-amz-cf-id"]
    assert seen.header("cloudfront-forwarded-proto") == "http"
    # The API's stage cache still applies behind the distribution (which caches nothing itself).
    hits = len(edge.target.requests)
    status, again, cached = await call(edge.port, "GET", "/pets/7", source="127.0.0.3")
    assert (status, cached) == (200, body)
    assert again["x-cache"] == "Miss from lbd"  # the distribution asked its origin, the API
    assert len(edge.target.requests) == hits  # ... which answered from the stage cache
    # Both access logs name the viewer: the API's sourceIp, the distribution's c-ip.
    api = await wait_for(lambda: [e for e in json_lines(edge.api_log) if e["path"] == "/pets/7"] or None)
    assert [e["ip"] for e in api] == ["127.0.0.2", "127.0.0.3"]
    rows = await wait_for(
        lambda: [r for r in edge_lines(edge.edge_log) if r.get("cs-uri-stem") == "/pets/7"] or None
    )
    assert [r["c-ip"] for r in rows] == ["127.0.0.2", "127.0.0.3"]
    assert {r["x-edge-result-type"] for r in rows} == {"Miss"}
    assert [r["x-edge-request-id"] for r in rows] == [headers["x-amz-cf-id"], again["x-amz-cf-id"]]
    status, listed = await edge.lbd.admin("GET", "/v1/distributions")
    assert listed["distributions"][0]["origins"] == [{"id": "pets-api", "target_group": None, "api": "pets"}]


@module_loop
async def test_an_https_viewer_is_https_to_the_api(edge: EdgeApi) -> None:
    status, headers, _ = await call(edge.tls_port, "GET", "/pets/tls", source="127.0.0.3", tls=True)
    assert status == 200 and headers["x-cache"] == "Miss from lbd"
    seen = edge.target.requests[-1]
    assert seen.target == "/pets/tls"
    assert seen.header("x-forwarded-proto") == "https"
    assert seen.header("cloudfront-forwarded-proto") == "https"
    assert seen.header("x-forwarded-for") == "127.0.0.3, 127.0.0.1"


@module_loop
async def test_other_methods_and_bodies_go_through(edge: EdgeApi) -> None:
    status, headers, body = await call(edge.port, "POST", "/orders", body=b'{"pet": 7}')
    assert (status, body) == (200, b'{"pet": 7}')
    assert headers["x-cache"] == "Miss from lbd"
    assert edge.target.requests[-1].method == "POST"
    # A route the API does not have: API Gateway's answer, through the distribution (an Error there).
    status, headers, body = await call(edge.port, "GET", "/nope")
    assert (status, json.loads(body)) == (403, {"message": "Missing Authentication Token"})
    assert headers["x-cache"] == "Error from lbd"


@module_loop
async def test_api_keys_and_throttles_apply_per_client_through_the_distribution(edge: EdgeApi) -> None:
    first, second = await edge.key("first"), await edge.key("second")
    status, headers, body = await call(edge.port, "GET", "/paid/1")
    assert (status, json.loads(body)) == (403, {"message": "Forbidden"})  # no key
    assert headers["x-cache"] == "Error from lbd"

    async def statuses(key: str, source: str) -> list[int]:
        return [
            (await call(edge.port, "GET", f"/paid/{n}", source=source, headers={"x-api-key": key}))[0]
            for n in range(3)
        ]

    # The plan's bucket (burst 2, frozen clock) is each key's own: one client's 429s leave the other's.
    reached = len(edge.target.requests)
    assert await statuses(first, "127.0.0.2") == [200, 200, 429]
    assert await statuses(second, "127.0.0.3") == [200, 200, 429]
    assert [r.target for r in edge.target.requests[reached:]] == ["/paid/0", "/paid/1"] * 2
    status, _, body = await call(edge.port, "GET", "/paid/9", headers={"x-api-key": first})
    assert (status, json.loads(body)) == (429, {"message": "Too Many Requests"})
    entries = await wait_for(
        lambda: [e for e in json_lines(edge.api_log) if e["routeKey"] == "GET /paid/{n}"] or None
    )
    assert {e["ip"] for e in entries} == {"127.0.0.2", "127.0.0.3"}


@module_loop
async def test_the_apis_web_acl_judges_the_viewers_address(edge: EdgeApi) -> None:
    status, headers, body = await call(edge.port, "GET", "/pets/waf", source="127.0.0.4")
    assert (status, json.loads(body)) == (403, {"message": "Forbidden"})
    assert headers["x-cache"] == "Error from lbd"
    assert (await call(edge.port, "GET", "/pets/waf", source="127.0.0.2"))[0] == 200
    entries = await wait_for(
        lambda: (
            [e for e in json_lines(edge.api_log) if e["path"] == "/pets/waf"][1:] and json_lines(edge.api_log)
        )
    )
    logged = [(e["ip"], e["errorType"], e["wafRule"]) for e in entries if e["path"] == "/pets/waf"]
    assert logged == [("127.0.0.4", "WAF_FILTERED", "deny-4"), ("127.0.0.2", "-", "Default_Action")]


@module_loop
async def test_a_forged_x_forwarded_for_does_not_change_the_source(edge: EdgeApi) -> None:
    await call(
        edge.port, "GET", "/pets/forged", source="127.0.0.3", headers={"X-Forwarded-For": "203.0.113.9"}
    )
    seen = edge.target.requests[-1]
    assert seen.target == "/pets/forged"
    assert seen.header("x-forwarded-for") == "203.0.113.9, 127.0.0.3, 127.0.0.1"
    entries = await wait_for(
        lambda: [e for e in json_lines(edge.api_log) if e["path"] == "/pets/forged"] or None
    )
    assert entries[0]["ip"] == "127.0.0.3"  # the last address the distribution wrote, not the viewer's


# -- lbd check ---------------------------------------------------------------------------------------------


def check(tmp_path: Path, data: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``lbd check`` on ``data`` (in process: the CLI's own entry point); its exit code and output."""
    path = tmp_path / "lbd.yaml"
    path.write_text(yaml.safe_dump(data))
    code = main(["check", "-c", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_lbd_check_refuses_invalid_edge_apis_with_the_key_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = config(18090, 18091, 18092, tmp_path / "a.log", tmp_path / "e.log")
    data["apis"][0]["listeners"].append({"protocol": "HTTP", "port": 18093, "address": "0.0.0.0"})
    lonely = {**data["apis"][0], "name": "lonely", "listeners": [{"protocol": "HTTP", "port": 18094}]}
    private = {
        **data["apis"][0],
        "name": "inside",
        "endpoint_type": "PRIVATE",
        "listeners": [{"protocol": "HTTP", "port": 18095, "address": "127.0.0.1"}],
    }
    chat = {
        "name": "chat",
        "protocol": "WEBSOCKET",
        "endpoint_type": "EDGE",
        "listeners": [{"protocol": "HTTP", "port": 18096, "address": "127.0.0.1"}],
        "route_selection_expression": "$request.body.action",
        "routes": [{"route_key": "$default", "integration": {"type": "MOCK"}}],
    }
    data["apis"] += [lonely, private, chat]
    data["distributions"][0]["origins"] += [
        {"id": "ghost", "api": "ghost"},
        {"id": "in", "api": "inside"},
        {"id": "ws", "api": "chat"},
    ]
    code, out = check(tmp_path, data, capsys)
    assert code != 0
    for expected in (
        "apis[0].listeners[1].address: 0.0.0.0 is not a loopback address",
        "apis[1].endpoint_type: an EDGE API is served through a distribution",
        "apis[1].listeners[0].address: 0.0.0.0 is not a loopback address",
        "distributions[0].origins[1].api: no API named 'ghost'",
        "distributions[0].origins[2].api: API 'inside' is PRIVATE",
        "distributions[0].origins[3].api: API 'chat' is a WEBSOCKET API",
        "apis[3].endpoint_type: WEBSOCKET APIs are REGIONAL or PRIVATE",
    ):
        assert expected in out, out
    # An origin is a target group or an API, never both; a disabled distribution fronts nothing.
    data = config(18090, 18091, 18092, tmp_path / "a.log", tmp_path / "e.log")
    data["distributions"][0]["origins"][0]["target_group"] = "app"
    code, out = check(tmp_path, data, capsys)
    assert code != 0 and "distributions[0].origins[0]: give exactly one of target_group and api" in out, out
    data = config(18090, 18091, 18092, tmp_path / "a.log", tmp_path / "e.log")
    data["distributions"][0]["enabled"] = False
    code, out = check(tmp_path, data, capsys)
    assert code != 0 and "apis[0].endpoint_type: an EDGE API is served through a distribution" in out, out
    code, out = check(tmp_path, config(18090, 18091, 18092, tmp_path / "a.log", tmp_path / "e.log"), capsys)
    assert code == 0, out


def test_the_viewer_is_the_last_forwarded_address_from_a_loopback_peer() -> None:
    headers = {
        "x-forwarded-for": "203.0.113.9, 198.51.100.7",
        "cloudfront-forwarded-proto": "https",
        "x-forwarded-port": "8443",
    }
    assert edge_viewer(headers, "127.0.0.1", "http", "8091") == ("198.51.100.7", "https", "8443")
    assert edge_viewer(headers, "::1", "http", "8091") == ("198.51.100.7", "https", "8443")
    # Not from loopback: not the distribution; the peer is the viewer and its fields are not believed.
    assert edge_viewer(headers, "192.0.2.1", "http", "8091") == ("192.0.2.1", "http", "8091")
    # Fields that do not parse are not taken.
    bad = {
        "x-forwarded-for": "x, not-an-ip",
        "cloudfront-forwarded-proto": "gopher",
        "x-forwarded-port": "8a",
    }
    assert edge_viewer(bad, "127.0.0.1", "http", "8091") == ("127.0.0.1", "http", "8091")
    assert edge_viewer({}, "127.0.0.1", "https", "8091") == ("127.0.0.1", "https", "8091")
