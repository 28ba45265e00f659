"""parse_endpoint on arbitrary text: a (host, port) or a ValueError, and IPv6 only in brackets (issue 10, 14-15)."""

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcpmgm.service.sockets import parse_endpoint

LISTENERS = {"internal": "10.0.0.1", "v6": "2001:db8::10"}
ports = st.integers(0, 65535)


@pytest.mark.parametrize("listeners", [None, LISTENERS], ids=["plain", "with-listeners"])
@given(text=st.text(alphabet=st.sampled_from("0123456789abcdef:.[]%/ x-_internalv6"), max_size=40) | st.text())
def test_any_text_is_an_endpoint_or_a_value_error(listeners, text):
    try:
        host, port = parse_endpoint(text, listeners=listeners)
    except ValueError:
        return
    assert isinstance(host, str) and host and 0 <= port <= 65535
    bracketed = text.strip().startswith("[")
    assert bracketed or text.count(":") <= 1  # an unbracketed IPv6 address never got through


@given(address=st.ip_addresses(v=6), port=ports)
def test_ipv6_in_brackets_round_trips_and_without_is_refused(address, port):
    assert parse_endpoint(f"[{address}]:{port}") == (str(address), port)
    assert parse_endpoint(f"[{address}]") == (str(address), 0)
    for unbracketed in (f"{address}:{port}", str(address)):
        with pytest.raises(ValueError, match=r"\[addr\]:port"):
            parse_endpoint(unbracketed)


@given(address=st.ip_addresses(v=4), port=ports, tag=st.sampled_from(sorted(LISTENERS)))
def test_ipv4_and_tags_round_trip(address, port, tag):
    assert parse_endpoint(f"{address}:{port}") == (str(address), port)
    assert parse_endpoint(f"{address}:{port}", listeners=LISTENERS) == (str(address), port)
    ip, resolved_port = parse_endpoint(f"{tag}:{port}", listeners=LISTENERS)
    assert ipaddress.ip_address(ip) == ipaddress.ip_address(LISTENERS[tag]) and resolved_port == port
