"""How the WAF engine reads a web ACL: statement kinds and parts, the walk over nested statements, IP set
files; without pydantic.

Workers build their engines from plain records (lbd/config/plain.py), the supervisor and tests from the
models of lbd/config/web_acls.py: both have the same field names, so these functions read either. A
statement is a mapping with exactly one key naming its type, as WAF's JSON is (AWS WAF Developer Guide,
"Rule statements"); ``and``, ``or`` and ``not`` are the fields ``and_``, ``or_`` and ``not_``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lbd.config.issues import ConfigIssue

if TYPE_CHECKING:
    from lbd.config.web_acls import Actions, IpSetReference, Statement, WebAcl

BODY_LIMIT = 8 * 1024  # what WAF inspects of an ALB request body (AWS WAF: "Body inspection size limits")
STATEMENTS = (
    "byte_match",
    "regex_match",
    "size_constraint",
    "ip_set",
    "label_match",
    "rate_based",
    "and",
    "or",
    "not",
)


def statement_part(statement: Statement, name: str) -> Any:
    """The statement's ``name`` part (``and``, ``or``, ``not`` included), or None."""
    return getattr(statement, name + "_" if name in ("and", "or", "not") else name)


def statement_kind(statement: Statement) -> str:
    return next(name for name in STATEMENTS if statement_part(statement, name) is not None)


def action_kind(action: Actions) -> str:
    return "allow" if action.allow is not None else "block" if action.block is not None else "count"


def walk(statement: Statement, path: str) -> Iterator[tuple[str, Statement]]:
    """Every statement inside ``statement`` (itself first), with its key path."""
    yield path, statement
    for name in ("and", "or"):
        parts = statement_part(statement, name)
        for index, part in enumerate(parts or ()):
            yield from walk(part, f"{path}.{name}[{index}]")
    if statement.not_ is not None:
        yield from walk(statement.not_, f"{path}.not")
    if statement.rate_based is not None and statement.rate_based.scope_down is not None:
        yield from walk(statement.rate_based.scope_down, f"{path}.rate_based.scope_down")


def ip_set_refs(statement: Statement, path: str) -> Iterator[tuple[str, IpSetReference]]:
    for sub_path, sub in walk(statement, path):
        if sub.ip_set is not None:
            yield f"{sub_path}.ip_set", sub.ip_set


def ip_set_files(acls: tuple[WebAcl, ...]) -> Iterator[tuple[str, str]]:
    """(key path, file) of every IP set read from a file."""
    for i, acl in enumerate(acls):
        for k, ip_set in enumerate(acl.ip_sets):
            if ip_set.file is not None:
                yield f"web_acls[{i}].ip_sets[{k}].file", ip_set.file
        for r, rule in enumerate(acl.rules):
            for path, ref in ip_set_refs(rule.statement, "statement"):
                if ref.file is not None:
                    yield f"web_acls[{i}].rules[{r}].{path}.file", ref.file


def parse_ip_set_file(text: str) -> tuple[str, ...]:
    """An IP set file: one CIDR (or address) per line; blank lines and ``#`` comments ignored."""
    cidrs: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.partition("#")[0].strip()
        if not entry:
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"line {number}: not an IPv4 or IPv6 CIDR: {entry!r}") from None
        cidrs.append(entry)
    return tuple(cidrs)


def read_ip_set_files(acls: tuple[WebAcl, ...]) -> tuple[dict[str, tuple[str, ...]], list[ConfigIssue]]:
    """The CIDRs of every IP set file, by file name; and what could not be read, by key path."""
    found: dict[str, tuple[str, ...]] = {}
    issues: list[ConfigIssue] = []
    for path, name in ip_set_files(acls):
        if name in found:
            continue
        try:
            found[name] = parse_ip_set_file(Path(name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            issues.append(ConfigIssue(path, f"{name}: {reason}"))
    return found, issues
