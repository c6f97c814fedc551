"""The admin API's distribution endpoints: invalidations (CloudFront's CreateInvalidation).

- ``POST /v1/distributions/{name}/invalidations`` ``{"paths": ["/images/*", "/index.html"]}``: every
  worker drops the matching entries; answered 201 with the invalidation's ``id`` and ``status``
  ``Completed`` once every worker has (the control channel's ``invalidate`` / ``invalidated``
  messages), so no worker serves an invalidated object after the answer. A worker that did not answer
  makes the status ``InProgress`` with the errors listed.
- ``GET /v1/distributions/{name}/invalidations``: the invalidations since lbd started (newest first),
  ``GET /v1/distributions/{name}/invalidations/{id}`` one of them.
- ``GET /v1/distributions``: the configured distributions, their listeners and behaviors.

Paths follow CloudFront ("Invalidating files"): each starts with ``/`` (added when missing, as the
CloudFront console does), is case-sensitive, and may end with one ``*`` (the only place a wildcard may
be); at most 3,000 paths per request (CloudFront's limit on paths in progress).
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from lbd.admin.server import AdminRequest, AdminResponse, BadRequest, Router
from lbd.control import Message

if TYPE_CHECKING:
    from lbd.config.schema import Config

MAX_PATHS = 3000
KEPT = 100  # invalidations remembered per distribution
REPLY = "invalidated"
Publish = Callable[[Message, str], Awaitable[list[str]]]


def check_paths(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise BadRequest('"paths" must be a non-empty list of paths, e.g. ["/images/*"]')
    if len(value) > MAX_PATHS:
        raise BadRequest(f'"paths": at most {MAX_PATHS} paths per invalidation')
    paths = []
    for index, path in enumerate(value):
        if not isinstance(path, str) or not path or len(path) > 4096 or not path.isprintable():
            raise BadRequest(f'"paths"[{index}]: a path of 1-4096 printable characters')
        if "*" in path[:-1]:
            raise BadRequest(f'"paths"[{index}]: a * wildcard may only be the last character ({path!r})')
        paths.append(path if path.startswith("/") else "/" + path)
    return paths


def new_id() -> str:
    """An id in CloudFront's shape: 14 upper-case letters and digits, starting with I."""
    return "I" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(13))


class EdgeAdmin:
    def __init__(self, publish: Publish, config: Callable[[], Config]) -> None:
        self._publish = publish
        self._config = config
        self._sequence = 0
        self.invalidations: dict[str, list[dict[str, Any]]] = {}

    def register(self, router: Router) -> None:
        router.add("GET", "/v1/distributions", self.list_distributions)
        router.add("POST", "/v1/distributions/{name}/invalidations", self.create)
        router.add("GET", "/v1/distributions/{name}/invalidations", self.list)
        router.add("GET", "/v1/distributions/{name}/invalidations/{id}", self.show)

    def _known(self, name: str) -> bool:
        return any(d.name == name for d in self._config().distributions)

    async def list_distributions(self, request: AdminRequest) -> AdminResponse:
        body = [
            {
                "name": d.name,
                "enabled": d.enabled,
                "listeners": [f"{x.protocol}:{x.address}:{x.port}" for x in d.listeners],
                "origins": [{"id": o.id, "target_group": o.target_group, "api": o.api} for o in d.origins],
                "cache_behaviors": [b.path_pattern for b in d.cache_behaviors] + ["*"],
            }
            for d in self._config().distributions
        ]
        return AdminResponse(200, {"distributions": body})

    async def create(self, request: AdminRequest) -> AdminResponse:
        name = request.params["name"]
        if not self._known(name):
            return AdminResponse(404, {"error": f"no distribution named {name!r}"})
        body = request.json()
        if not isinstance(body, dict):
            raise BadRequest('the body must be a JSON object: {"paths": [...]}')
        unknown = set(body) - {"paths", "caller_reference"}
        if unknown:
            raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
        paths = check_paths(body.get("paths"))
        self._sequence += 1
        record: dict[str, Any] = {
            "id": new_id(),
            "status": "InProgress",
            "create_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "paths": paths,
        }
        if "caller_reference" in body:
            record["caller_reference"] = str(body["caller_reference"])
        kept = self.invalidations.setdefault(name, [])
        kept.insert(0, record)
        del kept[KEPT:]
        message = {"op": "invalidate", "generation": self._sequence, "distribution": name, "paths": paths}
        failed = await self._publish(message, REPLY)
        if failed:
            record["errors"] = failed
        else:
            record["status"] = "Completed"
        return AdminResponse(
            201, record, headers={"Location": f"/v1/distributions/{name}/invalidations/{record['id']}"}
        )

    async def list(self, request: AdminRequest) -> AdminResponse:
        name = request.params["name"]
        if not self._known(name):
            return AdminResponse(404, {"error": f"no distribution named {name!r}"})
        return AdminResponse(200, {"invalidations": self.invalidations.get(name, [])})

    async def show(self, request: AdminRequest) -> AdminResponse:
        name = request.params["name"]
        for record in self.invalidations.get(name, []):
            if record["id"] == request.params["id"]:
                return AdminResponse(200, record)
        return AdminResponse(404, {"error": f"no invalidation {request.params['id']!r} of {name!r}"})
