"""Faults against the real servers: wrong ports, a relay that is cut, sessions killed."""

import logging

import pytest

import tcpmgm
from tcpmgm.errors import DatabaseError, ReloadError

from dbservers import MY_PORT, PG_PORT, Forwarder, free_port, wait_until

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
        with caplog.at_level(logging.ERROR, logger="tcpmgm"):
            with pytest.raises(ReloadError) as info:
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


@pytest.mark.parametrize("url, message", [
    ("mysql://root@127.0.0.1:3306/", "must name one database"),
    ("mysql://root@127.0.0.1:3306/test?bogus=1", "unknown MySQL URL parameter 'bogus'"),
    ("mysql://root@127.0.0.1:3306/test?connect_timeout=soon", "must be a number"),
    (f"postgresql://u:{PASSWORD}@127.0.0.1:5432/test?bogus=1", "invalid PostgreSQL URL"),
    ("oracle://scott:tiger@db/orcl", "unsupported database URL scheme 'oracle'"),
])
def test_bad_urls_are_refused_clearly(url, message):
    with pytest.raises(DatabaseError, match=message) as info:
        tcpmgm.TcpMgm(url)
    assert PASSWORD not in str(info.value)


def test_postgres_url_options_reach_libpq(pg_scratch):
    """libpq reads the URL: both scheme spellings and its query parameters work."""
    tcpmgm.TcpMgm(pg_scratch.url).create_schema()
    short = pg_scratch.url.replace("postgresql://", "postgres://") + "&connect_timeout=3"
    mgr = tcpmgm.TcpMgm(short)
    assert mgr.reload().loaded == 0  # search_path from options=: the scratch schema's table
