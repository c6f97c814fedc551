"""Web ACL changes made through the admin API outlast a restart when state_dir is set, through a real
``lbd run`` restarted on the same config and state_dir: the block stays in force (and restoring it loads no
schema into the supervisor), an edit of the file's ACL wins and the drop is logged, an unreadable state file
or an invalid entry is logged and lbd starts from the file, and without state_dir nothing is written."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from lbd.config.web_acl_state import STATE_FILE, file_digest, parse_state, state_bytes
from tests.conftest import LbdFactory
from tests.lbdproc import application_config, free_port, http_request, wait_for
from tests.test_supervisor_footprint import VALIDATION_ONLY
from tests.test_waf_alb import byte, rule, web_acl
from tests.test_worker_footprint import _top_level, record_modules


def protected(port: int, backend: Any, state_dir: Path | None) -> dict[str, Any]:
    config = application_config(port, [backend.port])
    config["web_acls"] = [web_acl([rule("file-rule", 1, byte("uri_path", "EXACTLY", "/file-blocked"))])]
    if state_dir is not None:
        config["state_dir"] = str(state_dir)
    return config


EMERGENCY = web_acl([rule("emergency", 1, byte("uri_path", "EXACTLY", "/emergency"))])


async def status_of(port: int, path: str) -> int:
    return (await http_request(port, "GET", path))[0]


async def restart(proc: Any) -> None:
    proc.stop()
    assert proc.process.returncode == 0, proc.log
    proc.start()
    await proc.wait_ready()


async def logged(proc: Any, text: str) -> None:
    await wait_for(lambda: text in proc.log, what=f"{text!r} in the log")


async def test_an_api_block_outlasts_a_restart_until_the_file_changes_that_acl(
    lbd: LbdFactory, http_backends: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = await http_backends("b1")
    port, state_dir = free_port(), tmp_path / "state"
    proc = lbd(protected(port, backend, state_dir))
    await proc.wait_ready()
    assert await status_of(port, "/emergency") == 200
    status, body = await proc.admin("PUT", "/v1/web-acls/protect", json.dumps(EMERGENCY).encode())
    assert status == 200, body
    assert await status_of(port, "/emergency") == 403
    state = state_dir / STATE_FILE
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert parse_state(state.read_text())["protect"]["acl"]["rules"][0]["name"] == "emergency"

    # A restart (same config, same state_dir): the API's block is in force again, before the first request;
    # the supervisor restores it from the validating child's answer without loading the schema.
    modules = record_modules(tmp_path, monkeypatch)
    await restart(proc)
    assert await status_of(port, "/emergency") == 403
    assert await status_of(port, "/file-blocked") == 200  # the API's rules replaced the file's
    assert "web ACL protect: the change made through the admin API is restored" in proc.log
    proc.stop()
    dumps = [json.loads(path.read_text()) for path in modules.glob("*.json")]
    supervisors = [d for d in dumps if "run" in d["argv"]]
    assert len(supervisors) == 1, [d["argv"] for d in dumps]
    assert sorted(set(VALIDATION_ONLY) & _top_level(supervisors[0]["modules"])) == []
    monkeypatch.delenv("LBD_TEST_MODULES")

    # Restored again by the next start, and kept by a reload of the unchanged file.
    proc.start()
    await proc.wait_ready()
    status, body = await proc.admin("POST", "/v1/reload")
    assert status == 200, body
    assert await status_of(port, "/emergency") == 403

    # The operator edits that ACL in the file and restarts: the file wins, and the drop is logged once
    # (the state file no longer holds it).
    edited = yaml.safe_load(proc.config_path.read_text())
    edited["web_acls"][0]["rules"] = [rule("edited", 1, byte("uri_path", "EXACTLY", "/edited"))]
    proc.write_config(edited)
    await restart(proc)
    assert await status_of(port, "/emergency") == 200
    assert await status_of(port, "/edited") == 403
    assert (
        "web ACL protect: the change made through the admin API is dropped "
        "(the file's definition of it has changed since)"
    ) in proc.log
    assert parse_state(state.read_text()) == {}
    status, listing = await proc.admin("GET", "/v1/web-acls")
    assert status == 200 and listing["web_acls"][0]["changed_through_api"] is False


async def test_an_unreadable_state_file_or_an_invalid_entry_is_logged_and_the_file_serves(
    lbd: LbdFactory, http_backends: Any, tmp_path: Path
) -> None:
    backend = await http_backends("b1")
    port, state_dir = free_port(), tmp_path / "state"
    state_dir.mkdir()
    state = state_dir / STATE_FILE
    state.write_text('{"version": 1, "web_acls": {"protect": ')  # cut short by a full disk, say
    proc = lbd(protected(port, backend, state_dir))
    await proc.wait_ready()
    await logged(proc, f"web ACL state {state} ignored")
    assert await status_of(port, "/file-blocked") == 403

    # Entries that do not go back: one the file no longer defines, one whose digest still matches but which
    # a PUT would refuse (checked by the validating child, with the PUT's key paths).
    status, file_acl = await proc.admin("GET", "/v1/web-acls/protect")
    assert status == 200
    invalid = web_acl(
        [rule("r", 1, {"regex_match": {"field": "uri_path", "pattern": "(", "transformations": ["NONE"]}})]
    )
    state.write_bytes(state_bytes({"protect": invalid, "gone": EMERGENCY}, {"protect": file_acl, "gone": {}}))
    await restart(proc)
    dropped = "the change made through the admin API is dropped"
    assert f"web ACL gone: {dropped} (the file no longer defines that web ACL)" in proc.log
    assert (
        "web ACL protect: the change made through the admin API is dropped "
        "(it is not valid: web_acls[0].rules[0].statement.regex_match.pattern:"
    ) in proc.log
    assert await status_of(port, "/file-blocked") == 403
    assert parse_state(state.read_text()) == {}

    # A change that cannot be saved (a directory where the file goes) is in force, and the PUT says so.
    state.unlink()
    state.mkdir()
    status, body = await proc.admin("PUT", "/v1/web-acls/protect", json.dumps(EMERGENCY).encode())
    assert status == 500 and "the change is in effect but could not be saved" in body["error"], body
    assert await status_of(port, "/emergency") == 403
    assert [p.name for p in state_dir.iterdir() if p.name.startswith(f".{STATE_FILE}")] == []  # no temporary


async def test_without_state_dir_api_changes_are_not_written(
    lbd: LbdFactory, http_backends: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    backend = await http_backends("b1")
    port = free_port()
    proc = lbd(protected(port, backend, None))
    await proc.wait_ready()
    status, body = await proc.admin("PUT", "/v1/web-acls/protect", json.dumps(EMERGENCY).encode())
    assert status == 200, body
    assert await status_of(port, "/emergency") == 403
    assert sorted(p.name for p in tmp_path.rglob(STATE_FILE)) == []


def test_the_recorded_digest_is_the_definition_s_whatever_its_key_order() -> None:
    acl = web_acl([rule("r", 1, byte("uri_path", "EXACTLY", "/x"))])
    reordered = dict(reversed(list(acl.items())))
    assert file_digest(acl) == file_digest(reordered)
    assert file_digest(acl) != file_digest({**acl, "default_action": "block"})
    saved = parse_state(state_bytes({"protect": EMERGENCY}, {"protect": acl}).decode())
    assert saved == {"protect": {"file_sha256": file_digest(acl), "acl": EMERGENCY}}


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '{"version": 2, "web_acls": {}}',
        '{"version": 1, "web_acls": []}',
        '{"version": 1, "web_acls": {"protect": {"acl": {}}}}',
        '{"version": 1, "web_acls": {"protect": {"file_sha256": "ab", "acl": []}}}',
    ],
)
def test_a_state_file_of_the_wrong_shape_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"web_acls|web ACL state"):
        parse_state(text)
