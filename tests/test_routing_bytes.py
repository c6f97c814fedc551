"""Byte-level rule matching agrees with the str-level definition: path and host conditions compare the
request's bytes (latin-1, one byte one character) without decoding, and the rule table's gate decides on
the request target alone. Each test checks the byte matcher against ValueMatcher or RequestView's str
views, which the ALB condition tests (test_routing_units.py, test_alb_rules.py) pin to AWS's behaviour."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from lbd.config.schema import Condition, Listener
from lbd.routing.conditions import BytesMatcher, ValueMatcher, compile_conditions
from lbd.routing.request import RequestView, request_path
from lbd.routing.stickiness import CookieSealer
from lbd.routing.table import RuleTable

# Latin-1 letters with case (À, à, ß, ÿ), the wildcard characters and separators the views cut at.
PATTERN = st.text(alphabet="aAb*?./:\u00c0\u00e0\u00df\u00ff\u0100K\u212a", max_size=8)
TEXT = st.binary(max_size=10).map(lambda b: bytes(c for c in b if c in b"aAb./:Kk\xc0\xe0\xdf\xff?"))


@given(patterns=st.lists(PATTERN, max_size=4), data=TEXT)
def test_bytes_matcher_agrees_with_value_matcher_case_sensitive(patterns: list[str], data: bytes) -> None:
    text = ValueMatcher(patterns, ignore_case=False)
    assert BytesMatcher(text)(data) == text(data.decode("latin-1"))


@given(patterns=st.lists(PATTERN, max_size=4), data=TEXT)
def test_bytes_matcher_agrees_with_value_matcher_folded(patterns: list[str], data: bytes) -> None:
    # Folded matchers take input lowered as RequestView.host_key lowers it.
    text = ValueMatcher(patterns, ignore_case=True)
    lowered = data.decode("latin-1").lower().encode("latin-1")
    assert BytesMatcher(text)(lowered) == text(data.decode("latin-1"))


def test_kelvin_sign_folds_to_k_as_str_lower_does() -> None:
    # "\u212a".lower() == "k": a value outside latin-1 that lowercases into ASCII still matches.
    matcher = BytesMatcher(ValueMatcher(["\u212aexample.com"], ignore_case=True))
    assert matcher(b"kexample.com")
    assert not BytesMatcher(ValueMatcher(["\u0100*"], ignore_case=False))(b"\xc0x")


@given(value=TEXT, pattern=st.text(alphabet="aAbK*?./:", min_size=1, max_size=8))
def test_header_condition_folds_as_str_lower(value: bytes, pattern: str) -> None:
    # Config values are visible ASCII (the schema checks); request values may carry any latin-1 byte.
    tag = Condition(field="http-header", http_header_name="X-Tag", values=[pattern])
    predicate = compile_conditions([tag])
    request = RequestView("GET", b"/", [(b"x-other", b"*"), (b"X-TAG", value)], "127.0.0.1")
    assert predicate(request) == ValueMatcher([pattern], ignore_case=True)(value.decode("latin-1"))


HOSTS = st.binary(max_size=12).map(lambda b: bytes(c for c in b if c in b"aB.:[]1 \t\x1c\xc0\xe0\x85\xa0"))


@given(host=HOSTS)
def test_host_key_is_host_as_bytes(host: bytes) -> None:
    request = RequestView("GET", b"/", [(b"Host", host)], "127.0.0.1")
    assert request.host_key == request.host.encode("latin-1")


@given(url=st.sampled_from([b"/a?b", b"/a", b"*", b"http://h/p?q", b"http://h", b"https://h:1/x/y"]))
def test_raw_path_is_path_as_bytes(url: bytes) -> None:
    request = RequestView("GET", url, [], "127.0.0.1")
    assert request.raw_path == request.path.encode("latin-1") == request_path(url)


def listener(rules: list[dict[str, Any]]) -> Listener:
    return Listener.model_validate(
        {
            "protocol": "HTTP",
            "port": 80,
            "default_actions": [{"type": "forward", "target_group": "g"}],
            "rules": [
                {"priority": n + 1, "actions": [{"type": "forward", "target_group": "g"}], **rule}
                for n, rule in enumerate(rules)
            ],
        }
    )


class Group:
    name = "g"


def table(rules: list[dict[str, Any]]) -> RuleTable[Group]:
    return RuleTable(listener(rules), {"g": Group()}, CookieSealer([b"k" * 32], b"AWSALBTG"))


def path_rule(*values: str, **more: Any) -> dict[str, Any]:
    return {"conditions": [{"field": "path-pattern", "values": list(values)}, *more.get("also", [])]}


def test_gate_decides_on_the_target_alone() -> None:
    rules = table([path_rule("/api0/*"), path_rule("/exact"), path_rule("*.png"), path_rule("/v?/x*y")])
    for url in (b"/small", b"/api0", b"/exact/", b"/a.PNG", b"/v12/xy", b"/other?/api0/"):
        assert rules.no_rule_for(url), url
    for url in (b"/api0/", b"/api0/x?q", b"/exact", b"/exact?x=1", b"/a.png", b"/v1/x-y", b"http://h/exact"):
        assert not rules.no_rule_for(url), url
        assert rules.match(RequestView("GET", url, [(b"Host", b"h")], "127.0.0.1"))[0] > 0


def test_gate_stays_open_when_a_rule_has_no_path_condition() -> None:
    host_only = {"conditions": [{"field": "host-header", "values": ["*.example.com"]}]}
    rules = table([path_rule("/api0/*"), host_only])
    assert not rules.no_rule_for(b"/small")  # the host rule may still match: look at the request
    assert rules.match(RequestView("GET", b"/small", [(b"Host", b"A.Example.COM:80")], "::1"))[0] == 2
    assert rules.match(RequestView("GET", b"/small", [(b"Host", b"example.com")], "::1"))[0] == 0


CONDITIONS = st.sampled_from(
    [
        {"field": "path-pattern", "values": ["/api/*"]},
        {"field": "path-pattern", "values": ["/a", "*.png"]},
        {"field": "host-header", "values": ["*.example.com"]},
        {"field": "host-header", "values": ["shop.example.com", "b?.test"]},
        {"field": "http-request-method", "values": ["POST"]},
        {"field": "http-header", "http_header_name": "X-Tag", "values": ["on"]},
    ]
)
REQUESTS = st.tuples(
    st.sampled_from([b"/", b"/a", b"/api/x", b"/i.png?x", b"/api/y.png"]),
    st.sampled_from([b"example.com", b"Shop.Example.com:8080", b"bx.test", b"b.test"]),
    st.sampled_from(["GET", "POST"]),
    st.sampled_from([[], [(b"x-tag", b"ON")]]),
)


@given(
    rules=st.lists(st.lists(CONDITIONS, min_size=1, max_size=3, unique_by=lambda c: c["field"]), max_size=6),
    requests=st.lists(REQUESTS),
)
def test_gates_skip_exactly_the_rules_that_cannot_match(
    rules: list[list[dict[str, Any]]], requests: list[tuple[bytes, bytes, str, list[tuple[bytes, bytes]]]]
) -> None:
    # The reference: every rule's predicate in priority order, no gates.
    compiled = table([{"conditions": conditions} for conditions in rules])
    for url, host, method, headers in requests:
        request = RequestView(method, url, [(b"Host", host), *headers], "10.0.0.1")
        expected = next((p for p, predicate, _ in compiled.rules if predicate(request)), 0)
        assert compiled.match(request)[0] == expected
        if compiled.no_rule_for(url):
            assert expected == 0
