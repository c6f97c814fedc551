"""Imports flow one way: the pure layers import nothing from the I/O layers above them.

Routing (rules, actions, stickiness) is pure logic over the config: it must not import the HTTP proxy, the
runtime Snapshot, listeners or upstream connections, not even for type checking, so that it can be tested
and reasoned about without them (and compiled without an import cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "lbd"
# package -> the lbd packages it may import (besides itself)
ALLOWED = {
    # lbd.upstream.target: the plain Target record that stickiness picks among (no I/O in it).
    "routing": ("lbd.config", "lbd.routing", "lbd.upstream.target"),
    # The response cache engine, its keys and Cache-Control rules: pure, shared by the stage and edge caches.
    "cache": ("lbd.cache",),
    # The WAF engine: pure logic over the config's web ACLs; front ends call it (lbd/http/firewall.py).
    "waf": ("lbd.config", "lbd.waf"),
}


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return [name for name in names if name == "lbd" or name.startswith("lbd.")]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_pure_layers_import_nothing_from_the_io_layers(package: str) -> None:
    allowed = ALLOWED[package]
    wrong = {
        f"{path.relative_to(ROOT.parent)}: {name}"
        for path in (ROOT / package).glob("*.py")
        for name in imported_modules(path)
        if not any(name == a or name.startswith(a + ".") for a in allowed)
    }
    assert not wrong, sorted(wrong)
