"""``parse_endpoint``: the ``IP[:PORT]`` / ``[IPV6][:PORT]`` text of ``tcpmgm match`` and ``tcp_match``."""

import pytest

from tcpmgm.sockets import parse_endpoint


@pytest.mark.parametrize("text, expected", [
    ("10.0.0.1", ("10.0.0.1", 0)),
    ("10.0.0.1:5060", ("10.0.0.1", 5060)),
    (" 10.0.0.1:0 ", ("10.0.0.1", 0)),
    ("[2001:db8::1]:5061", ("2001:db8::1", 5061)),
    ("[2001:db8::1]", ("2001:db8::1", 0)),
    ("2001:db8::1", ("2001:db8::1", 0)),
    ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
    ("10.0.0.1:65535", ("10.0.0.1", 65535)),
])
def test_accepted_forms(text, expected):
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize("text, reason", [
    ("10.0.0.1:", "port"),          # a separator promises a port
    ("[::1]:", "port"),
    ("10.0.0.1:65536", "port"),
    ("10.0.0.1:-1", "port"),
    ("10.0.0.1:+80", "port"),
    ("10.0.0.1:٥٠٦٠", "port"),      # non-ASCII digits are no port number
    ("10.0.0.1:http", "port"),
    ("[::1", "expected [ipv6]:port"),
    ("[::1]80", "expected [ipv6]:port"),
    (":5060", "no address"),
    ("[]:5060", "no address"),
])
def test_refused_forms_name_the_text_and_the_reason(text, reason):
    with pytest.raises(ValueError) as info:
        parse_endpoint(text)
    assert repr(text.strip()) in str(info.value) and reason in str(info.value)
