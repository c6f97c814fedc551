"""The gateway's pure parts, without a loop or a socket: routes, limiter, quota periods, responses, config."""

from __future__ import annotations

import asyncio
import json
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from lbd.config.gateway import Quota as QuotaConfig
from lbd.config.loader import ConfigError, parse_config
from lbd.config.preflight import startup_issues
from lbd.gateway.contracts import Admission, Bucket, Quota
from lbd.gateway.integration import _render, _select_status, compile_integration
from lbd.gateway.keys import KeyRefused, KeyStore, KeyTable, load_keys, save_keys
from lbd.gateway.limiter import LocalLimiter
from lbd.gateway.plans import quota_period
from lbd.gateway.responses import GatewayResponses
from lbd.gateway.routes import RouteTable

# -- routes ------------------------------------------------------------------------------------------------


def table(*keys: str) -> RouteTable[str]:
    return RouteTable((key, key) for key in keys)


def matched(t: RouteTable[str], method: str, path: str) -> tuple[str, dict[str, str]] | None:
    found = t.match(method, path)
    return None if found is None else (found.route_key, dict(found.path_parameters))


def test_a_literal_segment_beats_a_parameter_which_beats_a_greedy_one() -> None:
    t = table("GET /pets/dog", "GET /pets/{id}", "GET /{proxy+}")
    assert matched(t, "GET", "/pets/dog") == ("GET /pets/dog", {})
    assert matched(t, "GET", "/pets/cat") == ("GET /pets/{id}", {"id": "cat"})
    assert matched(t, "GET", "/pets/cat/toys") == ("GET /{proxy+}", {"proxy": "pets/cat/toys"})


def test_on_one_path_the_exact_method_beats_any() -> None:
    t = table("ANY /pets", "POST /pets")
    assert matched(t, "POST", "/pets") == ("POST /pets", {})
    assert matched(t, "DELETE", "/pets") == ("ANY /pets", {})


def test_a_more_specific_path_wins_over_an_exact_method_on_a_less_specific_one() -> None:
    t = table("ANY /pets/{id}", "GET /{proxy+}")
    assert matched(t, "GET", "/pets/1") == ("ANY /pets/{id}", {"id": "1"})


def test_backtracking_when_the_literal_branch_has_no_route_for_the_method() -> None:
    t = table("POST /pets/dog", "GET /pets/{id}")
    assert matched(t, "GET", "/pets/dog") == ("GET /pets/{id}", {"id": "dog"})


def test_greedy_parameters_need_one_segment_and_default_takes_the_rest() -> None:
    t = table("GET /files/{path+}", "$default")
    assert matched(t, "GET", "/files/a/b/c.txt") == ("GET /files/{path+}", {"path": "a/b/c.txt"})
    assert matched(t, "GET", "/files") == ("$default", {})
    assert matched(t, "GET", "/other") == ("$default", {})
    assert matched(table("GET /files/{path+}"), "GET", "/files") is None


def test_the_root_route_empty_segments_and_methods_are_exact() -> None:
    t = table("GET /", "GET /pets/{id}")
    assert matched(t, "GET", "/") == ("GET /", {})
    assert matched(t, "GET", "/pets/") is None  # an empty segment is no parameter value
    assert matched(t, "HEAD", "/") is None  # a GET route is not a HEAD route


def test_parameter_names_come_from_the_matched_route_and_values_are_decoded() -> None:
    t = table("GET /a/{x}", "GET /a/{y}/b")
    assert matched(t, "GET", "/a/1") == ("GET /a/{x}", {"x": "1"})
    assert matched(t, "GET", "/a/hello%20world/b") == ("GET /a/{y}/b", {"y": "hello world"})


# -- the in-process limiter -----------------------------------------------------------------------------


def admit(limiter: LocalLimiter, buckets: list[Bucket], quota: Quota | None, now: float) -> Admission:
    return asyncio.run(limiter.admit(buckets, quota, now))


def test_a_bucket_admits_its_burst_then_refills_at_a_fractional_rate() -> None:
    limiter = LocalLimiter()
    bucket = Bucket("b", rate=0.5, burst=3)
    results = [limiter.admit_now([bucket], None, 100.0) for _ in range(5)]
    assert results.count(Admission.ADMIT) == 3 and results[3:] == [Admission.THROTTLED] * 2
    assert limiter.admit_now([bucket], None, 101.0) is Admission.THROTTLED  # half a token
    assert limiter.admit_now([bucket], None, 102.0) is Admission.ADMIT  # one token after 2 s
    assert limiter.admit_now([bucket], None, 1000.0) is Admission.ADMIT
    assert [limiter.admit_now([bucket], None, 1000.0) for _ in range(3)].count(Admission.ADMIT) == 2


def test_all_or_nothing_and_buckets_before_the_quota() -> None:
    limiter = LocalLimiter()
    wide, narrow = Bucket("wide", 1, 10), Bucket("narrow", 1, 1)
    quota = Quota("q", 5, 0.0, 1000.0)
    assert limiter.admit_now([wide, narrow], quota, 1.0) is Admission.ADMIT
    assert limiter.admit_now([wide, narrow], quota, 1.0) is Admission.THROTTLED
    # The throttled request took no token from "wide" and used no quota.
    assert [limiter.admit_now([wide], None, 1.0) for _ in range(10)].count(Admission.ADMIT) == 9
    assert asyncio.run(limiter.used(quota)) == 1


def test_a_quota_runs_out_and_a_new_period_is_a_new_count() -> None:
    limiter = LocalLimiter()
    day1, day2 = Quota("q:1", 2, 0.0, 10.0), Quota("q:2", 2, 10.0, 20.0)
    assert [admit(limiter, [], day1, 1.0) for _ in range(3)] == [
        Admission.ADMIT,
        Admission.ADMIT,
        Admission.QUOTA_EXCEEDED,
    ]
    assert admit(limiter, [], day2, 11.0) is Admission.ADMIT


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("period", "offset", "now", "start", "end"),
    [
        ("DAY", 0, "2026-12-01T13:00:00", "2026-12-01T00:00:00", "2026-12-02T00:00:00"),
        ("WEEK", 0, "2026-12-01T13:00:00", "2026-11-29T00:00:00", "2026-12-06T00:00:00"),  # from Sunday
        ("WEEK", 1, "2026-12-01T13:00:00", "2026-11-30T00:00:00", "2026-12-07T00:00:00"),  # from Monday
        ("WEEK", 3, "2026-12-01T13:00:00", "2026-11-25T00:00:00", "2026-12-02T00:00:00"),  # from Wednesday
        ("MONTH", 0, "2026-12-01T13:00:00", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
        ("MONTH", 14, "2026-12-01T13:00:00", "2026-11-15T00:00:00", "2026-12-15T00:00:00"),
        ("MONTH", 14, "2026-12-15T00:00:00", "2026-12-15T00:00:00", "2027-01-15T00:00:00"),
    ],
)
def test_quota_periods_in_utc_with_the_offset(
    period: Any, offset: int, now: str, start: str, end: str
) -> None:
    config = QuotaConfig(limit=1, period=period, offset=offset)
    assert quota_period(config, utc(now)) == (utc(start), utc(end))


# -- gateway responses and integrations --------------------------------------------------------------


def test_gateway_responses_defaults_and_overrides() -> None:
    from lbd.config.gateway import GatewayResponse

    plain = GatewayResponses({})
    assert (plain.answer("THROTTLED").status, plain.answer("THROTTLED").body) == (
        429,
        b'{"message":"Too Many Requests"}',
    )
    assert plain.answer("MISSING_AUTHENTICATION_TOKEN").body == b'{"message":"Missing Authentication Token"}'
    custom = GatewayResponses(
        {
            "THROTTLED": GatewayResponse(
                status_code=503, body='{"slow":"down"}', headers={"Retry-After": "1"}
            ),
            "DEFAULT_4XX": GatewayResponse(headers={"X-Default": "4xx"}),
        }
    )
    throttled = custom.answer("THROTTLED")
    assert (throttled.status, throttled.body, ("retry-after", "1") in throttled.headers) == (
        503,
        b'{"slow":"down"}',
        True,
    )
    assert ("x-default", "4xx") in custom.answer("INVALID_API_KEY").headers
    assert ("x-default", "4xx") not in custom.answer("INTEGRATION_TIMEOUT").headers  # a 5XX type


def test_integration_paths_and_status_selection() -> None:
    from lbd.config.gateway import Integration

    call = compile_integration(
        Integration(
            type="HTTP",
            target_group="tg",
            path="/v1/{id}/files/{rest+}",
            responses=(
                {"selection_pattern": "2\\d\\d", "status_code": 200},
                {"selection_pattern": "404", "status_code": 410},
            ),  # type: ignore[arg-type]
        ),
        "GET /x/{id}/{rest+}",
    )
    assert call.path is not None
    assert _render(call.path, {"id": "a b", "rest": "x/y z"}) == "/v1/a%20b/files/x/y%20z"
    assert [_select_status(call, s) for s in (201, 404, 500)] == [200, 410, None]


# -- API keys ---------------------------------------------------------------------------------------------


def test_key_values_follow_api_gateway_rules_and_plans_do_not_overlap(tmp_path: Path) -> None:
    store = KeyStore()
    key = store.create("first")
    assert len(key.value) == 40 and key.value.isalnum()
    with pytest.raises(KeyRefused, match="20-128"):
        store.create("short", "abc")
    with pytest.raises(KeyRefused) as clash:
        store.create("again", key.value)
    assert clash.value.status == 409
    stages = {"a": {("pets", "prod")}, "b": {("pets", "prod")}, "c": {("other", "prod")}}
    store.add_to_plan(key.id, "a", stages)
    with pytest.raises(KeyRefused, match="also covers pets/prod"):
        store.add_to_plan(key.id, "b", stages)
    store.add_to_plan(key.id, "c", stages)
    path = tmp_path / "keys.json"
    save_keys(store, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds key values
    again = load_keys(path)
    assert again.get(key.id).plans == ["a", "c"] and again.get(key.id).value == key.value
    workers = KeyTable(again.for_workers())
    assert key.value not in json.dumps(again.for_workers())  # workers get digests only
    found = workers.lookup(key.value)
    assert found is not None and found.id == key.id
    assert workers.lookup("x" * 40) is None


# -- config --------------------------------------------------------------------------------------------


BASE: dict[str, Any] = {
    "target_groups": [{"name": "pets", "protocol": "HTTP", "targets": [{"id": "127.0.0.1", "port": 9}]}],
    "apis": [
        {
            "name": "pets",
            "listeners": [{"protocol": "HTTP", "port": 8081, "address": "127.0.0.1"}],
            "routes": [
                {"route_key": "GET /pets/{id}", "integration": {"type": "HTTP_PROXY", "target_group": "pets"}}
            ],
        }
    ],
}


def errors(change: dict[str, Any] | None = None, **top: Any) -> list[str]:
    config = json.loads(json.dumps(BASE))
    api = config["apis"][0]
    api.update(change or {})
    config.update(top)
    try:
        parsed = parse_config(yaml.safe_dump(config))
    except ConfigError as exc:
        return [str(issue) for issue in exc.issues]
    return [str(issue) for issue in startup_issues(parsed)]


def test_the_base_config_is_valid() -> None:
    assert errors() == []


@pytest.mark.parametrize(
    ("change", "top", "expected"),
    [
        (
            {
                "routes": [
                    {"route_key": "GET /a", "integration": {"type": "HTTP_PROXY", "target_group": "nope"}}
                ]
            },
            {},
            "apis[0].routes[0].integration.target_group: target group 'nope' does not exist",
        ),
        (
            {
                "routes": [
                    {"route_key": "GET /a", "integration": {"type": "MOCK"}},
                    {"route_key": "GET /a", "integration": {"type": "MOCK"}},
                ]
            },
            {},
            "apis[0].routes[1].route_key: 'GET /a' is already used by routes[0]",
        ),
        (
            {"routes": [{"route_key": "GET /a", "authorizer": "users", "integration": {"type": "MOCK"}}]},
            {},
            "apis[0].routes[0].authorizer: no authorizer 'users' in this API",
        ),
        (
            {
                "routes": [
                    {
                        "route_key": "GET /a",
                        "integration": {"type": "HTTP", "target_group": "pets", "timeout_ms": 30000},
                    }
                ]
            },
            {},
            "apis[0].routes[0].integration.timeout_ms",
        ),
        (
            {"routes": [{"route_key": "FETCH /a", "integration": {"type": "MOCK"}}]},
            {},
            "apis[0].routes[0].route_key",
        ),
        (
            {"listeners": [{"protocol": "HTTP", "port": 9900, "address": "127.0.0.1"}]},
            {"admin": {"listen": "127.0.0.1:9900"}},
            "apis[0].listeners[0].port: 127.0.0.1:9900/tcp is already used by admin.listen",
        ),
        (
            {},
            {"usage_plans": [{"name": "basic", "apis": [{"api": "cats"}]}]},
            "usage_plans[0].apis[0].api: no API named 'cats'",
        ),
        (
            {},
            {
                "usage_plans": [
                    {
                        "name": "basic",
                        "apis": [
                            {
                                "api": "pets",
                                "throttle": [
                                    {"route_key": "GET /x", "throttle": {"rate_limit": 1, "burst_limit": 1}}
                                ],
                            }
                        ],
                    }
                ]
            },
            "usage_plans[0].apis[0].throttle[0].route_key: API 'pets' has no route 'GET /x'",
        ),
        (
            {"protocol": "WEBSOCKET"},
            {},
            "apis[0].routes[0].route_key: 'GET /pets/{id}': WEBSOCKET APIs take $connect, $disconnect",
        ),
        (
            {"endpoint_type": "EDGE"},
            {},
            "apis[0].endpoint_type: an EDGE API is served through a distribution",
        ),
    ],
)
def test_config_errors_name_the_exact_key(change: dict[str, Any], top: dict[str, Any], expected: str) -> None:
    found = errors(change, **top)
    assert any(e.startswith(expected) for e in found), found


def test_a_port_clash_with_a_load_balancer_listener() -> None:
    lb = {
        "name": "web",
        "type": "application",
        "listeners": [
            {
                "protocol": "HTTP",
                "port": 8081,
                "default_actions": [{"type": "forward", "target_group": "pets"}],
            }
        ],
    }
    found = errors(None, load_balancers=[lb])
    assert any(
        e.startswith("apis[0].listeners[0].port: 127.0.0.1:8081/tcp is already used by load_balancers[0]")
        for e in found
    ), found
