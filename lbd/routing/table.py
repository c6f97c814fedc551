"""A listener's rules compiled into a table: conditions and actions in priority order, the default
action last (ALB evaluates rules lowest priority number first; the default rule has no conditions)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Generic

from lbd.routing.actions import CompiledAction, G, compile_action
from lbd.routing.conditions import BytesMatcher, Predicate, ValueMatcher, compile_conditions
from lbd.routing.request import request_path
from lbd.routing.stickiness import CookieSealer

if TYPE_CHECKING:
    from lbd.config.schema import Listener
    from lbd.routing.request import RequestView


class RuleTable(Generic[G]):
    """Rules in priority order, with a path gate in front of them.

    Most rules name a path pattern, and most requests match none of them. All the path patterns of a
    table are compiled into one byte-level matcher (the gate: one set lookup, one ``startswith`` over a
    tuple, one regex for the rest): when a request's path passes no rule's pattern, every rule with a path
    condition is skipped without being looked at, and only the rules without one are evaluated. A rule's
    conditions are ANDed, so skipping is exact, not a heuristic. ``no_rule_for`` asks the gate alone, on
    the request target's bytes, before any view of the request is built.
    """

    __slots__ = ("_gate", "_ungated", "default", "rules")

    def __init__(self, listener: Listener, target_groups: Mapping[str, G], sealer: CookieSealer) -> None:
        # Lowest priority number first (ALB); the config keeps the file's order.
        self.rules: tuple[tuple[int, Predicate, CompiledAction[G]], ...] = tuple(
            (
                rule.priority,
                compile_conditions(rule.conditions),
                compile_action(rule.actions[-1], target_groups, sealer),
            )
            for rule in sorted(listener.rules, key=lambda r: r.priority)
        )
        self.default: CompiledAction[G] = compile_action(listener.default_actions[-1], target_groups, sealer)
        gated: list[str] = []
        ungated = []
        for rule, compiled in zip(sorted(listener.rules, key=lambda r: r.priority), self.rules, strict=True):
            paths = [c.values for c in rule.conditions if c.field == "path-pattern"]
            if paths:
                gated += paths[0]
            else:
                ungated.append(compiled)
        self._gate = BytesMatcher(ValueMatcher(gated, ignore_case=False)) if gated else None
        self._ungated = tuple(ungated)  # the rules to evaluate when the gate is closed

    @property
    def has_rules(self) -> bool:
        return bool(self.rules)

    @property
    def path_gate(self) -> BytesMatcher | None:
        """When every rule has a path condition, the gate: a request whose path (``request_path``) it
        refuses matches no rule, whatever else it carries, and gets the default action."""
        return self._gate if not self._ungated else None

    def no_rule_for(self, url: bytes) -> bool:
        """True when no rule can match a request for ``url`` (see ``path_gate``)."""
        gate = self.path_gate
        return gate is not None and not gate.matches(request_path(url))

    def match(self, request: RequestView) -> tuple[int, CompiledAction[G]]:
        """The first rule whose conditions all hold, as (priority, action); priority 0 is the default."""
        gate = self._gate
        rules = self.rules if gate is None or gate.matches(request.raw_path) else self._ungated
        for priority, predicate, action in rules:
            if predicate(request):
                return priority, action
        return 0, self.default
