"""Faults against the real servers: wrong ports, a relay that is cut, sessions killed."""

import logging
import sys
import threading

import pytest
from dbservers import MY_PORT, PG_PORT, Forwarder, SilentServer, free_port, wait_until

import tcpmgm
import tcpmgm.service.manager
import tcpmgm.sql.db
from tcpmgm.model.errors import DatabaseError, ReloadError

PASSWORD = "s3cr3t-Pw0rd"
TRUNK = {"proto": "tls", "remote_addr": "203.0.113.0/24", "connect_timeout": 1500}


def _server_port(s):
    return PG_PORT if s.backend == "postgres" else MY_PORT


def test_unreachable_at_start_names_host_and_port(server_scratch, caplog):
    port = free_port()
    mgr = tcpmgm.TcpMgm(server_scratch.url_for("127.0.0.1", port, PASSWORD))
    with caplog.at_level(logging.DEBUG, logger="tcpmgm"):
        with pytest.raises(ReloadError) as info:
            mgr.reload()
        with pytest.raises(DatabaseError) as created:
            mgr.create_schema()
    for message in (str(info.value), str(created.value)):
        assert f"127.0.0.1:{port}" in message
        assert "\n" not in message
        assert PASSWORD not in message
    assert "refused" in str(info.value).lower()
    assert mgr.lookup("tls", "203.0.113.1").id == 0


def test_password_never_shown(server_scratch, caplog):
    port = _server_port(server_scratch)
    # PostgreSQL here trusts any password; MariaDB's root has none, so there it is refused.
    good = server_scratch.url_for("127.0.0.1", port, PASSWORD if server_scratch.backend == "postgres" else "")
    with caplog.at_level(logging.DEBUG, logger="tcpmgm"):
        mgr = tcpmgm.TcpMgm(good)
        mgr.create_schema()
        mgr.add_rule(TRUNK)
        mgr.reload()
        watcher = mgr.watch(method="poll", interval=0.1)
        watcher.stop()
        failures = []
        for bad_port in (port, free_port()):
            bad = tcpmgm.TcpMgm(server_scratch.url_for("127.0.0.1", bad_port, PASSWORD))
            try:
                bad.reload()
            except ReloadError as exc:
                failures.append(exc)
            shown_bad = repr(bad)
    shown = [repr(mgr), repr(mgr.source), mgr.source.description, repr(watcher), str(mgr.last_report), shown_bad]
    for exc in failures:
        shown += [str(exc), repr(exc), str(exc.__cause__)]
    shown += [r.getMessage() for r in caplog.records]
    assert len(failures) == (2 if server_scratch.backend == "mysql" else 1)
    assert not [text for text in shown if PASSWORD in text]
    mgr.close()


def test_unreachable_during_reload_keeps_rules_and_recovers(server_scratch, caplog):
    setup = tcpmgm.TcpMgm(server_scratch.url)
    setup.create_schema()
    setup.add_rule(TRUNK)
    relay = Forwarder(_server_port(server_scratch)).start()
    try:
        mgr = tcpmgm.TcpMgm(server_scratch.url_for("127.0.0.1", relay.port))
        assert mgr.reload().loaded == 1
        relay.cut()  # the server goes away: the kept connection dies and new ones are refused
        setup.add_rule({"proto": "tcp", "remote_addr": "198.51.100.0/24"})
        with caplog.at_level(logging.ERROR, logger="tcpmgm"), pytest.raises(ReloadError) as info:
            mgr.reload()
        assert f"127.0.0.1:{relay.port}" in str(info.value)
        assert any("old rules stay in service" in r.getMessage() for r in caplog.records)
        assert mgr.lookup("tls", "203.0.113.1").connect_timeout == 1500  # old rules in service
        assert mgr.lookup("tcp", "198.51.100.1").id == 0
        relay.start()  # back, on the same address
        assert mgr.reload().loaded == 2
        assert mgr.lookup("tcp", "198.51.100.1").id == 2
    finally:
        relay.cut()
        setup.close()


def test_connection_closed_between_reloads_reconnects(server_scratch):
    mgr = tcpmgm.TcpMgm(server_scratch.url)
    mgr.create_schema()
    mgr.add_rule(TRUNK)
    assert mgr.reload().loaded == 1
    assert server_scratch.kill_tcpmgm_sessions() == 1  # our own kept connection, nobody else's
    mgr.add_rule({"proto": "tcp"})  # reconnects
    assert server_scratch.kill_tcpmgm_sessions() == 1
    assert mgr.reload().loaded == 2  # reconnects too, no failed reload in between
    mgr.close()
    # close() let go of the connection (the server notices a moment later).
    assert wait_until(lambda: server_scratch.kill_tcpmgm_sessions() == 0)


@pytest.mark.parametrize(
    "url, message",
    [
        ("mysql://root@127.0.0.1:3306/", "must name one database"),
        ("mysql://root@127.0.0.1:3306/test?bogus=1", "unknown MySQL URL parameter 'bogus'"),
        ("mysql://root@127.0.0.1:3306/test?connect_timeout=soon", "must be a number"),
        (f"postgresql://u:{PASSWORD}@127.0.0.1:5432/test?bogus=1", "invalid PostgreSQL URL"),
        ("oracle://scott:tiger@db/orcl", "unsupported database URL scheme 'oracle'"),
        # issue 10, item 12: malformed URLs are DatabaseErrors, on one line, without the password
        (f"postgresql://u:{PASSWORD}@[::1/test", "malformed database URL"),
        (f"mysql://root:{PASSWORD}@[::1/test", "malformed database URL"),
        (f"sqlite://u:{PASSWORD}@[::1/rules.db", "malformed database URL"),
        (f"mysql://root:{PASSWORD}@[not-v6]:3306/test", "malformed database URL"),
        # issue 10, item 18: messages that tell what to write
        ("mysql://root@127.0.0.1:abc/test", "port in the MySQL URL is not a number: 'abc'"),
        (f"mysql://root:{PASSWORD}@127.0.0.1:99999/test", "out of range 1-65535: '99999'"),
        ("rules.db", r"'rules.db' is not a database URL: .*sqlite:///PATH \(here 'sqlite:///rules.db'\)"),
        ("/var/lib/tcpmgm/rules.db", r"here 'sqlite:////var/lib/tcpmgm/rules.db'"),
        (f"mysql://root:{PASSWORD}@127.0.0.1/test?read_timeout=0", "'read_timeout' must be a number"),
        (f"postgresql://u:{PASSWORD}@127.0.0.1/test?read_timeout=-1", "'read_timeout' must be a number"),
        # a bad PostgreSQL port is refused at once, as MySQL's is, not at the first connect
        (f"postgresql://u:{PASSWORD}@127.0.0.1:abc/test", "port in the PostgreSQL URL is not a number: 'abc'"),
        (f"postgresql://u:{PASSWORD}@127.0.0.1:99999/test", "out of range 1-65535: '99999'"),
        (f"postgresql://u:{PASSWORD}@h1:5432,h2:0/test", "out of range 1-65535: '0'"),
        # an unescaped '/' in a password: urllib would read the rest of it as the host and path
        (f"mysql://root:p@ss/{PASSWORD}@127.0.0.1:3306/test", "percent-encode"),
        (f"postgresql://u:p@ss/{PASSWORD}@127.0.0.1:5432/test", "percent-encode"),
    ],
)
def test_bad_urls_are_refused_clearly(url, message):
    with pytest.raises(DatabaseError, match=message) as info:
        tcpmgm.TcpMgm(url)
    assert PASSWORD not in str(info.value)
    assert "\n" not in str(info.value)


def test_a_driver_that_fails_to_import_is_not_called_missing(monkeypatch):
    # A driver that is installed but cannot load says so, with the reason, not "pip install it".
    import builtins

    real_import = builtins.__import__

    def broken(name, *args, **kwargs):
        if name == "pymysql":
            raise ImportError("libfoo.so: cannot open shared object file")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(DatabaseError, match=r"pymysql driver failed to import: .*libfoo\.so") as info:
        tcpmgm.TcpMgm("mysql://root@127.0.0.1/test")
    assert "pip install" not in str(info.value)


@pytest.mark.parametrize(
    "module, extra, requirement",
    [
        ("psycopg", "postgres", "psycopg[binary]>="),
        ("pymysql", "mysql", "PyMySQL>="),
    ],
)
def test_a_missing_driver_tells_a_command_that_works(monkeypatch, module, extra, requirement):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    url = "postgresql://u@127.0.0.1/test" if extra == "postgres" else "mysql://root@127.0.0.1/test"
    with pytest.raises(DatabaseError) as info:
        tcpmgm.TcpMgm(url)
    message = str(info.value)
    assert f"pip install '.[{extra}]'" in message  # from a checkout
    assert f"tcpmgm[{extra}]" not in message  # tcpmgm is not on a package index
    assert f"pip install '{requirement}" in message  # the driver itself, for an installed release


def test_postgres_url_options_reach_libpq(pg_scratch):
    """libpq reads the URL: both scheme spellings and its query parameters work."""
    tcpmgm.TcpMgm(pg_scratch.url).create_schema()
    short = pg_scratch.url.replace("postgresql://", "postgres://") + "&connect_timeout=3"
    mgr = tcpmgm.TcpMgm(short)
    assert mgr.reload().loaded == 0  # search_path from options=: the scratch schema's table


# -- a server that stalls (issue 10, item 6) -------------------------------------

HANG = 30.0  # seconds: far beyond every timeout below; reaching it means "hangs"


def _with(url, **params):
    """``url`` with more query parameters."""
    extra = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{url}{'&' if '?' in url else '?'}{extra}"


def _outcome(call):
    """What ``call()`` raised (or returned), run in a thread; fails the test if it hangs."""
    result = {}

    def run():
        try:
            result["value"] = call()
        except BaseException as exc:
            result["value"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG)
    assert not thread.is_alive(), f"still waiting after {HANG} s: no timeout fired"
    return result["value"]


def test_a_stalled_server_fails_the_connect(server_scratch):
    with SilentServer() as silent:
        # PostgreSQL (libpq) reads a connect_timeout below 2 s as 2 s.
        url = _with(server_scratch.url_for("127.0.0.1", silent.port, PASSWORD), connect_timeout=2)
        mgr = tcpmgm.TcpMgm(url)
        failed = _outcome(mgr.reload)
        created = _outcome(mgr.create_schema)
    assert isinstance(failed, ReloadError) and isinstance(created, DatabaseError)
    for message in (str(failed), str(created)):
        assert f"127.0.0.1:{silent.port}" in message
        assert "\n" not in message and PASSWORD not in message
    assert mgr.lookup("tls", "203.0.113.1").id == 0


def test_the_default_connect_timeout_applies_without_one_in_the_url(server_scratch, monkeypatch):
    """Without connect_timeout in the URL the default applies (shortened here for the test)."""
    monkeypatch.setattr(tcpmgm.sql.db, "CONNECT_TIMEOUT", 2)
    with SilentServer() as silent:
        mgr = tcpmgm.TcpMgm(server_scratch.url_for("127.0.0.1", silent.port))
        failed = _outcome(mgr.reload)
    assert isinstance(failed, ReloadError) and f"127.0.0.1:{silent.port}" in str(failed)


def test_a_query_that_stalls_during_a_reload_fails_within_the_read_timeout(server_scratch, monkeypatch):
    setup = tcpmgm.TcpMgm(server_scratch.url)
    setup.create_schema()
    setup.add_rule(TRUNK)
    relay = Forwarder(_server_port(server_scratch)).start()
    try:
        url = _with(server_scratch.url_for("127.0.0.1", relay.port), connect_timeout=2, read_timeout=1)
        mgr = tcpmgm.TcpMgm(url)
        assert mgr.reload().loaded == 1
        setup.add_rule({"proto": "tcp", "remote_addr": "198.51.100.0/24"})
        real = tcpmgm.service.manager.load_rules

        def stall_then_load(*args, **kwargs):
            relay.freeze()  # connected and pinged: the server stops answering mid-reload
            return real(*args, **kwargs)

        monkeypatch.setattr(tcpmgm.service.manager, "load_rules", stall_then_load)
        failed = _outcome(mgr.reload)
        assert isinstance(failed, ReloadError), failed
        message = str(failed)
        assert f"127.0.0.1:{relay.port}" in message and "old rules stay in service" in message
        assert "timeout" in message or "timed out" in message
        assert mgr.lookup("tls", "203.0.113.1").connect_timeout == 1500  # old rules in service
        assert mgr.lookup("tcp", "198.51.100.1").id == 0
        monkeypatch.undo()
        relay.thaw()
        assert mgr.reload().loaded == 2  # a fresh connection; the stalled one was dropped
        mgr.close()
    finally:
        relay.cut()
        setup.close()


def test_the_watcher_gives_up_on_a_stalled_server_and_can_stop(server_scratch):
    errors = []
    with SilentServer() as silent:
        mgr = tcpmgm.TcpMgm(_with(server_scratch.url_for("127.0.0.1", silent.port), connect_timeout=2))
        watcher = mgr.watch(method="poll", retry=0.1, on_error=errors.append)
        try:
            assert wait_until(lambda: errors, deadline=HANG)
        finally:
            watcher.stop()
        assert not watcher.running
    assert isinstance(errors[0], DatabaseError) and f"127.0.0.1:{silent.port}" in str(errors[0])


def test_a_stalled_watch_poll_is_a_lost_connection_that_recovers(server_scratch):
    setup = tcpmgm.TcpMgm(server_scratch.url)
    setup.create_schema()
    relay = Forwarder(_server_port(server_scratch)).start()
    errors = []
    try:
        url = _with(server_scratch.url_for("127.0.0.1", relay.port), connect_timeout=2, read_timeout=1)
        mgr = tcpmgm.TcpMgm(url)
        watcher = mgr.watch(method="poll", interval=0.1, retry=0.1, on_error=errors.append)
        try:
            assert wait_until(lambda: watcher.reloads >= 1, deadline=HANG)
            relay.freeze()
            assert wait_until(lambda: errors, deadline=HANG)
            relay.thaw()
            setup.add_rule(TRUNK)
            assert wait_until(lambda: mgr.lookup("tls", "203.0.113.1").connect_timeout == 1500, deadline=HANG)
        finally:
            watcher.stop()
        assert isinstance(errors[0], DatabaseError)
        mgr.close()
    finally:
        relay.cut()
        setup.close()


# -- passwords are left out, never replaced (issue 10, item 11) ----------------

# One character, and passwords that occur inside the words of every message.
SHORT_PASSWORDS = ["a", "o", "1", "on", "to", "server", "connection", "127.0.0.1"]


@pytest.mark.parametrize("password", SHORT_PASSWORDS)
def test_a_password_inside_ordinary_words_garbles_nothing(server_scratch, password):
    port = free_port()
    without = tcpmgm.TcpMgm(server_scratch.url_for("127.0.0.1", port))
    with_password = tcpmgm.TcpMgm(server_scratch.url_for("127.0.0.1", port, password))
    messages = []
    for mgr in (without, with_password):
        with pytest.raises(ReloadError) as info:
            mgr.reload()
        messages.append(str(info.value))
    # The password changes nothing in the message: it was never put there.
    assert messages[0] == messages[1]
    assert "***" not in messages[1] and repr(without) == repr(with_password)


def test_a_password_libpq_cannot_decode_is_not_quoted():
    # A bad percent escape in the password: libpq would quote the token it could not decode.
    url = "postgresql://u:%zz9secret@127.0.0.1:5432/test?bogus=1"
    with pytest.raises(DatabaseError, match="invalid PostgreSQL URL") as info:
        tcpmgm.TcpMgm(url)
    assert "secret" not in str(info.value)
