"""Shared fixtures: every matcher test runs against both implementations."""

import os
from pathlib import Path

import pytest
from checkout import CHECKOUT, import_error, installed_elsewhere, not_compiled_message
from hypothesis import HealthCheck, settings

import tcpmgm
from tcpmgm.matching import addresses, records
from tcpmgm.matching import matcher as matcher_module
from tcpmgm.sql import rows

# The database-server fixtures (scratch schemas and databases) live in tests/dbservers.py.
pytest_plugins = ("dbservers",)

# Running from a source checkout must not quietly test the pure fallback in
# place of the compiled modules: the package the tests import has to be built.
if not (addresses.COMPILED and matcher_module.COMPILED and records.COMPILED and rows.COMPILED) and os.environ.get(
    "TCPMGM_NO_EXTENSIONS", ""
) in ("", "0"):
    raise pytest.UsageError(
        not_compiled_message(
            Path(tcpmgm.__file__).resolve().parent,
            CHECKOUT,
            installed_elsewhere(),
            import_error() or "unknown reason",
        )
    )

# Hypothesis budgets: tests that set no max_examples (the fuzz suite, tests/fuzz)
# get FUZZ_EXAMPLES. "ci", the default everywhere, is derandomized so that a CI
# failure replays on any machine; deadline=None because the machine is shared
# and a sanitizer build is slower, and a time limit would fail tests on load,
# not on behaviour. "long" (HYPOTHESIS_PROFILE=long or --hypothesis-profile=long)
# runs 20 times as many examples from a fresh seed each run, keeping failures
# in the local example database so that the next run replays them first.
FUZZ_EXAMPLES = 200
settings.register_profile(
    "ci",
    max_examples=FUZZ_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    settings.get_profile("default"),
    max_examples=20 * FUZZ_EXAMPLES,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


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
        from tcpmgm.matching._addr_py import normalize as pure

        return pure
    if not addresses.COMPILED:
        pytest.skip("compiled modules disabled by TCPMGM_NO_EXTENSIONS")
    from tcpmgm.matching._addr import normalize as compiled

    return compiled
