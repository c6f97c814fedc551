"""The worker's side of the gateway's control messages (lbd/control.py carries them).

- ``api_keys``: the supervisor's whole key table (digests, ids, enabled, plans); replaces the worker's.
- ``api_usage``: requests each key of a usage plan made in the current quota period, from this worker's
  limiter (or from Redis, the same number on every worker, when shared_state.redis is set).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from lbd.gateway.plans import stage_plans
from lbd.gateway.services import SERVICES

if TYPE_CHECKING:
    from lbd.observe.access_log import AccessLogs
    from lbd.runtime import Snapshot

Message = dict[str, Any]


def on_message(message: Message, snapshot: Snapshot | None) -> Awaitable[Message] | None:
    if message.get("op") == "api_cache_flush":
        return _flush(message)
    if message.get("op") == "api_keys":
        SERVICES.set_keys(message.get("keys") or [])
        return _applied(message)
    return _usage(message, snapshot)


async def _flush(message: Message) -> Message:
    from lbd.gateway.stage_cache import flush

    return {
        "op": "api_cache_flush",
        "generation": message.get("generation", 0),
        "flushed": flush(str(message.get("api"))),
    }


async def _applied(message: Message) -> Message:
    return {"op": "api_keys", "generation": message.get("generation", 0)}


async def _usage(message: Message, snapshot: Snapshot | None) -> Message:
    plan_name = str(message.get("plan"))
    reply: Message = {"op": "api_usage", "generation": message.get("generation", 0), "usage": {}}
    if snapshot is None:
        return reply
    config = snapshot.config
    plan = next((p for p in config.usage_plans if p.name == plan_name), None)
    if plan is None or plan.quota is None or not plan.apis:
        return reply
    compiled = stage_plans((plan,), plan.apis[0].api, plan.apis[0].stage)[plan.name]
    from lbd.gateway.listener import shared_limiter

    limiter = shared_limiter(config) or SERVICES.limiter
    now = SERVICES.clock()
    usage: dict[str, Any] = {}
    for key in SERVICES.keys.in_plan(plan_name):
        quota = compiled.quota_for(key.counter, now)
        if quota is None:
            continue
        usage[key.id] = {
            "used": await limiter.used(quota),
            "limit": quota.limit,
            "period_start": quota.period_start,
            "period_end": quota.period_end,
        }
    reply["usage"] = usage
    return reply


def attach_access_logs(snapshot: Snapshot, logs: AccessLogs) -> None:
    from lbd.gateway.listener import ApiListenerRuntime

    for runtime in snapshot.listeners.values():
        if isinstance(runtime, ApiListenerRuntime) and runtime.api.access_log is not None:
            runtime.access = logs.get(runtime.api.access_log.path, "json", f"api/{runtime.api.name}")


def retire(old: Snapshot, new: Snapshot) -> None:
    """The old Snapshot's idle target connections close; busy ones close when their request ends."""
    from lbd.gateway.listener import ApiListenerRuntime

    for runtime in old.listeners.values():
        if isinstance(runtime, ApiListenerRuntime):
            runtime.retire()
