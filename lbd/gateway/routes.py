"""Route matching: which of an API's routes a request is for. Pure; compiled once per Snapshot.

Route keys are API Gateway's: ``METHOD /path`` with ``{name}`` parameters (one whole segment each), a
greedy ``{name+}`` as the last segment (one or more segments, slashes kept), ``ANY`` for every method,
and ``$default`` for what nothing else matches. Precedence ("Working with routes for HTTP APIs", route
evaluation): the most specific path wins (segment by segment, a literal before a parameter before a
greedy parameter), and on one path an exact method wins over ``ANY``; only then ``$default``.

The routes are compiled into a segment trie, so a request costs one dictionary lookup per segment (plus
backtracking only where a literal branch turned out not to match), never a regular expression.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import unquote

V = TypeVar("V")
MEMO_PATHS = 4096  # matches remembered per method
MEMO_METHODS = 16


@dataclass(frozen=True, slots=True)
class RouteKey:
    method: str  # upper case, or "ANY"; "" for $default
    segments: tuple[str, ...]  # "pets", "{id}", "{proxy+}"

    @property
    def default(self) -> bool:
        return not self.method

    def __str__(self) -> str:
        if self.default:
            return "$default"
        return f"{self.method} /{'/'.join(self.segments)}"


def parse_route_key(text: str) -> RouteKey:
    """``"GET /pets/{id}"`` to a RouteKey (the schema checked the form)."""
    if text == "$default":
        return RouteKey("", ())
    method, _, path = text.partition(" ")
    segments = tuple(s for s in path.split("/")[1:]) if path != "/" else ()
    return RouteKey(method, segments)


@dataclass(slots=True)
class _Node(Generic[V]):
    literal: dict[str, _Node[V]] = field(default_factory=dict)
    param: _Node[V] | None = None
    greedy: dict[str, tuple[str, V, str]] = field(default_factory=dict)  # method -> (name, value, key)
    methods: dict[str, tuple[V, str]] = field(default_factory=dict)  # method -> (value, route key)


@dataclass(frozen=True, slots=True)
class RouteMatch(Generic[V]):
    value: V
    route_key: str
    path_parameters: Mapping[str, str]


_UNSEEN: RouteMatch[Any] = RouteMatch(None, "", {})  # the memo's marker of a path not seen yet


class RouteTable(Generic[V]):
    """Route keys compiled for matching; ``value`` is whatever the caller keeps per route."""

    def __init__(self, routes: Iterable[tuple[str, V]]) -> None:
        self._root: _Node[V] = _Node()
        self._default: tuple[V, str] | None = None
        self._memo: dict[str, dict[str, RouteMatch[V] | None]] = {}  # method -> path -> match
        for text, value in routes:
            self.add(parse_route_key(text), value)

    def add(self, key: RouteKey, value: V) -> None:
        self._memo.clear()
        if key.default:
            self._default = (value, "$default")
            return
        node = self._root
        for index, segment in enumerate(key.segments):
            if segment.startswith("{") and segment.endswith("+}"):
                assert index == len(key.segments) - 1, "a greedy parameter is the last segment"
                node.greedy[key.method] = (segment[1:-2], value, str(key))
                return
            if segment.startswith("{") and segment.endswith("}"):
                # Routes may name the parameter at one position differently ("/a/{x}", "/a/{y}/b"): the
                # names are taken from the matched route's key (_parameters).
                if node.param is None:
                    node.param = _Node()
                node = node.param
            else:
                node = node.literal.setdefault(segment, _Node())
        node.methods[key.method] = (value, str(key))

    def match(self, method: str, path: str) -> RouteMatch[V] | None:
        """The route for ``method`` and ``path`` (percent-encoded, without the query), or None; the same
        match (not to be changed) for every request of a path seen lately."""
        memo = self._memo.get(method)
        if memo is None:
            if len(self._memo) >= MEMO_METHODS:
                self._memo.clear()
            memo = self._memo[method] = {}
        found = memo.get(path, _UNSEEN)
        if found is _UNSEEN:
            if len(memo) >= MEMO_PATHS:
                memo.clear()  # paths seen are bounded; many distinct ones only cost the walk again
            found = memo[path] = self._match(method, path)
        return found

    def _match(self, method: str, path: str) -> RouteMatch[V] | None:
        segments = path.split("/")[1:] if path != "/" else []
        found = self._walk(self._root, segments, 0, method, [])
        if found is not None:
            return found
        if self._default is not None:
            return RouteMatch(self._default[0], "$default", {})
        return None

    def _walk(
        self, node: _Node[V], segments: list[str], index: int, method: str, params: list[tuple[str, str]]
    ) -> RouteMatch[V] | None:
        if index == len(segments):
            hit = node.methods.get(method) or node.methods.get("ANY")
            if hit is not None:
                return RouteMatch(hit[0], hit[1], _parameters(params, hit[1]))
            return None
        segment = segments[index]
        child = node.literal.get(segment)
        if child is not None:
            found = self._walk(child, segments, index + 1, method, params)
            if found is not None:
                return found
        if node.param is not None and segment:
            params.append(("", segment))
            found = self._walk(node.param, segments, index + 1, method, params)
            params.pop()
            if found is not None:
                return found
        if node.greedy:
            rest = "/".join(segments[index:])
            hit3 = node.greedy.get(method) or node.greedy.get("ANY")
            if hit3 is not None and rest:
                name, value, key = hit3
                return RouteMatch(value, key, _parameters([*params, (name, rest)], key))
        return None


def _parameters(values: list[tuple[str, str]], route_key: str) -> dict[str, str]:
    """Path parameter values (percent-decoded, as API Gateway passes them) by the matched key's names."""
    if not values:
        return {}
    names = [s[1:-1].rstrip("+") for s in route_key.partition(" ")[2].split("/") if s.startswith("{")]
    return {name: unquote(value) for name, (_, value) in zip(names, values, strict=False)}
