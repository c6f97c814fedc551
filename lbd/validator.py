"""The supervisor's config, validated in a short-lived child process: ``python -m lbd.validator FILE``.

FILE may be an etcd key (``etcd://HOST:PORT/KEY``, lbd/config/source.py): the child reads it itself, as
``lbd check`` does, and answers with the key's mod_revision besides; one whose members do not answer is
``"unavailable"`` (``lbd run`` exits 5 for it at start, not 2).

Validating a config takes the YAML parser, pydantic and the schema's models: about 16 MiB of RSS that a
supervisor would otherwise hold for as long as it runs, to use it at start and at each reload (issue 11,
footprint). So the supervisor runs ``load_for_run`` (lbd/config/preflight.py, the function ``lbd check``
runs: the same checks, the same messages naming key paths) in a child that prints its result as JSON and
exits, and keeps only the answer:

- the config as plain data (``compact``, lbd/config/plain.py, classic load balancers expanded), which the
  supervisor thaws into the read-only records the workers build their Snapshots from;
- the views of it the admin API shows that are the models' own dumps: ``GET /v1/load-balancers`` (its
  actions without their defaults) and each web ACL as the admin API writes it;
- or every error, as ``str(issue)`` of each ConfigIssue (what ``lbd check`` prints after the file's name).

``python -m lbd.validator --targets`` checks targets the same way (a JSON list on stdin): the admin API's
registrations and the state file's, so that these do not load the schema into the supervisor either;
``python -m lbd.validator --web-acls FILE`` the web ACL replacements saved in state_dir (a JSON object by
name on stdin), over FILE, as the admin API's PUT checks them (lbd/config/web_acl_state.py).

A child that dies without an answer (killed, out of memory) is an error too: a reload is then refused and
the old config keeps serving.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from lbd.config.issues import ConfigError, ConfigIssue
from lbd.config.plain import thaw
from lbd.config.source import SourceUnavailable

if TYPE_CHECKING:
    from lbd.config.schema import Config

COMMAND = (sys.executable, "-m", "lbd.validator")


@dataclass
class LoadedConfig:
    """A validated config as the supervisor holds it: records, never pydantic models."""

    config: Config
    path: str  # absolute, or an etcd key's URL (lbd/config/source.py)
    views: dict[str, Any] = field(default_factory=dict)
    revision: int = 0  # an etcd key's mod_revision: the version read


def answer(path: str) -> dict[str, Any]:
    """The child's side: validate ``path`` as ``lbd run`` must, into JSON data."""
    from lbd.config.plain import compact
    from lbd.config.preflight import load_for_run
    from lbd.config.web_acls import dump
    from lbd.observe.summary import load_balancers

    try:
        loaded = load_for_run(path)
    except ConfigError as exc:
        errors = [[issue.path, issue.message] for issue in exc.issues]
        return {"ok": False, "errors": errors, "unavailable": isinstance(exc, SourceUnavailable)}
    config = loaded.config
    views = {
        "load_balancers": load_balancers(config, 0)["load_balancers"],
        "web_acls": {acl.name: dump(acl) for acl in config.web_acls},
    }
    reply = {"ok": True, "path": loaded.path, "config": compact(config), "views": views}
    return {**reply, "revision": loaded.revision}


def loaded_from(reply: dict[str, Any]) -> LoadedConfig:
    """The supervisor's side: the child's answer as a LoadedConfig, or ConfigError with its issues."""
    if not reply.get("ok"):
        # An etcd source that did not answer is not an invalid config: lbd run exits 5 for it, not 2.
        error = SourceUnavailable if reply.get("unavailable") else ConfigError
        raise error([ConfigIssue(str(where), str(message)) for where, message in reply["errors"]])
    views = dict(reply["views"])
    return LoadedConfig(thaw(reply["config"]), str(reply["path"]), views, int(reply.get("revision", 0)))


def _parsed(code: int | None, out: bytes, err: bytes) -> LoadedConfig:
    if code != 0:
        detail = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {code}"]
        raise ConfigError.single("", f"the config could not be validated (validator: {detail[0]})")
    return loaded_from(json.loads(out))


def _checked(code: int | None, out: bytes, err: bytes) -> list[dict[str, Any]]:
    if code != 0:
        detail = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {code}"]
        raise OSError(f"the targets could not be validated (validator: {detail[0]})")
    return cast("list[dict[str, Any]]", json.loads(out))


def targets(items: list[Any]) -> list[dict[str, Any]]:
    """Targets checked in a child process (lbd/config/target_check.py), waiting for it (the state
    file's, at start)."""
    done = subprocess.run(
        [*COMMAND, "--targets"], input=json.dumps(items).encode(), capture_output=True, check=False
    )
    return _checked(done.returncode, done.stdout, done.stderr)


async def targets_async(items: list[Any]) -> list[dict[str, Any]]:
    """Targets checked in a child process (lbd/config/target_check.py) without blocking the event loop
    (the admin API's)."""
    return _checked(*await _child_with_input(["--targets"], items))


async def web_acls_async(path: str, replacements: dict[str, Any]) -> dict[str, Any]:
    """Web ACL replacements saved in state_dir (by name) checked over the file at ``path`` in a child
    process, as the admin API's PUT checks them (lbd/config/web_acl_state.py): by name, ``{"acl",
    "record"}`` or ``{"errors"}``. ConfigError when the file itself no longer validates."""
    code, out, err = await _child_with_input(["--web-acls", path], replacements)
    if code != 0:
        detail = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {code}"]
        raise OSError(f"the web ACLs could not be validated (validator: {detail[0]})")
    reply = json.loads(out)
    if not reply.get("ok"):
        raise ConfigError([ConfigIssue("", str(error)) for error in reply["errors"]])
    return cast("dict[str, Any]", reply["web_acls"])


async def _child_with_input(args: list[str], data: Any) -> tuple[int | None, bytes, bytes]:
    import asyncio  # (the supervisor's; the child itself runs no event loop)

    child = await asyncio.create_subprocess_exec(
        *COMMAND,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await child.communicate(json.dumps(data).encode())
    return child.returncode, out, err


def load(path: str) -> LoadedConfig:
    """Validate ``path`` in a child process, waiting for it (at start, before the event loop runs)."""
    done = subprocess.run([*COMMAND, path], capture_output=True, check=False)
    return _parsed(done.returncode, done.stdout, done.stderr)


async def load_async(path: str) -> LoadedConfig:
    """Validate ``path`` in a child process without blocking the event loop (reloads)."""
    import asyncio  # (the supervisor's; the child itself runs no event loop)

    child = await asyncio.create_subprocess_exec(
        *COMMAND, path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await child.communicate()
    return _parsed(child.returncode, out, err)


def read_token(config: Config) -> str | None:
    """The admin token (after ``load_for_run`` checked that the file reads and is not empty)."""
    name = config.admin.token_file
    return Path(name).read_text(encoding="utf-8").strip() if name else None


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--web-acls":  # saved replacements on stdin, by name
        from lbd.config.web_acl_state import checked_replacements

        sys.stdout.write(json.dumps(checked_replacements(sys.argv[2], json.load(sys.stdin))))
        return 0
    if len(sys.argv) != 2:
        print(
            "usage: python -m lbd.validator FILE | --targets < JSON | --web-acls FILE < JSON", file=sys.stderr
        )
        return 64
    if sys.argv[1] == "--targets":  # a JSON list of targets on stdin (the admin API's, the state file's)
        from lbd.config.target_check import checked_targets

        sys.stdout.write(json.dumps(checked_targets(json.load(sys.stdin))))
        return 0
    sys.stdout.write(json.dumps(answer(sys.argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
