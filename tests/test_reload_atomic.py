"""Reload (docs/behaviour.md#reload) under load: lookups from 4 threads while 200 reloads
alternate two rule sets (PostgreSQL)."""

import random
import sys
import threading

import pytest

import tcpmgm
from tcpmgm.model.rule import COLUMNS

ROWS = 100
RELOADS = 200
THREADS = 4


def rule_rows(seed):
    """A rule set whose answers differ from another seed's for most lookups."""
    rnd = random.Random(seed)
    rows = []
    for rule_id in range(1, ROWS + 1):
        rows.append(
            {
                "id": rule_id,
                "proto": rnd.choice(["any", "tcp", "tls", "ws"]),
                "remote_addr": f"10.{rnd.randrange(2)}.{rnd.randrange(4)}.0/{rnd.choice([16, 24])}",
                "remote_port": rnd.choice([0, 0, 5060, 5061]),
                "priority": rnd.choice([0, 0, 1, 2]),
                "connect_timeout": rnd.randrange(1, 10_000),
                "keepidle": rnd.randrange(1, 10_000),
            }
        )
    return rows


def queries(seed, count=200):
    rnd = random.Random(seed)
    return [
        (
            rnd.choice(["tcp", "tls", "ws", None]),
            f"10.{rnd.randrange(2)}.{rnd.randrange(4)}.{rnd.randrange(256)}",
            rnd.choice([5060, 5061, 1234]),
        )
        for _ in range(count)
    ]


@pytest.fixture
def short_switch_interval():
    """CPython passes the GIL on only every switch interval (5 ms).  With four
    threads spinning on lookups, each of a reload's network waits queues behind
    them (a convoy), and 200 reloads would take minutes.  A shorter interval
    keeps the runtime modest; it changes nothing that is asserted."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0001)
    yield
    sys.setswitchinterval(old)


def test_lookups_see_old_or_new_rules_never_a_mix(pg_scratch, short_switch_interval):
    sets = {name: rule_rows(seed) for name, seed in (("set_a", 1), ("set_b", 2))}
    for name, rows in sets.items():
        tcpmgm.TcpMgm(pg_scratch.url, table=name).create_schema()
        columns = [c for c in COLUMNS if c in rows[0]]
        pg_scratch.executemany(
            f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
            [[row[c] for c in columns] for row in rows],
        )
    mgr = tcpmgm.TcpMgm(pg_scratch.url)
    mgr.create_schema()

    oracles = {name: tcpmgm.ReferenceMatcher([tcpmgm.Rule.from_row(r) for r in rows]) for name, rows in sets.items()}
    lookups = queries(3)
    expected = [(oracles["set_a"].lookup(*q), oracles["set_b"].lookup(*q)) for q in lookups]
    distinct = sum(a != b for a, b in expected)
    assert distinct > len(lookups) // 2  # the two sets really disagree

    stop = threading.Event()
    errors, wrong = [], []
    seen = {"a": 0, "b": 0}
    lock = threading.Lock()

    def look():
        counts = {"a": 0, "b": 0}
        try:
            while not stop.is_set():
                for q, (a, b) in zip(lookups, expected):
                    got = mgr.lookup(*q)
                    if got == a and a != b:
                        counts["a"] += 1
                    elif got == b and a != b:
                        counts["b"] += 1
                    elif got != a and got != b:
                        wrong.append((q, got, a, b))
        except Exception as exc:
            errors.append(exc)
        with lock:
            for k in counts:
                seen[k] += counts[k]

    def switch_to(name):
        conn = pg_scratch.admin
        with conn.transaction():
            conn.execute("DELETE FROM tcp_mgm")
            conn.execute(f"INSERT INTO tcp_mgm SELECT * FROM {name}")

    switch_to("set_a")
    mgr.reload()
    threads = [threading.Thread(target=look) for _ in range(THREADS)]
    for t in threads:
        t.start()
    try:
        for i in range(RELOADS):
            switch_to("set_b" if i % 2 == 0 else "set_a")
            assert mgr.reload().loaded == ROWS
    finally:
        stop.set()
        for t in threads:
            t.join()
    mgr.close()
    assert errors == []
    assert wrong[:3] == []
    assert seen["a"] > 0 and seen["b"] > 0  # both rule sets were in service while looking up
