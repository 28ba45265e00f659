"""The fast parts of the reload row path agree with the slow, obvious ones."""

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from tcpmgm.model.rule import Rule, _ip_value

ADDRESS_TEXT = st.text(alphabet="0123456789abcdefABCDEF:.x ", max_size=45)


def expected(text):
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return int(ip), ip.version


@settings(max_examples=1000)
@given(st.one_of(ADDRESS_TEXT, st.ip_addresses().map(str), st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}")))
def test_address_fast_path_equals_ipaddress(text):
    value, version = _ip_value(text)
    assert (None if value is None else (value, version)) == expected(text)


@settings(max_examples=300)
@given(st.ip_addresses(), st.integers(0, 128))
def test_network_from_ints_equals_ipaddress(ip, length):
    length = min(length, ip.max_prefixlen)
    rule = Rule.from_row({"id": 1, "proto": "any", "remote_addr": f"{ip}/{length}"})
    network = ipaddress.ip_network((ip, length), strict=False)
    host_bits_set = network.network_address != ip
    mapped = ipaddress.IPv6Network("::ffff:0:0/96")
    if network.version == 6 and network.prefixlen >= 96 and network.subnet_of(mapped):
        network = ipaddress.IPv4Network((int(network.network_address) & 0xFFFFFFFF, length - 96))
    assert rule.remote == network and type(rule.remote) is type(network)
    assert bool(rule.warnings) == host_bits_set
