"""Benchmarks need the compiled modules; they are not part of the test suite (run them with
``pytest benchmarks/``).  N defaults to 10,000; set TCPMGM_BENCH_N to change it."""

import os

import pytest

from tcpmgm_bench.workloads import WORKLOADS

N = int(os.environ.get("TCPMGM_BENCH_N", "10000"))


@pytest.fixture(scope="session", params=sorted(WORKLOADS))
def workload(request):
    return WORKLOADS[request.param](N, 5000, seed=0)
