"""Rule actions compiled once per Snapshot: forward (weighted, with group stickiness), redirect and
fixed-response (AWS: Application Load Balancers, "Listener rules", "Rule action types")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from lbd.routing.phrases import phrase
from lbd.routing.stickiness import CookieSealer, cookie_value, http_date

if TYPE_CHECKING:
    # Workers compile actions from plain records with these models' fields (lbd/config/plain.py).
    from lbd.config.schema import Action, FixedResponseAction, ForwardAction, RedirectAction
    from lbd.routing.request import RequestView


class NamedGroup(Protocol):
    """What routing needs of a target group: its name (stickiness cookies name the group). Routing is pure:
    it picks among the groups it is given, whatever the caller's group type (lbd.runtime's at run time)."""

    @property
    def name(self) -> str: ...


G = TypeVar("G", bound=NamedGroup)

TG_COOKIE = b"AWSALBTG"
MAX_LOCATION = 8 * 1024  # ALB counts longer redirect URLs in HTTP_Redirect_Url_Limit_Exceeded_Count


class Forward(Generic[G]):
    """Forward to one target group, or split between up to five by weight (smooth weighted round robin,
    so a 3:1 split is exactly 3:1 over every four requests rather than only on average)."""

    kind = "forward"
    __slots__ = ("_current", "by_name", "groups", "sealer", "sticky_seconds", "weights")

    def __init__(self, action: ForwardAction, target_groups: Mapping[str, G], sealer: CookieSealer) -> None:
        self.groups = tuple(target_groups[g.name] for g in action.target_groups)
        self.weights = tuple(g.weight for g in action.target_groups)
        self.by_name = {g.name: g for g in self.groups}
        self._current = [0] * len(self.groups)
        # Group stickiness only means something when there is more than one group to stick to.
        self.sticky_seconds = action.stickiness.duration_seconds if action.stickiness.enabled else 0
        self.sealer = sealer

    @property
    def single(self) -> G | None:
        return self.groups[0] if len(self.groups) == 1 and not self.sticky_seconds else None

    def pick(self, headers: Iterable[tuple[bytes, bytes]]) -> tuple[G | None, bytes]:
        """The target group for a request, and the Set-Cookie lines to add to its response."""
        if self.sticky_seconds:
            sealed = cookie_value(headers, TG_COOKIE)
            if sealed is not None:
                name = self.sealer.open(sealed)
                group = self.by_name.get(name) if name is not None else None
                if group is not None:
                    return group, self._cookies(group)
        group = self._weighted()
        if group is None:
            return None, b""
        return group, self._cookies(group) if self.sticky_seconds else b""

    def _weighted(self) -> G | None:
        if len(self.groups) == 1:
            return self.groups[0] if self.weights[0] else None
        total = 0
        best = -1
        current = self._current
        for index, weight in enumerate(self.weights):
            if not weight:
                continue
            current[index] += weight
            total += weight
            if best < 0 or current[index] > current[best]:
                best = index
        if best < 0:
            return None  # every weight is 0: nothing to forward to
        current[best] -= total
        return self.groups[best]

    def _cookies(self, group: G) -> bytes:
        # ALB sets AWSALBTG and, for cross-origin requests, AWSALBTGCORS with SameSite=None; Secure.
        value, expiry = self.sealer.seal(group.name, self.sticky_seconds)
        expires = http_date(expiry)
        return (
            f"Set-Cookie: AWSALBTG={value}; Expires={expires}; Path=/\r\n"
            f"Set-Cookie: AWSALBTGCORS={value}; Expires={expires}; Path=/; SameSite=None; Secure\r\n"
        ).encode()


class Respond:
    """A response lbd sends itself, rendered to bytes once (fixed-response)."""

    kind = "respond"
    __slots__ = ("response",)

    def __init__(self, response: bytes) -> None:
        self.response = response


def render_fixed_response(action: FixedResponseAction) -> bytes:
    body = action.message_body.encode()
    head = [f"HTTP/1.1 {action.status_code} {phrase(action.status_code)}", "Server: lbd"]
    if action.content_type:
        head.append(f"Content-Type: {action.content_type}")
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Redirect:
    """Build the Location from the request: parts left as their placeholder keep the original value.

    Placeholders (ALB): #{host} in host, path and query; #{port} in port, path and query; #{path} (without
    its leading "/") in path and query; #{protocol} and #{query} in the query only.
    """

    kind = "redirect"
    __slots__ = ("host", "path", "port", "protocol", "query", "status")

    def __init__(self, action: RedirectAction) -> None:
        self.status = 301 if action.status_code == "HTTP_301" else 302
        self.protocol = action.protocol
        self.host = action.host
        self.port = action.port
        self.path = action.path
        self.query = action.query

    def location(self, request: RequestView, scheme: str, listener_port: int) -> str:
        original = {
            "#{protocol}": scheme,
            "#{host}": request.host,
            "#{port}": str(listener_port),
            "#{path}": request.path[1:] if request.path.startswith("/") else request.path,
            "#{query}": request.url.partition(b"?")[2].partition(b"#")[0].decode("latin-1"),
        }
        protocol = scheme if self.protocol == "#{protocol}" else self.protocol.lower()
        host = _fill(self.host, original, ("#{host}",))
        port = _fill(self.port, original, ("#{port}",))
        path = _fill(self.path, original, ("#{host}", "#{port}", "#{path}"))
        query = _fill(self.query, original, tuple(original))
        default = {"http": "80", "https": "443"}.get(protocol)
        authority = host if port == default else f"{host}:{port}"
        return f"{protocol}://{authority}{path}" + (f"?{query}" if query else "")

    def response(self, location: str, close: bool) -> bytes:
        text = f"{self.status} {phrase(self.status)}"
        body = (
            f"<html>\r\n<head><title>{text}</title></head>\r\n<body>\r\n<center><h1>{text}</h1></center>\r\n"
            "</body>\r\n</html>\r\n"
        ).encode()
        head = (
            f"HTTP/1.1 {text}\r\nServer: lbd\r\nLocation: {location}\r\nContent-Type: text/html\r\n"
            f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
        )
        return head.encode("latin-1") + body


def _fill(template: str, original: Mapping[str, str], allowed: tuple[str, ...]) -> str:
    for placeholder in allowed:
        if placeholder in template:
            template = template.replace(placeholder, original[placeholder])
    return template


CompiledAction = Forward[G] | Redirect | Respond


def compile_action(action: Action, target_groups: Mapping[str, G], sealer: CookieSealer) -> CompiledAction[G]:
    # The kind of an action is its type field (a worker's records have no model classes to tell apart).
    if action.type == "forward":
        return Forward(action, target_groups, sealer)
    if action.type == "redirect":
        return Redirect(action)
    return Respond(render_fixed_response(action))
