"""Fuzzing the lookup entry points (issue 10, finding 20).

* ``lookup`` / ``explain`` on arguments of any type and value: a Profile or an
  Explanation comes out, or ``ValueError`` / ``TypeError``, nothing else; and
  the compiled matcher and the reference agree on which.
* ``lookup_many`` over every buffer form it may be given (``array`` typecodes,
  ``memoryview`` casts, ``bytes``, NumPy dtypes of both byte orders, ctypes
  arrays of both byte orders): element by element the ids ``lookup()`` gives
  for the same values, or ``ValueError`` naming the first element ``lookup()``
  refuses; a form it does not take is refused whole, whatever the values.
  Both matchers: the reference reads the buffers in pure Python (``_batch_py``).
* ``lookup_many`` on odd columns (wrong lengths, shapes, formats, byte orders,
  released views, non-buffers) mixed with ones it takes: the compiled matcher
  and the reference give the same ids, or the same exception and message.

The rules put ports and protocols at the values a misread buffer lands on
(-1 read unsigned is 255 or 65535, -128 is 128, -32768 is 32768, a 64-bit
value cut to 32 or 16 bits keeps its low bits), so a misreading changes the
answer.  The example budget comes from the hypothesis profile in conftest.
"""

from __future__ import annotations

import array
import ctypes
import ipaddress
import struct
import sys
from collections.abc import Sequence
from typing import Any, Callable, NamedTuple

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tcpmgm import Explanation, Profile, ReferenceMatcher, Rule
from tcpmgm.matching import matcher as matcher_module
from tcpmgm.model.protocols import protocol_name, protocols

try:
    import numpy
except ImportError:  # NumPy is a test extra, not a dependency
    numpy = None

NET = ipaddress.ip_network
FIXTURE_SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
compiled_only = pytest.mark.skipif(not matcher_module.COMPILED, reason="compiled classifier not in use")

# -- small rule sets whose answers depend on ports, protocols and addresses ------

TRAP_PORTS = [0, 1, 127, 128, 255, 256, 5060, 32767, 32768, 65535]
REMOTES = [None, "10.0.0.0/8", "10.0.0.1/32", "10.1.0.0/16", "2001:db8::/32", "2001:db8::1/128", "::/0"]
LOCALS = [None, "192.0.2.0/24", "192.0.2.1/32", "2001:db8:ffff::/48"]
PROTOS = [None, "tcp", "tls", "ws", "msrps"]


@st.composite
def rule_sets(draw: Callable) -> list[Rule]:
    count = draw(st.integers(1, 12))
    ids = draw(st.lists(st.integers(1, 2**40), min_size=count, max_size=count, unique=True))
    rules = []
    for rule_id in ids:
        remote, local = draw(st.sampled_from(REMOTES)), draw(st.sampled_from(LOCALS))
        rules.append(
            Rule(
                id=rule_id,
                proto=draw(st.sampled_from(PROTOS)),
                remote=None if remote is None else NET(remote),
                remote_port=draw(st.sampled_from(TRAP_PORTS)),
                local=None if local is None else NET(local),
                local_port=draw(st.sampled_from(TRAP_PORTS)),
                priority=draw(st.integers(-3, 3)),
            )
        )
    return rules


# -- (a) lookup and explain on garbage --------------------------------------------


class Opaque:
    """An object of no known kind."""


BIG = st.one_of(st.integers(), st.integers(-(2**200), 2**200), st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**300]))
GARBAGE = st.one_of(
    st.none(),
    st.booleans(),
    BIG,
    st.floats(allow_nan=True),
    st.text(max_size=50),
    st.binary(max_size=20),
    st.builds(bytearray, st.binary(max_size=20)),
    st.builds(memoryview, st.binary(max_size=20)),
    st.tuples(),
    st.tuples(BIG),
    st.tuples(BIG, BIG),
    st.tuples(BIG, BIG, BIG),
    st.tuples(st.text(max_size=5), BIG),
    st.tuples(BIG, st.sampled_from([4, 6, 2, 10, True, 4.0, "4"])),
    st.lists(st.integers(), max_size=3),
    st.builds(Opaque),
    st.builds(object),
    st.sampled_from([ipaddress.ip_address("10.0.0.1"), NET("10.0.0.0/8"), 1j, Ellipsis, int, str]),
)
ADDRESSES = st.one_of(
    GARBAGE,
    st.sampled_from(
        [
            "10.0.0.1",
            "10.1.2.3",
            "192.0.2.1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "fe80::1%eth0",
            "10.0.0.1%x",
            " 10.0.0.1",
            "10.0.0.01",
            "::1\x00",
            "1.2.3.4.5",
        ]
    ),
    st.binary(min_size=4, max_size=4),
    st.binary(min_size=16, max_size=16),
    st.tuples(st.integers(-1, 2**129), st.sampled_from([4, 6, 2, 10])),
)
PROTO_ARGS = st.one_of(GARBAGE, st.sampled_from(["tcp", "TCP ", " any", "udp", "tls\x00", "", "ANY", *PROTOS]))
PORT_ARGS = st.one_of(GARBAGE, st.sampled_from([*TRAP_PORTS, -1, 65536, -(2**31), 2**32 + 80]))

QUERIES = st.tuples(PROTO_ARGS, ADDRESSES, PORT_ARGS, ADDRESSES, PORT_ARGS)


def outcome(method: Callable, query: Sequence[Any]) -> Any:
    """What ``method(*query)`` gives: an id (a rule's or 0), or the exception class it raised."""
    try:
        result = method(*query)
    except (ValueError, TypeError) as exc:
        return type(exc)
    if isinstance(result, Explanation):
        assert isinstance(result.profile, Profile)
        return ("explain", result.profile.id, tuple(rule.id for rule, _ in result.matches))
    assert isinstance(result, Profile), f"{method.__name__} returned {type(result).__name__}"
    return result.id


@FIXTURE_SETTINGS
@given(rules=rule_sets(), query=QUERIES)
def test_lookup_and_explain_on_garbage(matcher_cls: type, rules: list[Rule], query: tuple) -> None:
    """Only a Profile / Explanation, ValueError or TypeError may come out (any other
    exception propagates and fails the test); lookup and explain agree."""
    matcher = matcher_cls(rules)
    looked_up, explained = outcome(matcher.lookup, query), outcome(matcher.explain, query)
    if isinstance(looked_up, int):
        assert explained[1] == looked_up
    else:
        assert explained is looked_up


@compiled_only
@FIXTURE_SETTINGS
@given(rules=rule_sets(), query=QUERIES)
def test_compiled_and_reference_agree_on_garbage(rules: list[Rule], query: tuple) -> None:
    compiled, reference = matcher_module.Matcher(rules), ReferenceMatcher(rules)
    for name in ("lookup", "explain"):
        assert outcome(getattr(compiled, name), query) == outcome(getattr(reference, name), query), name


# -- (b) lookup_many over every buffer form ----------------------------------------

NATIVE_LITTLE = sys.byteorder == "little"


class Form(NamedTuple):
    """One way of handing lookup_many a column of integers."""

    name: str
    lo: int  # the values it can hold
    hi: int
    make: Callable[[list[int]], Any]
    accepted: bool  # False: refused whole (ValueError), whatever the values


def _bits(signed: bool, size: int) -> tuple:
    return (-(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1) if signed else (0, (1 << (8 * size)) - 1)


def _array_form(code: str) -> Form:
    size = array.array(code).itemsize
    return Form(f"array {code}", *_bits(code.islower(), size), lambda values: array.array(code, values), True)


def _cast_form(code: str) -> Form:
    size = memoryview(b"\0" * 8).cast(code).itemsize

    def make(values: list[int]) -> memoryview:
        # struct packs the values in native layout; the cast reinterprets those bytes
        return memoryview(struct.pack(f"@{len(values)}{code}", *values)).cast(code)

    return Form(f"memoryview {code}", *_bits(code.islower(), size), make, True)


def _ctypes_form(ctype: Any, signed: bool, foreign: bool = False) -> Form:
    size = ctypes.sizeof(ctype)
    if foreign:
        ctype = getattr(ctype, "__ctype_be__" if NATIVE_LITTLE else "__ctype_le__")
    name = f"ctypes {ctype.__name__}{' foreign' if foreign else ''}"
    return Form(name, *_bits(signed, size), lambda values: (ctype * len(values))(*values), size == 1 or not foreign)


def _numpy_form(dtype: str) -> Form:
    kind = numpy.dtype(dtype)
    foreign = not kind.isnative and kind.itemsize > 1
    return Form(
        f"numpy {dtype}",
        *_bits(kind.kind == "i", kind.itemsize),
        lambda values: numpy.array(values, dtype=kind),
        not foreign,
    )


INT_FORMS = (
    [_array_form(code) for code in "bBhHiIlLqQ"]
    + [_cast_form(code) for code in "bBhHiIlLqQnN"]
    + [Form("bytes", 0, 255, bytes, True), Form("bytearray", 0, 255, bytearray, True)]
    + [
        _ctypes_form(t, s)
        for t, s in [
            (ctypes.c_int8, True),
            (ctypes.c_uint8, False),
            (ctypes.c_int16, True),
            (ctypes.c_uint16, False),
            (ctypes.c_int32, True),
            (ctypes.c_uint32, False),
            (ctypes.c_int64, True),
            (ctypes.c_uint64, False),
            (ctypes.c_long, True),
            (ctypes.c_ulong, False),
            (ctypes.c_byte, True),
            (ctypes.c_ubyte, False),
        ]
    ]
    + [
        _ctypes_form(t, s, foreign=True)
        for t, s in [
            (ctypes.c_int8, True),
            (ctypes.c_uint8, False),
            (ctypes.c_int16, True),
            (ctypes.c_uint16, False),
            (ctypes.c_int32, True),
            (ctypes.c_uint64, False),
        ]
    ]
    + (
        [
            _numpy_form(d)
            for d in [
                "i1",
                "u1",
                "i2",
                "u2",
                "i4",
                "u4",
                "i8",
                "u8",
                "<i2",
                ">i2",
                "<u4",
                ">u4",
                ">i8",
                "<u8",
                ">u1",
                "=i4",
            ]
        ]
        if numpy
        else []
    )
)

# values where misreadings show: both ends of each width, around 0, the ports above
EDGES = sorted(
    {
        0,
        1,
        -1,
        127,
        128,
        -128,
        255,
        256,
        -129,
        32767,
        32768,
        -32768,
        65535,
        65536,
        -32769,
        2**31 - 1,
        2**31,
        -(2**31),
        2**32 - 1,
        2**32,
        2**32 + 255,
        2**32 + 5060,
        2**63 - 1,
        -(2**63),
        2**63,
        2**64 - 1,
        2**64 - 255,
        2**16 + 255,
        2**48 + 65535,
    }
    | set(TRAP_PORTS)
)


def values_for(form: Form, n: int, extra: Sequence[int]) -> st.SearchStrategy:
    fitting = [v for v in list(EDGES) + list(extra) if form.lo <= v <= form.hi]
    one = st.one_of(st.sampled_from(fitting), st.integers(form.lo, form.hi))
    return st.lists(one, min_size=n, max_size=n)


V4_ADDRESSES = ["10.0.0.1", "10.0.0.2", "10.1.2.3", "11.0.0.1", "192.0.2.1", "0.0.0.0", "255.255.255.255"]
V6_ADDRESSES = [
    "2001:db8::1",
    "2001:db8::2",
    "2001:db8:1::5",
    "::ffff:10.0.0.1",
    "::ffff:192.0.2.1",
    "2001:db8:ffff::1",
    "::1",
    "fe80::1",
]


class AddressForm(NamedTuple):
    name: str
    v4: bool  # host-order uint32 (else 16 packed bytes an address)
    make: Callable[[list[Any]], Any]


def _v4_ints(addresses: list[Any]) -> list[int]:
    return [int(a) for a in addresses]


def _packed(addresses: list[Any]) -> bytes:
    return b"".join(a.packed for a in addresses)


def _ctypes_rows(addresses: list[Any]) -> Any:
    rows = ((ctypes.c_ubyte * 16) * len(addresses))()
    for row, address in zip(rows, addresses):
        row[:] = list(address.packed)
    return rows


ADDRESS_FORMS = [
    AddressForm("array I", True, lambda a: array.array("I", _v4_ints(a))),
    AddressForm("memoryview I", True, lambda a: memoryview(array.array("I", _v4_ints(a)))),
    AddressForm("ctypes c_uint32", True, lambda a: (ctypes.c_uint32 * len(a))(*_v4_ints(a))),
    AddressForm("bytes", False, _packed),
    AddressForm("bytearray", False, lambda a: bytearray(_packed(a))),
    AddressForm("array B", False, lambda a: array.array("B", _packed(a))),
    AddressForm("memoryview b", False, lambda a: memoryview(_packed(a)).cast("b")),
    AddressForm("ctypes rows", False, _ctypes_rows),
] + (
    [
        AddressForm("numpy uint32", True, lambda a: numpy.array(_v4_ints(a), dtype=numpy.uint32)),
        AddressForm(
            "numpy (n, 16)", False, lambda a: numpy.frombuffer(_packed(a), dtype=numpy.uint8).reshape(len(a), 16)
        ),
    ]
    if numpy
    else []
)


@st.composite
def address_columns(draw: Callable, n: int, optional: bool) -> tuple:
    """(buffer, the addresses lookup() is given) for one address column, or (None, [None] * n)."""
    if optional and draw(st.booleans()):
        return None, [None] * n
    form = draw(st.sampled_from(ADDRESS_FORMS))
    texts = V4_ADDRESSES if form.v4 else V6_ADDRESSES + ["::ffff:" + a for a in V4_ADDRESSES]
    chosen = draw(st.lists(st.sampled_from(texts), min_size=n, max_size=n))
    addresses = [ipaddress.IPv4Address(t) for t in chosen] if form.v4 else [ipaddress.IPv6Address(t) for t in chosen]
    # lookup() gets the address in a form of its own: text, an ipaddress object or packed bytes
    given = [draw(st.sampled_from([str(a), a, a.packed])) for a in addresses]
    return form.make(addresses), given


@st.composite
def int_columns(draw: Callable, n: int, extra: Sequence[int]) -> tuple:
    """(form, buffer, values) for one integer column, or (None, None, [0] * n)."""
    if draw(st.integers(0, 5)) == 0:
        return None, None, [0] * n
    form = draw(st.sampled_from(INT_FORMS))
    values = draw(values_for(form, n, extra))
    return form, form.make(values), values


def port_refused(value: int) -> bool:
    return not 0 <= value <= 65535


@FIXTURE_SETTINGS
@given(rules=rule_sets(), data=st.data())
def test_lookup_many_agrees_with_lookup(matcher_cls: type, rules: list[Rule], data: st.DataObject) -> None:
    n = data.draw(st.integers(0, 6), label="n")
    codes = range(len(protocols()) + 1)
    remote_buffer, remotes = data.draw(address_columns(n, optional=False), label="remote_ips")
    local_buffer, locals_ = data.draw(address_columns(n, optional=True), label="local_ips")
    if data.draw(st.booleans(), label="protos as one str"):
        name = data.draw(st.sampled_from([*PROTOS, "any", "TCP"]), label="protos")
        proto_form, proto_buffer, proto_names = None, name, [name] * n
        proto_values = [0] * n
    else:
        proto_form, proto_buffer, proto_values = data.draw(int_columns(n, [len(codes), len(codes) - 1]), label="protos")
        proto_names = [protocol_name(v) if v in codes else None for v in proto_values]
    rport_form, rport_buffer, rports = data.draw(int_columns(n, TRAP_PORTS), label="remote_ports")
    lport_form, lport_buffer, lports = data.draw(int_columns(n, TRAP_PORTS), label="local_ports")
    matcher, reference = matcher_cls(rules), ReferenceMatcher(rules)

    def call() -> list:
        return list(matcher.lookup_many(proto_buffer, remote_buffer, rport_buffer, local_buffer, lport_buffer))

    # A form not taken is refused whole, before any value is read.
    refused = [
        argument
        for argument, form in (("protos", proto_form), ("remote_ports", rport_form), ("local_ports", lport_form))
        if form is not None and not form.accepted
    ]
    if refused:
        event("a form refused whole")
        with pytest.raises(ValueError, match=f"^({'|'.join(refused)}): (big|little)-endian buffers are not accepted"):
            call()
        return

    # The first element lookup() refuses, in the order lookup_many reads them.
    for i in range(n):
        if proto_form is not None and proto_values[i] not in codes:
            # no protocol has that code: there is no name to ask lookup() about
            message = f"protos[{i}]: unknown protocol code {proto_values[i]}"
        elif port_refused(rports[i]) or port_refused(lports[i]):
            with pytest.raises(ValueError):  # lookup() refuses this element
                matcher.lookup(proto_names[i], remotes[i], rports[i], locals_[i], lports[i])
            argument, value = ("remote_ports", rports[i]) if port_refused(rports[i]) else ("local_ports", lports[i])
            message = f"{argument}[{i}]: {value} is outside 0..65535"
        else:
            continue
        event("an element refused")
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value) == message
        return

    expected = [matcher.lookup(proto_names[i], remotes[i], rports[i], locals_[i], lports[i]).id for i in range(n)]
    assert expected == [
        reference.lookup(proto_names[i], remotes[i], rports[i], locals_[i], lports[i]).id for i in range(n)
    ]
    event("ids compared" if n else "empty batch")
    assert call() == expected


# -- (c) lookup_many on anything: the compiled matcher and the reference agree ------


def _released() -> memoryview:
    view = memoryview(b"\0" * 16)
    view.release()
    return view


# Each makes a fresh column: what lookup_many takes, what it refuses, and the
# corner between (a wrong length, a byte order, a shape, a released view).
ODD_COLUMNS: list[Callable[[], Any]] = [
    lambda: "tcp",
    lambda: "TLS",
    lambda: "udp",
    lambda: "10.0.0.1",
    lambda: 5,
    lambda: 3.5,
    lambda: [1, 2],
    lambda: None,  # not first: the first is the one hypothesis shrinks to and favours
    lambda: b"",
    lambda: b"\0" * 16,
    lambda: b"\0" * 17,
    lambda: bytes(range(32)),
    lambda: bytearray(b"\xff" * 32),
    lambda: array.array("I", [1, 2]),
    lambda: array.array("i", [1, -2]),
    lambda: array.array("H", [5060, 65535]),
    lambda: array.array("Q", [2**64 - 1, 1]),
    lambda: array.array("b", [0, -1]),
    lambda: array.array("B", [1, 200]),
    lambda: array.array("d", [1.0, 2.0]),
    lambda: array.array("u", "ab"),
    lambda: memoryview(b"\0" * 64)[::2],
    lambda: memoryview(bytes(8)).cast("B", (2, 4)),
    lambda: memoryview(bytes(32)).cast("B", (2, 16)),
    lambda: memoryview(bytes(32)).cast("c"),
    lambda: memoryview(bytes(8)).cast("I"),
    lambda: memoryview(bytes(16)).cast("q"),
    lambda: memoryview(bytes(2)).cast("?"),
    _released,
    lambda: (ctypes.c_uint16.__ctype_be__ * 2)(1, 2),
    lambda: (ctypes.c_uint32.__ctype_le__ * 2)(1, 2),
    lambda: (ctypes.c_uint8.__ctype_be__ * 2)(1, 2),
    lambda: (ctypes.c_double * 2)(),
    lambda: (ctypes.c_char * 32)(),
    lambda: ((ctypes.c_ubyte * 16) * 2)(),
    lambda: ((ctypes.c_ubyte * 8) * 4)(),
    lambda: (ctypes.c_uint32 * 2)(1, 2),
    lambda: (ctypes.c_int64 * 2)(-1, 5060),
] + (
    [
        lambda: numpy.zeros((2, 16), numpy.uint8),
        lambda: numpy.zeros((2, 8), numpy.uint8),
        lambda: numpy.zeros((2, 16), numpy.uint8, order="F"),
        lambda: numpy.zeros((1, 2, 16), numpy.int8),
        lambda: numpy.zeros(2, "M8[s]"),
        lambda: numpy.array([1, 2], ">u4"),
        lambda: numpy.array([1, 2], "<u4"),
        lambda: numpy.zeros(2, numpy.float32),
        lambda: numpy.zeros(2, "S16"),
        lambda: numpy.zeros((2, 2), numpy.uint32),
        lambda: numpy.zeros(2, numpy.bool_),
        lambda: numpy.array([3, 70000], numpy.int64),
        lambda: numpy.arange(4, dtype=numpy.uint32)[::2],
    ]
    if numpy
    else []
)


# Columns of two rows each argument takes (the ports' hold values lookup() refuses).
TAKEN: dict[str, list[Callable[[], Any]]] = {
    "protos": [lambda: None, lambda: "tcp", lambda: array.array("B", [1, 0]), lambda: array.array("q", [0, 2])],
    "remote_ips": [lambda: array.array("I", [1, 2]), lambda: bytes(range(32)), lambda: ((ctypes.c_ubyte * 16) * 2)()],
    "local_ips": [lambda: None, lambda: (ctypes.c_uint32 * 2)(1, 2), lambda: bytearray(b"\xff" * 32)],
    "remote_ports": [lambda: None, lambda: array.array("H", [5060, 65535]), lambda: array.array("i", [1, -2])],
    "local_ports": [lambda: None, lambda: array.array("b", [0, 127]), lambda: (ctypes.c_int64 * 2)(-1, 5060)],
}


@st.composite
def batch_columns(draw: Callable) -> dict[str, Any]:
    """lookup_many's five arguments by name: each mostly one it takes, else any odd column."""
    return {
        argument: draw(st.sampled_from(ODD_COLUMNS if draw(st.integers(0, 3)) == 0 else taken))()
        for argument, taken in TAKEN.items()
    }


def batch_outcome(matcher: Any, columns: dict[str, Any]) -> tuple:
    """(typecode, ids) or (exception class, message): what ``lookup_many(**columns)`` gives."""
    try:
        result = matcher.lookup_many(**columns)
    except (ValueError, TypeError) as exc:
        return type(exc), str(exc)
    return result.typecode, list(result)


@compiled_only
@FIXTURE_SETTINGS
@given(rules=rule_sets(), columns=batch_columns())
def test_lookup_many_twins_agree_on_anything(rules: list[Rule], columns: dict[str, Any]) -> None:
    """The same answer, or the same exception with the same message; any other exception fails."""
    compiled, reference = matcher_module.Matcher(rules), ReferenceMatcher(rules)
    got = batch_outcome(compiled, columns)
    event(f"refused: {got[1].split(':')[0]}" if isinstance(got[0], type) else "answered")
    assert batch_outcome(reference, columns) == got
