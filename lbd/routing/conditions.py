"""Listener rule conditions compiled to predicates over a RequestView (AWS: Application Load Balancers,
"Listener rules", "Rule condition types").

Values inside one condition are ORed. Wildcards: ``*`` matches zero or more characters, ``?`` exactly
one. Exact values (no wildcard) become a set lookup; only wildcard values become a regular expression,
compiled once per Snapshot.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from lbd.routing.request import RequestView

if TYPE_CHECKING:
    from lbd.config.schema import Condition, QueryStringValue

Predicate = Callable[[RequestView], bool]


def wildcard_regex(pattern: str, *, ignore_case: bool, escapes: bool = False) -> re.Pattern[str]:
    """``*`` and ``?`` as wildcards; with ``escapes``, ``\\*`` and ``\\?`` are literal (query-string)."""
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if escapes and char == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "*?\\":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if char == "*" else "." if char == "?" else re.escape(char))
        i += 1
    return re.compile("".join(out), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _has_wildcard(value: str, escapes: bool = False) -> bool:
    if not escapes:
        return "*" in value or "?" in value
    return re.search(r"(?<!\\)[*?]", value) is not None


def _unescape(value: str) -> str:
    return re.sub(r"\\([*?\\])", r"\1", value)


class ValueMatcher:
    """Does a string match any of a condition's values?

    Each value is compiled to the cheapest test that decides it: exact values become one set lookup,
    ``prefix*`` and ``*suffix`` become one ``startswith``/``endswith`` over a tuple (both in C), and only
    the remaining wildcard values become a regular expression, all of them in one alternation.
    """

    __slots__ = ("exact", "fold", "patterns", "prefixes", "regex", "suffixes")

    def __init__(self, values: Iterable[str], *, ignore_case: bool, escapes: bool = False) -> None:
        self.fold = ignore_case
        exact: set[str] = set()
        prefixes: list[str] = []
        suffixes: list[str] = []
        patterns: list[re.Pattern[str]] = []
        for raw in values:
            value = raw.lower() if ignore_case else raw
            if not _has_wildcard(value, escapes):
                exact.add(_unescape(value) if escapes else value)
            elif _plain(value[:-1]) and value.endswith("*"):
                prefixes.append(value[:-1])
            elif _plain(value[1:]) and value.startswith("*"):
                suffixes.append(value[1:])
            else:
                patterns.append(wildcard_regex(value, ignore_case=False, escapes=escapes))
        self.exact = frozenset(exact)
        self.prefixes = tuple(prefixes)
        self.suffixes = tuple(suffixes)
        self.patterns = tuple(patterns)
        self.regex = (
            re.compile("|".join(f"(?:{p.pattern})" for p in patterns), re.DOTALL) if patterns else None
        )

    def __call__(self, text: str) -> bool:
        if self.fold:
            text = text.lower()
        if text in self.exact:
            return True
        if self.prefixes and text.startswith(self.prefixes):
            return True
        if self.suffixes and text.endswith(self.suffixes):
            return True
        return self.regex is not None and self.regex.fullmatch(text) is not None


class BytesMatcher:
    """A ValueMatcher over bytes: the request's path or Host as sent, with no decoding per request.

    Bytes are latin-1 text (one byte, one character), so each value of the ValueMatcher is encoded once
    and compared with the same C-level tests (set lookup, ``startswith``/``endswith`` over a tuple, one
    bytes regex). A value holding a character above U+00FF can never equal latin-1 text and is left out.
    Case-insensitive matchers take input that is already lowercased (``RequestView.host_key``) when it is
    ASCII; other input is decoded and given to the ValueMatcher, which folds it as str.lower() does.
    An extension type when compiled (conditions.pxd): the dispatcher calls ``matches`` as a C method.
    """

    def __init__(self, text: ValueMatcher) -> None:
        self.text = text
        self.fold = text.fold
        self.exact = frozenset(_latin1(text.exact))
        self.prefixes = tuple(_latin1(text.prefixes))
        self.suffixes = tuple(_latin1(text.suffixes))
        patterns = list(_latin1(p.pattern for p in text.patterns))
        self.regex = re.compile(b"|".join(b"(?:%b)" % p for p in patterns), re.DOTALL) if patterns else None

    def __call__(self, data: bytes) -> bool:
        return self.matches(data)

    def matches(self, data: bytes) -> bool:
        if self.fold and not data.isascii():
            return self.text(data.decode("latin-1"))
        if data in self.exact:
            return True
        if self.prefixes and data.startswith(self.prefixes):
            return True
        if self.suffixes and data.endswith(self.suffixes):
            return True
        return self.regex is not None and self.regex.fullmatch(data) is not None


def _latin1(values: Iterable[str]) -> Iterable[bytes]:
    for value in values:
        try:
            yield value.encode("latin-1")
        except UnicodeEncodeError:
            continue  # matches no latin-1 text


def _plain(text: str) -> bool:
    """No wildcard and no escape: the text is matched literally."""
    return not any(c in text for c in "*?\\")


def compile_condition(condition: Condition) -> Predicate:
    field = condition.field
    values = condition.values
    if field == "host-header":
        host = BytesMatcher(ValueMatcher(values, ignore_case=True))
        return lambda request: host.matches(request.host_key)
    if field == "path-pattern":
        path = BytesMatcher(ValueMatcher(values, ignore_case=False))
        return lambda request: path.matches(request.raw_path)
    if field == "http-request-method":
        methods = frozenset(values)
        return lambda request: request.method in methods
    if field == "http-header":
        assert condition.http_header_name is not None
        name = condition.http_header_name.lower().encode()
        header = BytesMatcher(ValueMatcher(values, ignore_case=True))
        # A repeated header: any of its values may match (ALB checks them in order). Values are compared as
        # sent, ASCII-lowered (BytesMatcher folds the rest as str.lower() does).
        return lambda request: any(header.matches(v.lower()) for n, v in request.headers if n.lower() == name)
    if field == "query-string":
        return _query_condition(values)
    assert field == "source-ip"
    networks = tuple(ipaddress.ip_network(v, strict=False) for v in values)
    return lambda request: any(request.source in network for network in networks)


def _query_condition(values: Iterable[QueryStringValue]) -> Predicate:
    # Each value is key=value or value alone; either part may use wildcards, escaped with "\".
    pairs = [
        (
            ValueMatcher([v.key], ignore_case=True, escapes=True) if v.key is not None else None,
            ValueMatcher([v.value], ignore_case=True, escapes=True),
        )
        for v in values
    ]

    def matches(request: RequestView) -> bool:
        for key, value in request.query:
            for want_key, want_value in pairs:
                if (want_key is None or want_key(key)) and want_value(value):
                    return True
        return False

    return matches


def compile_conditions(conditions: Iterable[Condition]) -> Predicate:
    """All conditions must match (ALB ANDs separate conditions). Cheap ones are checked first."""
    cost = {"http-request-method": 0, "host-header": 1, "path-pattern": 2, "source-ip": 3}
    ordered = sorted(conditions, key=lambda c: cost.get(c.field, 4))
    predicates = tuple(compile_condition(c) for c in ordered)
    if len(predicates) == 1:
        return predicates[0]
    return lambda request: all(p(request) for p in predicates)
