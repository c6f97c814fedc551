"""``GET /v1/fleet``: what this node believes, so that an operator comparing nodes can see them disagree.

For each target group: its targets and two Maglev table digests (lbd/upstream/maglev.py). ``registered``
is the table over every target the group has that is not draining: nodes with the same registrations
(file, admin API, discovery) show the same digest. ``serving`` is the table over the targets this node
sends new flows to now (its health checker's verdicts, its zone when cross-zone is off): nodes that show
the same one send each flow hash to the same target. Workers may differ from it for a moment where they
eject a target for failed requests (passive outlier detection, per worker).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from lbd.runtime import _inherited_cross_zone
from lbd.upstream.maglev import DEFAULT_TABLE_SIZE, MaglevTable
from lbd.upstream.registry import target_key

if TYPE_CHECKING:
    from lbd.config.schema import Config, TargetGroup

_DIGESTS: dict[tuple[tuple[bytes, int], ...], str] = {}
_KEPT = 64


def table_digest(members: list[tuple[str, int]]) -> str | None:
    """The digest of the Maglev table over (``id:port``, weight) pairs; None for no target with a weight."""
    chosen = tuple(sorted((key.encode(), weight) for key, weight in members if weight > 0))
    if not chosen:
        return None
    digest = _DIGESTS.get(chosen)
    if digest is None:
        if len(_DIGESTS) >= _KEPT:
            _DIGESTS.clear()
        table = MaglevTable(
            [name for name, _ in chosen], [weight for _, weight in chosen], DEFAULT_TABLE_SIZE
        )
        digest = _DIGESTS[chosen] = table.digest()
    return digest


def group_view(
    group: TargetGroup, node_zone: str, cross_zone: bool, verdicts: dict[str, bool], draining: set[str]
) -> dict[str, Any]:
    targets = []
    registered: list[tuple[str, int, str]] = []
    in_service: list[tuple[str, int, str]] = []
    for target in group.targets:
        key = target_key(target.id, target.port)
        if key in draining:
            state = "draining"
        else:
            verdict = verdicts.get(key) if group.health_check.enabled else True
            state = "initial" if verdict is None else ("healthy" if verdict else "unhealthy")
            if target.weight > 0:
                registered.append((key, target.weight, target.zone))
                if verdict:
                    in_service.append((key, target.weight, target.zone))
        targets.append(
            {
                "id": target.id,
                "port": target.port,
                "zone": target.zone,
                "weight": target.weight,
                "state": state,
            }
        )
    # Fail open as the workers do (lbd/runtime.py TargetGroupRuntime.refresh): too few healthy targets and
    # every registered one takes traffic (targets still initial are not healthy yet).
    minimum = group.minimum_healthy_targets
    needed = minimum.count
    if minimum.percentage is not None:
        needed = max(needed, math.ceil(len(registered) * minimum.percentage / 100))
    if len(in_service) < needed:
        in_service = registered
    local = [entry for entry in in_service if entry[2] == node_zone]
    serving = in_service if cross_zone or not local else local
    return {
        "name": group.name,
        "algorithm": group.algorithm,
        "cross_zone": cross_zone,
        "targets": targets,
        "maglev": {
            "table_size": DEFAULT_TABLE_SIZE,
            "registered_digest": table_digest([(key, weight) for key, weight, _ in registered]),
            "serving_digest": table_digest([(key, weight) for key, weight, _ in serving]),
            "serving": sorted(key for key, _, _ in serving),
        },
    }


def fleet_view(
    config: Config, generation: int, routable: dict[str, dict[str, bool]], draining: set[tuple[str, str]]
) -> dict[str, Any]:
    """``config`` with the registrations applied (apply_overlay); ``routable`` the checker's verdicts."""
    inherited = _inherited_cross_zone(config)
    groups = []
    for group in config.target_groups:
        cross_zone = (
            group.cross_zone if isinstance(group.cross_zone, bool) else inherited.get(group.name, True)
        )
        drained = {key for name, key in draining if name == group.name}
        groups.append(group_view(group, config.node.zone, cross_zone, routable.get(group.name, {}), drained))
    return {"node": {"zone": config.node.zone, "generation": generation}, "target_groups": groups}
