"""Access keys through the admin API: create (the secret shown once), list, disable, change the allow
list, delete; every change installed in the workers before the answer, and kept across restarts."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from lbd.admin.access_keys import AccessKeyAdmin
from lbd.admin.server import AdminServer, Router, start_admin_server
from lbd.config.gateway_auth import IamAuthorizer
from lbd.control import Message
from lbd.gateway.access_keys import PROCESS_KEYS, AccessKeys, check_allow, load_access_keys
from lbd.gateway.auth.sigv4 import verify
from lbd.gateway.contracts import ALLOW, GatewayRequest
from lbd.worker import Worker
from tests.conftest import LbdFactory
from tests.lbdproc import application_config, free_port, http_request

CONFIG = IamAuthorizer(name="sigv4", type="IAM")


class Workers:
    """Stands in for the supervisor's workers: installs each published set, as a worker's handler does."""

    def __init__(self) -> None:
        self.keys = AccessKeys()
        self.messages: list[Message] = []

    async def publish(self, message: Message, reply_op: str) -> list[str]:
        self.messages.append(message)
        assert message["op"] == "access_keys" and reply_op == "access_keys_applied"
        self.keys = AccessKeys.from_json(message["keys"])
        return []


Env = tuple[AdminServer, Workers, Path]


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Env]:
    workers = Workers()
    keys = AccessKeyAdmin.open(tmp_path, workers.publish)
    router = Router()
    keys.register(router)
    server = await start_admin_server("127.0.0.1:0", router, None)
    yield server, workers, tmp_path
    await server.close()


async def call(server: AdminServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    payload = b"" if body is None else json.dumps(body).encode()
    status, _, answer = await http_request(server.port, method, path, payload)
    return status, json.loads(answer)


def signed_request(key_id: str, secret: str, method: str = "GET", path: str = "/pets/1") -> GatewayRequest:
    request = AWSRequest(method=method, url=f"http://api.test{path}")
    SigV4Auth(Credentials(key_id, secret), "execute-api", "us-east-1").add_auth(request)
    headers = {k.lower(): v for k, v in request.headers.items()}
    return GatewayRequest(
        method, path, "", {**headers, "host": "api.test"}, b"", "127.0.0.1", "pets", "prod", "$default"
    )


async def test_create_list_disable_change_and_delete(admin: Env) -> None:
    server, workers, directory = admin
    status, created = await call(
        server, "POST", "/v1/access-keys", {"allow": ["arn:aws:execute-api:*:*:pets/*/GET/*"]}
    )
    assert status == 201, created
    key_id, secret = created["access_key_id"], created["secret_access_key"]
    assert key_id.startswith("AKIA") and len(key_id) == 20 and len(secret) == 40
    # Installed in the workers before the answer: a request signed with it passes at once.
    assert verify(signed_request(key_id, secret), CONFIG, workers.keys, time.time()).outcome == ALLOW
    denied = verify(signed_request(key_id, secret, "POST"), CONFIG, workers.keys, time.time())
    assert denied.outcome == "ACCESS_DENIED"

    status, listed = await call(server, "GET", "/v1/access-keys")
    assert status == 200
    assert [k["access_key_id"] for k in listed["access_keys"]] == [key_id]
    assert "secret_access_key" not in json.dumps(listed) and secret not in json.dumps(listed)
    status, shown = await call(server, "GET", f"/v1/access-keys/{key_id}")
    assert status == 200 and shown["enabled"] is True and "secret_access_key" not in shown

    status, body = await call(server, "PATCH", f"/v1/access-keys/{key_id}", {"enabled": False})
    assert status == 200 and body["enabled"] is False
    result = verify(signed_request(key_id, secret), CONFIG, workers.keys, time.time())
    assert result.outcome == "INVALID_SIGNATURE"

    status, body = await call(server, "PATCH", f"/v1/access-keys/{key_id}", {"enabled": True, "allow": ["*"]})
    assert status == 200 and body["allow"] == ["*"]
    assert verify(signed_request(key_id, secret, "POST"), CONFIG, workers.keys, time.time()).outcome == ALLOW

    status, body = await call(server, "DELETE", f"/v1/access-keys/{key_id}")
    assert (status, body) == (200, {"access_key_id": key_id, "deleted": True})
    assert (
        verify(signed_request(key_id, secret), CONFIG, workers.keys, time.time()).outcome
        == "INVALID_SIGNATURE"
    )
    assert (await call(server, "DELETE", f"/v1/access-keys/{key_id}"))[0] == 404
    assert (await call(server, "GET", f"/v1/access-keys/{key_id}"))[0] == 404
    assert len(workers.messages) == 4
    assert len(load_access_keys(directory / "lbd-access-keys.json")) == 0


async def test_keys_are_saved_privately_and_restored(admin: Env) -> None:
    server, workers, directory = admin
    imported = {
        "access_key_id": "AKIAIOSFODNN7EXAMPLE",
        "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCY",
    }
    status, body = await call(
        server, "POST", "/v1/access-keys", {"allow": ["*"], "description": "ci", **imported}
    )
    assert status == 201 and body["secret_access_key"] == imported["secret_access_key"]
    assert (await call(server, "POST", "/v1/access-keys", {"allow": ["*"], **imported}))[0] == 409
    path = directory / "lbd-access-keys.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    reopened = AccessKeyAdmin.open(directory, workers.publish)
    key = reopened.keys.get(imported["access_key_id"])
    assert (
        key is not None and key.secret_access_key == imported["secret_access_key"] and key.description == "ci"
    )
    # What a restarted worker is sent first: the whole set, secrets included (over its private socketpair).
    assert reopened.message()["keys"] == [key.to_json()]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"allow": "*"},
        {"allow": ["pets/*"]},
        {"allow": ["arn:aws:execute-api:*:*:a b"]},
        {"allow": ["*"], "enabled": "yes"},
        {"allow": ["*"], "access_key_id": "lower-case"},
        {"allow": ["*"], "secret_access_key": "short"},
        {"allow": ["*"], "colour": "blue"},
        [1, 2],
    ],
)
async def test_bad_bodies_are_400_and_change_nothing(admin: Env, body: Any) -> None:
    server, workers, _ = admin
    status, answer = await call(server, "POST", "/v1/access-keys", body)
    assert status == 400 and answer["error"], answer
    assert workers.messages == []


def test_allow_patterns_are_checked() -> None:
    assert check_allow(["*", "arn:aws:execute-api:us-east-1:*:pets/prod/GET/*"]) == (
        "*",
        "arn:aws:execute-api:us-east-1:*:pets/prod/GET/*",
    )
    with pytest.raises(ValueError, match="at most"):
        check_allow(["*"] * 101)


async def test_lbd_serves_access_keys_and_keeps_them_across_a_restart(
    lbd: LbdFactory, tmp_path: Path
) -> None:
    port = free_port()
    config = application_config(port, [free_port()])
    config["state_dir"] = str(tmp_path / "state")
    proc = lbd(config, workers=2)
    await proc.wait_ready()
    status, created = await proc.admin("POST", "/v1/access-keys", json.dumps({"allow": ["*"]}).encode())
    assert status == 201, created
    status, _ = await proc.admin(
        "PATCH", f"/v1/access-keys/{created['access_key_id']}", b'{"enabled": false}'
    )
    assert status == 200
    proc.stop()
    saved = load_access_keys(tmp_path / "state" / "lbd-access-keys.json")
    assert [(k.access_key_id, k.enabled) for k in saved] == [(created["access_key_id"], False)]
    assert "access keys: worker" not in proc.log  # both workers acknowledged each change

    again = lbd(config, workers=1)
    await again.wait_ready()
    status, listed = await again.admin("GET", "/v1/access-keys")
    assert status == 200
    assert [(k["access_key_id"], k["enabled"]) for k in listed["access_keys"]] == [
        (created["access_key_id"], False)
    ]
    assert "1 access key(s) restored" in again.log


def test_a_worker_installs_the_set_it_is_sent_and_acknowledges_it() -> None:
    class Channel:
        def __init__(self) -> None:
            self.sent: list[Message] = []

        def send(self, message: Message) -> None:
            self.sent.append(message)

    worker = Worker(0, -1)
    channel = Channel()
    worker.control = channel  # type: ignore[assignment]
    key = {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "s" * 40, "allow": ["*"]}
    try:
        worker._on_message({"op": "access_keys", "generation": 7, "keys": [key]})
        installed = PROCESS_KEYS.get("AKIAIOSFODNN7EXAMPLE")
        assert installed is not None and installed.secret_access_key == "s" * 40
        assert channel.sent == [{"op": "access_keys_applied", "generation": 7}]
        worker._on_message({"op": "access_keys", "generation": 8, "keys": []})
        assert PROCESS_KEYS.get("AKIAIOSFODNN7EXAMPLE") is None
    finally:
        PROCESS_KEYS.install([])
