"""The whole config from an etcd key (``-c etcd://HOST:PORT/KEY``), against a real etcd member.

``lbd run`` starts from the key and serves; a put reloads without SIGHUP; an invalid value or a deleted key
is refused as a bad file is (the old config keeps serving, the errors name the source and the key path);
etcd going away keeps the node serving, and a put made once it is back is reloaded. ``lbd check`` refuses
what ``lbd run`` would; an unreachable etcd is exit status 5 for ``lbd run``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lbd.config.issues import ConfigError
from lbd.config.loader import parse_config
from lbd.config.source import etcd_key
from lbd.upstream.registry import STATE_FILE, state_path
from tests.certs import self_signed
from tests.conftest import LbdFactory
from tests.etcd_server import Etcd
from tests.http_backend import HttpBackend
from tests.lbdproc import Lbd, application_config, free_port, http_request, wait_for

KEY = "/lbd/config"


def _config(port: int, backend: int, body: str, tmp_path: Path) -> dict[str, Any]:
    config = application_config(port, [backend])
    listener = config["load_balancers"][0]["listeners"][0]
    listener["rules"] = [
        {
            "priority": 1,
            "conditions": [{"field": "path-pattern", "values": ["/which"]}],
            "actions": [{"type": "fixed-response", "status_code": 200, "message_body": body}],
        }
    ]
    config["state_dir"] = str(tmp_path)  # relative paths and the state file: see docs/configuration.md
    return config


async def _put(etcd: Etcd, proc: Lbd, config: dict[str, Any], padding: int = 0) -> None:
    config.setdefault("admin", {})["listen"] = f"127.0.0.1:{proc.admin_port}"
    await etcd.put(KEY, yaml.safe_dump(config, sort_keys=False) + f"# {'x' * padding}\n")


async def _which(port: int) -> bytes:
    status, _, body = await http_request(port, "GET", "/which")
    assert status == 200
    return body


def _lbd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lbd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


async def test_lbd_runs_from_an_etcd_key_and_reloads_on_every_put(
    etcd: Etcd, lbd: LbdFactory, tmp_path: Path
) -> None:
    backend = await HttpBackend("b1").start()
    port = free_port()
    source = f"etcd://127.0.0.1:{free_port()},127.0.0.1:{etcd.client_port}{KEY}"  # the first is down
    proc = lbd({}, start=False)
    proc.source = source
    try:
        await _put(etcd, proc, _config(port, backend.port, "one", tmp_path))
        proc.start()
        await proc.wait_ready()
        assert await _which(port) == b"one"

        async def watching() -> bool:
            status, fleet = await proc.admin("GET", "/v1/fleet")
            return status == 200 and bool(fleet["config_source"]["watching"])

        await wait_for(watching, what="the key to be watched")  # (having read it: no reload for that)
        assert (await proc.readyz() or {})["generation"] == 1
        status, _, body = await http_request(port, "GET", "/")
        assert (status, body) == (200, b"hello from b1\n")  # forwarded to the target the key names

        # A put reloads every node, without SIGHUP (a value larger than aiohttp's default read buffer).
        await _put(etcd, proc, _config(port, backend.port, "two", tmp_path), padding=300_000)
        await proc.wait_generation(2)
        assert await _which(port) == b"two"

        # An invalid value is refused like an invalid file: the old config keeps serving, the errors
        # name the source and the key path, and the admin API says what the last watched reload came to.
        bad = _config(port, backend.port, "three", tmp_path)
        bad["load_balancers"][0]["listeners"][0]["port"] = 70000
        await _put(etcd, proc, bad)
        await wait_for(lambda: "load_balancers[0].listeners[0].port" in proc.log, what="the reload refused")
        assert f"reload rejected: {source}: load_balancers[0].listeners[0].port" in proc.log
        status, fleet = await proc.admin("GET", "/v1/fleet")
        watched = fleet["config_source"]
        assert (watched["key"], watched["watching"], watched["last_reload"]["ok"]) == (KEY, True, False)
        assert "load_balancers[0].listeners[0].port" in watched["last_reload"]["errors"][0]
        assert watched["seen_mod_revision"] > watched["serving_mod_revision"] > 0  # the put, the one before
        assert await _which(port) == b"two" and (await proc.readyz() or {})["generation"] == 2

        # A deleted key is refused too; POST /v1/reload reads the key again, with the same answer.
        await etcd.delete(KEY)
        await wait_for(lambda: f"the key {KEY} does not exist" in proc.log, what="the deletion refused")
        status, answer = await proc.admin("POST", "/v1/reload")
        assert (status, answer["errors"]) == (422, [f"the key {KEY} does not exist"])
        assert await _which(port) == b"two"

        # lbd status -c reads admin.listen from the key.
        await _put(etcd, proc, _config(port, backend.port, "four", tmp_path))
        await proc.wait_generation(3)
        assert await _which(port) == b"four"
        status_run = _lbd("status", "-c", source)
        assert status_run.returncode == 0, status_run.stderr

        # etcd down: the node keeps serving; back again, a put made then is reloaded.
        etcd.stop()
        await wait_for(lambda: "cannot watch the key" in proc.log, what="the watch to report etcd down")
        assert await _which(port) == b"four"
        etcd.start()
        await etcd.ready()
        await _put(etcd, proc, _config(port, backend.port, "five", tmp_path))
        await proc.wait_generation(4)
        assert await _which(port) == b"five"
        assert "etcd answers again" in proc.log
    finally:
        await backend.close()


async def test_lbd_check_and_run_refuse_what_the_key_holds(etcd: Etcd, tmp_path: Path) -> None:
    port = free_port()
    good = _config(port, free_port(), "one", tmp_path)
    await etcd.put(KEY, yaml.safe_dump(good))
    source = f"etcd://127.0.0.1:{etcd.client_port}{KEY}"
    checked = _lbd("check", "-c", source)
    assert checked.returncode == 0 and checked.stdout.startswith(f"{source}: OK"), checked

    bad = _config(port, free_port(), "one", tmp_path)
    bad["target_groups"][0]["colour"] = "blue"
    await etcd.put("/lbd/bad", yaml.safe_dump(bad, sort_keys=False))
    bad_source = f"etcd://127.0.0.1:{etcd.client_port}/lbd/bad"
    checked = _lbd("check", "-c", bad_source)
    assert checked.returncode == 2
    assert f"{bad_source}: target_groups[0].colour: " in checked.stderr  # (with its line in the value)
    run = _lbd("run", "-c", bad_source)  # lbd run refuses the same, before binding anything
    assert run.returncode == 2 and "target_groups[0].colour" in run.stderr, run.stderr

    missing = _lbd("check", "-c", f"etcd://127.0.0.1:{etcd.client_port}/lbd/none")
    assert missing.returncode == 2 and "the key /lbd/none does not exist" in missing.stderr

    # No member answers: lbd run exits 5 (not 2: the config is not known to be wrong; systemd restarts it).
    down = f"etcd://127.0.0.1:{free_port()}{KEY}"
    run = _lbd("run", "-c", down)
    assert run.returncode == 5 and "no etcd member answered" in run.stderr, run.stderr


async def test_an_etcds_key_is_read_over_https_with_the_server_certificate_checked(tmp_path: Path) -> None:
    cert, key = self_signed("etcd", ("127.0.0.1",)).write(tmp_path, "etcd")
    server = Etcd(tmp_path / "etcd-data", tls=(cert, key))
    server.start()
    try:
        await server.ready()
        await server.put(KEY, yaml.safe_dump(_config(free_port(), free_port(), "one", tmp_path)))
        source = f"etcds://127.0.0.1:{server.client_port}{KEY}"
        trusted = _lbd("check", "-c", source, env={"SSL_CERT_FILE": str(cert)})
        assert trusted.returncode == 0 and trusted.stdout.startswith(f"{source}: OK"), trusted
        untrusted = _lbd("check", "-c", source)  # the system's CAs do not know this certificate
        assert untrusted.returncode == 2 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr, untrusted
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("source", "endpoints", "key"),
    [
        ("etcd://127.0.0.1:2379/lbd/config", ("http://127.0.0.1:2379",), "/lbd/config"),
        ("etcds://a.example,b.example:2400/k", ("https://a.example:2379", "https://b.example:2400"), "/k"),
        ("etcd://[::1]:2379/lbd/with%20space", ("http://[::1]:2379",), "/lbd/with space"),
    ],
)
def test_an_etcd_source_names_its_members_and_key(source: str, endpoints: tuple[str, ...], key: str) -> None:
    parsed = etcd_key(source)
    assert (parsed.endpoints, parsed.key) == (endpoints, key)


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("etcd://127.0.0.1:2379", "names no key"),
        ("etcd://127.0.0.1:2379/", "names no key"),
        ("etcd://127.0.0.1:2379/k?timeout=1", "takes no query"),
        ("etcd://user:pw@127.0.0.1/k", "takes no user information"),
        ("etcd://127.0.0.1:99999/k", "member '127.0.0.1:99999' is not HOST[:PORT]"),
        ("etcd://h1,,h2/k", "member '' is not HOST[:PORT]"),
    ],
)
def test_a_malformed_etcd_source_says_what_is_wrong(source: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        etcd_key(source)
    assert str(caught.value).startswith(f"not an etcd key URL: it {reason}")


def test_the_state_file_of_a_config_in_etcd_is_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    config = parse_config("{}")
    assert state_path(config, f"etcd://127.0.0.1:2379{KEY}") == tmp_path / STATE_FILE
    assert state_path(config, str(tmp_path / "conf" / "lbd.yaml")) == tmp_path / "conf" / STATE_FILE
