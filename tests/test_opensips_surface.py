"""What an operator sees of tcpmgm.opensips: TcpMgm's rules as read and OpenSIPS's order of them,
`tcpmgm check --opensips`, `tcpmgm match --explain`, and the admin endpoint's methods."""

import sqlite3

import pytest

import tcpmgm
from tcpmgm.opensips import OpenSIPSOrder

# A tcp /16 inside a tcp /8 at the same priority, and a tls rule read between them: OpenSIPS's
# comparator finds the tls rule equal to both, so its merge sort keeps the /8 first.
NESTED = [
    {"id": 1, "proto": "tcp", "remote_addr": "10.0.0.0/8", "connect_timeout": 900},
    {"id": 2, "proto": "tls", "remote_addr": "192.0.2.0/24"},
    {"id": 3, "proto": "tcp", "remote_addr": "10.1.0.0/16", "connect_timeout": 300},
]


def manager(path, rows):
    mgr = tcpmgm.TcpMgm(f"sqlite:///{path}")
    mgr.create_schema()
    for row in rows:
        mgr.add_rule(row)
    return mgr


def test_the_manager_keeps_the_order_the_database_returned(tmp_path):
    mgr = manager(tmp_path / "rules.db", [{"id": 9, "proto": "tcp"}, {"id": 2, "proto": "tls"}])
    with sqlite3.connect(mgr.source.path) as conn:  # a row the loader rejects is left out, in its place
        conn.execute("INSERT INTO tcp_mgm (id, proto) VALUES (4, 'udp')")
        conn.execute("INSERT INTO tcp_mgm (id, proto) VALUES (7, 'any')")
    assert mgr.rules_as_read == ()
    mgr.reload()
    # SQLite returns a plain SELECT in rowid order, here the id's (an INTEGER PRIMARY KEY).
    assert [rule.id for rule in mgr.rules_as_read] == [2, 7, 9]
    assert [rule.id for rule in mgr.matcher] == [2, 9, 7]  # named protocols first
    assert set(mgr.rules_as_read) == set(mgr.matcher)


def test_the_order_as_read_is_the_plain_selects_on_every_backend(scratch):
    mgr = tcpmgm.TcpMgm(scratch.url)
    mgr.create_schema()
    for row in [
        {"id": 1, "proto": "tcp"},
        {"id": 2, "proto": "tcp", "remote_addr": "10.0.0.0/8"},
        {"id": 3, "proto": "tls", "remote_addr": "192.0.2.0/24"},
    ]:
        mgr.add_rule(row)
    # PostgreSQL writes an updated row anew: its plain SELECT then returns it last.
    scratch.execute("UPDATE tcp_mgm SET connect_timeout = 5 WHERE id = 1")
    mgr.reload()
    as_read = [rule.id for rule in mgr.rules_as_read]
    assert as_read == [row[0] for row in scratch.execute("SELECT id FROM tcp_mgm")]
    assert as_read != [rule.id for rule in mgr.matcher]  # not the documented order
    mgr.close()


def test_opensips_order_is_built_once_per_reload(tmp_path):
    mgr = manager(tmp_path / "rules.db", NESTED)
    mgr.reload()
    order = mgr.opensips_order
    assert isinstance(order, OpenSIPSOrder) and mgr.opensips_order is order
    assert [rule.id for rule in order.paths] == [1, 2, 3]
    # where the two orders part: tcpmgm's documented order picks the /16, OpenSIPS the /8
    assert mgr.lookup("tcp", "10.1.2.3").id == 3
    assert order.lookup("tcp", "10.1.2.3").id == 1
    mgr.add_rule({"id": 4, "proto": "tcp", "remote_addr": "10.1.2.0/24"})
    assert mgr.opensips_order is order  # not before the next reload
    mgr.reload()
    assert mgr.opensips_order is not order and len(mgr.opensips_order) == 4


def test_opensips_order_answers_with_the_managers_default(tmp_path):
    default = tcpmgm.default_profile().replace(connect_timeout=1234)
    mgr = tcpmgm.TcpMgm(f"sqlite:///{tmp_path / 'rules.db'}", default=default)
    mgr.create_schema()
    mgr.reload()
    answer = mgr.opensips_order.lookup("tcp", "198.51.100.1")
    assert answer.id == 0 and answer.connect_timeout == 1234


@pytest.fixture
def nested(tmp_path):
    mgr = manager(tmp_path / "tcpmgm.db", NESTED)
    mgr.reload()
    return mgr
