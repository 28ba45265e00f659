# C-level access to the address parser, for the compiled classifier and row reader.
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

cdef extern from "arpa/inet.h" nogil:
    uint32_t htonl(uint32_t)

# Writes the address as 16 bytes (IPv4 in the first 4, network order) and
# returns 4 or 6; returns 0 for None.  Raises ValueError/TypeError naming
# ``argument`` like the Python-level ``normalize``.
cdef int parse_into(object value, uint8_t* out, str argument) except -1


cdef inline int unmap_ipv4(uint8_t* raw) noexcept nogil:
    """``raw``: an IPv6 address, 16 bytes in network order.  An IPv4-mapped one
    (``::ffff:a.b.c.d``) counts as the IPv4 address it carries (docs/behaviour.md#which-rule-wins):
    its 4 bytes move to the front, the rest is zeroed and 4 is returned; any other
    address is left as it is and 6 is returned.  The one C definition of that rule:
    lookups (``parse_into``, ``lookup_many``'s buffers) and the row reader's prefixes use it."""
    cdef uint64_t head
    cdef uint32_t mark
    memcpy(&head, raw, 8)
    memcpy(&mark, raw + 8, 4)
    if head != 0 or mark != htonl(0xFFFF):     # two word compares: this runs on every IPv6 lookup
        return 6
    memcpy(raw, raw + 12, 4)
    memset(raw + 4, 0, 12)
    return 4
