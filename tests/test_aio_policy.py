"""Every field of a profile acting on real asyncio connections on loopback (issue 14, item 2).

Clients bind to distinct 127.x sources so that a different rule wins for each; each test
shows a field's effect by a contrast between two rules (a closed connection against one that
stays, a logged send against a silent one).  No test asserts a time: deadlines are generous
bounds against hangs, and slow sends are forced by a peer that does not read.
"""

import asyncio
import contextlib
import logging
import socket

import pytest
from keepalive import matcher

import tcpmgm
from tcpmgm.service import aio, events
from tcpmgm.service.events import Event

GENEROUS = 15.0  # seconds: an upper bound for "eventually", never a timing assertion

# The server looks up an accepted connection by its peer: the client's source address.
SERVER_RULES = matcher(
    # a message must be whole within 1 s of its first bytes
    {"id": 101, "proto": "tcp", "remote_addr": "127.0.0.2", "msg_read_timeout": 1, "con_lifetime": 0},
    # no message deadline, no chunk limit, no idle close
    {
        "id": 102,
        "proto": "tcp",
        "remote_addr": "127.0.0.3",
        "msg_read_timeout": 0,
        "con_lifetime": 0,
        "alias_mode": 1,
    },
    {"id": 103, "proto": "tcp", "remote_addr": "127.0.0.4", "con_lifetime": 2, "msg_read_timeout": 0},
    {"id": 104, "proto": "tcp", "remote_addr": "127.0.0.5", "con_lifetime": 0, "alias_mode": 2, "parallel_read": 2},
    # a message may take 3 reads, no more; no deadline, so that only the count can drop it
    {
        "id": 105,
        "proto": "tcp",
        "remote_addr": "127.0.0.7",
        "msg_read_timeout": 0,
        "con_lifetime": 0,
        "attrs": "max_msg_chunks=3",
    },
    {"id": 106, "proto": "tcp", "remote_addr": "127.0.0.8", "con_lifetime": 0, "send_threshold": 1},
    # rule 105 on IPv6
    {
        "id": 107,
        "proto": "tcp",
        "remote_addr": "::1",
        "msg_read_timeout": 0,
        "con_lifetime": 0,
        "attrs": "max_msg_chunks=3",
    },
)
# The client looks up a connection by its source address.
CLIENT_RULES = matcher(
    {"id": 111, "proto": "tcp", "local_addr": "127.0.0.2", "send_threshold": 1, "con_lifetime": 0},
    {"id": 112, "proto": "tcp", "local_addr": "127.0.0.3", "send_threshold": 0, "con_lifetime": 0},
    {"id": 113, "proto": "tcp", "local_addr": "127.0.0.6", "no_new_conn": 1},
    {"id": 114, "proto": "tcp", "local_addr": "127.0.0.7", "connect_timeout": 50},
    {"id": 115, "proto": "tcp", "local_addr": "127.0.0.8", "connect_timeout": 0},
)


def _ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


HAVE_IPV6 = _ipv6_loopback()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, GENEROUS * 3))


def counts():
    return events.snapshot()


def counted_since(before, event):
    return events.snapshot()[event] - before[event]


def listening_host(source):
    return "::1" if ":" in source else "127.0.0.1"


async def serving(handle, host="127.0.0.1", **options):
    server = await aio.start_server(SERVER_RULES, handle, host, 0, proto="tcp", **options)
    return server, server.sockets[0].getsockname()[1]


async def raw_client(port, source):
    """A plain asyncio client (no rules of its own) from ``source``."""
    return await asyncio.open_connection(listening_host(source), port, local_addr=(source, 0))


async def hung_up(reader):
    """True once the other end closed the connection (end of file or a reset)."""
    try:
        return await asyncio.wait_for(reader.read(), GENEROUS) == b""
    except ConnectionResetError:
        return True


# -- one message, read five ways ------------------------------------------------------
# A length-prefixed message that also ends with a newline, so that every read helper can frame it.
MESSAGE = b"\x00\x08abcdefg\n"


def length_prefixed(buffer):
    if len(buffer) < 2:
        return None
    size = 2 + int.from_bytes(buffer[:2], "big")
    return size if len(buffer) >= size else None


async def by_read_message(conn):
    return await conn.read_message(length_prefixed)


async def by_readexactly(conn):
    return await conn.readexactly(len(MESSAGE))


async def by_readuntil(conn):
    return await conn.readuntil(b"\n")


async def by_header_then_body(conn):
    with conn.message():
        header = await conn.readexactly(2)
        return header + await conn.readexactly(int.from_bytes(header, "big"))


async def by_reads_in_a_message(conn):
    with conn.message():
        data = b""
        while len(data) < len(MESSAGE):
            chunk = await conn.read()
            if not chunk:
                raise asyncio.IncompleteReadError(data, len(MESSAGE))
            data += chunk
        return data


READERS = [by_read_message, by_readexactly, by_readuntil, by_header_then_body, by_reads_in_a_message]


@pytest.mark.parametrize("read", READERS, ids=lambda reader: reader.__name__)
def test_a_message_not_whole_within_msg_read_timeout_drops_the_connection(read):
    async def scenario():
        loop = asyncio.get_running_loop()
        outcome = {"127.0.0.2": loop.create_future(), "127.0.0.3": loop.create_future()}

        async def handle(conn):
            try:
                outcome[conn.peer[0]].set_result(await read(conn))
            except tcpmgm.ConnectionDropped as dropped:
                closing = conn.writer.is_closing()
                after = await conn.read()  # the connection is gone: end of file, not the same drop again
                outcome[conn.peer[0]].set_result((type(dropped), dropped.rule_id, closing, after))

        before = counts()
        server, port = await serving(handle)
        async with server:
            _patient_reader, patient = await raw_client(port, "127.0.0.3")  # rule 102: no deadline
            hasty_reader, hasty = await raw_client(port, "127.0.0.2")  # rule 101: 1 s
            for writer in (patient, hasty):
                writer.write(MESSAGE[:5])  # the header and part of the body, then nothing
                await writer.drain()
            dropped = await asyncio.wait_for(outcome["127.0.0.2"], GENEROUS)
            assert await hung_up(hasty_reader)
            # Rule 102's message was started before rule 101's ran out, and still completes.
            assert not outcome["127.0.0.3"].done()
            patient.write(MESSAGE[5:])
            await patient.drain()
            completed = await asyncio.wait_for(outcome["127.0.0.3"], GENEROUS)
            for writer in (patient, hasty):
                writer.close()
        return dropped, completed, counted_since(before, Event.MESSAGE_TIMEOUT_CLOSE)

    dropped, completed, closes = run(scenario())
    assert dropped == (tcpmgm.MessageTimeout, 101, True, b"")
    assert completed == MESSAGE
    assert closes == 1


def test_the_start_of_the_next_message_read_with_the_last_arms_its_deadline():
    """The bytes after a message, read with it, are the next message's first: its deadline
    runs from them, not from a read that never comes."""

    async def scenario():
        messages = []
        outcome = asyncio.get_running_loop().create_future()

        async def handle(conn):
            try:
                while True:
                    messages.append(await conn.read_message(length_prefixed))
            except tcpmgm.ConnectionDropped as dropped:
                outcome.set_result(type(dropped))

        server, port = await serving(handle)
        async with server:
            reader, writer = await raw_client(port, "127.0.0.2")  # rule 101: 1 s
            writer.write(MESSAGE + MESSAGE[:5])  # one message and the start of the next, then nothing
            await writer.drain()
            dropped = await asyncio.wait_for(outcome, GENEROUS)
            assert await hung_up(reader)
            writer.close()
        return messages, dropped

    assert run(scenario()) == ([MESSAGE], tcpmgm.MessageTimeout)


@pytest.mark.parametrize(
    ("read", "sent", "expected"),
    [
        (by_read_message, b"", b""),  # end of file between messages
        (by_read_message, MESSAGE[:5], (asyncio.IncompleteReadError, MESSAGE[:5], None)),
        (by_readexactly, b"", (asyncio.IncompleteReadError, b"", len(MESSAGE))),
        (by_readexactly, MESSAGE[:5], (asyncio.IncompleteReadError, MESSAGE[:5], len(MESSAGE))),
        (by_readuntil, MESSAGE[:5], (asyncio.IncompleteReadError, MESSAGE[:5], None)),
        (by_readuntil, b"x" * (aio.READUNTIL_LIMIT + 1), asyncio.LimitOverrunError),
    ],
    ids=["read_message-eof", "read_message-short", "readexactly-eof", "readexactly-short", "readuntil-short", "limit"],
)
def test_end_of_file_and_the_readuntil_limit_as_asyncio_streams_have_them(read, sent, expected):
    async def scenario():
        outcome = asyncio.get_running_loop().create_future()

        async def handle(conn):
            try:
                outcome.set_result(await read(conn))
            except asyncio.IncompleteReadError as short:
                outcome.set_result((type(short), short.partial, short.expected))
            except asyncio.LimitOverrunError as overrun:
                outcome.set_result(type(overrun))

        server, port = await serving(handle)
        async with server:
            _reader, writer = await raw_client(port, "127.0.0.3")  # rule 102: no deadline
            writer.write(sent)
            if not isinstance(expected, type):
                writer.write_eof()
            await writer.drain()
            result = await asyncio.wait_for(outcome, GENEROUS)
            writer.close()
        return result

    assert run(scenario()) == expected


def test_a_message_cut_by_end_of_file_never_comes_back_and_readexactly_0_reads_nothing():
    async def scenario():
        outcome = asyncio.get_running_loop().create_future()

        async def handle(conn):
            nothing = await conn.readexactly(0)  # before any byte is sent: must not wait for one
            try:
                await conn.readexactly(5)
            except asyncio.IncompleteReadError as short:
                cut = short.partial
            # The cut message's bytes were given up with it: never a message of their own.
            outcome.set_result((nothing, cut, await conn.read_message(length_prefixed), await conn.read()))

        server, port = await serving(handle)
        async with server:
            _reader, writer = await raw_client(port, "127.0.0.3")  # rule 102: no deadline
            await asyncio.sleep(0.1)  # readexactly(0) runs before anything is sent
            writer.write(b"\x00\x01a")
            writer.write_eof()
            await writer.drain()
            result = await asyncio.wait_for(outcome, GENEROUS)
            writer.close()
        return result

    assert run(scenario()) == (b"", b"\x00\x01a", b"", b"")


def test_message_timeout_is_a_timeout_error():
    assert issubclass(tcpmgm.MessageTimeout, TimeoutError)


# -- max_msg_chunks ------------------------------------------------------------------
async def _send_in_pieces(port, source, pieces, progress):
    """Send MESSAGE from ``source`` in ``pieces`` pieces, each once the server has read the
    one before (``progress`` says so; ``None``: it gave up), so that each is a read of its own."""
    _reader, writer = await raw_client(port, source)
    size = -(-len(MESSAGE) // pieces)
    try:
        for start in range(0, len(MESSAGE), size):
            if start and await asyncio.wait_for(progress.get(), GENEROUS) is None:
                break
            writer.write(MESSAGE[start : start + size])
            await writer.drain()
    except ConnectionError:
        pass  # the last piece went to a connection the server had dropped
    finally:
        writer.close()


def report_reads(conn, progress):
    """Wrap the connection's asyncio StreamReader so that each read it serves is reported:
    the client sends its next piece only then, so that each piece is a read of its own."""
    read = conn.reader.read

    async def reported(n=-1):
        data = await read(n)
        if data:
            progress.put_nowait(len(data))
        return data

    conn.reader.read = reported


@pytest.mark.parametrize("read", READERS, ids=lambda reader: reader.__name__)
@pytest.mark.parametrize(
    ("source", "pieces", "expected"),
    [
        ("127.0.0.7", 3, MESSAGE),  # rule 105: 3 reads are allowed
        ("127.0.0.7", 4, (tcpmgm.MessageTooFragmented, 105, True, b"")),  # a fourth read is one too many
        ("127.0.0.3", 10, MESSAGE),  # rule 102: no limit
        ("::1", 3, MESSAGE),  # rule 107, on IPv6: 3 reads are allowed
        ("::1", 4, (tcpmgm.MessageTooFragmented, 107, True, b"")),
    ],
)
def test_a_message_needing_more_reads_than_max_msg_chunks_drops_the_connection(read, source, pieces, expected):
    if ":" in source and not HAVE_IPV6:
        pytest.skip("no IPv6 loopback (::1) on this machine")

    async def scenario():
        progress = asyncio.Queue()
        result = asyncio.get_running_loop().create_future()

        async def handle(conn):
            report_reads(conn, progress)
            try:
                result.set_result(await read(conn))
            except tcpmgm.ConnectionDropped as dropped:
                closing = conn.writer.is_closing()
                after = await conn.read()
                result.set_result((type(dropped), dropped.rule_id, closing, after))
                progress.put_nowait(None)

        before = counts()
        server, port = await serving(handle, listening_host(source))
        async with server:
            await _send_in_pieces(port, source, pieces, progress)
            outcome = await asyncio.wait_for(result, GENEROUS)
        return outcome, counted_since(before, Event.CHUNK_LIMIT_CLOSE)

    outcome, closes = run(scenario())
    assert outcome == expected
    assert closes == (0 if expected == MESSAGE else 1)


# -- con_lifetime ---------------------------------------------------------------------
def test_an_idle_connection_is_closed_and_counted():
    async def scenario():
        outcome = {}

        async def handle(conn):
            outcome["idle timeout"] = conn.policy.idle_timeout
            outcome["read"] = await conn.read(100)  # nothing comes: the idle close ends it

        before = counts()
        server, port = await serving(handle)
        async with server:
            reader, writer = await raw_client(port, "127.0.0.4")  # rule 103: con_lifetime 2
            outcome["hung up"] = await hung_up(reader)
            writer.close()
        outcome["counted"] = counted_since(before, Event.IDLE_CLOSE)
        return outcome

    assert run(scenario()) == {"idle timeout": 2.0, "read": b"", "hung up": True, "counted": 1}


ROUNDS, PAUSE = 12, 0.2  # 2.4 s of activity, longer than rule 103's con_lifetime of 2 s


@pytest.mark.parametrize("activity", ["reads", "writes"])
def test_every_read_and_every_write_postpones_the_idle_close(activity):
    async def scenario():
        outcome = {}

        async def handle(conn):
            for _ in range(ROUNDS):
                if activity == "reads":
                    if await conn.read(1) != b"x":
                        return
                else:
                    conn.write(b"y")
                    await conn.drain()
                    await asyncio.sleep(PAUSE)
            outcome["server kept it"] = True
            outcome["then"] = await conn.read()  # now idle: closed after con_lifetime

        before = counts()
        server, port = await serving(handle)
        async with server:
            reader, writer = await raw_client(port, "127.0.0.4")  # rule 103: con_lifetime 2
            if activity == "reads":
                for _ in range(ROUNDS):
                    writer.write(b"x")
                    await writer.drain()
                    await asyncio.sleep(PAUSE)
            else:
                outcome["received"] = await asyncio.wait_for(reader.readexactly(ROUNDS), GENEROUS)
            outcome["hung up"] = await hung_up(reader)
            writer.close()
        outcome["counted"] = counted_since(before, Event.IDLE_CLOSE)
        return outcome

    expected = {"server kept it": True, "then": b"", "hung up": True, "counted": 1}
    if activity == "writes":
        expected["received"] = b"y" * ROUNDS
    assert run(scenario()) == expected


# -- send_threshold -------------------------------------------------------------------
BULK = b"z" * (4 << 20)


async def _blocked_send(conn, peer_may_read):
    """Write more than the kernel and the transport's high-water mark hold to a peer that is
    not reading, then let the peer read and drain: the drain has to wait for the peer."""
    conn.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    conn.write(BULK)
    _low, high = conn.writer.transport.get_write_buffer_limits()
    assert conn.writer.transport.get_write_buffer_size() > high  # so drain() must wait
    peer_may_read.set()
    await conn.drain()


@pytest.mark.parametrize(("source", "rule_id", "slow"), [("127.0.0.2", 111, True), ("127.0.0.3", 112, False)])
def test_a_send_over_send_threshold_is_logged_counted_and_hooked(caplog, source, rule_id, slow):
    async def scenario():
        peer_may_read = asyncio.Event()
        received = asyncio.get_running_loop().create_future()

        async def lazy_peer(reader, writer):
            await peer_may_read.wait()
            received.set_result(len(await reader.readexactly(len(BULK))))
            writer.close()

        hooked = []
        before = counts()
        server = await asyncio.start_server(lazy_peer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            conn = await aio.open_connection(
                CLIENT_RULES, "tcp", "127.0.0.1", port, local_addr=(source, 0), on_slow_send=hooked.append
            )
            await _blocked_send(conn, peer_may_read)
            assert await asyncio.wait_for(received, GENEROUS) == len(BULK)
            conn.close()
            await conn.wait_closed()
        return conn, hooked, counted_since(before, Event.SLOW_SEND)

    with caplog.at_level(logging.WARNING, logger="tcpmgm.aio"):
        conn, hooked, slow_sends = run(scenario())
    warnings = [r.getMessage() for r in caplog.records if r.name == "tcpmgm.aio" and r.levelno == logging.WARNING]
    assert conn.profile.id == rule_id
    if not slow:  # send_threshold 0: not set, however long the send
        assert (hooked, warnings, slow_sends) == ([], [], 0)
        return
    [report] = hooked
    assert (report.peer, report.rule_id, report.threshold_us) == (conn.peer, 111, 1)
    assert warnings == [f"slow send to {conn.peer}: {report.elapsed_us} us under rule 111 (send_threshold 1 us)"]
    assert slow_sends == 1


def test_the_server_side_times_its_sends_too(caplog):
    async def scenario():
        peer_may_read = asyncio.Event()
        hooked = []
        sent = asyncio.get_running_loop().create_future()

        async def handle(conn):
            await _blocked_send(conn, peer_may_read)
            sent.set_result(conn.profile.id)

        server, port = await serving(handle, on_slow_send=hooked.append)
        async with server:
            reader, writer = await raw_client(port, "127.0.0.8")  # rule 106: send_threshold 1 us
            await peer_may_read.wait()
            assert len(await asyncio.wait_for(reader.readexactly(len(BULK)), GENEROUS)) == len(BULK)
            rule_id = await asyncio.wait_for(sent, GENEROUS)
            writer.close()
        return rule_id, hooked

    with caplog.at_level(logging.WARNING, logger="tcpmgm.aio"):
        rule_id, hooked = run(scenario())
    assert rule_id == 106
    assert [(report.rule_id, report.peer[0]) for report in hooked] == [(106, "127.0.0.8")]
    assert any("under rule 106" in r.getMessage() for r in caplog.records if r.name == "tcpmgm.aio")


# -- no_new_conn and connect_timeout ------------------------------------------------------
def test_a_refused_connection_is_counted_and_opens_nothing():
    async def scenario():
        accepted = []

        async def handle(conn):
            accepted.append(conn.peer[0])

        before = counts()
        server, port = await serving(handle)
        async with server:
            with pytest.raises(tcpmgm.NoNewConnection, match="rule 113"):
                await aio.open_connection(CLIENT_RULES, "tcp", "127.0.0.1", port, local_addr=("127.0.0.6", 0))
            refusals = counted_since(before, Event.NO_NEW_CONN_REFUSED)
            conn = await aio.open_connection(CLIENT_RULES, "tcp", "127.0.0.1", port, local_addr=("127.0.0.3", 0))
            conn.close()
            await conn.wait_closed()
            while not accepted:
                await asyncio.sleep(0.01)
        return accepted, refusals, counted_since(before, Event.NO_NEW_CONN_REFUSED)

    assert run(scenario()) == (["127.0.0.3"], 1, 1)


def test_each_address_of_a_host_is_tried_and_a_refusal_counted_once_per_connect(monkeypatch):
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):  # a host name with two addresses; nothing listens on the first
        if host != "two.example.test":
            return real(host, port, *args, **kwargs)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, port))
            for ip in ("127.0.0.9", "127.0.0.1")
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    async def scenario():
        server, port = await serving(lambda conn: asyncio.sleep(0))
        async with server:
            before = counts()
            conn = await aio.open_connection(CLIENT_RULES, "tcp", "two.example.test", port, local_addr=("127.0.0.3", 0))
            peer = conn.writer.get_extra_info("peername")[:2]
            conn.close()
            await conn.wait_closed()
            with pytest.raises(tcpmgm.NoNewConnection, match="rule 113"):  # both addresses forbidden
                await aio.open_connection(CLIENT_RULES, "tcp", "two.example.test", port, local_addr=("127.0.0.6", 0))
            return peer == ("127.0.0.1", port), counted_since(before, Event.NO_NEW_CONN_REFUSED)

    assert run(scenario()) == (True, 1)


def test_connect_timeout_bounds_a_connect_that_gets_no_answer():
    """A listener whose accept queue is full drops new SYNs: a connect there waits for an
    answer. Rule 114 gives up after its connect_timeout; rule 115 (0: no limit) waits on and
    connects once the queue has room again."""

    async def scenario():
        loop = asyncio.get_running_loop()
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            listener.setblocking(False)
            port = listener.getsockname()[1]
            filler = socket.create_connection(("127.0.0.1", port), timeout=GENEROUS)  # fills the queue
            try:
                patient = loop.create_task(
                    aio.open_connection(CLIENT_RULES, "tcp", "127.0.0.1", port, local_addr=("127.0.0.8", 0))
                )
                with pytest.raises(asyncio.TimeoutError):
                    await aio.open_connection(CLIENT_RULES, "tcp", "127.0.0.1", port, local_addr=("127.0.0.7", 0))
                assert not patient.done()
                accepted = []
                while not patient.done():  # make room until the patient connect is through
                    with contextlib.suppress(asyncio.TimeoutError):
                        accepted.append((await asyncio.wait_for(loop.sock_accept(listener), 0.5))[0])
                conn = await patient
                conn.close()
                await conn.wait_closed()
                for sock in accepted:
                    sock.close()
                return conn.profile.id, conn.policy.connect_timeout
            finally:
                filler.close()

    assert run(scenario()) == (115, None)


# -- alias_mode, parallel_read ----------------------------------------------------------
def test_may_alias_answers_from_each_rules_alias_mode():
    async def scenario():
        answers = {}
        done = asyncio.Event()

        async def handle(conn):
            answers[conn.profile.id] = (conn.may_alias(False), conn.may_alias(True), conn.policy.parallel_read)
            if len(answers) == 3:
                done.set()
            await conn.read()

        server, port = await serving(handle)
        async with server:
            clients = [await raw_client(port, source) for source in ("127.0.0.2", "127.0.0.3", "127.0.0.5")]
            await asyncio.wait_for(done.wait(), GENEROUS)
            for _reader, writer in clients:
                writer.close()
        return answers

    assert run(scenario()) == {
        101: (False, False, 0),  # alias_mode 0: never
        102: (False, True, 0),  # 1: only when the request asks with ;alias
        104: (True, True, 2),  # 2: always; parallel_read carried, nothing to apply in Python
    }
