"""Build lbd: the per-request data path (lbd/build.py's COMPILED) is compiled with Cython.

Pure-Python mode: each compiled module is an ordinary ``.py`` file with a ``.pxd`` beside it that declares
its extension types, so the same source runs interpreted where no C compiler is found. Environment:

- ``LBD_REQUIRE_EXTENSIONS=1``: fail the build if a module does not compile (CI and the container do this,
  so a broken build cannot pass as an interpreted one).
- ``LBD_NO_EXTENSIONS=1``: compile nothing (pure-Python install).
- ``LBD_CYTHON_ANNOTATE=1``: write Cython's HTML annotation next to each module (yellow = Python C-API).
"""

from __future__ import annotations

import os
import runpy

from setuptools import setup

COMPILED: tuple[str, ...] = runpy.run_path(os.path.join("lbd", "build.py"))["COMPILED"]
DIRECTIVES = {
    "language_level": 3,
    # boundscheck and wraparound stay on: typed lists and bytes are indexed from the end in places, and an
    # out-of-range index must stay an IndexError, not a crash. The byte scanners turn them off locally.
    "embedsignature": False,
    # Types come from the .pxd files only: an annotation such as `x: float` would otherwise become a C double
    # and `x: bytes` an exact-type check, changing what the interpreted code accepts.
    "annotation_typing": False,
}


def extensions() -> list[object]:
    if os.environ.get("LBD_NO_EXTENSIONS"):
        return []
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError:  # Cython missing (an unusual install): run interpreted
        if os.environ.get("LBD_REQUIRE_EXTENSIONS"):
            raise
        return []
    modules = [
        Extension(name, [name.replace(".", os.sep) + ".py"], extra_compile_args=["-O2"]) for name in COMPILED
    ]
    built = cythonize(
        modules,
        compiler_directives=DIRECTIVES,
        annotate=bool(os.environ.get("LBD_CYTHON_ANNOTATE")),
        quiet=True,
    )
    # cythonize() drops Extension(optional=...): set it on what it returns, so a missing C compiler warns
    # and the install goes on interpreted, unless the build must be compiled.
    for ext in built:
        ext.optional = not os.environ.get("LBD_REQUIRE_EXTENSIONS")
    return list(built)


setup(ext_modules=extensions())
