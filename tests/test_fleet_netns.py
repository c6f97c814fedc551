"""A fleet of three lbd nodes in network namespaces (docs/fleet.md), built with ip netns and veth pairs.

    client ns (10.0.0.1) --ECMP, L4 hash--> node ns 1..3 (each holds the service address 10.99.0.100)
                                               |
                                               +--> target ns: targets 10.3.0.1-3 (TCP 7000, HTTP 8000),
                                                    etcd and redis-server on 10.3.0.250

Nothing leaves the namespaces the test makes (no address of the host's own network is used and no route
reaches it). It shows what a fleet must do: flows spread over the nodes; a node that dies takes no flow's
target with it (the client re-opening the same 5-tuple reaches the same target through another node,
because every node builds the same Maglev table); a target put in etcd is used by every node within
seconds; a sticky cookie one node issued is honoured by the others (a shared stickiness key file); an API
Gateway usage plan's quota holds for the fleet, not per node (one Redis).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.slow

SERVICE = "10.99.0.100"
ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 40.0
REDIS = "10.3.0.250"
QUOTA = 5
API_KEY = "FleetSharedKey" * 2  # the same value on every node: the gateway counts under its digest


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def poll(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


class Fleet:
    def __init__(self, tmp_path: Path) -> None:
        tag = f"lf{os.getpid() % 100000}"
        self.tmp = tmp_path
        self.client = f"{tag}c"
        self.nodes = [f"{tag}n{i}" for i in (1, 2, 3)]
        self.targets_ns = f"{tag}t"
        self.namespaces = [self.client, *self.nodes, self.targets_ns]
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.tag = tag

    # -- topology ----------------------------------------------------------------------------------------

    def build(self) -> None:
        for ns in self.namespaces:
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", self.client, "addr", "add", "10.0.0.1/32", "dev", "lo")
        for name in ("all", "default"):
            self.sysctl(self.client, f"net.ipv4.conf.{name}.rp_filter=0")
        self.sysctl(self.client, "net.ipv4.fib_multipath_hash_policy=1")  # hash the 5-tuple (L4)
        for address in ("10.3.0.1", "10.3.0.2", "10.3.0.3", "10.3.0.250"):
            ip("-n", self.targets_ns, "addr", "add", f"{address}/32", "dev", "lo")
        for index, node in enumerate(self.nodes, start=1):
            self.veth(
                self.client, f"{self.tag}c{index}", f"10.1.{index}.1/24", node, "up", f"10.1.{index}.2/24"
            )
            self.veth(
                node,
                "down",
                f"10.2.{index}.1/24",
                self.targets_ns,
                f"{self.tag}t{index}",
                f"10.2.{index}.2/24",
            )
            ip("-n", node, "addr", "add", f"{SERVICE}/32", "dev", "lo")
            ip("-n", node, "route", "add", "10.0.0.1/32", "via", f"10.1.{index}.1")
            ip("-n", node, "route", "add", "10.3.0.0/24", "via", f"10.2.{index}.2")
        self.route([1, 2, 3])

    def veth(self, ns_a: str, name_a: str, address_a: str, ns_b: str, name_b: str, address_b: str) -> None:
        ip("link", "add", f"{self.tag}x", "type", "veth", "peer", "name", f"{self.tag}y")
        ip("link", "set", f"{self.tag}x", "netns", ns_a, "name", name_a)
        ip("link", "set", f"{self.tag}y", "netns", ns_b, "name", name_b)
        ip("-n", ns_a, "addr", "add", address_a, "dev", name_a)
        ip("-n", ns_b, "addr", "add", address_b, "dev", name_b)
        ip("-n", ns_a, "link", "set", "dev", name_a, "up")
        ip("-n", ns_b, "link", "set", "dev", name_b, "up")

    def route(self, nodes: list[int]) -> None:
        """The service address over these nodes (what a router does when a node's BGP session drops)."""
        hops = [arg for i in nodes for arg in ("nexthop", "via", f"10.1.{i}.2", "dev", f"{self.tag}c{i}")]
        ip("-n", self.client, "route", "replace", f"{SERVICE}/32", "src", "10.0.0.1", *hops)

    @staticmethod
    def sysctl(ns: str, setting: str) -> None:
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", setting], check=True, capture_output=True)

    def teardown(self) -> None:
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # its own session: lbd's workers too
            process.wait()
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    # -- processes ---------------------------------------------------------------------------------------

    def spawn(self, name: str, ns: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("ab")
        process = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def run(self, ns: str, *args: str) -> Any:
        out = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.fleet_helper", *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=True,
        )
        return json.loads(out.stdout)

    def etcd_put(self, key: str, value: dict[str, Any]) -> None:
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.targets_ns,
                "etcdctl",
                "--endpoints=http://10.3.0.250:2379",
                "put",
                key,
                json.dumps(value),
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "ETCDCTL_API": "3"},
        )

    def admin(self, index: int, path: str, body: dict[str, Any] | None = None) -> Any:
        """GET path (POST body when given) on a node's admin API; the JSON answer, None if it failed."""
        text = self.admin_text(index, path, body)
        return json.loads(text) if text is not None else None

    def admin_text(self, index: int, path: str, body: dict[str, Any] | None = None) -> str | None:
        data = None if body is None else json.dumps(body).encode()
        script = (
            "import sys, urllib.request\n"
            f"request = urllib.request.Request('http://127.0.0.1:9911{path}', data={data!r})\n"
            "print(urllib.request.urlopen(request, timeout=5).read().decode())"
        )
        out = subprocess.run(
            ["ip", "netns", "exec", self.nodes[index], sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return out.stdout if out.returncode == 0 else None

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def node_config(fleet: Fleet, index: int) -> dict[str, Any]:
    return {
        "node": {"zone": "zone-a", "workers": 2, "stickiness_key_file": str(fleet.tmp / "cookie.keys")},
        "admin": {"listen": "127.0.0.1:9911"},  # each node namespace has its own loopback
        "state_dir": str(fleet.tmp / f"state{index}"),
        "load_balancers": [
            {
                "name": "nlb",
                "type": "network",
                "listeners": [
                    {
                        "protocol": "TCP",
                        "port": 7000,
                        "address": SERVICE,
                        "default_actions": [{"type": "forward", "target_group": "flows"}],
                    },
                ],
            },
            {
                "name": "alb",
                "type": "application",
                "listeners": [
                    {
                        "protocol": "HTTP",
                        "port": 80,
                        "address": SERVICE,
                        "default_actions": [{"type": "forward", "target_group": "web"}],
                    },
                ],
            },
        ],
        "target_groups": [
            {
                "name": "flows",
                "protocol": "TCP",
                "port": 7000,
                "health_check": {
                    "protocol": "TCP",
                    "interval_seconds": 2,
                    "timeout_seconds": 1,
                    "healthy_threshold": 2,
                    "unhealthy_threshold": 2,
                },
                "discovery": {
                    "type": "etcd",
                    "endpoints": ["http://10.3.0.250:2379"],
                    "prefix": "/fleet/flows/",
                },
            },
            {
                "name": "web",
                "protocol": "HTTP",
                "health_check": {"enabled": False},
                "stickiness": {"enabled": True, "type": "lb_cookie", "duration_seconds": 600},
                "targets": [{"id": f"10.3.0.{i}", "port": 8000} for i in (1, 2, 3)],
            },
        ],
        # One API whose usage plan's quota every node draws from one Redis (docs/gateway-state.md).
        # Closed: a node that cannot reach Redis answers 503 rather than counting on its own.
        "shared_state": {"redis": f"redis://{REDIS}:6379/0", "on_failure": "closed", "timeout_ms": 1000},
        "apis": [
            {
                "name": "shop",
                "listeners": [{"protocol": "HTTP", "port": 8080, "address": SERVICE}],
                "routes": [
                    {
                        "route_key": "GET /paid",
                        "integration": {"type": "HTTP_PROXY", "target_group": "web", "path": "/"},
                        "api_key_required": True,
                    }
                ],
            }
        ],
        "usage_plans": [
            {"name": "basic", "apis": [{"api": "shop"}], "quota": {"limit": QUOTA, "period": "MONTH"}}
        ],
    }


def kernel_refuses_namespaces() -> str | None:
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    probe = f"lfprobe{os.getpid() % 100000}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if result.returncode != 0:
        return f"the kernel refuses network namespaces here: {result.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    refused = kernel_refuses_namespaces()
    if refused is not None:
        pytest.skip(refused)
    assert shutil.which("etcd"), "etcd is missing: scripts/test-tools.sh installs Debian's etcd-server"
    made = Fleet(tmp_path)
    try:
        made.build()
        yield made
    finally:
        made.teardown()
        for name in made.processes:
            print(f"--- {name} ---\n{made.log(name)[-4000:]}")


def nodes_of(answers: dict[str, str]) -> dict[str, str]:
    return {port: answer.split()[1] for port, answer in answers.items() if not answer.startswith("error")}


def targets_of(answers: dict[str, str]) -> dict[str, str]:
    return {port: answer.split()[0] for port, answer in answers.items() if not answer.startswith("error")}


def test_three_nodes_behave_as_one_load_balancer(fleet: Fleet) -> None:
    etcd_data = fleet.tmp / "etcd"
    fleet.spawn("etcd", fleet.targets_ns, [
        "etcd", "--name=fleet", f"--data-dir={etcd_data}",
        "--listen-client-urls=http://10.3.0.250:2379", "--advertise-client-urls=http://10.3.0.250:2379",
        "--listen-peer-urls=http://10.3.0.250:2380", "--initial-advertise-peer-urls=http://10.3.0.250:2380",
        "--initial-cluster=fleet=http://10.3.0.250:2380",
    ])  # fmt: skip
    fleet.spawn("redis", fleet.targets_ns, [
        "redis-server", "--bind", REDIS, "--port", "6379", "--protected-mode", "no",
        "--dir", str(fleet.tmp), "--save", "", "--appendonly", "no", "--daemonize", "no",
    ])  # fmt: skip
    for i in (1, 2, 3):
        fleet.spawn(
            f"target{i}",
            fleet.targets_ns,
            [sys.executable, "-m", "tests.fleet_helper", "serve", f"t{i}", f"10.3.0.{i}"],
        )
    poll(lambda: _try_put(fleet, "/fleet/flows/t1", {"id": "10.3.0.1"}), "etcd to take a key")
    poll(lambda: _redis_answers(fleet), "redis-server to answer")
    fleet.etcd_put("/fleet/flows/t2", {"id": "10.3.0.2"})
    for index, node in enumerate(fleet.nodes):
        path = fleet.tmp / f"node{index}.yaml"
        path.write_text(yaml.safe_dump(node_config(fleet, index)))
        fleet.spawn(f"node{index}", node, [sys.executable, "-m", "lbd", "run", "-c", str(path)])
    for index in range(3):
        poll(lambda i=index: _serving(fleet, i, 2), f"node {index} to serve two discovered targets")

    # 1. Flows spread over the nodes, and every node sends a flow where the others would.
    first = fleet.run(fleet.client, "flows", SERVICE, "41000", "60")
    assert not [a for a in first.values() if a.startswith("error")], first
    by_node = nodes_of(first)
    assert set(by_node.values()) == {"10.2.1.1", "10.2.2.1", "10.2.3.1"}, by_node
    placed = targets_of(first)
    assert set(placed.values()) == {"t1", "t2"}
    digests = {json.dumps(fleet.admin(i, "/v1/fleet")["target_groups"][0]["maglev"]) for i in range(3)}
    assert len(digests) == 1  # the three nodes build the same table

    # 2. One usage plan's quota for the fleet: the same key on every node, requests spread by ECMP.
    _one_quota_across_nodes(fleet)

    # 3. A node dies; the router withdraws it; the same 5-tuples reach the same targets through the others.
    os.killpg(fleet.processes["node0"].pid, signal.SIGKILL)
    fleet.processes["node0"].wait()
    fleet.route([2, 3])
    again = fleet.run(fleet.client, "flows", SERVICE, "41000", "60")
    assert set(nodes_of(again).values()) == {"10.2.2.1", "10.2.3.1"}
    orphans = [port for port, node in by_node.items() if node == "10.2.1.1"]
    assert orphans, "no flow went through the node that died"
    after = targets_of(again)
    moved = {port: (first[port], again[port]) for port in placed if after.get(port) != placed[port]}
    assert not moved, moved  # the dead node's flows too: every flow kept its target

    # 4. A target put in etcd is used by every node within seconds.
    fleet.etcd_put("/fleet/flows/t3", {"id": "10.3.0.3"})
    for index in (1, 2):
        poll(lambda i=index: _serving(fleet, i, 3), f"node {index} to take the target from etcd", timeout=10)

    def new_target_everywhere() -> bool:
        answers = fleet.run(fleet.client, "flows", SERVICE, "42000", "60")
        through = {a.split()[1] for a in answers.values() if a.startswith("t3 ")}
        return through == {"10.2.2.1", "10.2.3.1"}

    poll(new_target_everywhere, "flows through both nodes to reach the new target", timeout=15)

    # 5. A sticky cookie issued by one node is honoured by the others (shared stickiness key file).
    issued = fleet.run(fleet.client, "http", f"http://{SERVICE}/", "", "43000")
    assert issued["status"] == 200 and issued["set_cookie"], issued
    stuck_to = issued["body"].split()[0]
    cookie = "; ".join(value.split(";")[0] for value in issued["set_cookie"])
    answers = [
        fleet.run(fleet.client, "http", f"http://{SERVICE}/", cookie, str(port))
        for port in range(43001, 43013)
    ]
    assert {a["body"].split()[1] for a in answers} == {"10.2.2.1", "10.2.3.1"}  # both nodes answered
    assert {a["body"].split()[0] for a in answers} == {stuck_to}
    # Without the cookie the same nodes balance across the targets: the cookie is what kept them on one.
    plain = [
        fleet.run(fleet.client, "http", f"http://{SERVICE}/", "", str(port)) for port in range(43020, 43032)
    ]
    assert len({a["body"].split()[0] for a in plain}) > 1


def _one_quota_across_nodes(fleet: Fleet) -> None:
    for index in range(3):
        # Key ids are random per node; the value is what the nodes share (its digest names the counters).
        key = fleet.admin(index, "/v1/api-keys", {"name": "fleet", "value": API_KEY})
        assert key is not None and key["value"] == API_KEY, fleet.log(f"node{index}")[-2000:]
        added = fleet.admin(index, "/v1/usage-plans/basic/keys", {"key_id": key["id"]})
        assert added is not None, fleet.log(f"node{index}")[-2000:]
    count = QUOTA + 30  # enough refusals that every node refuses some: no node counts on its own
    answers = fleet.run(fleet.client, "keyed", f"http://{SERVICE}:8080/paid", API_KEY, "44000", str(count))
    statuses = [a["status"] for a in answers]
    assert statuses == [200] * QUOTA + [429] * (count - QUOTA), answers  # one quota, not one per node
    assert {a["body"].split()[0] for a in answers[:QUOTA]} <= {"t1", "t2", "t3"}
    assert {json.loads(a["body"])["message"] for a in answers[QUOTA:]} == {"Limit Exceeded"}

    # Each node served its share of them (the ECMP route spread the source ports), and refused some.
    def counted() -> list[tuple[float, float]] | None:
        seen = [_api_counts(fleet, index) for index in range(3)]
        totals = (sum(requests for requests, _ in seen), sum(refused for _, refused in seen))
        return seen if totals == (count, count - QUOTA) else None

    seen = poll(counted, f"the nodes' metrics to count {count} requests, {count - QUOTA} refused", 10)
    assert all(refused > 0 for _, refused in seen), seen
    for index in range(3):
        usage = fleet.admin(index, "/v1/usage-plans/basic/usage")
        assert [entry["used"] for entry in usage["keys"].values()] == [QUOTA], usage


def _api_counts(fleet: Fleet, index: int) -> tuple[float, float]:
    """This node's lbd_api_requests_total and lbd_api_throttled_total for the route."""
    text = fleet.admin_text(index, "/metrics") or ""
    totals = {"lbd_api_requests_total": 0.0, "lbd_api_throttled_total": 0.0}
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name in totals and 'route="GET /paid"' in rest:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals["lbd_api_requests_total"], totals["lbd_api_throttled_total"]


def _redis_answers(fleet: Fleet) -> bool:
    out = subprocess.run(
        ["ip", "netns", "exec", fleet.targets_ns, "redis-cli", "-h", REDIS, "ping"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() == "PONG"


def _try_put(fleet: Fleet, key: str, value: dict[str, Any]) -> bool:
    try:
        fleet.etcd_put(key, value)
    except subprocess.CalledProcessError:
        return False
    return True


def _serving(fleet: Fleet, index: int, count: int) -> bool:
    view = fleet.admin(index, "/v1/fleet")
    if view is None:
        return False
    flows = next(g for g in view["target_groups"] if g["name"] == "flows")
    # Every target healthy (not failing open over targets still initial): what the workers serve now.
    states = [t["state"] for t in flows["targets"]]
    return states == ["healthy"] * count and len(flows["maglev"]["serving"]) == count
