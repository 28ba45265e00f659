"""Hand-written matcher tests: API, bad input, batches, threads, memory."""

import array
import gc
import inspect
import ipaddress
import threading
import tracemalloc
import types

import pytest

import tcpmgm
from tcpmgm import ReferenceMatcher, Rule, RuleError
from tcpmgm.matching import matcher as matcher_module
from tcpmgm.model.protocols import protocol_code
from tcpmgm_bench.workloads import WORKLOADS, batch

NET = ipaddress.ip_network

RULES = [
    Rule(id=7, proto="tcp", remote=NET("10.0.0.0/8"), priority=1),
    Rule(id=3, remote=NET("10.1.0.0/16"), remote_port=5060),
    Rule(id=9, proto="tls", remote=NET("2001:db8::/32"), local=NET("2001:db8:ffff::1/128")),
    Rule(id=4, local=NET("192.0.2.0/24"), local_port=5061),
    Rule(id=5),
]

compiled_only = pytest.mark.skipif(not matcher_module.COMPILED, reason="compiled classifier not in use")


@pytest.fixture
def matcher(matcher_cls):
    return matcher_cls(RULES)


# -- API shared with the reference -------------------------------------------

# What only the compiled matcher has, and why (ReferenceMatcher's docstring says
# so too): the widths of its trie's first stride, which a linear scan has not.
COMPILED_ONLY_NAMES = {"stride_bits"}


def _public_names(cls):
    return {name for name in dir(cls) if not name.startswith("_")}


def _parameters(method):
    return [(p.name, p.kind, p.default) for p in inspect.signature(method).parameters.values()]


def test_both_matchers_have_the_same_public_api():
    """What a caller of tcpmgm.Matcher may use is there whichever class it is (TCPMGM_NO_EXTENSIONS)."""
    compiled = pytest.importorskip("tcpmgm.matching._matcher", reason="compiled classifier not built").Matcher
    names = _public_names(ReferenceMatcher)
    assert names == _public_names(compiled) - COMPILED_ONLY_NAMES
    assert COMPILED_ONLY_NAMES.issubset(_public_names(compiled)), "a name the test excuses is gone"
    for name in sorted(names):
        ours, theirs = getattr(ReferenceMatcher, name), getattr(compiled, name)
        assert isinstance(ours, property) == isinstance(theirs, (property, types.GetSetDescriptorType)), name
        if callable(ours):
            assert _parameters(ours) == _parameters(theirs), name
    for special in ("__len__", "__iter__", "__contains__", "__repr__"):
        assert special in vars(ReferenceMatcher) and special in vars(compiled), special
    assert ReferenceMatcher(RULES).nbytes == 0  # it owns no C memory


def test_container_protocol(matcher_cls):
    matcher = matcher_cls(RULES)
    assert len(matcher) == 5
    assert [rule.id for rule in matcher] == [rule.id for rule in sorted(RULES, key=Rule.key)]
    assert 3 in matcher and 8 not in matcher and "3" not in matcher
    # The compiled one makes its rules on demand: equal to the rule given, not the same object.
    assert matcher.get(9) == RULES[2] and matcher.get(9).profile == RULES[2].profile
    assert matcher.get(8) is None and matcher.get(8, "none") == "none"
    assert matcher.default.id == 0


def test_duplicate_ids_are_refused(matcher_cls):
    with pytest.raises(RuleError) as info:
        matcher_cls([Rule(id=1), Rule(id=2), Rule(id=1, proto="tcp")])
    assert info.value.rule_id == 1 and info.value.column == "id"


def test_lookups(matcher_cls):
    matcher = matcher_cls(RULES)
    assert matcher.lookup("tcp", "10.1.2.3", 5060).id == 3  # priority 0 beats 1
    assert matcher.lookup("tcp", "10.1.2.3", 5061).id == 5  # remote-any rule 5, priority 0
    assert matcher.lookup(None, "2001:db8::5", 0, "2001:db8:ffff::1").id == 9
    assert matcher.lookup("tcp", "2001:db8::5", 0, "2001:db8:ffff::1").id == 5
    assert matcher.lookup("ws", None, 0, "192.0.2.9", 5061).id == 4
    assert matcher.lookup("ws", "::ffff:10.1.0.1", 5060).id == 3  # IPv4-mapped


def test_returns_the_rules_profile_objects(matcher, matcher_cls):
    assert matcher.lookup("tcp", "10.1.2.3", 5060) is matcher.get(3).profile
    empty = matcher_cls([])
    assert empty.lookup("tcp", "10.1.2.3") is empty.default


@pytest.mark.parametrize(
    "args, error, argument",
    [
        (("tcp", "10.0.0.300"), ValueError, "remote_ip"),
        (("tcp", "10.0.0.1", 5060, "nonsense"), ValueError, "local_ip"),
        (("tcp", b"\x01\x02\x03"), ValueError, "remote_ip"),
        (("tcp", 3.5), TypeError, "remote_ip"),
        (("tcp", "10.0.0.1", 65536), ValueError, "remote_port"),
        (("tcp", "10.0.0.1", -1), ValueError, "remote_port"),
        (("tcp", "10.0.0.1", 2**70), ValueError, "remote_port"),
        (("tcp", "10.0.0.1", 0, None, 70000), ValueError, "local_port"),
        (("tcp", "10.0.0.1", "5060"), TypeError, "remote_port"),
        (("tcp", "10.0.0.1", True), TypeError, "remote_port"),
        (("udp", "10.0.0.1"), ValueError, "proto"),
        (("nope", "10.0.0.1"), ValueError, "proto"),
        ((6, "10.0.0.1"), TypeError, "proto"),
        ((["tcp"], "10.0.0.1"), TypeError, "proto"),
    ],
)
def test_bad_input_names_the_argument(matcher_cls, args, error, argument):
    matcher = matcher_cls(RULES)
    for method in (matcher.lookup, matcher.explain):
        with pytest.raises(error, match=argument):
            method(*args)


@compiled_only
def test_immutable():
    compiled = matcher_module.Matcher(RULES)
    with pytest.raises(TypeError):
        compiled.__init__([])
    assert len(compiled) == 5


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_workloads_agree_with_reference(matcher_cls, name):
    workload = WORKLOADS[name](400, 600, seed=3)
    reference = ReferenceMatcher(workload.rules)
    matcher = matcher_cls(workload.rules)
    expected = [reference.lookup(*query).id for query in workload.lookups]
    assert [matcher.lookup(*query).id for query in workload.lookups] == expected
    for version in (4, 6):
        chosen = [e for q, e in zip(workload.lookups, expected) if ipaddress.ip_address(q[1]).version == version]
        assert list(matcher.lookup_many(*batch(workload.lookups, version))) == chosen
    assert len(set(expected)) > 10, "the workload should exercise many rules"


def _row(columns, i):
    """Row ``i`` of a batch as a batch of one (packed addresses are 16 bytes a row)."""
    return [column[16 * i : 16 * i + 16] if isinstance(column, bytes) else column[i : i + 1] for column in columns]


@compiled_only
@pytest.mark.parametrize("name", ["carrier", "nested"])
def test_big_batches_agree_with_one_by_one(name):
    """A matcher this large makes lookup_many overlap several lookups (its prefetch
    pipeline); every answer must still be the one that lookup alone gets."""
    workload = WORKLOADS[name](20_000, 3_000, seed=5)
    compiled = matcher_module.Matcher(workload.rules)
    for version in (4, 6):
        columns = batch(workload.lookups, version)
        if not len(columns.protos):
            continue
        alone = [compiled.lookup_many(*_row(columns, i))[0] for i in range(len(columns.protos))]
        together = list(compiled.lookup_many(*columns))
        assert together == alone
        assert len(set(together)) > 100, "the lookups should hit many different rules"


# -- lookup_many's buffers -----------------------------------------------------


def _v4(text):
    return int(ipaddress.IPv4Address(text))


def test_lookup_many_buffer_forms(matcher):
    remotes = ["10.1.2.3", "10.1.2.3", "10.9.9.9", "192.168.0.1"]
    ports = [5060, 5061, 5060, 5060]
    expected = [matcher.lookup("tcp", r, p).id for r, p in zip(remotes, ports)]
    assert expected == [3, 5, 5, 5]
    code = protocol_code("tcp")
    as_ints = array.array("I", [_v4(r) for r in remotes])
    as_packed = b"".join(ipaddress.IPv6Address("::ffff:" + r).packed for r in remotes)
    forms = [
        (array.array("B", [code] * 4), as_ints, array.array("H", ports)),
        (memoryview(array.array("q", [code] * 4)), memoryview(as_ints), memoryview(array.array("l", ports))),
        ("tcp", as_packed, array.array("i", ports)),
        ("tcp", bytearray(as_packed), array.array("Q", ports)),
    ]
    for protos, remote_ips, remote_ports in forms:
        result = matcher.lookup_many(protos, remote_ips, remote_ports)
        assert result.typecode == "I" and list(result) == expected


def test_lookup_many_numpy(matcher):
    np = pytest.importorskip("numpy")
    remotes = np.array([_v4("10.1.2.3"), _v4("10.200.0.1")], dtype=np.uint32)
    packed = np.frombuffer(ipaddress.IPv6Address("2001:db8::1").packed * 2, dtype=np.uint8).reshape(2, 16)
    local = np.frombuffer(ipaddress.IPv6Address("2001:db8:ffff::1").packed * 2, dtype=np.uint8).reshape(2, 16)
    assert list(matcher.lookup_many(np.zeros(2, np.int64), remotes, np.array([5060, 1], np.uint16))) == [3, 5]
    assert list(matcher.lookup_many(np.array([2, 1], np.int32), packed, None, local)) == [9, 5]
    assert list(matcher.lookup_many(np.ones(1, np.uint8), remotes[::2].copy(), np.array([5060], np.int16))) == [3]


def test_lookup_many_wide_ids(matcher_cls):
    matcher = matcher_cls([Rule(id=2**40, remote=NET("10.0.0.0/8")), Rule(id=1)])
    result = matcher.lookup_many(None, array.array("I", [_v4("10.0.0.1"), _v4("11.0.0.1")]))
    assert result.typecode == "Q" and list(result) == [2**40, 1]


def test_lookup_many_empty(matcher):
    assert list(matcher.lookup_many(None, array.array("I"))) == []
    assert list(matcher.lookup_many(None, b"")) == []


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(remote_ports=array.array("H", [1])), ValueError, "remote_ports: 1 items"),
        (dict(local_ports=array.array("H", [1, 2, 3])), ValueError, "local_ports: 3 items"),
        (dict(protos=array.array("H", [1])), ValueError, "protos: 1 items"),
        (dict(local_ips=b"\x00" * 16), ValueError, "local_ips: 1 items"),
        (dict(local_ips=b"\x00" * 17), ValueError, "local_ips: packed IPv6"),
        (dict(remote_ports=array.array("i", [1, -5])), ValueError, r"remote_ports\[1\]: -5"),
        (dict(local_ports=array.array("I", [70000, 1])), ValueError, r"local_ports\[0\]: 70000"),
        (dict(protos=array.array("H", [1, 999])), ValueError, r"protos\[1\]: unknown protocol code 999"),
        (dict(protos=array.array("h", [-1, 1])), ValueError, r"protos\[0\]"),
        (dict(protos="udp"), ValueError, "proto"),
        (dict(remote_ports=array.array("d", [1.0, 2.0])), TypeError, "remote_ports: expected a buffer of integers"),
        (dict(remote_ports=[1, 2]), TypeError, "remote_ports: expected a buffer"),
        (dict(remote_ips=array.array("i", [1, 2])), TypeError, "remote_ips: IPv4 addresses must be unsigned"),
        (dict(remote_ips=array.array("Q", [1, 2])), TypeError, "remote_ips: IPv4 addresses must be unsigned"),
        (dict(remote_ips=None), TypeError, "remote_ips"),
        (dict(remote_ips="10.0.0.1"), TypeError, "remote_ips"),
    ],
)
def test_lookup_many_bad_input(matcher, kwargs, error, message):
    arguments = dict(
        protos=None, remote_ips=array.array("I", [1, 2]), remote_ports=None, local_ips=None, local_ports=None
    )
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        matcher.lookup_many(**arguments)


def test_lookup_many_refuses_big_endian_and_strided(matcher):
    np = pytest.importorskip("numpy")
    with pytest.raises(ValueError, match="remote_ips: big-endian"):
        matcher.lookup_many(None, np.array([1, 2], dtype=">u4"))
    with pytest.raises(ValueError, match="remote_ips: the buffer must be C-contiguous"):
        matcher.lookup_many(None, np.arange(4, dtype=np.uint32)[::2])


# Rules whose answer depends on how a port or protocol code is read: a signed
# -1 misread as unsigned lands on 255 or 65535, -128 on 128, -32768 on 32768.
SIGNED_TRAPS = [
    Rule(id=1, remote_port=65535),
    Rule(id=2, remote_port=255),
    Rule(id=3, remote_port=128),
    Rule(id=4, remote_port=32768),
    Rule(id=5, local_port=65535),
    Rule(id=6, local_port=255),
    Rule(id=10, priority=9),
]


@pytest.mark.parametrize("typecode", list("bhilq"))
@pytest.mark.parametrize("argument", ["remote_ports", "local_ports"])
def test_lookup_many_negative_signed_ports_are_refused(matcher_cls, typecode, argument):
    """Issue 10.1: array('h', [-1]) answered the rule of port 65535, array('b', [-1]) that of 255."""
    matcher = matcher_cls(SIGNED_TRAPS)
    remotes = array.array("I", [_v4("10.0.0.1")] * 2)
    for value in (-1, -128):
        with pytest.raises(ValueError) as info:
            matcher.lookup_many("tcp", remotes, **{argument: array.array(typecode, [80, value])})
        assert str(info.value) == f"{argument}[1]: {value} is outside 0..65535"
    with pytest.raises(ValueError, match="remote_port"):
        matcher.lookup("tcp", "10.0.0.1", -1)
    # in range, the signed buffer reads what lookup() reads
    in_range = [0, 127] + ([255, 32767] if typecode != "b" else [])
    expected = [matcher.lookup("tcp", "10.0.0.1", **{argument[:-1]: v}).id for v in in_range]
    got = matcher.lookup_many(
        "tcp", array.array("I", [_v4("10.0.0.1")] * len(in_range)), **{argument: array.array(typecode, in_range)}
    )
    assert list(got) == expected


def test_lookup_many_negative_signed_protocol_codes_are_refused(matcher_cls):
    matcher = matcher_cls(SIGNED_TRAPS)
    for typecode in "bhilq":
        with pytest.raises(ValueError) as info:
            matcher.lookup_many(array.array(typecode, [1, -1]), array.array("I", [1, 2]))
        assert str(info.value) == "protos[1]: unknown protocol code -1"


@pytest.mark.parametrize(
    "ctype, value, message",
    [
        ("c_int32", -1, "remote_ports[0]: -1 is outside 0..65535"),
        ("c_int64", -1, "remote_ports[0]: -1 is outside 0..65535"),
        ("c_int16", -32768, "remote_ports[0]: -32768 is outside 0..65535"),
        ("c_int8", -1, "remote_ports[0]: -1 is outside 0..65535"),
        ("c_uint32", 70000, "remote_ports[0]: 70000 is outside 0..65535"),
        ("c_uint64", 2**64 - 1, "remote_ports[0]: 18446744073709551615 is outside 0..65535"),
        ("c_long", -(2**63), "remote_ports[0]: -9223372036854775808 is outside 0..65535"),
    ],
)
def test_lookup_many_ctypes_port_errors(matcher_cls, ctype, value, message):
    """Issue 10.2: the error for a ctypes buffer ('<i') raised NotImplementedError from memoryview."""
    import ctypes

    matcher = matcher_cls(SIGNED_TRAPS)
    with pytest.raises(ValueError) as info:
        matcher.lookup_many(None, array.array("I", [1]), (getattr(ctypes, ctype) * 1)(value))
    assert str(info.value) == message


def test_lookup_many_ctypes_buffers_agree_with_lookup(matcher_cls):
    import ctypes

    matcher = matcher_cls(SIGNED_TRAPS)
    ports = [65535, 255, 128, 32768, 0]
    remotes = (ctypes.c_uint32 * 5)(*[_v4("10.0.0.1")] * 5)
    expected = [matcher.lookup(None, "10.0.0.1", p).id for p in ports]
    for ctype in (ctypes.c_uint16, ctypes.c_int32, ctypes.c_uint32, ctypes.c_int64, ctypes.c_uint64, ctypes.c_long):
        assert list(matcher.lookup_many((ctypes.c_uint8 * 5)(), remotes, (ctype * 5)(*ports))) == expected
    packed = ((ctypes.c_ubyte * 16) * 1)()
    packed[0][:] = list(ipaddress.IPv6Address("::ffff:10.0.0.1").packed)
    assert list(matcher.lookup_many(None, packed, (ctypes.c_int16 * 1)(255))) == [2]


def test_lookup_many_unsigned_64_bit_beyond_int64(matcher_cls):
    matcher = matcher_cls(SIGNED_TRAPS)
    for value in (2**63, 2**64 - 1, 2**64 - 255, 2**32 + 255):
        with pytest.raises(ValueError) as info:
            matcher.lookup_many(None, array.array("I", [1]), None, None, array.array("Q", [value]))
        assert str(info.value) == f"local_ports[0]: {value} is outside 0..65535"


def test_lookup_many_foreign_byte_order(matcher_cls):
    """Wider than a byte, the other byte order is refused; one byte has no order ('>B')."""
    import ctypes
    import sys

    matcher = matcher_cls(SIGNED_TRAPS)
    foreign = "__ctype_be__" if sys.byteorder == "little" else "__ctype_le__"
    name = "big-endian" if sys.byteorder == "little" else "little-endian"
    with pytest.raises(ValueError, match=f"remote_ports: {name} buffers are not accepted"):
        matcher.lookup_many(None, array.array("I", [1]), (getattr(ctypes.c_uint16, foreign) * 1)(255))
    one_byte = (getattr(ctypes.c_uint8, foreign) * 1)(255)
    assert list(matcher.lookup_many(None, array.array("I", [1]), one_byte)) == [2]


def test_lookup_many_empty_buffers_of_every_form(matcher_cls):
    np = pytest.importorskip("numpy")
    import ctypes

    matcher = matcher_cls(SIGNED_TRAPS)
    remotes = [
        array.array("I"),
        b"",
        bytearray(),
        memoryview(b""),
        np.zeros((0, 16), np.uint8),
        np.zeros(0, np.uint32),
        (ctypes.c_uint32 * 0)(),
        ((ctypes.c_ubyte * 16) * 0)(),
    ]
    ports = [None, array.array("b"), np.zeros(0, np.int64), (ctypes.c_int16 * 0)(), memoryview(b"").cast("q")]
    for remote in remotes:
        for port in ports:
            assert list(matcher.lookup_many(port, remote, port, remote, port)) == []


def test_lookup_many_readonly_buffers(matcher_cls):
    np = pytest.importorskip("numpy")
    matcher = matcher_cls(SIGNED_TRAPS)
    ports = np.array([255, 65535], np.int32)
    ports.flags.writeable = False
    remotes = np.array([_v4("10.0.0.1")] * 2, np.uint32)
    remotes.flags.writeable = False
    assert list(matcher.lookup_many(None, remotes, ports)) == [2, 1]
    assert list(
        matcher.lookup_many(
            None,
            bytes(ipaddress.IPv6Address("2001:db8::1").packed) * 2,
            memoryview(bytes(array.array("H", [128, 32768]))).cast("H"),
        )
    ) == [3, 4]


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda np: np.zeros((2, 8), np.uint8),
            r"remote_ips: packed IPv6 buffers hold 16 bytes per address, got shape \(2, 8\)",
        ),
        (lambda np: np.zeros((1, 2, 16), np.uint8), r"got shape \(1, 2, 16\)"),
        (lambda np: np.zeros((4, 4), np.uint8), r"got shape \(4, 4\)"),
        (lambda np: np.zeros((2, 16), np.uint8, order="F"), "remote_ips: the buffer must be C-contiguous"),
        (lambda np: np.zeros(4, "S16"), "remote_ips: expected a buffer of integers, got format '16s'"),
        (lambda np: np.zeros((2, 2), np.uint32), "remote_ips: expected a one-dimensional buffer"),
        (lambda np: np.zeros(2, "M8[s]"), "remote_ips: expected a buffer .* got ndarray"),
        (lambda np: memoryview(b"\x00" * 64)[::2], "remote_ips: the buffer must be C-contiguous"),
    ],
)
def test_lookup_many_misshapen_address_buffers(matcher_cls, make, message):
    """Address rows are 16 bytes each, as one flat run: no other shape is read as addresses."""
    np = pytest.importorskip("numpy")
    matcher = matcher_cls(SIGNED_TRAPS)
    with pytest.raises((TypeError, ValueError), match=message):
        matcher.lookup_many(None, make(np))


def test_lookup_many_released_buffer(matcher_cls):
    matcher = matcher_cls(SIGNED_TRAPS)
    view = memoryview(array.array("H", [1]))
    view.release()
    with pytest.raises(TypeError, match="remote_ports: expected a buffer"):
        matcher.lookup_many(None, array.array("I", [1]), view)


def test_lookup_many_strided_ports_refused(matcher_cls):
    matcher = matcher_cls(SIGNED_TRAPS)
    with pytest.raises(ValueError, match="local_ports: the buffer must be C-contiguous"):
        matcher.lookup_many(None, array.array("I", [1, 2]), None, None, memoryview(array.array("H", [1, 2, 3, 4]))[::2])


# -- threads and memory --------------------------------------------------------


@compiled_only
def test_many_threads_share_one_matcher():
    workload = WORKLOADS["carrier"](3000, 2000, seed=5)
    matcher = matcher_module.Matcher(workload.rules)
    singles = [matcher.lookup(*query).id for query in workload.lookups]
    batches = {v: batch(workload.lookups, v) for v in (4, 6)}
    expected = {v: list(matcher.lookup_many(*batches[v])) for v in (4, 6)}
    failures = []

    def worker(index):
        try:
            for _ in range(20):
                for version in (4, 6):
                    if list(matcher.lookup_many(*batches[version])) != expected[version]:
                        failures.append(("many", index, version))
                if index % 2 and [matcher.lookup(*q).id for q in workload.lookups[:300]] != singles[:300]:
                    failures.append(("single", index))
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


@compiled_only
def test_lookups_do_not_allocate():
    workload = WORKLOADS["carrier"](2000, 500, seed=9)
    matcher = matcher_module.Matcher(workload.rules)
    four = batch(workload.lookups, 4)

    def run():
        for query in workload.lookups:
            matcher.lookup(*query)
        matcher.lookup_many(*four)

    run()
    gc.collect()
    tracemalloc.start()
    try:
        run()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(200):  # 100,000 single lookups and 200 batches
            run()
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert growth < 16 * 1024, f"{growth} bytes retained by lookups"


def _rss_kib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4


@compiled_only
@pytest.mark.skipif(not hasattr(__import__("os"), "sched_getaffinity"), reason="needs /proc (Linux)")
def test_dropped_matchers_free_their_memory():
    workload = WORKLOADS["carrier"](20000, 0, seed=1)
    matcher_module.Matcher(workload.rules)
    gc.collect()
    one = matcher_module.Matcher(workload.rules).nbytes
    start = _rss_kib()
    for _ in range(30):
        matcher_module.Matcher(workload.rules)
    gc.collect()
    growth = (_rss_kib() - start) * 1024
    # A leak would keep 30 matchers' C memory (30 * nbytes); allow malloc some slack.
    assert growth < 5 * one, f"RSS grew by {growth} bytes; one matcher owns {one}"


@pytest.mark.parametrize(
    "arguments, argument",
    [
        (("tcp", "10.0.0.1", 10**5000, None, 0), "remote_port"),
        (("tcp", "10.0.0.1", 0, None, -(10**5000)), "local_port"),
        (("tcp", (10**5000, 4), 0, None, 0), "remote"),
        (("tcp", "x" * 100_000, 0, None, 0), "remote"),
        (("tcp", None, 0, "1" * 100_000, 0), "local"),
        (("p" * 100_000, None, 0, None, 0), "proto"),
    ],
)
def test_lookup_errors_show_a_bounded_value(matcher_cls, arguments, argument):
    # Huge ints used to fail inside the message itself (Python's 4300-digit limit), long text was echoed whole.
    matcher = matcher_cls([tcpmgm.Rule.from_row({"id": 1, "proto": "tcp", "remote_port": 5060})])
    for call in (matcher.lookup, matcher.explain):
        with pytest.raises(ValueError) as refused:
            call(*arguments)
        message = str(refused.value)
        assert message.startswith(argument) and ("…" in message or "bits>" in message), message
        assert len(message) < 200, message
