"""Web ACL changes without a reload: the admin API's /v1/web-acls endpoints and IP set files.

Both end the same way: the supervisor checks the new ACL (every error named by its key path; an invalid
one changes nothing and the old ACL keeps serving), then moves every worker to it at once with the same
two-phase prepare/commit as a reload (lbd/supervisor.py ``_deploy``), carrying the replaced ACLs in the
prepare message. Replacements survive a reload while the file's own definition of that ACL is unchanged;
editing the ACL in the file and reloading makes the file's version the one in force again.

IP set files are checked once a second (size and modification time); a file that no longer parses is
logged and the ACL keeps the addresses it had.

With a state_dir (or systemd's STATE_DIRECTORY), every accepted replacement is also written there
(lbd/config/web_acl_state.py: the replacement and the digest of the file's definition it overrides), so
that a restart puts it back in force while the file's definition of that ACL is the one it overrode: the
same rule as a reload. Restored replacements are checked by the validating child and held as records, so
restoring them loads no schema into the supervisor.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from lbd import validator
from lbd.admin.server import AdminRequest, AdminResponse, Router
from lbd.config.issues import ConfigError
from lbd.config.plain import replaced, thaw_value
from lbd.config.web_acl_reading import ip_set_files, read_ip_set_files
from lbd.config.web_acl_state import STATE_FILE, file_digest, parse_state, state_bytes
from lbd.upstream.registry import state_directory, write_atomically

if TYPE_CHECKING:
    from pathlib import Path

    from lbd.config.schema import Config
    from lbd.config.web_acls import WebAcl
    from lbd.validator import LoadedConfig

log = logging.getLogger("lbd.admin")

Deploy = Callable[[], Awaitable[list[str]]]  # moves the workers to the current overrides; errors, or []


class Host(Protocol):
    """What this needs of the supervisor."""

    web_acl_overrides: dict[str, Any]
    _reload_lock: asyncio.Lock
    current: LoadedConfig

    @property
    def config(self) -> Config: ...

    @property
    def file_web_acls(self) -> dict[str, dict[str, Any]]:
        """The file's web ACLs as ``dump`` writes them, by name (from the validating child)."""
        ...

    async def redeploy(self) -> list[str]: ...


def dump(acl: WebAcl) -> dict[str, Any]:
    from lbd.config.web_acls import dump  # (loaded already: acl is one of its models)

    return dump(acl)


class WebAclControl:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.base: dict[str, dict[str, Any]] = {}  # the file's definition each override replaced
        self._files: dict[str, tuple[int, int] | None] = {}
        # Restored from the state file, checked by the validating child: name -> (the override, its record).
        self.restored: dict[str, tuple[dict[str, Any], Any]] = {}
        directory = state_directory(host.config)  # none: nothing is written (nor read back)
        self.state_file: Path | None = directory / STATE_FILE if directory is not None else None

    def add_routes(self, router: Router) -> None:
        router.add("GET", "/v1/web-acls", self.list_acls)
        router.add("GET", "/v1/web-acls/{name}", self.get_acl)
        router.add("PUT", "/v1/web-acls/{name}", self.put_acl)
        router.add("PUT", "/v1/web-acls/{name}/ip-sets/{set}", self.put_ip_set)

    # -- what is in force ------------------------------------------------------------------------------

    def effective(self) -> tuple[WebAcl, ...]:
        """The ACLs in force: the file's (records, lbd/validator.py) with the admin API's replacements (the
        schema's models: they load only once an ACL has been replaced)."""
        acls = self.host.config.web_acls
        if not self.host.web_acl_overrides:
            return acls
        records = self._restored_records()
        if records is not None:
            return tuple(records.get(acl.name, acl) for acl in acls)
        from lbd.config.web_acls import parse_acl, replace_acl

        for index, acl in enumerate(acls):
            override = self.host.web_acl_overrides.get(acl.name)
            if override is not None:
                acls = replace_acl(acls, parse_acl(override, index))
        return acls

    def apply(self, config: Config) -> Config:
        """``config`` with the replacements in force in place of the file's ACLs, for a worker's prepare:
        the restored ones as the child checked them over this config (records, no schema), else checked
        here with the schema's models (``apply_overrides``: a reload's new file, an API change). Raises
        ConfigError when a replacement no longer fits ``config``."""
        if not self.host.web_acl_overrides:
            return config
        records = self._restored_records()
        if records is not None and config is self.host.config:
            return cast("Config", replaced(config, web_acls=self.effective()))
        from lbd.config.web_acls import apply_overrides

        return cast("Config", apply_overrides(config, self.host.web_acl_overrides))

    def _restored_records(self) -> dict[str, Any] | None:
        """Every override as its restored record, or None when one was not restored (or changed since)."""
        records = {}
        for name, override in self.host.web_acl_overrides.items():
            restored = self.restored.get(name)
            if restored is None or restored[0] != override:
                return None
            records[name] = restored[1]
        return records

    def models(self) -> tuple[WebAcl, ...]:
        """Every ACL in force as the schema's model, for the endpoints that show or replace them (the
        schema loads on the first such request, if there is an ACL)."""
        acls = self.host.config.web_acls
        if not acls:
            return ()
        from lbd.config.web_acls import parse_acl

        files, overrides = self.host.file_web_acls, self.host.web_acl_overrides
        return tuple(
            parse_acl(overrides.get(acl.name) or files[acl.name], index) for index, acl in enumerate(acls)
        )

    def reconcile(self, new_file: dict[str, dict[str, Any]]) -> Callable[[], None]:
        """Before a reload: forget replacements of ACLs the new file (its ACLs as ``dump`` writes them)
        changed or dropped. Returns what puts them back, for a reload the workers refuse."""
        kept = (dict(self.host.web_acl_overrides), dict(self.base), dict(self.restored))

        def restore() -> None:
            self.host.web_acl_overrides.clear()
            self.host.web_acl_overrides.update(kept[0])
            self.base, self.restored = kept[1], kept[2]
            if dropped:
                self._save()

        current = new_file
        dropped = False
        for name in list(self.host.web_acl_overrides):
            if current.get(name) != self.base.get(name):
                del self.host.web_acl_overrides[name]
                self.base.pop(name, None)
                self.restored.pop(name, None)
                dropped = True
                log.info(
                    "web ACL %s: the file's new definition replaces the one set through the admin API", name
                )
        if dropped:
            self._save()
        return restore

    # -- across restarts (state_dir) -------------------------------------------------------------------

    async def restore(self) -> None:
        """At start, before the workers: the replacements saved in state_dir whose recorded digest is the
        digest of the file's definition now, and that pass a PUT's checks, are in force again. The others
        are dropped (the file wins), each logged once: the file is written again without them."""
        saved = self._read_state()
        if not saved:
            return
        files = self.host.file_web_acls
        matching: dict[str, Any] = {}
        for name, entry in saved.items():
            if name not in files:
                self._dropped(name, "the file no longer defines that web ACL")
            elif file_digest(files[name]) != entry["file_sha256"]:
                self._dropped(name, "the file's definition of it has changed since")
            else:
                matching[name] = entry["acl"]
        try:
            answers = await validator.web_acls_async(self.host.current.path, matching) if matching else {}
        except (OSError, ConfigError) as exc:
            log.error("web ACL changes in %s not restored; starting from the file: %s", self.state_file, exc)
            return
        for name, answer in answers.items():
            if "errors" in answer:
                self._dropped(name, "it is not valid: " + "; ".join(answer["errors"]))
                continue
            self.host.web_acl_overrides[name] = answer["acl"]
            self.base[name] = files[name]
            self.restored[name] = (answer["acl"], thaw_value(answer["record"]))
            log.info(
                "web ACL %s: the change made through the admin API is restored from %s", name, self.state_file
            )
        if len(self.restored) != len(saved):
            self._save()

    def _read_state(self) -> dict[str, dict[str, Any]]:
        """The state file's entries; none when there is no state_dir or file, or (logged) it is unreadable
        or invalid: lbd then starts from the file, and the next change through the API replaces it."""
        if self.state_file is None:
            return {}
        try:
            return parse_state(self.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:  # (UnicodeDecodeError and json's errors are ValueErrors)
            log.error(
                "web ACL state %s ignored (unreadable or invalid; starting from the file): %s",
                self.state_file,
                exc,
            )
            return {}

    def _dropped(self, name: str, reason: str) -> None:
        log.warning(
            "web ACL %s: the change made through the admin API is dropped (%s); the file's ACL is in force",
            name,
            reason,
        )

    def _save(self) -> str | None:
        """The replacements in force written to the state file (none without a state_dir); the error."""
        if self.state_file is None:
            return None
        try:
            write_atomically(self.state_file, state_bytes(self.host.web_acl_overrides, self.base))
        except OSError as exc:
            message = f"the change is in effect but could not be saved to {self.state_file}: {exc}"
            log.error("%s", message)
            return message
        return None

    # -- endpoints -------------------------------------------------------------------------------------

    async def list_acls(self, request: AdminRequest) -> AdminResponse:
        acls = []
        for acl in self.models():
            acls.append(
                {
                    "name": acl.name,
                    "default_action": acl.default_action.kind,
                    "associations": [a.model_dump(exclude_none=True) for a in acl.associations],
                    "rules": [
                        {
                            "name": r.name,
                            "priority": r.priority,
                            "action": r.action.kind,
                            "statement": r.statement.kind,
                        }
                        for r in sorted(acl.rules, key=lambda r: r.priority)
                    ],
                    "ip_sets": [
                        {"name": s.name, "addresses": len(s.addresses or ()), "file": s.file}
                        for s in acl.ip_sets
                    ],
                    "changed_through_api": acl.name in self.host.web_acl_overrides,
                }
            )
        return AdminResponse(200, {"web_acls": acls})

    def _find(self, name: str) -> tuple[int, WebAcl] | None:
        for index, acl in enumerate(self.models()):
            if acl.name == name:
                return index, acl
        return None

    async def get_acl(self, request: AdminRequest) -> AdminResponse:
        found = self._find(request.params["name"])
        if found is None:
            return AdminResponse(404, {"error": f"no web ACL named {request.params['name']!r}"})
        return AdminResponse(200, dump(found[1]))

    async def put_acl(self, request: AdminRequest) -> AdminResponse:
        """Replace a web ACL (rules, default action, IP sets ...): the body is the ACL, as in the config."""
        name = request.params["name"]
        found = self._find(name)
        if found is None:
            return AdminResponse(404, {"error": f"no web ACL named {name!r} (new ACLs come from the file)"})
        body = request.json()
        if not isinstance(body, dict):
            return AdminResponse(400, {"error": "the body must be a web ACL object, as in the config"})
        body = {"name": name, **body}
        if body["name"] != name:
            return AdminResponse(400, {"error": f"name: the body names {body['name']!r}, the path {name!r}"})
        return await self._replace(found[0], body)

    async def put_ip_set(self, request: AdminRequest) -> AdminResponse:
        """Replace one named IP set's addresses: body {"addresses": ["192.0.2.0/24", ...]}."""
        name, set_name = request.params["name"], request.params["set"]
        found = self._find(name)
        if found is None:
            return AdminResponse(404, {"error": f"no web ACL named {name!r}"})
        index, acl = found
        body = request.json()
        if not isinstance(body, dict) or set(body) != {"addresses"}:
            return AdminResponse(400, {"error": 'the body must be {"addresses": ["192.0.2.0/24", ...]}'})
        data = dump(acl)
        sets = data.get("ip_sets", [])
        at = next((k for k, s in enumerate(sets) if s["name"] == set_name), None)
        if at is None:
            known = ", ".join(s["name"] for s in sets) or "none"
            return AdminResponse(
                404, {"error": f"web ACL {name!r} has no ip_set named {set_name!r} (defined: {known})"}
            )
        sets[at] = {"name": set_name, "addresses": body["addresses"]}  # a file-backed set becomes inline
        return await self._replace(index, data)

    async def _replace(self, index: int, body: dict[str, Any]) -> AdminResponse:
        from lbd.config.web_acl_state import replacement_issues

        host = self.host
        acl, issues = replacement_issues(host.config, self.models(), body, index)
        if acl is None or issues:
            return AdminResponse(
                400,
                {"error": "invalid web ACL; the old one keeps serving", "errors": [str(i) for i in issues]},
            )
        async with host._reload_lock:
            previous = dict(host.web_acl_overrides)
            host.web_acl_overrides[acl.name] = dump(acl)
            errors = await host.redeploy()
            if errors:
                host.web_acl_overrides.clear()
                host.web_acl_overrides.update(previous)
                return AdminResponse(
                    500, {"error": "workers refused the change; the old ACL keeps serving", "errors": errors}
                )
            file_acl = host.file_web_acls.get(acl.name)
            if file_acl is not None:
                self.base[acl.name] = file_acl
            unsaved = self._save()
        log.info("web ACL %s: replaced through the admin API (%d rules)", acl.name, len(acl.rules))
        if unsaved is not None:
            return AdminResponse(500, {**dump(acl), "error": unsaved})
        return AdminResponse(200, dump(acl))

    # -- IP set files ----------------------------------------------------------------------------------

    async def watch_files(self, stopping: Callable[[], bool]) -> None:
        """Once a second: when an IP set file changed and still parses, every worker re-reads it."""
        self._files = self._stat_all()
        while not stopping():
            await asyncio.sleep(1.0)
            now = self._stat_all()
            if now == self._files:
                continue
            self._files = now
            acls = self.effective()
            _, issues = read_ip_set_files(acls)
            if issues:
                for issue in issues:
                    log.error("IP set file not applied; the old addresses stay in force: %s", issue)
                continue
            async with self.host._reload_lock:
                errors = await self.host.redeploy()
            for error in errors:
                log.error("IP set file change refused by a worker: %s", error)
            if not errors:
                log.info("IP set files changed; every worker uses the new addresses")

    def _stat_all(self) -> dict[str, tuple[int, int] | None]:
        seen: dict[str, tuple[int, int] | None] = {}
        for _, name in ip_set_files(self.effective()):
            try:
                info = os.stat(name)
            except OSError:
                seen[name] = None
                continue
            seen[name] = (info.st_mtime_ns, info.st_size)
        return seen
