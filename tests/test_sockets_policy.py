"""Every field of the connection policy acting on real blocking loopback sockets.

Clients are bound to distinct 127.x sources so that different rules win; each
test shows a field's effect (a closed connection, a dropped message, a logged
slow send, a refused connect, an alias answer), never a time.
"""

import contextlib
import logging
import queue
import socket
import threading
import time

import pytest
from keepalive import expected, keepalive_of, matcher

import tcpmgm
from tcpmgm.service import events
from tcpmgm.service.events import Event
from tcpmgm.sockets import Connection, IdleConnections, open_connection

# Only to avoid a hang when something is broken; never what a test asserts.
HANG = 30


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counted(event):
    return events.snapshot()[event]


@pytest.fixture
def listener():
    server = socket.create_server(("127.0.0.1", 0), backlog=16)
    server.settimeout(HANG)
    yield server
    server.close()


def client_of(listener, source):
    sock = socket.create_connection(listener.getsockname(), timeout=HANG, source_address=(source, 0))
    accepted, _ = listener.accept()
    accepted.settimeout(HANG)
    return sock, accepted


def closed_by_peer(sock):
    """Whether the other end has closed: a read sees end of file (or a reset)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def served(rules, listener, source, **kwargs):
    """A client from ``source`` and the server side's :class:`Connection` under its rule."""
    client, accepted = client_of(listener, source)
    return client, Connection.tune(rules, "tcp", accepted, **kwargs)


def in_thread(work):
    """Run ``work()`` in a thread; the returned queue gets its result or its exception."""
    results = queue.Queue()

    def run():
        try:
            results.put(work())
        except BaseException as exc:
            results.put(exc)

    threading.Thread(target=run, daemon=True).start()
    return results


def length_prefixed(data):
    """A framing for the tests: one ASCII digit n, then n bytes."""
    return 1 + int(data[:1]) if len(data) > int(data[:1]) else None


# -- no_new_conn, connect_timeout, tune ---------------------------------------------------------


def test_no_new_conn_refuses_only_its_path_and_is_counted(listener):
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    rules = matcher(
        {"id": 1, "proto": "tcp", "local_addr": "127.0.0.2", "no_new_conn": 1},
        {"id": 2, "proto": "tcp", "local_addr": "127.0.0.3", "connect_timeout": 5000},
    )
    before = counted(Event.NO_NEW_CONN_REFUSED)
    with pytest.raises(tcpmgm.NoNewConnection, match="rule 1"):
        open_connection(rules, "tcp", ("127.0.0.1", port), source=("127.0.0.2", 0))
    assert counted(Event.NO_NEW_CONN_REFUSED) == before + 1
    with pytest.raises(socket.timeout):
        listener.accept()  # the refused connect sent nothing
    with open_connection(rules, "tcp", ("127.0.0.1", port), source=("127.0.0.3", 0)) as conn:
        assert conn.policy.rule_id == 2 and conn.policy.connect_timeout == 5.0
        assert conn.sock.getsockname()[0] == "127.0.0.3"
        listener.accept()[0].close()
    assert counted(Event.NO_NEW_CONN_REFUSED) == before + 1


CONNECTS = {
    "connect": tcpmgm.connect,
    "open_connection": lambda *args, **kwargs: open_connection(*args, **kwargs).sock,
}


@pytest.mark.parametrize("connect", sorted(CONNECTS))
def test_connect_timeout_bounds_a_connect_that_gets_no_answer(connect):
    """A listener whose accept queue is full drops new SYNs: a connect there waits for an
    answer. Rule 1 gives up after its connect_timeout; rule 2 (0: no limit) waits on and
    connects once the queue has room again."""
    connect = CONNECTS[connect]
    rules = matcher(
        {"id": 1, "proto": "tcp", "local_addr": "127.0.0.7", "connect_timeout": 50},
        {"id": 2, "proto": "tcp", "local_addr": "127.0.0.8", "connect_timeout": 0},
    )
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        filler = socket.create_connection(address, timeout=HANG)  # fills the queue
        accepted = []
        try:
            patient = in_thread(lambda: connect(rules, "tcp", address, source=("127.0.0.8", 0)))
            impatient = in_thread(lambda: connect(rules, "tcp", address, source=("127.0.0.7", 0)))
            assert isinstance(impatient.get(timeout=HANG), socket.timeout)
            assert patient.empty()  # rule 2 is still waiting for its answer
            listener.settimeout(0.5)
            give_up = time.monotonic() + HANG
            while patient.empty() and time.monotonic() < give_up:  # make room until it is through
                with contextlib.suppress(socket.timeout):
                    accepted.append(listener.accept()[0])
            sock = patient.get(timeout=HANG)
            with sock:
                assert sock.getsockname()[0] == "127.0.0.8"
                assert sock.gettimeout() == socket.getdefaulttimeout()  # the connect's limit is not left on it
        finally:
            filler.close()
            for sock in accepted:
                sock.close()


def resolving(monkeypatch, name, *ips):
    """Make ``name`` resolve to ``ips`` in turn (the same port): a host name with several addresses."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host != name:
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, port)) for ip in ips]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_each_address_of_a_host_is_tried_and_a_refusal_counted_once_per_connect(listener, monkeypatch):
    resolving(monkeypatch, "two.example.test", "127.0.0.9", "127.0.0.1")  # nothing listens on 127.0.0.9
    port = listener.getsockname()[1]
    rules = matcher(
        {"id": 1, "proto": "tcp", "local_addr": "127.0.0.6", "no_new_conn": 1},
        {"id": 2, "proto": "tcp", "remote_addr": "127.0.0.9", "local_addr": "127.0.0.7", "no_new_conn": 1},
    )
    before = counted(Event.NO_NEW_CONN_REFUSED)
    with tcpmgm.connect(rules, "tcp", ("two.example.test", port), source=("127.0.0.5", 0)) as sock:
        assert sock.getpeername() == ("127.0.0.1", port)  # the first address refused the connect: the next one
        listener.accept()[0].close()
    with pytest.raises(tcpmgm.NoNewConnection, match="rule 1"):
        tcpmgm.connect(rules, "tcp", ("two.example.test", port), source=("127.0.0.6", 0))
    assert counted(Event.NO_NEW_CONN_REFUSED) == before + 1  # one refused connect, two addresses
    with tcpmgm.connect(rules, "tcp", ("two.example.test", port), source=("127.0.0.7", 0)) as sock:
        assert sock.getpeername() == ("127.0.0.1", port)  # 127.0.0.9 forbidden by rule 2: skipped
        listener.accept()[0].close()
    assert counted(Event.NO_NEW_CONN_REFUSED) == before + 1  # the connect was not refused


def test_tune_wraps_an_accepted_socket_under_the_rule_of_its_peer(listener):
    rules = matcher(
        {"id": 1, "proto": "tcp", "remote_addr": "127.0.0.2", "keepidle": 31, "alias_mode": 1},
        {"id": 2, "proto": "tcp", "remote_addr": "127.0.0.3", "keepidle": 32, "alias_mode": 2},
    )
    for source, rule_id, without, with_alias in (
        ("127.0.0.2", 1, False, True),
        ("127.0.0.3", 2, True, True),
        ("127.0.0.4", 0, False, False),
    ):
        client, conn = served(rules, listener, source)
        with client, conn:
            assert conn.policy.rule_id == rule_id
            assert conn.peer == client.getsockname()
            assert keepalive_of(conn.sock) == expected(conn.policy.profile)
            assert (conn.may_alias(False), conn.may_alias(True)) == (without, with_alias)


# -- con_lifetime -------------------------------------------------------------------------------


def test_idle_connections_are_closed_by_their_own_lifetime(listener):
    clock = FakeClock()
    idle = IdleConnections(clock=clock)
    rules = matcher(
        {"id": 1, "proto": "tcp", "remote_addr": "127.0.0.2", "con_lifetime": 10},
        {"id": 2, "proto": "tcp", "remote_addr": "127.0.0.3", "con_lifetime": 60},
        {"id": 3, "proto": "tcp", "remote_addr": "127.0.0.4", "con_lifetime": 0},
    )
    short_client, short = served(rules, listener, "127.0.0.2", idle=idle)
    long_client, long = served(rules, listener, "127.0.0.3", idle=idle)
    never_client, never = served(rules, listener, "127.0.0.4", idle=idle)
    with short_client, long_client, never_client, never:
        assert short.sock in idle and long.sock in idle and never.sock not in idle
        assert idle.timeout() == 10.0
        clock.now += 9
        assert idle.close_idle() == []
        before = counted(Event.IDLE_CLOSE)
        clock.now += 1
        assert idle.close_idle() == [short.sock]
        assert counted(Event.IDLE_CLOSE) == before + 1
        assert closed_by_peer(short_client)
        assert short.sock.fileno() == -1 and short.sock not in idle
        assert long.sock in idle and idle.timeout() == 50.0
        clock.now += 10**6
        assert idle.close_idle() == [long.sock] and closed_by_peer(long_client)
        assert idle.timeout() is None and len(idle) == 0
        never_client.sendall(b"3abc")
        assert never.read_message(length_prefixed) == b"3abc"  # never expired, still served


def test_every_read_and_write_pushes_the_idle_close_back(listener):
    clock = FakeClock()
    idle = IdleConnections(clock=clock)
    rules = matcher({"id": 1, "proto": "tcp", "remote_addr": "127.0.0.2", "con_lifetime": 10})
    client, conn = served(rules, listener, "127.0.0.2", idle=idle)
    with client:
        for _ in range(3):
            clock.now += 8
            client.sendall(b"1x")
            assert conn.read_message(length_prefixed) == b"1x"
            clock.now += 8
            conn.send(b"ok")
            assert client.recv(2) == b"ok"
            assert idle.close_idle() == []
        clock.now += 10
        assert idle.close_idle() == [conn.sock]
        assert closed_by_peer(client)


def test_close_idle_wakes_a_reader_blocked_in_another_thread(listener):
    clock = FakeClock()
    idle = IdleConnections(clock=clock)
    rules = matcher({"id": 1, "proto": "tcp", "remote_addr": "127.0.0.2", "con_lifetime": 10})
    client, conn = served(rules, listener, "127.0.0.2", idle=idle)
    with client:
        result = in_thread(lambda: conn.read_message(length_prefixed))
        time.sleep(0.3)  # lets the reader reach its recv(): the case is a read already blocked
        clock.now += 10
        assert idle.close_idle() == [conn.sock]  # from this thread, not the reader's
        assert result.get(timeout=HANG) == b""  # woken with end of file
        assert closed_by_peer(client)


def test_a_connection_without_a_sweeper_closes_itself_when_idle(listener):
    rules = matcher(
        {"id": 1, "proto": "tcp", "remote_addr": "127.0.0.2", "con_lifetime": 1},
        {"id": 2, "proto": "tcp", "remote_addr": "127.0.0.3", "con_lifetime": 600},
    )
    idle_client, idle_conn = served(rules, listener, "127.0.0.2")
    busy_client, busy_conn = served(rules, listener, "127.0.0.3")
    with idle_client, busy_client, busy_conn:
        before = counted(Event.IDLE_CLOSE)
        idle_result = in_thread(lambda: idle_conn.read_message(length_prefixed))
        busy_result = in_thread(lambda: busy_conn.read_message(length_prefixed))
        assert idle_result.get(timeout=HANG) == b""  # closed by its own con_lifetime, read as end of file
        assert counted(Event.IDLE_CLOSE) == before + 1
        assert closed_by_peer(idle_client)
        busy_client.sendall(b"2ok")  # rule 2's lifetime has not run out: still served
        assert busy_result.get(timeout=HANG) == b"2ok"
        assert counted(Event.IDLE_CLOSE) == before + 1


# -- msg_read_timeout ----------------------------------------------------------------------------

READERS = {
    "read_message": lambda conn: conn.read_message(length_prefixed),
    "recv_exactly": lambda conn: conn.recv_exactly(5),
    "recv_until": lambda conn: conn.recv_until(b"\n"),
}
# The first bytes of a message each reader above is left waiting on, and its rest.
STARTED = {"read_message": (b"4ab", b"cd"), "recv_exactly": (b"abc", b"de"), "recv_until": (b"abc", b"d\n")}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_message_not_complete_in_time_drops_the_connection(listener, reader):
    rules = matcher(
        {"id": 1, "proto": "tcp", "remote_addr": "127.0.0.2", "msg_read_timeout": 1},
        {"id": 2, "proto": "tcp", "remote_addr": "127.0.0.3", "msg_read_timeout": 600},
    )
    slow_client, slow = served(rules, listener, "127.0.0.2")
    patient_client, patient = served(rules, listener, "127.0.0.3")
    start, rest = STARTED[reader]
    read = READERS[reader]
    with slow_client, patient_client, patient:
        patient_client.sendall(start)
        patient_result = in_thread(lambda: read(patient))  # waits for the rest under rule 2
        slow_client.sendall(start)
        before = counted(Event.MESSAGE_TIMEOUT_CLOSE)
        with pytest.raises(tcpmgm.MessageTimeout, match="rule 1") as info:
            read(slow)
        assert info.value.rule_id == 1 and info.value.peer == slow_client.getsockname()
        assert counted(Event.MESSAGE_TIMEOUT_CLOSE) == before + 1
        assert closed_by_peer(slow_client)
        # Rule 2's message started before rule 1's and is finished only now: still in time.
        patient_client.sendall(rest)
        assert patient_result.get(timeout=HANG) == start + rest


def test_waiting_for_a_message_to_start_is_not_message_time(listener):
    rules = matcher({"id": 1, "proto": "tcp", "remote_addr": "127.0.0.2", "msg_read_timeout": 1})
    client, conn = served(rules, listener, "127.0.0.2")
    with client, conn:
        result = in_thread(lambda: conn.read_message(length_prefixed))
        # The reader has waited (idle, not armed) across at least one full timeout before the message starts.
        time.sleep(1.5)
        client.sendall(b"2ok")
        assert result.get(timeout=HANG) == b"2ok"


# -- max_msg_chunks ------------------------------------------------------------------------------


def test_a_message_needing_more_reads_than_max_msg_chunks_drops_the_connection(listener):
    rules = matcher(
        {"id": 1, "proto": "tcp", "remote_addr": "127.0.0.2", "attrs": "max_msg_chunks=3"},
        {"id": 2, "proto": "tcp", "remote_addr": "127.0.0.3", "attrs": "max_msg_chunks=4"},
    )
    pieces = (b"9ab", b"cd", b"ef", b"ghi")  # one message in four reads

    def fed_in_pieces(source, count):
        """Send ``count`` pieces one read apart: the next only once the server has parsed the last."""
        client, conn = served(rules, listener, source)
        parsed = queue.Queue()

        def parse(data):
            parsed.put(len(data))
            return length_prefixed(data)

        result = in_thread(lambda: conn.read_message(parse))
        for piece in pieces[: count - 1]:
            client.sendall(piece)
            parsed.get(timeout=HANG)
        client.sendall(pieces[count - 1])
        return client, conn, result.get(timeout=HANG)

    before = counted(Event.CHUNK_LIMIT_CLOSE)
    client, conn, outcome = fed_in_pieces("127.0.0.2", 3)
    with client:
        assert isinstance(outcome, tcpmgm.MessageTooFragmented) and outcome.rule_id == 1
        assert "3 reads" in str(outcome)
        assert counted(Event.CHUNK_LIMIT_CLOSE) == before + 1
        assert closed_by_peer(client)
    client, conn, outcome = fed_in_pieces("127.0.0.3", 4)
    with client, conn:
        assert outcome == b"".join(pieces)
        assert counted(Event.CHUNK_LIMIT_CLOSE) == before + 1


def test_a_message_read_in_several_calls_counts_its_reads_together(listener):
    rules = matcher({"id": 1, "proto": "tcp", "remote_addr": "127.0.0.2", "attrs": "max_msg_chunks=2"})
    header = lambda buffer: 1 if buffer else None  # noqa: E731  (one digit: the body's length)

    def served_in_reads(in_one_block):
        """A header, then a body in two pieces: three reads, the next sent once the last is parsed."""
        client, conn = served(rules, listener, "127.0.0.2")
        parsed = queue.Queue()

        def body(buffer):
            parsed.put(bytes(buffer))
            return 3 if len(buffer) >= 3 else None

        def read():
            with conn.message() if in_one_block else contextlib.nullcontext():
                size = conn.read_message(header)
                parsed.put(size)
                return size + conn.read_message(body)

        result = in_thread(read)
        client.sendall(b"3")
        assert parsed.get(timeout=HANG) == b"3"
        client.sendall(b"ab")
        assert parsed.get(timeout=HANG) == b"ab"
        client.sendall(b"c")
        return client, conn, result.get(timeout=HANG)

    client, conn, outcome = served_in_reads(in_one_block=False)  # two messages: 1 read, then 2
    with client, conn:
        assert outcome == b"3abc"
    client, conn, outcome = served_in_reads(in_one_block=True)  # one message of three reads
    with client:
        assert isinstance(outcome, tcpmgm.MessageTooFragmented)
        assert closed_by_peer(client)
        with pytest.raises(OSError):
            conn.read_message(header)  # given up with the connection, not judged again


def test_messages_back_to_back_in_one_read_keep_their_bytes(listener):
    rules = matcher({"id": 1, "proto": "tcp", "remote_addr": "127.0.0.2", "attrs": "max_msg_chunks=1"})
    client, conn = served(rules, listener, "127.0.0.2")
    with client, conn:
        client.sendall(b"abc\ndef\n12345" + b"2xy")
        assert conn.recv_until(b"\n") == b"abc\n"
        assert conn.recv_until(b"\n") == b"def\n"
        assert conn.recv_exactly(5) == b"12345"
        assert conn.read_message(length_prefixed) == b"2xy"
        client.sendall(b"5ab")
        with pytest.raises(tcpmgm.MessageTooFragmented):
            conn.read_message(length_prefixed)  # one read left it incomplete: limit 1


def test_end_of_file_between_messages_and_inside_one(listener):
    rules = matcher()
    client, conn = served(rules, listener, "127.0.0.2")
    with conn:
        client.sendall(b"1a")
        client.close()
        assert conn.read_message(length_prefixed) == b"1a"
        assert conn.read_message(length_prefixed) == b""
    client, conn = served(rules, listener, "127.0.0.2")
    with conn:
        client.sendall(b"5ab")
        client.close()
        with pytest.raises(EOFError):
            conn.read_message(length_prefixed)


def test_recv_exactly_0_reads_nothing(listener):
    client, conn = served(matcher(), listener, "127.0.0.2")
    with client, conn:
        conn.sock.settimeout(5)  # nothing is sent: a read would wait (and fail) here
        assert conn.recv_exactly(0) == b""
        client.sendall(b"1a")
        assert conn.read_message(length_prefixed) == b"1a"


def test_a_message_cut_by_end_of_file_never_comes_back(listener):
    client, conn = served(matcher(), listener, "127.0.0.2")
    with conn:
        client.sendall(b"ab")
        client.close()
        with pytest.raises(EOFError) as cut:
            conn.recv_exactly(5)
        assert cut.value.partial == b"ab"
        assert conn.recv_exactly(2) == b""  # end of file, not the cut message's bytes
        assert conn.read() == b""


def test_read_inside_a_message_block_counts_as_a_read_of_that_message(listener):
    rules = matcher({"id": 1, "proto": "tcp", "remote_addr": "127.0.0.2", "attrs": "max_msg_chunks=2"})
    client, conn = served(rules, listener, "127.0.0.2")
    with client:
        client.sendall(b"ab")
        with conn.message():
            assert conn.read(1) == b"a"  # the message's first read
            assert conn.read() == b"b"  # already read: no read of the socket
            client.sendall(b"c")
            assert conn.read() == b"c"  # its second read
            with pytest.raises(tcpmgm.MessageTooFragmented):
                conn.read()  # a third: more than max_msg_chunks=2
        assert closed_by_peer(client)
    client, conn = served(rules, listener, "127.0.0.2")
    with client, conn:
        for piece in (b"ab", b"c", b"d"):  # outside a block each read is a whole message
            client.sendall(piece)
            assert conn.read() == piece
        client.shutdown(socket.SHUT_WR)
        assert conn.read() == b""


# -- send_threshold ----------------------------------------------------------------------------


def test_a_send_over_send_threshold_is_logged_counted_and_reported(listener, caplog):
    rules = matcher(
        {"id": 1, "proto": "tcp", "local_addr": "127.0.0.2", "send_threshold": 1000},
        {"id": 2, "proto": "tcp", "local_addr": "127.0.0.3", "send_threshold": 0},
    )
    port = listener.getsockname()[1]
    data = b"x" * (4 << 20)  # far beyond both buffers (set to 64 KiB): sendall blocks until the peer reads
    slow_sends = []

    def blocked_send(source):
        with open_connection(
            rules, "tcp", ("127.0.0.1", port), source=(source, 0), on_slow_send=slow_sends.append
        ) as conn:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
            accepted, _ = listener.accept()
            with accepted:
                accepted.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
                sent = in_thread(lambda: conn.send(data))
                time.sleep(0.1)  # the peer does not read yet: the send stays blocked well past 1000 us
                received = 0
                while received < len(data):
                    received += len(accepted.recv(1 << 16))
                assert sent.get(timeout=HANG) is None
                return conn.policy.rule_id, conn.peer

    before = counted(Event.SLOW_SEND)
    with caplog.at_level(logging.WARNING, logger="tcpmgm.sockets"):
        rule_id, peer = blocked_send("127.0.0.2")
        assert rule_id == 1
        assert counted(Event.SLOW_SEND) == before + 1
        [slow] = slow_sends
        assert (slow.peer, slow.rule_id, slow.threshold_us) == (peer, 1, 1000)
        [record] = [r for r in caplog.records if r.name == "tcpmgm.sockets" and r.levelno == logging.WARNING]
        message = record.getMessage()
        assert "127.0.0.1" in message and str(port) in message and "rule 1" in message
        assert f"{slow.elapsed_us} us" in message
        # The same blocked send under a rule without a threshold is no slow send.
        assert blocked_send("127.0.0.3")[0] == 2
        assert counted(Event.SLOW_SEND) == before + 1 and len(slow_sends) == 1


# -- the README's example of a framework without glue of its own ------------------------------


class StopServing(Exception):
    pass


def readme_example(name):
    """The README's code block that defines ``name``, run: its namespace."""
    from checkout import CHECKOUT

    text = (CHECKOUT / "README.md").read_text(encoding="utf-8")
    blocks = [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]
    [block] = [block for block in blocks if f"def {name}(" in block]
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    return namespace[name]


def test_the_readme_selectors_loop_applies_each_field(listener):
    serve = readme_example("serve")
    rules = matcher(
        {"id": 1, "proto": "tcp", "remote_addr": "127.0.0.2", "msg_read_timeout": 1},
        {"id": 2, "proto": "tcp", "remote_addr": "127.0.0.3", "con_lifetime": 1},
        {"id": 3, "proto": "tcp", "remote_addr": "127.0.0.4", "attrs": "max_msg_chunks=2"},
    )

    parsed = queue.Queue()

    def parse(data):
        if data.startswith(b"STOP"):
            raise StopServing
        parsed.put(bytes(data))
        return length_prefixed(data)

    def run():
        try:
            serve(rules, listener, parse)
        except StopServing:
            return "stopped"

    stopped = in_thread(run)
    before = events.snapshot()
    clients = {
        source: socket.create_connection(listener.getsockname(), timeout=HANG, source_address=(source, 0))
        for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
    }
    try:
        clients["127.0.0.4"].sendall(b"3abc")
        assert clients["127.0.0.4"].recv(16) == b"3abc"  # echoed: a whole message in one read
        clients["127.0.0.2"].sendall(b"5ab")  # never finished: dropped by msg_read_timeout
        assert closed_by_peer(clients["127.0.0.2"])
        assert closed_by_peer(clients["127.0.0.3"])  # never a byte: closed by con_lifetime
        clients["127.0.0.4"].sendall(b"9a")
        while parsed.get(timeout=HANG) != b"9a":  # the server has read it: the next send is another read
            pass
        clients["127.0.0.4"].sendall(b"bc")
        assert closed_by_peer(clients["127.0.0.4"])  # a second incomplete read: max_msg_chunks=2
        after = events.snapshot()
        for event in (Event.MESSAGE_TIMEOUT_CLOSE, Event.IDLE_CLOSE, Event.CHUNK_LIMIT_CLOSE):
            assert after[event] == before[event] + 1
        clients["127.0.0.5"].sendall(b"STOP")
        assert stopped.get(timeout=HANG) == "stopped"
    finally:
        for client in clients.values():
            client.close()


def test_the_readme_thread_per_connection_server(listener):
    serve_one = readme_example("serve_one")
    rules = matcher(
        {"id": 1, "proto": "tcp", "remote_addr": "127.0.0.2", "attrs": "max_msg_chunks=5"},
        {"id": 2, "proto": "tcp", "remote_addr": "127.0.0.3", "con_lifetime": 1},
    )
    silent, accepted_silent = client_of(listener, "127.0.0.3")
    with silent:  # never sends: the server's own thread closes it after con_lifetime
        before = counted(Event.IDLE_CLOSE)
        done = in_thread(lambda: serve_one(rules, accepted_silent))
        assert done.get(timeout=HANG) is None
        assert closed_by_peer(silent)
        assert counted(Event.IDLE_CLOSE) == before + 1
    client, accepted = client_of(listener, "127.0.0.2")
    with client:
        done = in_thread(lambda: serve_one(rules, accepted))
        client.sendall(b"3abc2de")
        echoed = b""
        while len(echoed) < 7:
            echoed += client.recv(16)
        assert echoed == b"3abc2de"  # two messages, each sent back
        client.shutdown(socket.SHUT_WR)
        assert done.get(timeout=HANG) is None
        assert closed_by_peer(client)


@pytest.mark.skipif(not socket.has_ipv6, reason="needs IPv6")
def test_the_policy_on_ipv6_loopback():
    try:
        server = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"no ::1 here: {exc}")
    rules = matcher({"id": 6, "proto": "tcp", "remote_addr": "::1", "attrs": "max_msg_chunks=1", "alias_mode": 2})
    with server:
        server.settimeout(HANG)
        client = socket.create_connection(server.getsockname()[:2], timeout=HANG)
        with client:
            accepted, _ = server.accept()
            conn = Connection.tune(rules, "tcp", accepted)
            assert conn.policy.rule_id == 6 and conn.peer[0] == "::1" and conn.may_alias(False)
            client.sendall(b"4ab")
            with pytest.raises(tcpmgm.MessageTooFragmented, match="rule 6"):
                conn.read_message(length_prefixed)
            assert closed_by_peer(client)
