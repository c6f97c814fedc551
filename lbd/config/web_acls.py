"""The ``web_acls:`` section of the config: AWS WAF's web ACLs, rules, statements and actions, typed.

The nouns and values are WAF's (AWS WAF Developer Guide, "Web ACLs", "Rule statements", "Text
transformations", "Rule actions"), in the config's snake_case: a statement is a mapping with exactly one key
naming its type (``byte_match``, ``ip_set``, ``rate_based``, ``and`` ...), as WAF's JSON is. Checks that
relate an ACL to the rest of the file (associations) live in ``cross_check`` below, called by validate.py.
The engine that evaluates these is lbd/waf/.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

# What the engine reads, without pydantic (workers read records, lbd/config/plain.py).
from lbd.config.web_acl_reading import (
    STATEMENTS,
    action_kind,
    ip_set_refs,
    statement_kind,
    statement_part,
    walk,
)

if TYPE_CHECKING:
    from lbd.config.issues import ConfigIssue

ACL_NAME = r"^[A-Za-z0-9_-]{1,128}$"  # WAF: 1-128 of A-Z a-z 0-9 - _
LABEL = r"^[A-Za-z0-9_:-]{1,1024}$"  # WAF label names: alphanumerics, _ - and : between namespaces
HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$"  # RFC 9110 5.1 token

FieldName = Literal["uri_path", "query_string", "single_header", "method", "body"]
Transformation = Literal[
    "NONE",
    "LOWERCASE",
    "URL_DECODE",
    "URL_DECODE_UNI",
    "HTML_ENTITY_DECODE",
    "COMPRESS_WHITE_SPACE",
    "BASE64_DECODE",
    "HEX_DECODE",
    "REMOVE_NULLS",
    "NORMALIZE_PATH",
    "MD5",
    "TRIM",
    "UPPERCASE",
]
Positional = Literal["EXACTLY", "STARTS_WITH", "ENDS_WITH", "CONTAINS", "CONTAINS_WORD"]
Oversize = Literal["CONTINUE", "MATCH", "NO_MATCH"]
# WAF's rate-based evaluation windows (RateBasedStatement.EvaluationWindowSec).
WINDOWS = (60, 120, 300, 600)


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class FieldMatch(Model):
    """The part of a request a match statement inspects (WAF's FieldToMatch) and its transformations."""

    field: FieldName
    header: str | None = Field(None, pattern=HEADER_NAME)  # for field: single_header
    # What happens when a body is larger than WAF inspects (FieldToMatch.Body.OversizeHandling).
    oversize_handling: Oversize = "CONTINUE"
    transformations: tuple[Transformation, ...] = Field(("NONE",), max_length=10)

    @model_validator(mode="after")
    def _header(self) -> FieldMatch:
        if self.field == "single_header" and not self.header:
            raise ValueError("header: required when field is single_header")
        if self.field != "single_header" and self.header:
            raise ValueError(f"header: only for field single_header, not {self.field}")
        return self


class ByteMatch(FieldMatch):
    positional: Positional
    value: str = Field(min_length=1, max_length=200)  # WAF: SearchString up to 200 bytes

    @model_validator(mode="after")
    def _word(self) -> ByteMatch:
        if self.positional == "CONTAINS_WORD" and not re.fullmatch(r"\w+", self.value, re.ASCII):
            raise ValueError("value: CONTAINS_WORD takes letters, digits and _ only (WAF)")
        return self


class RegexMatch(FieldMatch):
    pattern: str = Field(min_length=1, max_length=512)  # WAF: RegexString up to 512 characters

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class SizeConstraint(FieldMatch):
    comparison: Literal["EQ", "NE", "LE", "LT", "GE", "GT"]
    size: int = Field(ge=0, le=21474836480)


class ForwardedIp(Model):
    """Take the client address from a header instead of the connection (WAF's ForwardedIPConfig)."""

    header_name: str = Field("X-Forwarded-For", pattern=HEADER_NAME)
    position: Literal["FIRST", "LAST", "ANY"] = "FIRST"  # IP sets only; rate-based rules use the first
    fallback: Literal["MATCH", "NO_MATCH"] = "NO_MATCH"  # when the header is absent or not an address


class IpSetReference(Model):
    """An IP set: one of the ACL's named ``ip_sets``, or addresses (or a file) inline."""

    name: str | None = Field(None, pattern=ACL_NAME)
    addresses: tuple[str, ...] | None = None
    file: str | None = Field(None, min_length=1)
    forwarded_ip: ForwardedIp | None = None

    @field_validator("addresses")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return _check_cidrs(value)

    @model_validator(mode="after")
    def _one_source(self) -> IpSetReference:
        given = [key for key in ("name", "addresses", "file") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError("needs exactly one of name, addresses, file")
        return self


class IpSet(Model):
    """A named IP set of an ACL; the admin API replaces its addresses at run time."""

    name: str = Field(pattern=ACL_NAME)
    addresses: tuple[str, ...] | None = None
    file: str | None = Field(None, min_length=1)  # one CIDR per line, # comments; re-read when it changes

    @field_validator("addresses")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return _check_cidrs(value)

    @model_validator(mode="after")
    def _one_source(self) -> IpSet:
        if (self.addresses is None) == (self.file is None):
            raise ValueError("needs exactly one of addresses, file")
        return self


def _check_cidrs(value: tuple[str, ...] | None) -> tuple[str, ...] | None:
    for index, text in enumerate(value or ()):
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(
                f"[{index}]: must be an IPv4 or IPv6 CIDR such as 192.0.2.0/24, got {text!r}"
            ) from None
    return value


class LabelMatch(Model):
    scope: Literal["LABEL", "NAMESPACE"] = "LABEL"
    key: str = Field(pattern=LABEL)

    @model_validator(mode="after")
    def _namespace(self) -> LabelMatch:
        if self.scope == "NAMESPACE" and not self.key.endswith(":"):
            raise ValueError("key: a NAMESPACE key ends with ':' (WAF), e.g. 'bot:'")
        return self


class RateBased(Model):
    """Requests per window per aggregation key (WAF's RateBasedStatement); over the limit, the rule acts."""

    limit: int = Field(ge=10, le=2_000_000_000)  # WAF: 10 to 2,000,000,000
    window_seconds: int = 300

    aggregate_key: Literal["ip", "forwarded_ip", "header", "api_key", "constant"] = "ip"
    forwarded_ip: ForwardedIp | None = None  # aggregate_key forwarded_ip: which header
    header: str | None = Field(None, pattern=HEADER_NAME)  # aggregate_key header: which header
    scope_down: Statement | None = None  # only requests this matches are counted

    @field_validator("window_seconds")
    @classmethod
    def _window(cls, value: int) -> int:
        if value not in WINDOWS:
            raise ValueError(
                f"must be one of {', '.join(map(str, WINDOWS))} (WAF's evaluation windows), got {value}"
            )
        return value

    @model_validator(mode="after")
    def _key(self) -> RateBased:
        if self.aggregate_key == "header" and not self.header:
            raise ValueError("header: required when aggregate_key is header")
        if self.aggregate_key != "header" and self.header:
            raise ValueError(f"header: only for aggregate_key header, not {self.aggregate_key}")
        if self.forwarded_ip is not None and self.aggregate_key != "forwarded_ip":
            raise ValueError(f"forwarded_ip: only for aggregate_key forwarded_ip, not {self.aggregate_key}")
        if self.forwarded_ip is not None and self.forwarded_ip.position != "FIRST":
            raise ValueError("forwarded_ip.position: rate-based rules use the FIRST address (WAF)")
        return self


class Statement(Model):
    """Exactly one key, naming the statement's type."""

    byte_match: ByteMatch | None = None
    regex_match: RegexMatch | None = None
    size_constraint: SizeConstraint | None = None
    ip_set: IpSetReference | None = None
    label_match: LabelMatch | None = None
    rate_based: RateBased | None = None
    and_: tuple[Statement, ...] | None = Field(None, alias="and", min_length=2)
    or_: tuple[Statement, ...] | None = Field(None, alias="or", min_length=2)
    not_: Statement | None = Field(None, alias="not")

    @model_validator(mode="after")
    def _exactly_one(self) -> Statement:
        given = [name for name in STATEMENTS if self.part(name) is not None]
        if len(given) != 1:
            found = f"got {', '.join(given)}" if given else "got none"
            raise ValueError(f"a statement has exactly one of {', '.join(STATEMENTS)}; {found}")
        return self

    def part(self, name: str) -> Any:
        return statement_part(self, name)

    @property
    def kind(self) -> str:
        return statement_kind(self)


class InsertHeader(Model):
    name: str = Field(pattern=HEADER_NAME)
    value: str = Field(max_length=4096)


class CustomRequest(Model):
    # WAF's CustomRequestHandling: headers added to the request the target gets, named x-amzn-waf-<name>.
    insert_headers: tuple[InsertHeader, ...] = Field((), max_length=20)


class CustomResponse(Model):
    # WAF's CustomResponse: status 200-599, headers, and a body (WAF: up to 4 KB by default). Nothing set:
    # WAF's own 403 page.
    status_code: int | None = Field(None, ge=200, le=599)
    headers: tuple[InsertHeader, ...] = Field((), max_length=20)
    content_type: Literal["text/plain", "text/html", "application/json"] = "text/plain"
    body: str | None = Field(None, max_length=4096)


class Actions(Model):
    """The mapping form of an action: ``{block: {...}}``, ``{allow: {...}}`` or ``{count: {...}}``."""

    allow: CustomRequest | None = None
    block: CustomResponse | None = None
    count: CustomRequest | None = None

    @model_validator(mode="after")
    def _one(self) -> Actions:
        if sum(part is not None for part in (self.allow, self.block, self.count)) != 1:
            raise ValueError("an action has exactly one of allow, block, count")
        return self

    @property
    def kind(self) -> str:
        return action_kind(self)


def _expand(allowed: tuple[str, ...]) -> BeforeValidator:
    """``block`` is short for ``{block: {}}``: an action is its name, or a mapping with its settings."""

    def expand(value: Any) -> Any:
        if isinstance(value, str):
            if value not in allowed:
                raise ValueError(
                    f"must be {', '.join(allowed)} or a mapping such as {{block: {{}}}}, got {value!r}"
                )
            return {value: {}}
        if isinstance(value, dict) and len(value) == 1 and next(iter(value)) not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, got {next(iter(value))!r}")
        return _tuples(value)

    return BeforeValidator(expand)


def _tuples(value: Any) -> Any:
    # What a before-validator returns is validated as Python, where strict mode wants tuples for lists.
    if isinstance(value, dict):
        return {key: _tuples(item) for key, item in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    return value


def _schema(allowed: tuple[str, ...]) -> WithJsonSchema:
    return WithJsonSchema({"anyOf": [{"enum": list(allowed)}, {"type": "object", "maxProperties": 1}]})


ACTIONS = ("allow", "block", "count")
Action = Annotated[Actions, _expand(ACTIONS), _schema(ACTIONS)]
DefaultAction = Annotated[Actions, _expand(ACTIONS[:2]), _schema(ACTIONS[:2])]


class Rule(Model):
    name: str = Field(pattern=ACL_NAME)
    priority: int = Field(ge=0, le=2**31 - 1)
    action: Action
    statement: Statement
    rule_labels: tuple[str, ...] = Field((), max_length=100)  # added when the rule matches (WAF RuleLabels)

    @field_validator("rule_labels")
    @classmethod
    def _labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for index, label in enumerate(value):
            if not re.match(LABEL, label) or label.endswith(":"):
                raise ValueError(
                    f"[{index}]: a label is letters, digits, _ - and : between namespaces, got {label!r}"
                )
        return value


class Association(Model):
    """What the ACL protects: a load balancer, an API stage or a distribution, by name."""

    load_balancer: str | None = None
    api: str | None = None
    distribution: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Association:
        if sum(part is not None for part in (self.load_balancer, self.api, self.distribution)) != 1:
            raise ValueError("an association has exactly one of load_balancer, api, distribution")
        return self


class RequestHeaders(Model):
    # lbd's addition: tell targets what WAF decided (off by default; WAF itself only inserts what rules say).
    labels: bool = False  # x-amzn-waf-labels: the labels the request collected
    rule: bool = False  # x-amzn-waf-rule: the rule that decided (or Default_Action)


class WebAcl(Model):
    name: str = Field(pattern=ACL_NAME)
    default_action: DefaultAction = Actions(allow=CustomRequest())
    associations: tuple[Association, ...] = ()
    ip_sets: tuple[IpSet, ...] = ()
    rules: tuple[Rule, ...] = Field((), max_length=1500)
    request_headers: RequestHeaders = RequestHeaders()

    @field_validator("rules")
    @classmethod
    def _unique(cls, rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
        names: dict[str, int] = {}
        priorities: dict[int, int] = {}
        for index, rule in enumerate(rules):
            if rule.name in names:
                raise ValueError(
                    f"[{index}].name: {rule.name!r} is already used by rules[{names[rule.name]}]"
                )
            if rule.priority in priorities:
                first = priorities[rule.priority]
                raise ValueError(f"[{index}].priority: {rule.priority} is already used by rules[{first}]")
            names[rule.name] = priorities[rule.priority] = index
        return rules

    @model_validator(mode="after")
    def _references(self) -> WebAcl:
        sets = {s.name for s in self.ip_sets}
        for index, rule in enumerate(self.rules):
            for path, ref in ip_set_refs(rule.statement, "statement"):
                if ref.name is not None and ref.name not in sets:
                    known = ", ".join(sorted(sets)) or "none"
                    raise ValueError(
                        f"rules[{index}].{path}.name: no ip_set named {ref.name!r} (defined: {known})"
                    )
            for path, _ in _rate_statements(rule.statement, "statement"):
                if path != "statement.rate_based":
                    raise ValueError(
                        f"rules[{index}].{path}: rate_based is only allowed as a rule's own statement"
                    )
        return self


def _rate_statements(statement: Statement, path: str) -> Iterator[tuple[str, RateBased]]:
    for sub_path, sub in walk(statement, path):
        if sub.rate_based is not None:
            yield f"{sub_path}.rate_based", sub.rate_based


def cross_check(
    acls: tuple[WebAcl, ...], load_balancers: dict[str, str], apis: Mapping[str, str] | None = None
) -> Iterator[ConfigIssue]:
    """Names unique, and every load_balancer association names an application load balancer of the file
    (and, with ``apis``, every api association a REST or HTTP API of the file).

    ``load_balancers`` maps each load balancer's name to its type, ``apis`` each API's to its protocol.
    """
    from lbd.config.issues import ConfigIssue

    seen: dict[str, int] = {}
    owner: dict[str, str] = {}
    for i, acl in enumerate(acls):
        where = f"web_acls[{i}]"
        if acl.name in seen:
            yield ConfigIssue(f"{where}.name", f"{acl.name!r} is already used by web_acls[{seen[acl.name]}]")
        seen.setdefault(acl.name, i)
        for j, association in enumerate(acl.associations):
            name = association.load_balancer
            if name is None:
                continue
            path = f"{where}.associations[{j}].load_balancer"
            kind = load_balancers.get(name)
            if kind is None:
                known = ", ".join(sorted(load_balancers)) or "none"
                yield ConfigIssue(path, f"no load balancer named {name!r} (defined: {known})")
            elif kind != "application":
                yield ConfigIssue(
                    path, f"{name!r} is a {kind} load balancer; web ACLs protect application load balancers"
                )
            elif name in owner and owner[name] != acl.name:
                # WAF: a resource is associated with at most one web ACL.
                yield ConfigIssue(path, f"{name!r} is already associated with web ACL {owner[name]!r}")
            else:
                owner[name] = acl.name
        if apis is not None:
            yield from _api_associations(acl, where, apis, owner)


def _api_associations(
    acl: WebAcl, where: str, apis: Mapping[str, str], owner: dict[str, str]
) -> Iterator[ConfigIssue]:
    from lbd.config.issues import ConfigIssue

    for j, association in enumerate(acl.associations):
        name = association.api
        if name is None:
            continue
        path = f"{where}.associations[{j}].api"
        if name not in apis:
            known = ", ".join(sorted(apis)) or "none"
            yield ConfigIssue(path, f"no API named {name!r} (defined: {known})")
        elif apis[name] == "WEBSOCKET":
            # AWS WAF protects REST API stages (lbd: HTTP APIs too), not WebSocket APIs.
            yield ConfigIssue(path, f"{name!r} is a WEBSOCKET API; web ACLs protect REST and HTTP APIs")
        elif owner.get("api:" + name, acl.name) != acl.name:
            # WAF: a resource (here an API's stage) is associated with at most one web ACL.
            yield ConfigIssue(path, f"{name!r} is already associated with web ACL {owner['api:' + name]!r}")
        else:
            owner["api:" + name] = acl.name


RateBased.model_rebuild()
Statement.model_rebuild()


def dump(acl: WebAcl) -> dict[str, Any]:
    """A web ACL as the admin API writes it (and takes it back: ``parse_acl``)."""
    return acl.model_dump(mode="json", by_alias=True, exclude_none=True)


def replace_acl(config_acls: tuple[WebAcl, ...], new: WebAcl) -> tuple[WebAcl, ...]:
    return tuple(new if acl.name == new.name else acl for acl in config_acls)


def parse_acl(body: Any, index: int) -> WebAcl:
    """A web ACL from JSON (the admin API's body), strict as the file is; ConfigError names each key path
    from ``web_acls[index]``."""
    import json

    from pydantic import ValidationError

    from lbd.config.loader import ConfigError, _issues

    try:
        return WebAcl.model_validate_json(json.dumps(body), strict=True)
    except ValidationError as exc:
        raise ConfigError(_issues(exc, "", ("web_acls", index))) from None


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """The config with the admin API's replacement ACLs (by name) in place of the file's."""
    if not overrides:
        return config
    from lbd.config.loader import ConfigError

    acls = config.web_acls
    for index, acl in enumerate(acls):
        if acl.name in overrides:
            acls = replace_acl(acls, parse_acl(overrides[acl.name], index))
    issues = list(cross_check(acls, {lb.name: lb.type for lb in config.load_balancers}, _api_names(config)))
    if issues:
        raise ConfigError(issues)
    from lbd.config.plain import replaced  # the supervisor's config is records (lbd/validator.py)

    return replaced(config, web_acls=acls)


def _api_names(config: Any) -> dict[str, str]:
    return {api.name: api.protocol for api in getattr(config, "apis", ())}
