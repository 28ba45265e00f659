"""docs/behaviour.md#socket-options-from-attrs: the socket options of ``attrs``, on real loopback sockets.

Each option is read back with ``getsockopt`` from both ends of a loopback
connection: the socket ``tcpmgm.connect`` opened and the one a listener
accepted and ``tcpmgm.sockets.tune`` tuned, each under the rule its own
addresses select (clients bound to distinct 127.x sources; on ::1, the
listener's port tells the two ends apart).  Then what is reported when an
option cannot be set, and the row validation of the names and values.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from checkout import CHECKOUT

import tcpmgm
from tcpmgm import aio
from tcpmgm.model import profile as profile_module
from tcpmgm.model.limits import ATTR_MAX, ATTR_MIN
from tcpmgm.model.profile import BUILTIN_ATTRS, attr_spec, known_attrs, parse_attrs, register_attr
from tcpmgm.service.options import SOCKET_OPTIONS
from tcpmgm.sockets import Applied, OptionNotSet, apply, connect, tune

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the options and their read-back are Linux's")

# Four distinct values of each option, one per rule below, so that a value
# read back also says which rule won.  tos values keep the two ECN bits 0:
# for TCP the kernel keeps those its own (ip(7), ipv6(7)).
VALUES = {
    "tcp_user_timeout": (4000, 5000, 6000, 7000),
    "nodelay": (1, 0, 1, 0),
    "tos": (0x28, 0xB8, 0x48, 0x68),
    "sndbuf": (40000, 50000, 60000, 70000),
    "rcvbuf": (41000, 51000, 61000, 71000),
    "notsent_lowat": (16384, 32768, 65536, 131072),
    "linger": (0, 3, 5, 7),
    "syncnt": (2, 3, 4, 5),
    "mark": (11, 12, 13, 14),
}


def core_limit(name: str) -> int:
    return int(Path(f"/proc/sys/net/core/{name}").read_text())


def family_of(sock: socket.socket) -> int:
    """The family of the packets: IPv4 for an IPv6 socket bound to an IPv4-mapped address."""
    name = sock.getsockname()
    return socket.AF_INET if isinstance(name, tuple) and name[0].startswith("::ffff:") else sock.family


def read_back(sock: socket.socket, attr: str) -> int:
    """The option of ``attr`` as the kernel reports it, in the unit ``attrs`` gives it."""
    option = SOCKET_OPTIONS[attr]
    level_name, option_name = option.constants(family_of(sock))
    level, number = getattr(socket, level_name), getattr(socket, option_name)
    if attr == "linger":
        on, seconds = struct.unpack("ii", sock.getsockopt(level, number, struct.calcsize("ii")))
        assert on == 1
        return seconds
    value = sock.getsockopt(level, number)
    if attr in ("sndbuf", "rcvbuf"):
        # socket(7): the kernel doubles the value set (bookkeeping overhead), and
        # getsockopt returns the doubled value; net.core.[wr]mem_max caps what is set.
        limit = core_limit("wmem_max" if attr == "sndbuf" else "rmem_max")
        assert value % 2 == 0 and value // 2 <= limit
        return value // 2
    return value


def wanted(attr: str, value: int) -> int:
    """What ``read_back`` must say after ``attr`` was set to ``value``."""
    if attr in ("sndbuf", "rcvbuf"):
        return min(value, core_limit("wmem_max" if attr == "sndbuf" else "rmem_max"))
    return value


def check(sock: socket.socket, attr: str, value: int, applied: Applied) -> None:
    option_name = SOCKET_OPTIONS[attr].constants(family_of(sock))[1]
    if attr == "mark" and option_name not in applied:
        # Without CAP_NET_ADMIN the kernel refuses SO_MARK: that is reported, not fatal.
        assert [(n.attr, n.option, n.value) for n in applied.not_set] == [("mark", "SO_MARK", value)]
        assert "CAP_NET_ADMIN" in applied.not_set[0].reason
        return
    assert applied.not_set == []
    assert applied[option_name] == value
    assert read_back(sock, attr) == wanted(attr, value)


@pytest.fixture
def mgr(tmp_path):
    manager = tcpmgm.TcpMgm(f"sqlite:///{tmp_path / 'rules.db'}")
    manager.create_schema()
    yield manager
    manager.close()


class Recorder:
    """``apply`` as ``connect`` and ``tune`` call it, keeping each result (what was set, what not)."""

    def __init__(self, monkeypatch):
        self.results = []
        real = apply

        def recording(sock, profile):
            self.results.append(real(sock, profile))
            return self.results[-1]

        monkeypatch.setattr("tcpmgm.service.sockets.apply", recording)


@pytest.mark.parametrize("attr", list(SOCKET_OPTIONS))
def test_each_option_on_both_ends_over_ipv4(attr, mgr, monkeypatch):
    a, b, c, d = VALUES[attr]
    # The connected end looks itself up by its source (local_addr), the
    # accepted end by its peer (remote_addr): four rules, four values.
    for rule_id, key, value in [
        (1, {"local_addr": "127.0.0.2"}, a),
        (2, {"remote_addr": "127.0.0.2"}, b),
        (3, {"local_addr": "127.0.0.3"}, c),
        (4, {"remote_addr": "127.0.0.3"}, d),
    ]:
        mgr.add_rule({"id": rule_id, "proto": "tcp", **key, "attrs": f"{attr}={value}"})
    mgr.reload()
    recorder = Recorder(monkeypatch)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        for source, (client_rule, client_value), (server_rule, server_value) in [
            ("127.0.0.2", (1, a), (2, b)),
            ("127.0.0.3", (3, c), (4, d)),
        ]:
            with connect(mgr, "tcp", ("127.0.0.1", port), source=(source, 0)) as client:
                accepted, _ = listener.accept()
                with accepted:
                    assert tune(mgr, "tcp", accepted).id == server_rule
                    check(accepted, attr, server_value, recorder.results[-1])
                connected = recorder.results[-2]
                assert mgr.lookup("tcp", "127.0.0.1", port, source, 0).id == client_rule
                check(client, attr, client_value, connected)


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no ::1")
@pytest.mark.parametrize("attr", list(SOCKET_OPTIONS))
def test_each_option_on_both_ends_over_ipv6(attr, mgr, monkeypatch):
    a, b, _, _ = VALUES[attr]
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as listener:
        port = listener.getsockname()[1]
        # One address on ::1: the listener's port is the remote end of the
        # connected socket and the local end of the accepted one.
        mgr.add_rule({"id": 1, "proto": "tcp", "remote_addr": "::1", "remote_port": port, "attrs": f"{attr}={a}"})
        mgr.add_rule({"id": 2, "proto": "tcp", "local_addr": "::1", "local_port": port, "attrs": f"{attr}={b}"})
        mgr.reload()
        recorder = Recorder(monkeypatch)
        with connect(mgr, "tcp", ("::1", port)) as client:
            accepted, _ = listener.accept()
            with accepted:
                assert tune(mgr, "tcp", accepted).id == 2
                check(accepted, attr, b, recorder.results[-1])
            check(client, attr, a, recorder.results[-2])
    if attr == "tos":
        assert "IPV6_TCLASS" in recorder.results[-1] and "IP_TOS" not in recorder.results[-1]


@pytest.mark.skipif(not ipv6_loopback(), reason="no ::1")
def test_tos_of_an_ipv4_peer_on_a_dual_stack_socket_is_ip_tos():
    """An IPv6 socket talking to an IPv4 peer (an IPv4-mapped address) sends IPv4
    packets: their TOS is IP_TOS, which IPV6_TCLASS would not change."""
    listener = socket.socket(socket.AF_INET6)
    with listener:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind(("::ffff:127.0.0.1", 0))
        listener.listen()
        with socket.create_connection(("127.0.0.1", listener.getsockname()[1])):
            accepted, _ = listener.accept()
            with accepted:
                applied = apply(accepted, tcpmgm.Profile(attrs={"tos": 0xB8}))
                assert applied["IP_TOS"] == 0xB8 and "IPV6_TCLASS" not in applied
                assert accepted.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == 0xB8


def may_mark() -> bool:
    """Whether this process may set SO_MARK (CAP_NET_ADMIN)."""
    with socket.socket() as probe:
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, 1)
        except PermissionError:
            return False
    return True


def test_the_asyncio_helpers_set_them_on_both_ends():
    """tcpmgm.aio applies with tcpmgm.apply too: every option, on an accepted and an opened connection."""
    settable = [attr for attr in VALUES if attr != "mark" or may_mark()]
    server_attrs = {attr: VALUES[attr][1] for attr in settable}
    client_attrs = {attr: VALUES[attr][2] for attr in settable}
    text = ";".join
    server_rules = tcpmgm.Matcher(
        [tcpmgm.Rule.from_row({"id": 1, "proto": "tcp", "attrs": text(f"{k}={v}" for k, v in server_attrs.items())})]
    )
    client_rules = tcpmgm.Matcher(
        [tcpmgm.Rule.from_row({"id": 2, "proto": "tcp", "attrs": text(f"{k}={v}" for k, v in client_attrs.items())})]
    )
    seen = {}

    async def handle(conn):
        seen["server"] = {attr: read_back(conn.socket, attr) for attr in server_attrs}
        conn.write(await conn.readuntil(b"\n"))
        await conn.drain()

    async def main():
        server = await aio.start_server(server_rules, handle, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            conn = await aio.open_connection(client_rules, "tcp", "127.0.0.1", port, local_addr=("127.0.0.2", 0))
            seen["client"] = {attr: read_back(conn.socket, attr) for attr in client_attrs}
            conn.write(b"ping\n")
            assert await conn.readuntil(b"\n") == b"ping\n"
            conn.close()
            await conn.wait_closed()

    asyncio.run(asyncio.wait_for(main(), 30))  # the bound only guards against a hang
    assert seen["server"] == {attr: wanted(attr, value) for attr, value in server_attrs.items()}
    assert seen["client"] == {attr: wanted(attr, value) for attr, value in client_attrs.items()}


def test_all_options_of_one_rule_together():
    attrs = {attr: values[1] for attr, values in VALUES.items()}
    with socket.socket() as sock:
        applied = apply(sock, tcpmgm.Profile(id=9, attrs=attrs))
        for attr, value in attrs.items():
            check(sock, attr, value, applied)


def test_linger_zero_closes_abortively():
    """linger=0: close() sends a reset, and the peer's read fails instead of reading end of file."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        with accepted:
            apply(client, tcpmgm.Profile(attrs={"linger": 0}))
            client.close()
            accepted.settimeout(10)  # against a hang only
            with pytest.raises(ConnectionResetError):
                accepted.recv(1)


@pytest.fixture
def registry(monkeypatch):
    """The attrs registry as a test may change it: restored afterwards, so other tests see the built-in one."""
    monkeypatch.setattr(profile_module, "_attrs", dict(profile_module._attrs))


def test_names_that_are_no_socket_option_are_left_to_their_readers(registry):
    register_attr("tcpmgm_test_own")
    with socket.socket() as sock:
        applied = apply(sock, tcpmgm.Profile(attrs={"max_msg_chunks": 5, "tcpmgm_test_own": 3}))
    assert sorted(applied) == ["SO_KEEPALIVE", "TCP_KEEPCNT", "TCP_KEEPIDLE", "TCP_KEEPINTVL"]
    assert applied.not_set == []


# -- options that cannot be set -----------------------------------------------------


def test_a_constant_missing_from_the_platform_is_reported(monkeypatch, caplog):
    monkeypatch.delattr(socket, "TCP_NOTSENT_LOWAT")
    with socket.socket() as sock, caplog.at_level(logging.WARNING, logger="tcpmgm.sockets"):
        applied = apply(sock, tcpmgm.Profile(id=12, attrs={"notsent_lowat": 4096, "nodelay": 1}))
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1  # the others are still set
    assert applied["TCP_NODELAY"] == 1 and "TCP_NOTSENT_LOWAT" not in applied
    assert applied.not_set == [
        OptionNotSet(
            "notsent_lowat", "TCP_NOTSENT_LOWAT", 4096, "not available on this platform (socket.TCP_NOTSENT_LOWAT)"
        )
    ]
    [record] = [r for r in caplog.records if r.name == "tcpmgm.sockets" and r.levelno == logging.WARNING]
    assert record.getMessage() == (
        "rule 12: attrs notsent_lowat=4096: TCP_NOTSENT_LOWAT not set: "
        "not available on this platform (socket.TCP_NOTSENT_LOWAT)"
    )


def test_a_missing_level_constant_is_reported(monkeypatch):
    monkeypatch.delattr(socket, "IPPROTO_IPV6")
    with socket.socket(socket.AF_INET6) as sock:
        applied = apply(sock, tcpmgm.Profile(attrs={"tos": 0x28}))
    assert [(n.option, n.reason) for n in applied.not_set] == [
        ("IPV6_TCLASS", "not available on this platform (socket.IPPROTO_IPV6)")
    ]


def test_an_option_the_kernel_does_not_know_for_the_socket_is_reported(caplog):
    """A real refusal: TCP options on a Unix socket (EOPNOTSUPP), and tos on a
    socket that is neither IPv4 nor IPv6; SO_SNDBUF is still set."""
    attrs = {"nodelay": 1, "syncnt": 3, "tos": 0x28, "sndbuf": 50000}
    with socket.socket(socket.AF_UNIX) as sock, caplog.at_level(logging.WARNING, logger="tcpmgm.sockets"):
        applied = apply(sock, tcpmgm.Profile(id=3, keepalive=False, attrs=attrs))
        assert read_back(sock, "sndbuf") == wanted("sndbuf", 50000)
    assert applied == {"SO_KEEPALIVE": 0, "SO_SNDBUF": 50000}
    assert [n.attr for n in applied.not_set] == ["nodelay", "tos", "syncnt"]
    reasons = {n.attr: n.reason for n in applied.not_set}
    assert reasons["nodelay"].startswith("not supported by this system (") and reasons["syncnt"] == reasons["nodelay"]
    assert reasons["tos"] == f"the socket's family ({socket.AF_UNIX!r}) is neither IPv4 nor IPv6"
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 3


class Refusing:
    """A socket whose kernel refuses one option with ``error``."""

    def __init__(self, sock, option, error):
        self.sock, self.option, self.error = sock, option, error
        self.family = sock.family

    def getsockname(self):
        return self.sock.getsockname()

    def setsockopt(self, level, option, value):
        if option == self.option:
            raise OSError(self.error, os.strerror(self.error))
        self.sock.setsockopt(level, option, value)


@pytest.mark.parametrize(
    "error, reason",
    [
        (errno.ENOPROTOOPT, f"not supported by this system ({os.strerror(errno.ENOPROTOOPT)})"),
        (errno.EPERM, f"refused ({os.strerror(errno.EPERM)}, needs CAP_NET_ADMIN)"),
        (errno.EINVAL, f"refused ([Errno {errno.EINVAL}] {os.strerror(errno.EINVAL)})"),
    ],
)
def test_each_refusal_of_the_kernel_is_reported_and_not_fatal(error, reason, caplog):
    with socket.socket() as real, caplog.at_level(logging.WARNING, logger="tcpmgm.sockets"):
        applied = apply(Refusing(real, socket.SO_MARK, error), tcpmgm.Profile(id=5, attrs={"mark": 7, "nodelay": 1}))
        assert real.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assert applied.not_set == [OptionNotSet("mark", "SO_MARK", 7, reason)]
    assert [r.getMessage() for r in caplog.records] == [f"rule 5: attrs mark=7: SO_MARK not set: {reason}"]


REFUSED_MARK = """
import os, socket, tcpmgm
os.setgid(65534); os.setuid(65534)
with socket.socket() as sock:
    applied = tcpmgm.apply(sock, tcpmgm.Profile(attrs={"mark": 7, "nodelay": 1}))
    print(applied.not_set[0].reason if applied.not_set else "set")
    print(sock.getsockopt(socket.SOL_SOCKET, socket.SO_MARK), sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to an unprivileged user")
def test_mark_without_cap_net_admin_is_refused_by_the_kernel_and_reported():
    """As root (this test) SO_MARK is set above; as nobody the real kernel refuses it."""
    done = subprocess.run(
        [sys.executable, "-c", REFUSED_MARK], capture_output=True, text=True, timeout=60, cwd=CHECKOUT, check=True
    )
    reason, values = done.stdout.splitlines()
    assert reason == f"refused ({os.strerror(errno.EPERM)}, needs CAP_NET_ADMIN)"
    assert values == "0 1"


# -- the names and their ranges -----------------------------------------------------


def test_every_socket_option_is_a_builtin_name_and_every_builtin_name_acts():
    assert {spec.name for spec in BUILTIN_ATTRS} == {*SOCKET_OPTIONS, "max_msg_chunks"}
    assert set(VALUES) == set(SOCKET_OPTIONS)
    for name, values in VALUES.items():
        spec = attr_spec(name)
        assert spec is not None and all(spec.minimum <= v <= spec.maximum for v in values)


def row(attrs):
    return {"id": 7, "proto": "tcp", "attrs": attrs}


def refused(attrs) -> tcpmgm.RuleError:
    with pytest.raises(tcpmgm.RuleError) as info:
        tcpmgm.Rule.from_row(row(attrs))
    assert (info.value.rule_id, info.value.column, info.value.value) == (7, "attrs", attrs)
    return info.value


@pytest.mark.parametrize("spec", BUILTIN_ATTRS, ids=lambda spec: spec.name)
def test_each_name_takes_exactly_its_range(spec):
    for value in (spec.minimum, spec.maximum):
        assert dict(tcpmgm.Rule.from_row(row(f"{spec.name}={value}")).profile.attrs) == {spec.name: value}
    for value in (spec.minimum - 1, spec.maximum + 1):
        err = refused(f"nodelay=1;{spec.name}={value}")
        assert err.reason == f"attribute {spec.name!r} value '{value}' is outside {spec.minimum}..{spec.maximum}"


@pytest.mark.parametrize(
    "attrs, reason",
    [
        ("tos=0x10", "attribute 'tos' has non-integer value '0x10'"),
        ("linger=1.5", "attribute 'linger' has non-integer value '1.5'"),
        ("nodelay=yes", "attribute 'nodelay' has non-integer value 'yes'"),
        ("syncnt", "attribute 'syncnt' without a value (0) is outside 1..127"),
        ("tos=256", "attribute 'tos' value '256' is outside 0..255"),
        ("sndbuf=0", f"attribute 'sndbuf' value '0' is outside 1..{ATTR_MAX}"),
        ("mark=-1", f"attribute 'mark' value '-1' is outside 0..{ATTR_MAX}"),
    ],
)
def test_bad_values_are_row_errors_naming_the_item(attrs, reason):
    assert refused(attrs).reason == reason


def test_an_unknown_name_is_a_row_error_listing_the_known_ones(registry):
    err = refused("nodelay=1;tcp_nodelay=1")
    assert err.reason == f"unknown attribute 'tcp_nodelay' (known: {', '.join(sorted(known_attrs()))})"
    assert "tos" in err.reason and "max_msg_chunks" in err.reason
    # However many names an application registers, the message lists the start of them.
    for number in range(100):
        register_attr(f"tcpmgm_test_{number:03}")
    err = refused("tcp_nodelay=1")
    assert err.reason.startswith("unknown attribute 'tcp_nodelay' (known: linger, mark, max_msg_chunks, ")
    assert err.reason.endswith("\u2026)") and len(str(err)) < 300


def test_a_bare_name_is_zero_when_zero_is_in_its_range():
    assert parse_attrs("nodelay; linger") == {"nodelay": 0, "linger": 0}


def test_register_attr_keeps_one_range_per_name(registry):
    spec = register_attr("tcpmgm_test_plain")
    assert (spec.minimum, spec.maximum) == (ATTR_MIN, ATTR_MAX)  # no range given: any C int
    assert register_attr("tcpmgm_test_plain") == spec
    ranged = register_attr("tcpmgm_test_ranged", 1, 10)
    assert parse_attrs("tcpmgm_test_ranged=10") == {"tcpmgm_test_ranged": 10}
    with pytest.raises(ValueError, match=r"'tcpmgm_test_ranged' value '11' is outside 1\.\.10"):
        parse_attrs("tcpmgm_test_ranged=11")
    assert register_attr("tcpmgm_test_ranged", 1, 10) == ranged
    with pytest.raises(ValueError, match=r"already registered as 1\.\.10"):
        register_attr("tcpmgm_test_ranged", 1, 11)
    with pytest.raises(ValueError, match=r"already registered as 0\.\.255"):
        register_attr("tos")  # a built-in name keeps its range
    assert register_attr("max_msg_chunks") == attr_spec("max_msg_chunks")
    with pytest.raises(ValueError, match="is not within"):
        register_attr("tcpmgm_test_wide", 0, ATTR_MAX + 1)
    with pytest.raises(ValueError, match="is not within"):
        register_attr("tcpmgm_test_empty", 5, 4)


# -- the documentation says what the code does ------------------------------------------


def table_rows(page: str, heading: str) -> dict[str, list[str]]:
    """The rows of the tables in the section ``heading`` of ``page``, by the name in their first cell."""
    found: dict[str, list[str]] = {}
    inside = False
    for line in (CHECKOUT / page).read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            inside = line.lstrip("#").strip() == heading
        elif inside and line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            found[cells[0].strip("`")] = cells
    assert found, f"no table under {heading!r} in {page}"
    return found


def shown(number: int) -> str:
    return {ATTR_MAX: "2**31-1", ATTR_MIN: "-2**31"}.get(number, str(number))


def test_the_ranges_in_docs_are_the_ranges_in_the_code():
    documented = table_rows("docs/behaviour.md", "Socket options from attrs")
    assert {name: cells[1] for name, cells in documented.items()} == {
        spec.name: f"{shown(spec.minimum)}..{shown(spec.maximum)}" for spec in BUILTIN_ATTRS
    }


def test_the_readme_table_names_every_socket_option():
    documented = table_rows("README.md", "Per-path socket options")
    assert set(documented) == set(SOCKET_OPTIONS)
    for name, cells in documented.items():
        option = SOCKET_OPTIONS[name]
        assert f"`{option.option}`" in cells[3] and f"`{option.constants(socket.AF_INET6)[1]}`" in cells[4]
