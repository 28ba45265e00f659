"""Fleet propagation: watchers reload when another connection changes the table."""

import contextlib
import logging
import os
import selectors
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from dbservers import make_scratch, wait_until

import tcpmgm
from tcpmgm.model.errors import DatabaseError, ReloadError

PROXY = os.path.join(os.path.dirname(__file__), "watch_proxy.py")
PROPAGATION = 2.0  # seconds: the functional deadline for a change to reach every proxy
STARTUP = 60.0  # seconds a proxy process may take to start (interpreter, drivers, first load)


class Proxy:
    """A separate process running a TcpMgm and its watcher."""

    def __init__(self, url, method, interval):
        self.proc = subprocess.Popen(
            [sys.executable, PROXY, url, method, str(interval)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.proc.stdout, selectors.EVENT_READ)

    def readline(self, timeout):
        if not self.selector.select(timeout):
            raise AssertionError(f"proxy silent for {timeout} s (exit code {self.proc.poll()})")
        return self.proc.stdout.readline().strip()

    def lookup(self, proto, ip, port):
        self.proc.stdin.write(f"{proto} {ip} {port}\n")
        return int(self.readline(STARTUP))

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def served_by_all(proxies, query, rule_id):
    """Whether every proxy answers ``rule_id`` before the propagation deadline (polled)."""
    deadline = time.monotonic() + PROPAGATION
    pending = list(proxies)
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if p.lookup(*query) != rule_id]
    return not pending


def run_fleet(scratch, method, interval):
    proxies = [Proxy(scratch.url, method, interval) for _ in range(2)]
    try:
        for proxy in proxies:
            assert proxy.readline(STARTUP) == f"ready {method}"
        query = ("tls", "203.0.113.7", 5061)
        assert [p.lookup(*query) for p in proxies] == [0, 0]
        # A third connection, neither proxy's, adds a rule.
        scratch.execute(
            "INSERT INTO tcp_mgm (id, proto, remote_addr, connect_timeout) VALUES (%s, %s, %s, %s)",
            (7, "tls", "203.0.113.0/24", 1500),
        )
        assert served_by_all(proxies, query, 7)
        scratch.execute("DELETE FROM tcp_mgm WHERE id = %s", (7,))
        assert served_by_all(proxies, query, 0)
    finally:
        for proxy in proxies:
            proxy.close()


def test_fleet_postgres_notify(pg_scratch):
    mgr = tcpmgm.TcpMgm(pg_scratch.url)
    mgr.create_schema()
    mgr.install_change_trigger()
    mgr.close()
    run_fleet(pg_scratch, "notify", 1.0)


def test_fleet_mariadb_polling(my_scratch):
    tcpmgm.TcpMgm(my_scratch.url).create_schema()
    run_fleet(my_scratch, "poll", 0.2)


@contextlib.contextmanager
def polled_table(backend, tmp_path):
    """A scratch table on ``backend`` holding rule 1 (tcp, connect_timeout 100), and its manager."""
    scratch = make_scratch(backend, tmp_path)
    try:
        mgr = tcpmgm.TcpMgm(scratch.url)
        mgr.create_schema()
        mgr.add_rule({"proto": "tcp", "connect_timeout": 100})
        yield scratch, mgr
        mgr.close()
    finally:
        scratch.close()


class Recorder:
    def __init__(self):
        self.reports, self.errors = [], []
        self.lock = threading.Lock()

    def on_reload(self, report):
        with self.lock:
            self.reports.append(report)

    def on_error(self, exc):
        with self.lock:
            self.errors.append(exc)


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mysql"])
def test_polling_sees_an_update_that_keeps_the_row_count(backend, tmp_path):
    with polled_table(backend, tmp_path) as (scratch, mgr):
        with mgr.watch(method="poll", interval=0.05, debounce=0.05) as watcher:
            assert wait_until(lambda: watcher.reloads >= 1)
            scratch.execute("UPDATE tcp_mgm SET connect_timeout = %s", (250,))
            assert wait_until(lambda: mgr.lookup("tcp", "192.0.2.1").connect_timeout == 250)
        assert not watcher.running


def test_a_burst_of_changes_is_one_reload(pg_scratch):
    mgr = tcpmgm.TcpMgm(pg_scratch.url)
    mgr.create_schema()
    mgr.install_change_trigger()
    rec = Recorder()
    # A generous quiet time: twenty commits from one client never pause that long.
    with mgr.watch(debounce=1.0, max_delay=30, on_reload=rec.on_reload) as watcher:
        assert wait_until(lambda: len(rec.reports) == 1)
        assert watcher.active_method == "notify"
        for i in range(1, 21):
            pg_scratch.execute("INSERT INTO tcp_mgm (id, proto, remote_port) VALUES (%s, 'tcp', %s)", (i, i))
        assert wait_until(lambda: mgr.lookup("tcp", "192.0.2.1", 20).id == 20, deadline=30)
    assert [r.loaded for r in rec.reports] == [0, 20]
    mgr.close()


@pytest.mark.parametrize("backend", ["sqlite", "mysql"])
def test_failed_reload_is_reported_and_old_rules_stay(backend, tmp_path, caplog):
    with polled_table(backend, tmp_path) as (scratch, mgr):
        rec = Recorder()
        with mgr.watch(
            method="poll", interval=0.05, debounce=0.05, on_error=rec.on_error, on_reload=rec.on_reload
        ) as watcher:
            assert wait_until(lambda: watcher.reloads >= 1)
            scratch.execute("DROP TABLE tcp_mgm")
            assert wait_until(lambda: rec.errors)
            assert isinstance(rec.errors[0], ReloadError)
            assert mgr.lookup("tcp", "192.0.2.1").id == 1  # old rules in service
            tcpmgm.TcpMgm(scratch.url).create_schema()
            scratch.execute("INSERT INTO tcp_mgm (id, proto) VALUES (%s, %s)", (9, "tcp"))
            assert wait_until(lambda: mgr.lookup("tcp", "192.0.2.1").id == 9)
        assert any("old rules stay in service" in r.getMessage() for r in caplog.records)


def test_lost_watch_connection_is_reported_and_reestablished(pg_scratch):
    mgr = tcpmgm.TcpMgm(pg_scratch.url)
    mgr.create_schema()
    mgr.install_change_trigger()
    rec = Recorder()
    with mgr.watch(retry=0.1, debounce=0.05, on_error=rec.on_error, on_reload=rec.on_reload) as watcher:
        assert wait_until(lambda: watcher.reloads >= 1)
        assert pg_scratch.kill_tcpmgm_sessions() == 2  # the manager's and the LISTEN connection
        assert wait_until(lambda: any(isinstance(e, DatabaseError) for e in rec.errors))
        pg_scratch.execute("INSERT INTO tcp_mgm (id, proto) VALUES (%s, %s)", (3, "tls"))
        assert wait_until(lambda: mgr.lookup("tls", "192.0.2.1").id == 3)
        assert watcher.active_method == "notify"
    mgr.close()


def test_notify_needs_postgres(my_scratch):
    mgr = tcpmgm.TcpMgm(my_scratch.url)
    mgr.create_schema()
    with pytest.raises(DatabaseError, match="needs PostgreSQL"):
        mgr.install_change_trigger()
    rec = Recorder()
    with mgr.watch(method="notify", retry=5, on_error=rec.on_error):
        assert wait_until(lambda: rec.errors)
    assert "needs PostgreSQL" in str(rec.errors[0])
    mgr.close()


def test_a_reload_that_fails_unexpectedly_is_not_a_lost_connection(tmp_path, monkeypatch, caplog):
    """A reload failing for a reason of tcpmgm's own (here the matcher build) is
    reported as a failed reload; the watch connection is fine and stays."""
    import tcpmgm.service.manager

    real = tcpmgm.service.manager.Matcher
    with polled_table("sqlite", tmp_path) as (scratch, mgr):
        rec = Recorder()
        with (
            caplog.at_level(logging.INFO, logger="tcpmgm"),
            mgr.watch(
                method="poll", interval=0.05, debounce=0.05, retry=0.05, on_error=rec.on_error, on_reload=rec.on_reload
            ) as watcher,
        ):
            assert wait_until(lambda: watcher.reloads >= 1)

            class broken:  # the manager builds with Matcher.from_records
                @staticmethod
                def from_records(*args, **kwargs):
                    raise RuntimeError("matcher build failed")

            monkeypatch.setattr(tcpmgm.service.manager, "Matcher", broken)
            scratch.execute("INSERT INTO tcp_mgm (id, proto) VALUES (%s, %s)", (5, "tls"))
            assert wait_until(lambda: rec.errors)
            assert isinstance(rec.errors[0], ReloadError)
            assert isinstance(rec.errors[0].__cause__, RuntimeError)
            assert mgr.lookup("tls", "192.0.2.1").id == 0  # old rules in service
            monkeypatch.setattr(tcpmgm.service.manager, "Matcher", real)
            scratch.execute("INSERT INTO tcp_mgm (id, proto) VALUES (%s, %s)", (6, "ws"))
            assert wait_until(lambda: mgr.lookup("ws", "192.0.2.1").id == 6)
        messages = [r.getMessage() for r in caplog.records]
        assert not [m for m in messages if "lost" in m]
        # Watching began once: no reconnect after the failed reload.
        assert len([m for m in messages if m.startswith("watching ")]) == 1
        assert all(isinstance(e, ReloadError) for e in rec.errors)


def test_watching_a_closed_caller_connection_is_a_database_error():
    """The first poll of a caller's connection fails as any source's does: as the
    DatabaseError that says the watch could not begin, not as the driver's exception."""
    conn = sqlite3.connect(":memory:", check_same_thread=False)  # the watcher polls from its thread
    mgr = tcpmgm.TcpMgm(conn)
    mgr.create_schema()
    conn.close()
    rec = Recorder()
    with mgr.watch(method="poll", retry=5, on_error=rec.on_error):
        assert wait_until(lambda: rec.errors)
    assert isinstance(rec.errors[0], DatabaseError)
    assert str(rec.errors[0]).startswith("cannot watch 'tcp_mgm' on sqlite3 connection: Cannot operate on a closed")
