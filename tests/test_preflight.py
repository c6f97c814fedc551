"""`lbd check` refuses every config `lbd run` would refuse at start, with the same message, and `lbd run`
refuses it with exit 2 before it binds anything: both call lbd.config.preflight.load_for_run."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from lbd.cli import main
from lbd.tls.store import CertificateStore, issue
from tests.lbdproc import application_config, free_port, network_config


def https(tmp: Path) -> dict[str, Any]:
    config = application_config(free_port(), [free_port()])
    listener = config["load_balancers"][0]["listeners"][0]
    listener["protocol"] = "HTTPS"
    listener["certificates"] = ["site"]
    config["certificates"] = {"store": str(tmp / "store")}
    CertificateStore(tmp / "store").put(issue("site", ["site.test"]))
    return config


def missing_certificate(tmp: Path) -> dict[str, Any]:
    config = https(tmp)
    config["load_balancers"][0]["listeners"][0]["certificates"] = ["site", "nope"]
    return config


def unreadable_token(tmp: Path) -> dict[str, Any]:
    config = application_config(free_port(), [free_port()])
    config["admin"] = {"listen": f"127.0.0.1:{free_port()}", "token_file": str(tmp / "no-such.token")}
    return config


def empty_token(tmp: Path) -> dict[str, Any]:
    (tmp / "empty.token").write_text("\n")
    config = application_config(free_port(), [free_port()])
    config["admin"] = {"listen": f"127.0.0.1:{free_port()}", "token_file": str(tmp / "empty.token")}
    return config


def http2_group(tmp: Path) -> dict[str, Any]:
    # HTTP/2 target groups are served from HTTPS listeners and h2c ones, not from plain HTTP/1.1 listeners.
    config = application_config(free_port(), [free_port()])
    config["target_groups"][0]["protocol_version"] = "HTTP2"
    return config


def bad_key_file(tmp: Path) -> dict[str, Any]:
    config = application_config(free_port(), [free_port()])
    keys = tmp / "stickiness.keys"
    keys.write_text("not a key\n")
    config["node"]["stickiness_key_file"] = str(keys)
    return config


def udp_accepting_proxy(tmp: Path) -> dict[str, Any]:
    config = network_config(free_port(), [free_port()])
    listener = config["load_balancers"][0]["listeners"][0]
    listener["protocol"] = "UDP"
    listener["accept_proxy_protocol"] = {"trusted_sources": ["127.0.0.0/8"]}
    config["target_groups"][0]["protocol"] = "UDP"
    return config


def proxy_v2_on_udp_group(tmp: Path) -> dict[str, Any]:
    config = network_config(free_port(), [free_port()], proxy_protocol_v2=True)
    config["load_balancers"][0]["listeners"][0]["protocol"] = "UDP"
    config["target_groups"][0]["protocol"] = "UDP"
    return config


def bad_trusted_source(tmp: Path) -> dict[str, Any]:
    config = application_config(free_port(), [free_port()])
    config["load_balancers"][0]["listeners"][0]["accept_proxy_protocol"] = {
        "trusted_sources": ["10.0.0.0/8", "10.0.0.300/32"]
    }
    return config


def grpc_check(tmp: Path) -> dict[str, Any]:
    config = application_config(free_port(), [free_port()])
    config["target_groups"][0]["health_check"] = {"protocol": "GRPC", "matcher": "0-200"}
    return config


def port_twice(tmp: Path) -> dict[str, Any]:
    config = application_config(free_port(), [free_port()])
    second = copy.deepcopy(config["load_balancers"][0])
    second["name"] = "alb2"
    config["load_balancers"].append(second)
    return config


def admin_on_listener_port(tmp: Path) -> dict[str, Any]:
    config = application_config(free_port(), [free_port()])
    port = config["load_balancers"][0]["listeners"][0]["port"]
    config["admin"] = {"listen": f"127.0.0.1:{port}"}
    return config


CASES: list[tuple[str, Callable[[Path], dict[str, Any]], str]] = [
    (
        "missing certificate",
        missing_certificate,
        "load_balancers[0].listeners[0].certificates[1]: no certificate named 'nope' in the store",
    ),
    ("unreadable token_file", unreadable_token, "admin.token_file: cannot read"),
    ("empty token_file", empty_token, "admin.token_file: "),
    (
        "HTTP/2 target group",
        http2_group,
        "HTTP2 target groups need an HTTPS listener (ALB rule), or an HTTP listener with h2c: true",
    ),
    ("stickiness key file without keys", bad_key_file, "node.stickiness_key_file: "),
    (
        "UDP listener accepting PROXY",
        udp_accepting_proxy,
        "load_balancers[0].listeners[0].accept_proxy_protocol: UDP listeners cannot accept PROXY headers",
    ),
    (
        "PROXY v2 to a UDP group",
        proxy_v2_on_udp_group,
        "target_groups[0].proxy_protocol_v2: only TCP, TLS and TCP_UDP target groups send it",
    ),
    (
        "trusted source not a CIDR",
        bad_trusted_source,
        "load_balancers[0].listeners[0].accept_proxy_protocol.trusted_sources[1]: must be a CIDR",
    ),
    ("GRPC health check codes", grpc_check, "target_groups[0].health_check.matcher: gRPC codes are 0-99"),
    ("two listeners on one port", port_twice, "load_balancers[1].listeners[0].port: 127.0.0.1:"),
    ("admin port on a listener's", admin_on_listener_port, "is already used by admin.listen"),
]


@pytest.mark.parametrize(("case", "make", "message"), CASES, ids=[c[0] for c in CASES])
def test_check_and_run_refuse_the_same(
    case: str,
    make: Callable[[Path], dict[str, Any]],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "lbd.yaml"
    path.write_text(yaml.safe_dump(make(tmp_path), sort_keys=False))
    assert main(["check", "-c", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert any(line.startswith(f"{path}: ") and message in line for line in lines), captured.err
    # The same file, the same message, exit 2 and no worker started.
    run = subprocess.run(
        [sys.executable, "-m", "lbd", "run", "-c", str(path)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2, run.stderr
    assert any(f"{path}: " in line and message in line for line in run.stderr.splitlines()), run.stderr
    assert "lbd ready" not in run.stderr


def test_a_config_that_starts_passes_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The HTTPS config the failures above start from is fine on its own (a certificate in the store).
    path = tmp_path / "lbd.yaml"
    path.write_text(yaml.safe_dump(https(tmp_path)))
    assert main(["check", "-c", str(path)]) == 0
    assert ": OK (1 load balancer, 1 listener, 1 target group, 1 target)" in capsys.readouterr().out
