# C-level access to the address parser, for the compiled classifier and row reader.
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

cdef extern from "arpa/inet.h" nogil:
    uint32_t htonl(uint32_t)

# Writes the address as 16 bytes (IPv4 in the first 4, network order) and
# returns 4 or 6; returns 0 for None.  Raises ValueError/TypeError naming
# ``argument`` like the Python-level ``normalize``.
cdef int parse_into(object value, uint8_t* out, str argument) except -1


cdef inline bint is_ipv4_mapped(const uint8_t* raw) noexcept nogil:
    """Whether ``raw``, an IPv6 address as 16 bytes in network order, is IPv4-mapped
    (``::ffff:a.b.c.d``, the IPv4 address in its last 4 bytes), which counts as that IPv4
    address (docs/behaviour.md#which-rule-wins).  The one C definition of that rule: lookups
    (``parse_into``, ``lookup_many``'s buffers) and the row reader's prefixes ask it here."""
    cdef uint64_t head
    cdef uint32_t mark
    memcpy(&head, raw, 8)
    memcpy(&mark, raw + 8, 4)
    return head == 0 and mark == htonl(0xFFFF)     # two word compares: this runs on every IPv6 lookup


cdef inline int unmap_ipv4(uint8_t* raw) noexcept nogil:
    """``raw`` as ``is_ipv4_mapped`` reads it: a mapped address becomes the IPv4 address it
    carries (its 4 bytes first, the rest zeroed) and 4 is returned; any other is left as it is
    and 6 is returned."""
    if not is_ipv4_mapped(raw):
        return 6
    memcpy(raw, raw + 12, 4)
    memset(raw + 4, 0, 12)
    return 4
