"""The edge cache's pure parts, without an event loop: TTL math, keys, ranges, patterns, compression,
invalidation matching and the config's checks."""

from __future__ import annotations

import gzip
import textwrap

import brotli
import pytest

from lbd.cache.edgekey import (
    ALL,
    ALL_EXCEPT,
    WHITELIST,
    NameRule,
    cookie_parts,
    normalise_accept_encoding,
    query_key,
    selected_cookie_header,
    vary_names,
)
from lbd.cache.freshness import (
    DEFAULT_STALE_IF_ERROR,
    TtlPolicy,
    not_modified,
    refreshed_headers,
    response_freshness,
)
from lbd.cache.keys import edge_key, edge_key_target, stage_key
from lbd.cache.ranges import UNSATISFIABLE, ByteRange, parse_range
from lbd.cache.response import CachedResponse
from lbd.config.loader import ConfigError, parse_config
from lbd.edge import compression
from lbd.edge.behaviors import MANAGED, behavior_for, compile_path_pattern, make_behavior
from lbd.edge.store import DistributionCache

NOW = 1_700_000_000.0
OPTIMIZED = MANAGED["CachingOptimized"].ttl  # 1 / 86400 / 31536000
CLOUDFRONT = TtlPolicy()  # 0 / 86400 / 31536000


def ttl(
    status: int = 200, policy: TtlPolicy = CLOUDFRONT, error_min: int | None = None, **headers: str
) -> float:
    fields = {name.replace("_", "-"): value for name, value in headers.items()}
    return response_freshness(status, fields, policy, NOW, error_min).ttl


# -- TTLs ------------------------------------------------------------------------------------------------


def test_policy_defaults_are_cloudfronts_and_rise_with_the_minimum() -> None:
    assert TtlPolicy.resolve(0, None, None) == TtlPolicy(0, 86_400, 31_536_000)
    assert TtlPolicy.resolve(100_000, None, None) == TtlPolicy(100_000, 100_000, 31_536_000)
    assert TtlPolicy.resolve(0, 40_000_000, None) == TtlPolicy(0, 40_000_000, 40_000_000)


def test_no_headers_take_the_default_ttl_and_the_minimum_floor() -> None:
    assert ttl() == 86_400
    assert ttl(policy=TtlPolicy(0, 30, 100)) == 30
    assert ttl(policy=TtlPolicy(50, 50, 100)) == 50


@pytest.mark.parametrize("directive", ["no-cache", "no-store", "private"])
def test_no_cache_no_store_private_are_respected_only_with_min_ttl_0(directive: str) -> None:
    assert ttl(cache_control=directive) == 0
    assert ttl(cache_control=f"{directive}, max-age=600") == 0
    assert ttl(policy=OPTIMIZED, cache_control=directive) == 1  # cached for MinTTL


def test_s_maxage_then_max_age_then_expires_clamped_to_min_and_max() -> None:
    policy = TtlPolicy(10, 100, 1000)
    assert ttl(policy=policy, cache_control="s-maxage=500, max-age=20") == 500
    assert ttl(policy=policy, cache_control="max-age=20") == 20
    assert ttl(policy=policy, cache_control="max-age=5") == 10  # raised to MinTTL
    assert ttl(policy=policy, cache_control="max-age=5000") == 1000  # cut to MaxTTL
    assert ttl(policy=policy, cache_control="max-age=200", expires="Thu, 01 Jan 1970 00:00:00 GMT") == 200
    assert (
        ttl(policy=policy, expires="Tue, 14 Nov 2023 22:18:20 GMT", date="Tue, 14 Nov 2023 22:13:20 GMT")
        == 300
    )
    assert ttl(policy=policy, expires="not a date") == 10  # invalid: expired, so MinTTL
    assert ttl(cache_control="max-age=0") == 0


def test_stale_directives_and_the_default_stale_if_error() -> None:
    fresh = response_freshness(
        200, {"cache-control": "max-age=60, stale-while-revalidate=30"}, TtlPolicy(), NOW
    )
    assert (fresh.ttl, fresh.stale_while_revalidate, fresh.stale_if_error) == (60, 30, DEFAULT_STALE_IF_ERROR)
    off = response_freshness(200, {"cache-control": "max-age=60, stale-if-error=0"}, TtlPolicy(), NOW)
    assert off.stale_if_error == 0


def test_errors_follow_cloudfronts_error_caching() -> None:
    assert ttl(404) == 10  # always cached, for the default error caching minimum TTL
    assert ttl(503, error_min=0) == 0
    assert ttl(502, cache_control="max-age=60") == 60
    assert ttl(403) == 0  # cached only with an explicit lifetime
    assert ttl(403, cache_control="max-age=30") == 30
    assert ttl(403, error_min=5) == 5  # a custom error response caches it


def test_statuses_and_vary_star() -> None:
    assert ttl(302) == 0 and ttl(302, cache_control="max-age=60") == 60
    assert ttl(301) == 86_400
    assert ttl(vary="*", cache_control="max-age=60") == 0
    assert ttl(policy=TtlPolicy(0, 0, 0), cache_control="max-age=60") == 0  # CachingDisabled


def test_a_304_updates_stored_fields_but_not_the_bodys_framing() -> None:
    stored = (
        ("Content-Type", "text/css"),
        ("ETag", '"a"'),
        ("Cache-Control", "max-age=1"),
        ("Content-Length", "5"),
    )
    merged = dict(refreshed_headers(stored, (("Cache-Control", "max-age=60"), ("Content-Length", "0"))))
    assert merged == {
        "Content-Type": "text/css",
        "ETag": '"a"',
        "Cache-Control": "max-age=60",
        "Content-Length": "5",
    }


def test_viewer_conditionals() -> None:
    assert not_modified({"if-none-match": 'W/"a", "b"'}, '"a"', None)
    assert not not_modified({"if-none-match": '"c"'}, '"a"', "Tue, 14 Nov 2023 22:13:20 GMT")
    assert not_modified(
        {"if-modified-since": "Tue, 14 Nov 2023 22:13:20 GMT"}, None, "Tue, 14 Nov 2023 22:13:20 GMT"
    )
    assert not not_modified(
        {"if-modified-since": "Tue, 14 Nov 2023 22:13:19 GMT"}, None, "Tue, 14 Nov 2023 22:13:20 GMT"
    )


def test_age_adds_the_origins_age() -> None:
    assert CachedResponse(200, (), b"", NOW, initial_age=30).age(NOW + 5) == 35


# -- keys ------------------------------------------------------------------------------------------------


def test_edge_keys_are_injective_and_give_back_path_and_query() -> None:
    assert edge_key("d", "/ab", "c", []) != edge_key("d", "/a", "bc", [])
    assert edge_key("d", "/a", "", [("h:x", "1")]) != edge_key("d", "/a", "", [("h:x1", "")])
    key = edge_key("site", "/images/a.png", "v=1", [("accept-encoding", "gzip")])
    assert edge_key_target(key) == ("site", "/images/a.png", "v=1")
    assert edge_key_target(stage_key("site", "prod", "GET /x", "GET", [])) is None  # another cache's key


def test_query_strings_are_chosen_and_sorted() -> None:
    query = "b=2&utm=x&a=1&a=0"
    assert query_key(query, NameRule()) == ""
    assert query_key(query, NameRule(ALL)) == "a=0&a=1&b=2&utm=x"
    assert query_key(query, NameRule(WHITELIST, frozenset({"a"}))) == "a=0&a=1"
    assert query_key(query, NameRule(ALL_EXCEPT, frozenset({"utm"}))) == "a=0&a=1&b=2"
    assert query_key("caf%C3%A9=1", NameRule(WHITELIST, frozenset({"café"}))) == "caf%C3%A9=1"


def test_cookies_are_chosen_for_the_key_and_the_origin() -> None:
    rule = NameRule(WHITELIST, frozenset({"session"}))
    assert cookie_parts("tracking=1; session=abc", rule) == [("c:session", "abc")]
    assert selected_cookie_header("tracking=1; session=abc", rule) == "session=abc"
    assert selected_cookie_header("tracking=1", rule) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip, deflate, br", "br,gzip"),
        ("gzip", "gzip"),
        ("br;q=0.9", "br"),
        ("br;q=0, gzip", "gzip"),
        ("*", "br,gzip"),
        ("identity", ""),
        (None, ""),
    ],
)
def test_accept_encoding_is_normalised(header: str | None, expected: str) -> None:
    assert normalise_accept_encoding(header, gzip=True, brotli=True) == expected


def test_vary_names_beyond_the_key() -> None:
    assert vary_names("Accept-Encoding, Accept-Language", ["accept-encoding"]) == ("accept-language",)
    assert vary_names("*", []) is None
    assert vary_names(None, []) == ()


# -- ranges ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", ByteRange(0, 99)),
        ("bytes=900-", ByteRange(900, 999)),
        ("bytes=-100", ByteRange(900, 999)),
        ("bytes=990-2000", ByteRange(990, 999)),
        ("bytes=1000-", UNSATISFIABLE),
        ("bytes=50-10", None),  # invalid: the whole object
        ("bytes=0-1,5-9", None),  # several ranges: the whole object
        ("items=0-1", None),
        ("bytes=x-1", None),
    ],
)
def test_ranges(header: str, expected: object) -> None:
    assert parse_range(header, 1000) == expected


# -- behaviors -------------------------------------------------------------------------------------------


def test_path_patterns_match_like_cloudfront() -> None:
    assert compile_path_pattern("images/*.jpg").fullmatch("/images/a/b.jpg")
    assert compile_path_pattern("/img?.png").fullmatch("/img1.png")
    assert not compile_path_pattern("/img?.png").fullmatch("/img12.png")
    assert not compile_path_pattern("/Images/*").fullmatch("/images/a")
    assert compile_path_pattern("/a.b").fullmatch("/a.b") and not compile_path_pattern("/a.b").fullmatch(
        "/axb"
    )


def test_the_first_matching_behavior_wins() -> None:
    from lbd.config.edge import CacheBehavior, CacheBehaviorBase

    broad = make_behavior(CacheBehavior(path_pattern="/api/*", origin="a"), "/api/*", MANAGED)
    narrow = make_behavior(CacheBehavior(path_pattern="/api/v2/*", origin="b"), "/api/v2/*", MANAGED)
    default = make_behavior(CacheBehaviorBase(origin="c"), None, MANAGED)
    assert behavior_for((broad, narrow), default, "/api/v2/x").origin == "a"
    assert behavior_for((narrow, broad), default, "/api/v2/x").origin == "b"
    assert behavior_for((narrow, broad), default, "/other").origin == "c"


# -- compression -----------------------------------------------------------------------------------------


def test_compression_rules() -> None:
    css = {"content-type": "text/css; charset=utf-8"}
    assert compression.compressible(200, css, 1000)
    assert not compression.compressible(200, css, 999)
    assert not compression.compressible(200, css, 10_000_001)
    assert not compression.compressible(301, css, 5000)
    assert not compression.compressible(200, {**css, "content-encoding": "gzip"}, 5000)
    assert not compression.compressible(200, {"content-type": "image/png"}, 5000)
    assert not compression.compressible(200, {**css, "cache-control": "no-transform"}, 5000)
    assert compression.choose("br,gzip") == "br" and compression.choose("gzip") == "gzip"
    assert compression.choose("") is None
    body = b"x" * 5000
    assert gzip.decompress(compression.compress(body, "gzip")) == body
    assert brotli.decompress(compression.compress(body, "br")) == body
    assert compression.weak_etag('"a"') == 'W/"a"'
    assert compression.weak_etag('W/"a"') == 'W/"a"'
    assert compression.weak_etag("bare") is None


# -- invalidations ---------------------------------------------------------------------------------------


def test_invalidation_paths_are_exact_or_prefixes() -> None:
    cache = DistributionCache("site", 1 << 20, 1 << 20)
    entry = CachedResponse(200, (), b"x", NOW)
    keys = {
        target: edge_key("site", *target, [])
        for target in [
            ("/images/a.png", ""),
            ("/images/a.png", "v=2"),
            ("/images/b.png", ""),
            ("/index.html", ""),
        ]
    }
    other = edge_key("other", "/images/a.png", "", [])
    for key in [*keys.values(), other]:
        assert cache.put(key, entry, 60, cache.epoch)
    assert cache.invalidate(["/images/a.png"]) == 1  # only the object without a query string
    assert cache.invalidate(["/images/a.png*"]) == 1  # its query-string variants
    assert cache.invalidate(["/images/*"]) == 1
    assert cache.lookup(keys[("/index.html", "")]) is not None
    assert cache.lookup(other) is not None  # another distribution's entry stays
    assert not cache.put(keys[("/index.html", "")], entry, 60, cache.epoch - 1)  # fetched before it


# -- config ----------------------------------------------------------------------------------------------


def _config(body: str) -> str:
    return textwrap.dedent(
        """
        target_groups:
          - {name: web, protocol: HTTP, targets: [{id: 127.0.0.1, port: 9001}]}
          - {name: tcp, protocol: TCP, targets: [{id: 127.0.0.1, port: 9002}]}
        distributions:
        """
    ) + textwrap.indent(textwrap.dedent(body), "  ")


def test_a_valid_distribution_parses() -> None:
    config = parse_config(
        _config(
            """
            - name: site
              listeners: [{protocol: HTTP, port: 8000}]
              origins: [{id: app, target_group: web}]
              default_cache_behavior: {origin: app, cache_policy: CachingOptimized, compress: true}
            """
        )
    )
    assert config.distributions[0].default_cache_behavior.compress


def test_a_distribution_port_taken_by_an_api_is_refused() -> None:
    text = _config(
        """
        - name: site
          listeners: [{protocol: HTTP, port: 8000}]
          origins: [{id: app, target_group: web}]
          default_cache_behavior: {origin: app}
        """
    )
    text += textwrap.dedent(
        """
        apis:
          - name: pets
            listeners: [{protocol: HTTP, port: 8000}]
            routes: [{route_key: "GET /x", integration: {type: MOCK}}]
        """
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert "distributions[0].listeners[0].port" in str(caught.value)
    assert "apis[0].listeners[0]" in str(caught.value)


@pytest.mark.parametrize(
    ("body", "path", "words"),
    [
        (
            """
            - name: site
              listeners: [{protocol: HTTP, port: 8000}]
              origins: [{id: app, target_group: nope}]
              default_cache_behavior: {origin: app}
            """,
            "distributions[0].origins[0].target_group",
            "no target group",
        ),
        (
            """
            - name: site
              listeners: [{protocol: HTTP, port: 8000}]
              origins: [{id: app, target_group: tcp}]
              default_cache_behavior: {origin: app}
            """,
            "distributions[0].origins[0].target_group",
            "HTTP or HTTPS",
        ),
        (
            """
            - name: site
              listeners: [{protocol: HTTP, port: 8000}]
              origins: [{id: app, target_group: web}]
              default_cache_behavior: {origin: app, cache_policy: Nope}
            """,
            "distributions[0].default_cache_behavior.cache_policy",
            "no cache policy",
        ),
        (
            """
            - name: site
              listeners: [{protocol: HTTP, port: 8000}]
              origins: [{id: app, target_group: web}]
              origin_groups: [{id: ha, members: [app, ghost]}]
              default_cache_behavior: {origin: ha}
            """,
            "distributions[0].origin_groups[0].members[1]",
            "no origin",
        ),
        (
            """
            - name: site
              listeners: [{protocol: HTTP, port: 8000}]
              origins: [{id: app, target_group: web}]
              origin_groups: [{id: ha, members: [app, app], failover_status_codes: [418]}]
              default_cache_behavior: {origin: app}
            """,
            "distributions[0].origin_groups[0].failover_status_codes",
            "cannot fail over",
        ),
        (
            """
            - name: site
              listeners: [{protocol: HTTP, port: 8000}, {protocol: HTTP, port: 8000}]
              origins: [{id: app, target_group: web}]
              default_cache_behavior: {origin: app}
            """,
            "distributions[0].listeners[1].port",
            "already used",
        ),
        (
            """
            - name: site
              listeners: [{protocol: HTTP, port: 8000}]
              origins: [{id: app, target_group: web}]
              default_cache_behavior: {origin: app, cache_policy: {min_ttl: 10, default_ttl: 5}}
            """,
            "distributions[0].default_cache_behavior.cache_policy",
            "at least min_ttl",
        ),
        (
            """
            - name: site
              listeners: [{protocol: HTTP, port: 8000}]
              origins: [{id: app, target_group: web}]
              default_cache_behavior: {origin: app, ttl: 5}
            """,
            "distributions[0].default_cache_behavior.ttl",
            "",
        ),
    ],
)
def test_config_errors_name_their_key(body: str, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config(body))
    text = str(caught.value)
    assert path in text and words in text, text
