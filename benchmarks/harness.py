"""Benchmark harness: lbd against HAProxy and nginx on the same machine, in one run.

Real backends (nginx serving a small and a 1 MiB response on two ports), each load balancer started with
an equivalent config, wrk driving load through it. Repetitions are interleaved (lbd, haproxy, nginx, lbd,
...) and medians reported, because a shared machine is noisy. Each load balancer's own CPU time comes from
/proc (utime + stime of its whole process tree, before and after), so "CPU per request" is the price of
the proxy alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lbd.tls.store import CertificateStore, issue

RESULTS = Path(__file__).resolve().parent / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
DEBIAN_PACKAGES = {"haproxy": "haproxy", "nginx": "nginx", "wrk": "wrk", "h2load": "nghttp2-client"}


@dataclass(frozen=True)
class Scenario:
    name: str
    layer: str  # "l4" | "l7"
    path: str
    connections: int
    description: str
    kind: str = (
        "wrk"  # "wrk"; "h2load": HTTP/2 load; "idle": memory per idle connection; "udp"; "footprint";
        # "unsupported"
    )
    rules: int = 0  # listener rules the request goes through without matching (L7)
    close: bool = False  # a new connection per request
    tls: bool = False  # clients speak HTTPS to the load balancer (an EC P-256 certificate)
    sticky: bool = False  # lb_cookie target stickiness; every request carries a valid AWSALB cookie
    unsupported: str = ""  # why lbd cannot run it yet
    proxy_v2: bool = False  # L4: the load balancer sends a PROXY header to targets that require one
    cache: bool = False  # an edge cache: lbd's distribution, nginx proxy_cache, HAProxy's cache (warm hits)
    gateway: str = ""  # lbd as an API gateway: "key" (key required, usage plan), "cached" (+ stage cache)
    web_acl_rules: int = 0  # L7: a web ACL of this many rules, none matching, evaluated per request (lbd)


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("tcp-small", "l4", "/small", 50, "L4 TCP, small keep-alive HTTP requests spliced through"),
        Scenario("tcp-bulk", "l4", "/1m", 10, "L4 TCP, 1 MiB responses (throughput)"),
        Scenario(
            "tcp-small-ppv2",
            "l4",
            "/small",
            50,
            "tcp-small with a PROXY header to targets that require one (v2; nginx stream sends v1)",
            proxy_v2=True,
        ),
        Scenario(
            "udp",
            "l4",
            "",
            64,
            "UDP request/response datagrams (64 bytes, DNS-like) over 64 flows, 4 outstanding each",
            kind="udp",
        ),
        Scenario(
            "http-small", "l7", "/small", 50, "L7 HTTP/1.1 keep-alive, small responses, one forward rule"
        ),
        Scenario(
            "http-rules",
            "l7",
            "/small",
            50,
            "L7 keep-alive through a 20-rule listener (no rule matches)",
            rules=20,
        ),
        Scenario(
            "http-sticky",
            "l7",
            "/small",
            50,
            "http-small with lb_cookie stickiness: each request opens an AWSALB cookie, each response "
            "refreshes it (haproxy: cookie insert; nginx has no cookie stickiness, so it runs http-small)",
            sticky=True,
        ),
        Scenario(
            "http-waf",
            "l7",
            "/small",
            50,
            "http-small behind a 20-rule web ACL that lets every request through (lbd only: haproxy and "
            "nginx have no WAF, so they run http-small)",
            web_acl_rules=20,
        ),
        Scenario("http-close", "l7", "/small", 50, "L7 with a new connection per request", close=True),
        Scenario(
            "idle",
            "l7",
            "/small",
            10000,
            "10,000 idle keep-alive connections: RSS per connection",
            kind="idle",
        ),
        Scenario(
            "footprint",
            "l7",
            "/small",
            1,
            "memory held after one request, with 1 worker/thread and with 2: the node, and what each "
            "extra worker adds (PSS, compared: each page once; and RSS summed over the processes)",
            kind="footprint",
        ),
        Scenario("https", "l7", "/small", 50, "HTTPS keep-alive: TLS termination, small responses", tls=True),
        Scenario(
            "https-handshake",
            "l7",
            "/small",
            50,
            "HTTPS with a new connection (a full TLS handshake) per request",
            tls=True,
            close=True,
        ),
        Scenario(
            "cache",
            "l7",
            "/small",
            50,
            "edge cache, warm hits: an lbd distribution (CachingOptimized) vs nginx proxy_cache and "
            "HAProxy's cache, each caching the targets' /small for a day",
            cache=True,
        ),
        Scenario(
            "api",
            "l7",
            "/small",
            50,
            "lbd's API gateway: an HTTP_PROXY route behind a JWT authorizer (RS256) that requires an API "
            "key, in a usage plan with a throttle and a quota (compare with http-small, the plain forward; "
            "haproxy and nginx: n/a)",
            gateway="key",
        ),
        Scenario(
            "api-cached",
            "l7",
            "/small",
            50,
            "api with the stage cache on: every measured request is a cache hit",
            gateway="cached",
        ),
        Scenario(
            "ws",
            "l7",
            "/small",
            10,
            "lbd's WebSocket API: small text messages on 10 connections, one in flight each, through a "
            "two-way $default route whose HTTP integration answers (direct: a WebSocket echo server; "
            "haproxy and nginx: n/a)",
            kind="ws",
            gateway="ws",
        ),
        Scenario(
            "h2",
            "l7",
            "/small",
            10,
            "HTTPS h2 (ALPN) to HTTP/1.1 targets, h2load -c10 -m100, small responses",
            kind="h2load",
            tls=True,
        ),
        Scenario(
            "grpc",
            "l7",
            "/bench.Echo/Unary",
            10,
            "gRPC unary calls over HTTPS h2 to grpcio targets (h2c), h2load -c10 -m100 with a gRPC message",
            kind="grpc",
            tls=True,
        ),
    )
}
# The grpc scenario's request: one gRPC message (uncompressed, 4-byte length, then 32 bytes).
GRPC_MESSAGE = b"\x00" + (32).to_bytes(4, "big") + b"x" * 32
LOAD_BALANCERS = ("direct", "lbd", "haproxy", "nginx")
# Opt-in with --lb: benchmarks/floor.py, the cheapest proxies Python and uvloop can be: "floor" passes
# bytes, "floor-http" parses with httptools both ways; plain-text keep-alive scenarios, one worker only.
OPTIONAL_LOAD_BALANCERS = ("floor", "floor-http")


@dataclass
class Sample:
    rps: float
    bytes_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_us_per_request: float
    peak_rss_mib: float
    kib_per_connection: float = 0.0  # the idle scenario
    # The footprint scenario: RSS and PSS (MiB) with one worker, and what a second worker adds.
    rss_mib: float = 0.0
    pss_mib: float = 0.0
    extra_worker_rss_mib: float = 0.0
    extra_worker_pss_mib: float = 0.0


@dataclass
class Result:
    scenario: str
    load_balancer: str
    workers: int = 1
    samples: list[Sample] = field(default_factory=list)
    unsupported: str = ""

    def median(self, attribute: str) -> float:
        if not self.samples:
            return 0.0
        return float(statistics.median(getattr(s, attribute) for s in self.samples))


# -- tools and processes ---------------------------------------------------------------------------------


def ensure_tools() -> None:
    missing = [pkg for tool, pkg in DEBIAN_PACKAGES.items() if shutil.which(tool) is None]
    if not Path("/usr/lib/nginx/modules/ngx_stream_module.so").exists():
        missing.append("libnginx-mod-stream")
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        sys.exit(f"benchmarks need the Debian packages {' '.join(missing)}: apt-get install them")
    print(f"installing {' '.join(missing)} with apt-get ...", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def raise_fd_limit() -> None:
    """The idle scenario holds 10,000 connections: lift the soft limit to the hard one (children inherit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Process:
    def __init__(
        self, command: list[str], log: Path, ready_port: int | None, ready_url: str | None = None
    ) -> None:
        """``ready_port``: a TCP port to wait for (None: a UDP listener; measure_udp waits for it)."""
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            if ready_url:
                _wait_url(ready_url)
            if ready_port is not None:
                wait_port(ready_port)
        except Exception:
            self.stop()
            raise RuntimeError(f"{command[0]} did not start; log:\n{log.read_text()[-2000:]}") from None

    def tree(self) -> list[int]:
        pids, queue = [], [self.popen.pid]
        while queue:
            pid = queue.pop()
            pids.append(pid)
            with contextlib.suppress(OSError):
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as f:
                        queue += [int(c) for c in f.read().split()]
        return pids

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.tree():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime (stat fields 14 and 15)
        return total / CLK_TCK

    def peak_rss_mib(self) -> float:
        return self._status_kib("VmHWM:") / 1024

    def rss_kib(self) -> int:
        return self._status_kib("VmRSS:")

    def pss_kib(self) -> int:
        """Proportional set size: each shared page divided among the processes that map it, so a tree's
        sum counts shared libraries (and pages a fork shares) once."""
        total = 0
        for pid in self.tree():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        return total

    def _status_kib(self, field_name: str) -> int:
        total = 0
        for pid in self.tree():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith(field_name):
                        total += int(line.split()[1])
        return total

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()


def _wait_url(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if urllib.request.urlopen(url, timeout=1).status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200")


# -- configs ------------------------------------------------------------------------------------------------


def nginx_backend_conf(tmp: Path, ports: list[int], proxy_ports: list[int]) -> str:
    """``ports`` serve plain HTTP; ``proxy_ports`` the same, behind a required PROXY header (v1 or v2)."""
    (tmp / "www").mkdir(exist_ok=True)
    (tmp / "www/1m").write_bytes(os.urandom(1024 * 1024))
    for path in (tmp / "www", tmp / "www/1m"):
        path.chmod(0o755)
    listens = [(port, "") for port in ports] + [(port, " proxy_protocol") for port in proxy_ports]
    servers = "\n".join(
        f"""server {{ listen 127.0.0.1:{port}{proxy} reuseport backlog=4096; access_log off;
           location = /small {{ return 200 "hello from {port}\\n"; }}
           location = /1m {{ root {tmp}/www; }} }}"""
        for port, proxy in listens
    )
    return _nginx_main(tmp, "backend", 1) + f"http {{ keepalive_requests 1000000; {servers} }}\n"


def _nginx_main(tmp: Path, name: str, workers: int | str) -> str:
    return (
        f"worker_processes {workers}; pid {tmp}/{name}.pid; error_log {tmp}/{name}.error.log warn;\n"
        f"events {{ worker_connections 16384; }}\n"
    )


BENCH_API_KEY = "benchmarkkey" * 3  # 36 letters: an API Gateway key value


def lbd_api_conf(
    scenario: Scenario, port: int, admin: int, targets: list[int], workers: int, state: Path
) -> str:
    """The api scenarios: one API, one key-required route to the benchmark's targets, a usage plan whose
    limits are never reached (so every request goes through the throttle and quota bookkeeping), and the
    key pre-seeded in the state directory (lbd-api-keys.json, as the admin API would have saved it)."""
    keys = {
        "version": 1,
        "keys": [{"id": "bench", "name": "bench", "value": BENCH_API_KEY, "plans": ["bench"]}],
    }
    (state / "lbd-api-keys.json").write_text(json.dumps(keys))
    jwks = _bench_jwt(state)
    cache = "{enabled: true, ttl_seconds: 3600, capacity_mb: 16}" if scenario.gateway == "cached" else "{}"
    target_lines = "\n".join(f"      - {{id: 127.0.0.1, port: {t}}}" for t in targets)
    return f"""node: {{workers: {workers}}}
admin: {{listen: 127.0.0.1:{admin}}}
state_dir: {state}
apis:
  - name: bench
    protocol: REST
    listeners: [{{protocol: HTTP, port: {port}, address: 127.0.0.1}}]
    cache: {cache}
    authorizers:
      - {{name: users, type: JWT, issuer: "https://id.bench.test", audience: [bench], jwks_file: {jwks}}}
    routes:
      - route_key: "GET {scenario.path}"
        integration: {{type: HTTP_PROXY, target_group: backends}}
        api_key_required: true
        authorizer: users
        authorization_scopes: [bench.read]
usage_plans:
  - name: bench
    apis: [{{api: bench}}]
    throttle: {{rate_limit: 1000000, burst_limit: 5000000}}
    quota: {{limit: 1000000000000, period: DAY}}
target_groups:
  - name: backends
    protocol: HTTP
    algorithm: round_robin
    health_check: {{enabled: false}}
    targets:
{target_lines}
"""


def lbd_ws_conf(scenario: Scenario, port: int, admin: int, targets: list[int], workers: int) -> str:
    """The ws scenario: a WebSocket API whose two-way $default route POSTs each message to the
    benchmark's targets (nginx answers {scenario.path} to any method) and sends the answer back."""
    target_lines = "\n".join(f"      - {{id: 127.0.0.1, port: {t}}}" for t in targets)
    return f"""node: {{workers: {workers}}}
admin: {{listen: 127.0.0.1:{admin}}}
apis:
  - name: bench
    protocol: WEBSOCKET
    listeners: [{{protocol: HTTP, port: {port}, address: 127.0.0.1}}]
    route_selection_expression: "$request.body.action"
    routes:
      - route_key: $default
        integration: {{type: HTTP_PROXY, target_group: backends, path: {scenario.path}}}
        route_response_selection_expression: $default
target_groups:
  - name: backends
    protocol: HTTP
    algorithm: round_robin
    health_check: {{enabled: false}}
    targets:
{target_lines}
"""


def measure_ws(proc: Process | None, port: int, scenario: Scenario, seconds: float) -> Sample:
    """Messages answered per second through the WebSocket (each one round trip), and the load
    balancer's CPU per message (benchmarks/wsload.py drives the connections)."""
    command = [sys.executable, "-m", "benchmarks.wsload", "load", str(port), str(scenario.connections)]
    subprocess.run([*command, "1"], capture_output=True, check=True)  # warm-up: pools fill
    cpu_before = proc.cpu_seconds() if proc else 0.0
    run = subprocess.run([*command, str(seconds)], capture_output=True, text=True, check=True)
    cpu = (proc.cpu_seconds() - cpu_before) if proc else 0.0
    values = dict(line.split() for line in run.stdout.splitlines())
    messages, elapsed = int(values["messages"]), float(values["seconds"])
    return Sample(
        rps=messages / elapsed,
        bytes_per_s=0.0,
        p50_ms=float(values["p50_ms"]),
        p99_ms=float(values["p99_ms"]),
        requests=messages,
        errors=int(values["errors"]),
        cpu_us_per_request=cpu / max(messages, 1) * 1e6,  # connection setup included: a little high
        peak_rss_mib=proc.peak_rss_mib() if proc else 0.0,
    )


def _bench_jwt(state: Path) -> Path:
    """An RSA key's JWKS file for the api scenarios' JWT authorizer, and a token it signed (bench.jwt,
    sent by every request)."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public: dict[str, object] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    public.update({"kid": "bench", "use": "sig", "alg": "RS256"})
    path = state / "jwks.json"
    path.write_text(json.dumps({"keys": [public]}))
    now = int(time.time())
    claims: dict[str, object] = {"iss": "https://id.bench.test", "aud": "bench", "sub": "bench"}
    claims["scope"] = "bench.read"
    claims |= {"iat": now, "exp": now + 86400}
    (state / "bench.jwt").write_text(jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench"}))
    return path


def lbd_conf(
    scenario: Scenario, port: int, admin: int, targets: list[int], workers: int, cert_store: str = "/tmp"
) -> str:
    lb_type, listener, group = (
        ("network", "TCP", "TCP") if scenario.layer == "l4" else ("application", "HTTP", "HTTP")
    )
    if scenario.kind == "udp":
        listener = group = "UDP"
    proxy = "\n    proxy_protocol_v2: true" if scenario.proxy_v2 else ""
    if scenario.kind == "grpc":
        proxy += "\n    protocol_version: GRPC"  # HTTP/2 to the targets, prior knowledge
    tls = ""
    if scenario.tls:
        listener = "HTTPS"
        tls = "\n        certificates: [bench]"
    target_lines = "\n".join(f"      - {{id: 127.0.0.1, port: {t}}}" for t in targets)
    # Rules that never match /small, so every request is checked against all of them (a wildcard path
    # each, the common shape of real listener rules).
    rules = "".join(
        f"""
          - {{priority: {i + 1}, conditions: [{{field: path-pattern, values: ["/api{i}/*"]}}],
             actions: [{{type: forward, target_group: backends}}]}}"""
        for i in range(scenario.rules)
    )
    sticky = ""
    key_file = ""
    if scenario.sticky:
        sticky = "\n    stickiness: {enabled: true, type: lb_cookie, duration_seconds: 604800}"
        key_file = f", stickiness_key_file: {Path(cert_store).parent / 'stickiness.keys'}"
        (Path(cert_store).parent / "stickiness.keys").write_text(BENCH_KEY.hex() + "\n")
    if scenario.cache:
        return edge_conf(port, admin, targets, workers)
    return (
        _web_acl(scenario)
        + f"""node: {{workers: {workers}{key_file}}}
admin: {{listen: 127.0.0.1:{admin}}}
certificates: {{store: {cert_store}}}
load_balancers:
  - name: bench
    type: {lb_type}
    listeners:
      - protocol: {listener}
        port: {port}
        address: 127.0.0.1{tls}
        default_actions: [{{type: forward, target_group: backends}}]
        rules:{rules or " []"}
target_groups:
  - name: backends
    protocol: {group}
    algorithm: round_robin{sticky}{proxy}
    health_check: {{enabled: false}}
    targets:
{target_lines}
"""
    )


def _web_acl(scenario: Scenario) -> str:
    """A web ACL on the bench load balancer: an IP set, a regex on the query, a per-client rate limit never
    reached, and byte matches on the path with URL_DECODE and LOWERCASE, none of which /small matches."""
    if not scenario.web_acl_rules:
        return ""
    rules = [
        "{name: deny, priority: 1, action: block, statement: {ip_set: {addresses: [192.0.2.0/24]}}}",
        "{name: sqli, priority: 2, action: block, statement: {regex_match: {field: query_string, "
        "pattern: 'union\\s+select', transformations: [URL_DECODE, LOWERCASE]}}}",
        "{name: flood, priority: 3, action: block, statement: {rate_based: {limit: 2000000000}}}",
    ]
    rules += [
        f"{{name: path{i}, priority: {i + 10}, action: block, statement: {{byte_match: {{field: uri_path, "
        f"positional: CONTAINS, value: /secret{i}/, transformations: [URL_DECODE, LOWERCASE]}}}}}}"
        for i in range(scenario.web_acl_rules - len(rules))
    ]
    lines = "".join(f"\n      - {rule}" for rule in rules)
    return f"web_acls:\n  - name: bench\n    associations: [{{load_balancer: bench}}]\n    rules:{lines}\n"


def edge_conf(port: int, admin: int, targets: list[int], workers: int) -> str:
    """The cache scenario's lbd: one distribution caching the targets (the origin gives no Cache-Control,
    so CachingOptimized's default TTL, a day, applies: the same as the peers' configured validity)."""
    target_lines = "\n".join(f"      - {{id: 127.0.0.1, port: {t}}}" for t in targets)
    return f"""node: {{workers: {workers}}}
admin: {{listen: 127.0.0.1:{admin}}}
target_groups:
  - name: backends
    protocol: HTTP
    algorithm: round_robin
    health_check: {{enabled: false}}
    targets:
{target_lines}
distributions:
  - name: bench
    listeners: [{{protocol: HTTP, port: {port}, address: 127.0.0.1}}]
    origins: [{{id: backends, target_group: backends}}]
    default_cache_behavior: {{origin: backends, cache_policy: CachingOptimized}}
"""


BENCH_KEY = bytes(range(32))  # the sticky scenario's key file, so the harness can seal the clients' cookie


def sticky_cookie(targets: list[int]) -> str:
    """A Cookie header sticking to the first target: lbd's AWSALB (sealed as lbd seals it, for the
    benchmark's group) and haproxy's SRV."""
    from lbd.routing.stickiness import CookieSealer

    plain = f"backends|127.0.0.1:{targets[0]}|{int(time.time())}".encode()
    return f"Cookie: AWSALB={CookieSealer(BENCH_KEY, b'AWSALB').seal_bytes(plain)}; SRV=t0"


def haproxy_conf(scenario: Scenario, port: int, targets: list[int], threads: int, cert: str = "") -> str:
    mode = "tcp" if scenario.layer == "l4" else "http"
    cookie = " cookie t{i}" if scenario.sticky else ""
    send_proxy = " send-proxy-v2" if scenario.proxy_v2 else ""
    if scenario.kind == "grpc":
        send_proxy += " proto h2"  # HTTP/2 to the gRPC targets, prior knowledge
    servers = "\n".join(
        f"    server t{i} 127.0.0.1:{t}{cookie.format(i=i)}{send_proxy}" for i, t in enumerate(targets)
    )
    keep = "    option http-keep-alive\n    http-reuse always\n" if mode == "http" else ""
    if scenario.sticky:
        keep += "    cookie SRV insert indirect nocache\n"
    rules = "".join(
        f"    acl rule{i} path_beg /api{i}/\n    use_backend be if rule{i}\n" for i in range(scenario.rules)
    )
    alpn = " alpn h2,http/1.1" if scenario.kind in ("h2load", "grpc") else ""
    cache = ""
    if scenario.cache:
        # HAProxy's small-object cache: 64 MB, a day's validity when the origin gives none.
        keep += "    http-request cache-use edge\n    http-response cache-store edge\n"
        cache = "cache edge\n    total-max-size 64\n    max-object-size 1048576\n    max-age 86400\n"
    return f"""global
    nbthread {threads}
    maxconn 9000
defaults
    mode {mode}
    timeout connect 10s
    timeout client 60s
    timeout server 60s
frontend fe
    bind 127.0.0.1:{port}{f" ssl crt {cert}" if scenario.tls else ""}{alpn}
{rules}    default_backend be
backend be
    balance roundrobin
{keep}{servers}
{cache}"""


def nginx_lb_conf(
    tmp: Path, scenario: Scenario, port: int, targets: list[int], workers: int | str, cert: str = ""
) -> str:
    upstream = "".join(f"server 127.0.0.1:{t}; " for t in targets)
    main = _nginx_main(tmp, "lb", workers)
    if scenario.layer == "l4":
        # UDP: one session per client address until proxy_timeout, like lbd's flows (and NLB's 120 s).
        udp = scenario.kind == "udp"
        listen = f"{port} udp reuseport; proxy_timeout 120s" if udp else f"{port} reuseport"
        proxy_protocol = " proxy_protocol on;" if scenario.proxy_v2 else ""
        return (
            "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n"
            + main
            + f"stream {{ upstream be {{ {upstream} }} server {{ listen 127.0.0.1:{listen}; "
            f"proxy_pass be;{proxy_protocol} }} }}\n"
        )
    proxy = 'proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";'
    if scenario.kind == "grpc":
        proxy = "grpc_pass grpc://be;"  # HTTP/2 to the gRPC targets (ngx_http_grpc_module)
    rules = "".join(f"location /api{i}/ {{ {proxy} }} " for i in range(scenario.rules))
    cache = ""
    if scenario.cache:
        # proxy_cache (its pages stay in the page cache), valid a day: the origin says nothing.
        proxy += " proxy_cache edge; proxy_cache_valid 200 1d; proxy_cache_lock on;"
        cache = f"proxy_cache_path {tmp}/nginx-cache keys_zone=edge:10m max_size=64m; "
    return main + (
        f"http {{ access_log off; {cache}upstream be {{ {upstream} keepalive 64; }} "
        f"server {{ listen 127.0.0.1:{port}{' ssl' if scenario.tls else ''}"
        f"{' http2' if scenario.kind in ('h2load', 'grpc') else ''} reuseport backlog=4096; "
        + (f"ssl_certificate {cert}; ssl_certificate_key {cert}; " if scenario.tls else "")
        + "keepalive_requests 1000000; "
        f"{rules}location / {{ {proxy} }} }} }}\n"
    )


# -- running ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def load_balancer(
    name: str, scenario: Scenario, tmp: Path, targets: list[int], workers: int
) -> Iterator[tuple[Process | None, int]]:
    if name == "direct":
        yield None, targets[0]
        return
    port = free_port()
    log = tmp / f"{name}.log"
    ready = None if scenario.kind == "udp" else port
    if name == "lbd":
        admin = free_port()
        conf = tmp / "lbd.yaml"
        if scenario.kind == "ws":
            conf.write_text(lbd_ws_conf(scenario, port, admin, targets, workers))
        elif scenario.gateway:
            conf.write_text(lbd_api_conf(scenario, port, admin, targets, workers, tmp))
        else:
            conf.write_text(lbd_conf(scenario, port, admin, targets, workers, str(tmp / "certs")))
        proc = Process(
            [sys.executable, "-m", "lbd", "run", "-c", str(conf), "--log-level", "warning"],
            log,
            ready,
            f"http://127.0.0.1:{admin}/readyz",
        )
    elif name.startswith("floor"):
        command = ["-m", "benchmarks.floor", "--listen", str(port), "--target", str(targets[0])]
        proc = Process([sys.executable, *command, *(["--http"] if name == "floor-http" else [])], log, ready)
    elif name == "haproxy":
        conf = tmp / "haproxy.cfg"
        conf.write_text(haproxy_conf(scenario, port, targets, workers, str(tmp / "certs/bench.pem")))
        proc = Process(["haproxy", "-db", "-f", str(conf)], log, ready)
    else:
        conf = tmp / "nginx-lb.conf"
        conf.write_text(nginx_lb_conf(tmp, scenario, port, targets, workers, str(tmp / "certs/bench.pem")))
        proc = Process(["nginx", "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"], log, ready)
    try:
        yield proc, port
    finally:
        proc.stop()


WRK_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str) -> dict[str, float]:
    """Requests/sec, Transfer/sec (bytes), p50/p99 latency (ms), requests and errors from wrk --latency."""

    def number(pattern: str) -> float:
        match = re.search(pattern, output)
        return float(match.group(1)) if match else 0.0

    transfer = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", output)
    scale = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}
    latencies = {p: float(v) * UNITS[u] for p, v, u in WRK_LATENCY.findall(output)}
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    errors += int(number(r"Non-2xx or 3xx responses: (\d+)"))
    return {
        "rps": number(r"Requests/sec:\s+([\d.]+)"),
        "bytes_per_s": float(transfer.group(1)) * scale[transfer.group(2)] if transfer else 0.0,
        "p50_ms": latencies.get("50", 0.0),
        "p99_ms": latencies.get("99", 0.0),
        "requests": number(r"(\d+) requests in"),
        "errors": errors,
    }


def measure(
    name: str, scenario: Scenario, tmp: Path, targets: list[int], workers: int, seconds: float
) -> Sample:
    if scenario.kind == "footprint":
        return measure_footprint(name, scenario, tmp, targets)
    with load_balancer(name, scenario, tmp, targets, workers) as (proc, port):
        if scenario.kind == "idle":
            return measure_idle(proc, port, scenario)
        if scenario.kind in ("h2load", "grpc"):
            return measure_h2(proc, port, scenario, seconds, tmp)
        if scenario.kind == "udp":
            return measure_udp(proc, port, scenario, tmp, seconds)
        if scenario.kind == "ws":
            return measure_ws(proc, port, scenario, seconds)
        scheme = "https" if scenario.tls and name != "direct" else "http"
        url = f"{scheme}://127.0.0.1:{port}{scenario.path}"
        headers = ["-H", "Connection: close"] if scenario.close else []
        if scenario.sticky:
            headers += ["-H", sticky_cookie(targets)]
        if scenario.gateway and name != "direct":
            headers += ["-H", f"x-api-key: {BENCH_API_KEY}"]
            headers += ["-H", f"Authorization: Bearer {(tmp / 'bench.jwt').read_text()}"]
        # A short warm-up fills connection pools and caches, then the measured run.
        subprocess.run(["wrk", "-t1", "-c10", "-d1s", *headers, url], capture_output=True, check=True)
        cpu_before = proc.cpu_seconds() if proc else 0.0
        run = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{scenario.connections}",
                f"-d{max(1, round(seconds))}s",
                "--latency",
                *headers,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        cpu = (proc.cpu_seconds() - cpu_before) if proc else 0.0
        stats = parse_wrk(run.stdout)
        requests = max(stats["requests"], 1)
        return Sample(
            rps=stats["rps"],
            bytes_per_s=stats["bytes_per_s"],
            p50_ms=stats["p50_ms"],
            p99_ms=stats["p99_ms"],
            requests=int(stats["requests"]),
            errors=int(stats["errors"]),
            cpu_us_per_request=cpu / requests * 1e6,
            peak_rss_mib=proc.peak_rss_mib() if proc else 0.0,
        )


def parse_h2load(output: str) -> dict[str, float]:
    """Requests/sec, bytes/sec, requests done and failed, and the mean request time from h2load."""
    finished = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s, ([\d.]+)([KMG]?B)/s", output)
    counts = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", output)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", output)
    scale = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}
    return {
        "rps": float(finished.group(1)) if finished else 0.0,
        "bytes_per_s": float(finished.group(2)) * scale[finished.group(3)] if finished else 0.0,
        "requests": float(counts.group(1)) if counts else 0.0,
        "errors": float(int(counts.group(1)) - int(counts.group(2))) if counts else 0.0,
        "mean_ms": float(mean.group(1)) * UNITS[mean.group(2)] if mean else 0.0,
    }


def measure_h2(proc: Process | None, port: int, scenario: Scenario, seconds: float, tmp: Path) -> Sample:
    """h2load: ``scenario.connections`` connections, 100 concurrent streams each, for ``seconds``; for
    the grpc scenario each request POSTs one gRPC message with gRPC's headers."""
    url = f"https://127.0.0.1:{port}{scenario.path}"
    base = ["h2load", f"-c{scenario.connections}", "-m100", "-t1"]
    if scenario.kind == "grpc":
        message = tmp / "grpc-message.bin"
        message.write_bytes(GRPC_MESSAGE)
        base += ["-d", str(message), "-H", "content-type: application/grpc", "-H", "te: trailers"]
    subprocess.run([*base, "-n2000", url], capture_output=True, check=True)  # warm-up
    # h2 runs a fixed number of requests, not a duration: lbd sends GOAWAY after 10,000 requests on a
    # connection, as ALB does, and h2load does not reconnect, so a timed run would measure lbd idling
    # once its connections are spent (a capped 100,000 requests over the whole run). 9,000 a connection
    # stays under that for every load balancer. gRPC calls are slow enough for a timed run to stay under.
    length = f"-D{max(1, round(seconds))}" if scenario.kind == "grpc" else f"-n{scenario.connections * 9000}"
    cpu_before = proc.cpu_seconds() if proc else 0.0
    run = subprocess.run([*base, length, url], capture_output=True, text=True, check=True)
    cpu = (proc.cpu_seconds() - cpu_before) if proc else 0.0
    stats = parse_h2load(run.stdout)
    requests = max(stats["requests"], 1)
    return Sample(
        rps=stats["rps"],
        bytes_per_s=stats["bytes_per_s"],
        p50_ms=stats["mean_ms"],  # h2load reports no percentiles: the mean request time
        p99_ms=0.0,
        requests=int(stats["requests"]),
        errors=int(stats["errors"]),
        cpu_us_per_request=cpu / requests * 1e6,
        peak_rss_mib=proc.peak_rss_mib() if proc else 0.0,
    )


UDP_DEPTH = 4  # requests outstanding per flow
UDP_SIZE = 64  # bytes per datagram, a small DNS query or answer


def udpload(tmp: Path) -> Path:
    """benchmarks/udpload.c, compiled once per run: a client cheap enough not to be what is measured."""
    binary = tmp / "udpload"
    if not binary.exists():
        source = Path(__file__).resolve().parent / "udpload.c"
        subprocess.run(["cc", "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def measure_udp(proc: Process | None, port: int, scenario: Scenario, tmp: Path, seconds: float) -> Sample:
    """Answered datagrams per second (requests; each is two datagrams through the load balancer, in and
    out) and the load balancer's CPU per answered request."""
    binary = str(udpload(tmp))
    flows, depth, size = str(scenario.connections), str(UDP_DEPTH), str(UDP_SIZE)
    if proc is not None:
        wait_udp(port)
    subprocess.run([binary, "load", str(port), flows, depth, "1", size], capture_output=True, check=True)
    cpu_before = proc.cpu_seconds() if proc else 0.0
    run = subprocess.run(
        [binary, "load", str(port), flows, depth, str(max(1, round(seconds))), size],
        capture_output=True,
        text=True,
        check=True,
    )
    cpu = (proc.cpu_seconds() - cpu_before) if proc else 0.0
    values = dict(line.split() for line in run.stdout.splitlines())
    received, elapsed = int(values["received"]), float(values["seconds"])
    return Sample(
        rps=received / elapsed,
        bytes_per_s=received * UDP_SIZE * 2 / elapsed,
        p50_ms=0.0,
        p99_ms=0.0,
        requests=received,
        errors=int(values["resent"]) // UDP_DEPTH,  # flows that stalled (datagrams lost) and were refilled
        cpu_us_per_request=cpu / max(received, 1) * 1e6,
        peak_rss_mib=proc.peak_rss_mib() if proc else 0.0,
    )


def wait_udp(port: int, timeout: float = 20) -> None:
    """Until a datagram sent to ``port`` is answered (the load balancer and its targets are up)."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        sock.connect(("127.0.0.1", port))
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                sock.send(b"ping")
                sock.recv(2048)
                return
        raise RuntimeError(f"nothing answers UDP on {port}")


def measure_footprint(name: str, scenario: Scenario, tmp: Path, targets: list[int]) -> Sample:
    """RSS and PSS after one request, with one worker (thread) and then two: the difference is what each
    extra worker costs. Idle memory, not the peak under load (the other scenarios' RSS column)."""
    held: list[tuple[float, float]] = []
    for workers in (1, 2):
        with load_balancer(name, scenario, tmp, targets, workers) as (proc, port):
            assert proc is not None
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(
                    f"GET {scenario.path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode()
                )
                while sock.recv(65536):
                    pass
            time.sleep(0.5)
            held.append((proc.rss_kib() / 1024, proc.pss_kib() / 1024))
    (rss, pss), (rss2, pss2) = held
    return Sample(
        rps=0.0,
        bytes_per_s=0.0,
        p50_ms=0.0,
        p99_ms=0.0,
        requests=1,
        errors=0,
        cpu_us_per_request=0.0,
        peak_rss_mib=rss,
        rss_mib=rss,
        pss_mib=pss,
        extra_worker_rss_mib=rss2 - rss,
        extra_worker_pss_mib=pss2 - pss,
    )


def measure_idle(proc: Process | None, port: int, scenario: Scenario) -> Sample:
    """Open many keep-alive connections, one request each, leave them idle: RSS growth per connection."""
    assert proc is not None
    request = f"GET {scenario.path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()

    async def one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length:\s*(\d+)", head)
        await reader.readexactly(int(length.group(1)) if length else 0)
        return reader, writer

    async def hold() -> tuple[int, int, float]:
        await one()  # warm: pools, buffers, lazy imports
        await asyncio.sleep(0.2)
        before = proc.rss_kib()
        cpu_before = proc.cpu_seconds()
        opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        for _ in range(0, scenario.connections, 200):
            opened += await asyncio.gather(*(one() for _ in range(200)))
        await asyncio.sleep(0.5)
        after = proc.rss_kib()
        cpu = proc.cpu_seconds() - cpu_before
        for _, writer in opened:
            writer.close()
        return before, after, cpu

    before, after, cpu = asyncio.run(hold())
    count = (scenario.connections + 199) // 200 * 200
    return Sample(
        rps=0.0,
        bytes_per_s=0.0,
        p50_ms=0.0,
        p99_ms=0.0,
        requests=count,
        errors=0,
        cpu_us_per_request=cpu / count * 1e6,
        peak_rss_mib=proc.peak_rss_mib(),
        kib_per_connection=(after - before) / count,
    )


def run(
    scenarios: list[Scenario], names: list[str], worker_counts: list[int], seconds: float, repetitions: int
) -> list[Result]:
    results: dict[tuple[str, str, int], Result] = {}
    plan: list[tuple[Scenario, str, int]] = []
    for workers in worker_counts:
        for scenario in scenarios:
            for name in names:
                if name in ("direct", "floor", "floor-http") and (
                    scenario.kind not in ("wrk", "ws")
                    or (name != "direct" and scenario.kind == "ws")
                    or scenario.tls
                    or scenario.proxy_v2
                    or workers != worker_counts[0]
                ):
                    # The ceiling needs no repeating; idle memory, TLS and PROXY headers are the load
                    # balancer's (the floors send none, and the PROXY scenario's targets require one).
                    continue
                if scenario.kind == "footprint" and workers != worker_counts[0]:
                    continue  # measures one worker and two itself
                result = results[(scenario.name, name, workers)] = Result(scenario.name, name, workers)
                if scenario.kind == "unsupported":
                    result.unsupported = scenario.unsupported
                elif scenario.gateway and name not in ("lbd", "direct"):
                    result.unsupported = "not an API gateway (no API keys, usage plans or stage cache)"
                elif scenario.kind == "udp" and name in ("haproxy", "floor", "floor-http"):
                    result.unsupported = "no UDP proxy (HAProxy's is Enterprise-only)"
                else:
                    plan.append((scenario, name, workers))
    with tempfile.TemporaryDirectory(prefix="lbd-bench-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)  # nginx workers run as an unprivileged user and must read the 1 MiB file
        targets = [free_port(), free_port()]
        proxy_targets = [free_port(), free_port()]  # the same backends behind a required PROXY header
        grpc_targets = [free_port(), free_port()]  # grpcio servers (benchmarks/grpc_target.py)
        # One certificate for every load balancer's HTTPS scenarios, kept in an lbd certificate store.
        CertificateStore(tmp / "certs").put(issue("bench", ["bench.test"]))
        backend = Process(
            [
                "nginx",
                "-p",
                str(tmp),
                "-c",
                _write(tmp / "backend.conf", nginx_backend_conf(tmp, targets, proxy_targets)),
                "-g",
                "daemon off;",
            ],
            tmp / "backend.log",
            targets[-1],
        )
        # UDP echo targets on the same port numbers as the HTTP ones (another protocol, another socket).
        grpc_servers = [
            Process(
                [sys.executable, "-m", "benchmarks.grpc_target", "--port", str(t)], tmp / f"grpc-{t}.log", t
            )
            for t in (grpc_targets if any(s.kind == "grpc" for s, _, _ in plan) else [])
        ]
        ws_echo = [free_port()]  # the ws scenario's direct ceiling (benchmarks/wsload.py echo)
        ws_servers = [
            Process([sys.executable, "-m", "benchmarks.wsload", "echo", str(t)], tmp / "ws-echo.log", t)
            for t in (ws_echo if any(s.kind == "ws" for s, _, _ in plan) else [])
        ]
        echoes = []
        if any(s.kind == "udp" for s, _, _ in plan):
            binary = str(udpload(tmp))
            echoes = [subprocess.Popen([binary, "echo", str(t)], start_new_session=True) for t in targets]
        try:
            total = len(plan) * repetitions
            done = 0
            for workers in worker_counts:
                for scenario in scenarios:
                    runs = [(n, w) for s, n, w in plan if s is scenario and w == workers]
                    for repetition in range(repetitions):
                        for name, _ in runs:  # interleaved: A B C A B C
                            done += 1
                            what = f"{scenario.name} {name} x{workers} (run {repetition + 1})"
                            print(progress(done, total, what), end="", file=sys.stderr, flush=True)
                            to = proxy_targets if scenario.proxy_v2 else targets
                            if scenario.kind == "grpc":
                                to = grpc_targets
                            if scenario.kind == "ws" and name == "direct":
                                to = ws_echo
                            results[(scenario.name, name, workers)].samples.append(
                                measure(name, scenario, tmp, to, workers, seconds)
                            )
            print(file=sys.stderr)
        finally:
            backend.stop()
            for server in grpc_servers + ws_servers:
                server.stop()
            for echo in echoes:
                echo.kill()
                echo.wait()
    return list(results.values())


def progress(done: int, total: int, what: str) -> str:
    return f"\r[{done}/{total}] {what}".ljust(64)


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# -- reporting ---------------------------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def table(results: list[Result]) -> str:
    rows = [
        f"{'scenario':<14} {'lb':<8} {'wk':>2} {'req/s':>9} {'MB/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'CPU us/req':>10} {'RSS MiB':>8} {'KiB/conn':>8} {'errors':>6}  "
        "vs haproxy / nginx (req/s; CPU/req)",
    ]
    by_key = {(r.scenario, r.load_balancer, r.workers): r for r in results}
    for r in results:
        head = f"{r.scenario:<14} {r.load_balancer:<8} {r.workers:>2}"
        if r.unsupported:
            rows.append(f"{head} not supported: {r.unsupported}")
            continue
        idle = r.median("kib_per_connection")
        extra = ""
        if r.load_balancer == "lbd":
            parts = []
            for peer in ("haproxy", "nginx"):
                other = by_key.get((r.scenario, peer, r.workers))
                if other and other.samples:
                    first = ("rps", "kib_per_connection")[bool(idle)]
                    parts.append(
                        f"{ratio(r.median(first), other.median(first))}; "
                        f"{ratio(r.median('cpu_us_per_request'), other.median('cpu_us_per_request'))}"
                    )
            extra = " / ".join(parts)
        rows.append(
            f"{head} {r.median('rps'):>9.0f} "
            f"{r.median('bytes_per_s') / 1e6:>8.1f} "
            f"{r.median('p50_ms'):>7.2f} {r.median('p99_ms'):>7.2f} {r.median('cpu_us_per_request'):>10.1f} "
            f"{r.median('peak_rss_mib'):>8.1f} {(f'{idle:.1f}' if idle else '-'):>8} "
            f"{int(r.median('errors')):>6}  {extra}"
        )
    rows += scaling(results)
    rows += footprints(results)
    return "\n".join(rows)


def footprints(results: list[Result]) -> list[str]:
    """The footprint scenario in words: the node with one worker, and each extra worker."""
    shown = [r for r in results if r.scenario == "footprint" and r.samples]
    if not shown:
        return []
    # PSS is the figure to compare: the memory the process tree costs the machine, each page once (a page
    # shared by n processes counts 1/n in each), alike for one process (HAProxy), a master and forked
    # workers (nginx) or separately started interpreters (lbd). RSS summed over the tree counts a shared
    # page once per process that maps it: shown too, as ps and top show it.
    lines = [
        "",
        "footprint after one request (MiB; PSS, the figure to compare, counts each page once; RSS summed "
        "over the processes counts shared pages once per process):",
    ]
    for r in shown:
        lines.append(
            f"  {r.load_balancer:<8} 1 worker: {r.median('pss_mib'):5.1f} PSS "
            f"({r.median('rss_mib'):5.1f} RSS); "
            f"each extra worker: +{r.median('extra_worker_pss_mib'):4.1f} PSS "
            f"(+{r.median('extra_worker_rss_mib'):4.1f} RSS)"
        )
    return lines


def scaling(results: list[Result]) -> list[str]:
    """With several worker counts: requests/s at the most workers over requests/s at the fewest."""
    counts = sorted({r.workers for r in results})
    if len(counts) < 2:
        return []
    low, high = counts[0], counts[-1]
    by_key = {(r.scenario, r.load_balancer, r.workers): r for r in results}
    lines = ["", f"scaling from {low} to {high} workers/threads (requests/s ratio):"]
    for scenario in dict.fromkeys(r.scenario for r in results):
        parts = []
        for name in ("lbd", "haproxy", "nginx"):
            a, b = by_key.get((scenario, name, low)), by_key.get((scenario, name, high))
            if a and b and a.median("rps") and b.median("rps"):
                parts.append(f"{name} {ratio(b.median('rps'), a.median('rps'))}")
        if parts:
            lines.append(f"  {scenario:<11} " + ", ".join(parts))
    return lines


def chart(results: list[Result], path: Path) -> Path | None:
    """Requests/s and CPU per request of the load-rate scenarios, at the fewest workers measured."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart (pip install matplotlib)", file=sys.stderr)
        return None
    workers = min(r.workers for r in results)
    shown = [r for r in results if r.workers == workers and r.samples and r.median("rps")]
    if not shown:
        return None
    scenarios = list(dict.fromkeys(r.scenario for r in shown))
    names = list(dict.fromkeys(r.load_balancer for r in shown))
    by_key = {(r.scenario, r.load_balancer): r for r in shown}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [x + i * width for x in range(len(scenarios))]
        rows = [by_key.get((s, name)) for s in scenarios]
        axes[0].bar(xs, [r.median("rps") if r else 0 for r in rows], width, label=name)
        axes[1].bar(xs, [r.median("cpu_us_per_request") if r else 0 for r in rows], width, label=name)
    for ax, title in zip(axes, ("requests/s (median)", "LB CPU µs per request (median)"), strict=True):
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(scenarios))], scenarios)
        ax.set_title(f"{title}, {workers} worker(s)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenario", action="append", choices=sorted(SCENARIOS), help="repeatable; default all"
    )
    parser.add_argument(
        "--lb",
        default=",".join(LOAD_BALANCERS),
        help="comma list of " + ",".join(LOAD_BALANCERS + OPTIONAL_LOAD_BALANCERS),
    )
    parser.add_argument(
        "--workers",
        default="1",
        help="workers/threads per load balancer: a number, 'all', or a list such as 1,all (adds scaling)",
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 s per run, one repetition: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.repetitions = 2.0, 1
        SCENARIOS["idle"] = dataclasses.replace(SCENARIOS["idle"], connections=2000)
    names = [n for n in args.lb.split(",") if n]
    unknown = set(names) - set(LOAD_BALANCERS + OPTIONAL_LOAD_BALANCERS)
    if unknown:
        parser.error(f"unknown load balancer(s): {', '.join(sorted(unknown))}")
    worker_counts = sorted({(os.cpu_count() or 1) if w == "all" else int(w) for w in args.workers.split(",")})
    ensure_tools()
    raise_fd_limit()
    scenarios = [SCENARIOS[name] for name in (args.scenario or SCENARIOS)]
    results = run(scenarios, names, worker_counts, args.seconds, args.repetitions)
    report = table(results)
    print(report)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    payload = {
        "date": stamp,
        "machine": f"{os.cpu_count()} CPUs, {os.uname().machine}, {os.uname().release}",
        "workers": worker_counts,
        "seconds": args.seconds,
        "repetitions": args.repetitions,
        "results": [asdict(r) for r in results],
    }
    for name in (f"{stamp}.json", "latest.json"):
        (RESULTS / name).write_text(json.dumps(payload, indent=2))
    png = chart(results, RESULTS / f"{stamp}.png")
    print(f"\nresults: {RESULTS / (stamp + '.json')}" + (f", chart: {png}" if png else ""))
    return 0
