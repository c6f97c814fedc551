"""What every provider shares: turning what a registry holds into targets, and the provider's state."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from lbd.upstream.registry import target_key

# A provider's complete list: "id:port" -> the target as the config writes it (id, port, zone, weight).
Targets = dict[str, dict[str, Any]]


class InvalidTarget(ValueError):
    """A registry entry that is not a target."""


def as_target(item: Any, *, zone: str, port: int | None = None) -> dict[str, Any]:
    """A target from a registry entry, with the node's zone (and the group's port) where it has none."""
    if not isinstance(item, dict):
        raise InvalidTarget('must be a JSON object such as {"id": "10.0.0.5", "port": 80}')
    full = {"zone": zone, **item}
    if "port" not in full and port is not None:
        full["port"] = port
    # The schema's model checks it, loaded with the first target a provider finds (lbd/validator.py).
    from pydantic import ValidationError

    from lbd.config.schema import Target

    try:
        return Target.model_validate(full).model_dump()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'target'}: {str(e['msg']).removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise InvalidTarget(problems) from None


def keyed(targets: list[dict[str, Any]]) -> Targets:
    return {target_key(t["id"], t["port"]): t for t in targets}


@dataclass
class ProviderState:
    """What the admin API and the metrics say about one provider."""

    target_group: str
    type: str  # "dns" | "etcd"
    source: str  # the name resolved or the key prefix watched
    up: bool = False  # the last attempt succeeded
    errors: int = 0  # failed attempts since start (lbd_discovery_errors_total)
    last_error: str = ""
    last_success: float | None = None  # wall clock
    last_change: float | None = None
    targets: int = 0
    invalid: dict[str, str] = field(default_factory=dict)  # registry entry -> why it is not a target

    def succeeded(self, count: int) -> None:
        self.up = True
        self.last_success = time.time()
        self.targets = count

    def failed(self, message: str) -> None:
        self.up = False
        self.errors += 1
        self.last_error = message

    def describe(self) -> dict[str, Any]:
        return {
            "target_group": self.target_group,
            "type": self.type,
            "source": self.source,
            "state": "up" if self.up else ("failing" if self.errors else "starting"),
            "targets": self.targets,
            "errors": self.errors,
            "last_error": self.last_error or None,
            "last_success": self.last_success,
            "last_change": self.last_change,
            "invalid": dict(self.invalid),
            # A failing provider's targets are the last ones it found: they keep serving.
            "note": None if self.up or not self.errors else "keeping the last known targets",
        }
