"""How people run lbd: the CLI's help and bounds, shutdown, `lbd demo` / `make run`, the container's
config, and a wheel installed into a fresh venv."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from lbd import build
from lbd.cli import build_parser, main, subparsers
from tests.conftest import LbdFactory
from tests.lbdproc import application_config, free_port, http_request, network_config, wait_for

ROOT = Path(__file__).resolve().parent.parent
LBD = Path(sys.executable).parent / "lbd"  # the venv's console script, as `make run` calls it


# -- CLI ---------------------------------------------------------------------------------------------------


def all_parsers(parser: argparse.ArgumentParser, name: str = "lbd") -> list[tuple[str, Any]]:
    found = [(name, parser)]
    for child_name, child in subparsers(parser).items():
        found += all_parsers(child, f"{name} {child_name}")
    return found


def test_help_is_plain_text_and_every_option_has_help_and_its_default() -> None:
    parsers = all_parsers(build_parser())
    assert {"lbd run", "lbd check", "lbd schema", "lbd demo", "lbd cert import"} <= {n for n, _ in parsers}
    for name, parser in parsers:
        text = parser.format_help()
        assert "``" not in text and ":class:" not in text, (name, text)
        assert parser.description, name
        for action in parser._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            assert action.help, (name, action.option_strings)
            if action.default not in (None, False, argparse.SUPPRESS) and not action.required:
                assert f"(default: {action.default}" in " ".join(text.split()), (name, action.dest)


def test_version_flag_and_command() -> None:
    for args in (["--version"], ["version"]):
        result = subprocess.run([str(LBD), *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0] == "lbd 0.1.0"
        # lbd version also says whether the data path is compiled (lbd/build.py).
        expected = [f"data path: {build.data_path()}"] if args == ["version"] else []
        assert result.stdout.splitlines()[1:] == expected


@pytest.mark.parametrize("value", ["0", "257", "two"])
def test_workers_option_has_the_configs_bounds(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("run", "demo"):
        with pytest.raises(SystemExit) as exited:
            main([command, "-c", "conf/lbd.yaml", "--workers", value])
        assert exited.value.code == 2
        assert "--workers: must be" in capsys.readouterr().err


# -- shutdown ------------------------------------------------------------------------------------------------


async def test_shutdown_waits_for_all_workers_at_once(lbd: LbdFactory) -> None:
    config = network_config(free_port(), [free_port()])
    config["node"]["shutdown_timeout_seconds"] = 1
    proc = lbd(config, workers=3)
    await proc.wait_ready()
    assert proc.process is not None
    children = Path(f"/proc/{proc.process.pid}/task/{proc.process.pid}/children").read_text().split()
    workers = [int(pid) for pid in children]
    assert len(workers) == 3
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)  # a worker that will not stop: each one costs the whole deadline
    started = time.monotonic()
    proc.signal(signal.SIGTERM)
    code = await proc.wait_exit(timeout=60)
    elapsed = time.monotonic() - started
    # The deadline is shutdown_timeout_seconds + 5 s = 6 s; one after another would take 18 s.
    assert code == 1  # the killed workers make it an unclean stop
    assert 5.5 < elapsed < 12, elapsed
    assert proc.log.count("did not stop in time; killing it") == 3


# -- lbd demo and make run ---------------------------------------------------------------------------------


def port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


class Demo:
    def __init__(self, args: list[str], cwd: Path, log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(LBD), "demo", *args],
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                # Its own process group, so a failed test can take the demo's lbd run and workers down with
                # it (kill below): an orphan would hold the example's fixed ports for the next run.
                start_new_session=True,
            )

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def started(self) -> int:
        """Wait for the printed hints; the pid of the lbd run the demo started."""

        def hints() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"lbd demo exited with {self.process.returncode}:\n{self.output}")
            return "Stop: Ctrl-C." in self.output

        await wait_for(hints, timeout=60, what="the demo's hints")
        match = re.search(r"lbd is running \(pid (\d+);", self.output)
        assert match, self.output
        return int(match.group(1))

    def urls(self) -> list[str]:
        return re.findall(r"^  curl (http://\S+)$", self.output, re.M)

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        return int(await loop.run_in_executor(None, self.process.wait, 60))

    def kill(self) -> None:
        """The demo and everything it started (lbd run, its workers), whatever state the test left."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


async def test_make_run_as_a_user_would(tmp_path: Path) -> None:
    """`make run` is `lbd demo -c conf/lbd.yaml`: here from another directory, as a user might."""
    conf = yaml.safe_load((ROOT / "conf/lbd.yaml").read_text())
    admin_host, _, admin_port = conf["admin"]["listen"].rpartition(":")
    ports = [(admin_host, int(admin_port))]
    ports += [(lst["address"], lst["port"]) for lb in conf["load_balancers"] for lst in lb["listeners"]]
    ports += [(t["id"], t["port"]) for group in conf["target_groups"] for t in group["targets"]]
    # These ports are fixed by the example; another checkout's `make run` may hold them for a while.
    await wait_for(lambda: all(port_free(*p) for p in ports), timeout=120, what=f"{ports} to be free")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    demo = Demo(["-c", "conf/lbd.yaml"], elsewhere, tmp_path / "demo.log")
    try:
        child = await demo.started()
        urls = demo.urls()
        assert f"http://127.0.0.1:{conf['load_balancers'][0]['listeners'][0]['port']}/" in urls
        assert len(urls) == 4, demo.output
        loop = asyncio.get_running_loop()
        bodies = {}
        for url in urls:
            with await loop.run_in_executor(None, lambda u=url: urllib.request.urlopen(u, timeout=10)) as r:
                assert r.status == 200, url
                bodies.setdefault(url, set()).add(r.read().splitlines()[0])
        both = {b"hello from target 127.0.0.1:9001", b"hello from target 127.0.0.1:9002"}

        async def both_answered() -> bool:
            # Round robin over both demo targets, once the node's first health checks have seen both (a
            # target that was still starting when lbd came up is unhealthy until its next check).
            with await loop.run_in_executor(None, lambda: urllib.request.urlopen(urls[0], timeout=10)) as r:
                bodies[urls[0]].add(r.read().splitlines()[0])
            return bodies[urls[0]] == both

        await wait_for(both_answered, timeout=30, interval=0.2, what="answers from both demo targets")
        code = await demo.stop()
    finally:
        demo.kill()
    assert code == 0, demo.output
    assert not pid_alive(child), "lbd run outlived its demo"


async def test_demo_passes_signals_on_to_its_lbd(tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    config = application_config(port, [free_port(), free_port()])
    config["admin"] = {"listen": f"127.0.0.1:{admin}"}
    access = tmp_path / "access.log"
    config["load_balancers"][0]["access_log"] = {"path": str(access)}
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))

    async def generation() -> int:
        status, _, body = await http_request(admin, "GET", "/readyz")
        return int(json.loads(body)["generation"]) if status == 200 else 0

    demo = Demo(["-c", str(path)], tmp_path, tmp_path / "demo.log")
    try:
        child = await demo.started()
        assert await generation() == 1
        demo.process.send_signal(signal.SIGHUP)  # reload: the demo's lbd run moves to generation 2

        async def reloaded() -> bool:
            return await generation() == 2

        await wait_for(reloaded, what="generation 2 after SIGHUP to the demo")

        # SIGUSR1 (logrotate): the access log, moved away, is reopened under its name.
        async def logged() -> bool:
            assert (await http_request(port, "GET", "/"))[0] == 200
            return access.exists() and access.stat().st_size > 0

        await wait_for(logged, what="an access-log line")
        access.rename(tmp_path / "access.log.1")
        demo.process.send_signal(signal.SIGUSR1)
        await wait_for(logged, what="the access log reopened after SIGUSR1 to the demo")
        assert demo.process.poll() is None and pid_alive(child)
        code = await demo.stop()
    finally:
        demo.kill()
    assert code == 0, demo.output
    assert not pid_alive(child)


# -- the container's config --------------------------------------------------------------------------------


async def test_container_config_serves_and_keeps_registrations(lbd: LbdFactory, tmp_path: Path) -> None:
    """conf/container.yaml as the image runs it (ports and the volume moved for the test machine)."""
    text = (ROOT / "conf/container.yaml").read_text()
    config = yaml.safe_load(text)
    port = free_port()
    listener = config["load_balancers"][0]["listeners"][0]
    assert (listener["address"], listener["port"]) == ("0.0.0.0", 8080)  # reachable from outside
    listener["port"] = port
    volume = tmp_path / "volume"
    volume.mkdir()
    assert config["state_dir"] == "/var/lib/lbd"
    config["state_dir"] = str(volume)
    proc = lbd(config, start=False)
    # The admin API (the rule's target) moves with the admin port the harness picks.
    config["target_groups"][0]["targets"][0]["port"] = proc.admin_port
    proc.write_config(config)
    proc.start()
    await proc.wait_ready()
    status, _, body = await http_request(port, "GET", "/")
    assert status == 200 and b"lbd is running in a container" in body
    status, _, body = await http_request(port, "GET", "/readyz")  # forwarded to the admin API
    assert status == 200 and json.loads(body)["status"] == "ready"
    status, _ = await proc.admin(
        "POST", "/v1/target-groups/admin/targets", b'{"targets": [{"id": "127.0.0.2"}]}'
    )
    assert status == 400  # no port: the group has none to give
    registration = json.dumps({"targets": [{"id": "127.0.0.2", "port": 9901}]}).encode()
    status, _ = await proc.admin("POST", "/v1/target-groups/admin/targets", registration)
    assert status == 200
    assert list(volume.iterdir()), "nothing written to the state volume"
    # A restart with the same volume: the registration is back.
    proc.stop()
    proc.start()
    await proc.wait_ready()
    status, body = await proc.admin("GET", "/v1/target-groups/admin/targets")
    assert status == 200
    assert {t["id"] for t in body["targets"]} == {"127.0.0.1", "127.0.0.2"}


# -- install -------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_wheel_installs_into_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    """python -m build makes a wheel that installs into a fresh venv (as under /opt/lbd) and runs."""
    source = tmp_path / "src"  # a copy, so build/ and *.egg-info do not land in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    # Without the checkout's build products: the wheel compiles its own data path.
    products = shutil.ignore_patterns("__pycache__", "*.so", "*.c", "*.html")

    def ignore(directory: str, names: list[str]) -> set[str]:
        skipped = set(products(directory, names))
        if Path(directory).name == "static":  # the console's page is package data, not Cython's annotation
            skipped = {name for name in skipped if not name.endswith(".html")}
        return skipped

    shutil.copytree(ROOT / "lbd", source / "lbd", ignore=ignore)
    tools = tmp_path / "tools"
    subprocess.run([sys.executable, "-m", "venv", str(tools)], check=True)
    subprocess.run([str(tools / "bin/pip"), "install", "--quiet", "build"], check=True)
    built = subprocess.run(
        [
            str(tools / "bin/python"),
            "-m",
            "build",
            "--wheel",
            "--outdir",
            str(tmp_path / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert "deprecated" not in built.stdout + built.stderr  # the licence table warning, for one
    (wheel,) = (tmp_path / "dist").glob("lbd-*.whl")
    venv = tmp_path / "opt-lbd"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin/pip"), "install", "--quiet", str(wheel)], check=True)
    # Where this machine has a compiler, the wheel carries the compiled data path and runs it.
    compiled = build.data_path() == "compiled"
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("lbd/http/proxy.") and n.endswith(".so") for n in names) == compiled, names
    assert "lbd/http/proxy.pxd" in names
    assert {"lbd/console/static/index.html", "lbd/console/static/console.js"} <= set(names)
    for args in (["version"], ["--version"]):
        result = subprocess.run([str(venv / "bin/lbd"), *args], capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0] == "lbd 0.1.0"
        if args == ["version"]:
            assert result.stdout.splitlines()[1] == f"data path: {build.data_path()}"
    check = subprocess.run(
        [str(venv / "bin/lbd"), "check", "-c", str(ROOT / "conf/lbd.yaml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr


# The import name of each declared dependency, where it differs from the distribution's.
IMPORT_NAMES = {
    "pyyaml": "yaml",
    "prometheus-client": "prometheus_client",
    "dnspython": "dns",
    "pyjwt": "jwt",
    "wsproto": "wsproto",
}


def test_every_declared_dependency_is_imported_by_lbd() -> None:
    """Nothing is declared that nothing imports (each one is a download for every install)."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    declared = tomllib.loads(pyproject)["project"]["dependencies"]
    names = [re.split(r"[<>=\[ ;]", d.strip())[0].lower() for d in declared]
    source = "\n".join(path.read_text() for path in (ROOT / "lbd").rglob("*.py"))
    for name in filter(None, names):
        module = IMPORT_NAMES.get(name, name)
        imported = re.search(rf"^\s*(?:import|from) {module}\b", source, re.M)
        assert imported, f"{name} is declared, never imported"
