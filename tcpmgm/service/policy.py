"""The connection policy: what a matched profile asks of one connection, for any framework.

A :class:`ConnectionPolicy` is made from a :class:`Profile`
(:meth:`ConnectionPolicy.from_profile`) and answers in the units a socket
API takes: deadlines in seconds (``None``: no limit), the send threshold in
microseconds, the chunk limit, whether aliasing is allowed.  It also holds
the two pieces every glue uses, so that their semantics are defined here
once (docs/operations.md#the-connection-policy):

- :class:`MessageGuard`, one message's read budget: armed when a read leaves
  a message incomplete (its first bytes have arrived), it allows
  ``message_timeout`` seconds from then and ``max_msg_chunks`` reads in all;
- :class:`MessageReader`, the read helpers of a connection without their
  I/O: the buffer, the framing (a :data:`Parser`), the guard, the
  ``message()`` block and what end of file means; a glue supplies only its
  read (see :data:`ReadSteps`);
- :class:`SendTimer`, a send measured in microseconds against
  ``send_threshold``.

What OpenSIPS does with each field (read from its source, net/ and
modules/proto_tcp, version 4.1.0-dev of 2026-08): ``con_lifetime`` is an
idle expiry that every read and write pushes back; ``msg_read_timeout`` is
armed at the first read that leaves a message incomplete and the connection
is dropped when the message is not complete in time; ``max_msg_chunks``
drops it at the read that leaves the message incomplete for the
``max_msg_chunks``-th time (a value of 0 or less never does);
``send_threshold`` times each send in microseconds and logs a warning when
the time is above it; ``alias_mode`` decides whether the connection may be
reused for requests to the peer.  A guard or a timer that drops, refuses or
reports counts it in :mod:`tcpmgm.service.events`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Generator, Iterator
from types import TracebackType
from typing import Any, NamedTuple, NoReturn

from ..model.errors import ConnectionDropped, MessageTimeout, MessageTooFragmented
from ..model.profile import Profile
from . import events
from .events import Event
from .sockets import apply, connect_timeout

__all__ = [
    "ALIAS_ALWAYS",
    "ALIAS_NEVER",
    "ALIAS_RFC_5923",
    "ConnectionPolicy",
    "IncompleteMessage",
    "MessageGuard",
    "MessageReader",
    "Parser",
    "ReadSteps",
    "SendTimer",
    "SlowSend",
    "SlowSendHook",
    "through",
]

# Slow sends are a socket matter: they log where tcpmgm.apply's warnings do (tcpmgm.sockets).
log = logging.getLogger("tcpmgm.sockets")

# alias_mode's values, OpenSIPS's enum tcp_conn_alias_mode.
ALIAS_NEVER = 0
ALIAS_RFC_5923 = 1  # only when the request's Via asks with ";alias" (RFC 5923)
ALIAS_ALWAYS = 2

# The attrs name of the chunk limit (registered in tcpmgm/model/profile.py).
MAX_MSG_CHUNKS = "max_msg_chunks"


class SlowSend(NamedTuple):
    """One send that took longer than its rule's ``send_threshold``: what the hook is given."""

    peer: Any  # (ip, port) or whatever the caller named the other end with
    rule_id: int
    elapsed_us: int
    threshold_us: int


SlowSendHook = Callable[[SlowSend], object]

# A framed protocol's parser, as every glue's read_message takes it: given the bytes read so
# far (the message at their start), the length of the message once they hold all of it, else None.
Parser = Callable[[bytearray], "int | None"]


# One read helper of a MessageReader, without its I/O: a generator that yields how long the
# next read may wait (seconds, None: no limit), is sent what that read brought (b"": end of
# file) and returns the result.  The glue's loop: wait = next(steps); then
# wait = steps.send(read within wait) until StopIteration carries the result.
ReadSteps = Generator["float | None", bytes, bytes]


def through(separator: bytes) -> Parser:
    """The framing "up to and including ``separator``" as a :data:`Parser`."""

    def through_separator(buffer: bytearray) -> int | None:
        found = buffer.find(separator)
        return None if found < 0 else found + len(separator)

    return through_separator


def _seconds(value: int) -> float | None:
    """A profile's timeout in whole seconds as a socket API takes it; 0 means no limit."""
    return float(value) if value else None


@dataclasses.dataclass(frozen=True)
class ConnectionPolicy:
    """What one connection's profile asks, in the terms a socket API takes.

    The same object serves the blocking helpers (:mod:`tcpmgm.sockets`), the
    asyncio ones (:mod:`tcpmgm.aio`) and any other framework.  ``on_slow_send``
    is called with a :class:`SlowSend` after each send over the threshold.
    """

    profile: Profile
    on_slow_send: SlowSendHook | None = None

    @classmethod
    def from_profile(cls, profile: Profile, *, on_slow_send: SlowSendHook | None = None) -> ConnectionPolicy:
        return cls(profile, on_slow_send)

    @property
    def rule_id(self) -> int:
        """The rule the profile came from (0: the default profile)."""
        return self.profile.id

    # -- what to do before and around connecting ---------------------------------
    def apply(self, sock: Any) -> dict[str, int]:
        """Set the profile's socket options on ``sock``: :func:`tcpmgm.apply`."""
        return apply(sock, self.profile)

    @property
    def connect_timeout(self) -> float | None:
        """Seconds a connect may take (``connect_timeout`` is in ms); ``None``: no limit of ours."""
        return connect_timeout(self.profile)

    @property
    def no_new_conn(self) -> bool:
        """Whether opening a connection on this path is refused (accepting one is fine)."""
        return self.profile.no_new_conn

    # -- deadlines -------------------------------------------------------------------
    @property
    def idle_timeout(self) -> float | None:
        """Seconds without a read or write after which the connection is closed (``con_lifetime``)."""
        return _seconds(self.profile.con_lifetime)

    @property
    def message_timeout(self) -> float | None:
        """Seconds from a message's first bytes to its end (``msg_read_timeout``)."""
        return _seconds(self.profile.msg_read_timeout)

    @property
    def max_msg_chunks(self) -> int | None:
        """The most reads one message may take (``attrs`` ``max_msg_chunks``); ``None``: no limit.

        Absent, 0 or negative mean no limit, as in OpenSIPS (where an absent
        value falls back to its global ``tcp_max_msg_chunks`` instead).
        """
        value = self.profile.attrs.get(MAX_MSG_CHUNKS)
        return value if value is not None and value > 0 else None

    @property
    def send_threshold(self) -> int | None:
        """Microseconds above which a send is reported as slow; ``None``: not set."""
        return self.profile.send_threshold or None

    # -- what the application decides with it ------------------------------------------
    @property
    def alias_mode(self) -> int:
        return self.profile.alias_mode

    def may_alias(self, asked_alias: bool) -> bool:
        """May this connection be reused for requests towards its peer?

        ``asked_alias``: the request's top Via carries RFC 5923's ``;alias``.
        ``alias_mode`` 0 never, 1 only when asked, 2 always.
        """
        mode = self.profile.alias_mode
        return mode == ALIAS_ALWAYS or (mode == ALIAS_RFC_5923 and asked_alias)

    @property
    def parallel_read(self) -> int:
        """OpenSIPS-specific (schema version 1): how its TCP workers share reads on one
        connection.  Carried for tables shared with OpenSIPS; nothing in Python applies it."""
        return self.profile.parallel_read

    # -- the pieces every glue uses -----------------------------------------------------
    def message_guard(self, peer: Any = None, *, clock: Callable[[], float] = time.monotonic) -> MessageGuard:
        """A :class:`MessageGuard` for reading the messages of one connection."""
        return MessageGuard(self, peer, clock=clock)

    def message_reader(self, peer: Any = None, *, clock: Callable[[], float] = time.monotonic) -> MessageReader:
        """A :class:`MessageReader` (with its :class:`MessageGuard`) for one connection."""
        return MessageReader(self.message_guard(peer, clock=clock))

    def send_timer(self, peer: Any = None) -> SendTimer:
        """A :class:`SendTimer` for one send: ``with policy.send_timer(peer): sock.sendall(data)``."""
        return SendTimer(self, peer)

    def report_send(self, elapsed_us: int, peer: Any = None, *, logger: logging.Logger = log) -> bool:
        """A send took ``elapsed_us``: when that is over the threshold, log a warning on
        ``logger`` (``tcpmgm.sockets`` unless the glue names its own, as ``tcpmgm.aio`` does),
        count ``Event.SLOW_SEND`` and call ``on_slow_send``.
        True when it was slow.  For a framework that measures its sends itself."""
        threshold = self.send_threshold
        if threshold is None or elapsed_us <= threshold:
            return False
        logger.warning(
            "slow send to %s: %d us under rule %d (send_threshold %d us)", peer, elapsed_us, self.rule_id, threshold
        )
        events.count(Event.SLOW_SEND)
        if self.on_slow_send is not None:
            self.on_slow_send(SlowSend(peer, self.rule_id, elapsed_us, threshold))
        return True


class MessageGuard:
    """The read budget of the message being read on one connection.

    The glue calls :meth:`incomplete` after each read that leaves the current
    message incomplete, :meth:`remaining` for how long the next read may
    wait, and :meth:`complete` when the message is whole.  The first
    :meth:`incomplete` arms the deadline (the message's first bytes are in)
    and each one counts a read; a message whole after its first read never
    arms it.  When the budget runs out the guard counts the drop in
    :mod:`tcpmgm.service.events` and raises :class:`tcpmgm.MessageTimeout` or
    :class:`tcpmgm.MessageTooFragmented`: the glue then closes the connection.
    """

    __slots__ = ("_clock", "_deadline", "peer", "policy", "reads")

    def __init__(self, policy: ConnectionPolicy, peer: Any = None, *, clock: Callable[[], float] = time.monotonic):
        self.policy = policy
        self.peer = peer
        self._clock = clock
        self.reads = 0  # reads that left the current message incomplete
        self._deadline: float | None = None

    @property
    def armed(self) -> bool:
        """Whether a message has started and is not complete yet."""
        return self.reads > 0

    def incomplete(self) -> None:
        """A read brought bytes and the message is still incomplete."""
        if self.reads == 0:
            timeout = self.policy.message_timeout
            self._deadline = None if timeout is None else self._clock() + timeout
        self.reads += 1
        limit = self.policy.max_msg_chunks
        if limit is not None and self.reads >= limit:
            events.count(Event.CHUNK_LIMIT_CLOSE)
            raise MessageTooFragmented(
                f"message from {self.peer} still incomplete after {self.reads} reads: "
                f"rule {self.policy.rule_id} allows {limit} (max_msg_chunks)",
                rule_id=self.policy.rule_id,
                peer=self.peer,
            )
        self.remaining()  # a read that came in after the deadline does not save the message

    def remaining(self) -> float | None:
        """Seconds the next read of the current message may wait (``None``: no limit).

        Raises :class:`MessageTimeout` (counted) when the deadline has passed.
        """
        if self._deadline is None:
            return None
        left = self._deadline - self._clock()
        if left <= 0:
            self.expired()
        return left

    def expired(self) -> None:
        """The deadline passed while waiting for the message: count the drop and raise
        :class:`MessageTimeout` (for a glue whose own wait timed out)."""
        events.count(Event.MESSAGE_TIMEOUT_CLOSE)
        raise MessageTimeout(
            f"message from {self.peer} not complete within {self.policy.message_timeout:g} s "
            f"of its first bytes (rule {self.policy.rule_id}, msg_read_timeout)",
            rule_id=self.policy.rule_id,
            peer=self.peer,
        )

    def complete(self) -> None:
        """The message is whole: the next one starts with a fresh budget."""
        self.reads = 0
        self._deadline = None


class IncompleteMessage(EOFError):
    """End of file in the middle of a message; ``partial``: the bytes of it that came (given up)."""

    def __init__(self, partial: bytes, peer: Any = None) -> None:
        super().__init__(f"the connection with {peer} ended {len(partial)} bytes into a message")
        self.partial = partial
        self.peer = peer


class MessageReader:
    """The read helpers of one connection, without their I/O: every glue's one definition.

    Each helper (:meth:`read_message`, :meth:`exactly`, :meth:`until`,
    :meth:`read`) is a generator of :data:`ReadSteps`: it takes messages from
    the bytes already read and, when it needs more, yields how long the
    glue's next read may wait under the message's :class:`MessageGuard`; the
    glue sends back what its read brought.  Bytes after a message stay for
    the next call.  Once a message has started (a read has brought some of
    it), each further read it needs counts against the guard.  When the guard
    drops the message (or the glue's wait ran out: :meth:`expired`), or end
    of file comes in its middle (:class:`IncompleteMessage`), its bytes are
    given up, so that a later read never returns them as a message; after a
    drop the glue closes the connection.
    """

    __slots__ = ("_buffer", "_in_block", "_started", "guard")

    def __init__(self, guard: MessageGuard) -> None:
        self.guard = guard
        self._buffer = bytearray()  # read, not yet given to the application
        self._started = False  # bytes of the current message have arrived
        self._in_block = False  # inside ``with reader.message():``

    @contextlib.contextmanager
    def message(self) -> Iterator[None]:
        """Make every read inside the block one message (a header, then its body): its
        deadline runs from its first bytes to the end of the block and its reads count
        together.  A block inside another adds nothing."""
        if self._in_block:
            yield
            return
        self._in_block = True
        try:
            yield
        finally:
            self._in_block = False
            self._done()

    def _done(self) -> None:
        self.guard.complete()
        self._started = False

    def _give_up(self) -> None:
        self._buffer.clear()
        self._done()

    def expired(self) -> NoReturn:
        """The glue's wait for the rest of a message ran out: give it up, count the drop and
        raise :class:`tcpmgm.MessageTimeout`."""
        self._give_up()
        self.guard.expired()
        raise AssertionError("MessageGuard.expired() raises")  # pragma: no cover

    def _next_read(self) -> ReadSteps:
        """One read for the current message: the guard counts it once the message has started
        (what came so far left it incomplete) and bounds its wait; it returns what came."""
        try:
            if self._started:
                self.guard.incomplete()
            data = yield self.guard.remaining()
        except ConnectionDropped:
            self._give_up()
            raise
        return data

    def read_message(self, parse: Parser) -> ReadSteps:
        """The next message as ``parse`` delimits it; ``b""`` at end of file before any of it,
        :class:`IncompleteMessage` at end of file inside it."""
        while True:
            if self._buffer:
                self._started = True
                length = parse(self._buffer)
                if length is not None:
                    message = bytes(self._buffer[:length])
                    del self._buffer[:length]
                    if not self._in_block:
                        self._done()
                    return message
            data = yield from self._next_read()
            if not data:
                if self._buffer:
                    partial = bytes(self._buffer)
                    self._give_up()
                    raise IncompleteMessage(partial, self.guard.peer)
                return b""
            self._buffer += data

    def exactly(self, n: int) -> ReadSteps:
        """A message of exactly ``n`` bytes (``b""`` for 0, without reading)."""
        if n < 0:
            raise ValueError(f"a message of {n} bytes: the size can not be less than zero")
        if n == 0:
            return b""
        return (yield from self.read_message(lambda buffer: n if len(buffer) >= n else None))

    def until(self, separator: bytes) -> ReadSteps:
        """The bytes up to and including ``separator``."""
        return (yield from self.read_message(through(separator)))

    def read(self, n: int = -1) -> ReadSteps:
        """Up to ``n`` bytes (``-1``: what one read brings), whatever has arrived; ``b""`` at
        end of file.  A whole message by itself; inside :meth:`message` a read of that one."""
        if n == 0:
            return b""
        if not self._buffer:
            self._buffer += yield from self._next_read()
        size = len(self._buffer) if n < 0 else n
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        if self._in_block:
            self._started = self._started or bool(data)
        else:
            self._done()
        return data


class SendTimer:
    """One send measured against the policy's ``send_threshold`` (a context manager).

    Everything inside the ``with`` block counts: for asyncio, the write and
    the drain.  A send that raises is measured too, as OpenSIPS measures a
    failed write.  ``elapsed_us`` holds the measurement afterwards.
    """

    __slots__ = ("_started", "elapsed_us", "peer", "policy")

    def __init__(self, policy: ConnectionPolicy, peer: Any = None) -> None:
        self.policy = policy
        self.peer = peer
        self._started = 0
        self.elapsed_us: int | None = None

    def __enter__(self) -> SendTimer:
        self._started = time.perf_counter_ns()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.elapsed_us = (time.perf_counter_ns() - self._started) // 1000
        self.policy.report_send(self.elapsed_us, self.peer)
