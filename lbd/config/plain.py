"""A validated config as plain data: what the supervisor sends workers, and what they build Snapshots from.

The supervisor validates the file with the pydantic schema (lbd/config/schema.py), expands classic load
balancers and applies the runtime registrations, then sends ``compact(config)``: plain JSON data, every
default filled in. A worker turns it back into read-only records with ``thaw`` and never imports pydantic
(or yaml): the data path reads the same attribute names as the schema's models, without their cost (a
worker's memory is the node's footprint times the worker count; DESIGN.md section 3).

A record is not a model: it has the fields and nothing else (no validators, no ``model_*`` methods or
properties), and the kind of an action or an authorizer is its ``type`` field, not its class (web ACL
statements: lbd/config/web_acl_reading.py). Mapping fields (headers, gateway responses) become read-only
``PlainMap`` dicts. Every section crosses this way: load balancers, target groups, APIs (WEBSOCKET ones
too), usage plans, shared state, distributions and web ACLs (the admin API's replacements applied by the
supervisor). What a worker would otherwise construct as a model (the edge's stand-in load balancers) it
copies from ``templates`` with ``replaced``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from lbd.config.schema import Config


class Record:
    """One model of the schema as plain, frozen attributes; equal (and hashed) by its fields."""

    __slots__ = ("__dict__", "_hash")
    _hash: int | None

    def __init__(self, fields: dict[str, Any]) -> None:
        object.__setattr__(self, "__dict__", fields)
        object.__setattr__(self, "_hash", None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only (a config generation never changes)")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        value = self._hash
        if value is None:
            value = hash(tuple(self.__dict__.items()))
            object.__setattr__(self, "_hash", value)
        return value

    def __repr__(self) -> str:
        return "Record(" + ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items()) + ")"


class PlainMap(dict[str, Any]):
    """A mapping field of the schema (headers, request parameters, gateway responses): a read-only dict,
    hashed by its items like a Record."""

    __slots__ = ()

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self.items()))

    def _read_only(self, *args: object, **kwargs: object) -> Any:
        raise TypeError("a config mapping is read-only (a config generation never changes)")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _read_only


# JSON has one kind of object; a mapping field is sent as {MAP: {...}} so that its keys stay keys (a header
# named like a field, a gateway response type) rather than becoming a Record's attributes.
MAP = "__map__"


def thaw_value(value: Any) -> Any:
    """JSON data as records: objects become Records (mapping fields PlainMaps), arrays tuples (the schema's
    sequences are tuples)."""
    if isinstance(value, dict):
        if len(value) == 1 and MAP in value:
            return PlainMap({str(key): thaw_value(item) for key, item in value[MAP].items()})
        return Record({str(key): thaw_value(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(thaw_value(item) for item in value)
    return value


def thaw(data: dict[str, Any]) -> Config:
    """``compact``'s output as a config the Snapshot can be built from (typed as the schema's Config: it
    has every attribute the data path reads)."""
    return cast("Config", thaw_value(data))


def compact(config: Config) -> dict[str, Any]:
    """A validated config as plain JSON data, with ``templates``: the records the edge builds its stand-in
    load balancers from. A thawed config (the supervisor's, from its validating child: lbd/validator.py)
    is melted back, templates included; a model Config needs pydantic loaded, as its caller has."""
    if isinstance(config, Record):
        return cast("dict[str, Any]", melt(config))
    data = cast("dict[str, Any]", _mark_maps(config, config.model_dump(mode="json")))
    data[TEMPLATES] = templates()
    return data


# Models a worker makes itself (a distribution's stand-in load balancer, lbd/edge/runtime.py) without the
# schema: sent once with their defaults filled in, then copied with ``replaced``.
TEMPLATES = "templates"


def templates() -> dict[str, Any]:
    """A default load balancer, listener, forward action and target group, as plain JSON data."""
    from lbd.config.schema import ForwardAction, HealthCheck, Listener, LoadBalancer, Target, TargetGroup

    forward = ForwardAction(type="forward", target_group="template")
    listener = Listener(protocol="HTTP", port=80)
    made = {
        "load_balancer": LoadBalancer(
            name="template",
            type="application",
            cross_zone=True,
            idle_timeout_seconds=60,
            listeners=(listener.model_copy(update={"default_actions": (forward,)}),),
        ),
        "listener": listener,
        "forward": forward,
        # An API as a distribution's origin (lbd/edge/api_origin.py): a group of its own listener.
        "target_group": TargetGroup(
            name="template",
            protocol="HTTP",
            algorithm="round_robin",
            health_check=HealthCheck(
                enabled=False, protocol="HTTP", path="/", timeout_seconds=5, matcher="200"
            ),
            targets=(Target(id="127.0.0.1", port=80, zone="zone-a"),),
        ),
    }
    return {name: _mark_maps(model, model.model_dump(mode="json")) for name, model in made.items()}


def template(config: Any, name: str) -> Any:
    """Template ``name`` of ``config``: a thawed config's own, or made now for a model Config (whose
    caller has the schema loaded already)."""
    found = getattr(config, TEMPLATES, None)
    if found is None:
        found = thaw_value(templates())
    return getattr(found, name)


def replaced(value: Any, **changes: Any) -> Any:
    """A copy of a record (or a model) with ``changes``: ``model_copy(update=...)`` for either."""
    if isinstance(value, Record):
        return Record({**value.__dict__, **changes})
    return value.model_copy(update=changes)


def _mark_maps(value: Any, dumped: Any) -> Any:
    """``dumped`` (pydantic's JSON dump of ``value``) with each dict field wrapped as {MAP: ...}: the model
    says which objects are mappings, the dump how each value is written."""
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return {name: _mark_maps(getattr(value, name), item) for name, item in dumped.items()}
    if isinstance(value, dict):
        return {
            MAP: {
                key: _mark_maps(item, out)
                for item, (key, out) in zip(value.values(), dumped.items(), strict=True)
            }
        }
    if isinstance(value, list | tuple):
        return [_mark_maps(item, out) for item, out in zip(value, dumped, strict=True)]
    return dumped


def melt(value: Any) -> Any:
    """``thaw_value``'s inverse: records as the JSON data they came from (mapping fields marked again). A
    model inside a record (a web ACL the admin API replaced) is dumped as ``compact`` dumps one."""
    if isinstance(value, PlainMap):
        return {MAP: {key: melt(item) for key, item in value.items()}}
    if isinstance(value, Record):
        return {key: melt(item) for key, item in value.__dict__.items()}
    if isinstance(value, list | tuple):
        return [melt(item) for item in value]
    if hasattr(value, "model_dump"):
        return _mark_maps(value, value.model_dump(mode="json"))
    return value


def fields(value: Any) -> dict[str, Any]:
    """A record's (or a model's) fields as a dict, like ``model_dump()``: its JSON data."""
    if isinstance(value, Record):
        return cast("dict[str, Any]", melt(value))
    return cast("dict[str, Any]", value.model_dump())
