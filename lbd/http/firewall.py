"""Web ACLs on application listeners: the bridge from an Exchange to the WAF engine (lbd/waf/).

``attach`` compiles each web ACL once per Snapshot and hangs it on the dispatcher of every listener of the
load balancers it is associated with; a listener without one keeps ``dispatcher.waf`` None, and the
exchange pays one pointer check (lbd/http/exchange.py). With an ACL, the exchange calls ``check`` once per
request before listener rules, as ALB does with WAF (AWS: Application Load Balancers, "AWS WAF"), and
answers a block itself with WAF's 403 page or the rule's custom response.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from lbd.config.web_acl_reading import read_ip_set_files
from lbd.http import errors
from lbd.http.messages import has_body
from lbd.routing.phrases import phrase
from lbd.waf.acl import BlockResponse, CompiledAcl, Verdict, WafState
from lbd.waf.request import WafRequest, fast_request

if TYPE_CHECKING:
    from lbd.config.schema import Config
    from lbd.http.exchange import Exchange
    from lbd.runtime import ListenerKey, ListenerRuntime


class FirewallError(Exception):
    """An IP set file that cannot be read (named by its key path)."""


class Firewall:
    def __init__(self, acl: CompiledAcl, clock: Callable[[], float] = time.monotonic) -> None:
        self.acl = acl
        self.name = acl.name
        self.needs_body = acl.needs_body
        self.body_field = acl.body_field
        self.uses_headers = acl.uses_headers or acl.body_field
        self.clock = clock
        self._pages: dict[tuple[BlockResponse, bool], bytes] = {}

    def wants_body(self, exchange: Exchange) -> bool:
        """Whether to wait for the body's first bytes before deciding: only when a rule inspects the body
        and the request has one."""
        return self.needs_body and has_body(exchange.headers)

    def check(self, exchange: Exchange, body: bytes) -> Verdict:
        block = exchange.head_block
        if block is not None:
            # The fast path's request (bodiless): its target and raw field lines as they are, split or
            # searched only for the fields a rule of the ACL inspects (lbd/waf/plan.py).
            return self.acl.evaluate(
                fast_request(exchange.method, exchange.url, block, exchange.client.peer[0]), self.clock()
            )
        # The whole body's size only when a rule looks at the body and the request may have one.
        size = len(body)
        if self.body_field:
            size = max(size, _content_length(exchange))
        # Headers only when a rule reads one.
        headers = exchange.headers if self.uses_headers else ()
        request = WafRequest.from_target(
            exchange.method, exchange.url, headers, exchange.client.peer[0], body, size
        )
        return self.acl.evaluate(request, self.clock())

    def block_page(self, verdict: Verdict, close: bool) -> bytes:
        custom = verdict.response
        if custom is None:
            return errors.error_response(403, close)  # WAF's default block: 403 Forbidden
        page = self._pages.get((custom, close))
        if page is None:
            head = [f"HTTP/1.1 {custom.status} {phrase(custom.status)}", "Server: lbd"]
            head += [f"{name}: {value}" for name, value in custom.headers]
            head += [f"Content-Type: {custom.content_type}", f"Content-Length: {len(custom.body)}"]
            if close:
                head.append("Connection: close")
            page = self._pages[(custom, close)] = ("\r\n".join(head) + "\r\n\r\n").encode(
                "latin-1"
            ) + custom.body
        return page


def _content_length(exchange: Exchange) -> int:
    for name, value in exchange.headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def attach(config: Config, listeners: Mapping[ListenerKey, ListenerRuntime], state: WafState) -> None:
    """Compile the web ACLs and hang each on the listeners of the load balancers it protects."""
    if not config.web_acls:
        return
    files, issues = read_ip_set_files(config.web_acls)
    if issues:
        raise FirewallError("; ".join(str(issue) for issue in issues))
    _shared_rates(config, state)
    by_load_balancer: dict[str, Firewall] = {}
    for acl in config.web_acls:
        apis = [a.api for a in acl.associations if a.api is not None]
        compiled = (
            CompiledAcl(acl, files, state) if apis or any(a.load_balancer for a in acl.associations) else None
        )
        if compiled is None:
            continue
        if apis:
            from lbd.gateway.waf import attach_apis

            attach_apis(compiled, acl, apis, listeners)
        if not any(a.load_balancer for a in acl.associations):
            continue
        firewall = Firewall(compiled)
        for association in acl.associations:
            if association.load_balancer is not None:
                by_load_balancer[association.load_balancer] = firewall
    for runtime in listeners.values():
        protecting = by_load_balancer.get(runtime.load_balancer.name)
        dispatcher = getattr(runtime, "dispatcher", None)
        if protecting is not None and dispatcher is not None:
            dispatcher.waf = protecting


def _shared_rates(config: Config, state: WafState) -> None:
    """Rate-based rules count fleet-wide in shared_state.redis when it is set (lbd/gateway/redis_rates.py),
    in process otherwise."""
    shared = config.shared_state
    if shared.redis is None:
        state.shared = None
        state.shared_key = None
        return
    from lbd.gateway.redis_rates import install

    install(state, shared)
