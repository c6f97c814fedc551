"""Cache behaviors and cache policies, resolved from the config: pure, no I/O.

Path patterns follow CloudFront ("Path pattern" in "Values that you specify when you create or update a
distribution"): ``*`` matches any run of characters, slashes included, ``?`` exactly one; matching is
case-sensitive and against the path only; the leading ``/`` is optional; behaviors are tried in their
configured order, the first match wins, and the default behavior (``*``) comes last.

Managed cache policies ("Use managed cache policies"): their TTLs, key contents and compression flags.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lbd.cache.edgekey import ALL, ALL_EXCEPT, NONE, WHITELIST, KeyPolicy, NameRule
from lbd.cache.freshness import TtlPolicy

if TYPE_CHECKING:
    # Models or their plain records (lbd/config/plain.py): workers never import pydantic.
    from lbd.config.edge import CacheBehaviorBase, CachePolicy, NameSelection

CACHED_METHODS = frozenset({"GET", "HEAD"})
ALLOWED_METHODS = {
    "GET_HEAD": frozenset({"GET", "HEAD"}),
    "GET_HEAD_OPTIONS": frozenset({"GET", "HEAD", "OPTIONS"}),
    "ALL": frozenset({"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "POST", "DELETE"}),
}


@dataclass(frozen=True, slots=True)
class ResolvedPolicy:
    name: str
    ttl: TtlPolicy
    key: KeyPolicy


_ORIGIN_HEADERS = ("host", "origin", "x-http-method-override", "x-http-method", "x-method-override")
MANAGED: dict[str, ResolvedPolicy] = {
    "CachingOptimized": ResolvedPolicy(
        "CachingOptimized", TtlPolicy(1, 86_400, 31_536_000), KeyPolicy(gzip=True, brotli=True)
    ),
    "CachingOptimizedForUncompressedObjects": ResolvedPolicy(
        "CachingOptimizedForUncompressedObjects", TtlPolicy(1, 86_400, 31_536_000), KeyPolicy()
    ),
    "CachingDisabled": ResolvedPolicy("CachingDisabled", TtlPolicy(0, 0, 0), KeyPolicy()),
    "UseOriginCacheControlHeaders": ResolvedPolicy(
        "UseOriginCacheControlHeaders",
        TtlPolicy(0, 0, 31_536_000),
        KeyPolicy(headers=_ORIGIN_HEADERS, cookies=NameRule(ALL), gzip=True, brotli=True),
    ),
    "UseOriginCacheControlHeaders-QueryStrings": ResolvedPolicy(
        "UseOriginCacheControlHeaders-QueryStrings",
        TtlPolicy(0, 0, 31_536_000),
        KeyPolicy(NameRule(ALL), _ORIGIN_HEADERS, NameRule(ALL), gzip=True, brotli=True),
    ),
    "Amplify": ResolvedPolicy(
        "Amplify",
        TtlPolicy(2, 2, 600),
        KeyPolicy(
            NameRule(ALL), ("authorization", "cloudfront-viewer-country", "host"), NameRule(ALL), True, True
        ),
    ),
}


def _rule(selection: str | NameSelection) -> NameRule:
    if isinstance(selection, str):
        return NameRule(ALL if selection == "all" else NONE)
    if selection.whitelist is not None:
        return NameRule(WHITELIST, frozenset(selection.whitelist))
    return NameRule(ALL_EXCEPT, frozenset(selection.all_except or ()))


def resolve_policy(policy: CachePolicy, name: str = "custom") -> ResolvedPolicy:
    return ResolvedPolicy(
        name,
        TtlPolicy.resolve(policy.min_ttl, policy.default_ttl, policy.max_ttl),
        KeyPolicy(
            _rule(policy.query_strings),
            tuple(h.lower() for h in policy.headers),
            _rule(policy.cookies),
            policy.enable_accept_encoding_gzip,
            policy.enable_accept_encoding_brotli,
        ),
    )


def compile_path_pattern(pattern: str) -> re.Pattern[str]:
    """A CloudFront path pattern as a regular expression over the request path."""
    if not pattern.startswith("/") and pattern != "*":
        pattern = "/" + pattern
    out = []
    for char in pattern:
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        else:
            out.append(re.escape(char))
    return re.compile("".join(out), re.DOTALL)


@dataclass(frozen=True, slots=True)
class Behavior:
    path_pattern: str
    origin: str  # an origin id or an origin group id
    policy: ResolvedPolicy
    compress: bool
    methods: frozenset[str]
    matcher: re.Pattern[str] | None  # None: the default behavior (matches every path)

    def matches(self, path: str) -> bool:
        return self.matcher is None or self.matcher.fullmatch(path) is not None

    @property
    def caches(self) -> bool:
        return not self.policy.ttl.caching_disabled


def make_behavior(
    config: CacheBehaviorBase, path_pattern: str | None, policies: dict[str, ResolvedPolicy]
) -> Behavior:
    chosen = config.cache_policy
    policy = policies[chosen] if isinstance(chosen, str) else resolve_policy(chosen)
    return Behavior(
        path_pattern or "*",
        config.origin,
        policy,
        config.compress,
        ALLOWED_METHODS[config.allowed_methods],
        compile_path_pattern(path_pattern) if path_pattern is not None else None,
    )


def behavior_index(behaviors: tuple[Behavior, ...], path: str) -> int:
    """The index of the first behavior whose pattern matches ``path``; -1 for the default behavior."""
    for index, behavior in enumerate(behaviors):
        if behavior.matcher is None or behavior.matcher.fullmatch(path) is not None:
            return index
    return -1


def behavior_for(behaviors: tuple[Behavior, ...], default: Behavior, path: str) -> Behavior:
    """The first behavior whose pattern matches ``path``; the default behavior otherwise."""
    index = behavior_index(behaviors, path)
    return default if index < 0 else behaviors[index]
