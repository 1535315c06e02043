"""The `pystdlib` source: the .py files of the running Python's standard library.

Real text that every Python install carries (about 12 MB in ~730 files on CPython 3.11), so the
whole pipeline runs offline and in CI. Test folders and installed packages are left out; files are
sorted by relative path, so the corpus is the same on every run of a given Python.
"""

from __future__ import annotations

import os
import platform
import sysconfig
from pathlib import Path

SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


def stdlib_root() -> Path:
    """The standard library directory, from sysconfig."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[tuple[str, Path]]:
    """(relative path, absolute path) of every stdlib .py file outside test folders, sorted."""
    root = stdlib_root()
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for name in filenames:
            if name.endswith(".py"):
                path = Path(dirpath) / name
                found.append((path.relative_to(root).as_posix(), path))
    return sorted(found)


def stdlib_revision() -> str:
    """What identifies this corpus: the Python implementation and version."""
    return f"{platform.python_implementation().lower()}-{platform.python_version()}"
