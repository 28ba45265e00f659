# cython: language_level=3, boundscheck=False, wraparound=False
"""Address normalisation for lookups, compiled (twin of ``_addr_py.py``).

Same contract as the pure module: ``normalize(value, argument)`` returns
``(version, int)``, mapping IPv4-mapped IPv6 to IPv4 and dropping zones.
Strings are read in place (no copy for the usual compact ASCII ``str``);
dotted quads and plain IPv6 text are parsed here (IPv6 with an embedded
dotted quad, and every string these parsers do not accept, by the C library's
``inet_pton``), instead of ``ipaddress``: that is what makes a lookup on ``str`` addresses cheap.  The C entry point
:c:func:`parse_into` is what the classifier calls per lookup.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsASCIIString
from libc.stdint cimport uint8_t, uint16_t
from libc.string cimport memcpy, memchr, memset

import ipaddress
import socket

from ..model.errors import shown

cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object)
    const void* PyUnicode_DATA(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)

cdef extern from "arpa/inet.h" nogil:
    int inet_pton(int af, const char* src, void* dst)

cdef extern from "sys/socket.h":
    int AF_INET6

cdef object _IPv4Address = ipaddress.IPv4Address
cdef object _IPv6Address = ipaddress.IPv6Address
cdef dict _FAMILIES = {4: 4, 6: 6, int(socket.AF_INET): 4, int(socket.AF_INET6): 6}

cdef inline bint _parse_dotted_quad(const char* text, Py_ssize_t size, uint8_t* out) noexcept nogil:
    """Strict dotted quad, as ``ipaddress`` (and glibc's ``inet_pton``) accept it: exactly four
    decimal parts 0..255, no sign, no space, no leading zero ("010.0.0.1" is refused)."""
    cdef Py_ssize_t i
    cdef int part = 0, digits = 0
    cdef unsigned int value = 0
    cdef char ch
    for i in range(size):
        ch = text[i]
        if c'0' <= ch <= c'9':
            if digits and value == 0:
                return False                # a leading zero
            value = value * 10 + <unsigned int>(ch - c'0')
            if value > 255:
                return False
            digits += 1
        elif ch == c'.' and digits and part < 3:
            out[part] = <uint8_t>value
            part += 1
            value = digits = 0
        else:
            return False
    if part != 3 or not digits:
        return False
    out[3] = <uint8_t>value
    return True


cdef inline int _hex_digit(char ch) noexcept nogil:
    if c'0' <= ch <= c'9':
        return ch - c'0'
    if c'a' <= ch <= c'f':
        return ch - c'a' + 10
    if c'A' <= ch <= c'F':
        return ch - c'A' + 10
    return -1


cdef inline bint _parse_v6_plain(const char* text, Py_ssize_t size, uint8_t* out) noexcept nogil:
    """IPv6 text without an embedded dotted quad: 1..4 hex digits per group, 8 groups, or at most
    7 around one "::".  Whatever does not fit that exactly (a dotted tail, a stray colon, a fifth
    digit) returns False and is left to ``inet_pton``, which then accepts or refuses it: this
    only has to agree with it on what it accepts, and it costs a fraction of its instructions."""
    cdef uint16_t groups[8]
    cdef int n = 0, gap = -1, digits, x
    cdef unsigned int value
    cdef Py_ssize_t i = 0
    if size >= 2 and text[0] == c':':
        if text[1] != c':':
            return False
        gap = 0
        i = 2
    while i < size:
        value = 0
        digits = 0
        while i < size and digits < 5:
            x = _hex_digit(text[i])
            if x < 0:
                break
            value = value << 4 | <unsigned int>x
            digits += 1
            i += 1
        if digits == 0 or digits > 4 or n == 8:
            return False
        groups[n] = <uint16_t>value
        n += 1
        if i == size:
            break
        if text[i] != c':' or i + 1 == size:
            return False
        i += 1
        if text[i] == c':':
            if gap >= 0:
                return False
            gap = n
            i += 1
    if (n != 8) if gap < 0 else (n > 7):
        return False
    memset(out, 0, 16)
    for x in range(n):
        # groups after the gap go to the end of the address
        i = x if gap < 0 or x < gap else x + 8 - n
        out[2 * i] = <uint8_t>(groups[x] >> 8)
        out[2 * i + 1] = <uint8_t>groups[x]
    return True


cdef int _parse_text(str value, uint8_t* out, str argument) except -1:
    cdef bytes raw
    cdef const char* text
    cdef Py_ssize_t size
    if PyUnicode_IS_COMPACT_ASCII(value):
        # The common case, read in place: no bytes object, no copy.
        text = <const char*>PyUnicode_DATA(value)
        size = PyUnicode_GET_LENGTH(value)
    else:
        # Non-ASCII text: refused, unless all of it is in the zone, which is ignored.
        try:
            raw = PyUnicode_AsASCIIString(value.partition("%")[0])
        except UnicodeEncodeError:
            raise ValueError(f"{argument}: {shown(value)} is not an IPv4 or IPv6 address") from None
        text = PyBytes_AS_STRING(raw)
        size = PyBytes_GET_SIZE(raw)
    cdef char buf[64]
    cdef const char* zone = <const char*>memchr(text, b'%', size)
    if zone != NULL:
        size = zone - text
    memset(out, 0, 16)
    if _parse_dotted_quad(text, size, out):
        return 4
    if _parse_v6_plain(text, size, out):
        return unmap_ipv4(out)
    # inet_pton stops at a NUL, so "::1\0junk" would parse: refuse it here.
    if size >= 64 or memchr(text, 0, size) != NULL:
        raise ValueError(f"{argument}: {shown(value)} is not an IPv4 or IPv6 address")
    memcpy(buf, text, size)
    buf[size] = 0
    if inet_pton(AF_INET6, buf, out) == 1:
        return unmap_ipv4(out)
    raise ValueError(f"{argument}: {shown(value)} is not an IPv4 or IPv6 address")


cdef int _parse_int(object number, int version, uint8_t* out, str argument) except -1:
    cdef bytes packed
    try:
        packed = number.to_bytes(4 if version == 4 else 16, "big")
    except OverflowError:
        raise ValueError(f"{argument}: {shown(number)} is out of range for IPv{version}") from None
    memset(out, 0, 16)
    memcpy(out, PyBytes_AS_STRING(packed), 4 if version == 4 else 16)
    return 4 if version == 4 else unmap_ipv4(out)


cdef int parse_into(object value, uint8_t* out, str argument) except -1:
    cdef const uint8_t[::1] view
    cdef Py_ssize_t n
    if value is None:
        return 0
    if type(value) is str:
        return _parse_text(<str>value, out, argument)
    if isinstance(value, _IPv4Address) or isinstance(value, _IPv6Address):
        return _parse_int(int(value), value.version, out, argument)
    if isinstance(value, (bytes, bytearray, memoryview)):
        if not memoryview(value).c_contiguous:  # a strided view cannot be cast; copy it
            value = bytes(value)
        view = memoryview(value).cast("B")
        n = view.shape[0]
        if n != 4 and n != 16:
            raise ValueError(f"{argument}: packed address must be 4 or 16 bytes, got {n}")
        memset(out, 0, 16)
        memcpy(out, &view[0], n)
        return 4 if n == 4 else unmap_ipv4(out)
    if isinstance(value, str):
        return _parse_text(str(value), out, argument)
    if isinstance(value, tuple) and len(value) == 2 and _is_integer(value[0]) and _is_integer(value[1]):
        # int() turns an IntEnum family (socket.AF_INET) into the key _FAMILIES has.
        value = (int(value[0]), int(value[1]))
        version = _FAMILIES.get(value[1])
        if version is None:
            raise ValueError(f"{argument}: unknown address family {value[1]!r} (use 4 or 6)")
        if value[0] < 0:
            raise ValueError(f"{argument}: {shown(value[0])} is out of range for IPv{version}")
        return _parse_int(value[0], version, out, argument)
    raise TypeError(
        f"{argument}: expected str, ipaddress address, 4/16 packed bytes or (int, family), "
        f"got {type(value).__name__}"
    )


cdef inline bint _is_integer(object value):
    # int subclasses count (socket.AF_INET is an IntEnum); bool does not.
    return isinstance(value, int) and not isinstance(value, bool)


def normalize(value, argument="address"):
    """``(version, int)`` for ``value``; ``None`` for ``None`` (see ``_addr_py.normalize``)."""
    cdef uint8_t out[16]
    cdef int version = parse_into(value, out, argument)
    if version == 0:
        return None
    return version, int.from_bytes(out[:4] if version == 4 else out[:16], "big")
