"""A WebSocket API's listeners in a Snapshot: the API listener machinery (sockets, TLS, accept limits,
access log) with the API compiled as a WebSocketApi instead of a request pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from lbd.gateway.fetch import GatewayFetch
from lbd.gateway.listener import ApiListenerRuntime, LazyAuthorizers, _tls
from lbd.gateway.services import SERVICES
from lbd.gateway.websocket.api import WebSocketApi
from lbd.runtime import ListenerKey, ListenerRuntime

if TYPE_CHECKING:
    # Models or their plain records (lbd/config/plain.py): workers never import pydantic.
    from lbd.config.gateway import Api, ApiListener
    from lbd.config.gateway_auth import SharedState
    from lbd.config.schema import Config
    from lbd.gateway.contracts import Limiter
    from lbd.gateway.pipeline import ApiPipeline
    from lbd.observe.stats import StatsRegistry
    from lbd.runtime import TargetGroupRuntime


class WebSocketListenerRuntime(ApiListenerRuntime):
    kind = "websocket"

    def __init__(
        self,
        key: ListenerKey,
        api: Api,
        listener: ApiListener,
        ws_api: WebSocketApi,
        shared: SharedState,
        target_groups: Mapping[str, TargetGroupRuntime],
        stats: StatsRegistry,
        generation: int,
    ) -> None:
        # No request pipeline: every event goes through ws_api (the listener part is the same).
        super().__init__(key, api, listener, cast("ApiPipeline", None), target_groups, stats, generation)
        self.ws_api = ws_api
        self.shared = shared
        self.idle_timeout = ws_api.idle_timeout


def websocket_listeners(
    config: Config,
    index: int,
    api: Api,
    target_groups: Mapping[str, TargetGroupRuntime],
    stats: StatsRegistry,
    generation: int,
    fetch: GatewayFetch,
    limiter: Limiter,
) -> dict[ListenerKey, ListenerRuntime]:
    ws_api = WebSocketApi(
        api,
        config.usage_plans,
        keys=SERVICES.key_table,
        fetch=fetch,
        limiter=limiter,
        clock=SERVICES.clock,
        authorizers=LazyAuthorizers(api, fetch, SERVICES.clock),
    )
    out: dict[ListenerKey, ListenerRuntime] = {}
    for j, listener in enumerate(api.listeners):
        key = ListenerKey(listener.address, listener.port, "tcp")
        runtime = WebSocketListenerRuntime(
            key, api, listener, ws_api, config.shared_state, target_groups, stats, generation
        )
        runtime.pipeline_fetch = fetch
        if listener.protocol == "HTTPS":
            runtime.tls = _tls(config, listener, f"apis[{index}].listeners[{j}]")
        out[key] = runtime
    return out
