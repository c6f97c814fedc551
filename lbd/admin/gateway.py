"""Admin API endpoints of the gateway: API keys and usage plans (DESIGN.md section 5).

- ``POST /v1/api-keys`` ``{"name": ..., "value"?: ..., "enabled"?: true}``: create (API Gateway's
  CreateApiKey); the answer shows the value, once.
- ``GET /v1/api-keys``, ``GET /v1/api-keys/{id}`` (``?include_value=true`` shows the value, as
  API Gateway's includeValue), ``DELETE /v1/api-keys/{id}``.
- ``PATCH /v1/api-keys/{id}`` ``{"enabled": false}``, or ``POST /v1/api-keys/{id}/disable`` / ``/enable``.
- ``POST /v1/usage-plans/{name}/keys`` ``{"key_id": ...}`` (CreateUsagePlanKey),
  ``DELETE /v1/usage-plans/{name}/keys/{id}``, ``GET /v1/usage-plans/{name}/usage``: each key's requests
  in the current quota period.

The store lives in the supervisor and is saved beside the target registrations (lbd/gateway/keys.py).
Every change goes to every worker, and the answer waits until each has it, so a key that was just
created works on the next request whichever worker takes it. Logs name keys by id, never by value.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lbd.admin.server import AdminRequest, AdminResponse, BadRequest, Router
from lbd.gateway.keys import KeyRefused, KeyStore, keys_path, load_keys, save_keys
from lbd.observe import api_summary
from lbd.observe.metrics import NodeStats

if TYPE_CHECKING:
    from lbd.supervisor import Supervisor

log = logging.getLogger("lbd.admin")


class WorkerSilent(Exception):
    """A worker did not answer a control message."""


class GatewayAdmin:
    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.store = KeyStore()
        self.path: Path = keys_path(supervisor.state_file)
        self._seq = 0
        self._lock = asyncio.Lock()

    def load(self) -> None:
        """At start: the saved keys (ValueError or OSError if the file is unreadable)."""
        self.store = load_keys(self.path)
        if self.store.keys:
            log.info("%d API key(s) restored from %s", len(self.store.keys), self.path)

    def register(self, router: Router) -> None:
        router.add("POST", "/v1/api-keys", self._create)
        router.add("GET", "/v1/api-keys", self._list)
        router.add("GET", "/v1/api-keys/{id}", self._get)
        router.add("DELETE", "/v1/api-keys/{id}", self._delete)
        router.add("PATCH", "/v1/api-keys/{id}", self._patch)
        router.add("POST", "/v1/api-keys/{id}/disable", self._disable)
        router.add("POST", "/v1/api-keys/{id}/enable", self._enable)
        router.add("POST", "/v1/usage-plans/{name}/keys", self._add_plan_key)
        router.add("DELETE", "/v1/usage-plans/{name}/keys/{id}", self._remove_plan_key)
        router.add("GET", "/v1/usage-plans/{name}/usage", self._usage)
        router.add("POST", "/v1/apis/{api}/cache/flush", self._flush_cache)

    # -- workers ---------------------------------------------------------------------------------------

    def _message(self) -> dict[str, Any]:
        self._seq += 1
        return {"op": "api_keys", "generation": self._seq, "keys": self.store.for_workers()}

    def keys_message(self) -> dict[str, Any]:
        """For a worker that (re)starts: sent ahead of its first generation on the ordered channel, so it
        has every key before it serves a request."""
        return self._message()

    async def _publish(self) -> str | None:
        """Every worker gets the table; the file is saved. An error text if saving failed."""
        message = self._message()
        workers = self.supervisor.workers
        replies = await asyncio.gather(
            *(w.request(message, "api_keys") for w in workers), return_exceptions=True
        )
        for worker, reply in zip(workers, replies, strict=True):
            if isinstance(reply, BaseException):
                log.error("worker %d did not take the API keys: %s", worker.index, reply)
        try:
            save_keys(self.store, self.path)
        except OSError as exc:
            text = f"the change is in effect but could not be saved to {self.path}: {exc}"
            log.error("%s", text)
            return text
        return None

    async def _changed(self, status: int, body: dict[str, Any]) -> AdminResponse:
        problem = await self._publish()
        if problem is not None:
            return AdminResponse(500, {**body, "error": problem})
        return AdminResponse(status, body)

    # -- endpoints -------------------------------------------------------------------------------------

    async def _create(self, request: AdminRequest) -> AdminResponse:
        body = _object(request)
        name, value, enabled = body.get("name"), body.get("value"), body.get("enabled", True)
        if not isinstance(name, str) or (value is not None and not isinstance(value, str)):
            raise BadRequest('body must be {"name": "...", "value"?: "...", "enabled"?: true}')
        if not isinstance(enabled, bool):
            raise BadRequest("enabled: must be true or false")
        async with self._lock:
            try:
                key = self.store.create(name, value, enabled)
            except KeyRefused as exc:
                return AdminResponse(exc.status, {"error": str(exc)})
            log.info("API key %s created (%s)", key.id, "enabled" if enabled else "disabled")
            return await self._changed(201, key.describe(include_value=True))

    async def _list(self, request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, {"api_keys": [k.describe() for k in self.store.keys.values()]})

    async def _get(self, request: AdminRequest) -> AdminResponse:
        include = "include_value=true" in request.query.lower().split("&")
        try:
            return AdminResponse(200, self.store.get(request.params["id"]).describe(include_value=include))
        except KeyRefused as exc:
            return AdminResponse(exc.status, {"error": str(exc)})

    async def _delete(self, request: AdminRequest) -> AdminResponse:
        async with self._lock:
            try:
                key = self.store.delete(request.params["id"])
            except KeyRefused as exc:
                return AdminResponse(exc.status, {"error": str(exc)})
            log.info("API key %s deleted", key.id)
            return await self._changed(200, {"id": key.id, "deleted": True})

    async def _patch(self, request: AdminRequest) -> AdminResponse:
        enabled = _object(request).get("enabled")
        if not isinstance(enabled, bool):
            raise BadRequest('body must be {"enabled": true|false}')
        return await self._set_enabled(request.params["id"], enabled)

    async def _disable(self, request: AdminRequest) -> AdminResponse:
        return await self._set_enabled(request.params["id"], False)

    async def _enable(self, request: AdminRequest) -> AdminResponse:
        return await self._set_enabled(request.params["id"], True)

    async def _set_enabled(self, ident: str, enabled: bool) -> AdminResponse:
        async with self._lock:
            try:
                key = self.store.set_enabled(ident, enabled)
            except KeyRefused as exc:
                return AdminResponse(exc.status, {"error": str(exc)})
            log.info("API key %s %s", key.id, "enabled" if enabled else "disabled")
            return await self._changed(200, key.describe())

    def _plan_stages(self) -> dict[str, set[tuple[str, str]]]:
        config = self.supervisor.current.config
        return {p.name: {(a.api, a.stage) for a in p.apis} for p in config.usage_plans}

    async def _add_plan_key(self, request: AdminRequest) -> AdminResponse:
        plan = request.params["name"]
        stages = self._plan_stages()
        if plan not in stages:
            return AdminResponse(404, {"error": f"no usage plan named {plan!r}"})
        ident = _object(request).get("key_id")
        if not isinstance(ident, str):
            raise BadRequest('body must be {"key_id": "..."}')
        async with self._lock:
            try:
                key = self.store.add_to_plan(ident, plan, stages)
            except KeyRefused as exc:
                return AdminResponse(exc.status, {"error": str(exc)})
            log.info("API key %s added to usage plan %s", key.id, plan)
            return await self._changed(200, {"usage_plan": plan, "key_id": key.id})

    async def _remove_plan_key(self, request: AdminRequest) -> AdminResponse:
        plan = request.params["name"]
        async with self._lock:
            try:
                key = self.store.remove_from_plan(request.params["id"], plan)
            except KeyRefused as exc:
                return AdminResponse(exc.status, {"error": str(exc)})
            log.info("API key %s removed from usage plan %s", key.id, plan)
            return await self._changed(200, {"usage_plan": plan, "key_id": key.id, "removed": True})

    async def _flush_cache(self, request: AdminRequest) -> AdminResponse:
        """FlushStageCache: every worker drops the API's cached entries."""
        return await _flush_cache_of(self, request.params["api"])

    async def _usage(self, request: AdminRequest) -> AdminResponse:
        plan = request.params["name"]
        config = self.supervisor.current.config
        if plan not in {p.name for p in config.usage_plans}:
            return AdminResponse(404, {"error": f"no usage plan named {plan!r}"})
        try:
            usage = await self.plan_usage(plan)
        except WorkerSilent as exc:
            return AdminResponse(503, {"error": f"a worker did not answer: {exc}"})
        return AdminResponse(200, {"usage_plan": plan, "keys": usage})

    async def plan_usage(self, plan: str) -> dict[str, dict[str, Any]]:
        """Each key's requests in the plan's current quota period, every worker's added up (one worker's
        with a shared Redis counter); WorkerSilent if one did not answer."""
        self._seq += 1
        message = {"op": "api_usage", "generation": self._seq, "plan": plan}
        workers = self.supervisor.workers
        if self.supervisor.current.config.shared_state.redis is not None:
            workers = workers[:1]  # one shared counter: every worker reads the same number
        replies = await asyncio.gather(
            *(w.request(message, "api_usage") for w in workers), return_exceptions=True
        )
        usage: dict[str, dict[str, Any]] = {}
        for reply in replies:
            if isinstance(reply, BaseException):
                raise WorkerSilent(str(reply)) from reply
            for key_id, entry in reply.get("usage", {}).items():
                total = usage.setdefault(key_id, dict(entry, used=0))
                total["used"] += int(entry["used"])
        return usage

    async def summary_parts(self, node: NodeStats) -> dict[str, Any]:
        """The ``apis`` and ``usage_plans`` of ``GET /v1/summary`` (lbd/observe/api_summary.py), each only
        when the config has some, so that the console shows their sections only then."""
        config = self.supervisor.current.config
        parts: dict[str, Any] = {}
        if config.apis:
            parts["apis"] = api_summary.apis(config, node)
        if config.usage_plans:
            usage: dict[str, dict[str, dict[str, Any]] | None] = {}
            for plan in config.usage_plans:
                try:
                    usage[plan.name] = await self.plan_usage(plan.name) if plan.quota else {}
                except WorkerSilent as exc:
                    log.warning("usage plan %s: no usage for the summary: %s", plan.name, exc)
                    usage[plan.name] = None
            keys = [key.describe() for key in self.store.keys.values()]  # never the values
            parts["usage_plans"] = api_summary.usage_plans(config, keys, usage)
        return parts


async def _flush_cache_of(admin: GatewayAdmin, api: str) -> AdminResponse:
    config = admin.supervisor.current.config
    found = next((a for a in config.apis if a.name == api), None)
    if found is None:
        return AdminResponse(404, {"error": f"no API named {api!r}"})
    if not found.cache.enabled:
        return AdminResponse(409, {"error": f"API {api!r} has no stage cache (cache.enabled is false)"})
    admin._seq += 1
    message = {"op": "api_cache_flush", "generation": admin._seq, "api": api}
    replies = await asyncio.gather(
        *(w.request(message, "api_cache_flush") for w in admin.supervisor.workers), return_exceptions=True
    )
    flushed = sum(int(r.get("flushed", 0)) for r in replies if not isinstance(r, BaseException))
    failed = [str(r) for r in replies if isinstance(r, BaseException)]
    log.info("API %s: stage cache flushed (%d entries)", api, flushed)
    body: dict[str, Any] = {"api": api, "flushed_entries": flushed}
    return AdminResponse(503, {**body, "errors": failed}) if failed else AdminResponse(200, body)


def _object(request: AdminRequest) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body
