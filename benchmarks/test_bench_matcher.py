"""pytest-benchmark: the compiled classifier and its baselines on the workloads.

Baselines and workloads: benchmarks/README.md#baselines, benchmarks/README.md#workloads.

A round runs 5,000 lookups (the linear scan 200, the reference 20: divide
accordingly).  Ratios per lookup and the full table: ``tcpmgm bench``.
"""

import pytest

from tcpmgm import ReferenceMatcher
from tcpmgm.matching._matcher import Matcher
from tcpmgm_bench._linear_scan import LinearScanBaseline
from tcpmgm_bench.harness import _empty, _prefix_tries
from tcpmgm_bench.workloads import batch


def _loop(function, queries):
    def run():
        for query in queries:
            function(*query)

    return run


def test_matcher_lookup(benchmark, workload):
    benchmark(_loop(Matcher(workload.rules).lookup, workload.lookups))


def test_matcher_lookup_many(benchmark, workload):
    matcher = Matcher(workload.rules)
    buffers = batch(workload.lookups, 4)
    benchmark(matcher.lookup_many, *buffers)


def test_matcher_build(benchmark, workload):
    benchmark.pedantic(Matcher, args=(workload.rules,), rounds=3)


def test_empty_call(benchmark, workload):
    benchmark(_loop(_empty, workload.lookups))


@pytest.mark.parametrize("library", ["pytricia", "py-radix"])
def test_prefix_trie(benchmark, workload, library):
    tries = _prefix_tries(workload)
    if library not in tries:
        pytest.skip(f"{library} is not installed (from the checkout: pip install '.[bench]')")
    # Called with the remote address alone, as ``tcpmgm bench`` and their users call them.
    benchmark(_loop(tries[library], [(query[1],) for query in workload.lookups]))


def test_linear_scan(benchmark, workload):
    benchmark.pedantic(_loop(LinearScanBaseline(workload.rules).lookup, workload.lookups[:200]), rounds=3)


def test_reference(benchmark, workload):
    benchmark.pedantic(_loop(ReferenceMatcher(workload.rules).lookup, workload.lookups[:20]), rounds=3)
