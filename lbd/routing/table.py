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
    """Rules in priority order, with a path gate and a host gate in front of them.

    Most rules name a path pattern or a host, and most requests match few of them. All the path patterns
    of a table are compiled into one byte-level matcher (the path gate: one set lookup, one ``startswith``
    over a tuple, one regex for the rest), and the hosts of the rules that name no path into another (the
    host gate). When a request's path passes no rule's pattern, every rule with a path condition is
    skipped without being looked at; when its host passes no gate host, so is every rule gated by its
    host; only the others are evaluated, in priority order. A rule's conditions are ANDed, so skipping is
    exact, not a heuristic. ``no_rule_for`` asks the path gate alone, on the request target's bytes,
    before any view of the request is built.
    """

    __slots__ = ("_candidates", "_gate", "_host_gate", "default", "rules")

    def __init__(self, listener: Listener, target_groups: Mapping[str, G], sealer: CookieSealer) -> None:
        # Lowest priority number first (ALB); the config keeps the file's order.
        ordered = sorted(listener.rules, key=lambda r: r.priority)
        self.rules: tuple[tuple[int, Predicate, CompiledAction[G]], ...] = tuple(
            (
                rule.priority,
                compile_conditions(rule.conditions),
                compile_action(rule.actions[-1], target_groups, sealer),
            )
            for rule in ordered
        )
        self.default: CompiledAction[G] = compile_action(listener.default_actions[-1], target_groups, sealer)
        paths: list[str] = []
        hosts: list[str] = []
        gates: list[str] = []  # per rule: the gate that can skip it
        for rule in ordered:
            by_field = {c.field: c.values for c in rule.conditions}
            if "path-pattern" in by_field:
                # Conditions on one field are ANDed: passing any one is necessary, so it gates the rule.
                paths += by_field["path-pattern"]
                gates.append("path")
            elif "host-header" in by_field:
                hosts += by_field["host-header"]
                gates.append("host")
            else:
                gates.append("")
        self._gate = BytesMatcher(ValueMatcher(paths, ignore_case=False)) if paths else None
        self._host_gate = BytesMatcher(ValueMatcher(hosts, ignore_case=True)) if hosts else None
        # The rules to evaluate, indexed by 2 * (path gate open) + (host gate open).
        self._candidates = tuple(
            tuple(
                compiled
                for compiled, gate in zip(self.rules, gates, strict=True)
                if not gate or (gate == "path" and path_open) or (gate == "host" and host_open)
            )
            for path_open, host_open in ((False, False), (False, True), (True, False), (True, True))
        )

    @property
    def has_rules(self) -> bool:
        return bool(self.rules)

    @property
    def path_gate(self) -> BytesMatcher | None:
        """When every rule has a path condition, the path gate: a request whose path (``request_path``) it
        refuses matches no rule, whatever else it carries, and gets the default action."""
        return self._gate if self._host_gate is None and not self._candidates[0] else None

    def no_rule_for(self, url: bytes) -> bool:
        """True when no rule can match a request for ``url`` (see ``path_gate``)."""
        gate = self.path_gate
        return gate is not None and not gate.matches(request_path(url))

    def match(self, request: RequestView) -> tuple[int, CompiledAction[G]]:
        """The first rule whose conditions all hold, as (priority, action); priority 0 is the default."""
        gate = self._gate
        host_gate = self._host_gate
        path_open = gate is not None and gate.matches(request.raw_path)
        host_open = host_gate is not None and host_gate.matches(request.host_key)
        for priority, predicate, action in self._candidates[2 * path_open + host_open]:
            if predicate(request):
                return priority, action
        return 0, self.default
