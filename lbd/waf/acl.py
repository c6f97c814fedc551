"""A web ACL, compiled once per Snapshot, and its evaluation: one call per request, before listener rules.

Evaluation follows WAF (AWS WAF Developer Guide, "How AWS WAF processes a web ACL"): rules in priority
order; a matching rule adds its labels, then allow or block ends the evaluation and count goes on to the
next rule; when no rule ends it, the default action applies (WAF logs it as ``Default_Action``).

The entry point is ``CompiledAcl.evaluate(request, now)`` with a ``WafRequest`` (lbd/waf/request.py): an
ALB listener, an API stage or a distribution builds one from its own parse and calls the same method.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lbd.config.web_acl_reading import action_kind, statement_part, walk
from lbd.waf.ipsets import IpMatcher
from lbd.waf.plan import FieldPlan
from lbd.waf.rate import RateStore, WindowCounter
from lbd.waf.request import UNSET, WafRequest
from lbd.waf.statements import Compiler, ContainsMatcher, Matcher

if TYPE_CHECKING:
    # Models or their plain records (lbd/config/plain.py): workers never import pydantic.
    from lbd.config import web_acls as model

DEFAULT_ACTION = "Default_Action"
HEADER_PREFIX = b"x-amzn-waf-"  # WAF names inserted request headers x-amzn-waf-<name>


@dataclass(frozen=True, slots=True)
class BlockResponse:
    """A custom response (WAF's CustomResponse); None on a verdict means WAF's default 403 page."""

    status: int
    headers: tuple[tuple[str, str], ...]
    content_type: str
    body: bytes


class Verdict:
    """What a request gets from a web ACL (an extension type when compiled: acl.pxd)."""

    def __init__(
        self,
        action: str,  # "allow" | "block"
        rule: str,  # the rule that ended the evaluation, or Default_Action
        labels: list[str],
        response: BlockResponse | None = None,  # block with a custom response; None: WAF's 403 page
        headers: bytes = b"",  # field lines for the target (allow): x-amzn-waf-*
    ) -> None:
        self.action = action
        self.rule = rule
        self.labels = labels
        self.response = response
        self.headers = headers


class WafStats:
    """Per worker and web ACL: requests allowed, blocked and counted, by rule (CloudWatch AllowedRequests,
    BlockedRequests, CountedRequests). Plain integers; the supervisor sums workers at scrape time."""

    def __init__(self) -> None:
        self.allowed: dict[str, int] = {}
        self.blocked: dict[str, int] = {}
        self.counted: dict[str, int] = {}

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {"allowed": dict(self.allowed), "blocked": dict(self.blocked), "counted": dict(self.counted)}


class WafState:
    """What outlives a Snapshot in one worker: counters and rate windows, by web ACL (and rule)."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self.stats: dict[str, WafStats] = {}
        self._stores: dict[tuple[str, str, int, object], RateStore] = {}
        # A fleet-wide store maker (shared_state.redis: lbd/gateway/redis_rates.py), set by the front end,
        # and what identifies it (its settings): stores are kept per rule and per shared state.
        self.shared: Callable[[str, str, model.RateBased], RateStore] | None = None
        self.shared_key: object = None

    def acl_stats(self, acl: str) -> WafStats:
        stats = self.stats.get(acl)
        if stats is None:
            stats = self.stats[acl] = WafStats()
        return stats

    def rate_store(self, acl: str, rule: str) -> Callable[[model.RateBased], RateStore]:
        def make(spec: model.RateBased) -> RateStore:
            # Kept across reloads while the rule keeps its name and window, so a reload is no way out.
            key = (acl, rule, spec.window_seconds, self.shared_key)
            store = self._stores.get(key)
            if store is None:
                shared = self.shared
                made = WindowCounter(spec.window_seconds) if shared is None else shared(acl, rule, spec)
                store = self._stores[key] = made
            return store

        return make

    def sweep(self, now: float) -> None:
        for store in self._stores.values():
            store.sweep(now)

    def report(self) -> list[dict[str, object]]:
        return [{"web_acl": name, **stats.as_dict()} for name, stats in self.stats.items()]


class CompiledRule:
    def __init__(self, rule: model.Rule, matcher: Matcher) -> None:
        self.name = rule.name
        self.matcher = matcher
        self.labels = rule.rule_labels
        self.action, self.response, self.insert = _action(rule.action)


def _action(action: model.Actions) -> tuple[str, BlockResponse | None, bytes]:
    if action.block is not None:
        custom = action.block
        if custom.status_code is None and custom.body is None and not custom.headers:
            return "block", None, b""  # WAF's default 403 page
        return (
            "block",
            BlockResponse(
                custom.status_code or 403,
                tuple((h.name, h.value) for h in custom.headers),
                custom.content_type,
                (custom.body or "").encode("utf-8"),
            ),
            b"",
        )
    handling = action.allow or action.count
    assert handling is not None
    return action_kind(action), None, _insert_headers(handling.insert_headers)


def _insert_headers(headers: tuple[model.InsertHeader, ...]) -> bytes:
    return b"".join(
        HEADER_PREFIX + h.name.lower().encode() + b": " + h.value.encode("latin-1") + b"\r\n" for h in headers
    )


class NeedleRun:
    """Consecutive rules that each look for a literal in the same field and nothing else (top-level
    ``byte_match`` CONTAINS on one plan slot, not the body): one search for any of their literals first.
    When none occurs, none of the rules matches, so none adds labels, counts or ends the evaluation, and
    all are passed at once (an allowed request, the common case, pays one search instead of one per rule);
    when one occurs, the rules are evaluated one by one, in priority order, as always."""

    def __init__(self, plan: FieldPlan, index: int, needles: list[bytes], end: int) -> None:
        self.plan = plan
        self.index = index
        self.unset = UNSET
        self.end = end  # the position of the first rule after the run
        # sre factors a common prefix out of the alternatives and scans for it like bytes.find.
        self.search = re.compile(b"|".join(re.escape(needle) for needle in needles)).search

    def occurs(self, request: WafRequest) -> bool:
        value = request.values[self.index]
        if value is self.unset:
            value = self.plan.value(request, self.index)
        return value is not None and self.search(value) is not None  # type: ignore[call-overload]


def needle_runs(plan: FieldPlan, rules: list[CompiledRule], shortest: int = 3) -> list[NeedleRun | None]:
    """For each rule position, the NeedleRun that starts there (of at least ``shortest`` rules), or None."""
    runs: list[NeedleRun | None] = [None] * len(rules)
    start = 0
    while start < len(rules):
        first = rules[start].matcher
        end = start
        while end < len(rules) and _plain_contains(rules[end].matcher, first):
            end += 1
        if end - start >= shortest:
            needles = [rules[at].matcher.needle for at in range(start, end)]  # type: ignore[attr-defined]
            runs[start] = NeedleRun(plan, first.index, needles, end)  # type: ignore[attr-defined]
        start = max(end, start + 1)
    return runs


def _plain_contains(matcher: Matcher, first: Matcher) -> bool:
    return (
        type(matcher) is ContainsMatcher
        and type(first) is ContainsMatcher
        and not matcher.needs_body
        and matcher.index == first.index
    )


class CompiledAcl:
    def __init__(
        self,
        acl: model.WebAcl,
        ip_files: Mapping[str, tuple[str, ...]],
        state: WafState,
    ) -> None:
        self.name = acl.name
        self.stats = state.acl_stats(acl.name)
        named = {
            s.name: IpMatcher(s.addresses if s.addresses is not None else ip_files[s.file or ""])
            for s in acl.ip_sets
        }
        files = {path: IpMatcher(cidrs) for path, cidrs in ip_files.items()}
        self.rules: list[CompiledRule] = []
        self.plan = FieldPlan()  # the fields its statements inspect, one slot per transformation prefix
        for rule in sorted(acl.rules, key=lambda r: r.priority):
            compiler = Compiler(named, files, state.rate_store(acl.name, rule.name), state.workers, self.plan)
            self.rules.append(CompiledRule(rule, compiler.compile(rule.statement)))
        self.runs = needle_runs(self.plan, self.rules)
        default = acl.default_action
        self.default_action, self.default_response, self.default_headers = _action(default)
        self.needs_body = any(rule.matcher.needs_body for rule in self.rules)
        statements = [sub for rule in acl.rules for _, sub in walk(rule.statement, "statement")]
        fields = [
            statement_part(sub, kind).field
            for sub in statements
            for kind in ("byte_match", "regex_match", "size_constraint")
            if statement_part(sub, kind) is not None
        ]
        # Whether any statement looks at the body at all (its bytes, or only its size), or at headers: a
        # front end that has not parsed them (ALB's fast path) need not, when none does.
        self.body_field = "body" in fields
        self.uses_headers = (
            "single_header" in fields
            or any(sub.ip_set is not None and sub.ip_set.forwarded_ip is not None for sub in statements)
            or any(
                sub.rate_based is not None and sub.rate_based.aggregate_key in ("forwarded_ip", "header")
                for sub in statements
            )
        )
        self.label_header = acl.request_headers.labels
        self.rule_header = acl.request_headers.rule
        # The default allow of a request no rule labelled or counted is the same every time: made once.
        self.default_allow: Verdict | None = None
        if self.default_action == "allow":
            headers = self.default_headers
            if self.rule_header:
                headers += HEADER_PREFIX + b"rule: " + DEFAULT_ACTION.encode() + b"\r\n"
            self.default_allow = Verdict("allow", DEFAULT_ACTION, [], None, headers)

    def evaluate(self, request: WafRequest, now: float) -> Verdict:
        stats = self.stats
        extra = b""
        self.plan.begin(request)
        rules = self.rules
        runs = self.runs
        at = 0
        while at < len(rules):
            run = runs[at]
            if run is not None and not run.occurs(request):
                at = run.end
                continue
            rule = rules[at]
            at += 1
            if not rule.matcher.match(request, now):
                continue
            if rule.labels:
                request.labels.extend(rule.labels)
            if rule.action == "count":
                stats.counted[rule.name] = stats.counted.get(rule.name, 0) + 1
                extra += rule.insert  # WAF: a count rule's inserted headers go with the request
                continue
            return self._end(request, rule.action, rule.name, rule.response, extra + rule.insert)
        if self.default_allow is not None and not extra and not request.labels:
            self.stats.allowed[DEFAULT_ACTION] = self.stats.allowed.get(DEFAULT_ACTION, 0) + 1
            return self.default_allow
        return self._end(
            request, self.default_action, DEFAULT_ACTION, self.default_response, extra + self.default_headers
        )

    def _end(
        self, request: WafRequest, action: str, rule: str, response: BlockResponse | None, headers: bytes
    ) -> Verdict:
        counts = self.stats.blocked if action == "block" else self.stats.allowed
        counts[rule] = counts.get(rule, 0) + 1
        if action == "block":
            return Verdict("block", rule, request.labels, response)
        if self.label_header and request.labels:
            headers += HEADER_PREFIX + b"labels: " + ",".join(request.labels).encode() + b"\r\n"
        if self.rule_header:
            headers += HEADER_PREFIX + b"rule: " + rule.encode() + b"\r\n"
        return Verdict("allow", rule, request.labels, None, headers)
