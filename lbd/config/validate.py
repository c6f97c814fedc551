"""Checks that relate one part of a config to another; each problem is reported with its key path."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from lbd.config.edge import edge_issues
from lbd.config.edge_api import edge_api_issues
from lbd.config.gateway_checks import gateway_issues
from lbd.config.issues import ConfigIssue
from lbd.config.schema import Config, ForwardAction, Listener, LoadBalancer, RedirectAction, TargetGroup

LISTENER_PROTOCOLS = {
    "application": ("HTTP", "HTTPS"),
    "network": ("TCP", "UDP", "TCP_UDP", "TLS"),
    "classic": ("TCP", "SSL", "HTTP", "HTTPS"),
}
# Which target-group protocols may sit behind which listener protocol (ELB's pairings).
GROUP_PROTOCOLS = {
    "HTTP": ("HTTP", "HTTPS"),
    "HTTPS": ("HTTP", "HTTPS"),
    "TCP": ("TCP", "TCP_UDP"),
    "TLS": ("TCP", "TLS"),
    "UDP": ("UDP", "TCP_UDP"),
    "TCP_UDP": ("TCP_UDP",),
}
SECURE = ("HTTPS", "TLS", "SSL")
LAYER4 = ("TCP", "SSL")


def cross_check(config: Config) -> list[ConfigIssue]:
    return [
        *_unique_names(config),
        *_listeners(config),
        *_bindings(config),
        *_admin(config),
        *_stickiness(config),
        *edge_issues(config),
        *gateway_issues(config),
        *_web_acls(config),
        *edge_api_issues(config),
    ]


def _unique_names(config: Config) -> Iterator[ConfigIssue]:
    seen: dict[str, int] = {}
    for i, lb in enumerate(config.load_balancers):
        if lb.name in seen:
            yield ConfigIssue(
                f"load_balancers[{i}].name", f"{lb.name!r} is already used by load_balancers[{seen[lb.name]}]"
            )
        seen.setdefault(lb.name, i)
    groups: dict[str, int] = {}
    for i, group in enumerate(config.target_groups):
        if group.name in groups:
            yield ConfigIssue(
                f"target_groups[{i}].name",
                f"{group.name!r} is already used by target_groups[{groups[group.name]}]",
            )
        groups.setdefault(group.name, i)


def _listeners(config: Config) -> Iterator[ConfigIssue]:
    groups = {group.name: group for group in config.target_groups}
    for i, lb in enumerate(config.load_balancers):
        for j, listener in enumerate(lb.listeners):
            where = f"load_balancers[{i}].listeners[{j}]"
            allowed = LISTENER_PROTOCOLS[lb.type]
            if listener.protocol not in allowed:
                yield ConfigIssue(
                    f"{where}.protocol",
                    f"{listener.protocol} is not a {lb.type} load balancer protocol; "
                    f"allowed: {', '.join(allowed)}",
                )
                continue
            yield from _certificates(listener, where)
            if lb.type == "classic":
                yield from _classic_listener(listener, where)
                continue
            yield from _actions(lb, listener, where, groups)


def _certificates(listener: Listener, where: str) -> Iterator[ConfigIssue]:
    if listener.protocol in SECURE and not listener.certificates:
        yield ConfigIssue(
            f"{where}.certificates", f"a {listener.protocol} listener needs at least one certificate"
        )
    if listener.protocol not in SECURE and listener.certificates:
        yield ConfigIssue(
            f"{where}.certificates",
            f"only HTTPS, TLS and SSL listeners take certificates, not {listener.protocol}",
        )


def _classic_listener(listener: Listener, where: str) -> Iterator[ConfigIssue]:
    if listener.instance_protocol is None or listener.instance_port is None:
        yield ConfigIssue(where, "classic listeners need instance_protocol and instance_port")
        return
    if (listener.protocol in LAYER4) != (listener.instance_protocol in LAYER4):
        yield ConfigIssue(
            f"{where}.instance_protocol",
            f"{listener.protocol} listeners pair with "
            f"{'TCP or SSL' if listener.protocol in LAYER4 else 'HTTP or HTTPS'} instances, "
            f"not {listener.instance_protocol}",
        )
    if listener.default_actions or listener.rules:
        yield ConfigIssue(
            where, "classic listeners forward to their instances; default_actions and rules are not allowed"
        )
    # CLB: proxy protocol for TCP and SSL back ends; cookie stickiness on HTTP and HTTPS listeners.
    if listener.proxy_protocol and listener.instance_protocol not in LAYER4:
        yield ConfigIssue(
            f"{where}.proxy_protocol",
            f"PROXY protocol goes to TCP or SSL instances; {listener.instance_protocol} instances get "
            "X-Forwarded-For",
        )
    if listener.stickiness is not None and listener.protocol in LAYER4:
        yield ConfigIssue(
            f"{where}.stickiness",
            f"cookie stickiness needs an HTTP or HTTPS listener, not {listener.protocol}",
        )


def _actions(
    lb: LoadBalancer, listener: Listener, where: str, groups: dict[str, TargetGroup]
) -> Iterator[ConfigIssue]:
    if not listener.default_actions:
        yield ConfigIssue(f"{where}.default_actions", "required: at least one default action")
    if lb.type == "network":
        if listener.rules:
            yield ConfigIssue(f"{where}.rules", "network load balancer listeners have no rules")
        for k, action in enumerate(listener.default_actions):
            if not isinstance(action, ForwardAction):
                yield ConfigIssue(
                    f"{where}.default_actions[{k}].type", f"network listeners only forward, not {action.type}"
                )
            elif len(action.target_groups) != 1:
                yield ConfigIssue(
                    f"{where}.default_actions[{k}].target_groups",
                    "network listeners forward to exactly one target group",
                )
    located = [(f"{where}.default_actions[{k}]", a) for k, a in enumerate(listener.default_actions)]
    for r, rule in enumerate(listener.rules):
        located += [(f"{where}.rules[{r}].actions[{k}]", a) for k, a in enumerate(rule.actions)]
    for path, action in located:
        if isinstance(action, RedirectAction) and listener.protocol == "HTTPS" and action.protocol == "HTTP":
            yield ConfigIssue(f"{path}.protocol", "a redirect from HTTPS to HTTP is not allowed (ALB rule)")
        if not isinstance(action, ForwardAction):
            continue
        for g, weighted in enumerate(action.target_groups):
            key = f"{path}.target_group" if action.target_group else f"{path}.target_groups[{g}].name"
            group = groups.get(weighted.name)
            if group is None:
                known = ", ".join(sorted(groups)) or "none defined"
                yield ConfigIssue(
                    key, f"target group {weighted.name!r} does not exist (target groups: {known})"
                )
                continue
            protocol = group.protocol
            allowed = GROUP_PROTOCOLS.get(listener.protocol, ())
            if protocol not in allowed:
                yield ConfigIssue(
                    key,
                    f"target group {weighted.name!r} has protocol {protocol}, which a {listener.protocol} "
                    f"listener cannot forward to; allowed: {', '.join(allowed)}",
                )
            version = group.protocol_version
            if version != "HTTP1" and listener.protocol != "HTTPS" and not listener.h2c:
                yield ConfigIssue(
                    key,
                    f"{version} target groups need an HTTPS listener (ALB rule), or an HTTP listener "
                    "with h2c: true (lbd's cleartext HTTP/2)",
                )


def _stickiness(config: Config) -> Iterator[ConfigIssue]:
    """Cookie stickiness for HTTP and HTTPS groups, source_ip for the network ones (ELB's types)."""
    for i, lb in enumerate(config.load_balancers):
        if lb.type != "classic" and lb.max_connections_per_instance is not None:
            yield ConfigIssue(
                f"load_balancers[{i}].max_connections_per_instance",
                "only classic load balancers have a surge queue (docs/classic.md)",
            )
        for j, listener in enumerate(lb.listeners):
            if lb.type != "classic" and listener.proxy_protocol:
                yield ConfigIssue(
                    f"load_balancers[{i}].listeners[{j}].proxy_protocol",
                    "only classic listeners take proxy_protocol (target groups have proxy_protocol_v2)",
                )
    for i, group in enumerate(config.target_groups):
        sticky = group.stickiness
        if not sticky.enabled:
            continue
        where = f"target_groups[{i}].stickiness.type"
        layer7 = group.protocol in ("HTTP", "HTTPS")
        if layer7 and sticky.type == "source_ip":
            yield ConfigIssue(where, f"{group.protocol} target groups stick by lb_cookie or app_cookie")
        elif not layer7 and sticky.type != "source_ip":
            yield ConfigIssue(where, f"{group.protocol} target groups stick by source_ip only")
        elif not layer7 and group.algorithm != "flow_hash":
            yield ConfigIssue(
                f"target_groups[{i}].algorithm",
                "source_ip stickiness hashes the client address: it needs flow_hash (the default)",
            )


def _bindings(config: Config) -> Iterator[ConfigIssue]:
    """No two listeners may bind the same address, port and transport (0.0.0.0 / :: overlap every address)."""
    taken: list[tuple[str, int, str, str]] = []
    admin_host, _, admin_port = config.admin.listen.rpartition(":")
    taken += [(admin_host.strip("[]"), int(admin_port), "tcp", "admin.listen")]
    for i, lb in enumerate(config.load_balancers):
        for j, listener in enumerate(lb.listeners):
            where = f"load_balancers[{i}].listeners[{j}].port"
            transports = {"UDP": ("udp",), "TCP_UDP": ("tcp", "udp")}.get(listener.protocol, ("tcp",))
            for transport in transports:
                for address, port, other_transport, other in taken:
                    if (
                        port == listener.port
                        and transport == other_transport
                        and _overlap(address, listener.address)
                    ):
                        yield ConfigIssue(
                            where, f"{listener.address}:{port}/{transport} is already used by {other}"
                        )
                        break
                taken.append((listener.address, listener.port, transport, where.removesuffix(".port")))


def _overlap(a: str, b: str) -> bool:
    if a == "localhost":
        a = "127.0.0.1"
    if b == "localhost":
        b = "127.0.0.1"
    try:
        ip_a, ip_b = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return a == b
    if ip_a.version != ip_b.version:
        return False
    return ip_a == ip_b or ip_a.is_unspecified or ip_b.is_unspecified


def _admin(config: Config) -> Iterator[ConfigIssue]:
    if not config.admin.loopback and not config.admin.token_file:
        yield ConfigIssue(
            "admin.token_file",
            f"required when admin.listen ({config.admin.listen}) is not a loopback address: "
            "the admin API can reconfigure the load balancer",
        )


def _web_acls(config: Config) -> Iterator[ConfigIssue]:
    from lbd.config.web_acls import cross_check as web_acl_check

    yield from web_acl_check(
        config.web_acls,
        {lb.name: lb.type for lb in config.load_balancers},
        {api.name: api.protocol for api in config.apis},
    )
