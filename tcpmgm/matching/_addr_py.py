"""Address normalisation for lookups, in pure Python (the reference twin of ``_addr.pyx``).

A connection presents its addresses in many forms; matching needs one:
``(version, value)`` with ``version`` 4 or 6 and ``value`` the address as an
unsigned integer.  Two rules of docs/behaviour.md#which-rule-wins apply here:

* an IPv4-mapped IPv6 address (``::ffff:192.0.2.1``) is the IPv4 address
  (:func:`tcpmgm.model.prefix.unmap_ipv6`, which the rules' networks go by too);
* an IPv6 zone (``fe80::1%eth0``) is ignored.

Accepted forms: ``str``; ``ipaddress.IPv4Address``/``IPv6Address``; packed
``bytes``/``bytearray``/``memoryview`` of 4 or 16 bytes; ``(int, family)``
with family 4, 6, ``socket.AF_INET`` or ``socket.AF_INET6``; ``None`` (the
address is unknown: only rules without that address filter can match).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from ..model.errors import shown
from ..model.prefix import unmap_ipv6

_V4_MAX = (1 << 32) - 1
_V6_MAX = (1 << 128) - 1
_FAMILIES = {4: 4, 6: 6, int(socket.AF_INET): 4, int(socket.AF_INET6): 6}


def _is_integer(value: Any) -> bool:
    # int subclasses count (socket.AF_INET is an IntEnum); bool does not.
    return isinstance(value, int) and not isinstance(value, bool)


def _unmap(value: int) -> tuple[int, int]:
    """An IPv6 address as ``(version, int)``: a mapped one is its IPv4 address."""
    version, address, _ = unmap_ipv6(value)
    return version, address


def normalize(value: Any, argument: str = "address") -> tuple[int, int] | None:
    """``(version, int)`` for ``value``; ``None`` for ``None``.

    Raises ``ValueError`` (unparsable, out of range) or ``TypeError`` (wrong
    type), each naming ``argument``.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.partition("%")[0]
        try:
            parsed = ipaddress.ip_address(text)
        except ValueError:
            raise ValueError(f"{argument}: {shown(value)} is not an IPv4 or IPv6 address") from None
        return (4, int(parsed)) if parsed.version == 4 else _unmap(int(parsed))
    if isinstance(value, ipaddress.IPv4Address):
        return 4, int(value)
    if isinstance(value, ipaddress.IPv6Address):
        return _unmap(int(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        packed = bytes(value)
        if len(packed) == 4:
            return 4, int.from_bytes(packed, "big")
        if len(packed) == 16:
            return _unmap(int.from_bytes(packed, "big"))
        raise ValueError(f"{argument}: packed address must be 4 or 16 bytes, got {len(packed)}")
    if isinstance(value, tuple) and len(value) == 2 and all(_is_integer(v) for v in value):
        number, family = value
        version = _FAMILIES.get(family)
        if version is None:
            raise ValueError(f"{argument}: unknown address family {shown(family)} (use 4 or 6)")
        if not 0 <= number <= (_V4_MAX if version == 4 else _V6_MAX):
            raise ValueError(f"{argument}: {shown(number)} is out of range for IPv{version}")
        return (4, number) if version == 4 else _unmap(number)
    raise TypeError(
        f"{argument}: expected str, ipaddress address, 4/16 packed bytes or (int, family), got {type(value).__name__}"
    )
