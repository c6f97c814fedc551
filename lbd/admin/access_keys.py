"""The admin API's access keys, for IAM (SigV4) authorizers: ``/v1/access-keys``.

- ``POST /v1/access-keys`` ``{"allow": ["arn:aws:execute-api:*:*:pets/prod/GET/*"], "description": "ci"}``
  creates a key: 201 with ``access_key_id`` and ``secret_access_key``. The secret is in this answer only
  (as with IAM's CreateAccessKey); ``access_key_id`` and ``secret_access_key`` may be given to import a
  key pair that clients already hold.
- ``GET /v1/access-keys`` lists the keys, ``GET /v1/access-keys/{id}`` shows one (never the secret).
- ``PATCH /v1/access-keys/{id}`` ``{"enabled": false}`` disables a key (IAM's UpdateAccessKey Inactive);
  ``allow`` and ``description`` may be changed the same way.
- ``DELETE /v1/access-keys/{id}`` deletes it.

A change is answered once every worker has installed the new set (the same control channel that carries
configuration generations, ``access_keys`` / ``access_keys_applied`` messages), so a disabled or deleted
key is refused by every worker from the moment the answer arrives; then it is saved under state_dir.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from lbd.admin.server import AdminRequest, AdminResponse, BadRequest, Router
from lbd.control import Message
from lbd.gateway.access_keys import (
    ACCESS_KEY_ID,
    AccessKey,
    AccessKeys,
    check_allow,
    load_access_keys,
    new_access_key_id,
    new_secret,
    save_access_keys,
    state_file,
)

log = logging.getLogger("lbd.admin")

MAX_KEYS = 1000
MAX_DESCRIPTION = 256
APPLIED = "access_keys_applied"

# Sends a message to every worker and waits for each one's reply (op APPLIED); returns what went wrong.
Publish = Callable[[Message, str], Awaitable[list[str]]]


class AccessKeyAdmin:
    """The supervisor's side: the set, the file it is saved in, and the workers to tell."""

    def __init__(self, path: Path, keys: AccessKeys, publish: Publish) -> None:
        self.path = path
        self.keys = keys
        self._publish = publish
        self._version = 1
        self._lock = asyncio.Lock()

    @classmethod
    def open(cls, state_directory: Path, publish: Publish) -> AccessKeyAdmin:
        """ValueError naming the file if it cannot be read."""
        path = state_file(state_directory)
        try:
            keys = load_access_keys(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot read the access keys {path}: {exc} (fix or remove the file)") from exc
        if len(keys):
            log.info("%d access key(s) restored from %s", len(keys), path)
        return cls(path, keys, publish)

    def message(self) -> Message:
        """What a worker is sent: the whole set (``generation`` pairs the reply with the request)."""
        return {"op": "access_keys", "generation": self._version, "keys": self.keys.to_json()}

    def register(self, router: Router) -> None:
        router.add("POST", "/v1/access-keys", self.create)
        router.add("GET", "/v1/access-keys", self.list)
        router.add("GET", "/v1/access-keys/{id}", self.show)
        router.add("PATCH", "/v1/access-keys/{id}", self.update)
        router.add("DELETE", "/v1/access-keys/{id}", self.delete)

    # -- endpoints -------------------------------------------------------------------------------------

    async def create(self, request: AdminRequest) -> AdminResponse:
        body = _object(request)
        unknown = set(body) - {"allow", "description", "enabled", "access_key_id", "secret_access_key"}
        if unknown:
            raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
        if "allow" not in body:
            raise BadRequest('"allow" is required: the execute-api resources the key may invoke, e.g. ["*"]')
        key_id = body.get("access_key_id", new_access_key_id())
        secret = body.get("secret_access_key", new_secret())
        if not isinstance(key_id, str) or not ACCESS_KEY_ID.match(key_id):
            raise BadRequest('"access_key_id" must be 16-128 upper-case letters and digits')
        if not isinstance(secret, str) or not 16 <= len(secret) <= 128 or not secret.isprintable():
            raise BadRequest('"secret_access_key" must be 16-128 printable characters')
        key = AccessKey(
            access_key_id=key_id,
            secret_access_key=secret,
            allow=_allow(body["allow"]),
            enabled=_enabled(body.get("enabled", True)),
            description=_description(body.get("description", "")),
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        async with self._lock:
            if self.keys.get(key_id) is not None:
                return AdminResponse(409, {"error": f"access key {key_id} exists"})
            if len(self.keys) >= MAX_KEYS:
                return AdminResponse(409, {"error": f"there are already {MAX_KEYS} access keys"})
            failed = await self._apply(self.keys.with_key(key))
        log.info("access key %s created", key_id)
        return self._answer(201, {**key.public(), "secret_access_key": secret}, failed)

    async def list(self, request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, {"access_keys": [k.public() for k in self.keys]})

    async def show(self, request: AdminRequest) -> AdminResponse:
        key = self.keys.get(request.params["id"])
        if key is None:
            return _missing(request.params["id"])
        return AdminResponse(200, key.public())

    async def update(self, request: AdminRequest) -> AdminResponse:
        body = _object(request)
        unknown = set(body) - {"allow", "description", "enabled"}
        if unknown:
            names = ", ".join(sorted(unknown))
            raise BadRequest(f"only allow, description and enabled can change, not {names}")
        changes: dict[str, Any] = {}
        if "allow" in body:
            changes["allow"] = _allow(body["allow"])
        if "enabled" in body:
            changes["enabled"] = _enabled(body["enabled"])
        if "description" in body:
            changes["description"] = _description(body["description"])
        key_id = request.params["id"]
        async with self._lock:
            if self.keys.get(key_id) is None:
                return _missing(key_id)
            keys = self.keys.updated(key_id, **changes)
            failed = await self._apply(keys)
        log.info("access key %s updated: %s", key_id, ", ".join(sorted(changes)) or "nothing")
        key = keys.get(key_id)
        assert key is not None
        return self._answer(200, key.public(), failed)

    async def delete(self, request: AdminRequest) -> AdminResponse:
        key_id = request.params["id"]
        async with self._lock:
            if self.keys.get(key_id) is None:
                return _missing(key_id)
            failed = await self._apply(self.keys.without(key_id))
        log.info("access key %s deleted", key_id)
        return self._answer(200, {"access_key_id": key_id, "deleted": True}, failed)

    # -- applying a change -----------------------------------------------------------------------------

    async def _apply(self, keys: AccessKeys) -> str | None:
        """Tell every worker, then save; what could not be saved, or None."""
        self.keys = keys
        self._version += 1
        for problem in await self._publish(self.message(), APPLIED):
            # A worker that is not running gets the current set when it starts again.
            log.warning("access keys: %s", problem)
        try:
            save_access_keys(keys, self.path)
        except OSError as exc:
            message = f"the change is in effect but could not be saved to {self.path}: {exc}"
            log.error("%s", message)
            return message
        return None

    @staticmethod
    def _answer(status: int, body: dict[str, Any], failed: str | None) -> AdminResponse:
        return AdminResponse(500, {**body, "error": failed}) if failed else AdminResponse(status, body)


def _object(request: AdminRequest) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _allow(value: object) -> tuple[str, ...]:
    try:
        return check_allow(value)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _enabled(value: object) -> bool:
    if not isinstance(value, bool):
        raise BadRequest('"enabled" must be true or false')
    return value


def _description(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
        raise BadRequest(f'"description" must be a string of at most {MAX_DESCRIPTION} characters')
    return value


def _missing(key_id: str) -> AdminResponse:
    return AdminResponse(404, {"error": f"no access key {key_id}"})
