"""Shared fixtures: every matcher test runs against both implementations."""

import os

import pytest

import tcpmgm
from tcpmgm import addresses, matcher as matcher_module, rows

# The database-server fixtures (scratch schemas and databases) live in tests/dbservers.py.
pytest_plugins = ("dbservers",)

# Running from a source checkout must not quietly test the pure fallback in
# place of the compiled modules: the installed package has to be the one built.
if not (addresses.COMPILED and matcher_module.COMPILED and rows.COMPILED) and os.environ.get("TCPMGM_NO_EXTENSIONS", "") in ("", "0"):
    raise pytest.UsageError(
        "tcpmgm's compiled modules are not importable (tests imported "
        f"{tcpmgm.__file__}); install the package (pip install .) or set TCPMGM_NO_EXTENSIONS=1"
    )


def _matcher_classes():
    classes = [pytest.param(tcpmgm.ReferenceMatcher, id="reference")]
    if matcher_module.Matcher is not tcpmgm.ReferenceMatcher:
        classes.append(pytest.param(matcher_module.Matcher, id="compiled"))
    return classes


@pytest.fixture(params=_matcher_classes())
def matcher_cls(request):
    """A matcher class: the reference, and the compiled classifier when it is built."""
    return request.param


@pytest.fixture(params=["compiled", "pure"])
def normalize(request):
    """``normalize`` from the compiled ``_addr`` and from its pure twin."""
    if request.param == "pure":
        from tcpmgm._addr_py import normalize as pure

        return pure
    if not addresses.COMPILED:
        pytest.skip("compiled modules disabled by TCPMGM_NO_EXTENSIONS")
    from tcpmgm._addr import normalize as compiled

    return compiled
