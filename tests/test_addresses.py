"""Lookup address normalisation: both twins (compiled ``_addr`` and ``_addr_py``) via ``normalize``."""

import collections
import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpmgm.matching import addresses
from tcpmgm.model.errors import shown

V4 = int(ipaddress.IPv4Address("192.0.2.1"))
V6 = int(ipaddress.IPv6Address("2001:db8::1"))
LINK = int(ipaddress.IPv6Address("fe80::1"))


@pytest.mark.parametrize(
    "value, expected",
    [
        ("192.0.2.1", (4, V4)),
        ("0.0.0.0", (4, 0)),
        ("255.255.255.255", (4, 2**32 - 1)),
        ("2001:db8::1", (6, V6)),
        ("2001:DB8:0:0:0:0:0:1", (6, V6)),
        ("::", (6, 0)),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", (6, 2**128 - 1)),
    ],
)
def test_strings(normalize, value, expected):
    assert normalize(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "::ffff:192.0.2.1",
        "::FFFF:192.0.2.1",
        "::ffff:c000:201",
        "0:0:0:0:0:ffff:192.0.2.1",
    ],
)
def test_ipv4_mapped_strings_are_ipv4(normalize, value):
    assert normalize(value) == (4, V4)


@pytest.mark.parametrize("value", ["::192.0.2.1", "64:ff9b::192.0.2.1", "::ffff:0:192.0.2.1", "::fffe:192.0.2.1"])
def test_other_embedded_ipv4_forms_stay_ipv6(normalize, value):
    assert normalize(value) == (6, int(ipaddress.IPv6Address(value)))


@pytest.mark.parametrize(
    "value, expected",
    [
        ("fe80::1%eth0", (6, LINK)),
        ("fe80::1%25", (6, LINK)),
        ("fe80::1%", (6, LINK)),
        ("::ffff:192.0.2.1%eth0", (4, V4)),
        ("fe80::1%" + "x" * 200, (6, LINK)),
    ],
)
def test_zones_are_ignored(normalize, value, expected):
    assert normalize(value) == expected


def test_str_subclass(normalize):
    class Text(str):
        pass

    assert normalize(Text("192.0.2.1")) == (4, V4)


@pytest.mark.parametrize(
    "value, expected",
    [
        (ipaddress.IPv4Address("192.0.2.1"), (4, V4)),
        (ipaddress.IPv6Address("2001:db8::1"), (6, V6)),
        (ipaddress.IPv6Address("::ffff:192.0.2.1"), (4, V4)),
        (ipaddress.IPv6Address("fe80::1%eth0"), (6, LINK)),
    ],
)
def test_ipaddress_objects(normalize, value, expected):
    assert normalize(value) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        (bytes([192, 0, 2, 1]), (4, V4)),
        (bytearray([192, 0, 2, 1]), (4, V4)),
        (memoryview(bytes([192, 0, 2, 1])), (4, V4)),
        (memoryview(bytes([192, 9, 0, 9, 2, 9, 1, 9]))[::2], (4, V4)),  # strided view
        (ipaddress.IPv6Address("2001:db8::1").packed, (6, V6)),
        (ipaddress.IPv6Address("::ffff:192.0.2.1").packed, (4, V4)),
        (socket.inet_pton(socket.AF_INET6, "::ffff:192.0.2.1"), (4, V4)),
    ],
)
def test_packed_bytes(normalize, value, expected):
    assert normalize(value) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ((V4, 4), (4, V4)),
        ((V4, int(socket.AF_INET)), (4, V4)),
        ((V4, socket.AF_INET), (4, V4)),  # the socket module's IntEnum, as getaddrinfo returns it
        ((V6, 6), (6, V6)),
        ((V6, int(socket.AF_INET6)), (6, V6)),
        ((V6, socket.AF_INET6), (6, V6)),
        ((0xFFFF00000000 | V4, 6), (4, V4)),
        ((0, 4), (4, 0)),
        ((2**32 - 1, 4), (4, 2**32 - 1)),
        ((2**128 - 1, 6), (6, 2**128 - 1)),
    ],
)
def test_int_with_family(normalize, value, expected):
    assert normalize(value) == expected


def test_int_with_family_as_a_named_tuple(normalize):
    Address = collections.namedtuple("Address", "value family")
    assert normalize(Address(V4, 4)) == (4, V4)


def test_none_is_an_unknown_address(normalize):
    assert normalize(None) is None
    assert normalize(None, "local_ip") is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "192.0.2",
        "192.0.2.256",
        "192.0.2.1.5",
        "010.0.0.1",
        "1.2.3.04",
        "0x1.0.0.0",
        " 192.0.2.1",
        "192.0.2.1 ",
        "192.0.2.1\x00",
        "192.0.2.1\x00junk",
        "\x00",
        "::g",
        "1::2::3",
        "2001:db8::1/64",
        "192.0.2.1:5060",
        "[2001:db8::1]",
        "localhost",
        "\u0661\u0669\u0662.0.2.1",
        "2001:db8::" + "0" * 70,
        "%eth0",
    ],
)
def test_unparsable_strings_name_the_argument(normalize, value):
    with pytest.raises(ValueError) as info:
        normalize(value, "remote_ip")
    # The value as every message shows one (errors.shown: the repr, cut past 40 characters).
    assert str(info.value) == f"remote_ip: {shown(value)} is not an IPv4 or IPv6 address"


@pytest.mark.parametrize("size", [0, 1, 3, 5, 15, 17, 32])
def test_packed_of_wrong_size_names_the_argument(normalize, size):
    with pytest.raises(ValueError) as info:
        normalize(bytes(size), "local_ip")
    assert str(info.value) == f"local_ip: packed address must be 4 or 16 bytes, got {size}"


@pytest.mark.parametrize(
    "value, message",
    [
        ((1, 5), "unknown address family 5 (use 4 or 6)"),
        ((1, 0), "unknown address family 0 (use 4 or 6)"),
        ((-1, 4), "-1 is out of range for IPv4"),
        ((2**32, 4), f"{2**32} is out of range for IPv4"),
        ((-1, 6), "-1 is out of range for IPv6"),
        ((2**128, 6), f"{2**128} is out of range for IPv6"),
    ],
)
def test_int_with_family_errors_name_the_argument(normalize, value, message):
    with pytest.raises(ValueError) as info:
        normalize(value, "remote_ip")
    assert str(info.value) == f"remote_ip: {message}"


@pytest.mark.parametrize(
    "value",
    [
        3221225985,
        1.5,
        [V4, 4],
        (True, 4),
        (V4, True),
        ("1", 4),
        (V4, 4, 0),
        (V4,),
        object(),
        ipaddress.ip_network("10.0.0.0/8"),
    ],
)
def test_wrong_types_name_the_argument(normalize, value):
    with pytest.raises(TypeError) as info:
        normalize(value, "local_ip")
    assert str(info.value) == (
        f"local_ip: expected str, ipaddress address, 4/16 packed bytes or (int, family), got {type(value).__name__}"
    )


def test_default_argument_name(normalize):
    with pytest.raises(ValueError, match=r"^address: "):
        normalize("nope")


def test_public_normalize_is_the_compiled_one_unless_disabled():
    from tcpmgm.matching import _addr_py

    if addresses.COMPILED:
        from tcpmgm.matching import _addr

        assert addresses.normalize is _addr.normalize
    else:
        assert addresses.normalize is _addr_py.normalize


# -- the twins agree on everything, not only on the hand cases -----------------------


def _outcome(function, value):
    try:
        return function(value, "x")
    except (ValueError, TypeError) as exc:
        return type(exc), str(exc)


def _twins():
    from tcpmgm.matching import _addr_py

    if not addresses.COMPILED:
        pytest.skip("compiled modules disabled by TCPMGM_NO_EXTENSIONS")
    from tcpmgm.matching import _addr

    return _addr.normalize, _addr_py.normalize


ADDRESS_TEXT = st.one_of(
    st.ip_addresses().map(str),
    st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}"),
    st.ip_addresses(v=6).map(lambda a: f"{a}%{'eth0'}"),
    st.ip_addresses(v=6).map(lambda a: a.exploded),
    st.ip_addresses(v=6).map(lambda a: a.exploded.upper()),
    st.text(alphabet="0123456789abcdefABCDEF:.%x \x00", max_size=45),
    st.text(max_size=20),
)


@settings(max_examples=600, deadline=None)
@given(ADDRESS_TEXT)
def test_twins_agree_on_strings(value):
    compiled, pure = _twins()
    assert _outcome(compiled, value) == _outcome(pure, value)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=20),
        st.ip_addresses(),
        st.tuples(st.integers(-5, 2**129), st.sampled_from([4, 6, 2, 10, 0, 3])),
    )
)
def test_twins_agree_on_other_forms(value):
    compiled, pure = _twins()
    assert _outcome(compiled, value) == _outcome(pure, value)
