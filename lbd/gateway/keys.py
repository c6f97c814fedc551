"""API keys and their usage-plan memberships: created through the admin API, persisted in state_dir.

The supervisor owns the store (``KeyStore``) and writes it to ``lbd-api-keys.json`` (mode 0600: it holds
key values) next to the target registrations; every change is sent at once to every worker, which keeps
only what a request needs (``KeyTable``: a digest of each value, never the value). Logs name keys by id.

API Gateway's rules ("Usage plans and API keys", API_CreateApiKey): a key value is 20-128 alphanumeric
characters, unique; generated values are 40 characters; a key is in at most one plan per API stage.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import string
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

KEYS_FILE = "lbd-api-keys.json"
VALUE = re.compile(r"^[A-Za-z0-9]{20,128}$")
NAME = re.compile(r"^[\x20-\x7e]{1,1024}$")
_ALPHABET = string.ascii_letters + string.digits


class KeyRefused(ValueError):
    """A request the store refuses (the admin API's 400/404/409), with the reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ApiKey:
    id: str
    name: str
    value: str
    enabled: bool = True
    created_at: float = 0.0
    plans: list[str] = field(default_factory=list)

    def describe(self, include_value: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "enabled": self.enabled,
            "created_at": self.created_at,
            "usage_plans": list(self.plans),
        }
        if include_value:
            out["value"] = self.value
        return out


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


class KeyStore:
    def __init__(self, keys: Iterable[ApiKey] = ()) -> None:
        self.keys: dict[str, ApiKey] = {k.id: k for k in keys}

    def create(self, name: str, value: str | None = None, enabled: bool = True) -> ApiKey:
        if not NAME.match(name):
            raise KeyRefused(400, "name: 1-1024 printable ASCII characters")
        if value is None:
            value = "".join(secrets.choice(_ALPHABET) for _ in range(40))
        elif not VALUE.match(value):
            raise KeyRefused(400, "value: 20-128 letters and digits (API Gateway's rule)")
        if any(k.value == value for k in self.keys.values()):
            raise KeyRefused(409, "value: another API key has this value")
        ident = secrets.token_hex(5)
        while ident in self.keys:
            ident = secrets.token_hex(5)
        key = ApiKey(ident, name, value, enabled, time.time())
        self.keys[ident] = key
        return key

    def get(self, ident: str) -> ApiKey:
        key = self.keys.get(ident)
        if key is None:
            raise KeyRefused(404, f"no API key with id {ident!r}")
        return key

    def delete(self, ident: str) -> ApiKey:
        key = self.get(ident)
        del self.keys[ident]
        return key

    def set_enabled(self, ident: str, enabled: bool) -> ApiKey:
        key = self.get(ident)
        key.enabled = enabled
        return key

    def add_to_plan(self, ident: str, plan: str, stages: Mapping[str, set[tuple[str, str]]]) -> ApiKey:
        """``stages``: plan name -> the (api, stage) pairs it covers (from the config)."""
        key = self.get(ident)
        if plan in key.plans:
            return key
        mine = stages.get(plan, set())
        for other in key.plans:
            clash = mine & stages.get(other, set())
            if clash:
                api, stage = sorted(clash)[0]
                raise KeyRefused(
                    409, f"API key {ident} is in usage plan {other!r}, which also covers {api}/{stage}"
                )
        key.plans.append(plan)
        return key

    def remove_from_plan(self, ident: str, plan: str) -> ApiKey:
        key = self.get(ident)
        if plan not in key.plans:
            raise KeyRefused(404, f"API key {ident} is not in usage plan {plan!r}")
        key.plans.remove(plan)
        return key

    def in_plan(self, plan: str) -> list[ApiKey]:
        return [k for k in self.keys.values() if plan in k.plans]

    def for_workers(self) -> list[dict[str, Any]]:
        """What workers get: digest of the value, id, enabled, plans."""
        return [
            {"id": k.id, "digest": digest(k.value), "enabled": k.enabled, "plans": list(k.plans)}
            for k in self.keys.values()
        ]

    # -- persistence ---------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "keys": [asdict(k) for k in self.keys.values()]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeyStore:
        keys = []
        for entry in data.get("keys", []):
            key = ApiKey(
                str(entry["id"]),
                str(entry["name"]),
                str(entry["value"]),
                bool(entry.get("enabled", True)),
                float(entry.get("created_at", 0.0)),
                [str(p) for p in entry.get("plans", [])],
            )
            if not VALUE.match(key.value):
                raise ValueError(f"API key {key.id}: the stored value is not 20-128 letters and digits")
            keys.append(key)
        return cls(keys)


def keys_path(registrations: Path) -> Path:
    """Beside the registrations' state file (state_dir, STATE_DIRECTORY or the config's directory)."""
    return registrations.with_name(KEYS_FILE)


def load_keys(path: Path) -> KeyStore:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return KeyStore()
    return KeyStore.from_json(json.loads(text))


def save_keys(store: KeyStore, path: Path) -> None:
    """Atomically and readable by the owner only (mkstemp makes the file 0600), as the registrations."""
    from lbd.upstream.registry import write_atomically

    write_atomically(path, (json.dumps(store.to_json(), indent=2) + "\n").encode())


@dataclass(frozen=True, slots=True)
class KnownKey:
    id: str
    enabled: bool
    plans: tuple[str, ...]
    # What throttle buckets and quotas count under: derived from the value, not the id, so every node of
    # a fleet that holds the same key value (ids are random per node) draws from the same shared counters.
    counter: str = ""


MAX_SEEN = 10_000  # key values whose digest a worker's table remembers


_UNSEEN = KnownKey("", False, ())  # no key's: the marker of a value not seen yet


class KeyTable:
    """A worker's view: key digest -> KnownKey. Replaced whole on every change the supervisor sends."""

    def __init__(self, entries: Iterable[Mapping[str, Any]] = ()) -> None:
        self._by_digest = {
            str(e["digest"]): KnownKey(
                str(e["id"]), bool(e["enabled"]), tuple(e.get("plans", ())), str(e["digest"])[:24]
            )
            for e in entries
        }
        self._seen: dict[str, KnownKey | None] = {}

    def lookup(self, value: str) -> KnownKey | None:
        if not self._by_digest:
            return None
        # The digests of values seen, so a client's next requests cost a dict lookup, not a SHA-256. Both
        # known and unknown values are kept (bounded: dropped whole when full), and the table is replaced
        # whole on every change, so nothing here outlives the keys it was made from.
        seen = self._seen.get(value, _UNSEEN)
        if seen is _UNSEEN:
            if len(self._seen) >= MAX_SEEN:
                self._seen.clear()
            seen = self._seen[value] = self._by_digest.get(digest(value))
        return seen

    def in_plan(self, plan: str) -> list[KnownKey]:
        return [k for k in self._by_digest.values() if plan in k.plans]
