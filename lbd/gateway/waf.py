"""Web ACLs on APIs: the bridge from a gateway request to the WAF engine (lbd/waf/).

AWS WAF inspects a request to an API Gateway stage before API Gateway does anything with it ("Use AWS WAF
to protect your REST APIs in API Gateway"), so the pipeline (lbd/gateway/pipeline.py) calls ``check`` once
per request before the route is matched. A block answers the gateway response WAF_FILTERED (403
``{"message":"Forbidden"}``, customizable as any gateway response), or the rule's custom response; an allow
passes the x-amzn-waf-* headers the ACL inserts on to the integration. Rate-based rules that aggregate by
``api_key`` count per API key id (the ``x-api-key`` header's key; a request without a known key is not
counted, as WAF does not count a request without the aggregate key).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING

from lbd.config.web_acl_reading import walk
from lbd.gateway.contracts import GatewayRequest
from lbd.gateway.responses import Answer
from lbd.waf.acl import CompiledAcl, Verdict
from lbd.waf.request import WafRequest

if TYPE_CHECKING:
    # Models or their plain records (lbd/config/plain.py): workers never import pydantic.
    from lbd.config import web_acls as model
    from lbd.runtime import ListenerKey, ListenerRuntime

WAF_FILTERED = "WAF_FILTERED"  # API Gateway's gateway response type for a request WAF blocked


class ApiFirewall:
    def __init__(self, acl: CompiledAcl, config: model.WebAcl, clock: Callable[[], float] = time.monotonic):
        self.acl = acl
        self.name = acl.name
        self.clock = clock
        self.uses_headers = acl.uses_headers
        self.needs_key = any(
            sub.rate_based is not None and sub.rate_based.aggregate_key == "api_key"
            for rule in config.rules
            for _, sub in walk(rule.statement, "statement")
        )

    def check(self, request: GatewayRequest, key_id: str | None) -> Verdict:
        headers = (
            [
                (name.encode("latin-1"), value.encode("latin-1", "replace"))
                for name, value in request.headers.items()
            ]
            if self.uses_headers
            else ()
        )
        inspected = WafRequest(
            request.method.encode("latin-1"),
            request.path.encode("latin-1", "replace"),
            request.query.encode("latin-1", "replace"),
            headers,
            request.source_ip,
            request.body,
            len(request.body),
            key_id,
        )
        return self.acl.evaluate(inspected, self.clock())

    @staticmethod
    def custom_answer(verdict: Verdict) -> Answer | None:
        """The rule's custom response, or None for WAF's default (the WAF_FILTERED gateway response)."""
        custom = verdict.response
        if custom is None:
            return None
        headers = tuple((name.lower(), value) for name, value in custom.headers)
        return Answer(
            custom.status, (*headers, ("content-type", custom.content_type)), custom.body, WAF_FILTERED
        )


def insert_headers(headers: dict[str, str], fields: bytes) -> None:
    """The x-amzn-waf-* field lines an allow or count inserts, into the request's headers."""
    for line in fields.split(b"\r\n"):
        name, sep, value = line.partition(b": ")
        if sep:
            headers[name.decode("latin-1")] = value.decode("latin-1")


def attach_apis(
    acl: CompiledAcl,
    config: model.WebAcl,
    apis: Collection[str],
    listeners: Mapping[ListenerKey, ListenerRuntime],
) -> None:
    """Hang the ACL on the pipelines of the APIs it is associated with."""
    firewall = ApiFirewall(acl, config)
    for runtime in listeners.values():
        pipeline = getattr(runtime, "pipeline", None)
        api = getattr(runtime, "api", None)
        if pipeline is not None and api is not None and api.name in apis:
            pipeline.waf = firewall
