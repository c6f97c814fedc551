"""The config schema: typed, frozen, validated once (docs/configuration.md is the reference).

Field-level rules (types, ranges, ELB's character sets and limits) live here; rules that relate one part
of the file to another (references, ports used twice, protocol pairings) live in validate.py. Defaults
that depend on context (idle timeout by load balancer type, health-check defaults by target-group
protocol ...) are filled in by ``resolve_defaults`` before validation, so every model here is final.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

# Model and the names the gateway's models share are in base.py: gateway.py and gateway_auth.py build on
# them, and this module includes their models (imported below).
from lbd.config.base import ELB_POLICIES, NAME, PATTERN_WORDS, CertificateName, Model
from lbd.config.names import target_id_error
from lbd.config.web_acls import WebAcl

ETCD_ENDPOINT = r"^https?://[^/\s]+/?$"
PATTERN_WORDS[ETCD_ENDPOINT] = "an http:// or https:// URL of an etcd member, such as http://127.0.0.1:2379"
CONTENT_TYPES = ("text/plain", "text/css", "text/html", "application/javascript", "application/json")
STICKY_RESERVED = ("AWSALB", "AWSALBAPP", "AWSALBTG")


# -- node, admin, certificates -----------------------------------------------------------------------------


class Node(Model):
    zone: str = Field("zone-a", min_length=1, max_length=64)
    workers: Literal["auto"] | Annotated[int, Field(ge=1, le=256)] = "auto"
    shutdown_timeout_seconds: float = Field(30.0, ge=0, le=3600)
    # The keys stickiness cookies are sealed with (one hex key per line, newest first); created on first
    # start when absent. Nodes that share it honour each other's cookies. Default: stickiness.keys in
    # state_dir when that is set, else a key that lives as long as the lbd process.
    stickiness_key_file: str | None = None


class Admin(Model):
    listen: str = "127.0.0.1:9900"
    token_file: str | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 1 <= int(port) <= 65535 or not host:
            raise ValueError(f"must be host:port or [v6]:port, got {value!r}")
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            if host != "localhost":
                raise ValueError(f"host must be an IP address or localhost, got {host!r}") from None
        return value

    @property
    def loopback(self) -> bool:
        host = self.listen.rpartition(":")[0].strip("[]")
        return host == "localhost" or ipaddress.ip_address(host).is_loopback


class Certificates(Model):
    store: str = "/var/lib/lbd/certs"


class AccessLog(Model):
    path: str = Field(min_length=1)
    format: Literal["alb", "json"] = "alb"


# -- rules, conditions, actions --------------------------------------------------------------------------


class QueryStringValue(Model):
    key: str | None = Field(None, max_length=128)
    value: str = Field(min_length=1, max_length=128)


ConditionField = Literal[
    "host-header", "path-pattern", "http-request-method", "http-header", "query-string", "source-ip"
]
# ALB's allowed characters per condition (AWS: Elastic Load Balancing, Application Load Balancers,
# "Listener rules" > "Condition types").
_CHARSETS = {
    "host-header": re.compile(r"^[A-Za-z0-9\-.*?]+$"),
    "path-pattern": re.compile(r"^[A-Za-z0-9 _\-.$/~\"'@:+&*?]+$"),
    "http-request-method": re.compile(r"^[A-Z\-_]+$"),
}
_CHARSET_TEXT = {
    "host-header": "A-Z a-z 0-9 - . * ?",
    "path-pattern": "A-Z a-z 0-9 space _ - . $ / ~ \" ' @ : + & * ?",
    "http-request-method": "A-Z - _",
}
_MAX_LENGTH = {"http-request-method": 40}


class Condition(Model):
    field: ConditionField
    values: tuple[Any, ...] = Field(min_length=1)
    http_header_name: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Condition:
        limit = 5 if self.field == "source-ip" else 3
        if len(self.values) > limit:
            raise ValueError(
                f"values: at most {limit} values per {self.field} condition, got {len(self.values)}"
            )
        if self.field == "http-header":
            name = self.http_header_name
            if not name:
                raise ValueError("http_header_name: required for an http-header condition")
            if len(name) > 40 or not re.fullmatch(r"[-A-Za-z0-9]+", name):
                raise ValueError(f"http_header_name: must be 1-40 of A-Z a-z 0-9 -, got {name!r}")
            if name.lower() == "host":
                raise ValueError("http_header_name: use a host-header condition for Host")
        elif self.http_header_name is not None:
            raise ValueError(f"http_header_name: only allowed on http-header conditions, not {self.field}")
        checked = tuple(self._check_value(i, v) for i, v in enumerate(self.values))
        object.__setattr__(self, "values", checked)
        return self

    def _check_value(self, index: int, value: Any) -> Any:
        where = f"values[{index}]"
        if self.field == "query-string":
            if isinstance(value, QueryStringValue):
                return value
            if not isinstance(value, dict):
                raise ValueError(
                    f"{where}: must be {{key: ..., value: ...}} or {{value: ...}}, got {value!r}"
                )
            return QueryStringValue.model_validate(value)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{where}: must be a non-empty string, got {value!r}")
        if self.field == "source-ip":
            try:
                network = ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError(
                    f"{where}: must be a CIDR block like 10.0.0.0/8 or 2001:db8::/32, got {value!r}"
                ) from None
            if str(network) == "255.255.255.255/32":
                raise ValueError(f"{where}: 255.255.255.255/32 is not allowed")
            return value
        max_length = _MAX_LENGTH.get(self.field, 128)
        if len(value) > max_length:
            raise ValueError(f"{where}: at most {max_length} characters, got {len(value)}")
        charset = _CHARSETS.get(self.field)
        if charset is not None and not charset.fullmatch(value):
            raise ValueError(f"{where}: {value!r} has characters outside {_CHARSET_TEXT[self.field]}")
        if not value.isascii() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ValueError(f"{where}: only visible ASCII characters are matched")
        return value

    @property
    def wildcards(self) -> int:
        return sum(
            str(v if not isinstance(v, QueryStringValue) else (v.key or "") + v.value).count("*")
            + str(v if not isinstance(v, QueryStringValue) else (v.key or "") + v.value).count("?")
            for v in self.values
        )


class WeightedTargetGroup(Model):
    name: str
    weight: int = Field(1, ge=0, le=999)


class GroupStickiness(Model):
    enabled: bool = False
    duration_seconds: int = Field(3600, ge=1, le=604800)


class ForwardAction(Model):
    type: Literal["forward"]
    order: int | None = Field(None, ge=1, le=50000)
    target_group: str | None = None
    target_groups: tuple[WeightedTargetGroup, ...] = ()
    stickiness: GroupStickiness = GroupStickiness()

    @model_validator(mode="after")
    def _one_form(self) -> ForwardAction:
        if self.target_group is not None and self.target_groups:
            raise ValueError("give either target_group or target_groups, not both")
        if self.target_group is None and not self.target_groups:
            raise ValueError("target_group: required (or target_groups for a weighted forward)")
        if self.target_group is not None:
            object.__setattr__(self, "target_groups", (WeightedTargetGroup(name=self.target_group),))
        if len(self.target_groups) > 5:
            raise ValueError(f"target_groups: at most 5 target groups, got {len(self.target_groups)}")
        names = [g.name for g in self.target_groups]
        if len(set(names)) != len(names):
            raise ValueError("target_groups: each target group may appear once")
        return self


class RedirectAction(Model):
    type: Literal["redirect"]
    order: int | None = Field(None, ge=1, le=50000)
    status_code: Literal["HTTP_301", "HTTP_302"]
    protocol: str = "#{protocol}"
    host: str = Field("#{host}", min_length=1, max_length=128)
    port: Annotated[str, WithJsonSchema({"type": ["string", "integer"]})] = "#{port}"
    path: str = Field("/#{path}", min_length=1, max_length=128)
    query: str = Field("#{query}", max_length=128)

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, value: str) -> str:
        if value not in ("HTTP", "HTTPS", "#{protocol}"):
            raise ValueError(f"must be HTTP, HTTPS or #{{protocol}}, got {value!r}")
        return value

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, value: Any) -> str:
        text = str(value)
        if text != "#{port}" and not (text.isdigit() and 1 <= int(text) <= 65535):
            raise ValueError(f"must be 1-65535 or #{{port}}, got {value!r}")
        return text

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must be absolute (start with /), got {value!r}")
        return value

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        if value.startswith("?"):
            raise ValueError("must not start with '?'")
        return value

    @model_validator(mode="after")
    def _changes_something(self) -> RedirectAction:
        # ALB: at least one of protocol, host, port or path must differ, or the redirect would loop.
        if (self.protocol, self.host, self.port, self.path) == (
            "#{protocol}",
            "#{host}",
            "#{port}",
            "/#{path}",
        ):
            raise ValueError("a redirect must change at least one of protocol, host, port or path")
        return self


class FixedResponseAction(Model):
    type: Literal["fixed-response"]
    order: int | None = Field(None, ge=1, le=50000)
    # ELB's API takes the code as a string ("404"); the file may give either.
    status_code: Annotated[
        int, WithJsonSchema({"type": ["integer", "string"], "pattern": "^[245][0-9][0-9]$"})
    ]
    content_type: Literal[CONTENT_TYPES] | None = None  # type: ignore[valid-type]
    message_body: str = Field("", max_length=1024)

    @field_validator("status_code", mode="before")
    @classmethod
    def _status(cls, value: Any) -> int:
        if not re.fullmatch(r"[245]\d\d", str(value)):
            raise ValueError(f"must be a 2XX, 4XX or 5XX code, got {value!r}")
        return int(value)


Action = Annotated[ForwardAction | RedirectAction | FixedResponseAction, Field(discriminator="type")]


def _check_actions(actions: tuple[Any, ...]) -> tuple[Any, ...]:
    if not actions:
        raise ValueError("at least one action is required")
    ordered = sorted(actions, key=lambda a: a.order if a.order is not None else 0)
    if len(actions) > 1:
        raise ValueError(
            "exactly one of forward, redirect or fixed-response per rule (authenticate-* is not supported)"
        )
    return tuple(ordered)


class Rule(Model):
    priority: int = Field(ge=1, le=50000)
    conditions: tuple[Condition, ...] = Field(min_length=1)
    actions: tuple[Action, ...]

    @field_validator("actions")
    @classmethod
    def _actions(cls, value: tuple[Any, ...]) -> tuple[Any, ...]:
        return _check_actions(value)

    @model_validator(mode="after")
    def _limits(self) -> Rule:
        seen: set[str] = set()
        for condition in self.conditions:
            if condition.field in ("host-header", "http-request-method", "path-pattern", "source-ip"):
                if condition.field in seen:
                    raise ValueError(f"conditions: at most one {condition.field} condition per rule")
                seen.add(condition.field)
        values = sum(len(c.values) for c in self.conditions if c.field != "source-ip")
        if values > 5:
            raise ValueError(f"conditions: at most 5 condition values per rule in total, got {values}")
        wildcards = sum(c.wildcards for c in self.conditions if c.field != "source-ip")
        if wildcards > 5:
            raise ValueError(f"conditions: at most 5 wildcards per rule, got {wildcards}")
        return self


# -- listeners and load balancers ------------------------------------------------------------------------


class ClassicStickiness(Model):
    type: Literal["duration", "application"]
    cookie_expiration_period_seconds: int | None = Field(None, ge=1)
    cookie_name: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ClassicStickiness:
        if self.type == "application" and not self.cookie_name:
            raise ValueError("cookie_name: required for application-controlled stickiness")
        return self


class AcceptProxyProtocol(Model):
    """PROXY protocol (v1 or v2, detected) on a listener behind another load balancer. Only connections
    from ``trusted_sources`` may (and must) send a header, so no other client can forge its address."""

    trusted_sources: tuple[str, ...] = Field(min_length=1)
    # The spec asks for a few seconds, at least 3 (one TCP retransmission).
    timeout_seconds: float = Field(5.0, ge=0.1, le=60)

    @field_validator("trusted_sources")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for index, text in enumerate(value):
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueError(f"[{index}]: must be a CIDR such as 10.0.0.0/8, got {text!r}") from None
        return value


class Listener(Model):
    protocol: Literal["HTTP", "HTTPS", "TCP", "UDP", "TCP_UDP", "TLS", "SSL"]
    port: int = Field(ge=1, le=65535)
    address: str = "0.0.0.0"
    certificates: tuple[CertificateName, ...] = ()
    ssl_policy: Literal[ELB_POLICIES] = "ELBSecurityPolicy-TLS13-1-2-2021-06"  # type: ignore[valid-type]
    alpn_policy: Literal["HTTP1Only", "HTTP2Only", "HTTP2Optional", "HTTP2Preferred", "None"] = "None"
    default_actions: tuple[Action, ...] = ()
    rules: tuple[Rule, ...] = ()
    instance_protocol: Literal["HTTP", "HTTPS", "TCP", "SSL"] | None = None
    instance_port: int | None = Field(None, ge=1, le=65535)
    stickiness: ClassicStickiness | None = None
    proxy_protocol: bool = False
    # lbd extension: an application HTTP listener also takes cleartext HTTP/2 with prior knowledge (RFC
    # 9113 3.3). ALB serves HTTP/2 on HTTPS listeners only.
    h2c: bool = False
    accept_proxy_protocol: AcceptProxyProtocol | None = None
    # NLB forgets a UDP flow after 120 s without datagrams; shorter here for tests and short-lived flows.
    udp_idle_timeout_seconds: float = Field(120.0, ge=0.1, le=6000)
    # Open client connections a worker serves on this listener; more are closed at once and counted as
    # RejectedConnectionCount (ALB's connection limit, R16). None: no limit.
    max_connections: int | None = Field(None, ge=1)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(
                f"must be an IP address (0.0.0.0 for all IPv4, :: for all IPv6), got {value!r}"
            ) from None
        return value

    @field_validator("default_actions")
    @classmethod
    def _default_actions(cls, value: tuple[Any, ...]) -> tuple[Any, ...]:
        return _check_actions(value) if value else value

    @model_validator(mode="after")
    def _proxy_over_udp(self) -> Listener:
        if self.accept_proxy_protocol is not None and self.protocol == "UDP":
            raise ValueError(
                "accept_proxy_protocol: UDP listeners cannot accept PROXY headers "
                "(on TCP_UDP the TCP half does)"
            )
        return self

    @field_validator("rules")
    @classmethod
    def _unique_priorities(cls, value: tuple[Rule, ...]) -> tuple[Rule, ...]:
        seen: dict[int, int] = {}
        for index, rule in enumerate(value):
            if rule.priority in seen:
                raise ValueError(
                    f"[{index}].priority: {rule.priority} is already used by rules[{seen[rule.priority]}]; "
                    "priorities must be unique per listener"
                )
            seen[rule.priority] = index
        return value  # kept in file order so error paths match the file; routing sorts by priority


class Target(Model):
    id: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)
    zone: str = Field(min_length=1)
    weight: int = Field(1, ge=0, le=1000)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        problem = target_id_error(value)
        if problem is not None:
            raise ValueError(problem)
        return value


class ClassicHealthCheck(Model):
    target: str
    interval_seconds: int = Field(30, ge=1, le=300)
    timeout_seconds: int = Field(5, ge=1, le=60)
    healthy_threshold: int = Field(10, ge=2, le=10)
    unhealthy_threshold: int = Field(2, ge=2, le=10)

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        if not re.fullmatch(r"(TCP|SSL):\d{1,5}|(HTTP|HTTPS):\d{1,5}/\S*", value):
            raise ValueError(f'must look like "TCP:80", "SSL:443" or "HTTP:8080/index.html", got {value!r}')
        return value


class LoadBalancer(Model):
    name: str = Field(pattern=NAME)
    type: Literal["application", "network", "classic"]
    scheme: Literal["internet-facing", "internal"] = "internet-facing"
    cross_zone: bool
    idle_timeout_seconds: int = Field(ge=1, le=6000)
    desync_mitigation_mode: Literal["monitor", "defensive", "strictest"] = "defensive"
    xff_header_processing: Literal["append", "preserve", "remove"] = "append"
    xff_client_port: bool = False
    preserve_host_header: bool = False
    drop_invalid_header_fields: bool = False
    http2_enabled: bool = True
    access_log: AccessLog | None = None
    listeners: tuple[Listener, ...] = Field(min_length=1)
    instances: tuple[Target, ...] = ()
    health_check: ClassicHealthCheck | None = None
    connection_draining_seconds: int = Field(300, ge=0, le=3600)
    # Classic only (lbd/surge.py): requests (HTTP) or connections (TCP) one instance takes at a time from
    # one worker's listener; beyond that they wait in a surge queue of surge_queue_length. None: no limit.
    max_connections_per_instance: int | None = Field(None, ge=1)
    surge_queue_length: int = Field(1024, ge=1, le=1024)

    @model_validator(mode="after")
    def _h2c(self) -> LoadBalancer:
        for index, listener in enumerate(self.listeners):
            if listener.h2c and (self.type != "application" or listener.protocol != "HTTP"):
                raise ValueError(
                    f"listeners[{index}].h2c: cleartext HTTP/2 is for HTTP listeners of application load "
                    f"balancers (this is a {self.type} {listener.protocol} listener; HTTPS negotiates h2 "
                    "by ALPN)"
                )
            if self.type == "application" and listener.alpn_policy == "HTTP2Only" and not self.http2_enabled:
                raise ValueError(
                    f"listeners[{index}].alpn_policy: HTTP2Only needs HTTP/2, which http2_enabled: false "
                    "turns off"
                )
        return self

    @model_validator(mode="after")
    def _idle_range(self) -> LoadBalancer:
        if self.type != "network" and self.idle_timeout_seconds > 4000:
            raise ValueError(f"idle_timeout_seconds: at most 4000 for {self.type} load balancers")
        return self


# -- target groups -----------------------------------------------------------------------------------------


class HealthCheck(Model):
    enabled: bool = True
    protocol: Literal["TCP", "HTTP", "HTTPS", "GRPC"]
    path: str = Field(min_length=1, max_length=1024)
    port: Literal["traffic-port"] | Annotated[int, Field(ge=1, le=65535)] = "traffic-port"
    # At least 2: the timeout is whole seconds, at least 1, and must be shorter than the interval.
    interval_seconds: int = Field(30, le=300, json_schema_extra={"minimum": 2})
    timeout_seconds: int = Field(ge=1, le=120)
    healthy_threshold: int = Field(5, ge=2, le=10)
    unhealthy_threshold: int = Field(2, ge=2, le=10)
    matcher: Annotated[str, WithJsonSchema({"type": ["string", "integer"]})]

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must start with /, got {value!r}")
        return value

    @field_validator("matcher", mode="before")
    @classmethod
    def _matcher(cls, value: Any) -> str:
        text = str(value)
        if not re.fullmatch(r"\d{1,3}(-\d{1,3})?(,\d{1,3}(-\d{1,3})?)*", text):
            raise ValueError(f'must be codes like "200", "200,302" or "200-299", got {value!r}')
        return text

    @field_validator("interval_seconds")
    @classmethod
    def _interval(cls, value: int) -> int:
        if value < 2:
            raise ValueError(
                f"must be at least 2 (timeout_seconds, at least 1, must be shorter than it), got {value}"
            )
        return value

    @model_validator(mode="after")
    def _grpc_codes(self) -> HealthCheck:
        # ALB: gRPC success codes are 0-99 (AWS API reference: Matcher, GrpcCode).
        if self.protocol == "GRPC" and any(int(code) > 99 for code in re.findall(r"\d+", self.matcher)):
            raise ValueError(f'matcher: gRPC codes are 0-99 ("12", "0-99", "0,12"), got {self.matcher!r}')
        return self

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> HealthCheck:
        if self.timeout_seconds >= self.interval_seconds:
            raise ValueError(
                f"timeout_seconds: must be smaller than interval_seconds ({self.interval_seconds}), "
                f"got {self.timeout_seconds} (whole seconds: at most {self.interval_seconds - 1})"
            )
        return self


class TargetGroupStickiness(Model):
    enabled: bool = False
    type: Literal["lb_cookie", "app_cookie", "source_ip"] = "lb_cookie"
    duration_seconds: int = Field(86400, ge=1, le=604800)
    cookie_name: str | None = None

    @model_validator(mode="after")
    def _cookie(self) -> TargetGroupStickiness:
        if self.type == "app_cookie":
            if not self.cookie_name:
                raise ValueError("cookie_name: required for app_cookie stickiness")
            if self.cookie_name.startswith(STICKY_RESERVED):
                raise ValueError(f"cookie_name: must not start with {', '.join(STICKY_RESERVED)}")
        return self


class MinimumHealthy(Model):
    count: int = Field(1, ge=1)
    percentage: int | None = Field(None, ge=1, le=100)


class OutlierDetection(Model):
    """Passive checks in each worker (lbd's addition; ELB has none): a target that fails this many
    requests in a row (connect errors, 5xx) gets no new ones for ejection_seconds, doubling while it keeps
    failing, until the period ends or an active health check passes. 0 (the default, as on ELB) is off."""

    consecutive_failures: int = Field(0, ge=0, le=1000)
    ejection_seconds: float = Field(30.0, ge=1, le=3600)


class ConsistentHashKey(Model):
    """What an HTTP ``consistent_hash`` target group hashes each request by (lbd's extension of ELB's
    load_balancing.algorithm.type; Maglev hashing, lbd/upstream/maglev.py): a request field, a cookie, or
    the client's address. A request without the field or cookie is balanced round robin."""

    type: Literal["http_header", "cookie", "source_ip"]
    http_header_name: str | None = Field(
        None, min_length=1, max_length=40, pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
    )
    cookie_name: str | None = Field(
        None, min_length=1, max_length=256, pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
    )

    @model_validator(mode="after")
    def _named(self) -> ConsistentHashKey:
        if self.type == "http_header" and not self.http_header_name:
            raise ValueError("http_header_name: required for type http_header")
        if self.type == "cookie" and not self.cookie_name:
            raise ValueError("cookie_name: required for type cookie")
        return self


def parse_resolver(text: str) -> tuple[str, int]:
    """A DNS server as "address", "address:port" or "[v6]:port"; port 53 when none is given."""
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(text)
            port = rest[1:]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    ipaddress.ip_address(host)
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(text)
    return host, int(port)


class DnsDiscovery(Model):
    """Targets from DNS (lbd/discovery/dns.py): SRV records (a name starting with an underscore, such as
    _web._tcp.example.internal) give id and port; A/AAAA records give ids on ``port``."""

    type: Literal["dns"]
    name: str = Field(
        min_length=1, max_length=253, pattern=r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?\.?$"
    )
    record_type: Literal["SRV", "A", "AAAA", "A_AAAA"] | None = None  # default: SRV for _names, else A_AAAA
    resolver: str | None = None  # "address:port" or "address"; default the system's resolvers
    port: int | None = Field(None, ge=1, le=65535)  # A/AAAA targets' port (default the group's port)
    zone: str | None = Field(None, min_length=1)  # zone of the targets found (default the node's)
    min_ttl_seconds: float = Field(1.0, ge=0.1, le=3600)
    max_ttl_seconds: float = Field(300.0, ge=1, le=86400)
    timeout_seconds: float = Field(5.0, ge=0.1, le=60)

    @model_validator(mode="after")
    def _bounds(self) -> DnsDiscovery:
        if self.min_ttl_seconds > self.max_ttl_seconds:
            raise ValueError("min_ttl_seconds: must not exceed max_ttl_seconds")
        if self.resolver is not None:
            try:
                parse_resolver(self.resolver)
            except ValueError:
                raise ValueError(
                    f'resolver: must be an IP address with an optional port ("127.0.0.1:53", "[::1]:53"), '
                    f"got {self.resolver!r}"
                ) from None
        return self


class EtcdDiscovery(Model):
    """Targets from etcd (lbd/discovery/etcd.py): every key under ``prefix`` holds one target as JSON,
    {"id": ..., "port": ..., "zone": ..., "weight": ...}; watched, so a change arrives at once."""

    type: Literal["etcd"]
    endpoints: tuple[Annotated[str, Field(pattern=ETCD_ENDPOINT)], ...] = Field(min_length=1)
    prefix: str = Field(min_length=1, max_length=1024)
    timeout_seconds: float = Field(5.0, ge=0.1, le=60)


Discovery = Annotated[DnsDiscovery | EtcdDiscovery, Field(discriminator="type")]


class TargetGroup(Model):
    name: str = Field(pattern=NAME)
    protocol: Literal["HTTP", "HTTPS", "TCP", "TLS", "UDP", "TCP_UDP"]
    protocol_version: Literal["HTTP1", "HTTP2", "GRPC"] = "HTTP1"
    port: int | None = Field(None, ge=1, le=65535)
    algorithm: Literal[
        "round_robin", "least_outstanding_requests", "weighted_random", "flow_hash", "consistent_hash"
    ]
    consistent_hash: ConsistentHashKey | None = None  # algorithm consistent_hash: what requests hash by
    discovery: Discovery | None = None  # targets from DNS or etcd, beside those listed and registered
    cross_zone: Literal["inherit"] | bool = "inherit"
    slow_start_seconds: int = Field(0, ge=0, le=900)
    deregistration_delay_seconds: int = Field(300, ge=0, le=3600)
    connect_timeout_seconds: float = Field(10.0, ge=0.1, le=60)
    proxy_protocol_v2: bool = False
    # Sent in the AWS 0xEA TLV of every PROXY v2 header (NLB sends the VPC endpoint id, vpce-...).
    proxy_protocol_endpoint_id: str | None = Field(
        None, min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$"
    )
    stickiness: TargetGroupStickiness = TargetGroupStickiness()
    health_check: HealthCheck
    minimum_healthy_targets: MinimumHealthy = MinimumHealthy()
    outlier_detection: OutlierDetection = OutlierDetection()
    # HTTPS and TLS target groups: like ELB, target certificates are not verified unless asked.
    verify: bool = False
    ca_bundle: str | None = None  # PEM file of CAs to verify targets against (default: the system's)
    targets: tuple[Target, ...] = ()

    @model_validator(mode="after")
    def _combinations(self) -> TargetGroup:
        if self.algorithm == "least_outstanding_requests" and self.slow_start_seconds:
            raise ValueError(
                "slow_start_seconds: cannot be combined with least_outstanding_requests (ELB rule)"
            )
        if self.protocol_version != "HTTP1" and self.protocol not in ("HTTP", "HTTPS"):
            raise ValueError(f"protocol_version: {self.protocol_version} needs an HTTP or HTTPS target group")
        if self.proxy_protocol_v2 and self.protocol not in ("TCP", "TLS", "TCP_UDP"):
            raise ValueError(
                f"proxy_protocol_v2: only TCP, TLS and TCP_UDP target groups send it, not {self.protocol}"
            )
        if (self.verify or self.ca_bundle) and self.protocol not in ("HTTPS", "TLS"):
            raise ValueError(
                f"verify: only HTTPS and TLS target groups talk TLS to targets, not {self.protocol}"
            )
        return self

    @model_validator(mode="after")
    def _consistent_hash(self) -> TargetGroup:
        if self.algorithm == "consistent_hash":
            if self.protocol not in ("HTTP", "HTTPS"):
                raise ValueError(
                    f"algorithm: consistent_hash is for HTTP and HTTPS target groups ({self.protocol} "
                    "target groups hash flows with flow_hash)"
                )
            if self.consistent_hash is None:
                raise ValueError("consistent_hash: required with algorithm consistent_hash (what to hash by)")
            if self.stickiness.enabled:
                raise ValueError(
                    "stickiness.enabled: consistent_hash already keeps each key on one target; use one or "
                    "the other"
                )
        elif self.consistent_hash is not None:
            raise ValueError(f"consistent_hash: only with algorithm consistent_hash, not {self.algorithm}")
        return self

    @model_validator(mode="after")
    def _discovery_port(self) -> TargetGroup:
        found = self.discovery
        if isinstance(found, DnsDiscovery) and found.port is None and self.port is None:
            kind = found.record_type or ("SRV" if found.name.startswith("_") else "A_AAAA")
            if kind != "SRV":
                raise ValueError("discovery.port: A/AAAA records carry no port; set discovery.port or port")
        return self


from lbd.config.edge import Distribution  # noqa: E402  (edge.py builds on the models above)

# The gateway's models (they build on base.py's Model, not on this module).
from lbd.config.gateway import Api, UsagePlan  # noqa: E402
from lbd.config.gateway_auth import SharedState  # noqa: E402


class Config(Model):
    node: Node = Node()
    admin: Admin = Admin()
    certificates: Certificates = Certificates()
    state_dir: str | None = None
    load_balancers: tuple[LoadBalancer, ...] = ()
    target_groups: tuple[TargetGroup, ...] = ()
    apis: tuple[Api, ...] = ()
    usage_plans: tuple[UsagePlan, ...] = ()
    shared_state: SharedState = SharedState()
    web_acls: tuple[WebAcl, ...] = ()  # AWS WAF's web ACLs (lbd/config/web_acls.py, docs/waf.md)
    config_path: str | None = Field(None, exclude=True)  # set by load_config; not a key of the file
    distributions: tuple[Distribution, ...] = ()  # CloudFront-style edge caches (lbd/config/edge.py)


# Keys the loader fills in from context (resolve_defaults) when the file leaves them out: required by
# the models, but not of the file.
LOADER_DEFAULTS = {
    "LoadBalancer": ("cross_zone", "idle_timeout_seconds"),
    "Target": ("port", "zone"),
    "TargetGroup": ("algorithm", "health_check"),
    "HealthCheck": ("protocol", "path", "timeout_seconds", "matcher"),
}


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a config file: what ``lbd schema`` prints."""
    schema = Config.model_json_schema(mode="validation")
    schema["properties"].pop("config_path", None)
    for name, keys in LOADER_DEFAULTS.items():
        definition = schema["$defs"][name]
        required = [key for key in definition.get("required", []) if key not in keys]
        if required:
            definition["required"] = required
        else:
            definition.pop("required", None)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "lbd configuration file",
        "description": "See docs/configuration.md. Generated by `lbd schema`.",
        **{key: value for key, value in schema.items() if key not in ("title", "description")},
    }
