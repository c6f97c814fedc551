"""Pure routing and request-checking logic, without sockets: wildcard matching, request views, redirect
locations, sealed stickiness cookies, desync normalisation and trace ids."""

from __future__ import annotations

import fnmatch
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbd.config.schema import Condition, Listener, RedirectAction
from lbd.http import desync
from lbd.http.dispatch import trace_header
from lbd.http.errors import HttpError
from lbd.routing.actions import Redirect
from lbd.routing.conditions import ValueMatcher, compile_conditions
from lbd.routing.request import RequestView
from lbd.routing.stickiness import CookieSealer, cookie_value
from lbd.routing.table import RuleTable


def view(
    url: bytes = b"/",
    *,
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
    peer: str = "127.0.0.1",
) -> RequestView:
    return RequestView(method, url, headers if headers is not None else [(b"Host", b"example.com")], peer)


def condition(field: str, *values: Any, **extra: Any) -> Condition:
    return Condition.model_validate({"field": field, "values": list(values), **extra})


# -- wildcards ---------------------------------------------------------------------------------------------

TEXT = st.text(alphabet="ab*?.", max_size=8)


@given(pattern=TEXT, text=st.text(alphabet="ab.", max_size=8))
def test_wildcards_agree_with_fnmatch(pattern: str, text: str) -> None:
    # fnmatch has the same * and ? (and no [...] sets in this alphabet): an independent oracle.
    assert ValueMatcher([pattern], ignore_case=False)(text) == fnmatch.fnmatchcase(text, pattern)


def test_values_compile_to_the_cheapest_test() -> None:
    matcher = ValueMatcher(["/a", "/b", "/c*", "*.png", "/d?x", "/e*f"], ignore_case=False)
    assert matcher.exact == {"/a", "/b"}
    assert (matcher.prefixes, matcher.suffixes) == (("/c",), (".png",))
    assert len(matcher.patterns) == 2  # only these need a regular expression, one alternation for both
    assert matcher("/c/anything") and matcher("x.png") and matcher("/dox") and matcher("/e-f")
    assert not matcher("/d") and not matcher("/C") and not matcher("x.PNG")
    folded = ValueMatcher(["API.*", "*.Example.COM"], ignore_case=True)
    assert folded("api.v1") and folded("WWW.EXAMPLE.com")


@given(pattern=TEXT, text=st.text(alphabet="abAB.", max_size=8))
def test_case_insensitive_wildcards_agree_with_fnmatch(pattern: str, text: str) -> None:
    matcher = ValueMatcher([pattern], ignore_case=True)
    assert matcher(text) == fnmatch.fnmatchcase(text.lower(), pattern.lower())


def test_escaped_wildcards_are_literal_in_query_values() -> None:
    matcher = ValueMatcher([r"a\*b"], ignore_case=True, escapes=True)
    assert matcher("a*b")
    assert not matcher("axxb")


# -- request view ------------------------------------------------------------------------------------------


def test_request_view_normalises_host_path_query_and_source() -> None:
    request = view(b"/p/a?x=1&y&x=2", headers=[(b"Host", b"WWW.Example.COM:8080")], peer="::ffff:10.1.2.3")
    assert request.host == "www.example.com"
    assert request.path == "/p/a"
    assert request.query == [("x", "1"), ("y", ""), ("x", "2")]
    assert str(request.source) == "10.1.2.3"


def test_conditions_are_anded_and_values_ored() -> None:
    predicate = compile_conditions(
        [condition("http-request-method", "GET", "HEAD"), condition("path-pattern", "/api/*", "/v?/*")]
    )
    assert predicate(view(b"/api/x"))
    assert predicate(view(b"/v2/x", method="HEAD"))
    assert not predicate(view(b"/api/x", method="POST"))
    assert not predicate(view(b"/other"))


def test_repeated_header_matches_on_any_value() -> None:
    predicate = compile_conditions([condition("http-header", "b*", http_header_name="X-Tag")])
    assert predicate(view(headers=[(b"x-tag", b"alpha"), (b"X-TAG", b"Beta")]))
    assert not predicate(view(headers=[(b"x-tag", b"alpha")]))


# -- redirect ----------------------------------------------------------------------------------------------


def redirect(**parts: str) -> Redirect:
    return Redirect(RedirectAction.model_validate({"type": "redirect", "status_code": "HTTP_301", **parts}))


def test_redirect_keeps_every_unchanged_part() -> None:
    request = view(b"/a/b?q=1", headers=[(b"Host", b"Shop.Example.com:8080")])
    assert redirect(protocol="HTTPS", port="443").location(request, "http", 8080) == (
        "https://shop.example.com/a/b?q=1"  # the scheme's default port is left out of the authority
    )
    assert redirect(port="8443").location(request, "http", 8080) == "http://shop.example.com:8443/a/b?q=1"


def test_redirect_placeholders_compose() -> None:
    request = view(b"/old/x?k=v")
    target = redirect(host="#{host}.new", path="/n/#{path}", query="from=#{query}")
    assert target.location(request, "http", 80) == "http://example.com.new/n/old/x?from=k=v"


def test_redirect_response_is_a_complete_message() -> None:
    response = redirect(host="other").response("http://other:80/", close=True)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 301 ")
    assert b"\r\nLocation: http://other:80/" in head
    assert b"\r\nConnection: close" in head
    length = re.search(rb"Content-Length: (\d+)", head)
    assert length is not None and int(length.group(1)) == len(body)


# -- sealed cookies ----------------------------------------------------------------------------------------


def test_sealed_cookie_round_trip_expiry_and_forgery() -> None:
    sealer = CookieSealer(bytes(16), b"AWSALBTG")
    value, expiry = sealer.seal("blue", 60, now=1000.0)
    assert expiry == 1060
    assert sealer.open(value, now=1059.0) == "blue"
    assert sealer.open(value, now=1061.0) is None  # expired
    assert sealer.open(value[:-2] + ("AA" if value[-2:] != "AA" else "BB"), now=1000.0) is None
    assert CookieSealer(bytes(16), b"OTHER").open(value, now=1000.0) is None  # bound to its purpose
    assert CookieSealer(b"\x01" * 16, b"AWSALBTG").open(value, now=1000.0) is None  # another key


def test_cookie_value_finds_one_cookie_among_many() -> None:
    headers = [(b"Cookie", b"a=1; AWSALBTG=xyz; b=2"), (b"cookie", b"c=3")]
    assert cookie_value(headers, b"AWSALBTG") == "xyz"
    assert cookie_value(headers, b"c") == "3"
    assert cookie_value(headers, b"missing") is None


# -- desync ------------------------------------------------------------------------------------------------


def test_normalise_merges_identical_content_lengths_and_unfolds() -> None:
    raw = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nX: one\r\n two\r\ncontent-length: 3\r\n\r\nabc"
    normal, reason = desync.normalise_head(raw)
    assert normal == b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nX: one two\r\n\r\nabc"
    assert reason == "ObsFold+DuplicateContentLength"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", "MultipleContentLength"),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: +3\r\n\r\n", "BadContentLength"),
        (b"POST / HTTP/1.1\r\n folded-first\r\n\r\n", "MalformedRequest"),
        (b"POST / HTTP/1.1\r\nBad Name: x\r\n x\r\n\r\n", "BadHeaderName"),
        (b"POST / HTTP/1.1\r\nHost: a\r\n", "MalformedRequest"),
    ],
)
def test_normalise_refuses_severe_heads(raw: bytes, reason: str) -> None:
    with pytest.raises(HttpError) as caught:
        desync.normalise_head(raw)
    assert (caught.value.status, caught.value.reason) == (400, reason)


@pytest.mark.parametrize(
    ("method", "cl", "te", "expected"),
    [
        ("POST", b"5", None, None),
        ("POST", None, b"chunked", None),
        ("POST", b"5", b"chunked", (desync.AMBIGUOUS, "BothTeClPresent")),
        ("GET", None, b"chunked", (desync.AMBIGUOUS, "UndefinedTransferEncodingSemantics")),
        ("GET", b"0", None, (desync.ACCEPTABLE, "GetHeadZeroContentLength")),
        ("HEAD", b"7", None, (desync.AMBIGUOUS, "UndefinedContentLengthSemantics")),
    ],
)
def test_framing_classes(method: str, cl: bytes | None, te: bytes | None, expected: object) -> None:
    assert desync.classify_framing(method, cl, te) == expected


def test_transfer_encoding_codings() -> None:
    desync.check_transfer_encoding(b" Chunked ")
    for value, status in ((b"gzip, chunked", 501), (b"identity", 501), (b"chunked\x01", 400), (b'"x"', 400)):
        with pytest.raises(HttpError) as caught:
            desync.check_transfer_encoding(value)
        assert caught.value.status == status, value


@pytest.mark.parametrize("mode", ["monitor", "defensive", "strictest"])
def test_severe_is_blocked_in_every_mode(mode: str) -> None:
    assert desync.verdict(mode, desync.SEVERE) is desync.Verdict.BLOCK


# -- trace ids ---------------------------------------------------------------------------------------------

STAMP = rb"1-[0-9a-f]{8}-[0-9a-f]{24}"


def test_trace_header_new_root_or_self_added() -> None:
    assert re.fullmatch(rb"Root=" + STAMP, trace_header(b""))
    kept = trace_header(b"Root=1-abc-def;Self=1-old-one;Custom=x")
    assert re.fullmatch(rb"Self=" + STAMP + rb";Root=1-abc-def;Custom=x", kept)
    assert re.fullmatch(rb"Root=" + STAMP + rb";Custom=x", trace_header(b"Custom=x"))
    assert re.fullmatch(rb"Root=" + STAMP, trace_header(b"Root=" + b"x" * 8000))  # oversize: replaced


# -- the rule table's path gate ------------------------------------------------------------------------------

PATH_VALUES = ["/api/*", "/a?c", "*.png", "/exact", "/img/*/x", "/API/*", "*", "/s*l"]
RULES = st.lists(
    st.tuples(
        st.lists(st.sampled_from(PATH_VALUES), min_size=1, max_size=3) | st.none(),  # path condition or none
        st.sampled_from(["GET", "POST"]) | st.none(),  # method condition or none
    ).filter(lambda rule: rule != (None, None)),
    max_size=8,
)
PATHS = st.sampled_from(["/api/x", "/abc", "/a.png", "/exact", "/img/1/x", "/small", "/", "/API/", "/sl"])


@given(rules=RULES, path=PATHS, method=st.sampled_from(["GET", "POST"]))
def test_rule_table_matches_as_rules_in_order_would(
    rules: list[tuple[list[str] | None, str | None]], path: str, method: str
) -> None:
    """The gate only skips rules that could not match: the first matching rule is the same as without it."""
    listener = Listener.model_validate(
        {
            "protocol": "HTTP",
            "port": 80,
            "default_actions": [{"type": "fixed-response", "status_code": 200}],
            "rules": [
                {
                    "priority": i + 1,
                    "conditions": [
                        *([{"field": "path-pattern", "values": paths}] if paths else []),
                        *([{"field": "http-request-method", "values": [verb]}] if verb else []),
                    ],
                    "actions": [{"type": "fixed-response", "status_code": 201 + i}],
                }
                for i, (paths, verb) in enumerate(rules)
            ],
        }
    )
    table = RuleTable(listener, {}, CookieSealer(b"k" * 32, b"AWSALBTG"))
    request = view(path.encode(), method=method)
    expected = next(
        (rule.priority for rule in listener.rules if compile_conditions(rule.conditions)(request)), 0
    )
    assert table.match(request)[0] == expected
