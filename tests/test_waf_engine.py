"""The web ACL engine without I/O: statements, transformations, rule order, labels, rate windows with an
injected clock, and the config's key-path errors."""

from __future__ import annotations

from typing import Any

import pytest

from lbd.config.loader import ConfigError, parse_config
from lbd.config.web_acls import WebAcl
from lbd.waf import transforms
from lbd.waf.acl import CompiledAcl, WafState
from lbd.waf.ipsets import IpMatcher
from lbd.waf.rate import WindowCounter
from lbd.waf.request import WafRequest, parse_address


def acl(*rules: dict[str, Any], default: Any = "allow", **extra: Any) -> CompiledAcl:
    spec = WebAcl.model_validate({"name": "t", "default_action": default, "rules": list(rules), **extra})
    return CompiledAcl(spec, {}, WafState())


def rule(
    name: str, priority: int, statement: dict[str, Any], action: Any = "block", **extra: Any
) -> dict[str, Any]:
    return {"name": name, "priority": priority, "action": action, "statement": statement, **extra}


def request(
    url: bytes = b"/",
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
    client: str = "198.51.100.7",
    body: bytes = b"",
    body_size: int | None = None,
) -> WafRequest:
    return WafRequest.from_target(method, url, headers or [], client, body, body_size)


def byte(field: str, positional: str, value: str, *chain: str, **extra: Any) -> dict[str, Any]:
    spec = {
        "field": field,
        "positional": positional,
        "value": value,
        "transformations": list(chain) or ["NONE"],
    }
    return {"byte_match": {**spec, **extra}}


def verdict(compiled: CompiledAcl, req: WafRequest, now: float = 0.0) -> tuple[str, str]:
    result = compiled.evaluate(req, now)
    return result.action, result.rule


@pytest.mark.parametrize(
    ("positional", "value", "path", "matches"),
    [
        ("EXACTLY", "/admin", b"/admin", True),
        ("EXACTLY", "/admin", b"/admin/x", False),
        ("STARTS_WITH", "/admin", b"/admin/x", True),
        ("STARTS_WITH", "/admin", b"/x/admin", False),
        ("ENDS_WITH", ".php", b"/index.php", True),
        ("ENDS_WITH", ".php", b"/index.php5", False),
        ("CONTAINS", "etc/passwd", b"/a/etc/passwd/b", True),
        ("CONTAINS", "etc/passwd", b"/etc/shadow", False),
        ("CONTAINS_WORD", "badbot", b"/x;badbot;", True),
        ("CONTAINS_WORD", "badbot", b"/badbot", True),
        ("CONTAINS_WORD", "badbot", b"/badbots", False),
        ("CONTAINS_WORD", "badbot", b"/x_badbot", False),
    ],
)
def test_byte_match_positional_constraints(positional: str, value: str, path: bytes, matches: bool) -> None:
    compiled = acl(rule("r", 1, byte("uri_path", positional, value)))
    assert verdict(compiled, request(path)) == (("block", "r") if matches else ("allow", "Default_Action"))


def test_transformations_defeat_url_encoding_and_mixed_case() -> None:
    plain = acl(rule("r", 1, byte("uri_path", "STARTS_WITH", "/admin")))
    guarded = acl(rule("r", 1, byte("uri_path", "STARTS_WITH", "/admin", "URL_DECODE", "LOWERCASE")))
    for evasion in (b"/%61dmin", b"/ADMIN", b"/%41dMiN/x"):
        assert verdict(plain, request(evasion))[0] == "allow", evasion  # the evasion gets past a plain match
        assert verdict(guarded, request(evasion))[0] == "block", evasion


def test_transformation_chain_order_matters_and_each_transform_works() -> None:
    assert transforms.apply(b"%253Cscript", ("URL_DECODE", "URL_DECODE")) == b"<script"
    assert transforms.apply(b"&lt;SCRIPT&gt;", ("HTML_ENTITY_DECODE", "LOWERCASE")) == b"<script>"
    assert transforms.apply(b"a \t\n  b\xa0c", ("COMPRESS_WHITE_SPACE",)) == b"a b c"
    assert transforms.apply(b"/a//b/./c/../d", ("NORMALIZE_PATH",)) == b"/a/b/d"
    assert transforms.apply(b"a%u0041+b", ("URL_DECODE_UNI",)) == b"aA b"
    assert transforms.apply(b"PHNjcmlwdD4", ("BASE64_DECODE",)) == b"<script>"
    assert transforms.apply(b"3c73", ("HEX_DECODE",)) == b"<s"
    assert transforms.apply(b"  a\0b ", ("REMOVE_NULLS", "TRIM")) == b"ab"


def test_each_field_chain_is_computed_once_per_request() -> None:
    req = request(b"/%41", headers=[(b"User-Agent", b"X")])
    first = req.field(("uri_path", None, ("URL_DECODE", "LOWERCASE")))
    assert first == b"/a"
    assert req.field(("uri_path", None, ("URL_DECODE", "LOWERCASE"))) is first
    assert req.field(("single_header", b"user-agent", ("LOWERCASE",))) == b"x"
    assert req.field(("single_header", b"x-missing", ("LOWERCASE",))) is None


def test_regex_size_header_method_query_and_body_fields() -> None:
    compiled = acl(
        rule(
            "sqli",
            1,
            {
                "regex_match": {
                    "field": "query_string",
                    "pattern": r"union\s+select",
                    "transformations": ["URL_DECODE", "LOWERCASE"],
                }
            },
        ),
        rule("agent", 2, byte("single_header", "CONTAINS", "sqlmap", "LOWERCASE", header="User-Agent")),
        rule("verb", 3, byte("method", "EXACTLY", "DELETE")),
        rule("long-uri", 4, {"size_constraint": {"field": "uri_path", "comparison": "GT", "size": 20}}),
        rule("body", 5, byte("body", "CONTAINS", "<script>", "LOWERCASE")),
    )
    assert verdict(compiled, request(b"/?q=1%20UNION%20%20SELECT")) == ("block", "sqli")
    assert verdict(compiled, request(headers=[(b"user-agent", b"SQLMap/1.7")])) == ("block", "agent")
    assert verdict(compiled, request(method="DELETE")) == ("block", "verb")
    assert verdict(compiled, request(b"/" + b"a" * 20)) == ("block", "long-uri")
    assert verdict(compiled, request(method="POST", body=b"x=<SCRIPT>")) == ("block", "body")
    assert verdict(compiled, request(b"/fine?q=1", headers=[(b"user-agent", b"curl")])) == (
        "allow",
        "Default_Action",
    )
    assert compiled.needs_body


@pytest.mark.parametrize(
    ("handling", "action"), [("CONTINUE", "allow"), ("MATCH", "block"), ("NO_MATCH", "allow")]
)
def test_oversize_body_handling(handling: str, action: str) -> None:
    compiled = acl(rule("r", 1, byte("body", "CONTAINS", "evil", oversize_handling=handling)))
    # "evil" lies past the first 8 KB, which is all WAF inspects.
    body = b"a" * 8192 + b"evil"
    assert verdict(compiled, request(method="POST", body=body, body_size=len(body)))[0] == action


def test_size_constraint_on_body_uses_the_whole_size_without_reading_it() -> None:
    compiled = acl(rule("big", 1, {"size_constraint": {"field": "body", "comparison": "GT", "size": 100000}}))
    assert not compiled.needs_body  # the size comes from Content-Length
    assert verdict(compiled, request(method="POST", body_size=200000))[0] == "block"
    assert verdict(compiled, request(method="POST", body_size=100))[0] == "allow"


def test_ip_sets_v4_v6_named_and_forwarded() -> None:
    compiled = acl(
        rule("v4", 1, {"ip_set": {"name": "bad"}}),
        rule("v6", 2, {"ip_set": {"addresses": ["2001:db8::/32"]}}),
        rule("xff", 3, {"ip_set": {"addresses": ["203.0.113.0/24"], "forwarded_ip": {"position": "LAST"}}}),
        ip_sets=[{"name": "bad", "addresses": ["192.0.2.0/24", "192.0.2.128/25", "10.0.0.1"]}],
    )
    assert verdict(compiled, request(client="192.0.2.200")) == ("block", "v4")
    assert verdict(compiled, request(client="10.0.0.1")) == ("block", "v4")
    assert verdict(compiled, request(client="10.0.0.2"))[0] == "allow"
    assert verdict(compiled, request(client="2001:db8::5")) == ("block", "v6")
    xff = [(b"X-Forwarded-For", b"198.51.100.1, 203.0.113.9")]
    assert verdict(compiled, request(headers=xff)) == ("block", "xff")
    assert (
        verdict(compiled, request(headers=[(b"X-Forwarded-For", b"203.0.113.9, 198.51.100.1")]))[0] == "allow"
    )


def test_forwarded_ip_positions_and_fallback() -> None:
    def matcher(position: str, fallback: str = "NO_MATCH") -> CompiledAcl:
        forwarded = {"position": position, "fallback": fallback}
        return acl(rule("r", 1, {"ip_set": {"addresses": ["203.0.113.0/24"], "forwarded_ip": forwarded}}))

    middle = [(b"X-Forwarded-For", b"198.51.100.1, 203.0.113.9, 198.51.100.2")]
    assert verdict(matcher("ANY"), request(headers=middle))[0] == "block"
    assert verdict(matcher("FIRST"), request(headers=middle))[0] == "allow"
    assert verdict(matcher("FIRST", "MATCH"), request())[0] == "block"  # no header: the fallback decides
    assert verdict(matcher("FIRST", "MATCH"), request(headers=[(b"X-Forwarded-For", b"junk")]))[0] == "block"
    assert verdict(matcher("FIRST"), request())[0] == "allow"


def test_ip_matcher_merges_overlapping_ranges() -> None:
    matcher = IpMatcher(["10.0.0.0/24", "10.0.0.128/25", "10.0.1.0/24", "::1/128"])
    assert parse_address("10.0.1.255") in matcher
    assert parse_address("10.0.2.0") not in matcher
    assert parse_address("::1") in matcher
    assert parse_address("[::2]") not in matcher
    assert parse_address("not-an-address") not in matcher


def test_priority_order_count_labels_and_composition() -> None:
    compiled = acl(
        # Listed out of order: priority decides.
        rule("late", 30, {"label_match": {"key": "bot:suspect"}}, "block"),
        rule(
            "tag",
            10,
            {"and": [byte("uri_path", "STARTS_WITH", "/api"), {"not": byte("method", "EXACTLY", "GET")}]},
            "count",
            rule_labels=["bot:suspect"],
        ),
        rule(
            "ns",
            20,
            {
                "or": [
                    {"label_match": {"scope": "NAMESPACE", "key": "never:"}},
                    byte("uri_path", "EXACTLY", "/x"),
                ]
            },
        ),
    )
    result = compiled.evaluate(request(b"/api/v", method="POST"), 0.0)
    assert (result.action, result.rule, result.labels) == ("block", "late", ["bot:suspect"])
    assert compiled.stats.counted == {"tag": 1} and compiled.stats.blocked == {"late": 1}
    assert verdict(compiled, request(b"/api/v")) == ("allow", "Default_Action")  # GET: not counted
    assert verdict(compiled, request(b"/x")) == ("block", "ns")
    assert compiled.stats.allowed == {"Default_Action": 1}


def test_default_block_allow_rules_and_inserted_headers() -> None:
    compiled = acl(
        rule(
            "ok",
            1,
            byte("uri_path", "EXACTLY", "/ok"),
            {"allow": {"insert_headers": [{"name": "Checked", "value": "yes"}]}},
        ),
        rule(
            "mark",
            0,
            byte("uri_path", "EXACTLY", "/ok"),
            {"count": {"insert_headers": [{"name": "seen", "value": "1"}]}},
            rule_labels=["a:b"],
        ),
        default={
            "block": {
                "status_code": 429,
                "body": "slow down",
                "headers": [{"name": "Retry-After", "value": "5"}],
            }
        },
        request_headers={"labels": True, "rule": True},
    )
    allowed = compiled.evaluate(request(b"/ok"), 0.0)
    assert allowed.action == "allow"
    assert allowed.headers == (
        b"x-amzn-waf-seen: 1\r\nx-amzn-waf-checked: yes\r\nx-amzn-waf-labels: a:b\r\nx-amzn-waf-rule: ok\r\n"
    )
    blocked = compiled.evaluate(request(b"/other"), 0.0)
    assert blocked.rule == "Default_Action" and blocked.response is not None
    assert (blocked.response.status, blocked.response.body) == (429, b"slow down")
    assert blocked.response.headers == (("Retry-After", "5"),)


def test_rate_based_blocks_within_the_window_and_recovers_after_it() -> None:
    compiled = acl(
        rule(
            "flood",
            1,
            {
                "rate_based": {
                    "limit": 10,
                    "window_seconds": 60,
                    "scope_down": byte("uri_path", "STARTS_WITH", "/api"),
                }
            },
        )
    )
    now = 1000.0
    results = [verdict(compiled, request(b"/api"), now + i * 0.1)[0] for i in range(12)]
    assert results == ["allow"] * 10 + ["block"] * 2
    assert verdict(compiled, request(b"/other"), now + 2)[0] == "allow"  # outside the scope-down: not counted
    assert verdict(compiled, request(b"/api", client="198.51.100.8"), now + 2)[0] == "allow"  # another key
    assert verdict(compiled, request(b"/api"), now + 30)[0] == "block"  # still within the window
    # The window (plus at most one of its 10 slices) later, the old requests have fallen out.
    assert verdict(compiled, request(b"/api"), now + 67)[0] == "allow"


def test_rate_based_keys_header_forwarded_and_divided_across_workers() -> None:
    spec = WebAcl.model_validate(
        {
            "name": "t",
            "rules": [
                rule(
                    "h",
                    1,
                    {
                        "rate_based": {
                            "limit": 10,
                            "window_seconds": 60,
                            "aggregate_key": "header",
                            "header": "X-Client",
                        }
                    },
                ),
                rule(
                    "f",
                    2,
                    {"rate_based": {"limit": 10, "window_seconds": 60, "aggregate_key": "forwarded_ip"}},
                ),
            ],
        }
    )
    compiled = CompiledAcl(spec, {}, WafState(workers=2))  # each of 2 workers allows 5
    by_header = [verdict(compiled, request(headers=[(b"X-Client", b"a")]), 1.0)[1] for _ in range(6)]
    assert by_header[-1] == "h" and by_header[:5] == ["Default_Action"] * 5
    xff = [(b"X-Forwarded-For", b"203.0.113.1, 10.0.0.1")]
    by_forwarded = [verdict(compiled, request(headers=xff), 1.0)[1] for _ in range(6)]
    assert by_forwarded[-1] == "f" and by_forwarded[:5] == ["Default_Action"] * 5


def test_window_counter_slides_and_sweeps() -> None:
    counter = WindowCounter(60)
    assert [counter.hit("k", t) for t in (0.0, 7.0, 30.0)] == [1, 2, 3]
    assert counter.count("k", 61.0) == 2  # the first slice (0-6 s) fell out
    assert counter.count("k", 95.0) == 0
    counter.sweep(200.0)
    assert len(counter) == 0


def test_rate_windows_survive_a_new_snapshot() -> None:
    state = WafState()
    spec = WebAcl.model_validate(
        {"name": "t", "rules": [rule("r", 1, {"rate_based": {"limit": 10, "window_seconds": 60}})]}
    )
    first = CompiledAcl(spec, {}, state)
    for _ in range(10):
        first.evaluate(request(), 1.0)
    again = CompiledAcl(spec, {}, state)  # a reload compiles the ACL again
    assert verdict(again, request(), 2.0) == ("block", "r")
    assert state.stats["t"].blocked == {"r": 1}


BASE = """
load_balancers:
  - name: web
    type: application
    listeners:
      - {protocol: HTTP, port: 18080, default_actions: [{type: forward, target_group: web}]}
  - name: tcp
    type: network
    listeners:
      - {protocol: TCP, port: 18081, default_actions: [{type: forward, target_group: raw}]}
target_groups:
  - {name: web, protocol: HTTP, targets: [{id: 127.0.0.1, port: 9001}]}
  - {name: raw, protocol: TCP, targets: [{id: 127.0.0.1, port: 9002}]}
"""


def issues(acls: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + acls)
    return [str(issue) for issue in caught.value.issues]


def test_config_errors_name_the_exact_key_path() -> None:
    found = issues(
        """
web_acls:
  - name: a
    associations: [{load_balancer: nope}, {load_balancer: tcp}]
    rules:
      - {name: r1, priority: 1, action: deny, statement: {ip_set: {addresses: [300.1.1.1/8]}}}
      - {name: r2, priority: 2, action: {block: {status_code: 99}},
         statement: {byte_match: {field: uri, positional: EXACTLY, value: x}}}
      - {name: r3, priority: 3, action: count, statement: {not: {rate_based: {limit: 10}}}}
      - {name: r4, priority: 4, action: block,
         statement: {byte_match: {field: uri_path, positional: EXACTLY, value: x}, ip_set: {name: s}}}
"""
    )
    text = "\n".join(found)
    assert "web_acls[0].rules[0].action: must be allow, block, count" in text
    assert "web_acls[0].rules[0].statement.ip_set.addresses[0]: must be an IPv4 or IPv6 CIDR" in text
    assert (
        "web_acls[0].rules[1].action.block.status_code: Input should be greater than or equal to 200" in text
    )
    assert "web_acls[0].rules[1].statement.byte_match.field: Input should be" in text
    assert "web_acls[0].rules[3].statement: a statement has exactly one of" in text
    found = issues(
        """
web_acls:
  - name: a
    associations: [{load_balancer: nope}, {load_balancer: tcp}]
    rules:
      - {name: r3, priority: 3, action: count, statement: {not: {rate_based: {limit: 10}}}}
      - {name: r4, priority: 4, action: block, statement: {ip_set: {name: s}}}
"""
    )
    text = "\n".join(found)
    assert (
        "web_acls[0].rules[0].statement.not.rate_based: rate_based is only allowed as a rule's own statement"
        in text
    )
    found = issues(
        """
web_acls:
  - name: a
    associations: [{load_balancer: nope}, {load_balancer: tcp}]
    rules:
      - {name: r4, priority: 4, action: block, statement: {ip_set: {name: s}}}
"""
    )
    assert any(
        i.startswith("web_acls[0].rules[0].statement.ip_set.name: no ip_set named 's'") for i in found
    ), found
    found = issues(
        """
web_acls:
  - name: a
    associations: [{load_balancer: nope}, {load_balancer: tcp}]
"""
    )
    assert any(
        i.startswith("web_acls[0].associations[0].load_balancer: no load balancer named 'nope'")
        for i in found
    )
    assert any(
        i.startswith("web_acls[0].associations[1].load_balancer: 'tcp' is a network load balancer")
        for i in found
    )


def test_contains_word_takes_a_word() -> None:
    found = issues(
        """
web_acls:
  - name: a
    rules:
      - {name: r, priority: 1, action: block,
         statement: {byte_match: {field: uri_path, positional: CONTAINS_WORD, value: "a b"}}}
"""
    )
    assert any(i.startswith("web_acls[0].rules[0].statement.byte_match.value: CONTAINS_WORD") for i in found)


def test_unknown_keys_are_errors_with_a_suggestion() -> None:
    found = issues(
        """
web_acls:
  - name: a
    rules:
      - {name: r, priority: 1, action: block,
         statement: {byte_match: {field: uri_path, positionl: EXACTLY, value: x}}}
"""
    )
    assert any(
        "statement.byte_match.positionl: unknown key; did you mean 'positional'?" in i for i in found
    ), found
