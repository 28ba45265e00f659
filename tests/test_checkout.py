"""The usage error when the tests would import tcpmgm without its compiled modules (tests/checkout.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from checkout import BUILD_IN_PLACE, CHECKOUT, not_compiled_message

import tcpmgm

TESTS = Path(__file__).resolve().parent
REASON = "tcpmgm.matching._addr: No module named 'tcpmgm.matching._addr'"


def test_the_checkout_shadowing_an_installed_package_says_so_and_what_to_run():
    message = not_compiled_message(
        Path("/src/tcpmgm/tcpmgm"),
        Path("/src/tcpmgm"),
        Path("/venv/site-packages/tcpmgm"),
        REASON,
    )
    assert REASON in message
    assert (
        "the tests imported /src/tcpmgm/tcpmgm, the checkout's source tree, which shadows "
        "the installed package at /venv/site-packages/tcpmgm" in message
    )
    assert "`python -m pytest` puts the current directory first on sys.path" in message
    assert "Run `pytest` instead" in message
    assert BUILD_IN_PLACE in message
    assert "install the package" not in message


def test_an_unbuilt_checkout_with_nothing_installed_says_how_to_build():
    message = not_compiled_message(Path("/src/tcpmgm/tcpmgm"), Path("/src/tcpmgm"), None, REASON)
    assert REASON in message
    assert "the checkout's source tree, which is not built" in message
    assert BUILD_IN_PLACE in message and "`pip install .`" in message
    assert "shadows" not in message


def test_a_broken_installation_says_reinstall():
    message = not_compiled_message(Path("/venv/site-packages/tcpmgm"), Path("/src/tcpmgm"), None, REASON)
    assert REASON in message
    assert "the installed package at /venv/site-packages/tcpmgm is incomplete; reinstall it" in message
    assert "checkout" not in message


def _unbuilt_checkout(root: Path) -> None:
    """A checkout as ``pip install .`` leaves it: the package's Python source, no compiled module."""
    package = Path(tcpmgm.__file__).resolve().parent
    shutil.copytree(package, root / "tcpmgm", ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__"))
    (root / "tests").mkdir()
    for helper in ("conftest.py", "checkout.py", "dbservers.py"):
        shutil.copy(TESTS / helper, root / "tests" / helper)
    (root / "tests" / "test_ok.py").write_text("def test_ok():\n    pass\n")


def test_python_m_pytest_in_a_checkout_names_the_shadowing_and_pytest_runs(tmp_path):
    if CHECKOUT in Path(tcpmgm.__file__).resolve().parents:
        # An editable install's import finder resolves tcpmgm's submodules in any copy of
        # the package to its own build, so a copy cannot reproduce the unbuilt checkout.
        pytest.skip("tcpmgm is an editable install of this checkout")
    _unbuilt_checkout(tmp_path)
    env = {key: value for key, value in os.environ.items() if key != "TCPMGM_NO_EXTENSIONS"}
    run = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]

    shadowed = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert shadowed.returncode == pytest.ExitCode.USAGE_ERROR, shadowed.stdout + shadowed.stderr
    assert (
        f"the tests imported {tmp_path.resolve() / 'tcpmgm'}, the checkout's source tree, which shadows "
        f"the installed package at {Path(tcpmgm.__file__).resolve().parent}" in shadowed.stderr
    )
    assert "Run `pytest` instead" in shadowed.stderr

    # The advice works: like the pytest script, whose sys.path starts with its own folder, not
    # the current one, this imports the installed package (installed or editable alike).
    script = [sys.executable, "-c", "import sys, pytest; sys.path.pop(0); sys.exit(pytest.console_main())"]
    advised = subprocess.run(script + run[3:], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert advised.returncode == pytest.ExitCode.OK, advised.stdout + advised.stderr
