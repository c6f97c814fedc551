"""Web ACLs replaced through the admin API, kept across restarts in state_dir (docs/waf.md).

The state file holds, for each web ACL the admin API replaced, the replacement (as the admin API writes
it) and the SHA-256 of the file's definition of that ACL it overrides. At start the supervisor puts back in
force each replacement whose recorded digest is still the digest of the file's definition, after the
checks an admin API PUT makes (``replacement_issues``); the others are dropped: the file wins, as it does
for a reload (lbd/admin/web_acls.py).

Those checks take the schema's models, so they run in the supervisor's validating child
(``python -m lbd.validator --web-acls FILE``, ``checked_replacements``), which answers with each ACL as
plain data: the supervisor restores them without loading pydantic (issue 11, footprint). The module's own
imports are light for that reason; the schema is imported inside the child's functions.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lbd.config.issues import ConfigIssue
    from lbd.config.schema import Config
    from lbd.config.web_acls import WebAcl

STATE_FILE = "lbd-web-acls.json"
VERSION = 1


def file_digest(definition: dict[str, Any]) -> str:
    """The SHA-256 of a file's web ACL as the admin API writes it (``dump``), keys sorted: the same
    definition has the same digest whatever order the file wrote its keys in."""
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def state_bytes(replacements: dict[str, dict[str, Any]], file_acls: dict[str, dict[str, Any]]) -> bytes:
    """The state file: each replacement with the digest of the file's definition it overrides."""
    entries = {
        name: {"file_sha256": file_digest(file_acls[name]), "acl": acl}
        for name, acl in sorted(replacements.items())
        if name in file_acls
    }
    return (json.dumps({"version": VERSION, "web_acls": entries}, indent=2) + "\n").encode()


def parse_state(text: str) -> dict[str, dict[str, Any]]:
    """The saved entries by ACL name; ValueError (json's too) says what is wrong with the file."""
    data = json.loads(text)
    if (
        not isinstance(data, dict)
        or data.get("version") != VERSION
        or not isinstance(data.get("web_acls"), dict)
    ):
        raise ValueError(f'not a web ACL state file (expected {{"version": {VERSION}, "web_acls": {{...}}}})')
    entries: dict[str, dict[str, Any]] = data["web_acls"]
    for name, entry in entries.items():
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("file_sha256"), str)
            or not isinstance(entry.get("acl"), dict)
        ):
            raise ValueError(f'web_acls.{name}: expected {{"file_sha256": "...", "acl": {{...}}}}')
    return entries


# -- the validating child's side (the schema loaded) ---------------------------------------------------


def replacement_issues(
    config: Config, acls: tuple[WebAcl, ...], body: Any, index: int
) -> tuple[WebAcl | None, list[ConfigIssue]]:
    """A replacement for ``web_acls[index]`` checked as the admin API's PUT checks it: the model, strict as
    the file is; then with ``acls`` (those in force) the names and associations (``cross_check``); and its
    IP set files readable. Every issue is named by its key path from ``web_acls[index]``."""
    from lbd.config.issues import ConfigError
    from lbd.config.web_acl_reading import read_ip_set_files
    from lbd.config.web_acls import cross_check, parse_acl, replace_acl

    try:
        acl = parse_acl(body, index)
    except ConfigError as exc:
        return None, list(exc.issues)
    issues = [
        *cross_check(
            replace_acl(acls, acl),
            {lb.name: lb.type for lb in config.load_balancers},
            {api.name: api.protocol for api in config.apis},
        )
    ]
    _, unreadable = read_ip_set_files((acl,))
    issues += [i._replace(path=i.path.replace("web_acls[0]", f"web_acls[{index}]", 1)) for i in unreadable]
    return acl, issues


def checked_replacements(path: str, bodies: dict[str, Any]) -> dict[str, Any]:
    """Saved replacements (by ACL name) checked over the config at ``path``, in turn, each against the
    file's ACLs and the replacements kept before it. Answers, by name, ``{"acl": ..., "record": ...}``
    (the admin API's form and the plain data a record thaws from) or ``{"errors": [...]}``."""
    from lbd.config.issues import ConfigError
    from lbd.config.plain import melt
    from lbd.config.preflight import load_for_run
    from lbd.config.web_acls import dump, replace_acl

    try:
        config = load_for_run(path).config
    except ConfigError as exc:
        return {"ok": False, "errors": [str(issue) for issue in exc.issues]}
    acls = config.web_acls
    answers: dict[str, Any] = {}
    for name, body in bodies.items():
        index = next((i for i, acl in enumerate(acls) if acl.name == name), None)
        if index is None:
            answers[name] = {"errors": [f"web_acls: the file defines no web ACL named {name!r}"]}
            continue
        if body.get("name") != name:
            answers[name] = {"errors": [f"web_acls[{index}].name: the saved ACL names {body.get('name')!r}"]}
            continue
        acl, issues = replacement_issues(config, acls, body, index)
        if acl is None or issues:
            answers[name] = {"errors": [str(issue) for issue in issues]}
            continue
        acls = replace_acl(acls, acl)
        answers[name] = {"acl": dump(acl), "record": melt(acl)}
    return {"ok": True, "web_acls": answers}
