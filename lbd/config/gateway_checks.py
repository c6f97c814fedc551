"""Cross-references of the gateway's config (apis, usage_plans), reported with exact key paths.

Called by validate.cross_check: integrations and REQUEST authorizers name target groups that exist and
speak HTTP; routes name authorizers of their API; route keys, API names, authorizer and plan names are
unique; API listeners take no port a load balancer listener, the admin API or another API listener has;
usage plans name APIs and stages and route keys that exist.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lbd.config.gateway_auth import JwtAuthorizer, RequestAuthorizer
from lbd.config.issues import ConfigIssue
from lbd.config.schema import Config
from lbd.config.websocket_checks import route_form_issues


def gateway_issues(config: Config) -> Iterator[ConfigIssue]:
    if not config.apis and not config.usage_plans:
        return
    yield from _apis(config)
    yield from _ports(config)
    yield from _plans(config)


def _unique(values: list[str], where: str, key: str) -> Iterator[ConfigIssue]:
    """``where[i].key`` given twice: the second one is named, with the first."""
    first: dict[str, int] = {}
    for i, value in enumerate(values):
        if value in first:
            name = where.rpartition(".")[2]
            yield ConfigIssue(f"{where}[{i}].{key}", f"{value!r} is already used by {name}[{first[value]}]")
        first.setdefault(value, i)


def _group(config: Config, name: str, where: str) -> Iterator[ConfigIssue]:
    groups = {g.name: g for g in config.target_groups}
    group = groups.get(name)
    if group is None:
        known = ", ".join(sorted(groups)) or "none defined"
        yield ConfigIssue(where, f"target group {name!r} does not exist (target groups: {known})")
    elif group.protocol not in ("HTTP", "HTTPS"):
        yield ConfigIssue(
            where, f"target group {name!r} has protocol {group.protocol}; APIs call HTTP or HTTPS groups"
        )


def _apis(config: Config) -> Iterator[ConfigIssue]:
    yield from _unique([a.name for a in config.apis], "apis", "name")
    for i, api in enumerate(config.apis):
        where = f"apis[{i}]"
        if api.route_selection_expression is not None and api.protocol != "WEBSOCKET":
            yield ConfigIssue(
                f"{where}.route_selection_expression", "only WEBSOCKET APIs select routes by expression"
            )
        yield from route_form_issues(api, where)
        authorizers = {a.name for a in api.authorizers}
        yield from _unique([a.name for a in api.authorizers], f"{where}.authorizers", "name")
        yield from _unique([r.route_key for r in api.routes], f"{where}.routes", "route_key")
        for k, authorizer in enumerate(api.authorizers):
            path = f"{where}.authorizers[{k}]"
            if isinstance(authorizer, JwtAuthorizer) and (authorizer.jwks_uri is None) == (
                authorizer.jwks_file is None
            ):
                yield ConfigIssue(path, "give exactly one of jwks_uri and jwks_file")
            if isinstance(authorizer, RequestAuthorizer):
                yield from _group(config, authorizer.endpoint.target_group, f"{path}.endpoint.target_group")
        for r, route in enumerate(api.routes):
            path = f"{where}.routes[{r}]"
            if route.integration.target_group is not None:
                yield from _group(config, route.integration.target_group, f"{path}.integration.target_group")
            if route.authorizer is not None and route.authorizer not in authorizers:
                known = ", ".join(sorted(authorizers)) or "none defined"
                yield ConfigIssue(
                    f"{path}.authorizer",
                    f"no authorizer {route.authorizer!r} in this API (authorizers: {known})",
                )
            if route.authorization_scopes and route.authorizer is None:
                yield ConfigIssue(f"{path}.authorization_scopes", "scopes need an authorizer on the route")
        if api.api_key_source == "AUTHORIZER" and not api.authorizers:
            yield ConfigIssue(
                f"{where}.api_key_source", "AUTHORIZER takes the key from an authorizer; this API has none"
            )
        for j, listener in enumerate(api.listeners):
            path = f"{where}.listeners[{j}].certificates"
            if listener.protocol == "HTTPS" and not listener.certificates:
                yield ConfigIssue(path, "an HTTPS listener needs at least one certificate")
            if listener.protocol == "HTTP" and listener.certificates:
                yield ConfigIssue(path, "only HTTPS listeners take certificates")


def _ports(config: Config) -> Iterator[ConfigIssue]:
    from lbd.config.validate import _overlap

    host, _, port = config.admin.listen.rpartition(":")
    taken: list[tuple[str, int, str]] = [(host.strip("[]"), int(port), "admin.listen")]
    for i, lb in enumerate(config.load_balancers):
        for j, lb_listener in enumerate(lb.listeners):
            if lb_listener.protocol != "UDP":
                taken.append((lb_listener.address, lb_listener.port, f"load_balancers[{i}].listeners[{j}]"))
    for i, api in enumerate(config.apis):
        for j, listener in enumerate(api.listeners):
            where = f"apis[{i}].listeners[{j}]"
            for address, number, other in taken:
                if number == listener.port and _overlap(address, listener.address):
                    yield ConfigIssue(
                        f"{where}.port", f"{listener.address}:{listener.port}/tcp is already used by {other}"
                    )
                    break
            taken.append((listener.address, listener.port, where))


def _plans(config: Config) -> Iterator[ConfigIssue]:
    apis = {a.name: a for a in config.apis}
    yield from _unique([p.name for p in config.usage_plans], "usage_plans", "name")
    for i, plan in enumerate(config.usage_plans):
        where = f"usage_plans[{i}]"
        for k, entry in enumerate(plan.apis):
            path = f"{where}.apis[{k}]"
            api = apis.get(entry.api)
            if api is None:
                known = ", ".join(sorted(apis)) or "none defined"
                yield ConfigIssue(f"{path}.api", f"no API named {entry.api!r} (APIs: {known})")
                continue
            if entry.stage != api.stage:
                yield ConfigIssue(
                    f"{path}.stage", f"API {api.name!r} has stage {api.stage!r}, not {entry.stage!r}"
                )
            keys = {r.route_key for r in api.routes}
            for t, throttle in enumerate(entry.throttle):
                if throttle.route_key not in keys:
                    yield ConfigIssue(
                        f"{path}.throttle[{t}].route_key",
                        f"API {api.name!r} has no route {throttle.route_key!r}",
                    )


def _has(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _authorizer_issues(authorizers: tuple[Any, ...], where: str) -> Iterator[ConfigIssue]:
    """What the authorizers' engine would refuse at start (an unreadable jwks_file ...)."""
    from lbd.gateway import auth  # type: ignore[attr-defined,unused-ignore]

    check = getattr(auth, "authorizer_errors", None)
    if check is None:
        return
    for k, authorizer in enumerate(authorizers):
        for text in check(authorizer, f"{where}[{k}]"):
            path, _, message = str(text).partition(": ")
            yield ConfigIssue(path, message)


def gateway_startup_issues(config: Config) -> Iterator[ConfigIssue]:
    """What validates but this build does not serve (preflight.py; ``lbd check`` and ``lbd run``)."""
    for i, api in enumerate(config.apis):
        where = f"apis[{i}]"
        if api.authorizers and not _has("lbd.gateway.auth"):
            yield ConfigIssue(f"{where}.authorizers", "authorizers are not served by this build of lbd yet")
        elif api.authorizers:
            yield from _authorizer_issues(api.authorizers, f"{where}.authorizers")
        if api.cache.enabled and not _has("lbd.cache"):
            yield ConfigIssue(
                f"{where}.cache.enabled", "the stage cache is not served by this build of lbd yet"
            )
        for j, listener in enumerate(api.listeners):
            if listener.protocol == "HTTPS" and listener.certificates:
                from lbd.tls.server import ListenerTls, TlsConfigError
                from lbd.tls.store import CertificateStore

                try:
                    ListenerTls(
                        CertificateStore(config.certificates.store),
                        listener.certificates,
                        listener.ssl_policy,
                        ["http/1.1"],
                        f"{where}.listeners[{j}]",
                    )
                except TlsConfigError as exc:
                    path, _, message = str(exc).partition(": ")
                    yield ConfigIssue(path, message)
    if config.shared_state.redis is not None and not _has("lbd.gateway.redis_limiter"):
        yield ConfigIssue(
            "shared_state.redis", "shared state in Redis is not served by this build of lbd yet"
        )
