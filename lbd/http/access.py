"""ALB access-log entries for the HTTP proxy: one per request, including the ones lbd refuses."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from lbd.observe.access_log import AccessLog, seconds, timestamp

if TYPE_CHECKING:
    from lbd.http.errors import HttpError
    from lbd.http.exchange import Exchange
    from lbd.http.proxy import HttpClientSide
    from lbd.runtime import HttpListenerRuntime


class HttpAccessLog:
    def __init__(self, log: AccessLog, listener: HttpListenerRuntime) -> None:
        self.log = log
        self.listener = listener
        self.scheme = "https" if listener.listener.protocol == "HTTPS" else "http"
        self.port = listener.listener.port

    def request(self, exchange: Exchange, now: float) -> None:
        client = exchange.client
        log = self.log
        target = exchange.target
        status = exchange.target_status if exchange.response_at else exchange.local_status
        dispatched = exchange.sent_at > 0
        answered = exchange.response_at > 0
        version = exchange.version
        host = exchange.host.decode("latin-1") or "-"
        cipher, protocol, domain, certificate = client.tls_info or ("-", "-", "-", "-")
        origin = f"{self.scheme}://{host}{_port(host, self.port)}"
        url = exchange.url.decode("latin-1")
        kind = "ws" if exchange.target_status == 101 else self.scheme
        if _over_h2(client):
            # ALB's types: h2 for HTTP/2 over TLS (lbd's h2c logs h2 too), grpcs for gRPC over TLS.
            version = "2.0"
            kind = (
                "grpcs" if _header(exchange.headers, b"content-type").startswith("application/grpc") else "h2"
            )
        entry: dict[str, Any] = {
            "type": kind,
            "time": timestamp(log.wall(now)),
            "elb": log.elb,
            "client:port": f"{client.peer[0]}:{client.peer[1]}",
            "target:port": target.label if target is not None and dispatched else "-",
            "request_processing_time": seconds(exchange.sent_at - exchange.started_at if dispatched else -1),
            "target_processing_time": seconds(exchange.response_at - exchange.sent_at if answered else -1),
            "response_processing_time": seconds(0.0 if answered else -1),
            "elb_status_code": status or "-",
            "target_status_code": exchange.target_status or "-",
            "received_bytes": client.received_bytes - exchange.received_mark,
            "sent_bytes": client.sent_bytes - exchange.sent_mark,
            "request": f"{exchange.method} {origin}{url} HTTP/{version}",
            "user_agent": _header(exchange.headers, b"user-agent"),
            "ssl_cipher": cipher,
            "ssl_protocol": protocol,
            "target_group_arn": exchange.target_group.name if exchange.target_group is not None else "-",
            "trace_id": exchange.trace_id.decode("latin-1"),
            "domain_name": domain,
            "chosen_cert_arn": certificate,
            "matched_rule_priority": exchange.action_priority,
            "request_creation_time": timestamp(log.wall(exchange.started_at)),
            "actions_executed": exchange.action or "-",
            "redirect_url": exchange.redirect_url or "-",
            "error_reason": exchange.error_reason or "-",
            "target:port_list": target.label if target is not None and dispatched else "-",
            "target_status_code_list": exchange.target_status or "-",
            "classification": exchange.classification.capitalize() if exchange.classification else "-",
            "classification_reason": exchange.classification_reason or "-",
            "waf_rule": exchange.waf_rule or "-",
            "waf_action": exchange.waf_action or "-",
        }
        log.emit(entry)

    def rejected(self, client: HttpClientSide, error: HttpError, now: float) -> None:
        """A request lbd answered before it could be parsed or routed (400, 408, 414, 431 ...)."""
        log = self.log
        entry: dict[str, Any] = {
            "type": self.scheme,
            "time": timestamp(log.wall(now)),
            "elb": log.elb,
            "client:port": f"{client.peer[0]}:{client.peer[1]}",
            "target:port": "-",
            "request_processing_time": "-1",
            "target_processing_time": "-1",
            "response_processing_time": "-1",
            "elb_status_code": error.status,
            "target_status_code": "-",
            "received_bytes": client.received_bytes - client.received_mark,
            "sent_bytes": 0,
            "request": "- - - ",
            "user_agent": "-",
            "matched_rule_priority": -1,
            "request_creation_time": timestamp(log.wall(now)),
            "actions_executed": "-",
            "redirect_url": "-",
            "error_reason": error.reason,
            "classification": "Severe" if error.desync else "-",
            "classification_reason": error.reason if error.desync else "-",
        }
        log.emit(entry)


def _over_h2(client: HttpClientSide) -> bool:
    from lbd.http.h2front import H2Stream  # not at import time: h2front imports the client side

    return isinstance(client.transport, H2Stream)


def _port(host: str, port: int) -> str:
    # ALB's "request" field always names the port: http://example.com:80/path.
    bare = host.rpartition("]")[2] if host.startswith("[") else host
    return "" if ":" in bare else f":{port}"


def _header(headers: Iterable[tuple[bytes, bytes]], lower_name: bytes) -> str:
    for name, value in headers:
        if name.lower() == lower_name:
            return value.decode("latin-1")
    return "-"
