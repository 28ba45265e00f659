"""Time from ``reload()`` to serving, per backend and table size.

    python benchmarks/bench_reload.py                      # 100,000 rows, every reachable backend
    python benchmarks/bench_reload.py --rows 100000,1000000 --backends sqlite,postgres
    TCPMGM_BENCH_1M=1 python benchmarks/bench_reload.py    # adds 1,000,000 rows
    python benchmarks/bench_reload.py --profile            # cProfile of one reload per backend

Each backend gets a scratch namespace (an SQLite file, a PostgreSQL schema,
a MariaDB database) filled with the seeded carrier table (benchmarks/README.md#workloads) of
tcpmgm_bench.workloads, which is
dropped afterwards.  For each size it reports the best of ``--repeat`` runs:
the whole ``reload()`` followed by one lookup ("to serving"), the CPU time
this process spent on it (less disturbed by a busy machine; the server's
share is not in it), and its parts: reading and validating the rows, and
building the matcher.  Servers:
``TCPMGM_BENCH_PG`` (default postgresql://postgres@127.0.0.1:5432/test) and
``TCPMGM_BENCH_MYSQL`` (default mysql://root@127.0.0.1:3306/test).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import platform
import pstats
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator

import tcpmgm
from tcpmgm.matching.matcher import Matcher
from tcpmgm.sql.loader import gc_paused, load_rules
from tcpmgm_bench.workloads import carrier

COLUMNS = (
    "id",
    "proto",
    "remote_addr",
    "remote_port",
    "local_addr",
    "local_port",
    "priority",
    "connect_timeout",
    "keepidle",
)


def carrier_rows(n: int) -> list[tuple]:
    """benchmarks/README.md#workloads ``carrier`` (the same generator ``tcpmgm bench`` uses) as table rows."""
    return [tuple(rule.to_row()[column] for column in COLUMNS) for rule in carrier(n, 0).rules]


# -- scratch namespaces ------------------------------------------------------


@contextlib.contextmanager
def sqlite_scratch() -> Iterator[tuple[str, object]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.db")
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            yield f"sqlite:///{path}", conn
        finally:
            conn.close()


@contextlib.contextmanager
def postgres_scratch() -> Iterator[tuple[str, object]]:
    import psycopg

    admin_url = os.environ.get("TCPMGM_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
    schema = f"tcpmgm_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        sep = "&" if "?" in admin_url else "?"
        url = f"{admin_url}{sep}options=-csearch_path%3D{schema}"
        conn = psycopg.connect(url, autocommit=True)
        try:
            yield url, conn
        finally:
            conn.close()
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextlib.contextmanager
def mysql_scratch() -> Iterator[tuple[str, object]]:
    from urllib.parse import urlsplit

    import pymysql

    parts = urlsplit(os.environ.get("TCPMGM_BENCH_MYSQL", "mysql://root@127.0.0.1:3306/test"))
    database = f"tcpmgm_bench_{uuid.uuid4().hex[:8]}"
    args = dict(
        host=parts.hostname,
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        autocommit=True,
    )
    admin = pymysql.connect(**args)
    admin.cursor().execute(f"CREATE DATABASE `{database}`")
    conn = pymysql.connect(**args, database=database)
    auth = f"{args['user']}:{parts.password}" if parts.password else args["user"]
    try:
        yield f"mysql://{auth}@{args['host']}:{args['port']}/{database}", conn
    finally:
        conn.close()
        admin.cursor().execute(f"DROP DATABASE `{database}`")
        admin.close()


SCRATCH = {"sqlite": sqlite_scratch, "postgres": postgres_scratch, "mysql": mysql_scratch}


def fill(backend: str, conn, rows: list[tuple]) -> None:
    cur = conn.cursor()
    cur.execute("DELETE FROM tcp_mgm")
    if backend == "postgres":
        with cur.copy(f"COPY tcp_mgm ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    ph = "?" if backend == "sqlite" else "%s"
    sql = f"INSERT INTO tcp_mgm ({', '.join(COLUMNS)}) VALUES ({', '.join([ph] * len(COLUMNS))})"
    if backend == "sqlite":
        cur.execute("BEGIN")
        cur.executemany(sql, rows)
        cur.execute("COMMIT")
    else:
        for start in range(0, len(rows), 5000):  # PyMySQL sends each chunk as one multi-row INSERT
            cur.executemany(sql, rows[start : start + 5000])


def measure(url: str, repeat: int, profile: bool) -> tuple[float, float, float, float]:
    """Best of ``repeat``: (reload + first lookup, its CPU time in this process,
    read+validate, matcher build) in seconds."""
    mgr = tcpmgm.TcpMgm(url)
    best = (float("inf"), 0.0, 0.0, 0.0)
    for _ in range(repeat):
        started, cpu = time.perf_counter(), time.process_time()
        mgr.reload()
        mgr.lookup("tcp", "192.0.2.1", 5060)
        total, cpu = time.perf_counter() - started, time.process_time() - cpu
        with mgr.source.connection() as conn:
            t0 = time.perf_counter()
            result = load_rules(conn, mgr.source.dialect, mgr.names, defaults=mgr.default)
            t1 = time.perf_counter()
        with gc_paused():  # as reload() builds it
            Matcher(result.rules, default=mgr.default)
        t2 = time.perf_counter()
        best = min(best, (total, cpu, t1 - t0, t2 - t1))
        del result
    if profile:
        profiler = cProfile.Profile()
        profiler.runcall(mgr.reload)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
    mgr.close()
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_rows = "100000,1000000" if os.environ.get("TCPMGM_BENCH_1M") else "100000"
    parser.add_argument("--rows", default=default_rows, help="comma-separated table sizes")
    parser.add_argument("--backends", default="sqlite,postgres,mysql")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one reload")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.rows.split(",")]
    print(
        f"# reload benchmark: Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
        f"matcher {Matcher.__module__}.{Matcher.__name__}"
    )
    print("| backend | rows | reload to serving (s) | its CPU (s) | read + validate (s) | matcher build (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for backend in args.backends.split(","):
        try:
            scratch = SCRATCH[backend]()
            url, conn = scratch.__enter__()
        except Exception as exc:
            print(f"| {backend} | - | unavailable: {' '.join(str(exc).split())[:60]} | | | |")
            continue
        try:
            tcpmgm.TcpMgm(url).create_schema()
            for n in sizes:
                fill(backend, conn, carrier_rows(n))
                total, cpu, read, build = measure(url, args.repeat, args.profile)
                print(f"| {backend} | {n:,} | {total:.2f} | {cpu:.2f} | {read:.2f} | {build:.2f} |", flush=True)
        finally:
            scratch.__exit__(*sys.exc_info())
    return 0


if __name__ == "__main__":
    sys.exit(main())
