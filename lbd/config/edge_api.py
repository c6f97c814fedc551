"""Edge-optimized APIs: the rules that tie an API with ``endpoint_type: EDGE`` to the distribution in
front of it, reported with exact key paths (validate.cross_check calls ``edge_api_issues``).

Amazon API Gateway serves an edge-optimized API through a CloudFront distribution it manages: viewers
reach the distribution, the distribution reaches the API ("API endpoint types for REST APIs in API
Gateway", https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-api-endpoint-types.html).
In lbd the distribution is written in the file (so its listeners, certificates, behaviors and web ACL are
the user's to choose) with an origin ``{api: NAME}``; the API's own listeners are that origin's endpoint and
listen on loopback only, as the regional endpoint behind CloudFront is not what viewers call. What holds:

- an origin names exactly one of ``target_group`` and ``api`` (the model says so), and an ``api`` names an
  API of the file that an origin can front: REST or HTTP (a distribution relays no WebSocket upgrade), not
  PRIVATE (reachable from private addresses only, which a distribution's viewers are not);
- an EDGE API is fronted by at least one enabled distribution, and each of its listeners binds a loopback
  address (127.0.0.0/8 or ::1): the distribution's listener is the public one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import TYPE_CHECKING

from lbd.config.issues import ConfigIssue

if TYPE_CHECKING:
    from lbd.config.schema import Config


def edge_api_issues(config: Config) -> Iterator[ConfigIssue]:
    apis = {api.name: api for api in config.apis}
    fronted: dict[str, list[str]] = {}  # API name -> the enabled distributions with it as an origin
    for d_index, dist in enumerate(config.distributions):
        for o_index, origin in enumerate(dist.origins):
            if origin.api is None:
                continue
            path = f"distributions[{d_index}].origins[{o_index}].api"
            api = apis.get(origin.api)
            if api is None:
                known = ", ".join(sorted(apis)) or "none defined"
                yield ConfigIssue(path, f"no API named {origin.api!r} (APIs: {known})")
            elif api.protocol == "WEBSOCKET":
                yield ConfigIssue(
                    path, f"API {api.name!r} is a WEBSOCKET API; distributions front REST and HTTP APIs"
                )
            elif api.endpoint_type == "PRIVATE":
                yield ConfigIssue(
                    path,
                    f"API {api.name!r} is PRIVATE (private sources only); an API behind a distribution "
                    "is EDGE (or REGIONAL)",
                )
            elif dist.enabled:
                fronted.setdefault(api.name, []).append(dist.name)
    for a_index, api in enumerate(config.apis):
        if api.endpoint_type != "EDGE":
            continue
        where = f"apis[{a_index}]"
        if api.protocol == "WEBSOCKET":
            yield ConfigIssue(
                f"{where}.endpoint_type",
                "WEBSOCKET APIs are REGIONAL or PRIVATE (no distribution relays them)",
            )
            continue
        if api.name not in fronted:
            yield ConfigIssue(
                f"{where}.endpoint_type",
                f"an EDGE API is served through a distribution: give an enabled distribution an origin "
                f"{{id: ..., api: {api.name}}} (none has one)",
            )
        for j, listener in enumerate(api.listeners):
            if not _loopback(listener.address):
                yield ConfigIssue(
                    f"{where}.listeners[{j}].address",
                    f"{listener.address} is not a loopback address: an EDGE API's own listener is the "
                    "origin of its distribution (viewers call the distribution's listeners); use 127.0.0.1 "
                    "or ::1",
                )


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # the listener's own validator names a bad address
