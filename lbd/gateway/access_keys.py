"""Access keys for IAM-style (SigV4) authorizers: an id, a secret, an enabled flag and an allow list.

An access key plays the part of an IAM user's key pair: AWS SDKs and the CLI sign requests with it
("Signature Version 4 signing process"), and its allow list plays the part of the user's policy, a list of
``execute-api:Invoke`` resources with IAM wildcards such as ``arn:aws:execute-api:*:*:pets/prod/GET/*``
("Control access to an API with IAM permissions").

The supervisor owns the set: the admin API changes it (lbd/admin/access_keys.py), it is saved as JSON
under state_dir (mode 0600: SigV4 is an HMAC, so the secret itself must be kept, not a hash of it), and
each worker receives the whole set over the control channel and installs it in ``PROCESS_KEYS``, which
the SigV4 authorizers read. Nothing else here does I/O.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from lbd.gateway.arn import any_resource_matches
from lbd.upstream.registry import write_atomically

STATE_FILE = "lbd-access-keys.json"
ACCESS_KEY_ID = re.compile(r"^[A-Z0-9]{16,128}$")  # IAM: 16-128 characters, \w+ (AWS issues upper case)
MAX_ALLOW = 100
MAX_PATTERN = 2048


@dataclass(frozen=True, slots=True)
class AccessKey:
    access_key_id: str
    secret_access_key: str
    allow: tuple[str, ...]  # execute-api:Invoke resource patterns
    enabled: bool = True
    description: str = ""
    created: str = ""  # ISO 8601, UTC

    def may_invoke(self, arn: str) -> bool:
        return any_resource_matches(self.allow, arn)

    def public(self) -> dict[str, Any]:
        """What the admin API shows after creation: everything but the secret."""
        view = asdict(self)
        del view["secret_access_key"]
        view["allow"] = list(self.allow)
        return view

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "allow": list(self.allow)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AccessKey:
        key = cls(
            access_key_id=str(data["access_key_id"]),
            secret_access_key=str(data["secret_access_key"]),
            allow=tuple(str(p) for p in data.get("allow", ())),
            enabled=bool(data.get("enabled", True)),
            description=str(data.get("description", "")),
            created=str(data.get("created", "")),
        )
        if not ACCESS_KEY_ID.match(key.access_key_id) or not key.secret_access_key:
            raise ValueError(f"access key {key.access_key_id!r}: not a valid id and secret")
        return key


def new_access_key_id() -> str:
    """``AKIA`` and 16 characters of base32, the shape of an IAM user's long-term key id."""
    import secrets  # the supervisor makes keys; workers only check them

    return "AKIA" + base64.b32encode(secrets.token_bytes(10)).decode()


def new_secret() -> str:
    import secrets

    return secrets.token_urlsafe(30)  # 40 characters, 240 bits, like an IAM secret access key


def check_allow(value: object) -> tuple[str, ...]:
    """An allow list from the admin API: ValueError naming what is wrong."""
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValueError('"allow" must be a list of execute-api resource patterns (strings)')
    if len(value) > MAX_ALLOW:
        raise ValueError(f'"allow" holds at most {MAX_ALLOW} patterns')
    for pattern in value:
        if not pattern or len(pattern) > MAX_PATTERN or any(c.isspace() for c in pattern):
            raise ValueError(f'"allow": {pattern!r} is not a resource pattern (1-{MAX_PATTERN}, no spaces)')
        if pattern != "*" and not pattern.startswith("arn:"):
            raise ValueError(f'"allow": {pattern!r} must be "*" or an ARN pattern "arn:aws:execute-api:..."')
    return tuple(value)


class AccessKeys:
    """The set of access keys, by id. Replaced whole on every change, so readers never see half of one."""

    def __init__(self, keys: Iterable[AccessKey] = ()) -> None:
        self._keys: dict[str, AccessKey] = {k.access_key_id: k for k in keys}

    def get(self, access_key_id: str) -> AccessKey | None:
        return self._keys.get(access_key_id)

    def __iter__(self) -> Any:
        return iter(sorted(self._keys.values(), key=lambda k: k.access_key_id))

    def __len__(self) -> int:
        return len(self._keys)

    def install(self, keys: Iterable[AccessKey]) -> None:
        self._keys = {k.access_key_id: k for k in keys}

    def with_key(self, key: AccessKey) -> AccessKeys:
        return AccessKeys([*(k for k in self if k.access_key_id != key.access_key_id), key])

    def without(self, access_key_id: str) -> AccessKeys:
        return AccessKeys(k for k in self if k.access_key_id != access_key_id)

    def updated(self, access_key_id: str, **changes: Any) -> AccessKeys:
        key = self._keys[access_key_id]
        return self.with_key(replace(key, **changes))

    # -- persistence and the control channel ----------------------------------------------------------

    def to_json(self) -> list[dict[str, Any]]:
        return [k.to_json() for k in self]

    @classmethod
    def from_json(cls, data: Iterable[Mapping[str, Any]]) -> AccessKeys:
        return cls(AccessKey.from_json(item) for item in data)


# The keys this process verifies signatures against: the worker installs what the supervisor sends.
PROCESS_KEYS = AccessKeys()


def install_message(keys: list[dict[str, Any]]) -> None:
    """A worker's handler for the supervisor's ``access_keys`` control message."""
    PROCESS_KEYS.install(AccessKeys.from_json(keys))


def state_file(state_directory: Path) -> Path:
    return state_directory / STATE_FILE


def load_access_keys(path: Path) -> AccessKeys:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return AccessKeys()
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("access_keys"), list):
        raise ValueError('expected {"version": 1, "access_keys": [...]}')
    return AccessKeys.from_json(data["access_keys"])


def save_access_keys(keys: AccessKeys, path: Path) -> None:
    """Atomically, mode 0600 (the file holds secrets)."""
    document = {"version": 1, "access_keys": keys.to_json()}
    write_atomically(path, (json.dumps(document, indent=2) + "\n").encode())
