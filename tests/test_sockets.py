"""tcpmgm.apply / connect / tune on real loopback sockets (127.0.0.0/8 only)."""

import logging
import socket

import pytest
from keepalive import expected, keepalive_of, matcher, os_defaults

import tcpmgm
from tcpmgm.service import sockets
from tcpmgm.service.sockets import apply, connect, tune

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_KEEPIDLE"), reason="needs Linux TCP keepalive options")


@pytest.fixture
def listener():
    server = socket.create_server(("127.0.0.1", 0), backlog=16)
    yield server
    server.close()


def test_apply_sets_and_reports_keepalive():
    profile = tcpmgm.Profile(id=4, keepidle=30, keepinterval=5, keepcount=2)
    with socket.socket() as sock:
        applied = apply(sock, profile)
        assert applied == {"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 30, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 2}
        assert keepalive_of(sock) == (True, 30, 5, 2)


def test_apply_keepalive_off_and_clamping(caplog):
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        assert apply(sock, tcpmgm.Profile(keepalive=False)) == {"SO_KEEPALIVE": 0}
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
    # Issue 10, item 19: this test used to assert that keepinterval=0 is set as 1 s
    # (a probe every second); a timer of 0 leaves the operating system's value.
    _, _, os_interval, _ = os_defaults()
    with socket.socket() as sock, caplog.at_level(logging.WARNING, logger="tcpmgm.sockets"):
        applied = apply(sock, tcpmgm.Profile(id=42, keepidle=10**6, keepinterval=0, keepcount=1000))
        assert applied == {"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 32767, "TCP_KEEPCNT": 127}
        assert keepalive_of(sock) == (True, 32767, os_interval, 127)
    clamped = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(clamped) == 2 and all(message.startswith("rule 42: ") for message in clamped)
    assert "keepidle=1000000" in clamped[0] and "32767" in clamped[0]
    assert "keepcount=1000" in clamped[1] and "127" in clamped[1]


def test_a_zero_timer_leaves_the_os_value_and_others_are_set():
    fresh = os_defaults()
    # Profile values chosen unlike any OS default, so that "set" and "left" differ.
    with socket.socket() as sock:
        apply(sock, tcpmgm.Profile(id=3, keepidle=0, keepinterval=0, keepcount=0))
        assert keepalive_of(sock) == (True, *fresh[1:])
    for wanted in ((0, 17, 4), (33, 0, 4), (33, 17, 0)):
        idle, interval, count = wanted
        with socket.socket() as sock:
            applied = apply(sock, tcpmgm.Profile(keepidle=idle, keepinterval=interval, keepcount=count))
            shown = keepalive_of(sock)
        assert shown == (True, *tuple(value or os_value for value, os_value in zip(wanted, fresh[1:])))
        assert sorted(applied) == sorted(
            ["SO_KEEPALIVE"]
            + [name for name, value in zip(("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"), wanted) if value]
        )
    # "Untouched" means untouched: a value the socket already had stays too.
    with socket.socket() as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1234)
        apply(sock, tcpmgm.Profile(keepidle=0, keepinterval=9, keepcount=3))
        assert keepalive_of(sock) == (True, 1234, 9, 3)


def test_the_kernel_limits_are_accepted_as_they_are():
    for attr, name, low, high in sockets.KEEPALIVE_LIMITS:
        for value in (low, high):
            with socket.socket() as sock:
                applied = apply(sock, tcpmgm.Profile(**{attr: value}))
                assert applied[name] == value
                assert sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name)) == value


def test_connect_applies_the_rule_of_each_source_address(listener):
    port = listener.getsockname()[1]
    rules = matcher(
        {"id": 1, "proto": "tcp", "local_addr": "127.0.0.2", "keepidle": 11, "keepinterval": 12, "keepcount": 3},
        {"id": 2, "proto": "tcp", "local_addr": "127.0.0.3", "keepidle": 21, "keepinterval": 22, "keepcount": 4},
        {"id": 3, "proto": "tls", "local_addr": "127.0.0.3", "keepidle": 99},
    )
    for source, rule_id in (("127.0.0.2", 1), ("127.0.0.3", 2), (None, 0)):
        sock = connect(rules, "tcp", ("127.0.0.1", port), source=(source, 0) if source else None)
        with sock:
            accepted, _peer = listener.accept()
            accepted.close()
            profile = rules.get(rule_id).profile if rule_id else rules.default
            assert keepalive_of(sock) == expected(profile)
            if source:
                assert sock.getsockname()[0] == source
            assert sock.gettimeout() is None


def test_connect_refuses_no_new_conn_without_connecting(listener):
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    rules = matcher({"id": 7, "proto": "any", "remote_addr": "127.0.0.1", "remote_port": port, "no_new_conn": 1})
    with pytest.raises(tcpmgm.NoNewConnection, match="rule 7"):
        connect(rules, "tcp", ("127.0.0.1", port))
    with pytest.raises(socket.timeout):
        listener.accept()  # nothing ever knocked


def test_connect_to_a_closed_port_raises_the_os_error(listener):
    port = listener.getsockname()[1]
    listener.close()
    with pytest.raises(ConnectionRefusedError) as info:
        connect(matcher(), "tcp", ("127.0.0.1", port))
    assert not isinstance(info.value, tcpmgm.NoNewConnection)


def test_tune_looks_up_an_accepted_socket_by_its_peer(listener, tmp_path):
    port = listener.getsockname()[1]
    mgr = tcpmgm.TcpMgm(f"sqlite:///{tmp_path / 'rules.db'}")
    mgr.create_schema()
    mgr.add_rule({"id": 5, "proto": "tcp", "remote_addr": "127.0.0.2", "keepidle": 50, "keepcount": 5})
    mgr.add_rule({"id": 6, "proto": "tcp", "remote_addr": "127.0.0.3", "local_port": port, "keepidle": 60})
    mgr.reload()
    for source, rule_id in (("127.0.0.2", 5), ("127.0.0.3", 6), ("127.0.0.4", 0)):
        with socket.create_connection(("127.0.0.1", port), source_address=(source, 0)):
            accepted, _ = listener.accept()
            with accepted:
                profile = tune(mgr, "tcp", accepted)
                assert profile.id == rule_id
                assert keepalive_of(accepted) == expected(profile)
