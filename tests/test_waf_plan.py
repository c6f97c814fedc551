"""The web ACL's compiled plan (lbd/waf/plan.py) and lazy requests: each field extracted and each
transformation applied at most once per request, only for what a rule reaches, the fast path's raw field
lines searched for one name as a parsed header list would give it, and runs of CONTAINS rules prefiltered
by one search without changing which rule decides."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from lbd.http.fastpath import field_lines
from lbd.waf import transforms
from lbd.waf.request import QUERY_STRING, URI_PATH, WafRequest, fast_request
from tests.test_waf_engine import acl, byte, request, rule, verdict

BLOCK = (
    b"Host: example.com\r\n"
    b"User-Agent:   Mozilla/5.0 sqlmap  \r\n"
    b"X-User-Agent: other\r\n"
    b"Accept: */*\r\n"
    b"x-forwarded-for: 203.0.113.9\r\n"
    b"X-Forwarded-For:192.0.2.1\r\n"
    b"Cookie: user-agent: not a field\r\n"
)


def counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[bytes]:
    """Record each call of one transformation (the plan takes it from TRANSFORMS when it compiles)."""
    calls: list[bytes] = []
    original: Callable[[bytes], bytes] = transforms.TRANSFORMS[name]

    def wrapped(data: bytes) -> bytes:
        calls.append(data)
        return original(data)

    monkeypatch.setitem(transforms.TRANSFORMS, name, wrapped)
    return calls


def path_rules(*needles: str, chain: tuple[str, ...] = ("URL_DECODE", "LOWERCASE")) -> list[dict[str, Any]]:
    return [
        rule(f"r{n}", n + 10, byte("uri_path", "CONTAINS", needle, *chain))
        for n, needle in enumerate(needles)
    ]


def test_each_transformation_runs_once_per_request_and_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    decode = counting(monkeypatch, "URL_DECODE")
    lower = counting(monkeypatch, "LOWERCASE")
    compiled = acl(
        *path_rules("/a/", "/b/", "/c/"),
        rule("decoded", 1, byte("uri_path", "STARTS_WITH", "/X", "URL_DECODE")),  # the chain's prefix
        rule("query", 2, byte("query_string", "CONTAINS", "zz", "URL_DECODE")),
    )
    del decode[:], lower[:]  # what compiling tried on an empty field
    assert verdict(compiled, request(b"/%58y/%42/?q=1")) == ("block", "decoded")
    assert verdict(compiled, request(b"/Y/%42/?q=1")) == ("block", "r1")
    # Per request: the path decoded once (shared by the prefix rule and the chains), the query once,
    # and the decoded path lower-cased once for the three rules.
    assert decode == [b"/%58y/%42/", b"/Y/%42/", b"q=1"]
    assert lower == [b"/Y/B/"]
    del decode[:]
    assert verdict(compiled, request(b"/Y/%42/")) == ("block", "r1")
    assert decode == [b"/Y/%42/"]  # an empty query string: URL_DECODE of it skipped, as it stays empty


def test_fields_no_rule_reaches_are_never_extracted() -> None:
    compiled = acl(
        rule("deny", 1, {"ip_set": {"addresses": ["198.51.100.0/24"]}}),
        rule("agent", 2, byte("single_header", "CONTAINS", "sqlmap", "LOWERCASE", header="User-Agent")),
    )
    blocked = fast_request("GET", b"/a?b", BLOCK, "198.51.100.7")
    assert verdict(compiled, blocked) == ("block", "deny")
    assert blocked.path is None and blocked._lowered is None  # neither split nor searched
    passed = fast_request("GET", b"/a?b", BLOCK, "203.0.113.1")
    assert verdict(compiled, passed) == ("block", "agent")
    assert passed.path is None and passed._lowered is not None  # the head searched, the target not split
    assert passed._header_map is None  # and no map of the headers built


@pytest.mark.parametrize(
    "name", [b"user-agent", b"x-user-agent", b"x-forwarded-for", b"accept", b"host", b"cookie", b"missing"]
)
def test_fast_path_header_equals_the_parsed_fields(name: bytes) -> None:
    parsed = WafRequest.from_target("GET", b"/", field_lines(BLOCK), "192.0.2.1")
    assert fast_request("GET", b"/", BLOCK, "192.0.2.1").header(name) == parsed.header(name)


def test_fast_path_header_values() -> None:
    fast = fast_request("GET", b"/", BLOCK, "192.0.2.1")
    assert fast.header(b"user-agent") == b"Mozilla/5.0 sqlmap  "  # llhttp: leading whitespace dropped only
    assert fast.header(b"x-forwarded-for") == b"203.0.113.9, 192.0.2.1"  # repeated: joined (RFC 9110 5.3)
    assert fast.header(b"agent") is None  # a name's suffix is not the name
    assert fast.forwarded(b"x-forwarded-for")[0] == (4, 0xCB007109)


def test_fast_path_target_split_on_first_use() -> None:
    fast = fast_request("POST", b"/p%41th?x=%55#frag", b"Host: h\r\n", "192.0.2.1")
    compiled = acl(
        rule("q", 1, byte("query_string", "EXACTLY", "x=U", "URL_DECODE")),
    )
    assert verdict(compiled, fast) == ("block", "q")
    assert (fast.path, fast.query, fast.method) == (b"/p%41th", b"x=%55", b"POST")


def test_contains_run_keeps_priority_order_labels_and_counts() -> None:
    compiled = acl(
        *path_rules("/one/", "/two/", "/three/", "/four/"),
        rule(
            "tagged",
            15,
            byte("uri_path", "CONTAINS", "/tag/", "URL_DECODE", "LOWERCASE"),
            "count",
            rule_labels=["seen:tag"],
        ),
        *[
            rule(f"s{n}", 20 + n, byte("uri_path", "CONTAINS", f"/s{n}/", "URL_DECODE", "LOWERCASE"))
            for n in range(3)
        ],
        rule("label", 30, {"label_match": {"scope": "LABEL", "key": "seen:tag"}}),
    )
    assert verdict(compiled, request(b"/x/FOUR/two/")) == ("block", "r1")  # first by priority, not position
    assert verdict(compiled, request(b"/%54hree/")) == ("block", "r2")  # after the transformations
    assert verdict(compiled, request(b"/tag/s2/")) == ("block", "s2")  # a count goes on to the next rules
    tagged = compiled.evaluate(request(b"/tag/"), 0.0)
    assert (tagged.rule, tagged.labels) == ("label", ["seen:tag"])
    assert verdict(compiled, request(b"/nothing/")) == ("allow", "Default_Action")
    assert compiled.stats.counted == {"tagged": 2}
    assert compiled.stats.allowed == {"Default_Action": 1}
    # One run: the eight CONTAINS rules on the transformed path, before the label rule.
    assert [run.end if run is not None else None for run in compiled.runs] == [
        8,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    ]


def test_contains_run_matches_literals_not_patterns() -> None:
    compiled = acl(*path_rules("a.b", "(x", "[y]", "*", chain=()))
    assert verdict(compiled, request(b"/axb/x/y")) == ("allow", "Default_Action")
    assert verdict(compiled, request(b"/a.b")) == ("block", "r0")
    assert verdict(compiled, request(b"/q(x")) == ("block", "r1")
    assert verdict(compiled, request(b"/[y]")) == ("block", "r2")
    assert verdict(compiled, request(b"/*")) == ("block", "r3")


def test_runs_need_one_field_and_chain_and_leave_the_body_alone() -> None:
    mixed = acl(
        rule("a", 1, byte("uri_path", "CONTAINS", "/a/", "LOWERCASE")),
        rule("b", 2, byte("uri_path", "CONTAINS", "/b/")),  # another chain: another slot
        rule("c", 3, byte("query_string", "CONTAINS", "c", "LOWERCASE")),
    )
    assert mixed.runs == [None, None, None]
    body = acl(
        *[
            rule(f"b{n}", n + 1, byte("body", "CONTAINS", f"x{n}", oversize_handling="MATCH"))
            for n in range(3)
        ]
    )
    assert body.runs == [None, None, None]
    big = request(b"/", method="POST", body=b"y" * 100, body_size=100_000)
    assert verdict(body, big) == ("block", "b0")  # oversize MATCH: decided without the literal


def test_default_allow_is_shared_but_counted() -> None:
    compiled = acl(*path_rules("/a/", "/b/", "/c/"), request_headers={"rule": True})
    first = compiled.evaluate(request(b"/x"), 0.0)
    second = compiled.evaluate(request(b"/y"), 0.0)
    assert first is second
    assert (first.action, first.headers) == ("allow", b"x-amzn-waf-rule: Default_Action\r\n")
    assert compiled.stats.allowed == {"Default_Action": 2}


def test_empty_fields_keep_their_meaning() -> None:
    # MD5 of an empty query string is 16 bytes, not empty; a regex that matches the empty string matches.
    digest = acl(
        rule(
            "md5",
            1,
            {
                "size_constraint": {
                    "field": "query_string",
                    "comparison": "EQ",
                    "size": 16,
                    "transformations": ["MD5"],
                }
            },
        ),
    )
    assert verdict(digest, request(b"/")) == ("block", "md5")
    empty = acl(rule("none", 1, {"regex_match": {"field": "query_string", "pattern": "^$"}}))
    assert verdict(empty, request(b"/")) == ("block", "none")
    assert verdict(empty, request(b"/?a")) == ("allow", "Default_Action")


@pytest.mark.parametrize(
    "url",
    [b"/", b"/a?b", b"/a?b?c", b"/a#f?x", b"/a?b#f", b"/a?#", b"?", b"#", b"", b"/a??b#c#d", b"/%3F?%23"],
)
def test_target_split_as_rfc_3986(url: bytes) -> None:
    path, _, query = url.partition(b"#")[0].partition(b"?")
    split = WafRequest.from_target("GET", url, [], "192.0.2.1")
    assert (split.raw(URI_PATH, b""), split.raw(QUERY_STRING, b"")) == (path, query)
