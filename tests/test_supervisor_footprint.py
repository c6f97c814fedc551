"""The resident supervisor holds neither yaml nor pydantic nor the schema (issue 11, footprint).

``lbd run`` validates its config in a short-lived child (lbd/validator.py) at start and on every reload,
and keeps the answer as plain records. These tests read the modules the real supervisor had loaded when it
exited (the ``sitecustomize`` hook of tests/test_worker_footprint.py), after it started, served, reloaded a
good file (SIGHUP), refused a bad one (admin API), checked a target registration and answered the console's
endpoints; and check that each did what it says (the new generation serves, the refused file's errors and
the refused target's name their key paths).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.http_backend import HttpBackend
from tests.lbdproc import application_config, free_port, http_request
from tests.test_worker_footprint import _loaded_modules

# Loaded only by the validating child: a supervisor that imports any of them holds ~16 MiB more.
VALIDATION_ONLY = ("yaml", "pydantic", "pydantic_core", "annotated_types")


def _fixed(config: dict[str, Any], body: str) -> dict[str, Any]:
    listener = config["load_balancers"][0]["listeners"][0]
    listener["rules"] = [
        {
            "priority": 1,
            "conditions": [{"field": "path-pattern", "values": ["/fixed"]}],
            "actions": [{"type": "fixed-response", "status_code": 200, "message_body": body}],
        }
    ]
    return config


async def test_the_supervisor_validates_at_start_and_reload_without_pydantic_or_yaml(
    tmp_path: Path, lbd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = await HttpBackend("b1").start()
    port, spare = free_port(), free_port()
    config = _fixed(application_config(port, [backend.port]), "one")
    proc: Any = None

    def started(config: dict[str, Any]) -> Any:
        nonlocal proc
        proc = lbd(config)
        return proc

    async def exchange() -> None:
        assert proc is not None
        status, _, body = await http_request(port, "GET", "/fixed")
        assert (status, body) == (200, b"one")
        # A good file by SIGHUP: the new generation serves.
        proc.write_config(_fixed(application_config(port, [backend.port]), "two"))
        proc.signal(signal.SIGHUP)
        await proc.wait_generation(2)
        status, _, body = await http_request(port, "GET", "/fixed")
        assert (status, body) == (200, b"two")
        # A bad file through the admin API: refused with its key paths, the old config keeps serving.
        bad = _fixed(application_config(port, [backend.port]), "three")
        bad["load_balancers"][0]["listeners"][0]["port"] = 70000
        bad["target_groups"][0]["colour"] = "blue"
        proc.write_config(bad)
        status, answer = await proc.admin("POST", "/v1/reload")
        assert status == 422 and answer["reloaded"] is False and answer["generation"] == 2, answer
        errors = "\n".join(answer["errors"])
        assert "load_balancers[0].listeners[0].port" in errors and "target_groups[0].colour" in errors
        status, _, body = await http_request(port, "GET", "/fixed")
        assert (status, body) == (200, b"two")
        # Registrations through the admin API are checked with the schema's model, in the child too.
        bad = json.dumps({"targets": [{"id": "127.0.0.1", "port": 70000}]}).encode()
        status, answer = await proc.admin("POST", "/v1/target-groups/web/targets", bad)
        assert (status, answer["errors"]) == (
            400,
            ["targets[0].port: Input should be less than or equal to 65535"],
        )
        good = json.dumps({"targets": [{"id": "127.0.0.1", "port": spare}]}).encode()
        status, answer = await proc.admin("POST", "/v1/target-groups/web/targets", good)
        assert status == 200 and answer["registered"][0]["weight"] == 1, answer  # the model's default
        # The views the console reads, from the records the supervisor holds.
        status, views = await proc.admin("GET", "/v1/load-balancers")
        assert status == 200 and views["generation"] == 3  # (the registration made one)
        rule = views["load_balancers"][0]["listeners"][0]["rules"][0]
        assert rule["actions"][0] == {"type": "fixed-response", "status_code": 200, "message_body": "two"}
        for path in ("/v1/summary", "/v1/target-groups", "/v1/stats", "/v1/fleet", "/v1/web-acls"):
            status, _ = await proc.admin("GET", path)
            assert status == 200, path
        status, _, metrics = await http_request(proc.admin_port, "GET", "/metrics")
        assert status == 200 and b"lbd_requests" in metrics

    try:
        supervisor, worker = await _loaded_modules(
            tmp_path, started, config, port, monkeypatch, exchange=exchange
        )
    finally:
        await backend.close()
    assert "lbd" in supervisor and "aiohttp" in supervisor  # the hook saw the supervisor's modules
    assert sorted(set(VALIDATION_ONLY) & supervisor) == []
    assert sorted(set(VALIDATION_ONLY) & worker) == []
