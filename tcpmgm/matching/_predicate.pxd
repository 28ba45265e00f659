# "Does a rule match a connection" (docs/behaviour.md#a-rule) in C, once: the compiled
# matcher's lookup, its explain and the benchmarks' linear scan all ask it here.

from libc.stdint cimport uint32_t, uint64_t

from tcpmgm.matching._bits cimport covers
from tcpmgm.matching._layout cimport Prefix, Query


cdef inline bint key_matches(uint32_t proto, uint32_t rport, uint32_t lport, const Query* q) noexcept nogil:
    """A rule's protocol and ports (0: any) against the connection's ("any" protocol matches all)."""
    return ((proto == 0 or q.proto == 0 or proto == q.proto)
            and (rport == 0 or rport == q.rport) and (lport == 0 or lport == q.lport))


cdef inline bint prefix_holds(const Prefix* p, int family, uint64_t hi, uint64_t lo) noexcept nogil:
    """A rule's address filter (family 0: any) against an address of ``family`` (0: none)."""
    return p.family == 0 or (family == p.family and covers(p.hi, p.lo, p.plen, hi, lo))


cdef inline bint rule_matches(uint32_t proto, uint32_t rport, uint32_t lport, const Prefix* remote,
                              const Prefix* local, const Query* q) noexcept nogil:
    """A rule matches when every one of its filters does."""
    return (key_matches(proto, rport, lport, q) and prefix_holds(remote, q.rfam, q.rhi, q.rlo)
            and prefix_holds(local, q.lfam, q.lhi, q.llo))
