"""The stage cache in an API's pipeline (needs lbd/cache, the response cache engine): hits, misses,
TTL expiry on the gateway's test clock, key parameters, Cache-Control invalidation, flush."""

from __future__ import annotations

import json

from tests.conftest import LbdFactory
from tests.lbdproc import free_port, http_request
from tests.test_gateway_api import Backends, Clock, api, clock, group, metric, proxy, start  # noqa: F401


async def test_stage_cache_hits_misses_ttl_keys_invalidation_and_flush(
    lbd: LbdFactory,
    http_backends: Backends,
    clock: Clock,  # noqa: F811
) -> None:
    backend = await http_backends("app")
    port = free_port()
    routes = [
        {
            "route_key": "GET /pets/{id}",
            "integration": proxy("/pets/{id}"),
            "cache": {
                "ttl_seconds": 60,
                "key_parameters": ["method.request.path.id", "method.request.querystring.lang"],
            },
        },
        {"route_key": "GET /fresh", "integration": proxy("/"), "cache": {"enabled": False}},
        {"route_key": "GET /fail", "integration": proxy("/status/500")},
    ]
    config = {
        "target_groups": [group("app", backend)],
        "apis": [api("c", port, routes, cache={"enabled": True, "ttl_seconds": 300, "capacity_mb": 1})],
    }
    proc = await start(lbd, config)
    start_at = float(clock.path.read_text())
    labels = {"api": "c", "stage": "prod", "route": "GET /pets/{id}"}

    async def get(path: str, **headers: str) -> bytes:
        status, _, body = await http_request(port, "GET", path, headers=headers)
        assert status == 200
        return body

    await get("/pets/1?lang=en")
    await get("/pets/1?lang=en&other=x")  # "other" is not a key parameter: a hit
    assert len(backend.requests) == 1
    await get("/pets/1?lang=fr")  # another key
    await get("/pets/2?lang=en")
    assert len(backend.requests) == 3
    assert await metric(proc, "lbd_api_cache_hits_total", **labels) == 1
    assert await metric(proc, "lbd_api_cache_misses_total", **labels) == 3
    await get("/pets/1?lang=en", **{"Cache-Control": "max-age=0"})  # no authorizer: anyone may refresh
    assert len(backend.requests) == 4
    await get("/pets/1?lang=en")
    assert len(backend.requests) == 4
    clock.set(start_at + 61)  # past the route's TTL
    await get("/pets/1?lang=en")
    assert len(backend.requests) == 5
    for _ in range(2):
        await get("/fresh")
        await http_request(port, "GET", "/fail")
        await http_request(port, "GET", "/fail")
    assert len(backend.requests) == 5 + 2 + 4  # uncached route, and 5XX answers are not kept
    status, flushed = await proc.admin("POST", "/v1/apis/c/cache/flush")
    assert status == 200 and flushed["flushed_entries"] >= 3, flushed
    await get("/pets/2?lang=en")
    assert len(backend.requests) == 12
    assert (await proc.admin("POST", "/v1/apis/nope/cache/flush"))[0] == 404
    assert json.loads(json.dumps(flushed))["api"] == "c"
