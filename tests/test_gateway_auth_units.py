"""The authorizers' pure parts, without a loop: ARN wildcards, identity sources, tokens and claims, IAM
policy evaluation, authorizer answers and the answer cache."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbd.config.gateway_auth import JwtAuthorizer
from lbd.gateway.arn import action_matches, any_resource_matches, method_arn, wildcard_match
from lbd.gateway.auth import authorizer_errors
from lbd.gateway.auth.identity import identity_value, query_parameters
from lbd.gateway.auth.jwt import (
    JwksKeys,
    TokenRejected,
    bearer_token,
    check_claims,
    parse_jwks,
    token_scopes,
    verify_token,
)
from lbd.gateway.auth.request import Answer, AnswerCache, BadAnswer, decide, evaluate, parse_answer
from tests.gateway_auth_servers import AUDIENCE, ISSUER, ec_key, gateway_request, jwk, rsa_key, token

NOW = 1_800_000_000.0
CONFIG = JwtAuthorizer(name="u", type="JWT", issuer=ISSUER, audience=(AUDIENCE, "other"), jwks_file="x")


def test_method_arns_and_wildcards() -> None:
    arn = method_arn("us-east-1", "pets", "prod", "get", "/pets/a%20b")
    assert arn == "arn:aws:execute-api:us-east-1:000000000000:pets/prod/GET/pets/a b"
    assert method_arn("us-east-1", "pets", "prod", "GET", "/").endswith("pets/prod/GET/")
    assert wildcard_match("arn:aws:execute-api:*:*:pets/prod/*", arn)
    assert wildcard_match("arn:aws:execute-api:us-east-?:*:pets/*/GET/pets/*", arn)
    assert not wildcard_match("arn:aws:execute-api:us-east-1:*:pets/prod/POST/*", arn)
    assert not wildcard_match("arn:aws:execute-api:*:*:pets/prod/GET/pets", arn)  # whole ARN, not a prefix
    assert not wildcard_match("arn:aws:execute-api:*:*:PETS/*", arn)  # ARNs are case-sensitive
    assert wildcard_match("arn:aws:execute-api:*:*:pets/prod/GET/pets/a.b", arn.replace(" ", ".")) and not (
        wildcard_match("arn:aws:execute-api:*:*:pets/prod/GET/pets/a.b", arn)  # "." is no wildcard
    )
    assert any_resource_matches(["nope", "*"], arn) and not any_resource_matches([], arn)
    assert (
        action_matches(["execute-api:invoke"]) and action_matches(["execute-api:*"]) and action_matches(["*"])
    )
    assert not action_matches(["execute-api:InvalidateCache"])


def test_identity_sources() -> None:
    request = gateway_request(query="tenant=a&tenant=b&empty=", headers={"X-Token": "t1"})
    assert identity_value(request, "$request.header.x-token") == "t1"
    assert identity_value(request, "method.request.header.X-TOKEN") == "t1"
    assert identity_value(request, "$request.querystring.tenant") == "a,b"
    assert identity_value(request, "method.request.querystring.tenant") == "a,b"
    assert identity_value(request, "$request.querystring.empty") is None
    assert identity_value(request, "$request.header.missing") is None
    assert identity_value(request, "$context.routeKey") == "GET /pets/{id}"
    assert identity_value(request, "$context.identity.sourceIp") == "127.0.0.1"
    assert query_parameters("a=1&b=%2F&a=2") == {"a": "1,2", "b": "/"}


def test_bearer_tokens() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc ") == "abc"
    assert bearer_token("abc") == "abc"
    assert bearer_token("Bearer") is None and bearer_token("  ") is None and bearer_token(None) is None


def test_jwks_documents() -> None:
    keys = parse_jwks(b'{"keys": [{"kid": "a", "kty": "RSA"}, {"kid": "b", "use": "enc"}, {"kty": "EC"}, 7]}')
    assert list(keys) == ["a"]
    for bad in (b"[]", b'{"keys": {}}', b'{"keys": []}', b"not json"):
        with pytest.raises(ValueError):
            parse_jwks(bad)


def test_scopes_from_scope_and_scp() -> None:
    assert token_scopes({"scope": "a b  c"}) == {"a", "b", "c"}
    assert token_scopes({"scp": ["x", "y"], "scope": "z"}) == {"x", "y", "z"}
    assert token_scopes({"scp": "x y"}) == {"x", "y"}
    assert token_scopes({}) == set()


def claims(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "exp": NOW + 10, "iat": NOW, "nbf": NOW}
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"iss": ISSUER + "/"}, "issuer"),
        ({"aud": "x"}, "audience"),
        ({"aud": ["x", "y"]}, "audience"),
        ({"aud": None}, "audience"),
        ({"aud": None, "client_id": "x"}, "audience"),
        ({"exp": NOW - 60}, "expired"),
        ({"exp": None}, "no expiry"),
        ({"exp": "soon"}, "NumericDate"),
        ({"exp": True}, "NumericDate"),
        ({"nbf": NOW + 60.5}, "not valid yet"),
        ({"iat": NOW + 61}, "future"),
    ],
)
def test_claims_refused(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(TokenRejected, match=reason):
        check_claims(claims(**changes), CONFIG, NOW)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"aud": ["x", "other"]},
        {"aud": None, "client_id": AUDIENCE},
        {"exp": NOW - 59},  # within the 60 s leeway
        {"nbf": NOW + 59, "iat": NOW + 59},
        {"nbf": None, "iat": None},
    ],
)
def test_claims_accepted(changes: dict[str, Any]) -> None:
    check_claims(claims(**changes), CONFIG, NOW)


def test_verify_token_without_io() -> None:
    keys = JwksKeys({"r": jwk("r", rsa_key("r1")), "e": jwk("e", ec_key("e1"), alg="ES256")})
    assert verify_token(token(rsa_key("r1"), "r", NOW), keys, CONFIG, NOW)["sub"] == "user-1"
    assert verify_token(token(ec_key("e1"), "e", NOW, "ES256"), keys, CONFIG, NOW)["iss"] == ISSUER
    for bad, reason in [
        (token(rsa_key("r1"), "missing", NOW), "kid not found"),
        (token(rsa_key("r1"), None, NOW), "no kid"),
        (token(rsa_key("r1"), "e", NOW), "not the key's"),
        (token(rsa_key("other"), "r", NOW), "signature"),
        (token(rsa_key("r1"), "r", NOW, "RS512"), "RS512 is invalid"),
        (token(rsa_key("r1"), "r", NOW) + "x", "signature|invalid|malformed"),
        ("a.b", "malformed"),
        ("x" * 20_000, "too large"),
    ]:
        with pytest.raises(TokenRejected, match=reason):
            verify_token(bad, keys, CONFIG, NOW)


ARN = "arn:aws:execute-api:us-east-1:000000000000:pets/prod/GET/pets/1"


def statement(effect: str, resource: Any, action: Any = "execute-api:Invoke") -> dict[str, Any]:
    return {"Effect": effect, "Action": action, "Resource": resource}


def test_policy_evaluation_explicit_deny_wins_default_deny() -> None:
    assert evaluate([statement("Allow", "*")], ARN) == "Allow"
    assert evaluate([statement("Allow", "*"), statement("Deny", [ARN])], ARN) == "Deny"
    assert evaluate([statement("Deny", "arn:*:POST/*"), statement("Allow", ARN)], ARN) == "Allow"
    assert evaluate([statement("Allow", "*", action="s3:GetObject")], ARN) == ""
    assert evaluate([], ARN) == ""


def policy_answer(item: dict[str, Any]) -> bytes:
    return json.dumps({"principalId": "p", "policyDocument": {"Statement": [item]}}).encode()


def test_authorizer_answers() -> None:
    doc = {
        "principalId": "p",
        "policyDocument": {"Statement": statement("Allow", "*")},
        "context": {"n": 1.5},
    }
    answer = parse_answer(json.dumps(doc).encode(), simple=False)
    assert answer.principal_id == "p" and dict(answer.context) == {"n": "1.5"}
    assert decide(answer, ARN, cached=True).cached
    for bad in [
        b"[]",
        b'{"principalId": 1, "policyDocument": {}}',
        policy_answer({"Effect": "Maybe", "Action": "*", "Resource": "*"}),
        policy_answer({"Effect": "Allow", "Resource": "*"}),
        policy_answer({"Effect": "Allow", "Action": [], "Resource": "*"}),
        policy_answer({"Effect": "Allow", "Action": "*", "Resource": [1]}),
        b"[" * 100_000,
    ]:
        with pytest.raises(BadAnswer):
            parse_answer(bad, simple=False)
    with pytest.raises(BadAnswer, match="isAuthorized"):
        parse_answer(b'{"isAuthorized": "yes"}', simple=True)
    simple = parse_answer(b'{"isAuthorized": true, "context": {"o": {"a": [1]}}}', simple=True)
    assert dict(simple.context) == {"o": '{"a":[1]}'}


def test_answer_cache_ttl_and_lru() -> None:
    now = [0.0]
    cache = AnswerCache(10, lambda: now[0], capacity=2)
    cache.put(("a",), Answer(authorized=True))
    cache.put(("b",), Answer(authorized=False))
    assert cache.get(("a",)) is not None  # a is now the most recent
    cache.put(("c",), Answer(authorized=True))
    assert cache.get(("b",)) is None and cache.get(("a",)) is not None and len(cache) == 2
    now[0] = 9.99
    assert cache.get(("c",)) is not None
    now[0] = 10.0
    assert cache.get(("c",)) is None and len(cache) == 1


def test_preflight_names_an_unreadable_jwks_file(tmp_path: Any) -> None:
    missing = CONFIG.model_copy(update={"jwks_file": str(tmp_path / "none.json")})
    (error,) = authorizer_errors(missing, "apis[0].authorizers[0]")
    assert error.startswith("apis[0].authorizers[0].jwks_file: ") and "none.json" in error
    (tmp_path / "ok.json").write_text(json.dumps({"keys": [jwk("k", ec_key("e1"))]}))
    assert authorizer_errors(CONFIG.model_copy(update={"jwks_file": str(tmp_path / "ok.json")}), "a") == []


KEYS = JwksKeys({"r": jwk("r", rsa_key("r1"))})
JSON = st.recursive(
    st.none() | st.booleans() | st.text(max_size=5) | st.integers() | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@st.composite
def jws_like(draw: st.DrawFn) -> str:
    """Three dot-separated parts with a header that often passes the first checks."""
    header = {
        "alg": draw(st.sampled_from(["RS256", "ES256", "none", "HS256"]) | st.text(max_size=6)),
        "kid": draw(st.sampled_from(["r", "e"]) | JSON),
        **draw(st.dictionaries(st.text(max_size=5), JSON, max_size=2)),
    }
    claims = draw(st.dictionaries(st.sampled_from(["iss", "aud", "exp", "nbf", "iat", "scope"]), JSON) | JSON)
    signature = draw(st.binary(max_size=300))
    return ".".join((b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature)))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), jws_like()))
def test_any_token_is_refused_cleanly(text: str) -> None:
    with contextlib.suppress(TokenRejected):
        verify_token(text, KEYS, CONFIG, NOW)


ANSWER_KEYS = [
    "principalId",
    "policyDocument",
    "Statement",
    "Effect",
    "Action",
    "Resource",
    "context",
    "isAuthorized",
]
ANSWERS = st.recursive(
    st.none() | st.booleans() | st.sampled_from(["Allow", "Deny", "*", "execute-api:Invoke"]) | st.integers(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(ANSWER_KEYS), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), ANSWERS.map(lambda v: json.dumps(v).encode())))
def test_any_authorizer_answer_is_parsed_or_refused_cleanly(body: bytes) -> None:
    for simple in (True, False):
        try:
            answer = parse_answer(body, simple)
        except BadAnswer:
            continue
        decide(answer, ARN, cached=False)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["iss", "aud", "client_id", "exp", "nbf", "iat"]), JSON | st.just(ISSUER))
)
def test_any_claims_are_checked_cleanly(values: dict[str, Any]) -> None:
    with contextlib.suppress(TokenRejected):
        check_claims(values, CONFIG, NOW)
    token_scopes(values)
