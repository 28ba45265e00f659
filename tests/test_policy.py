"""tcpmgm.ConnectionPolicy: a profile in a socket API's terms, the message guard and the send timer."""

import logging
import pickle
import socket

import pytest

import tcpmgm
from tcpmgm.service import events
from tcpmgm.service import policy as policy_module
from tcpmgm.service.events import Event
from tcpmgm.service.policy import ConnectionPolicy, SlowSend


class FakeClock:
    """A clock the test moves by hand: deadlines without waiting, and without asserting times."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counted(event):
    return events.snapshot()[event]


def policy(**values):
    return ConnectionPolicy.from_profile(tcpmgm.Profile(id=9, **values))


def test_the_deadlines_in_seconds_and_none_where_a_field_means_not_set():
    made = policy(connect_timeout=250, con_lifetime=30, msg_read_timeout=2, send_threshold=1500)
    assert (made.rule_id, made.connect_timeout, made.idle_timeout, made.message_timeout) == (9, 0.25, 30.0, 2.0)
    assert made.send_threshold == 1500
    unset = policy(connect_timeout=0, con_lifetime=0, msg_read_timeout=0, send_threshold=0)
    assert (unset.connect_timeout, unset.idle_timeout, unset.message_timeout, unset.send_threshold) == (None,) * 4
    assert tcpmgm.ConnectionPolicy is ConnectionPolicy


def test_max_msg_chunks_from_attrs_none_when_absent_or_not_positive():
    assert policy().max_msg_chunks is None
    assert policy(attrs={"max_msg_chunks": 3}).max_msg_chunks == 3
    assert policy(attrs={"max_msg_chunks": 0}).max_msg_chunks is None
    assert policy(attrs={"max_msg_chunks": -2}).max_msg_chunks is None


@pytest.mark.parametrize(
    ("mode", "without", "with_alias"),
    [(0, False, False), (1, False, True), (2, True, True)],
)
def test_may_alias_follows_alias_mode(mode, without, with_alias):
    made = policy(alias_mode=mode)
    assert made.alias_mode == mode
    assert made.may_alias(False) is without
    assert made.may_alias(True) is with_alias


def test_the_rest_of_the_profile_is_exposed_as_it_is():
    made = policy(no_new_conn=True, parallel_read=2)
    assert made.no_new_conn is True and made.parallel_read == 2
    assert made.profile == tcpmgm.Profile(id=9, no_new_conn=True, parallel_read=2)


def test_the_policy_is_a_frozen_value():
    made = policy()
    with pytest.raises(AttributeError):
        made.profile = tcpmgm.Profile()  # type: ignore[misc]
    assert made == policy() and hash(made) == hash(policy())
    assert made != ConnectionPolicy.from_profile(made.profile, on_slow_send=print)


def test_apply_sets_what_tcpmgm_apply_sets():
    profile = tcpmgm.Profile(id=9, keepalive=True, keepidle=40, keepinterval=7, keepcount=3)
    with socket.socket() as by_policy, socket.socket() as by_function:
        assert ConnectionPolicy.from_profile(profile).apply(by_policy) == tcpmgm.apply(by_function, profile)
        assert by_policy.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert by_policy.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 40


def test_a_message_whole_at_its_first_read_never_arms_the_guard():
    clock = FakeClock()
    guard = policy(msg_read_timeout=2, attrs={"max_msg_chunks": 1}).message_guard(clock=clock)
    assert guard.remaining() is None and not guard.armed
    clock.now += 10**6  # however long the connection waited for the message to start
    guard.complete()
    assert guard.remaining() is None


def test_the_deadline_runs_from_the_first_incomplete_read():
    clock = FakeClock()
    guard = policy(msg_read_timeout=2).message_guard(("127.0.0.2", 5060), clock=clock)
    clock.now += 500  # idle before the message: no part of its budget
    guard.incomplete()
    assert guard.armed and guard.remaining() == 2.0
    clock.now += 1.5
    guard.incomplete()
    assert guard.remaining() == pytest.approx(0.5)
    before = counted(Event.MESSAGE_TIMEOUT_CLOSE)
    clock.now += 0.5
    with pytest.raises(tcpmgm.MessageTimeout, match=r"127\.0\.0\.2.*rule 9") as info:
        guard.remaining()
    assert counted(Event.MESSAGE_TIMEOUT_CLOSE) == before + 1
    assert info.value.rule_id == 9 and info.value.peer == ("127.0.0.2", 5060)
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, tcpmgm.ConnectionDropped)


def test_a_read_after_the_deadline_does_not_save_the_message():
    clock = FakeClock()
    guard = policy(msg_read_timeout=1).message_guard(clock=clock)
    guard.incomplete()
    clock.now += 5
    with pytest.raises(tcpmgm.MessageTimeout):
        guard.incomplete()


def test_complete_gives_the_next_message_a_fresh_budget():
    clock = FakeClock()
    guard = policy(msg_read_timeout=2, attrs={"max_msg_chunks": 3}).message_guard(clock=clock)
    for _ in range(5):  # five messages of two incomplete reads each: never three for one message
        guard.incomplete()
        guard.incomplete()
        clock.now += 1.9
        assert guard.remaining() is not None
        guard.complete()
        assert not guard.armed and guard.remaining() is None
        clock.now += 100


def test_the_chunk_limit_drops_at_the_read_that_leaves_the_message_incomplete_for_the_nth_time():
    guard = policy(msg_read_timeout=0, attrs={"max_msg_chunks": 3}).message_guard(("127.0.0.3", 1))
    guard.incomplete()
    guard.incomplete()  # two reads, incomplete: a third may still complete it
    before = counted(Event.CHUNK_LIMIT_CLOSE)
    with pytest.raises(tcpmgm.MessageTooFragmented, match=r"3 reads.*rule 9 allows 3") as info:
        guard.incomplete()
    assert counted(Event.CHUNK_LIMIT_CLOSE) == before + 1
    assert info.value.rule_id == 9 and isinstance(info.value, tcpmgm.ConnectionDropped)


def test_no_limits_no_drop():
    clock = FakeClock()
    guard = policy(msg_read_timeout=0).message_guard(clock=clock)
    for _ in range(1000):
        guard.incomplete()
        clock.now += 3600
    assert guard.remaining() is None


def test_the_dropped_errors_pickle_with_their_rule_and_peer():
    error = tcpmgm.MessageTooFragmented("too many", rule_id=4, peer=("::1", 5))
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is tcpmgm.MessageTooFragmented
    assert (str(copy), copy.rule_id, copy.peer) == ("too many", 4, ("::1", 5))


def test_report_send_over_the_threshold_logs_counts_and_calls_the_hook(caplog):
    seen = []
    made = ConnectionPolicy.from_profile(tcpmgm.Profile(id=12, send_threshold=100), on_slow_send=seen.append)
    before = counted(Event.SLOW_SEND)
    with caplog.at_level(logging.WARNING, logger="tcpmgm.sockets"):
        assert made.report_send(100, ("127.0.0.2", 7)) is False  # at the threshold is not over it
        assert made.report_send(101, ("127.0.0.2", 7)) is True
    assert counted(Event.SLOW_SEND) == before + 1
    assert seen == [SlowSend(("127.0.0.2", 7), 12, 101, 100)]
    [record] = [r for r in caplog.records if r.name == "tcpmgm.sockets"]
    assert record.levelno == logging.WARNING
    assert "127.0.0.2" in record.getMessage() and "rule 12" in record.getMessage() and "101 us" in record.getMessage()


def test_without_a_threshold_no_send_is_slow(caplog):
    made = ConnectionPolicy.from_profile(tcpmgm.Profile(send_threshold=0), on_slow_send=pytest.fail)
    before = counted(Event.SLOW_SEND)
    with caplog.at_level(logging.WARNING, logger="tcpmgm.sockets"):
        assert made.report_send(10**9) is False
    assert counted(Event.SLOW_SEND) == before and not caplog.records


def test_the_send_timer_measures_its_block_even_when_it_raises(monkeypatch):
    ticks = iter([5_000_000, 5_250_999])  # ns: the block takes 250.999 us, reported as 250
    monkeypatch.setattr(policy_module.time, "perf_counter_ns", lambda: next(ticks))
    seen = []
    made = ConnectionPolicy.from_profile(tcpmgm.Profile(id=3, send_threshold=200), on_slow_send=seen.append)
    timer = made.send_timer("peer")
    with pytest.raises(ValueError), timer:
        raise ValueError
    assert timer.elapsed_us == 250
    assert seen == [SlowSend("peer", 3, 250, 200)]


# -- the message reader: the read helpers without I/O, driven here by hand ---------------------


def drive(steps, reads):
    """Run a reader helper with ``reads`` as the bytes of successive reads: (result, the waits it asked for)."""
    waits = []
    try:
        waits.append(next(steps))
        for data in reads:
            waits.append(steps.send(data))
    except StopIteration as done:
        return done.value, waits
    raise AssertionError(f"still reading after {reads!r}")


def test_the_reader_frames_messages_and_keeps_the_bytes_after_them():
    clock = FakeClock()
    reader = policy(msg_read_timeout=2).message_reader(clock=clock)
    assert drive(reader.until(b"\n"), [b"ab", b"c\nde"]) == (b"abc\n", [None, 2.0])  # the rest of a message: 2 s
    assert drive(reader.exactly(2), []) == (b"de", [])  # already read: no read at all
    assert drive(reader.exactly(0), []) == (b"", [])
    assert drive(reader.read(), [b"xyz"]) == (b"xyz", [None])
    assert drive(reader.read_message(lambda buffer: None), [b""]) == (b"", [None])  # end of file first


def test_end_of_file_inside_a_message_gives_its_bytes_up():
    reader = policy().message_reader(("127.0.0.2", 5060))
    steps = reader.exactly(5)
    next(steps)
    steps.send(b"ab")
    with pytest.raises(policy_module.IncompleteMessage) as cut:
        steps.send(b"")
    assert cut.value.partial == b"ab" and isinstance(cut.value, EOFError)
    assert drive(reader.exactly(2), [b""]) == (b"", [None])  # not the cut message's b"ab"


def test_a_drop_gives_the_message_up_and_starts_the_next_afresh():
    clock = FakeClock()
    reader = policy(msg_read_timeout=1).message_reader(clock=clock)
    steps = reader.exactly(4)
    next(steps)
    assert steps.send(b"ab") == 1.0
    clock.now += 2
    with pytest.raises(tcpmgm.MessageTimeout):
        reader.expired()  # the glue's wait ran out
    assert drive(reader.exactly(2), [b"cd"]) == (b"cd", [None])  # a fresh message, not armed
