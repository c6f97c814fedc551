"""Cache keys and the request's Cache-Control rules: pure functions over strings.

Keys are injective encodings: every field is length-prefixed, so no choice of user-controlled values
(paths, query strings, headers) can make two different requests share a key (("a", "bc") and ("ab", "c")
differ), and a key's leading fields are a prefix only of the keys with exactly those fields, which is how
one API's or one stage's entries are flushed (ResponseCache.delete_prefix(stage_prefix(...))).

The stage cache's invalidation rule is Amazon API Gateway's ("Enable API caching for REST APIs in API
Gateway", section "Invalidate an API Gateway cache entry"): a client asks for a fresh copy with
``Cache-Control: max-age=0``; when the method requires authorization for cache control
(requireAuthorizationForCacheControl), only a caller allowed execute-api:InvalidateCache may, and the
others meet unauthorizedCacheControlHeaderStrategy.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence

# The first byte of a key names what made it, so the stage cache's and the edge cache's keys never meet
# even in one engine.
STAGE = b"S"


# The 4-byte lengths of short fields, made once: int.to_bytes per field was most of a key's cost.
_LENGTHS = tuple(n.to_bytes(4, "big") for n in range(4096))


def _length(n: int) -> bytes:
    return _LENGTHS[n] if n < 4096 else n.to_bytes(4, "big")


def _field(value: str) -> bytes:
    # surrogatepass: a path decoded with surrogateescape still encodes (and stays distinct).
    data = value.encode("utf-8", "surrogatepass")
    return _length(len(data)) + data


def stage_prefix(api: str, stage: str | None = None) -> bytes:
    """The prefix every key of ``api`` (and of its ``stage``, when given) starts with."""
    prefix = STAGE + _field(api)
    return prefix if stage is None else prefix + _field(stage)


def stage_key(
    api: str, stage: str, route_key: str, method: str, parameters: Sequence[tuple[str, str]]
) -> bytes:
    """The stage cache's key: the API, stage, route and method, then the route's cache key parameters
    (API Gateway's cacheKeyParameters, e.g. ("method.request.path.id", "7")) in the caller's order, which
    is the route's configured order, so equal requests make equal keys."""
    parts = [stage_prefix(api, stage), _field(route_key), _field(method), len(parameters).to_bytes(4, "big")]
    for name, value in parameters:
        parts.append(_field(name))
        parts.append(_field(value))
    return b"".join(parts)


# -- Cache-Control (RFC 9111 section 5.2) -----------------------------------------------------------------

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# cache-directive = token [ "=" ( token / quoted-string ) ], the list separated by commas (RFC 9110 5.6.1).
_DIRECTIVE = re.compile(rf'[ \t]*({_TOKEN})[ \t]*(?:=[ \t]*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN})))?[ \t]*(?:,|$)')
_QUOTED_PAIR = re.compile(r"\\(.)")


def parse_cache_control(value: str | None) -> dict[str, str | None]:
    """Directives by lower-case name, with their argument (unquoted) or None. The first occurrence of a
    repeated directive wins (RFC 9111 section 4.2.1 allows using the first); a malformed member is
    skipped up to the next comma rather than failing the whole field."""
    directives: dict[str, str | None] = {}
    if not value:
        return directives
    pos, end = 0, len(value)
    while pos < end:
        match = _DIRECTIVE.match(value, pos)
        if match is None:
            comma = value.find(",", pos)
            if comma < 0:
                break
            pos = comma + 1
            continue
        name, quoted, token = match.groups()
        argument = _QUOTED_PAIR.sub(r"\1", quoted) if quoted is not None else token
        directives.setdefault(name.lower(), argument)
        pos = match.end()
    return directives


def delta_seconds(argument: str | None) -> int | None:
    """A delta-seconds argument (RFC 9111 section 1.2.2: 1*DIGIT), or None when absent or malformed."""
    if argument is None or not argument.isascii() or not argument.isdigit():
        return None
    return int(argument)


def asks_invalidation(cache_control: str | None) -> bool:
    """Whether a request's Cache-Control asks for a fresh copy the way API Gateway recognises:
    ``max-age=0``."""
    return delta_seconds(parse_cache_control(cache_control).get("max-age")) == 0


class UnauthorizedCacheControlHeaderStrategy(enum.Enum):
    FAIL_WITH_403 = "FAIL_WITH_403"
    SUCCEED_WITH_RESPONSE_HEADER = "SUCCEED_WITH_RESPONSE_HEADER"
    SUCCEED_WITHOUT_RESPONSE_HEADER = "SUCCEED_WITHOUT_RESPONSE_HEADER"


class CacheControlAction(enum.Enum):
    USE_CACHE = "USE_CACHE"  # no invalidation asked: look the entry up as usual
    INVALIDATE = "INVALIDATE"  # skip the lookup, call the integration, replace the entry with its answer
    FORBIDDEN = "FORBIDDEN"  # answer 403 (FAIL_WITH_403)
    IGNORE_WITH_WARNING = "IGNORE_WITH_WARNING"  # use the cache as usual and add INVALIDATION_WARNING
    IGNORE = "IGNORE"  # use the cache as usual, say nothing

    @property
    def uses_cache(self) -> bool:
        return self not in (CacheControlAction.INVALIDATE, CacheControlAction.FORBIDDEN)


# API Gateway says only that it "adds a warning header in the response"; the field and text are lbd's
# (the Warning field of RFC 7234 section 5.5, code 199 "Miscellaneous Warning").
INVALIDATION_WARNING = (
    "Warning",
    '199 lbd "Cache-Control: max-age=0 ignored: the caller may not invalidate the cache"',
)


def cache_control_action(
    cache_control: str | None,
    *,
    require_authorization: bool,
    authorized: bool,
    strategy: UnauthorizedCacheControlHeaderStrategy,
) -> CacheControlAction:
    """What the stage cache does with a request's Cache-Control. ``authorized`` says whether the caller
    may invalidate (execute-api:InvalidateCache); it matters only when ``require_authorization``
    (without it, API Gateway lets any client invalidate)."""
    if not asks_invalidation(cache_control):
        return CacheControlAction.USE_CACHE
    if authorized or not require_authorization:
        return CacheControlAction.INVALIDATE
    if strategy is UnauthorizedCacheControlHeaderStrategy.FAIL_WITH_403:
        return CacheControlAction.FORBIDDEN
    if strategy is UnauthorizedCacheControlHeaderStrategy.SUCCEED_WITH_RESPONSE_HEADER:
        return CacheControlAction.IGNORE_WITH_WARNING
    return CacheControlAction.IGNORE


# -- the edge cache's keys (distributions) ----------------------------------------------------------------

EDGE = b"E"


_EDGE_PREFIXES: dict[str, bytes] = {}  # by distribution name: a request's key starts with one


def edge_prefix(distribution: str) -> bytes:
    """The prefix every key of ``distribution`` starts with."""
    prefix = _EDGE_PREFIXES.get(distribution)
    if prefix is None:
        if len(_EDGE_PREFIXES) >= 1024:
            _EDGE_PREFIXES.clear()  # names come from configs: a bound only against a long-lived churn
        prefix = _EDGE_PREFIXES[distribution] = EDGE + _field(distribution)
    return prefix


def edge_key(distribution: str, path: str, query: str, parts: Sequence[tuple[str, str]]) -> bytes:
    """The edge cache's key: the distribution, the path and the query string as they go into the key,
    then the policy's other parts (headers, cookies, the normalised Accept-Encoding, Vary's fields) as
    name and value pairs. The path and query come first so invalidations can read them back
    (``edge_key_target``)."""
    out = [edge_prefix(distribution), _field(path), _field(query), _length(len(parts))]
    for name, value in parts:
        out.append(_field(name))
        out.append(_field(value))
    return b"".join(out)


def _read_field(key: bytes, at: int) -> tuple[str, int]:
    length = int.from_bytes(key[at : at + 4], "big")
    end = at + 4 + length
    return key[at + 4 : end].decode("utf-8", "surrogatepass"), end


def edge_key_target(key: bytes) -> tuple[str, str, str] | None:
    """(distribution, path, query) of an edge key, or None for a key of another kind."""
    if not key.startswith(EDGE):
        return None
    distribution, at = _read_field(key, 1)
    path, at = _read_field(key, at)
    query, _ = _read_field(key, at)
    return distribution, path, query
