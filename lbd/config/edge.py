"""The config of distributions (CloudFront's nouns): listeners, origins, origin groups, cache behaviors.

The keys follow the CloudFront API's DistributionConfig where a single host has a use for them
(https://docs.aws.amazon.com/cloudfront/latest/APIReference/API_DistributionConfig.html), in lbd's
snake_case: ``origins``, ``origin_groups``, ``default_cache_behavior``, ``cache_behaviors`` (ordered,
first match wins), ``custom_error_responses``. Origins are target groups, so health checks, balancing
and TLS to origins are the load balancer's. Rules that relate one part of the file to another (origin
ids, target groups, policy names, ports) are in ``edge_issues``, which validate.py calls.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from lbd.config.base import NAME, Model
from lbd.config.gateway import ApiListener
from lbd.config.schema import Listener

if TYPE_CHECKING:
    from lbd.config.issues import ConfigIssue
    from lbd.config.schema import Config

# CloudFront's origin failover codes (RequestAndResponseBehaviorOriginGroups).
FAILOVER_CODES = (400, 403, 404, 416, 500, 502, 503, 504)
# The codes CloudFront's custom error responses take (API_CustomErrorResponse).
ERROR_CODES = (400, 403, 404, 405, 414, 416, 500, 501, 502, 503, 504)
# Path patterns: CloudFront's character set (distribution-web-values-specify, "Path pattern").
PATH_PATTERN = r"^[A-Za-z0-9 _\-.*$/~\"'@:+&?]{1,255}$"
MANAGED_POLICIES = (
    "CachingOptimized",
    "CachingOptimizedForUncompressedObjects",
    "CachingDisabled",
    "UseOriginCacheControlHeaders",
    "UseOriginCacheControlHeaders-QueryStrings",
    "Amplify",
)
HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$")


class EdgeListener(ApiListener):
    """Where a distribution listens: the load balancer listener's shape, HTTP or HTTPS only (as an
    API's), and HTTP/2 by ALPN on HTTPS."""

    http2_enabled: bool = True  # HTTPS offers h2 by ALPN (CloudFront's HttpVersion http2)

    def as_listener(self) -> Listener:
        """The load balancer listener it is served as (the same sockets, TLS and SNI code)."""
        return Listener(
            protocol=self.protocol,
            port=self.port,
            address=self.address,
            certificates=self.certificates,
            ssl_policy=self.ssl_policy,
            max_connections=self.max_connections,
        )

    @model_validator(mode="after")
    def _certificates(self) -> EdgeListener:
        if self.protocol == "HTTPS" and not self.certificates:
            raise ValueError("certificates: an HTTPS listener needs at least one certificate")
        if self.protocol == "HTTP" and self.certificates:
            raise ValueError("certificates: only HTTPS listeners take certificates")
        return self


class OriginAccess(Model):
    """Origin access control: what proves to the origin that a request came through the distribution.

    ``header``: a custom header with a secret value (CloudFront's documented pattern of a custom origin
    header the origin checks). ``sigv4``: requests are signed with AWS Signature Version 4 (CloudFront's
    origin access control, signing_behavior always)."""

    type: Literal["header", "sigv4"]
    header_name: str = "X-Origin-Secret"
    secret_file: str | None = None  # header: the value; sigv4: the secret access key
    secret: str | None = None  # inline (tests, examples); a file keeps it out of the config
    access_key_id: str | None = None
    region: str = "us-east-1"
    service: str = "s3"

    @model_validator(mode="after")
    def _secret(self) -> OriginAccess:
        if (self.secret_file is None) == (self.secret is None):
            raise ValueError("exactly one of secret_file and secret must be set")
        if self.type == "sigv4" and not self.access_key_id:
            raise ValueError("access_key_id: required for sigv4")
        if not HEADER_NAME.match(self.header_name):
            raise ValueError(f"header_name: {self.header_name!r} is not a header field name")
        return self

    def secret_value(self) -> str:
        if self.secret is not None:
            return self.secret
        from pathlib import Path

        assert self.secret_file is not None
        return Path(self.secret_file).read_text(encoding="utf-8").strip()


class Origin(Model):
    id: str = Field(pattern=NAME)
    # What the origin is: a target group, or an API of this file (the origin of an EDGE API; its own
    # listener is then reached on loopback, docs/gateway.md "Edge-optimized APIs"). Exactly one.
    target_group: str | None = Field(None, min_length=1)
    api: str | None = Field(None, pattern=NAME)
    origin_path: str = Field("", pattern=r"^(/[^\s?#]*[^/\s?#])?$")  # prefixed to the request path
    custom_headers: dict[str, str] = {}
    response_timeout_seconds: float = Field(30.0, ge=1, le=180)  # CloudFront: 30 s default
    origin_access: OriginAccess | None = None

    @field_validator("custom_headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a header field name")
            if any(c in text for c in "\r\n\0"):
                raise ValueError(f"{name}: the value must not hold CR, LF or NUL")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Origin:
        if (self.target_group is None) == (self.api is None):
            raise ValueError("give exactly one of target_group and api (what the origin is)")
        return self


class OriginGroup(Model):
    id: str = Field(pattern=NAME)
    members: tuple[str, ...] = Field(min_length=2, max_length=2)  # primary, secondary (CloudFront: 2)
    failover_status_codes: tuple[int, ...] = (500, 502, 503, 504)

    @field_validator("failover_status_codes")
    @classmethod
    def _codes(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for code in value:
            if code not in FAILOVER_CODES:
                raise ValueError(f"{code} cannot fail over; CloudFront's failover codes are {FAILOVER_CODES}")
        return value


class NameSelection(Model):
    """Query strings or cookies in the cache key: a whitelist or every name except some."""

    whitelist: tuple[str, ...] | None = None
    all_except: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _one(self) -> NameSelection:
        if (self.whitelist is None) == (self.all_except is None):
            raise ValueError("exactly one of whitelist and all_except must be set")
        return self


Selection = Literal["none", "all"] | NameSelection


class CachePolicy(Model):
    """A cache policy (API_CachePolicyConfig): TTLs and what the cache key holds."""

    min_ttl: int = Field(0, ge=0, le=3_153_600_000)
    default_ttl: int | None = Field(None, ge=0, le=3_153_600_000)  # CloudFront: 86400
    max_ttl: int | None = Field(None, ge=0, le=3_153_600_000)  # CloudFront: 31536000
    query_strings: Selection = "none"
    headers: tuple[str, ...] = ()
    cookies: Selection = "none"
    enable_accept_encoding_gzip: bool = True
    enable_accept_encoding_brotli: bool = True

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a header field name")
            if name.lower() == "accept-encoding":
                raise ValueError("Accept-Encoding is in the key through enable_accept_encoding_gzip/brotli")
        return value

    @model_validator(mode="after")
    def _order(self) -> CachePolicy:
        default = self.default_ttl if self.default_ttl is not None else max(86400, self.min_ttl)
        maximum = self.max_ttl if self.max_ttl is not None else max(31_536_000, default)
        if default < self.min_ttl:
            raise ValueError(f"default_ttl ({default}) must be at least min_ttl ({self.min_ttl})")
        if maximum < default:
            raise ValueError(f"max_ttl ({maximum}) must be at least default_ttl ({default})")
        return self


class NamedCachePolicy(CachePolicy):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")


class CacheBehaviorBase(Model):
    origin: str = Field(min_length=1)  # an origin id or an origin group id
    cache_policy: str | CachePolicy = "CachingOptimized"
    compress: bool = False
    allowed_methods: Literal["GET_HEAD", "GET_HEAD_OPTIONS", "ALL"] = "GET_HEAD"


class CacheBehavior(CacheBehaviorBase):
    path_pattern: str = Field(pattern=PATH_PATTERN)


class CustomErrorResponse(Model):
    error_code: int
    error_caching_min_ttl: int = Field(10, ge=0, le=31_536_000)  # CloudFront: 10 s
    response_page_path: str | None = Field(None, pattern=r"^/[^\s]*$")
    response_code: int | None = None

    @field_validator("error_code")
    @classmethod
    def _code(cls, value: int) -> int:
        if value not in ERROR_CODES:
            raise ValueError(f"must be one of {ERROR_CODES}")
        return value

    @model_validator(mode="after")
    def _page(self) -> CustomErrorResponse:
        if (self.response_code is None) != (self.response_page_path is None):
            raise ValueError("response_code and response_page_path go together")
        if self.response_code is not None and not 200 <= self.response_code <= 599:
            raise ValueError("response_code: an HTTP status code (200-599)")
        return self


class EdgeCache(Model):
    capacity_mb: float = Field(256, gt=0, le=1_048_576)
    # Larger objects are passed through to the viewer, never stored (nor buffered whole).
    max_object_mb: float = Field(16, gt=0, le=30_720)


class EdgeAccessLog(Model):
    path: str = Field(min_length=1)


class Distribution(Model):
    name: str = Field(pattern=NAME)
    enabled: bool = True
    comment: str = ""
    listeners: tuple[EdgeListener, ...] = Field(min_length=1)
    origins: tuple[Origin, ...] = Field(min_length=1)
    origin_groups: tuple[OriginGroup, ...] = ()
    cache_policies: tuple[NamedCachePolicy, ...] = ()
    default_cache_behavior: CacheBehaviorBase
    cache_behaviors: tuple[CacheBehavior, ...] = ()
    custom_error_responses: tuple[CustomErrorResponse, ...] = ()
    cache: EdgeCache = EdgeCache()
    access_log: EdgeAccessLog | None = None
    # CloudFront's headers name its servers; an lbd node names itself with this (Via, X-Cache).
    edge_name: str = Field("lbd", pattern=r"^[A-Za-z0-9.\-]{1,64}$")


# -- cross checks ------------------------------------------------------------------------------------------


def edge_issues(config: Config) -> Iterator[ConfigIssue]:
    from lbd.config.issues import ConfigIssue

    groups = {group.name: group for group in config.target_groups}
    names: dict[str, int] = {}
    for d_index, dist in enumerate(config.distributions):
        where = f"distributions[{d_index}]"
        if dist.name in names:
            yield ConfigIssue(
                f"{where}.name", f"{dist.name!r} is already used by distributions[{names[dist.name]}]"
            )
        names.setdefault(dist.name, d_index)
        origin_ids: dict[str, int] = {}
        for o_index, origin in enumerate(dist.origins):
            if origin.id in origin_ids:
                yield ConfigIssue(f"{where}.origins[{o_index}].id", f"{origin.id!r} is already an origin")
            origin_ids.setdefault(origin.id, o_index)
            if origin.target_group is None:
                continue  # an API as the origin: lbd/config/edge_api.py checks it
            group = groups.get(origin.target_group)
            if group is None:
                yield ConfigIssue(
                    f"{where}.origins[{o_index}].target_group",
                    f"no target group named {origin.target_group!r}",
                )
            elif group.protocol not in ("HTTP", "HTTPS"):
                yield ConfigIssue(
                    f"{where}.origins[{o_index}].target_group",
                    f"origins are HTTP or HTTPS target groups; {group.name} is {group.protocol}",
                )
        group_ids: set[str] = set()
        for g_index, origin_group in enumerate(dist.origin_groups):
            if origin_group.id in origin_ids or origin_group.id in group_ids:
                yield ConfigIssue(
                    f"{where}.origin_groups[{g_index}].id", f"{origin_group.id!r} is already used"
                )
            group_ids.add(origin_group.id)
            for m_index, member in enumerate(origin_group.members):
                if member not in origin_ids:
                    yield ConfigIssue(
                        f"{where}.origin_groups[{g_index}].members[{m_index}]",
                        f"no origin with id {member!r}",
                    )
        policies = {policy.name for policy in dist.cache_policies}
        for p_index, policy in enumerate(dist.cache_policies):
            if policy.name in MANAGED_POLICIES:
                yield ConfigIssue(
                    f"{where}.cache_policies[{p_index}].name", "is the name of a managed policy"
                )
        behaviors = [("default_cache_behavior", dist.default_cache_behavior)] + [
            (f"cache_behaviors[{i}]", b) for i, b in enumerate(dist.cache_behaviors)
        ]
        for path, behavior in behaviors:
            if behavior.origin not in origin_ids and behavior.origin not in group_ids:
                yield ConfigIssue(
                    f"{where}.{path}.origin", f"no origin or origin group with id {behavior.origin!r}"
                )
            policy_name = behavior.cache_policy
            if (
                isinstance(policy_name, str)
                and policy_name not in MANAGED_POLICIES
                and policy_name not in policies
            ):
                yield ConfigIssue(
                    f"{where}.{path}.cache_policy",
                    f"no cache policy named {policy_name!r} (managed: {', '.join(MANAGED_POLICIES)}; "
                    "or one of cache_policies)",
                )
        codes: set[int] = set()
        for e_index, error in enumerate(dist.custom_error_responses):
            if error.error_code in codes:
                yield ConfigIssue(f"{where}.custom_error_responses[{e_index}].error_code", "listed twice")
            codes.add(error.error_code)
    yield from _bindings(config)
    yield from _web_acl_associations(config, names)


def _web_acl_associations(config: Config, names: dict[str, int]) -> Iterator[ConfigIssue]:
    """A web ACL's distribution association names a distribution of the file, and each distribution
    has at most one web ACL (AWS WAF: a resource is associated with one web ACL)."""
    from lbd.config.issues import ConfigIssue

    owner: dict[str, str] = {}
    for i, acl in enumerate(config.web_acls):
        for j, association in enumerate(acl.associations):
            name = association.distribution
            if name is None:
                continue
            path = f"web_acls[{i}].associations[{j}].distribution"
            if name not in names:
                yield ConfigIssue(
                    path, f"no distribution named {name!r} (defined: {', '.join(names) or 'none'})"
                )
            elif owner.setdefault(name, acl.name) != acl.name:
                yield ConfigIssue(path, f"{name!r} is already associated with web ACL {owner[name]!r}")


def _bindings(config: Config) -> Iterator[ConfigIssue]:
    """A distribution's listener must not take a port a load balancer, an API, the admin API or another
    distribution listens on."""
    from lbd.config.issues import ConfigIssue
    from lbd.config.validate import _overlap

    admin_host, _, admin_port = config.admin.listen.rpartition(":")
    taken: list[tuple[str, int, str]] = [(admin_host.strip("[]"), int(admin_port), "admin.listen")]
    for i, lb in enumerate(config.load_balancers):
        for j, listener in enumerate(lb.listeners):
            if listener.protocol not in ("UDP",):
                taken.append((listener.address, listener.port, f"load_balancers[{i}].listeners[{j}]"))
    for a_index, api in enumerate(config.apis):
        for j, api_listener in enumerate(api.listeners):
            taken.append((api_listener.address, api_listener.port, f"apis[{a_index}].listeners[{j}]"))
    for d_index, dist in enumerate(config.distributions):
        for l_index, viewer in enumerate(dist.listeners):
            where = f"distributions[{d_index}].listeners[{l_index}]"
            for address, port, other in taken:
                if port == viewer.port and _overlap(address, viewer.address):
                    yield ConfigIssue(f"{where}.port", f"{viewer.address}:{port} is already used by {other}")
                    break
            taken.append((viewer.address, viewer.port, where))


def edge_startup_issues(config: Config) -> Iterator[ConfigIssue]:
    """What ``lbd run`` would refuse on a valid file (lbd/config/preflight.py): certificates the store
    cannot load for HTTPS viewers, origin secrets that cannot be read."""
    from lbd.config.issues import ConfigIssue
    from lbd.tls.server import ListenerTls, TlsConfigError
    from lbd.tls.store import CertificateStore

    store = CertificateStore(config.certificates.store)
    for d_index, dist in enumerate(config.distributions):
        for l_index, viewer in enumerate(dist.listeners):
            if viewer.protocol != "HTTPS":
                continue
            where = f"distributions[{d_index}].listeners[{l_index}]"
            try:
                ListenerTls(store, viewer.certificates, viewer.ssl_policy, ["http/1.1"], where)
            except TlsConfigError as exc:
                path, _, message = str(exc).partition(": ")
                yield ConfigIssue(path, message)
        for o_index, origin in enumerate(dist.origins):
            access = origin.origin_access
            if access is None or access.secret_file is None:
                continue
            try:
                if not access.secret_value():
                    raise ValueError("the file is empty")
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                yield ConfigIssue(
                    f"distributions[{d_index}].origins[{o_index}].origin_access.secret_file",
                    f"cannot read {access.secret_file}: {reason}",
                )
