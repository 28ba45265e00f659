"""``parse_endpoint``: the ``IP[:PORT]`` / ``[IPV6][:PORT]`` text of ``tcpmgm match`` and ``tcp_match``."""

import pytest

from tcpmgm.service.sockets import parse_endpoint


@pytest.mark.parametrize(
    "text, expected",
    [
        ("10.0.0.1", ("10.0.0.1", 0)),
        ("10.0.0.1:5060", ("10.0.0.1", 5060)),
        (" 10.0.0.1:0 ", ("10.0.0.1", 0)),
        ("[2001:db8::1]:5061", ("2001:db8::1", 5061)),
        ("[2001:db8::1]", ("2001:db8::1", 0)),
        ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
        ("10.0.0.1:65535", ("10.0.0.1", 65535)),
    ],
)
def test_accepted_forms(text, expected):
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize(
    "text, reason",
    [
        ("10.0.0.1:", "port"),  # a separator promises a port
        ("[::1]:", "port"),
        ("10.0.0.1:65536", "port"),
        ("10.0.0.1:-1", "port"),
        ("10.0.0.1:+80", "port"),
        ("10.0.0.1:٥٠٦٠", "port"),  # non-ASCII digits are no port number
        ("10.0.0.1:http", "port"),
        ("[::1", "expected [ipv6]:port"),
        ("[::1]80", "expected [ipv6]:port"),
        (":5060", "no address"),
        ("[]:5060", "no address"),
        # Issue 10, item 14: unbracketed, 2001:db8::1:5060 read as an address with port 0 (this
        # list accepted "2001:db8::1"); IPv6 now always goes in brackets, and the message says how.
        ("2001:db8::1:5060", "[addr]:port"),
        ("2001:db8::1", "[addr]:port"),
        ("::1", "[addr]:port"),
        ("fe80::1%eth0", "[addr]:port"),
        ("::ffff:10.0.0.1:5060", "[addr]:port"),
    ],
)
def test_refused_forms_name_the_text_and_the_reason(text, reason):
    with pytest.raises(ValueError) as info:
        parse_endpoint(text)
    assert repr(text.strip()) in str(info.value) and reason in str(info.value)


LISTENERS = {"internal": "10.0.0.1", "public6": "2001:db8::10", "zoned": "fe80::1%eth0"}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("internal", ("10.0.0.1", 0)),
        ("internal:5060", ("10.0.0.1", 5060)),
        ("public6:5061", ("2001:db8::10", 5061)),
        ("zoned", ("fe80::1", 0)),  # as a rule reads the tag: the zone does not match
        ("10.0.0.7:80", ("10.0.0.7", 80)),  # addresses stay as they are
        ("[fe80::2%eth1]:80", ("fe80::2%eth1", 80)),
    ],
)
def test_a_local_end_may_be_a_socket_tag(text, expected):
    """Issue 10, item 15: with the listeners given, a socket tag names its listener's address."""
    assert parse_endpoint(text, listeners=LISTENERS) == expected


@pytest.mark.parametrize(
    "text, reason",
    [
        ("external:5060", "neither an address nor a known socket tag (listeners: internal, public6, zoned)"),
        ("10.0.0.999", "not an IPv4 or IPv6 address"),
        ("any", "not an address or a socket tag"),
    ],
)
def test_an_unknown_tag_names_the_listeners(text, reason):
    with pytest.raises(ValueError) as info:
        parse_endpoint(text, listeners=LISTENERS)
    assert str(info.value) == f"{text!r}: {reason}"


def test_without_listeners_a_tag_is_left_to_the_address_parser():
    assert parse_endpoint("internal:5060") == ("internal", 5060)


def test_a_long_endpoint_is_shown_bounded():
    with pytest.raises(ValueError) as refused:
        parse_endpoint("1:2:" * 50_000)
    assert len(str(refused.value)) < 200 and "…" in str(refused.value)
