"""Sealed stickiness cookies: ALB's group (AWSALBTG) and target (AWSALB, AWSALBAPP) stickiness, CLB's AWSELB.

Every value is AES-GCM over a small plaintext (the group or target it names, and when it was issued) with a
key from the stickiness key file (``node.stickiness_key_file``), so a client can neither read where it is
stuck nor forge another target, and any worker, after a restart or on another node sharing the file, can
open a cookie another one set. The file holds one key per line, newest first: the newest seals, every one
opens, so a new key prepended to the file (and a reload) rotates keys without ending existing sessions. A
value that does not open (forged, truncated, sealed with a key no longer in the file, of another cookie
kind: the kind is the associated data) is ignored and the request is balanced as if it had no cookie.

Where sessions go (AWS: "Sticky sessions for your Application Load Balancer", "Configure sticky sessions
for your Classic Load Balancer"): a cookie naming a target that no longer takes traffic (unhealthy,
draining, deregistered) is treated as absent, so the request is balanced and the response sticks the client
to the new target; the old one does not get the session back when it recovers.

Per request, the work is a scan of the Cookie field and a dict lookup: values opened recently are kept
(most clients of one target present the very value lbd issued for it this second), and the Set-Cookie lines
for a target are sealed once a second, not once a response.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import time
from collections.abc import Callable, Container, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from lbd.routing.cookie_keys import KEY_BYTES as KEY_BYTES  # (defined there for the supervisor)
from lbd.routing.cookie_keys import KEY_ENV as KEY_ENV
from lbd.routing.cookie_keys import cookie_key as cookie_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from lbd.config.schema import ClassicStickiness, TargetGroupStickiness
    from lbd.upstream.target import Target

WEEK = 7 * 24 * 3600  # ALB's cookies always carry a 7-day Expires; the duration is checked inside the value
OPENED_CACHE = 4096  # opened values kept per stickiness; a bound, not an LRU
REMOVE = "_remove_"  # ALB's value for AWSALBAPP shards it does not use


# -- keys --------------------------------------------------------------------------------------------------


class KeyFileError(Exception):
    pass


def read_key_file(path: str | Path) -> tuple[bytes, ...]:
    """The keys of a key file, newest first; created with one fresh key when absent.

    Creation is race-free between workers and nodes starting at once: the key is written to a private
    temporary file and hard-linked into place, which fails when another process got there first, and then
    that process's key is read instead.
    """
    path = Path(path)
    try:
        return _parse_keys(path.read_text(encoding="ascii"), path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.urandom(8).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(os.urandom(KEY_BYTES).hex() + "\n")
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):  # another worker or node made it first: use theirs
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return _parse_keys(path.read_text(encoding="ascii"), path)


def _parse_keys(text: str, path: Path) -> tuple[bytes, ...]:
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = bytes.fromhex(line)
        except ValueError:
            raise KeyFileError(f"{path}: line {number} is not a hex key") from None
        if len(key) not in (16, 24, 32):
            raise KeyFileError(
                f"{path}: line {number}: a key is 16, 24 or 32 bytes (32, 48 or 64 hex digits)"
            )
        keys.append(key)
    if not keys:
        raise KeyFileError(f"{path}: no key in the file")
    return tuple(keys)


_current: tuple[bytes, ...] = ()


def use_keys(keys: Sequence[bytes]) -> None:
    """The keys this process seals and opens with (set by each Snapshot build, so a reload rotates)."""
    global _current
    _current = tuple(keys)


def current_keys() -> tuple[bytes, ...]:
    return _current or (cookie_key(),)


def load_keys(key_file: str | None) -> tuple[bytes, ...]:
    """The configured key file's keys, or the supervisor's process-wide key when there is none."""
    return read_key_file(key_file) if key_file else (cookie_key(),)


# -- sealing -----------------------------------------------------------------------------------------------


class CookieSealer:
    """AES-GCM with the newest key; opening tries each key. ``purpose`` is the associated data, so a value
    of one cookie kind is never accepted as another."""

    def __init__(self, keys: bytes | Sequence[bytes], purpose: bytes) -> None:
        self._keys = (keys,) if isinstance(keys, bytes) else tuple(keys)
        self._ciphers: tuple[AESGCM, ...] = ()
        self._invalid: type[Exception] = Exception  # cryptography's InvalidTag, once it is loaded
        self._purpose = purpose

    @property
    def _aeads(self) -> tuple[AESGCM, ...]:
        # Made on first use: every HTTP listener has a sealer (weighted forwards may seal), but only
        # stickiness uses one, and cryptography costs a worker megabytes it need not hold without it.
        if not self._ciphers:
            from cryptography.exceptions import InvalidTag
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._invalid = InvalidTag
            self._ciphers = tuple(AESGCM(key) for key in self._keys)
        return self._ciphers

    def seal_bytes(self, plain: bytes) -> str:
        nonce = os.urandom(12)
        sealed = self._aeads[0].encrypt(nonce, plain, self._purpose)
        return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def open_bytes(self, value: str) -> bytes | None:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (ValueError, binascii.Error):
            return None
        if len(raw) < 12 + 16:
            return None
        for aead in self._aeads:
            try:
                return aead.decrypt(raw[:12], raw[12:], self._purpose)
            except self._invalid:
                continue
        return None

    def seal(self, name: str, ttl_seconds: int, now: float | None = None) -> tuple[str, int]:
        expiry = int(now if now is not None else time.time()) + ttl_seconds
        return self.seal_bytes(f"{name}|{expiry}".encode()), expiry

    def open(self, value: str, now: float | None = None) -> str | None:
        """The name sealed in ``value``, or None when it is forged, damaged or expired."""
        plain = self.open_bytes(value)
        if plain is None:
            return None
        try:
            name, _, expiry = plain.decode().rpartition("|")
        except UnicodeDecodeError:
            return None
        if not expiry.isdigit() or int(expiry) < (now if now is not None else time.time()):
            return None
        return name


# -- reading cookies -----------------------------------------------------------------------------------------


def cookie_value(headers: Iterable[tuple[bytes, bytes]], cookie_name: bytes) -> str | None:
    """The value of one cookie in the request's Cookie headers (RFC 6265 5.4)."""
    prefix = cookie_name + b"="
    for name, value in headers:
        if len(name) == 6 and name.lower() == b"cookie" and prefix in value:
            for pair in value.split(b";"):
                pair = pair.strip()
                if pair.startswith(prefix):
                    return pair[len(prefix) :].decode("latin-1")
    return None


def block_cookie(block: bytes, prefix: bytes) -> str | None:
    """``cookie_value`` on a raw header block (the fast path's), without parsing the block: ``prefix`` is
    ``name=``; it counts only at the start of a pair in a Cookie field line."""
    at = block.find(prefix)
    while at >= 0:
        before = block[at - 1 : at] if at else b"\n"
        if before in (b" ", b";", b":", b"\t"):
            line = block.rfind(b"\n", 0, at) + 1
            if block[line : line + 7].lower() == b"cookie:":
                start = at + len(prefix)
                end = block.find(b"\r", start)
                if end < 0:
                    end = len(block)
                semicolon = block.find(b";", start, end)
                return block[start : semicolon if semicolon >= 0 else end].strip(b" \t").decode("latin-1")
        at = block.find(prefix, at + 1)
    return None


class HasCookies(Protocol):
    """What stickiness reads from an exchange (lbd.http.exchange.Exchange)."""

    head_block: bytes | None

    @property
    def headers(self) -> Sequence[tuple[bytes, bytes]]: ...


def request_cookie(exchange: HasCookies, name: bytes) -> str | None:
    block = exchange.head_block
    if block is not None:
        return block_cookie(block, name + b"=")
    return cookie_value(exchange.headers, name)


def response_sets(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The Set-Cookie value a response gives cookie ``name``, attributes included, or None."""
    prefix = name + b"="
    for field, value in headers:
        if len(field) == 10 and field.lower() == b"set-cookie" and value.lstrip().startswith(prefix):
            return value.strip()
    return None


def head_sets(head: bytes, name: bytes) -> bytes | None:
    """``response_sets`` on a raw response head (the fast path's)."""
    lower = head.lower()
    at = lower.find(b"\nset-cookie:")
    while at >= 0:
        start = at + 12
        end = head.find(b"\r", start)
        value = head[start : end if end >= 0 else len(head)].strip()
        if value.startswith(name + b"="):
            return value
        at = lower.find(b"\nset-cookie:", start)
    return None


def cookie_lifetime(set_cookie: bytes) -> bytes:
    """The Expires and Max-Age attributes of an application's Set-Cookie value, as "; "-led bytes
    (CLB's application-controlled AWSELB follows the application cookie's lifetime)."""
    kept = b""
    for attribute in set_cookie.split(b";")[1:]:
        attribute = attribute.strip()
        lowered = attribute.lower()
        if lowered.startswith((b"expires=", b"max-age=")):
            kept += b"; " + attribute
    return kept


# -- target stickiness ---------------------------------------------------------------------------------------


class Group(Protocol):
    """The target group stickiness balances in (lbd.runtime.TargetGroupRuntime)."""

    name: str
    targets: tuple[Target, ...]

    def pick(self, flow_key: bytes | None = ..., exclude: Container[Target] = ...) -> Target | None: ...


Picked = tuple["Target | None", bytes]  # the target, and the Set-Cookie lines its response gets


class TargetStickiness:
    """One target group's target stickiness; the kinds below differ in cookies, not in how they pick."""

    kind = ""
    needs_response = False  # True: the response's Set-Cookie fields decide (application cookies)

    def __init__(
        self,
        group: Group,
        scope: str,
        cookie: bytes,
        sealer: CookieSealer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.group_name = scope
        self.cookie = cookie
        self.sealer = sealer
        self.clock = clock
        self.by_key = {target.key: target for target in group.targets}
        self.app_cookie_name = b""  # the application's cookie, for the kinds that follow one
        self._opened: dict[str, tuple[str, int]] = {}  # value -> (target key, issued)
        self._issued: dict[str, tuple[int, bytes, str]] = {}  # target key -> (second, Set-Cookie, value)
        self.non_sticky = 0  # requests that had a cookie lbd could not follow (NonStickyRequestCount)

    # the request side

    def pick(
        self, exchange: HasCookies, group: Group, tried: Container[Target]
    ) -> tuple[Target | None, bytes]:
        """The target for a request and the Set-Cookie lines its response gets."""
        if not tried:
            value = request_cookie(exchange, self.cookie)
            if value is not None:
                target = self.stuck(value)
                if target is not None:
                    return target, self.when_stuck(target)
                self.non_sticky += 1
        target = group.pick(None, tried)
        if target is None:
            return None, b""
        return target, self.when_new(target)

    def stuck(self, value: str) -> Target | None:
        opened = self._opened.get(value)
        if opened is None:
            opened = self._open(value)
            if opened is None:
                return None
            if len(self._opened) >= OPENED_CACHE:
                self._opened.clear()
            self._opened[value] = opened
        key, issued = opened
        if not self.fresh(issued):
            return None
        target = self.by_key.get(key)
        if target is None or not target.eligible:
            return None  # deregistered, draining, unhealthy: balance anew (ELB moves the session)
        return target

    def _open(self, value: str) -> tuple[str, int] | None:
        plain = self.sealer.open_bytes(value)
        if plain is None:
            return None
        group, _, rest = plain.partition(b"|")
        key, _, issued = rest.rpartition(b"|")
        if group.decode("latin-1") != self.group_name or not issued.isdigit():
            return None  # another group's cookie (AWSALB is one name for every group)
        return key.decode("latin-1"), int(issued)

    def fresh(self, issued: int) -> bool:
        return True

    def when_stuck(self, target: Target) -> bytes:
        return b""

    def when_new(self, target: Target) -> bytes:
        return b""

    # the response side (needs_response)

    def response_cookies(self, exchange: HasCookies, target: Target, app_cookie: bytes | None) -> bytes:
        return b""

    # sealing, once a second per target

    def sealed(self, target: Target) -> tuple[int, bytes, str]:
        now = int(self.clock())
        cached = self._issued.get(target.key)
        if cached is not None and cached[0] == now:
            return cached
        value = self.sealer.seal_bytes(f"{self.group_name}|{target.key}|{now}".encode())
        issued = (now, self.render(value, now), value)
        self._issued[target.key] = issued
        return issued

    def render(self, value: str, now: int) -> bytes:
        return b""


def _expires(now: int, seconds: int) -> str:
    return http_date(now + seconds)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(seconds: float) -> str:
    """IMF-fixdate (RFC 9110 5.6.7), what ``email.utils.formatdate(usegmt=True)`` writes, without the
    email package (a megabyte of a worker's memory for one function) and without the locale strftime
    would consult."""
    t = time.gmtime(seconds)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


class LbCookie(TargetStickiness):
    """ALB ``lb_cookie``: AWSALB, and AWSALBCORS (SameSite=None; Secure) for cross-origin requests, on every
    response, with a 7-day Expires; the duration (1 s to 7 days) since the last response is checked inside."""

    kind = "lb_cookie"

    def __init__(
        self,
        group: Group,
        scope: str,
        duration: int,
        sealer: CookieSealer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(group, scope, b"AWSALB", sealer, clock)
        self.duration = duration

    def fresh(self, issued: int) -> bool:
        return issued + self.duration >= self.clock()

    def when_stuck(self, target: Target) -> bytes:
        return self.sealed(target)[1]

    def when_new(self, target: Target) -> bytes:
        return self.sealed(target)[1]

    def render(self, value: str, now: int) -> bytes:
        expires = _expires(now, WEEK)
        return (
            f"Set-Cookie: AWSALB={value}; Expires={expires}; Path=/\r\n"
            f"Set-Cookie: AWSALBCORS={value}; Expires={expires}; Path=/; SameSite=None; Secure\r\n"
        ).encode()


class AppCookie(TargetStickiness):
    """ALB ``app_cookie``: the target's own cookie (``cookie_name``) plus ALB's sealed AWSALBAPP-0..3.

    ALB looks only at whether the application cookie is there, never at its value. A request is stuck when
    it carries both; a response gets AWSALBAPP-0 (and ``_remove_`` in the unused shards 1-3, lbd's values
    being far below the 4 KB a shard holds) when the target sets the application cookie or the request was
    stuck, and ``_remove_`` in all four when there is no application cookie either way.
    """

    kind = "app_cookie"
    needs_response = True

    def __init__(
        self,
        group: Group,
        scope: str,
        app_cookie: str,
        duration: int,
        sealer: CookieSealer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(group, scope, b"AWSALBAPP-0", sealer, clock)
        self.app_cookie_name = app_cookie.encode()
        self.duration = duration
        now = int(self.clock())
        self._removed = (0, b"")
        self._removed = (now, self._remove_all(now))

    def pick(
        self, exchange: HasCookies, group: Group, tried: Container[Target]
    ) -> tuple[Target | None, bytes]:
        if request_cookie(exchange, self.app_cookie_name) is None:
            # Without the application cookie there is no session, whatever AWSALBAPP says.
            return group.pick(None, tried), b""
        return super().pick(exchange, group, tried)

    def fresh(self, issued: int) -> bool:
        return issued + self.duration >= self.clock()

    def response_cookies(self, exchange: HasCookies, target: Target, app_cookie: bytes | None) -> bytes:
        if app_cookie is not None or request_cookie(exchange, self.app_cookie_name) is not None:
            return self.sealed(target)[1]
        now = int(self.clock())
        if self._removed[0] != now:
            self._removed = (now, self._remove_all(now))
        return self._removed[1]

    def render(self, value: str, now: int) -> bytes:
        expires = _expires(now, WEEK)
        lines = [f"Set-Cookie: AWSALBAPP-0={value}; Expires={expires}; Path=/\r\n"]
        lines += [f"Set-Cookie: AWSALBAPP-{n}={REMOVE}; Expires={expires}; Path=/\r\n" for n in (1, 2, 3)]
        return "".join(lines).encode()

    def _remove_all(self, now: int) -> bytes:
        expires = _expires(now, WEEK)
        return "".join(
            f"Set-Cookie: AWSALBAPP-{n}={REMOVE}; Expires={expires}; Path=/\r\n" for n in range(4)
        ).encode()


class ClassicDuration(TargetStickiness):
    """CLB duration-based stickiness: AWSELB (+AWSELBCORS) set when a client is balanced, never refreshed,
    with an Expires ``period`` seconds ahead, or a browser-session cookie without a period."""

    kind = "duration"

    def __init__(
        self,
        group: Group,
        scope: str,
        period: int | None,
        sealer: CookieSealer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(group, scope, b"AWSELB", sealer, clock)
        self.period = period

    def when_new(self, target: Target) -> bytes:
        return self.sealed(target)[1]

    def render(self, value: str, now: int) -> bytes:
        lifetime = f"; Expires={_expires(now, self.period)}" if self.period else ""
        return (
            f"Set-Cookie: AWSELB={value}{lifetime}; Path=/\r\n"
            f"Set-Cookie: AWSELBCORS={value}{lifetime}; Path=/; SameSite=None; Secure\r\n"
        ).encode()


class ClassicApplication(TargetStickiness):
    """CLB application-controlled stickiness: a new AWSELB only when the response sets the application
    cookie, with that cookie's Expires/Max-Age; no application cookie in the request, no stickiness. After a
    failover the client is stuck to the new instance at once (CLB keeps the session there)."""

    kind = "application"
    needs_response = True

    def __init__(
        self,
        group: Group,
        scope: str,
        app_cookie: str,
        sealer: CookieSealer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(group, scope, b"AWSELB", sealer, clock)
        self.app_cookie_name = app_cookie.encode()

    def pick(
        self, exchange: HasCookies, group: Group, tried: Container[Target]
    ) -> tuple[Target | None, bytes]:
        if request_cookie(exchange, self.app_cookie_name) is None:
            return group.pick(None, tried), b""
        had = request_cookie(exchange, self.cookie) is not None
        target, cookies = super().pick(exchange, group, tried)
        if target is not None and had and not cookies and self.stuck_to(exchange) is not target:
            cookies = self.sealed(target)[1]  # failover: stay on the new instance
        return target, cookies

    def stuck_to(self, exchange: HasCookies) -> Target | None:
        value = request_cookie(exchange, self.cookie)
        return self.stuck(value) if value is not None else None

    def response_cookies(self, exchange: HasCookies, target: Target, app_cookie: bytes | None) -> bytes:
        # CLB ignores an application cookie whose Set-Cookie ends in ";" (elb-sticky-sessions).
        if app_cookie is None or app_cookie.endswith(b";"):
            return b""
        value = self.sealed(target)[2]
        lifetime = cookie_lifetime(app_cookie)
        return (
            b"Set-Cookie: AWSELB=%b%b; Path=/\r\n"
            b"Set-Cookie: AWSELBCORS=%b%b; Path=/; SameSite=None; Secure\r\n"
            % (
                value.encode(),
                lifetime,
                value.encode(),
                lifetime,
            )
        )


def target_stickiness(
    group: Group,
    scope: str,
    protocol: str,
    config: TargetGroupStickiness,
    classic: ClassicStickiness | None,
    keys: Sequence[bytes],
) -> TargetStickiness | None:
    """The cookie stickiness of one target group (None: off, or source_ip, which the flow hash gives).
    ``scope`` is sealed into the cookies: a cookie is honoured only where the scope is the same (the target
    group's name on ALB, the load balancer's on CLB)."""
    if protocol not in ("HTTP", "HTTPS"):
        return None
    if classic is not None:
        sealer = CookieSealer(keys, b"AWSELB")
        if classic.type == "duration":
            return ClassicDuration(group, scope, classic.cookie_expiration_period_seconds, sealer)
        assert classic.cookie_name is not None  # the schema requires it for application stickiness
        return ClassicApplication(group, scope, classic.cookie_name, sealer)
    if not config.enabled:
        return None
    if config.type == "lb_cookie":
        return LbCookie(group, scope, config.duration_seconds, CookieSealer(keys, b"AWSALB"))
    if config.type == "app_cookie":
        assert config.cookie_name is not None
        return AppCookie(
            group, scope, config.cookie_name, config.duration_seconds, CookieSealer(keys, b"AWSALBAPP")
        )
    return None
