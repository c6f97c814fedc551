"""What users run lbd with: the systemd unit, the container image, the CI script and `lbd demo`."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from lbd.demo import serve_demo_backend
from tests.http_client import Client
from tests.lbdproc import free_port, network_config, wait_for

ROOT = Path(__file__).resolve().parent.parent


def test_systemd_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    # .ci/run installs systemd; outside CI a developer without it is told, not silently skipped.
    assert analyze, "systemd-analyze not found: apt-get install systemd (.ci/run does)"
    unit = (ROOT / "systemd/lbd.service").read_text()
    for needed in (
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "LimitNOFILE=",
        "ProtectSystem=strict",
    ):
        assert needed in unit
    # verify checks that ExecStart exists: point it at this checkout's lbd.
    local = tmp_path / "lbd.service"
    local.write_text(unit.replace("/usr/local/bin/lbd", str(Path(sys.executable).parent / "lbd")))
    result = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_dockerfile_runs_as_non_root_with_a_healthcheck() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[1-9]-slim", dockerfile, re.M)
    assert re.search(r"^USER lbd$", dockerfile, re.M)
    healthcheck = re.search(r"^HEALTHCHECK .*\n.*", dockerfile, re.M)
    assert healthcheck and "/healthz" in healthcheck.group(0)
    assert 'CMD ["run", "-c", "/etc/lbd/lbd.yaml"]' in dockerfile
    readme = (ROOT / "README.md").read_text()
    assert "/etc/lbd/lbd.yaml" in readme  # the documented mount point is the one the image uses


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci/run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci.splitlines()[-1]
    assert "make test" in readme and "make run" in readme
    makefile = subprocess.run(["make", "-n", "-C", str(ROOT), "run", "test"], capture_output=True, text=True)
    assert makefile.returncode == 0, makefile.stderr


async def test_demo_backend_serves_keep_alive() -> None:
    server = await serve_demo_backend("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await Client.connect(port)
    for path in ("/", "/two"):
        response = await client.request("GET", path)
        assert response.status == 200
        assert f"GET {path} HTTP/1.1".encode() in response.body
    post = await client.request("POST", "/p", body=b"abc")
    assert post.status == 200
    client.close()
    server.close()


async def test_lbd_demo_end_to_end(tmp_path: Path) -> None:
    config = network_config(free_port(), [free_port(), free_port()])
    config["admin"] = {"listen": f"127.0.0.1:{free_port()}"}
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "lbd", "demo", "-c", str(path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        await wait_for(lambda: "curl http://" in log.read_text(), what="the demo's hints")
        port = config["load_balancers"][0]["listeners"][0]["port"]
        answers = set()
        for _ in range(4):
            client = await Client.connect(port)
            response = await client.request("GET", "/")
            answers.add(response.body.splitlines()[0])
            client.close()
        assert len(answers) == 2  # round robin over both demo targets
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.get_running_loop().run_in_executor(None, process.wait, 30)
    assert code == 0, log.read_text()
