"""What users run lbd with: the systemd unit, the container image, the CI script and `lbd demo`."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from lbd.demo import serve_demo_backend
from tests.conftest import LbdFactory
from tests.http_client import Client
from tests.lbdproc import free_port, network_config, wait_for

ROOT = Path(__file__).resolve().parent.parent


def test_systemd_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    # scripts/test-tools.sh (make test) installs systemd; without it this fails, naming the package.
    assert analyze, "systemd-analyze not found: apt-get install systemd (scripts/test-tools.sh does)"
    unit = (ROOT / "systemd/lbd.service").read_text()
    directives = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in unit.splitlines() if "=" in line}
    assert directives["ExecStart"] == "/opt/lbd/bin/lbd run -c /etc/lbd/lbd.yaml"  # the README's venv
    assert directives["RestartPreventExitStatus"] == "2"  # an invalid config does not restart in a loop
    assert directives["StateDirectory"] == "lbd" and directives["LogsDirectory"] == "lbd"
    assert directives["ProtectSystem"] == "strict" and directives["Type"] == "notify"
    assert directives["ExecReload"] == "/bin/kill -HUP $MAINPID" and "LimitNOFILE" in directives
    assert "ExecStartPre" not in directives  # lbd run makes lbd check's checks itself
    # The access logs docs/metrics.md puts in /var/log/lbd are writable under ProtectSystem=strict.
    assert "/var/log/lbd" in (ROOT / "docs/configuration.md").read_text()
    # verify checks that ExecStart exists: point it at the lbd installed in this venv.
    local = tmp_path / "lbd.service"
    local.write_text(unit.replace("/opt/lbd/bin/lbd", str(Path(sys.executable).parent / "lbd")))
    result = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # no warnings either
    readme = (ROOT / "README.md").read_text()
    assert "python3 -m venv /opt/lbd && /opt/lbd/bin/pip install ." in readme


async def test_state_goes_to_the_systemd_state_directory(lbd: LbdFactory, tmp_path: Path) -> None:
    """Under systemd (StateDirectory=lbd) registrations land in $STATE_DIRECTORY without a state_dir."""
    state = tmp_path / "state"
    state.mkdir()
    config = network_config(free_port(), [free_port()])
    proc = lbd(config, start=False)
    os.environ["STATE_DIRECTORY"] = str(state)
    try:
        proc.start()
    finally:
        del os.environ["STATE_DIRECTORY"]
    await proc.wait_ready()
    status, _ = await proc.admin(
        "POST", "/v1/target-groups/pool/targets", b'{"targets": [{"id": "127.0.0.2", "port": 1}]}'
    )
    assert status == 200
    assert [p.name for p in state.iterdir()], "nothing in $STATE_DIRECTORY"
    assert not list(proc.config_path.parent.glob("*.json")), "state written beside the config instead"


def test_dockerfile_runs_from_site_packages_with_state_on_a_volume() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[1-9]-slim", dockerfile, re.M)
    assert re.search(r"^USER lbd$", dockerfile, re.M)
    healthcheck = re.search(r"^HEALTHCHECK .*\n.*", dockerfile, re.M)
    assert healthcheck and "/healthz" in healthcheck.group(0)
    assert 'CMD ["run", "-c", "/etc/lbd/lbd.yaml"]' in dockerfile
    assert re.search(r"^VOLUME /var/lib/lbd$", dockerfile, re.M)
    assert re.findall(r"^EXPOSE (.*)$", dockerfile, re.M) == ["8080"]  # the admin API is loopback-only
    assert "pip install --requirement /tmp/requirements.lock" in dockerfile
    # Multi-stage: a build stage compiles the wheel (compiled or failing), the runtime stage carries no
    # compiler and no source, and refuses to finish if the installed data path is not compiled.
    build_stage, _, runtime_stage = dockerfile.partition("\nFROM python:3.11-slim\n")
    assert "LBD_REQUIRE_EXTENSIONS=1" in build_stage and "pip wheel" in build_stage
    assert "gcc" not in runtime_stage and "COPY lbd " not in runtime_stage
    assert "pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels" in runtime_stage
    assert "build.data_path() != 'compiled'" in runtime_stage
    assert "COPY conf/container.yaml /etc/lbd/lbd.yaml" in dockerfile
    workdir = re.findall(r"^WORKDIR (.*)$", dockerfile, re.M)
    assert workdir == ["/var/lib/lbd"]  # python -m lbd.worker must not find a source tree in its cwd
    # Every runtime dependency is pinned in the lock file.
    lock = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line
    }
    pyproject = (ROOT / "pyproject.toml").read_text()
    declared = tomllib.loads(pyproject)["project"]["dependencies"]
    names = {re.split(r"[<>=\[ ;]", d.strip())[0].lower() for d in declared}
    assert names <= lock, names - lock
    # The documented docker run: the same command in the README and the Dockerfile header, and a stop
    # timeout longer than the drain it allows.
    readme = (ROOT / "README.md").read_text()
    run = re.search(r"docker run -d --name lbd .*", dockerfile)
    assert run and run.group(0) in readme
    stop = re.search(r"--stop-timeout (\d+)", run.group(0))
    config = yaml.safe_load((ROOT / "conf/container.yaml").read_text())
    assert stop and int(stop.group(1)) > config["node"]["shutdown_timeout_seconds"]
    assert "-p 8080:8080" in run.group(0) and "-v lbd-state:/var/lib/lbd" in run.group(0)


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
