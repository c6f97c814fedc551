"""An API as a distribution's origin: the target group its origin requests go to.

An origin ``{api: NAME}`` (the origin of an EDGE API, docs/gateway.md) is served by the edge's own origin
machinery (lbd/edge/origin.py) like any other: its requests go through a stand-in listener forwarding to
a target group, here a group made for it whose one target is the API's first listener on this host. Its
health follows the requests (passive outlier detection): the API is in the same process, so there is no
health check to run, and its listener answers as long as the worker does. Over HTTPS listeners the hop
is TLS, unverified, as ELB's to its targets.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from lbd.config.plain import replaced, template
from lbd.runtime import TargetGroupRuntime

if TYPE_CHECKING:
    from lbd.config.edge import Distribution, Origin
    from lbd.config.schema import Config

# Where a wildcard listener is reached from this host.
_LOCAL = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def origin_group_name(origin: Origin) -> str:
    """The target group name an origin's requests go to (``api:NAME`` for an API, as the API's own
    listener runtime calls its load balancer)."""
    if origin.api is not None:
        return f"api:{origin.api}"
    assert origin.target_group is not None
    return origin.target_group


def api_origin_groups(config: Config, dist: Distribution) -> Iterator[tuple[str, TargetGroupRuntime]]:
    """The groups of the distribution's API origins, by ``origin_group_name``."""
    apis = {api.name: api for api in config.apis}
    for origin in dist.origins:
        if origin.api is None:
            continue
        listener = apis[origin.api].listeners[0]
        base = template(config, "target_group")
        target = replaced(
            base.targets[0],
            id=_LOCAL.get(listener.address, listener.address),
            port=listener.port,
            zone=config.node.zone,
        )
        name = origin_group_name(origin)
        group = replaced(base, name=name, protocol=listener.protocol, targets=(target,))
        yield name, TargetGroupRuntime(group, node_zone=config.node.zone, cross_zone=True)
