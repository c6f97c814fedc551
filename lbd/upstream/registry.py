"""Runtime target registrations (the admin API's RegisterTargets / DeregisterTargets) and draining.

The config file lists a target group's targets; the admin API can add and remove targets at runtime.
Those changes are an *overlay* on the config: kept by the supervisor, written to a state file so that
they survive reload and restart (DESIGN.md section 5), and sent to workers with every config
generation. A target that leaves a group, whether deregistered through the API or dropped from the file
by a reload, is first *draining* for the group's ``deregistration_delay_seconds`` (ELB: it gets no new
requests, in-flight ones finish), then gone.

Everything here is pure apart from reading and writing the state file.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from lbd.config.plain import Record, fields, replaced, thaw_value
from lbd.config.source import is_etcd

if TYPE_CHECKING:
    # The schema (pydantic) only where targets are validated, in the supervisor: workers import this module
    # (write_atomically, by way of lbd/gateway/access_keys.py) and must not load pydantic.
    from lbd.config.schema import Config

# On the control channel: target group -> {"add": [target dicts], "remove": [keys], "draining": [keys]}.
Overlay = dict[str, dict[str, list[Any]]]
# Validates saved targets: each as {"target": ...} or {"errors": ..., "text": ...} (lbd/validator.py).
Check = Callable[[list[Any]], list[dict[str, Any]]]
STATE_FILE = "lbd-registrations.json"


def target_key(target_id: str, port: int) -> str:
    return f"{target_id}:{port}"


def parse_target_key(text: str) -> str:
    """A target as the admin API's path names it, ``id:port`` or ``[v6]:port``, as a registry key.

    Keys keep IPv6 ids unbracketed (``::1:8080``, what ``target_key`` makes); the brackets are accepted
    because that is how an IPv6 address and port are written everywhere else.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"target {text!r}: write it as id:port, or [v6]:port for an IPv6 address")
    if host.startswith("[") or host.endswith("]"):
        inner = host[1:-1] if host.startswith("[") and host.endswith("]") else ""
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise ValueError(f"target {text!r}: only an IPv6 address goes in brackets") from None
        host = inner
    return target_key(host, int(port))


@dataclass
class Draining:
    group: str
    target: dict[str, Any]
    deadline: float  # clock time at which the delay ends


@dataclass
class Registry:
    """API registrations and deregistrations per target group, plus the targets now draining."""

    added: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # group -> key -> target
    removed: dict[str, set[str]] = field(default_factory=dict)  # group -> keys of config targets
    draining: dict[tuple[str, str], Draining] = field(default_factory=dict)
    # Found by the group's discovery provider (lbd/discovery/): group -> key -> target. Not saved: a
    # provider finds them again after a restart.
    discovered: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    # -- views ---------------------------------------------------------------------------------------

    def registered(self, config: Config, group: str) -> dict[str, dict[str, Any]]:
        """The targets of ``group`` that take traffic: the file's, minus removed, plus added."""
        out: dict[str, dict[str, Any]] = {}
        for tg in config.target_groups:
            if tg.name != group:
                continue
            removed = self.removed.get(group, set())
            for t in tg.targets:
                key = target_key(t.id, t.port)
                if key not in removed:
                    out[key] = fields(t)
            out.update(self.discovered.get(group, {}))
            out.update(self.added.get(group, {}))
        return out

    def overlay(self, config: Config) -> Overlay:
        """What workers apply to the config file's target lists."""
        overlay: Overlay = {}
        for tg in config.target_groups:
            registered = self.registered(config, tg.name)
            draining = {
                key: d.target
                for (group, key), d in self.draining.items()
                if group == tg.name and key not in registered
            }
            in_file = {target_key(t.id, t.port) for t in tg.targets}
            add = [t for key, t in {**registered, **draining}.items() if key not in in_file]
            remove = sorted(in_file - set(registered) - set(draining))
            if add or remove or draining:
                overlay[tg.name] = {"add": add, "remove": remove, "draining": sorted(draining)}
        return overlay

    # -- changes -------------------------------------------------------------------------------------

    def register(self, config: Config, group: str, target: dict[str, Any]) -> None:
        key = target_key(target["id"], target["port"])
        self.draining.pop((group, key), None)  # registering again cancels a deregistration in progress
        in_file = any(
            target_key(t.id, t.port) == key
            for tg in config.target_groups
            if tg.name == group
            for t in tg.targets
        )
        removed = self.removed.get(group, set())
        if in_file and key in removed:
            removed.discard(key)
        if not in_file or target != self._file_target(config, group, key):
            self.added.setdefault(group, {})[key] = target

    def deregister(self, config: Config, group: str, key: str, now: float) -> dict[str, Any] | None:
        """Start draining ``key``; None if it is not registered."""
        target = self.registered(config, group).get(key)
        if target is None:
            return None
        if key in self.added.get(group, {}):
            del self.added[group][key]
        if self._file_target(config, group, key) is not None:
            self.removed.setdefault(group, set()).add(key)
        self._drain(config, group, key, target, now)
        return target

    def reconcile(self, old: Config, new: Config, now: float) -> None:
        """A reload: targets the new file no longer lists (and the API did not add) start draining."""
        for tg in old.target_groups:
            before = self.registered(old, tg.name)
            after = self.registered(new, tg.name)
            for key, target in before.items():
                if key not in after:
                    self._drain(new, tg.name, key, target, now)
        groups = {tg.name for tg in new.target_groups}
        for name in list(self.discovered):
            if name not in groups:
                del self.discovered[name]
        for name in list(self.added):
            if name not in groups:
                del self.added[name]
        for name in list(self.removed):
            if name not in groups:
                del self.removed[name]

    def discover(
        self, config: Config, group: str, targets: dict[str, dict[str, Any]], now: float
    ) -> tuple[list[str], list[str]] | None:
        """A discovery provider's complete list for ``group``: targets new to the group are registered
        (they start as initial, like a registration), targets it no longer lists drain like a
        deregistration. Returns the keys (added, removed), or None when nothing changed."""
        before = self.discovered.get(group, {})
        if before == targets:
            return None
        registered_before = self.registered(config, group)
        if targets:
            self.discovered[group] = dict(targets)
        else:
            self.discovered.pop(group, None)
        registered_after = self.registered(config, group)
        for key in targets:
            self.draining.pop((group, key), None)  # back before its drain ended: it takes traffic again
        removed = [key for key in before if key not in registered_after]
        for key in removed:
            self._drain(config, group, key, before[key], now)
        added = [key for key in targets if key not in registered_before]
        return added, removed

    def finish(self, group: str, key: str) -> Draining | None:
        return self.draining.pop((group, key), None)

    def _drain(self, config: Config, group: str, key: str, target: dict[str, Any], now: float) -> None:
        delay = next((tg.deregistration_delay_seconds for tg in config.target_groups if tg.name == group), 0)
        if delay > 0:
            self.draining[(group, key)] = Draining(group, target, now + delay)

    @staticmethod
    def _file_target(config: Config, group: str, key: str) -> dict[str, Any] | None:
        for tg in config.target_groups:
            if tg.name == group:
                for t in tg.targets:
                    if target_key(t.id, t.port) == key:
                        return fields(t)
        return None

    # -- persistence ---------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "added": {g: list(ts.values()) for g, ts in self.added.items() if ts},
            "removed": {g: sorted(keys) for g, keys in self.removed.items() if keys},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], check: Check | None = None) -> Registry:
        """``check``: what validates the saved targets (the supervisor's validating child); by default the
        schema's Target model, in this process."""
        registry = cls()
        saved = [(group, t) for group, targets in data.get("added", {}).items() for t in targets]
        answers = (check or _check_here)([t for _, t in saved]) if saved else []
        for (group, _), checked in zip(saved, answers, strict=True):
            if "target" not in checked:
                raise ValueError(f"added.{group}: {checked['text']}")
            target = checked["target"]
            registry.added.setdefault(group, {})[target_key(target["id"], target["port"])] = target
        for group, keys in data.get("removed", {}).items():
            registry.removed[group] = {str(k) for k in keys}
        return registry


def state_path(config: Config, config_path: str) -> Path:
    """state_dir from the config, else systemd's StateDirectory, else beside the config file (the working
    directory for a config in etcd)."""
    directory = state_directory(config)
    if directory is not None:
        return directory / STATE_FILE
    if is_etcd(config_path):  # an etcd key (lbd/config/source.py): no file to sit beside
        return Path.cwd() / STATE_FILE
    return Path(config_path).resolve().with_name(STATE_FILE)


def state_directory(config: Config) -> Path | None:
    """state_dir from the config, else systemd's StateDirectory (its first, when it lists several)."""
    directory = config.state_dir or os.environ.get("STATE_DIRECTORY")
    return Path(directory.split(":")[0]) if directory else None


def _check_here(targets: list[Any]) -> list[dict[str, Any]]:
    from lbd.config.target_check import checked_targets

    return checked_targets(targets)


def load_registry(path: Path, check: Check | None = None) -> Registry:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Registry()
    return Registry.from_json(json.loads(text), check)


def save_registry(registry: Registry, path: Path) -> None:
    write_atomically(path, (json.dumps(registry.to_json(), indent=2) + "\n").encode())


def write_atomically(path: Path, data: bytes) -> None:
    """A crash leaves the old file or the new one, never half of one.

    The temporary file has a fresh random name (mkstemp: O_CREAT|O_EXCL, mode 0600) in the same
    directory, so that a symlink planted at a predictable name cannot redirect the write, and rename
    stays on one file system. fsync before the rename, or a crash could leave the new name empty.
    """
    import tempfile  # here: a megabyte (shutil, bz2, lzma) that workers, which never write, need not hold

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def apply_overlay(config: Config, overlay: Overlay) -> Config:
    """The config with each target group's target list as the supervisor says."""
    if not overlay:
        return config
    # The added targets were validated when they were registered, discovered or read back from the
    # state file: a thawed config (the supervisor's, lbd/validator.py) takes them as records.
    if isinstance(config, Record):
        make_target: Any = thaw_value
    else:
        from lbd.config.schema import Target

        make_target = Target.model_validate
    groups = []
    for tg in config.target_groups:
        change = overlay.get(tg.name)
        if change is None:
            groups.append(tg)
            continue
        remove = set(change.get("remove", ()))
        targets = [t for t in tg.targets if target_key(t.id, t.port) not in remove]
        present = {target_key(t.id, t.port) for t in targets}
        for t in change.get("add", ()):
            target = make_target(t)
            if target_key(target.id, target.port) not in present:
                targets.append(target)
        groups.append(replaced(tg, targets=tuple(targets)))
    return cast("Config", replaced(config, target_groups=tuple(groups)))
