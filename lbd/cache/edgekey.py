"""What a distribution's cache key holds, chosen by its cache policy: pure functions over strings.

CloudFront's cache key ("Understand the cache key", CachePolicyConfig's ParametersInCacheKeyAndForwarded
ToOrigin): the path always; query strings, headers and cookies as the policy selects them (none, a
whitelist, all except some, all), each by name with its value; the viewer's ``Accept-Encoding``
normalised to ``br,gzip``, ``gzip``, ``br`` or nothing when the policy enables compressed objects. Query
strings are sorted by name (so ``?a=1&b=2`` and ``?b=2&a=1`` share an entry), which CloudFront leaves to
the origin's consistency; names keep their case (CloudFront's names are case-sensitive) except header
names, which are case-insensitive in HTTP.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from lbd.cache.keys import edge_key

NONE = "none"
ALL = "all"
WHITELIST = "whitelist"
ALL_EXCEPT = "allExcept"


@dataclass(frozen=True, slots=True)
class NameRule:
    """A selection of query-string or cookie names: none, all, a whitelist, or all except some."""

    kind: str = NONE
    names: frozenset[str] = frozenset()

    def chooses(self, name: str) -> bool:
        if self.kind == ALL:
            return True
        if self.kind == WHITELIST:
            return name in self.names
        if self.kind == ALL_EXCEPT:
            return name not in self.names
        return False

    @property
    def any(self) -> bool:
        return self.kind != NONE and not (self.kind == WHITELIST and not self.names)


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    query_strings: NameRule = NameRule()
    headers: tuple[str, ...] = ()  # lower-case names
    cookies: NameRule = NameRule()
    gzip: bool = False
    brotli: bool = False


def query_key(query: str, rule: NameRule) -> str:
    """The query string as it goes into the key (and to the origin): the chosen parameters, sorted by
    their decoded name, each kept as the viewer wrote it."""
    if not query or not rule.any:
        return ""
    chosen = []
    for part in query.split("&"):
        if not part:
            continue
        name = unquote(part.partition("=")[0].replace("+", " "))
        if rule.chooses(name):
            chosen.append((name, part))
    chosen.sort()
    return "&".join([part for _, part in chosen])


def header_parts(headers: Mapping[str, str], names: Iterable[str]) -> list[tuple[str, str]]:
    """("h:<name>", value) for each named header; an absent header counts as empty (still a variant)."""
    return [("h:" + name, headers.get(name, "")) for name in names]


def cookie_pairs(cookie_header: str | None) -> list[tuple[str, str]]:
    """The Cookie field's name=value pairs in order (RFC 6265 section 5.4)."""
    if not cookie_header:
        return []
    pairs = []
    for item in cookie_header.split(";"):
        name, sep, value = item.strip().partition("=")
        if sep and name:
            pairs.append((name, value))
    return pairs


def cookie_parts(cookie_header: str | None, rule: NameRule) -> list[tuple[str, str]]:
    if not rule.any:
        return []
    return sorted([("c:" + name, value) for name, value in cookie_pairs(cookie_header) if rule.chooses(name)])


def selected_cookie_header(cookie_header: str | None, rule: NameRule) -> str | None:
    """The Cookie field the origin receives: only the chosen cookies (CloudFront forwards what is in the
    cache key), or None for no Cookie field at all."""
    chosen = [f"{name}={value}" for name, value in cookie_pairs(cookie_header) if rule.chooses(name)]
    return "; ".join(chosen) if chosen else None


def _codings(accept_encoding: str) -> dict[str, float]:
    """Content codings with their q-values (RFC 9110 12.5.3)."""
    found: dict[str, float] = {}
    for member in accept_encoding.split(","):
        coding, _, params = member.strip().partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        weight = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        found[coding] = weight
    return found


@functools.lru_cache(maxsize=512)  # viewers send few distinct values; this runs on every request
def normalise_accept_encoding(accept_encoding: str | None, gzip: bool, brotli: bool) -> str:
    """CloudFront's normalised Accept-Encoding: ``br,gzip``, ``br``, ``gzip`` or "" (identity), from the
    codings the viewer accepts (q > 0, ``*`` counting for both) and the policy enables."""
    if not accept_encoding or not (gzip or brotli):
        return ""
    codings = _codings(accept_encoding)
    star = codings.get("*", 0.0)
    accepted = []
    if brotli and codings.get("br", star) > 0:
        accepted.append("br")
    if gzip and codings.get("gzip", codings.get("x-gzip", star)) > 0:
        accepted.append("gzip")
    return ",".join(accepted)


def vary_parts(vary_names: Sequence[str], headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """The secondary key of RFC 9111 4.1: the request's values of the fields a response's Vary names."""
    return [("v:" + name, headers.get(name, "")) for name in vary_names]


def vary_names(vary: str | None, in_key: Iterable[str]) -> tuple[str, ...] | None:
    """The fields a stored response varies on beyond those already in the key (lower case, sorted), or
    None for ``Vary: *`` (never stored). Accept-Encoding is in the key already when compression is."""
    if not vary:
        return ()
    names = sorted({name.strip().lower() for name in vary.split(",") if name.strip()})
    if "*" in names:
        return None
    skip = set(in_key)
    return tuple(name for name in names if name not in skip)


def primary_key(
    distribution: str, policy: KeyPolicy, path: str, query: str, fields: Mapping[str, str]
) -> tuple[bytes, str]:
    """The primary key of a request (its path, the chosen query strings, headers and cookies, the
    normalised Accept-Encoding when the policy enables compression) and that Accept-Encoding."""
    encoding = normalise_accept_encoding(fields.get("accept-encoding"), policy.gzip, policy.brotli)
    parts = header_parts(fields, policy.headers)
    parts += cookie_parts(fields.get("cookie"), policy.cookies)
    if policy.gzip or policy.brotli:
        parts.append(("accept-encoding", encoding))
    return edge_key(distribution, path, query_key(query, policy.query_strings), parts), encoding


def vary_key(names: Sequence[str], fields: Mapping[str, str]) -> bytes:
    """The secondary key appended to the primary one: the request's values of ``names``."""
    return edge_key("", "", "", vary_parts(names, fields))
