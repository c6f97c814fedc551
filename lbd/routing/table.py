"""A listener's rules compiled into a table: conditions and actions in priority order, the default
action last (ALB evaluates rules lowest priority number first; the default rule has no conditions)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from lbd.config.schema import Listener
from lbd.routing.actions import CompiledAction, compile_action
from lbd.routing.conditions import Predicate, compile_conditions
from lbd.routing.stickiness import CookieSealer

if TYPE_CHECKING:
    from lbd.routing.request import RequestView
    from lbd.runtime import TargetGroupRuntime


class RuleTable:
    __slots__ = ("default", "rules")

    def __init__(
        self, listener: Listener, target_groups: Mapping[str, TargetGroupRuntime], sealer: CookieSealer
    ) -> None:
        # Lowest priority number first (ALB); the config keeps the file's order.
        self.rules: tuple[tuple[int, Predicate, CompiledAction], ...] = tuple(
            (
                rule.priority,
                compile_conditions(rule.conditions),
                compile_action(rule.actions[-1], target_groups, sealer),
            )
            for rule in sorted(listener.rules, key=lambda r: r.priority)
        )
        self.default: CompiledAction = compile_action(listener.default_actions[-1], target_groups, sealer)

    @property
    def has_rules(self) -> bool:
        return bool(self.rules)

    def match(self, request: RequestView) -> tuple[int, CompiledAction]:
        """The first rule whose conditions all hold, as (priority, action); priority 0 is the default."""
        for priority, predicate, action in self.rules:
            if predicate(request):
                return priority, action
        return 0, self.default
