"""The registrations state file (runtime RegisterTargets / DeregisterTargets): written 0600 through a
fresh temporary file, so that nothing planted beside it can redirect the write; and the target keys the
admin API's DELETE path accepts."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from lbd.upstream.registry import STATE_FILE, Registry, load_registry, parse_target_key, save_registry


def registry_with_one_target() -> Registry:
    registry = Registry()
    target = {"id": "10.0.0.7", "port": 8080, "zone": "zone-a", "weight": 1}
    registry.added["web"] = {"10.0.0.7:8080": target}
    return registry


def test_state_file_is_private_and_a_planted_symlink_redirects_nothing(tmp_path: Path) -> None:
    state_dir, outside = tmp_path / "state", tmp_path / "outside"
    state_dir.mkdir()
    outside.mkdir()
    victim = outside / "victim"
    victim.write_text("untouched\n")
    missing = outside / "created-by-lbd"
    # The names the old code wrote through (<state file>.tmp), and the likely variants.
    os.symlink(victim, state_dir / f"{STATE_FILE}.tmp")
    os.symlink(missing, state_dir / f".{STATE_FILE}.tmp")
    path = state_dir / STATE_FILE
    path.write_text("{}")
    path.chmod(0o644)  # an older file with a wider mode is replaced, not kept

    save_registry(registry_with_one_target(), path)

    assert victim.read_text() == "untouched\n" and not missing.exists()
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not path.is_symlink()
    assert json.loads(path.read_text())["added"]["web"][0]["id"] == "10.0.0.7"
    assert load_registry(path).added == registry_with_one_target().added
    # No temporary file is left behind: only the state file and the planted links.
    assert sorted(p.name for p in state_dir.iterdir()) == sorted(
        [STATE_FILE, f"{STATE_FILE}.tmp", f".{STATE_FILE}.tmp"]
    )


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    save_registry(registry_with_one_target(), path)
    before = path.read_text()
    broken = registry_with_one_target()
    broken.added["web"]["10.0.0.7:8080"]["port"] = object()  # not JSON-serialisable: fails before rename
    with pytest.raises(TypeError):
        save_registry(broken, path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("127.0.0.1:8080", "127.0.0.1:8080"),
        ("api.internal:443", "api.internal:443"),
        ("[::1]:8080", "::1:8080"),
        ("::1:8080", "::1:8080"),
        ("[fd00::7]:1", "fd00::7:1"),
    ],
)
def test_target_keys_from_the_admin_path(text: str, key: str) -> None:
    assert parse_target_key(text) == key


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1",
        "127.0.0.1:",
        ":80",
        "host:0",
        "host:70000",
        "host:x",
        "[::1:80",
        "::1]:80",
        "[10.0.0.1]:80",
        "[]:80",
    ],
)
def test_bad_target_keys_are_refused_with_the_reason(text: str) -> None:
    with pytest.raises(ValueError, match=r"target .*: (write it as id:port|only an IPv6 address)"):
        parse_target_key(text)
