"""``GET /`` on the admin listener: the console page, its script and style sheet, and its login form.

The page is static (static/index.html, console.js, console.css, shipped as package data); its script
polls the admin API's JSON endpoints and draws its charts as SVG, so nothing here knows about the data.
When ``admin.token_file`` is set, a browser without the token gets a login form instead of the page; a
right token is kept in a cookie (HttpOnly, SameSite=Strict; lbd/admin/server.py checks it in constant
time, like the bearer header) that the page's JSON calls then carry.
"""

from __future__ import annotations

import hmac
import html
from importlib import resources
from urllib.parse import parse_qs

from lbd.admin.server import COOKIE_NAME, AdminRequest, AdminResponse, Router, cookie_value, credentials_ok

HTML = "text/html; charset=utf-8"
ASSETS = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "gateway.js": "text/javascript; charset=utf-8",  # APIs and usage plans
    "edge.js": "text/javascript; charset=utf-8",  # distributions and web ACLs
}
# The page loads nothing from elsewhere and runs no inline script: a stored name or description that
# slipped into the markup could not run (it is set as text anyway).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
LOGIN_FAILED = "That is not the admin token. It is the content of the file admin.token_file names."


def static_file(name: str) -> bytes:
    return (resources.files("lbd.console") / "static" / name).read_bytes()


class Console:
    def __init__(self, token: str | None) -> None:
        self.token = token
        self.page = static_file("index.html").decode()
        self.login_page = static_file("login.html").decode()
        self.assets = {name: static_file(name) for name in ASSETS}

    def _signed_in(self, request: AdminRequest) -> bool:
        return credentials_ok(request.headers.get("authorization"), request.headers.get("cookie"), self.token)

    async def index(self, request: AdminRequest) -> AdminResponse:
        if self._signed_in(request):
            # The page offers "Sign out" only where there is a session to end.
            session = "cookie" if self.token is not None else "none"
            body = self.page.replace('data-session=""', f'data-session="{session}"', 1)
            return AdminResponse(200, body, HTML, PAGE_HEADERS)
        failed = "login=failed" in request.query.split("&")
        message = f'<p class="error" role="alert">{html.escape(LOGIN_FAILED)}</p>' if failed else ""
        return AdminResponse(200, self.login_page.replace("<!--message-->", message, 1), HTML, PAGE_HEADERS)

    async def login(self, request: AdminRequest) -> AdminResponse:
        """The login form's POST (application/x-www-form-urlencoded ``token=...``): a cookie and back to
        the page, or back to the form saying the token was wrong (Post/Redirect/Get)."""
        if self.token is None:
            return _see_other("/")
        fields = parse_qs(request.body.decode("utf-8", "surrogateescape"), max_num_fields=4)
        given = (fields.get("token") or [""])[0].strip()
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self.token.encode()):
            return _see_other("/?login=failed")
        # A session cookie (no Max-Age): it ends with the browser session. No Secure attribute: the
        # admin listener speaks plain HTTP (RFC 6265 4.1.2.5 would keep the browser from sending it).
        cookie = f"{COOKIE_NAME}={cookie_value(self.token)}; Path=/; HttpOnly; SameSite=Strict"
        return _see_other("/", {"Set-Cookie": cookie})

    async def logout(self, request: AdminRequest) -> AdminResponse:
        cookie = f"{COOKIE_NAME}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"
        return _see_other("/", {"Set-Cookie": cookie})

    def asset(self, name: str) -> AdminResponse:
        return AdminResponse(200, self.assets[name], ASSETS[name], {"Cache-Control": "no-cache"})


def _see_other(location: str, headers: dict[str, str] | None = None) -> AdminResponse:
    return AdminResponse(
        303, b"", HTML, {"Location": location, "Cache-Control": "no-store", **(headers or {})}
    )


def add_routes(router: Router, token: str | None) -> Console:
    """The console's routes: the page and its form answer without the token (they show the login form
    to a browser without it); the script is behind the token like the JSON endpoints."""
    console = Console(token)

    async def stylesheet(request: AdminRequest) -> AdminResponse:
        return console.asset("console.css")  # the login form uses it too

    async def script(request: AdminRequest) -> AdminResponse:
        return console.asset("console.js")

    router.add("GET", "/", console.index, public=True)
    router.add("POST", "/login", console.login, public=True)
    router.add("POST", "/logout", console.logout, public=True)
    router.add("GET", "/console/console.css", stylesheet, public=True)
    router.add("GET", "/console/console.js", script)

    async def gateway_script(request: AdminRequest) -> AdminResponse:
        return console.asset("gateway.js")

    router.add("GET", "/console/gateway.js", gateway_script)

    async def edge_script(request: AdminRequest) -> AdminResponse:
        return console.asset("edge.js")

    router.add("GET", "/console/edge.js", edge_script)
    return console
