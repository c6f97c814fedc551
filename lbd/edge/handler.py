"""One viewer request through a distribution: behavior, cache key, lookup, origin, response.

What a request meets, in order (CloudFront's request and response behavior for custom origins):

1. the first cache behavior whose path pattern matches (else the default); a method the behavior does
   not allow is answered 403;
2. GET and HEAD on a caching behavior build the cache key (lbd/cache/edgekey.py) and look it up:
   - fresh: a ``Hit``, answered from memory (ranges, HEAD and conditional requests included);
   - expired within ``stale-while-revalidate``: a ``Hit`` with the stale copy, refreshed meanwhile;
   - else the origin is asked, conditionally when the stale copy has validators: a 304 refreshes the
     entry (``RefreshHit``); an origin that fails (5xx or no answer) while a stale copy may serve
     (``stale-if-error``) gets the stale copy; otherwise the new response is stored (``Miss``), or an
     error is answered (``Error``, with the custom error response when one is configured);
   - concurrent misses for one key make one origin request: the others wait and are answered from it;
3. other methods, and behaviors with caching disabled, go to the origin uncached with the viewer's
   fields (CloudFront's AllViewer origin request policy).

Every response carries ``X-Cache: <Hit|RefreshHit|Miss|Error> from <edge>``, ``Via``, ``X-Amz-Cf-Pop``
and ``X-Amz-Cf-Id``; those from the cache carry ``Age``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lbd.cache.edgekey import (
    primary_key,
    query_key,
    selected_cookie_header,
    vary_key,
    vary_names,
)
from lbd.cache.engine import Lookup
from lbd.cache.freshness import (
    Freshness,
    not_modified,
    refreshed_headers,
    response_freshness,
)
from lbd.cache.ranges import UNSATISFIABLE, ByteRange, parse_range
from lbd.cache.response import CachedResponse
from lbd.edge import compression
from lbd.edge.behaviors import CACHED_METHODS, Behavior, behavior_for
from lbd.edge.hit import request_id
from lbd.edge.origin import OriginFetch
from lbd.edge.sigv4 import sign
from lbd.waf.acl import CompiledAcl
from lbd.waf.request import WafRequest

if TYPE_CHECKING:
    from lbd.edge.runtime import DistributionRuntime, OriginRuntime
    from lbd.edge.server import EdgeClientSide

log = logging.getLogger("lbd.edge")

HIT, REFRESH_HIT, MISS, ERROR = "Hit", "RefreshHit", "Miss", "Error"
# Fields that describe one connection (RFC 9110 7.6.1) or that lbd writes itself.
_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
)
_NOT_FORWARDED = _HOP | {"host", "content-length", "expect", "via", "x-amz-cf-id"}
_NOT_SERVED = _HOP | {"content-length", "age"}
# A 304 carries only these of the stored fields (RFC 9110 15.4.5).
_NOT_MODIFIED_FIELDS = frozenset({"cache-control", "content-location", "date", "etag", "expires", "vary"})


@dataclass
class ViewerRequest:
    method: str
    path: str
    query: str
    version: str
    headers: list[tuple[str, str]]  # lower-case names, in order
    body: bytes
    keep_alive: bool
    received_at: float = field(default_factory=time.monotonic)
    fields: dict[str, str] = field(default_factory=dict)
    conditional: bool = False

    def __post_init__(self) -> None:
        fields: dict[str, str] = {}
        for name, value in self.headers:
            # Repeated fields combine with commas (RFC 9110 5.3); Cookie with "; " (RFC 6265 5.4).
            if name in fields:
                fields[name] += ("; " if name == "cookie" else ", ") + value
            else:
                fields[name] = value
        self.fields = fields
        # Only these make a hit look at the stored fields (304, 206, 416).
        self.conditional = "range" in fields or "if-none-match" in fields or "if-modified-since" in fields


@dataclass
class Outcome:
    """What the viewer got, for the access log and the counters."""

    result: str = MISS
    status: int = 0
    detailed: str = ""
    body_bytes: int = 0
    from_cache: bool = False
    headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = ()  # what was served (for the log)
    range: ByteRange | None = None
    first_byte_at: float = 0.0


def _fields(headers: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        out[lower] = out[lower] + ", " + value if lower in out else value
    return out


class EdgeRequest:
    """One request's work (a hit finishes inside ``serve``; the rest runs as a task)."""

    def __init__(self, conn: EdgeClientSide, request: ViewerRequest) -> None:
        self.conn = conn
        self.request = request
        self.dist: DistributionRuntime = conn.runtime.distribution
        self.id = request_id().decode("ascii")
        self.outcome = Outcome()
        self.fetch: OriginFetch | None = None
        self.behavior: Behavior = self.dist.default
        self.encoding = ""

    # -- entry ------------------------------------------------------------------------------------------

    def serve(self) -> bool:
        """True when answered already (a hit); False when ``run`` must be awaited."""
        request = self.request
        if self.dist.waf is not None and self._blocked(self.dist.waf):
            return True
        self.behavior = behavior = behavior_for(self.dist.behaviors, self.dist.default, request.path)
        if request.method not in behavior.methods:
            self._local(403, "the distribution's behavior does not allow " + request.method, ERROR)
            return True
        if request.method in CACHED_METHODS and behavior.caches:
            key = self.key()
            found = self.dist.cache.lookup(key)
            if found is not None and found.fresh:
                self.respond_cached(found.response, HIT)
                return True
            if found is not None and self._stale_allowed(found, "swr"):
                self.respond_cached(found.response, HIT, detailed="StaleWhileRevalidate")
                self.conn.spawn(self._refresh(key, found.response))
                return True
        return False

    def _blocked(self, acl: CompiledAcl) -> bool:
        """AWS WAF on the distribution: a block is answered here (403, or the rule's custom response)
        with X-Cache: Error; an allow may add x-amzn-waf-* fields for the origin."""
        request = self.request
        url = (request.path + ("?" + request.query if request.query else "")).encode("latin-1", "replace")
        headers = (
            [(n.encode("latin-1"), v.encode("latin-1", "replace")) for n, v in request.headers]
            if acl.uses_headers or acl.body_field
            else []
        )
        verdict = acl.evaluate(
            WafRequest.from_target(
                request.method, url, headers, self.conn.peer[0], request.body, len(request.body)
            ),
            time.monotonic(),
        )
        if verdict.action != "block":
            self.waf_lines = verdict.headers
            return False
        custom = verdict.response
        if custom is None:
            body = b"<html><head><title>403 Forbidden</title></head><body>Request blocked.</body></html>\n"
            entry = CachedResponse(403, (("Content-Type", "text/html"),), body, time.time())
        else:
            fields = (*custom.headers, ("Content-Type", custom.content_type))
            entry = CachedResponse(custom.status, fields, custom.body, time.time())
        self.respond_cached(entry, ERROR, from_cache=False, detailed="WafBlocked")
        return True

    waf_lines = b""  # x-amzn-waf-* field lines for the origin, from an allow verdict

    async def run(self) -> None:
        request = self.request
        if request.method in CACHED_METHODS and self.behavior.caches:
            await self._cached(self.key())
        else:
            await self._pass_through()

    # -- the cache key ----------------------------------------------------------------------------------

    def primary_key(self) -> bytes:
        request = self.request
        key, self.encoding = primary_key(
            self.dist.name, self.behavior.policy.key, request.path, request.query, request.fields
        )
        return key

    def key(self) -> bytes:
        primary = self.primary_key()
        names = self.dist.cache.vary.get(primary)
        return primary + self._vary_suffix(names) if names else primary

    def _vary_suffix(self, names: tuple[str, ...]) -> bytes:
        return vary_key(names, self.request.fields)

    def _stale_allowed(self, found: Lookup, why: str) -> bool:
        stale_for = time.time() - found.expires_at
        allowance = found.response.stale_while_revalidate if why == "swr" else found.response.stale_if_error
        return stale_for < allowance

    # -- cached path -------------------------------------------------------------------------------------

    async def _cached(self, key: bytes) -> None:
        cache = self.dist.cache
        found = cache.lookup(key)
        waiting = cache.inflight.get(key)
        if waiting is not None:
            cache.waiting += 1
            try:
                stored = await asyncio.shield(waiting)
            finally:
                cache.waiting -= 1
            again = cache.lookup(self.key()) if stored else None
            if again is not None and again.fresh:
                cache.stats.collapsed += 1
                self.respond_cached(again.response, HIT, detailed="Collapsed")
                return
            found = again or found
        if self.request.method == "HEAD" and found is None:
            await self._pass_through()
            return
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        cache.inflight[key] = future
        stored = False
        try:
            stored = await self._fetch_and_store(key, found)
        finally:
            if cache.inflight.get(key) is future:
                del cache.inflight[key]
            future.set_result(stored)

    async def _refresh(self, key: bytes, stale: CachedResponse) -> None:
        """stale-while-revalidate's background refresh (one per key at a time)."""
        cache = self.dist.cache
        if key in cache.inflight:
            return
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        cache.inflight[key] = future
        stored = False
        try:
            stored = await self._fetch_and_store(key, None, background=stale)
        except Exception:
            log.exception("%s: background refresh failed", self.dist.name)
        finally:
            if cache.inflight.get(key) is future:
                del cache.inflight[key]
            future.set_result(stored)

    async def _fetch_and_store(
        self, key: bytes, found: Lookup | None, background: CachedResponse | None = None
    ) -> bool:
        """Ask the origin (conditionally when a stored copy has validators); store, refresh or fall back
        to the stale copy; answer the viewer unless ``background``. True when an entry was stored."""
        dist = self.dist
        stale = background or (found.response if found is not None else None)
        conditional: list[tuple[str, str]] = []
        if stale is not None and stale.status == 200:
            stored_fields = _fields(stale.headers)
            if "etag" in stored_fields:
                conditional.append(("If-None-Match", stored_fields["etag"]))
            if "last-modified" in stored_fields:
                conditional.append(("If-Modified-Since", stored_fields["last-modified"]))
        epoch = dist.cache.epoch
        fetch = await self._ask_origins("GET", self._key_fields() + conditional, b"")
        now = time.time()
        if fetch.status == 304 and stale is not None and conditional:
            merged = refreshed_headers(stale.headers, tuple(fetch.headers))
            freshness = response_freshness(stale.status, _fields(merged), self.behavior.policy.ttl, now)
            refreshed = self._entry(stale.status, merged, stale.body, now, freshness)
            stored = freshness.store and dist.cache.put(key, refreshed, freshness.ttl, epoch)
            if background is None:
                self.respond_cached(refreshed, REFRESH_HIT)
            return stored
        failed = fetch.failed or fetch.local or fetch.status >= 500
        if failed and stale is not None and found is not None and self._stale_allowed(found, "sie"):
            fetch.cancel()
            if background is None:
                self.respond_cached(stale, HIT, detailed="StaleIfError")
                self.outcome.result = HIT
            return False
        if background is not None and failed:
            fetch.cancel()
            return False
        if fetch.failed and not fetch.status:
            if background is None:
                self._local(502, fetch.failed, ERROR)
            return False
        if self._vary_unsent(fetch):
            # The response varies on fields the viewer sent and lbd did not forward: ask again with them
            # (once), so the variant stored under the viewer's values is the one made for them.
            fetch.cancel()
            return await self._fetch_and_store(self.key(), found, background)
        status = fetch.status
        headers = list(fetch.headers)
        if not self.behavior.policy.key.cookies.any:
            # Cookies are not in the key: a Set-Cookie must not be served to other viewers (CloudFront
            # removes it from cached responses when it forwards no cookies).
            headers = [(n, v) for n, v in headers if n.lower() != "set-cookie"]
        fields = _fields(headers)
        error = dist.errors.get(status)
        freshness = response_freshness(
            status, fields, self.behavior.policy.ttl, now, error.error_caching_min_ttl if error else None
        )
        if background is None and self._range_of_a_large_object(fetch, fields):
            # Too large to store, so no range can be served from a stored copy: the origin serves the
            # viewer's range itself (CloudFront asks origins for ranges of objects it cannot hold whole).
            fetch.cancel()
            await self._pass_through([*self._key_fields(), ("Range", self.request.fields["range"])])
            return False
        store_key = self._store_key(fields) if freshness.store else None
        if background is None and self._relays(fetch, fields):
            # Sent on as it arrives, and stored once complete (when it fits).
            store = (store_key, freshness, epoch) if store_key is not None else None
            return await self._relay(fetch, headers, store, now)
        body = await fetch.read_all()
        if body is None:
            if background is None:
                await self._relay(fetch, headers, None, now)  # larger than the cache takes
            else:
                fetch.cancel()
            return False
        dist.cache.stats.bytes_from_origin += len(body)
        headers, body = self._compressed(status, headers, fields, body)
        entry = self._entry(status, headers, body, now, freshness)
        stored = store_key is not None and dist.cache.put(store_key, entry, freshness.ttl, epoch)
        if background is not None:
            return stored
        if status >= 400:
            await self._error_response(entry, fetch.local)
        else:
            self.respond_cached(entry, MISS, from_cache=False)
        return stored

    def _store_key(self, fields: Mapping[str, str]) -> bytes | None:
        """The key a response is stored under: the primary key, plus the request's values of the fields
        its Vary names (remembered for the primary key); None for Vary: * (never stored)."""
        names = vary_names(fields.get("vary"), [*self.behavior.policy.key.headers, "accept-encoding"])
        if names is None:
            return None
        primary = self.primary_key()
        if names:
            self.dist.cache.vary[primary] = names
            return primary + self._vary_suffix(names)
        self.dist.cache.vary.pop(primary, None)
        return primary

    def _vary_unsent(self, fetch: OriginFetch) -> bool:
        names = vary_names(
            _fields(fetch.headers).get("vary"), [*self.behavior.policy.key.headers, "accept-encoding"]
        )
        if not names or self._vary_retried:
            return False
        primary = self.primary_key()
        sent = self.dist.cache.vary.get(primary, ())
        if all(name in sent or name not in self.request.fields for name in names):
            return False
        self.dist.cache.vary[primary] = names
        self._vary_retried = True
        return True

    _vary_retried = False

    def _entry(
        self,
        status: int,
        headers: tuple[tuple[str, str], ...] | list[tuple[str, str]],
        body: bytes,
        now: float,
        freshness: Freshness,
    ) -> CachedResponse:
        fields = _fields(headers)
        age = fields.get("age", "0").strip()
        served = tuple((n, v) for n, v in headers if n.lower() not in _NOT_SERVED)
        lines = self._field_lines(served)
        # What _stored_head writes for a hit, up to the Age value (lbd/edge/hit.py serves from it).
        hit_head = (
            f"HTTP/1.1 {status} {_reason(status)}\r\n{lines}Content-Length: {len(body)}\r\n"
            + ("Accept-Ranges: bytes\r\n" if status == 200 else "")
            + "Age: "
        )
        return CachedResponse(
            status,
            served,
            body,
            now,
            freshness.stale_while_revalidate,
            freshness.stale_if_error,
            int(age) if age.isdigit() else 0,
            lines,
            hit_head.encode("latin-1", "replace"),
        )

    def _field_lines(self, headers: tuple[tuple[str, str], ...]) -> str:
        via = None
        lines = []
        for name, value in headers:
            if name.lower() == "via":
                via = value
            else:
                lines.append(f"{name}: {value}\r\n")
        lines.append(f"Via: {via + ', ' if via else ''}1.1 {self.dist.edge_name} (lbd)\r\n")
        return "".join(lines)

    def _compressed(
        self, status: int, headers: list[tuple[str, str]], fields: Mapping[str, str], body: bytes
    ) -> tuple[list[tuple[str, str]], bytes]:
        coding = compression.choose(self.encoding) if self.behavior.compress else None
        if coding is None or not compression.compressible(status, fields, len(body)):
            return headers, body
        compressed = compression.compress(body, coding)
        self.dist.cache.stats.compressed += 1
        out = []
        for name, value in headers:
            lower = name.lower()
            if lower == "etag":
                weak = compression.weak_etag(value)
                if weak is not None:
                    out.append((name, weak))
            elif lower == "vary":
                continue
            elif lower != "content-length":
                out.append((name, value))
        other_vary = [v.strip() for v in fields.get("vary", "").split(",") if v.strip()]
        if not any(v.lower() == "accept-encoding" for v in other_vary):
            other_vary.append("Accept-Encoding")
        out.append(("Content-Encoding", coding))
        out.append(("Vary", ", ".join(other_vary)))
        return out, compressed

    async def _error_response(self, entry: CachedResponse, local: bool) -> None:
        """An error from the origin (or lbd's own 502/503/504): the custom error response's page and
        status when one is configured, else the error as it came."""
        custom = self.dist.errors.get(entry.status)
        if custom is not None and custom.response_page_path is not None and custom.response_code is not None:
            page = await self._error_page(custom.response_page_path)
            if page is not None:
                self.respond_cached(
                    CachedResponse(custom.response_code, page.headers, page.body, page.stored_at),
                    ERROR,
                    from_cache=False,
                    detailed="CustomErrorPage",
                )
                return
        self.respond_cached(
            entry, ERROR, from_cache=False, detailed="OriginConnectError" if local else "Error"
        )

    async def _error_page(self, path: str) -> CachedResponse | None:
        """The custom error page, fetched like any object through the behavior its path matches."""
        sub = EdgeRequest(
            self.conn,
            ViewerRequest(
                "GET",
                path,
                "",
                self.request.version,
                [(n, v) for n, v in self.request.headers if n in ("host", "accept-encoding")],
                b"",
                True,
            ),
        )
        sub.capturing = True
        if not sub.serve():
            await sub.run()
        return sub.captured

    capturing = False  # a custom error page's fetch: keep the response instead of answering a viewer
    captured: CachedResponse | None = None

    # -- origins ----------------------------------------------------------------------------------------

    def _key_fields(self) -> list[tuple[str, str]]:
        """What a cached request forwards: the key's headers and cookies, the normalised
        Accept-Encoding (CloudFront sends identity when the policy enables no compressed objects)."""
        request, policy = self.request, self.behavior.policy.key
        out = [
            (name, request.fields[name])
            for name in policy.headers
            if name in request.fields and name != "host"
        ]
        cookie = selected_cookie_header(request.fields.get("cookie"), policy.cookies)
        if cookie is not None:
            out.append(("Cookie", cookie))
        for name in self.dist.cache.vary.get(self.primary_key(), ()):
            if name in request.fields and name not in policy.headers:
                out.append((name, request.fields[name]))  # what stored responses vary on
        out.append(("Accept-Encoding", self.encoding or "identity"))
        if "user-agent" not in policy.headers:
            out.append(("User-Agent", "Amazon CloudFront"))
        return out

    def _viewer_fields(self) -> list[tuple[str, str]]:
        return [(name, value) for name, value in self.request.headers if name not in _NOT_FORWARDED]

    async def _ask_origins(self, method: str, fields: list[tuple[str, str]], body: bytes) -> OriginFetch:
        """The behavior's origin, or its origin group's members in order: the next member is tried on a
        failover status or when no answer came (only GET, HEAD and OPTIONS fail over)."""
        members, codes = self.dist.members(self.behavior.origin)
        stats = self.dist.cache.stats
        fetch: OriginFetch | None = None
        for index, origin in enumerate(members):
            fetch = OriginFetch(
                origin.listener,
                self.conn.tracker,
                self.conn.pool,
                self.conn.peer,
                self.dist.max_object,
                head_request=method == "HEAD",
            )
            self.fetch = fetch
            started = time.monotonic()
            stats.origin_requests += 1
            fetch.start(self._origin_request(origin, method, fields, body))
            await fetch.head()
            if not fetch.local and fetch.status:
                stats.origin_latency.observe(time.monotonic() - started)
            last = index == len(members) - 1
            failed = bool(fetch.failed) or fetch.local or fetch.status in codes
            if failed and not last and method in ("GET", "HEAD", "OPTIONS"):
                log.info(
                    "%s: origin %s answered %s; failing over to %s",
                    self.dist.name,
                    origin.id,
                    fetch.failed or ("no target" if fetch.local else fetch.status),
                    members[index + 1].id,
                )
                stats.origin_failovers += 1
                fetch.cancel()
                continue
            break
        assert fetch is not None
        return fetch

    def _origin_request(
        self, origin: OriginRuntime, method: str, fields: list[tuple[str, str]], body: bytes
    ) -> bytes:
        request = self.request
        path = origin.origin_path + request.path
        if request.method in CACHED_METHODS and self.behavior.caches:
            query = query_key(request.query, self.behavior.policy.key.query_strings)  # what the key holds
        else:
            query = request.query
        host = request.fields.get("host", origin.id)
        via = request.fields.get("via")
        edge = f"1.1 {self.dist.edge_name} (lbd)"
        lines = [
            f"{method} {path}{'?' + query if query else ''} HTTP/1.1\r\n",
            f"Host: {host}\r\n",
            f"Via: {via + ', ' if via else ''}{edge}\r\n",
            f"X-Amz-Cf-Id: {self.id}\r\n",
            f"CloudFront-Forwarded-Proto: {self.conn.scheme}\r\n",
            "Connection: close\r\n",
        ]
        lines += [f"{name}: {value}\r\n" for name, value in fields]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}\r\n")
        access = origin.access
        if access is not None and access.type == "sigv4":
            assert access.access_key_id is not None
            signed = sign(
                method,
                path,
                query,
                host,
                body,
                access_key_id=access.access_key_id,
                secret=origin.secret,
                region=access.region,
                service=access.service,
            )
            lines += [f"{name}: {value}\r\n" for name, value in signed]
        head = "".join(lines).encode("latin-1", "replace") + origin.header_lines + self.waf_lines + b"\r\n"
        return head + body

    async def _pass_through(self, fields: list[tuple[str, str]] | None = None) -> None:
        """Uncached: the viewer's method, fields and body to the origin, the answer back as it comes."""
        request = self.request
        if fields is None:
            uncached = not self.behavior.caches or request.method not in CACHED_METHODS
            fields = self._viewer_fields() if uncached else self._key_fields()
        fetch = await self._ask_origins(request.method, fields, request.body)
        if fetch.failed and not fetch.status:
            self._local(502, fetch.failed, ERROR)
            return
        body = await fetch.read_all()
        if body is None:
            await self._relay(fetch, list(fetch.headers), None, time.time())
            return
        self.dist.cache.stats.bytes_from_origin += len(body)
        result = ERROR if fetch.status >= 400 else MISS
        entry = CachedResponse(
            fetch.status,
            tuple((n, v) for n, v in fetch.headers if n.lower() not in _NOT_SERVED),
            body,
            time.time(),
        )
        if fetch.status >= 400:
            await self._error_response(entry, fetch.local)
        else:
            self.respond_cached(entry, result, from_cache=False)

    # -- responses --------------------------------------------------------------------------------------

    def _edge_fields(self, result: str) -> str:
        edge = self.dist.edge_name
        return f"X-Cache: {result} from {edge}\r\nX-Amz-Cf-Pop: {edge}\r\nX-Amz-Cf-Id: {self.id}\r\n"

    def respond_cached(
        self, entry: CachedResponse, result: str, from_cache: bool = True, detailed: str = ""
    ) -> None:
        """Answer from a stored (or just fetched) response: HEAD, ranges and conditional requests."""
        if self.capturing:
            self.captured = entry if entry.status < 400 else None
            return
        request = self.request
        outcome = self.outcome
        outcome.result, outcome.detailed = result, detailed or result
        outcome.from_cache = from_cache and result in (HIT, REFRESH_HIT)
        status, body = entry.status, entry.body
        extra = ""
        skip: frozenset[str] = frozenset()
        if status == 200 and request.method in CACHED_METHODS and request.conditional:
            fields = _fields(entry.headers)
            if not_modified(request.fields, fields.get("etag"), fields.get("last-modified")):
                status, body = 304, b""
            elif (span := self._range(fields, len(body))) is not None:
                if span is UNSATISFIABLE:
                    status, body = 416, b""
                    extra = f"Content-Range: bytes */{len(entry.body)}\r\n"
                    skip = frozenset({"content-type"})
                elif isinstance(span, ByteRange):
                    status, body = 206, body[span.start : span.end + 1]
                    extra = f"Content-Range: {span.content_range(len(entry.body))}\r\n"
                    outcome.range = span
        if status == 304:
            skip = frozenset(n.lower() for n, _ in entry.headers) - _NOT_MODIFIED_FIELDS - {"last-modified"}
        if entry.status == 200:
            extra += "Accept-Ranges: bytes\r\n"
        if from_cache:
            extra += f"Age: {entry.age(time.time())}\r\n"
        if status == entry.status and entry.field_lines:
            head = self._stored_head(entry, len(body), result, extra)  # a hit's common case
        else:
            head = self._head(
                status, entry.headers, None if status == 304 else len(body), result, extra, skip
            )
        outcome.status = status
        outcome.headers = entry.headers
        if request.method == "HEAD" or status in (204, 304):
            body = b""
        outcome.body_bytes = len(body)
        self.conn.respond(
            self, head + body if len(body) < 65536 else head, body if len(body) >= 65536 else b""
        )

    def _stored_head(self, entry: CachedResponse, length: int, result: str, extra: str) -> bytes:
        edge = self.dist.edge_name
        close = "Connection: close\r\n" if not self.request.keep_alive or self.conn.closing else ""
        return (
            f"HTTP/1.1 {entry.status} {_reason(entry.status)}\r\n{entry.field_lines}Content-Length: {length}"
            f"\r\n{extra}X-Cache: {result} from {edge}\r\nX-Amz-Cf-Pop: {edge}\r\nX-Amz-Cf-Id: {self.id}"
            f"\r\n{close}\r\n"
        ).encode("latin-1", "replace")

    def _head(
        self,
        status: int,
        headers: tuple[tuple[str, str], ...] | list[tuple[str, str]],
        length: int | None,
        result: str,
        extra: str = "",
        skip: frozenset[str] = frozenset(),
    ) -> bytes:
        """A response head for the viewer: the stored or origin fields (less ``skip``), the framing
        (``Content-Length``, or chunked when ``length`` is -1; none when None), Via after the origin's
        own, ``extra`` and the edge's fields."""
        lines = [f"HTTP/1.1 {status} {_reason(status)}\r\n"]
        via = None
        for name, value in headers:
            lower = name.lower()
            if lower in skip:
                continue
            if lower == "via":
                via = value
                continue
            lines.append(f"{name}: {value}\r\n")
        if length == -1:
            lines.append("Transfer-Encoding: chunked\r\n")
        elif length is not None:
            lines.append(f"Content-Length: {length}\r\n")
        lines.append(f"Via: {via + ', ' if via else ''}1.1 {self.dist.edge_name} (lbd)\r\n")
        lines.append(extra)
        lines.append(self._edge_fields(result))
        if not self.request.keep_alive or self.conn.closing:
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1", "replace")

    def _range_of_a_large_object(self, fetch: OriginFetch, fields: Mapping[str, str]) -> bool:
        length = fields.get("content-length", "")
        return (
            self.request.method == "GET"
            and "range" in self.request.fields
            and fetch.status == 200
            and length.isdigit()
            and int(length) > self.dist.max_object
        )

    def _relays(self, fetch: OriginFetch, fields: Mapping[str, str]) -> bool:
        """Whether a cacheable miss is sent on as it arrives (while it is stored): a 200 to a plain GET
        whose body is still coming and that will not be compressed, ranged or answered 304."""
        request = self.request
        if request.method != "GET" or fetch.status != 200 or fetch.ended:
            return False
        if any(name in request.fields for name in ("range", "if-none-match", "if-modified-since")):
            return False
        coding = compression.choose(self.encoding) if self.behavior.compress else None
        length = fields.get("content-length", "")
        size = int(length) if length.isdigit() else compression.MIN_SIZE
        return coding is None or not compression.compressible(200, fields, size)

    async def _relay(
        self,
        fetch: OriginFetch,
        headers: list[tuple[str, str]],
        store: tuple[bytes, Freshness, int] | None,
        now: float,
    ) -> bool:
        """Send the origin's response on as it arrives, with flow control both ways; keep a copy to
        store under ``store``'s key when one is given and the body stays within max_object_mb (larger
        ones are passed through, never buffered whole). True when it was stored."""
        outcome, conn, stats = self.outcome, self.conn, self.dist.cache.stats
        outcome.result = outcome.detailed = MISS if fetch.status < 400 else ERROR
        outcome.status = fetch.status
        fields = _fields(headers)
        outcome.headers = headers
        length = fields.get("content-length", "")
        bodiless = self.request.method == "HEAD" or fetch.status in (204, 304)
        chunked = not length.isdigit() and not bodiless
        served = [(n, v) for n, v in headers if n.lower() not in _NOT_SERVED]
        size = None if bodiless and not length.isdigit() else (int(length) if length.isdigit() else -1)
        conn.write(self._head(fetch.status, served, size, outcome.result))
        limit = self.dist.max_object
        kept: list[bytes] | None = [] if store is not None else None
        total = 0

        def write(chunk: bytes) -> None:
            nonlocal kept, total
            total += len(chunk)
            outcome.body_bytes += len(chunk)
            stats.bytes_from_origin += len(chunk)
            if kept is not None:
                if total <= limit:
                    kept.append(chunk)
                else:
                    kept = None  # too large to store: the rest only passes through
            conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)

        for chunk in fetch.stream(write):
            write(chunk)
        await fetch.done()
        if fetch.failed:
            conn.abort()  # the body broke off: the viewer must not take it as complete
            return False
        if chunked:
            conn.write(b"0\r\n\r\n")
        stored = False
        if store is not None and kept is not None:
            key, freshness, epoch = store
            entry = self._entry(fetch.status, served, b"".join(kept), now, freshness)
            stored = self.dist.cache.put(key, entry, freshness.ttl, epoch)
        conn.finished(self)
        return stored

    def _range(self, fields: Mapping[str, str], length: int) -> object:
        header = self.request.fields.get("range")
        if header is None or self.request.method != "GET":
            return None
        if_range = self.request.fields.get("if-range")
        if if_range is not None and if_range not in (fields.get("etag"), fields.get("last-modified")):
            return None  # RFC 9110 13.1.5: the representation changed; send it whole
        return parse_range(header, length)

    def _local(self, status: int, why: str, result: str) -> None:
        """lbd's own answer (a disallowed method, an origin that gave nothing)."""
        log.info("%s: %s %s -> %d (%s)", self.dist.name, self.request.method, self.request.path, status, why)
        body = f"{status} {_reason(status)}: {why}\n".encode()
        entry = CachedResponse(status, (("Content-Type", "text/plain; charset=utf-8"),), body, time.time())
        self.respond_cached(entry, result, from_cache=False, detailed=result)


_REASONS = {
    200: "OK",
    203: "Non-Authoritative Information",
    204: "No Content",
    206: "Partial Content",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    416: "Range Not Satisfiable",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _reason(status: int) -> str:
    return _REASONS.get(status, "Status")
