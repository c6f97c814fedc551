"""A worker loads what its data path needs, and nothing else (issue 11, footprint).

The supervisor validates the config with pydantic and sends workers plain data (lbd/config/plain.py); h2,
the certificate tooling and AES-GCM load only for the listeners and stickiness that use them. These tests
read the modules the real processes of ``lbd run`` had loaded when they exited: a ``sitecustomize`` on the
test's PYTHONPATH writes ``sys.modules`` at exit (for the supervisor and each worker, which inherit it).
"""

from __future__ import annotations

import email.utils
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from lbd.config.loader import parse_config
from lbd.config.plain import Record, compact, thaw
from lbd.observe.stats import StatsRegistry
from lbd.routing.stickiness import http_date
from lbd.runtime import Snapshot
from tests.http_backend import HttpBackend
from tests.lbdproc import application_config, free_port, http_request

HOOK = """
import atexit, json, os, sys

def _dump():
    path = os.path.join(os.environ["LBD_TEST_MODULES"], f"{os.getpid()}.json")
    with open(path, "w") as out:
        json.dump({"argv": sys.argv, "modules": sorted(sys.modules)}, out)

atexit.register(_dump)
"""
# What a worker must not hold to serve plain HTTP/1.1.
NOT_FOR_HTTP = ("pydantic", "pydantic_core", "aiohttp", "yaml", "h2", "hyperframe", "cryptography")


def _top_level(modules: list[str]) -> set[str]:
    return {name.partition(".")[0] for name in modules}


async def _loaded_modules(
    tmp_path: Path, lbd: Any, config: dict[str, Any], port: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[set[str], set[str]]:
    """Run lbd on ``config``, send one request through it, stop it: (supervisor's, worker's) modules."""
    hook, out = tmp_path / "hook", tmp_path / "modules"
    hook.mkdir()
    out.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("LBD_TEST_MODULES", str(out))
    proc = lbd(config)
    await proc.wait_ready()
    status, _, body = await http_request(port, "GET", "/hello")
    assert status == 200, body
    proc.stop()
    assert proc.process.returncode == 0, proc.log
    dumps = [json.loads(path.read_text()) for path in out.glob("*.json")]
    workers = [d for d in dumps if any(arg.endswith(("lbd.worker", "worker.py")) for arg in d["argv"][:1])]
    supervisors = [d for d in dumps if "run" in d["argv"]]
    assert len(workers) == 1 and len(supervisors) == 1, [d["argv"] for d in dumps]
    return _top_level(supervisors[0]["modules"]), _top_level(workers[0]["modules"])


async def test_an_http_worker_loads_neither_pydantic_nor_aiohttp_nor_h2(
    tmp_path: Path, lbd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = await HttpBackend("b1").start()
    try:
        port = free_port()
        supervisor, worker = await _loaded_modules(
            tmp_path, lbd, application_config(port, [backend.port]), port, monkeypatch
        )
    finally:
        await backend.close()
    assert {"pydantic", "aiohttp", "yaml"} <= supervisor  # the hook sees what a process loaded
    assert "uvloop" in worker and "httptools" in worker
    assert sorted(set(NOT_FOR_HTTP) & worker) == []


async def test_a_listener_that_offers_h2_loads_h2_in_the_worker(
    tmp_path: Path, lbd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = await HttpBackend("b1").start()
    try:
        port = free_port()
        config = application_config(port, [backend.port])
        config["load_balancers"][0]["listeners"][0]["h2c"] = True
        _, worker = await _loaded_modules(tmp_path, lbd, config, port, monkeypatch)
    finally:
        await backend.close()
    assert "h2" in worker
    assert sorted({"pydantic", "aiohttp", "yaml"} & worker) == []


CONFIG = """
node: {zone: zone-a}
load_balancers:
  - name: web
    type: application
    listeners:
      - protocol: HTTP
        port: 8080
        default_actions: [{type: fixed-response, status_code: 404}]
        rules:
          - priority: 1
            conditions:
              - {field: query-string, values: [{key: a, value: "b*"}]}
              - {field: path-pattern, values: ["/api/*"]}
            actions: [{type: forward, target_groups: [{name: api, weight: 3}, {name: www}]}]
          - priority: 2
            conditions: [{field: host-header, values: [old.example.com]}]
            actions: [{type: redirect, status_code: HTTP_301, host: new.example.com}]
  - name: old
    type: classic
    listeners: [{protocol: TCP, port: 9000, instance_protocol: TCP, instance_port: 80}]
    instances: [{id: 127.0.0.1}]
target_groups:
  - name: api
    protocol: HTTP
    stickiness: {enabled: true}
    targets: [{id: 127.0.0.1, port: 81}]
  - name: www
    protocol: HTTP
    targets: [{id: 127.0.0.1, port: 82}]
"""


def test_a_snapshot_from_plain_records_is_the_one_from_the_models() -> None:
    from lbd.classic import expand

    config = expand(parse_config(CONFIG))
    plain = thaw(json.loads(json.dumps(compact(config))))  # as it crosses the control channel
    models = Snapshot.build(config, 1, StatsRegistry())
    records = Snapshot.build(plain, 1, StatsRegistry())
    assert list(records.listeners) == list(models.listeners)
    assert list(records.target_groups) == list(models.target_groups)
    for name, group in models.target_groups.items():
        assert [t.key for t in records.target_groups[name].targets] == [t.key for t in group.targets]
        assert (records.target_groups[name].sticky is None) == (group.sticky is None)
    listener = plain.load_balancers[0].listeners[0]
    assert isinstance(listener, Record)
    assert listener.rules[0].conditions[0].values[0].key == "a"
    assert listener.rules[0].actions[0].target_groups[1].weight == 1  # defaults filled in
    assert plain.load_balancers[1].listeners[0].default_actions[0].type == "forward"  # classic, expanded


def test_records_are_read_only_and_equal_by_their_fields() -> None:
    one = thaw({"node": {"zone": "a"}, "load_balancers": [{"name": "x"}]})
    two = thaw({"node": {"zone": "a"}, "load_balancers": [{"name": "x"}]})
    assert one == two and hash(one) == hash(two)
    assert one != thaw({"node": {"zone": "b"}, "load_balancers": [{"name": "x"}]})
    with pytest.raises(AttributeError):
        one.node = two.node  # type: ignore[misc]


def test_http_date_is_what_email_utils_writes() -> None:
    moments = [
        0,
        951782400,
        1709164800,
        2**31,
        4102444799,
        *(random.randrange(0, 2**34) for _ in range(2000)),
    ]
    for moment in moments:
        assert http_date(moment) == email.utils.formatdate(moment, usegmt=True), moment
