"""Why the compiled modules are not importable, in words that say what to run instead.

``python -m pytest`` puts the current directory first on ``sys.path``: run
from the checkout, ``import tcpmgm`` then finds the checkout's source tree
(never built in place by ``pip install .``) before the installed package, and
the compiled modules fall back to their pure twins.  ``pytest`` itself puts
only ``tests/`` on the path, so it imports the installed package.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
from pathlib import Path

PACKAGE = "tcpmgm"
# The extensions setup.py builds; their pure twins stand in when these do not import.
COMPILED_MODULES = ("tcpmgm.matching._addr", "tcpmgm.matching._matcher", "tcpmgm.sql._rows")
CHECKOUT = Path(__file__).resolve().parent.parent

BUILD_IN_PLACE = (
    "pip install -e .` (or, with Cython and setuptools>=77 installed, `python setup.py build_ext --inplace`)"
)
PURE_ONLY = "TCPMGM_NO_EXTENSIONS=1 tests the pure-Python twins alone"


def import_error() -> str | None:
    """The first compiled module's ImportError as text, or None when all of them import."""
    for name in COMPILED_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            return f"{name}: {exc}"
    return None


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def installed_elsewhere(checkout: Path = CHECKOUT) -> Path | None:
    """Where ``import tcpmgm`` would find the package if the checkout were not on ``sys.path``."""
    path: list[str] = [entry for entry in sys.path if not _inside(Path(entry or os.getcwd()).resolve(), checkout)]
    for finder in sys.meta_path:
        if finder is importlib.machinery.PathFinder:
            spec = finder.find_spec(PACKAGE, path)
        elif hasattr(finder, "find_spec"):
            # Editable installs answer through a finder of their own, not a sys.path entry.
            spec = finder.find_spec(PACKAGE, None)
        else:
            continue
        if spec is not None and spec.origin not in (None, "built-in", "frozen"):
            origin = Path(spec.origin).resolve().parent
            if not _inside(origin, checkout):
                return origin
    return None


def not_compiled_message(imported: Path, checkout: Path, installed: Path | None, reason: str) -> str:
    """The usage error for tests that would run the pure twins in place of the compiled modules.

    ``imported`` is the package folder the tests imported, ``installed`` where an
    installed tcpmgm lives besides the checkout (None: nowhere), ``reason`` the ImportError.
    """
    head = f"tcpmgm's compiled modules are not importable ({reason})"
    if not _inside(imported, checkout):
        return (
            f"{head}: the installed package at {imported} is incomplete; reinstall it "
            f"(`pip install --force-reinstall --no-deps .`), or: {PURE_ONLY}"
        )
    if installed is not None:
        return (
            f"{head}: the tests imported {imported}, the checkout's source tree, which shadows "
            f"the installed package at {installed} (`python -m pytest` puts the current directory "
            f"first on sys.path). Run `pytest` instead, or build the checkout in place: `{BUILD_IN_PLACE}"
        )
    return (
        f"{head}: the tests imported {imported}, the checkout's source tree, which is not built. "
        f"Build it in place: `{BUILD_IN_PLACE}, or install it (`pip install .`) and run `pytest`; "
        f"or: {PURE_ONLY}"
    )
