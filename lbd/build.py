"""Which of lbd's modules are compiled, and whether the compiled ones are what this process loaded.

The per-request data path is compiled with Cython (pure-Python mode: the same ``.py`` files, typed with
``cython`` annotations and ``.pxd`` files beside them) by ``pip install .`` (setup.py reads ``COMPILED``
from here). Without a C compiler the install still succeeds and the same files run interpreted; ``lbd run``
warns and ``lbd version`` says which. No imports beyond the standard library: setup.py runs this file
before lbd's dependencies are installed.
"""

from __future__ import annotations

import importlib
import importlib.machinery
from pathlib import Path

# The data path, in the order a request meets it (DESIGN.md section 3 lists what it covers).
COMPILED = (
    "lbd.listener.tracker",
    "lbd.l4.tcp",
    "lbd.l4.udp",
    "lbd.http.fastpath",
    "lbd.http.messages",
    "lbd.http.proxy",
    "lbd.http.exchange",
    "lbd.http.upstream",
    "lbd.http.dispatch",
    "lbd.routing.table",
    "lbd.routing.conditions",
    "lbd.routing.request",
    "lbd.upstream.maglev",
    "lbd.upstream.balancers",
    "lbd.upstream.target",
    "lbd.observe.stats",
    # Web ACLs, evaluated once per request on listeners that have one (lbd/waf/).
    "lbd.waf.transforms",
    "lbd.waf.request",
    "lbd.waf.plan",
    "lbd.waf.ipsets",
    "lbd.waf.rate",
    "lbd.waf.statements",
    "lbd.waf.acl",
    "lbd.http.firewall",
    # API gateway requests (lbd/gateway/): the connection, the pipeline and its in-process engines, the
    # target client (fetch.pxd types its connections and requests).
    "lbd.gateway.server",
    "lbd.gateway.pipeline",
    "lbd.gateway.routes",
    "lbd.gateway.plans",
    "lbd.gateway.limiter",
    "lbd.gateway.integration",
    "lbd.gateway.fetch",
    "lbd.gateway.stage_cache",
    "lbd.gateway.request",
    # Downstream HTTP/2 (lbd/http/h2front.py): frames, HPACK and stream state.
    "lbd.http.h2codec",
    # Distributions' cache hits answered from one read (lbd/edge/hit.py) and what they call: behaviors,
    # cache keys (shared with the stage cache) and the engine's lookup. The rest of the edge is not.
    "lbd.cache.keys",
    "lbd.cache.edgekey",
    "lbd.cache.engine",
    "lbd.edge.behaviors",
    "lbd.edge.hit",
)


def is_compiled(module_name: str) -> bool:
    module = importlib.import_module(module_name)
    return str(getattr(module, "__file__", "")).endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def interpreted_modules() -> list[str]:
    """The data-path modules this process runs interpreted."""
    return [name for name in COMPILED if not is_compiled(name)]


def stale_modules() -> list[str]:
    """Compiled modules older than their source: an edit after the last build (re-run ``pip install``)."""
    stale = []
    for name in COMPILED:
        module = importlib.import_module(name)
        path = Path(str(getattr(module, "__file__", "")))
        source = path.with_name(name.rpartition(".")[2] + ".py")
        if is_compiled(name) and source.exists() and source.stat().st_mtime > path.stat().st_mtime:
            stale.append(name)
    return stale


def data_path() -> str:
    """``compiled``, ``interpreted``, or ``partly compiled (...)`` naming what is interpreted."""
    interpreted = interpreted_modules()
    if not interpreted:
        return "compiled"
    if len(interpreted) == len(COMPILED):
        return "interpreted"
    return "partly compiled (interpreted: " + ", ".join(interpreted) + ")"
