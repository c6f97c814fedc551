"""``lbd status``: the console's summary as text, for an SSH session.

It asks the admin API for ``/v1/summary`` twice, ``--interval`` seconds apart, and prints each listener's
request rate, 4xx and 5xx rates, open connections and p50/p99 latency over that window (the difference
of the counters, as the console's charts take them), then every target group's targets with their ELB
state, reason code and description; then the APIs and usage plans (render_gateway) and the
distributions and web ACLs (render_edge) when the config has them. The admin address and token come
from ``--admin`` and ``--token-file``, or from the config file's ``admin.listen`` and
``admin.token_file`` with ``-c``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lbd.observe.summary import quantile

DEFAULT_ADMIN = "127.0.0.1:9900"
TIMEOUT = 10.0  # seconds for one admin call: a summary asks every worker, which can take a moment
EXIT_OK, EXIT_UNREACHABLE, EXIT_CONFIG = 0, 1, 2


class StatusError(Exception):
    """What went wrong, said for the terminal; the exit code goes with it."""

    def __init__(self, message: str, exit_code: int = EXIT_UNREACHABLE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# -- where the admin API is ------------------------------------------------------------------------------


def base_url(address: str) -> str:
    """``host:port`` or a URL to the URL to call; a wildcard listen address is called on loopback."""
    if "://" in address:
        return address.rstrip("/")
    host, _, port = address.rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}.get(host, host)
    return f"http://{host}:{port}"


def _read_token(path: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StatusError(f"cannot read the admin token file {path}: {reason}", EXIT_CONFIG) from exc
    if not token:
        raise StatusError(f"the admin token file {path} is empty", EXIT_CONFIG)
    return token


def admin_from_args(args: argparse.Namespace) -> tuple[str, str | None]:
    """(base URL, token or None) from --admin/--token-file, else from the config's admin section."""
    address, token_file = args.admin, args.token_file
    if args.config:
        from lbd.config.loader import ConfigError, load_config

        try:
            config = load_config(args.config)
        except ConfigError as exc:
            issues = "; ".join(str(issue) for issue in exc.issues)
            raise StatusError(f"{args.config}: {issues}", EXIT_CONFIG) from exc
        address = address or config.admin.listen
        token_file = token_file or config.admin.token_file
    token_file = token_file or os.environ.get("LBD_ADMIN_TOKEN_FILE")
    return base_url(address or DEFAULT_ADMIN), _read_token(token_file) if token_file else None


def fetch(url: str, path: str, token: str | None) -> Any:
    request = urllib.request.Request(url + path, headers={"Accept": "application/json"})
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            message = json.load(exc).get("error", exc.reason)
        except (ValueError, AttributeError):
            message = exc.reason
        hint = " (give the token with --token-file, or -c with the config)" if exc.code == 401 else ""
        raise StatusError(f"{url}{path}: {exc.code} {message}{hint}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusError(f"cannot reach the admin API at {url}: {reason} (is lbd running?)") from exc


# -- the text ----------------------------------------------------------------------------------------------


def table(rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()) -> list[str]:
    """Columns padded to their widest cell (the ones in ``right`` right-aligned), two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def rate(now: int, before: int | None, seconds: float) -> float | None:
    if before is None or seconds <= 0:
        return None
    return max(0, now - before) / seconds  # a counter that restarted (a new worker) is no negative rate


def fmt_rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def fmt_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 0.001:
        return f"{value * 1e6:.0f} us"
    if value < 1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s"


def _window(after: dict[str, Any], before: dict[str, Any] | None) -> list[int]:
    then = before["request_duration"]["counts"] if before else [0] * len(after["request_duration"]["counts"])
    return [max(0, a - b) for a, b in zip(after["request_duration"]["counts"], then, strict=True)]


def listener_rows(after: dict[str, Any], before: dict[str, Any] | None) -> list[list[str]]:
    seconds = after["time"] - before["time"] if before else 0.0
    old = {(x["load_balancer"], x["listener"]): x for x in before["listeners"]} if before else {}
    bounds = after["latency_buckets"]
    rows = [
        [
            "LOAD BALANCER",
            "LISTENER",
            "REQ/S",
            "4XX/S",
            "5XX/S",
            "ACTIVE",
            "P50",
            "P99",
            "TOTAL",
            "4XX",
            "5XX",
        ]
    ]
    for listener in after["listeners"]:
        prev = old.get((listener["load_balancer"], listener["listener"]))
        network = listener["type"] == "network"
        count = "new_connections" if network else "requests"

        def per_second(name: str, listener: dict[str, Any] = listener, prev: Any = prev) -> str:
            return fmt_rate(rate(listener[name], prev[name] if prev else None, seconds))

        # Over the window when there are two samples, else since the listener started.
        window = _window(listener, prev) if prev or not before else None
        p50 = quantile(window, 0.5, bounds) if window and not network else None
        p99 = quantile(window, 0.99, bounds) if window and not network else None
        rows.append(
            [
                listener["load_balancer"],
                listener["listener"],
                per_second(count),
                "-" if network else per_second("http_4xx"),
                "-" if network else per_second("http_5xx"),
                str(listener["active_connections"]),
                fmt_seconds(p50),
                fmt_seconds(p99),
                str(listener[count]),
                "-" if network else str(listener["http_4xx"]),
                "-" if network else str(listener["http_5xx"]),
            ]
        )
    return rows


def target_rows(after: dict[str, Any]) -> list[list[str]]:
    rows = [["TARGET GROUP", "TARGET", "ZONE", "WEIGHT", "STATE", "REASON", "REQUESTS", "DESCRIPTION"]]
    for group in after["target_groups"]:
        if not group["targets"]:
            rows.append([group["name"], "(none)", "", "", "", "", "", ""])
        for target in group["targets"]:
            rows.append(
                [
                    group["name"],
                    target["target"],
                    str(target["zone"]),
                    str(target["weight"]),
                    str(target["state"]),
                    str(target.get("reason") or ""),
                    str(target["requests"]),
                    str(target.get("description") or ""),
                ]
            )
    return rows


def render(after: dict[str, Any], before: dict[str, Any] | None, url: str) -> str:
    workers = after["workers"]
    window = f"rates over {after['time'] - before['time']:.1f} s" if before else "totals since start"
    head = (
        f"lbd at {url}: generation {after['generation']}, "
        f"{workers['answering']}/{workers['configured']} worker(s) answering, {window}"
    )
    lines = [head, ""]
    if after["listeners"]:
        lines += table(listener_rows(after, before), right=frozenset({2, 3, 4, 5, 6, 7, 8, 9, 10}))
    else:
        lines.append("no listeners")
    lines.append("")
    if after["target_groups"]:
        lines += table(target_rows(after), right=frozenset({3, 6}))
    else:
        lines.append("no target groups")
    flags = [
        f"target group {g['name']}: {what}"
        for g in after["target_groups"]
        for flag, what in (
            ("fail_open", "fail open (every target takes traffic)"),
            ("zonal_failover", "zonal failover"),
        )
        if g.get(flag)
    ]
    if flags:
        lines += ["", *flags]
    lines += render_gateway(after, before)
    lines += render_edge(after, before)
    return "\n".join(lines) + "\n"


def _latency_window(after: dict[str, Any], before: dict[str, Any] | None) -> list[int]:
    now = after["latency"]["counts"]
    then = before["latency"]["counts"] if before else [0] * len(now)
    return [max(0, a - b) for a, b in zip(now, then, strict=True)]


def _auth(route: dict[str, Any]) -> str:
    parts = []
    if route.get("authorizer"):
        parts.append(f"{route['authorizer'].get('type')} {route['authorizer']['name']}")
    if route.get("api_key_required"):
        parts.append("API key")
    return ", ".join(parts) or "open"


def _integration(integration: dict[str, Any]) -> str:
    if integration["type"] == "MOCK":
        return f"MOCK {integration.get('status_code', '')}".rstrip()
    return f"{integration['type']} {integration.get('target_group', '')}".rstrip()


def api_rows(after: dict[str, Any], before: dict[str, Any] | None) -> list[list[str]]:
    """A row per API route (then the API's own, every route and unmatched requests), rates over the
    window between the two summaries, cache hit ratio and p50/p99 of the route's Latency."""
    seconds = after["time"] - before["time"] if before else 0.0
    old = {a["name"]: a for a in before.get("apis", [])} if before else {}
    bounds = after["latency_buckets"]
    rows = [
        [
            "API",
            "STAGE",
            "ROUTE",
            "INTEGRATION",
            "AUTH",
            "REQ/S",
            "4XX/S",
            "5XX/S",
            "CACHE HIT",
            "P50",
            "P99",
            "TOTAL",
        ]
    ]

    def row(api: dict[str, Any], name: str, now: dict[str, Any], prev: Any, first: list[str]) -> list[str]:
        def per_second(field: str) -> str:
            return fmt_rate(rate(now[field], prev[field] if prev else None, seconds))

        window = _latency_window(now, prev) if prev or not before else None
        ratio = now.get("cache_hit_ratio")
        return [
            api["name"],
            api["stage"],
            name,
            *first,
            per_second("requests"),
            per_second("http_4xx"),
            per_second("http_5xx"),
            "-" if ratio is None else f"{ratio * 100:.0f}%",
            fmt_seconds(quantile(window, 0.5, bounds) if window else None),
            fmt_seconds(quantile(window, 0.99, bounds) if window else None),
            str(now["requests"]),
        ]

    for api in after.get("apis", []):
        prev_api = old.get(api["name"])
        prev_routes = {r["route_key"]: r for r in prev_api["routes"]} if prev_api else {}
        for route in api["routes"]:
            first = [_integration(route["integration"]), _auth(route)]
            rows.append(row(api, route["route_key"], route, prev_routes.get(route["route_key"]), first))
        rows.append(row(api, "(all routes)", api, prev_api, ["", ""]))
    return rows


def plan_rows(after: dict[str, Any]) -> list[list[str]]:
    """A row per key of each usage plan (by id and name; the summary never has a key's value)."""
    rows = [["USAGE PLAN", "THROTTLE", "QUOTA", "KEY", "NAME", "STATE", "USED", "PERIOD ENDS"]]
    for plan in after.get("usage_plans", []):
        throttle = plan.get("throttle")
        quota = plan.get("quota")
        first = [
            plan["name"],
            f"{throttle['rate_limit']}/s burst {throttle['burst_limit']}" if throttle else "-",
            f"{quota['limit']}/{quota['period']}" if quota else "-",
        ]
        if not plan["keys"]:
            rows.append([*first, "(none)", "", "", "", ""])
        for member in plan["keys"]:
            used = "-" if member["used"] is None else str(member["used"])
            if member["used"] is not None and member["limit"]:
                used += f"/{member['limit']}"
            end = member.get("period_end")
            rows.append(
                [
                    *first,
                    member["id"],
                    member["name"],
                    "enabled" if member["enabled"] else "disabled",
                    used,
                    time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(end)) if end else "-",
                ]
            )
    return rows


def render_gateway(after: dict[str, Any], before: dict[str, Any] | None) -> list[str]:
    """The APIs and usage plans, when the summary has them (the config defines some)."""
    lines: list[str] = []
    if after.get("apis"):
        lines += ["", *table(api_rows(after, before), right=frozenset(range(5, 12)))]
    if after.get("usage_plans"):
        lines += ["", *table(plan_rows(after), right=frozenset({6}))]
    return lines


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def distribution_rows(after: dict[str, Any], before: dict[str, Any] | None) -> list[list[str]]:
    """A row per distribution: request, 4xx and 5xx rates, the cache hit ratio over the window and since
    start, p50/p99 of OriginLatency over the window, bytes sent per second, and totals since start."""
    seconds = after["time"] - before["time"] if before else 0.0
    old = {d["name"]: d for d in before.get("distributions", [])} if before else {}
    bounds = after["latency_buckets"]
    rows = [
        [
            "DISTRIBUTION",
            "LISTENERS",
            "REQ/S",
            "HIT",
            "HIT ALL",
            "4XX/S",
            "5XX/S",
            "ORIGIN P50",
            "P99",
            "OUT/S",
            "TOTAL",
            "HITS",
            "MISSES",
            "ERRORS",
        ]
    ]
    for dist in after.get("distributions", []):
        prev = old.get(dist["name"])

        def per_second(name: str, dist: dict[str, Any] = dist, prev: Any = prev) -> float | None:
            return rate(dist[name], prev[name] if prev else None, seconds)

        if prev:
            hits = max(0, dist["cache_hits"] - prev["cache_hits"])
            misses = max(0, dist["cache_misses"] - prev["cache_misses"])
            window_ratio = hits / (hits + misses) if hits + misses else None
            then = prev["origin_latency"]["counts"]
        else:
            window_ratio = None if before else dist["cache_hit_ratio"]
            then = [0] * len(dist["origin_latency"]["counts"])
        window = [max(0, a - b) for a, b in zip(dist["origin_latency"]["counts"], then, strict=True)]
        window = window if prev or not before else []
        rows.append(
            [
                dist["name"],
                ",".join(listener["name"] for listener in dist["listeners"]),
                fmt_rate(per_second("requests")),
                _ratio(window_ratio),
                _ratio(dist["cache_hit_ratio"]),
                fmt_rate(per_second("http_4xx")),
                fmt_rate(per_second("http_5xx")),
                fmt_seconds(quantile(window, 0.5, bounds) if window else None),
                fmt_seconds(quantile(window, 0.99, bounds) if window else None),
                _bytes(per_second("bytes_sent")) + ("/s" if prev else ""),
                str(dist["requests"]),
                str(dist["cache_hits"]),
                str(dist["cache_misses"]),
                str(dist["results"]["error"]),
            ]
        )
    return rows


def behavior_rows(after: dict[str, Any]) -> list[list[str]]:
    """A row per cache behavior of each distribution, in the order they are tried (``*`` last)."""
    rows = [["DISTRIBUTION", "PATH PATTERN", "ORIGIN", "CACHE POLICY", "TTL MIN/DEFAULT/MAX", "METHODS"]]
    for dist in after.get("distributions", []):
        for behavior in dist["behaviors"]:
            policy = behavior["cache_policy"]
            origins = behavior["origins"]
            rows.append(
                [
                    dist["name"],
                    behavior["path_pattern"],
                    behavior["origin"] + (f" ({' then '.join(origins)})" if len(origins) > 1 else ""),
                    policy["name"],
                    f"{policy['min_ttl']}/{policy['default_ttl']}/{policy['max_ttl']}",
                    behavior["allowed_methods"],
                ]
            )
    return rows


def web_acl_rows(after: dict[str, Any], before: dict[str, Any] | None) -> list[list[str]]:
    """A row per rule of each web ACL in priority order, then its default action's and the ACL's own:
    allowed, blocked and counted requests per second over the window, and since start."""
    seconds = after["time"] - before["time"] if before else 0.0
    old = {a["name"]: a for a in before.get("web_acls", [])} if before else {}
    rows = [
        [
            "WEB ACL",
            "PRIORITY",
            "RULE",
            "ACTION",
            "ALLOWED/S",
            "BLOCKED/S",
            "COUNTED/S",
            "ALLOWED",
            "BLOCKED",
            "COUNTED",
        ]
    ]

    def row(acl: str, first: list[str], now: dict[str, Any], prev: Any) -> list[str]:
        def cell(name: str, per_second: bool) -> str:
            if name not in now:
                return "-"
            if not per_second:
                return str(now[name])
            return fmt_rate(rate(now[name], prev.get(name, 0) if prev else None, seconds))

        rates = [cell(n, True) for n in ("allowed", "blocked", "counted")]
        return [acl, *first, *rates, *(cell(n, False) for n in ("allowed", "blocked", "counted"))]

    for acl in after.get("web_acls", []):
        prev_acl = old.get(acl["name"])
        prev_rules = {r["name"]: r for r in prev_acl["rules"]} if prev_acl else {}
        for rule in acl["rules"]:
            first = [str(rule["priority"]), rule["name"], rule["action"]]
            rows.append(row(acl["name"], first, rule, prev_rules.get(rule["name"])))
        first = ["default", "Default_Action", acl["default_action"]]
        rows.append(row(acl["name"], first, acl["default"], prev_acl["default"] if prev_acl else None))
        rows.append(row(acl["name"], ["", "(all rules)", ""], acl, prev_acl))
    return rows


def render_edge(after: dict[str, Any], before: dict[str, Any] | None) -> list[str]:
    """The distributions and web ACLs, when the summary has them (the config defines some)."""
    lines: list[str] = []
    if after.get("distributions"):
        lines += ["", *table(distribution_rows(after, before), right=frozenset(range(2, 14)))]
        lines += ["", *table(behavior_rows(after))]
    if after.get("web_acls"):
        lines += ["", *table(web_acl_rows(after, before), right=frozenset({1, *range(4, 10)}))]
    return lines


# -- the command -------------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    try:
        url, token = admin_from_args(args)
        before = fetch(url, "/v1/summary", token) if args.interval > 0 else None
        if before is not None:
            time.sleep(args.interval)
        after = fetch(url, "/v1/summary", token)
    except StatusError as exc:
        print(f"lbd status: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps(after, indent=2))
    else:
        sys.stdout.write(render(after, before, url))
    return EXIT_OK


def interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be 0-3600 seconds, got {text}")
    return value


def register(sub: argparse._SubParsersAction[Any]) -> None:
    status = sub.add_parser(
        "status",
        help="listeners' rates and errors and every target's state, from a running lbd's admin API",
        description="Print what the console shows, as text: each listener's request rate, 4xx and 5xx "
        "rates, open connections and p50/p99 latency over --interval seconds, and every target's state, "
        "reason code and description; with them, API routes, usage plans, distributions and web ACL "
        "rules. Exit status: 0 printed, 1 the admin API did not answer (or "
        "refused), 2 the config or token file could not be read.",
    )
    status.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="read admin.listen and admin.token_file from this config (a file, or an etcd:// key)",
    )
    status.add_argument(
        "--admin",
        metavar="ADDR",
        help=f"the admin API, host:port or a URL (default: admin.listen from -c, else {DEFAULT_ADMIN})",
    )
    status.add_argument(
        "--token-file",
        metavar="FILE",
        help="file holding the admin token (default: admin.token_file from -c, else $LBD_ADMIN_TOKEN_FILE)",
    )
    status.add_argument(
        "--interval",
        type=interval,
        default=1.0,
        metavar="SECONDS",
        help="time between the two samples rates are taken over; 0 prints totals since start",
    )
    status.add_argument("--json", action="store_true", help="print the /v1/summary answer as JSON instead")
    status.set_defaults(func=cmd_status)
