"""Classic Load Balancers, served by the application and network data paths (AWS: "What is a Classic Load
Balancer?", "Listeners for your Classic Load Balancer").

A classic load balancer has listeners and instances but no target groups: each listener forwards to the
instances on its ``instance_port``. ``expand`` turns every classic listener into what lbd already serves, a
listener forwarding to a target group of its own, named ``<load balancer>:<listener port>`` (a colon, so it
can never be a configured group's name), with CLB's behaviour:

- HTTP and HTTPS listeners (layer 7) run the HTTP proxy with least outstanding requests; TCP and SSL
  listeners (layer 4) splice bytes with round robin, optionally after a PROXY protocol v1 line;
- HTTPS and SSL instance protocols re-encrypt to the instances;
- the ``health_check.target`` string with CLB's defaults (lbd/health/classic.py);
- connection draining as the group's deregistration delay (0: off, connections closed at once);
- cross-zone as the load balancer says (off unless ``cross_zone: true``, as CLB's API);
- per-listener cookie stickiness (AWSELB), attached to the group by ``classic_stickiness``.

``load_for_run`` expands after the checks, so errors name the keys of the file; workers expand the same
text the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from lbd.health.classic import CLB_MATCHER, parse_target

if TYPE_CHECKING:
    # Workers read classic_stickiness from plain records (lbd/config/plain.py) without the schema; the
    # functions that build models import it themselves.
    from lbd.config.schema import ClassicStickiness, Config, HealthCheck, Listener, LoadBalancer, TargetGroup

# Instance protocol -> the target-group protocol that talks to it.
GROUP_PROTOCOL = {"HTTP": "HTTP", "HTTPS": "HTTPS", "TCP": "TCP", "SSL": "TLS"}


def group_name(lb: LoadBalancer, listener: Listener) -> str:
    return f"{lb.name}:{listener.port}"


def expand(config: Config) -> Config:
    """``config`` with each classic listener forwarding to a target group of its instances."""
    if not any(lb.type == "classic" for lb in config.load_balancers):
        return config
    from lbd.config.schema import ForwardAction, WeightedTargetGroup

    groups = list(config.target_groups)
    balancers = []
    for lb in config.load_balancers:
        if lb.type != "classic":
            balancers.append(lb)
            continue
        listeners = []
        for listener in lb.listeners:
            group = _group(lb, listener)
            groups.append(group)
            forward = ForwardAction.model_construct(
                type="forward",
                order=None,
                target_group=group.name,
                target_groups=(WeightedTargetGroup.model_construct(name=group.name, weight=1),),
                stickiness=ForwardAction.model_fields["stickiness"].default,
            )
            listeners.append(listener.model_copy(update={"default_actions": (forward,)}))
        balancers.append(lb.model_copy(update={"listeners": tuple(listeners)}))
    return config.model_copy(update={"load_balancers": tuple(balancers), "target_groups": tuple(groups)})


def _group(lb: LoadBalancer, listener: Listener) -> TargetGroup:
    assert listener.instance_protocol is not None and listener.instance_port is not None  # validate.py
    from lbd.config.schema import Target, TargetGroup

    layer7 = listener.instance_protocol in ("HTTP", "HTTPS")
    port = listener.instance_port
    targets = tuple(
        Target.model_construct(id=i.id, port=port, zone=i.zone, weight=i.weight) for i in lb.instances
    )
    base = TargetGroup.model_fields
    return TargetGroup.model_construct(
        name=group_name(lb, listener),
        protocol=cast(Any, GROUP_PROTOCOL[listener.instance_protocol]),
        protocol_version="HTTP1",
        port=port,
        # CLB: least outstanding requests for HTTP and HTTPS listeners, round robin for TCP and SSL.
        algorithm="least_outstanding_requests" if layer7 else "round_robin",
        cross_zone=lb.cross_zone,
        slow_start_seconds=0,
        deregistration_delay_seconds=lb.connection_draining_seconds,
        connect_timeout_seconds=10.0,
        proxy_protocol_v2=False,
        stickiness=base["stickiness"].default,
        health_check=_health_check(lb, port),
        minimum_healthy_targets=base["minimum_healthy_targets"].default,
        outlier_detection=base["outlier_detection"].default,
        verify=False,
        ca_bundle=None,
        targets=targets,
    )


def _health_check(lb: LoadBalancer, instance_port: int) -> HealthCheck:
    from lbd.config.schema import HealthCheck

    check = lb.health_check
    if check is None:
        # CLB's API makes TCP:80 the default; lbd checks the listener's own instance port, which is what a
        # load balancer without a configured check can know to be served.
        target, interval, timeout, healthy, unhealthy = f"TCP:{instance_port}", 30, 5, 10, 2
    else:
        target, interval, timeout = check.target, check.interval_seconds, check.timeout_seconds
        healthy, unhealthy = check.healthy_threshold, check.unhealthy_threshold
    parsed = parse_target(target)
    return HealthCheck.model_construct(
        enabled=True,
        protocol=cast(Any, parsed.protocol),  # SSL too: CLB's TLS-handshake check (lbd/health/probes.py)
        path=parsed.path,
        port=parsed.port,
        interval_seconds=interval,
        timeout_seconds=timeout,
        healthy_threshold=healthy,
        unhealthy_threshold=unhealthy,
        matcher=CLB_MATCHER,
    )


def classic_stickiness(config: Config) -> dict[str, tuple[str, ClassicStickiness]]:
    """The stickiness of each classic listener (HTTP and HTTPS only), by the name of its target group, with
    the load balancer's name: AWSELB names an instance of the load balancer, so a cookie set on one listener
    or node holds on another with the same instances."""
    return {
        group_name(lb, listener): (lb.name, listener.stickiness)
        for lb in config.load_balancers
        if lb.type == "classic"
        for listener in lb.listeners
        if listener.stickiness is not None and listener.protocol in ("HTTP", "HTTPS")
    }


def classic_groups(config: Config) -> set[str]:
    return {
        group_name(lb, listener)
        for lb in config.load_balancers
        if lb.type == "classic"
        for listener in lb.listeners
    }
