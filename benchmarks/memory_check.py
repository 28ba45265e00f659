"""No memory growth over 10 million lookups (issue 3): tracemalloc and RSS.

Run by hand (it takes a minute or two; not part of the test suite):

    python benchmarks/memory_check.py [--lookups 10000000] [--rules 10000]

Builds the carrier workload, runs ``lookup`` (``str`` addresses) and
``lookup_many`` (IPv4 and IPv6 buffers) until the given number of lookups is
reached for each, and prints the Python heap (tracemalloc) and the process
RSS before and after.  Growth here would be a leak per lookup: 10 million
lookups leaking even one byte each would show as ~10 MB.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
import tracemalloc
from typing import Callable

from tcpmgm.matching import _matcher
from tcpmgm_bench.workloads import batch, carrier


def rss_kib() -> int:
    """Current resident set size in KiB (from /proc; ru_maxrss would only give the peak)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() // 1024


def until(lookups: int, one_round: Callable[[], int]) -> tuple[int, float]:
    """Repeat ``one_round`` (it returns how many lookups it made) until ``lookups``
    are done: (lookups done, seconds)."""
    start = time.perf_counter()
    done = 0
    while done < lookups:
        done += one_round()
    return done, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookups", type=int, default=10_000_000)
    parser.add_argument("--rules", type=int, default=10_000)
    args = parser.parse_args()
    workload = carrier(args.rules, 20_000, seed=0)
    matcher = _matcher.Matcher(workload.rules)
    queries = workload.lookups
    batches = [batch(queries, version) for version in (4, 6)]
    per_round = sum(len(columns.protos) for columns in batches)
    lookup, lookup_many = matcher.lookup, matcher.lookup_many

    def singles() -> int:
        for query in queries:
            lookup(*query)
        return len(queries)

    def batched() -> int:
        for columns in batches:
            lookup_many(*columns)
        return per_round

    # Warm up once so that caches filled on first use (protocol names) are not counted.
    singles()
    batched()
    gc.collect()
    tracemalloc.start()
    heap_before = tracemalloc.get_traced_memory()[0]
    rss_before = rss_kib()
    done, single_s = until(args.lookups, singles)
    rss_single = rss_kib()
    done_many, many_s = until(args.lookups, batched)
    gc.collect()
    heap_after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    rss_after = rss_kib()
    print(
        f"carrier N={args.rules:,}: {done:,} lookup() in {single_s:.1f} s, "
        f"{done_many:,} lookups in lookup_many in {many_s:.1f} s"
    )
    print(f"tracemalloc heap: {heap_before:,} -> {heap_after:,} bytes ({heap_after - heap_before:+,})")
    print(
        f"RSS: {rss_before:,} -> {rss_single:,} (after lookup) -> {rss_after:,} KiB ({rss_after - rss_before:+,} KiB)"
    )
    grown = heap_after - heap_before > 64 * 1024 or rss_after - rss_before > 4 * 1024
    print("memory grew" if grown else "no memory growth")
    return 1 if grown else 0


if __name__ == "__main__":
    sys.exit(main())
