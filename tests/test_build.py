"""The compiled data path: where a C compiler is present, the compiled modules are the ones loaded."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from lbd import build


def compiler_present() -> bool:
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    return shutil.which(os.environ.get("CC", "cc")) is not None and headers.exists()


def test_the_compiled_modules_are_loaded_where_a_compiler_is_present() -> None:
    # LBD_NO_EXTENSIONS is the documented way to install interpreted on purpose; LBD_REQUIRE_EXTENSIONS (CI,
    # the container) demands the compiled build whatever this check finds.
    required = bool(os.environ.get("LBD_REQUIRE_EXTENSIONS"))
    if not required and (not compiler_present() or os.environ.get("LBD_NO_EXTENSIONS")):
        assert build.data_path() != "compiled" or not build.interpreted_modules()
        return
    assert build.interpreted_modules() == [], "a C compiler is here but the data path runs interpreted"
    assert build.stale_modules() == [], "compiled modules are older than their .py: reinstall (make venv)"


def test_lbd_version_says_which_data_path() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lbd", "version"], capture_output=True, text=True, check=True
    ).stdout
    assert f"data path: {build.data_path()}" in out


def test_every_compiled_module_has_its_source() -> None:
    # One source: each compiled module is a .py file that also runs interpreted.
    root = Path(build.__file__).parent.parent
    for name in build.COMPILED:
        assert (root / (name.replace(".", "/") + ".py")).exists(), name
