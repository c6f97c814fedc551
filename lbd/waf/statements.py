"""Rule statements compiled once per Snapshot into matchers: ``match(request, now) -> bool``.

Semantics are WAF's (AWS WAF Developer Guide, "Rule statements"): a match statement on a field the request
lacks (a header not sent) does not match; a body larger than WAF inspects follows the statement's oversize
handling; ``and``/``or`` stop at the first statement that decides.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from lbd.config.web_acl_reading import statement_kind, statement_part
from lbd.waf.ipsets import IpMatcher
from lbd.waf.plan import FieldPlan
from lbd.waf.rate import RateStore
from lbd.waf.request import UNSET, FieldKey, WafRequest
from lbd.waf.transforms import chain

if TYPE_CHECKING:
    # Models or their plain records (lbd/config/plain.py): workers never import pydantic.
    from lbd.config import web_acls as model

_WORD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


class Matcher:
    """A compiled statement (an extension type when compiled: statements.pxd)."""

    def __init__(self) -> None:
        self.needs_body = False  # whether it inspects the body's bytes

    def match(self, request: WafRequest, now: float) -> bool:
        raise NotImplementedError


class FieldMatcher(Matcher):
    """Byte, regex and size statements: a field after its transformations (the ACL plan's slot), then one
    test on its bytes."""

    def __init__(self, spec: model.FieldMatch, test: Callable[[bytes], bool], plan: FieldPlan) -> None:
        super().__init__()
        header = spec.header.lower().encode() if spec.header else None
        self.key: FieldKey = (spec.field, header, chain(spec.transformations))
        self.plan = plan
        self.index = plan.slot(self.key)
        self.unset = UNSET
        self.test = test
        self.needs_body = spec.field == "body"
        self.oversize = spec.oversize_handling

    def match(self, request: WafRequest, now: float) -> bool:
        if self.needs_body and request.body_oversize and self.oversize != "CONTINUE":
            return self.oversize == "MATCH"
        value = request.values[self.index]  # the common case: a field another rule transformed
        if value is self.unset:
            value = self.plan.value(request, self.index)
        return value is not None and self.test(value)  # type: ignore[arg-type]


class ContainsMatcher(FieldMatcher):
    """``byte_match`` CONTAINS, the commonest statement, tested inline (no second call per rule)."""

    def __init__(self, spec: model.ByteMatch, plan: FieldPlan) -> None:
        self.needle = needle = spec.value.encode("utf-8")
        super().__init__(spec, lambda value: value.find(needle) >= 0, plan)

    def match(self, request: WafRequest, now: float) -> bool:
        if self.needs_body and request.body_oversize and self.oversize != "CONTINUE":
            return self.oversize == "MATCH"
        value = request.values[self.index]
        if value is self.unset:
            value = self.plan.value(request, self.index)
        # find, not "in": bytes.__contains__ first tries the needle as an int, raising and clearing a
        # TypeError each time (CPython's bytes_contains).
        return value is not None and value.find(self.needle) >= 0  # type: ignore[attr-defined]


def byte_matcher(spec: model.ByteMatch, plan: FieldPlan) -> FieldMatcher:
    if spec.positional == "CONTAINS":
        return ContainsMatcher(spec, plan)
    needle = spec.value.encode("utf-8")
    tests: Mapping[str, Callable[[bytes], bool]] = {
        "EXACTLY": needle.__eq__,
        "STARTS_WITH": lambda value: value.startswith(needle),
        "ENDS_WITH": lambda value: value.endswith(needle),
        "CONTAINS": lambda value: value.find(needle) >= 0,
        "CONTAINS_WORD": lambda value: _contains_word(value, needle),
    }
    return FieldMatcher(spec, tests[spec.positional], plan)


def _contains_word(value: bytes, needle: bytes) -> bool:
    # WAF: the value is at the start or after a character that is not alphanumeric or "_", and at the end
    # or before one.
    at = value.find(needle)
    while at >= 0:
        end = at + len(needle)
        if (at == 0 or value[at - 1] not in _WORD) and (end == len(value) or value[end] not in _WORD):
            return True
        at = value.find(needle, at + 1)
    return False


class RegexMatcher(FieldMatcher):
    """``regex_match``: the pattern compiled once per Snapshot, its search called inline."""

    def __init__(self, spec: model.RegexMatch, plan: FieldPlan) -> None:
        self.search = search = re.compile(spec.pattern.encode("utf-8")).search
        super().__init__(spec, lambda value: search(value) is not None, plan)
        self.matches_empty = search(b"") is not None  # an empty field (no query string): decided here

    def match(self, request: WafRequest, now: float) -> bool:
        value = request.values[self.index]
        if value is self.unset:
            value = self.plan.value(request, self.index)
        if value is None:
            return False
        if not value:
            return self.matches_empty
        return self.search(value) is not None  # type: ignore[call-overload]


def regex_matcher(spec: model.RegexMatch, plan: FieldPlan) -> FieldMatcher:
    if spec.field == "body":
        # The body's oversize handling comes first (FieldMatcher.match).
        search = re.compile(spec.pattern.encode("utf-8")).search
        return FieldMatcher(spec, lambda value: search(value) is not None, plan)
    return RegexMatcher(spec, plan)


_COMPARE: Mapping[str, Callable[[int, int], bool]] = {
    "EQ": operator.eq,
    "NE": operator.ne,
    "LE": operator.le,
    "LT": operator.lt,
    "GE": operator.ge,
    "GT": operator.gt,
}


class SizeMatcher(FieldMatcher):
    def __init__(self, spec: model.SizeConstraint, plan: FieldPlan) -> None:
        compare, size = _COMPARE[spec.comparison], spec.size
        super().__init__(spec, lambda value: compare(len(value), size), plan)
        self.compare = compare
        self.size: int = size
        # The body's size is known from its framing without reading it: only a transformed body needs it.
        self.whole_body = spec.field == "body" and not self.key[2]
        self.needs_body = self.needs_body and not self.whole_body

    def match(self, request: WafRequest, now: float) -> bool:
        if self.whole_body:
            # CONTINUE: compare the whole body's size (Content-Length), which WAF's inspection limit
            # does not cut; MATCH and NO_MATCH decide an oversize body outright.
            if request.body_oversize and self.oversize != "CONTINUE":
                return self.oversize == "MATCH"
            return self.compare(request.body_size, self.size)
        return FieldMatcher.match(self, request, now)  # no zero-argument super() in compiled methods


class IpSetMatcher(Matcher):
    def __init__(self, addresses: IpMatcher, forwarded: model.ForwardedIp | None) -> None:
        super().__init__()
        self.addresses = addresses
        self.forwarded = forwarded
        self.header = forwarded.header_name.lower().encode() if forwarded else b""

    def match(self, request: WafRequest, now: float) -> bool:
        forwarded = self.forwarded
        if forwarded is None:
            return self.addresses.contains(request.address())
        listed = request.forwarded(self.header)
        if not listed or (
            forwarded.position != "ANY" and listed[0 if forwarded.position == "FIRST" else -1] is None
        ):
            return forwarded.fallback == "MATCH"  # WAF: no (valid) address in the header
        if forwarded.position == "FIRST":
            return self.addresses.contains(listed[0])
        if forwarded.position == "LAST":
            return self.addresses.contains(listed[-1])
        for address in listed:  # noqa: SIM110 (a loop, not any(): no closures in compiled methods)
            if self.addresses.contains(address):
                return True
        return False


class LabelMatcher(Matcher):
    def __init__(self, spec: model.LabelMatch) -> None:
        super().__init__()
        self.key = spec.key
        self.namespace = spec.scope == "NAMESPACE"

    def match(self, request: WafRequest, now: float) -> bool:
        if not self.namespace:
            return self.key in request.labels
        for label in request.labels:  # noqa: SIM110
            if label.startswith(self.key):
                return True
        return False


class AndMatcher(Matcher):
    def __init__(self, parts: list[Matcher]) -> None:
        super().__init__()
        self.parts = parts
        self.needs_body = any(p.needs_body for p in parts)

    def match(self, request: WafRequest, now: float) -> bool:
        for part in self.parts:  # noqa: SIM110
            if not part.match(request, now):
                return False
        return True


class OrMatcher(AndMatcher):
    def match(self, request: WafRequest, now: float) -> bool:
        for part in self.parts:  # noqa: SIM110
            if part.match(request, now):
                return True
        return False


class NotMatcher(Matcher):
    def __init__(self, part: Matcher) -> None:
        super().__init__()
        self.part = part
        self.needs_body = part.needs_body

    def match(self, request: WafRequest, now: float) -> bool:
        return not self.part.match(request, now)


class RateMatcher(Matcher):
    """Over the limit for this request's key (after the scope-down statement, if any)."""

    def __init__(
        self, spec: model.RateBased, scope_down: Matcher | None, store: RateStore, workers: int
    ) -> None:
        super().__init__()
        self.scope_down = scope_down
        self.store = store
        # Per worker: each counts the requests it serves (docs/waf.md, "Rate-based rules"); a fleet-wide
        # store (shared_state.redis) counts every worker's and node's, against the whole limit.
        shared = getattr(store, "fleet_wide", False)
        self.limit = spec.limit if shared else math.ceil(spec.limit / max(1, workers))
        self.key_kind = spec.aggregate_key
        forwarded = spec.forwarded_ip
        self.forwarded_header = (forwarded.header_name if forwarded else "X-Forwarded-For").lower().encode()
        self.fallback_match = forwarded is not None and forwarded.fallback == "MATCH"
        self.header = spec.header.lower().encode() if spec.header else b""
        self.needs_body = scope_down is not None and scope_down.needs_body

    def key(self, request: WafRequest) -> str | None:
        kind = self.key_kind
        if kind == "ip":
            return request.client
        if kind == "forwarded_ip":
            listed = request.forwarded(self.forwarded_header)
            return str(listed[0]) if listed and listed[0] is not None else None
        if kind == "header":
            value = request.header(self.header)
            return value.decode("latin-1") if value is not None else None
        if kind == "api_key":
            return request.api_key
        return ""  # constant: every request in one count

    def match(self, request: WafRequest, now: float) -> bool:
        if self.scope_down is not None and not self.scope_down.match(request, now):
            return False
        key = self.key(request)
        if key is None:
            # WAF: without the key (no forwarded address, no such header) the request is not counted;
            # forwarded_ip's fallback MATCH applies the rule's action instead.
            return self.fallback_match
        return self.store.hit(key, now) > self.limit


class Compiler:
    """Turns config statements into matchers; ``ip_sets`` are the ACL's named sets, resolved."""

    def __init__(
        self,
        ip_sets: Mapping[str, IpMatcher],
        file_sets: Mapping[str, IpMatcher],
        rate_store: Callable[[model.RateBased], RateStore],
        workers: int,
        plan: FieldPlan,
    ) -> None:
        self.plan = plan  # the ACL's field slots, shared by all its rules
        self.ip_sets = ip_sets
        self.file_sets = file_sets
        self.rate_store = rate_store
        self.workers = workers

    def compile(self, statement: model.Statement) -> Matcher:
        kind = statement_kind(statement)
        part = statement_part(statement, kind)
        if kind == "byte_match":
            return byte_matcher(part, self.plan)
        if kind == "regex_match":
            return regex_matcher(part, self.plan)
        if kind == "size_constraint":
            return SizeMatcher(part, self.plan)
        if kind == "label_match":
            return LabelMatcher(part)
        if kind == "ip_set":
            return IpSetMatcher(self._addresses(part), part.forwarded_ip)
        if kind == "rate_based":
            scope = self.compile(part.scope_down) if part.scope_down is not None else None
            return RateMatcher(part, scope, self.rate_store(part), self.workers)
        if kind == "not":
            return NotMatcher(self.compile(part))
        parts = [self.compile(sub) for sub in part]
        return AndMatcher(parts) if kind == "and" else OrMatcher(parts)

    def _addresses(self, ref: model.IpSetReference) -> IpMatcher:
        if ref.name is not None:
            return self.ip_sets[ref.name]
        if ref.file is not None:
            return self.file_sets[ref.file]
        return IpMatcher(ref.addresses or ())
