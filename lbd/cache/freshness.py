"""How long an edge cache keeps a response: CloudFront's TTL rules over RFC 9111's Cache-Control.

CloudFront's rules (Amazon CloudFront Developer Guide, "Managing how long content stays in the cache
(expiration)", and the CachePolicyConfig API reference):

1. ``no-cache``, ``no-store`` or ``private`` in the response: not cached when MinTTL is 0; cached for
   MinTTL when it is larger.
2. Otherwise the first present of ``s-maxage``, ``max-age`` (RFC 9111 5.2.2.10 and 5.2.2.1), then
   ``Expires`` (minus ``Date``, RFC 9111 4.2.1), clamped to [MinTTL, MaxTTL].
3. No freshness information: max(MinTTL, DefaultTTL).

Errors ("How CloudFront processes HTTP 4xx and 5xx status codes from your origin"): 404, 414, 500, 501,
502, 503 and 504 are cached for max(error caching minimum TTL, origin max-age/s-maxage); 400, 403, 405,
412 and 415 only when the origin sent max-age or s-maxage. Stale content: ``stale-while-revalidate`` and
``stale-if-error`` (RFC 5861) are honoured as the origin sends them; without ``stale-if-error`` an
expired object is still served when the origin fails, for up to ``DEFAULT_STALE_IF_ERROR`` (CloudFront
serves stale objects on origin errors; how long is not documented, so lbd chooses a day), and
``stale-if-error=0`` stops that. Pure: no I/O, times as plain numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from lbd.cache.keys import delta_seconds, parse_cache_control

CLOUDFRONT_DEFAULT_TTL = 86_400
CLOUDFRONT_MAX_TTL = 31_536_000
MAX_AGE_LIMIT = 3_153_600_000  # "max-age: 0 s to 100 years"
DEFAULT_STALE_IF_ERROR = 86_400.0
DEFAULT_ERROR_CACHING_MIN_TTL = 10

# Successful responses cached without explicit freshness (RFC 9110 15.1's heuristically cacheable
# codes that CloudFront caches), and those cached only when the origin gave a lifetime.
CACHEABLE = frozenset({200, 203, 204, 300, 301, 308, 410})
CACHEABLE_IF_EXPLICIT = frozenset({302, 307})
ERRORS_ALWAYS_CACHED = frozenset({404, 414, 500, 501, 502, 503, 504})
ERRORS_CACHED_IF_EXPLICIT = frozenset({400, 403, 405, 412, 415, 416})


@dataclass(frozen=True, slots=True)
class TtlPolicy:
    """A cache policy's TTLs, with CloudFront's defaults resolved (each raised to the one below it)."""

    min_ttl: int = 0
    default_ttl: int = CLOUDFRONT_DEFAULT_TTL
    max_ttl: int = CLOUDFRONT_MAX_TTL

    @classmethod
    def resolve(cls, min_ttl: int, default_ttl: int | None, max_ttl: int | None) -> TtlPolicy:
        default = default_ttl if default_ttl is not None else max(CLOUDFRONT_DEFAULT_TTL, min_ttl)
        maximum = max_ttl if max_ttl is not None else max(CLOUDFRONT_MAX_TTL, default)
        return cls(min_ttl, default, maximum)

    @property
    def caching_disabled(self) -> bool:
        return self.max_ttl == 0


@dataclass(frozen=True, slots=True)
class Freshness:
    """What to do with one origin response: store it for ``ttl`` seconds (0: do not store)."""

    ttl: float
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    reason: str = ""  # why not stored, for logs and tests

    @property
    def store(self) -> bool:
        return self.ttl > 0


NOT_STORED = Freshness(0.0, reason="not cacheable")


def _expires_lifetime(expires: str | None, date: str | None, now: float) -> int | None:
    """Expires minus Date (or now), RFC 9111 4.2.1; an invalid Expires means already expired (5.3)."""
    if expires is None:
        return None
    try:
        at = parsedate_to_datetime(expires).timestamp()
    except (TypeError, ValueError, IndexError):
        return 0
    base = now
    if date is not None:
        try:
            base = parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError):
            base = now
    return max(0, int(at - base))


def response_freshness(
    status: int,
    headers: Mapping[str, str],
    policy: TtlPolicy,
    now: float,
    error_caching_min_ttl: int | None = None,
) -> Freshness:
    """CloudFront's TTL for a response; ``headers`` by lower-case name. ``error_caching_min_ttl``: the
    distribution's custom error response for this status, if any (else 10 s for always-cached errors)."""
    if policy.caching_disabled:
        return Freshness(0.0, reason="caching disabled")
    directives = parse_cache_control(headers.get("cache-control"))
    if "vary" in headers and headers["vary"].strip() == "*":
        return Freshness(0.0, reason="Vary: *")  # never matches a later request (RFC 9111 4.1)
    s_maxage = delta_seconds(directives.get("s-maxage"))
    max_age = delta_seconds(directives.get("max-age"))
    swr = delta_seconds(directives.get("stale-while-revalidate")) or 0
    sie_given = delta_seconds(directives.get("stale-if-error"))
    stale_if_error = float(sie_given) if sie_given is not None else DEFAULT_STALE_IF_ERROR
    explicit_age = s_maxage if s_maxage is not None else max_age
    explicit_age = min(explicit_age, MAX_AGE_LIMIT) if explicit_age is not None else None
    if status >= 400:
        return _error_freshness(status, explicit_age, error_caching_min_ttl, stale_if_error)
    forbidden = [name for name in ("no-store", "no-cache", "private") if name in directives]
    if forbidden:
        if policy.min_ttl <= 0:
            return Freshness(0.0, reason=f"Cache-Control: {forbidden[0]}")
        # Cached for MinTTL anyway; served stale on errors only when the origin allows it explicitly.
        return Freshness(float(policy.min_ttl), 0.0, float(sie_given or 0) if sie_given is not None else 0.0)
    lifetime = explicit_age
    if lifetime is None:
        lifetime = _expires_lifetime(headers.get("expires"), headers.get("date"), now)
    if lifetime is None:
        if status not in CACHEABLE:
            return Freshness(0.0, reason=f"status {status} needs an explicit lifetime")
        ttl = max(policy.min_ttl, policy.default_ttl)
    else:
        if status not in CACHEABLE and status not in CACHEABLE_IF_EXPLICIT:
            return Freshness(0.0, reason=f"status {status} is not cached")
        ttl = min(max(lifetime, policy.min_ttl), policy.max_ttl)  # MaxTTL only bounds origin headers
    if ttl <= 0:
        # max-age=0 (or an Expires in the past): stored only to be revalidated, which is what a cache
        # with no lifetime would do anyway; not stored, so every request goes to the origin.
        return Freshness(0.0, float(swr), stale_if_error, reason="zero lifetime")
    return Freshness(float(ttl), float(swr), stale_if_error)


def _error_freshness(
    status: int, explicit_age: int | None, error_caching_min_ttl: int | None, stale_if_error: float
) -> Freshness:
    floor = DEFAULT_ERROR_CACHING_MIN_TTL if error_caching_min_ttl is None else error_caching_min_ttl
    if status in ERRORS_ALWAYS_CACHED or error_caching_min_ttl is not None:
        ttl = max(floor, explicit_age or 0)
    elif status in ERRORS_CACHED_IF_EXPLICIT and explicit_age is not None:
        ttl = max(floor, explicit_age)
    else:
        return Freshness(0.0, reason=f"error {status} is not cached")
    return Freshness(float(ttl), 0.0, 0.0) if ttl > 0 else Freshness(0.0, reason="error caching TTL 0")


def refreshed_headers(
    stored: tuple[tuple[str, str], ...], not_modified: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, str], ...]:
    """A stored response's fields updated from a 304 (RFC 9111 4.3.4): each field the 304 carries
    replaces the stored ones of that name, except the framing fields that describe the stored body."""
    keep = {"content-length", "content-encoding", "transfer-encoding", "content-range", "content-type"}
    replaced = {name.lower() for name, _ in not_modified if name.lower() not in keep}
    merged = [(name, value) for name, value in stored if name.lower() not in replaced]
    merged += [(name, value) for name, value in not_modified if name.lower() in replaced]
    return tuple(merged)


def validators(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The stored response's ETag and Last-Modified, for a conditional request (RFC 9111 4.3.1)."""
    return headers.get("etag"), headers.get("last-modified")


def not_modified(request_headers: Mapping[str, str], etag: str | None, last_modified: str | None) -> bool:
    """Whether a viewer's conditional GET is answered 304 from the cached response (RFC 9110 13.1.2 and
    13.1.3: If-None-Match compares weakly and, when present, If-Modified-Since is ignored)."""
    inm = request_headers.get("if-none-match")
    if inm is not None:
        if etag is None:
            return False
        if inm.strip() == "*":
            return True
        wanted = {tag.strip().removeprefix("W/") for tag in inm.split(",")}
        return etag.strip().removeprefix("W/") in wanted
    ims = request_headers.get("if-modified-since")
    if ims is None or last_modified is None:
        return False
    try:
        return parsedate_to_datetime(last_modified) <= parsedate_to_datetime(ims)
    except (TypeError, ValueError, IndexError):
        return False
