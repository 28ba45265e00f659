# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled classifier: docs/behaviour.md#which-rule-wins answered by a prefix trie and tuple-space hashing.

Rank
    The rules are sorted once by ``Rule.order``, :meth:`tcpmgm.Rule.key` (the one
    definition of the key) packed by the rule into one int with the same order,
    read here as two C integers (which the ranges of ``tcpmgm.limits``, docs/behaviour.md#a-rule,
    guarantee; a rule outside them is refused by name), and each gets its position, its *rank*.  "Smallest key among the
    matching rules" is then "smallest rank among the matching rules": every
    structure below stores ranks, every comparison is one integer compare, and
    nothing here re-derives the key.  ``NONE`` (0xFFFFFFFFU) is "no rule".

Layout (all plain C arrays owned by the ``Matcher``, freed in ``__dealloc__``;
nothing changes after ``__init__``, so lookups from many threads need no lock;
the build ends by moving the arrays a lookup reads into one block, in 2 MB
pages where Linux offers them)

    rule set     The rules sharing one remote prefix (or all rules whose remote
                 is "any").  Split into *groups* by which of proto / remote port /
                 local address (and its prefix length) / local port are exact
                 rather than "any": the tuple spaces of Open vSwitch's
                 classifier.  A group's ``best`` is the smallest rank in it; a
                 rule set's groups are contiguous and sorted by ``best``.
    group        One exact key (the common case) is stored inline; otherwise
                 the group's keys live in ``table``, one open-addressing hash
                 for the whole matcher, keyed by (group index, proto, remote
                 port, local prefix id, local port) -> smallest rank with that
                 key.  Rules of a proto-exact group also get an entry with
                 proto ``ANY_PROTO`` (smallest rank over their protocols) for
                 lookups whose protocol is "any".
    local ids    Every distinct local prefix gets an id (hash ``ltable``); a
                 group filtering on a local prefix of length L masks the
                 connection's local address to L and asks ``ltable`` for the
                 id, one probe instead of a scan.
    trie         Per family one binary path-compressed (PATRICIA) trie over the
                 remote prefixes; IPv4 lives in the top 32 bits of the same
                 128-bit key.  A node exists for each rule prefix and each
                 branching point; ``own_best`` is the best rank of its own rule
                 set, ``sub_best`` the best rank anywhere in its subtree.
    first stride Per family a direct table of 2**B slots indexed by the top B
                 address bits, B (``slot_bits``) from 16 to 22, about two slots
                 per remote prefix of the family: the trie below a slot then
                 holds one prefix or so, and a lookup at a million rules makes
                 one or two node reads instead of five or six.  A slot holds
                 (a) the rule-bearing prefixes shorter than /B that cover it,
                 as a run of ``ShortPrefix`` records in ``pool`` sorted by
                 ``own_best``, each a copy of what the lookup needs from the
                 node and, when that is one key, of its first group (one
                 sequential read instead of a node miss and a group miss
                 each), and
                 (b) the topmost trie node of length >= B under it, where the
                 descent starts.

Lookup (``classify``), keeping ``best`` = smallest matching rank so far
    1. the slot's short prefixes in ``own_best`` order, stopping at the first
       whose ``own_best`` cannot beat ``best``;
    2. the trie from the slot's start node downwards, stopping when the node's
       ``sub_best`` cannot beat ``best`` or its prefix does not contain the
       address (then no deeper node can);
    3. the remote-"any" rule set.
    Each rule set is probed group by group in ``best`` order, stopping as soon
    as a group's ``best`` cannot beat ``best``.

Why this is docs/behaviour.md#which-rule-wins exactly: every rule whose remote filter matches sits in a
rule set visited in 1-3 unless a bound proved that everything it holds ranks
after a rule already matched; inside a rule set a rule matches iff its group's
exact fields equal the connection's (masked) fields, which is the hash key, and
the hash keeps the smallest rank per key; the minimum over all of them is the
smallest matching rank.  ``explain`` and the ``LinearScanBaseline`` check
every rule one by one instead, and the tests compare all of them with the
pure-Python reference.
"""

from cpython.array cimport array, clone
from cpython.ref cimport PyObject
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, qsort, realloc
from libc.string cimport memcpy, memset

from tcpmgm.matching._addr cimport parse_into

import sys

from ..model.errors import shown
from ..model.limits import check_id, check_priority
from ..model.profile import default_profile
from ..model.protocols import protocol_code, protocols
from .arguments import check_unique_ids, lookup_port, lookup_proto
from .explanation import explanation
from ..model.rule import Rule

cdef extern from "Python.h":
    PyObject* PyTuple_GET_ITEM(object, Py_ssize_t)
    dict PyObject_GenericGetDict(object, void*)
    long long PyLong_AsLongLongAndOverflow(object, int*) except? -1
    long PyLong_AsLongAndOverflow(object, int*)     # no exception when it overflows
    void Py_INCREF(object)
    void Py_XDECREF(PyObject*)

cdef extern from *:
    """
    static inline int tcpmgm_clz64(unsigned long long x) { return x ? __builtin_clzll(x) : 64; }
    static inline unsigned long long tcpmgm_load_be64(const unsigned char* p) {
        unsigned long long v; memcpy(&v, p, 8); return __builtin_bswap64(v);
    }
    #define tcpmgm_prefetch(p) __builtin_prefetch(p)
    static inline unsigned int tcpmgm_load_be32(const unsigned char* p) {
        unsigned int v; memcpy(&v, p, 4); return __builtin_bswap32(v);
    }
    """
    int clz64 "tcpmgm_clz64"(uint64_t x) nogil
    uint64_t load_be64 "tcpmgm_load_be64"(const uint8_t* p) nogil
    uint32_t load_be32 "tcpmgm_load_be32"(const uint8_t* p) nogil
    void prefetch "tcpmgm_prefetch"(const void* p) nogil

cdef extern from *:
    """
    #include <stdlib.h>
    #if defined(__linux__)
    #include <sys/mman.h>
    #endif
    /* A large matcher's lookup-path arrays go into 2 MB pages where the OS offers
       them: a lookup reads a few random cache lines spread over tens of megabytes,
       and with 4 KB pages each of those also costs a TLB miss and a page walk
       (a two-dimensional one under a hypervisor).  Freed with free(). */
    #define TCPMGM_HUGE_PAGE ((size_t)2 << 20)
    static void* tcpmgm_arena_alloc(size_t size) {
    #if defined(__linux__) && defined(MADV_HUGEPAGE)
        if (size >= 2 * TCPMGM_HUGE_PAGE) {
            void* p = NULL;
            size_t rounded = (size + TCPMGM_HUGE_PAGE - 1) & ~(TCPMGM_HUGE_PAGE - 1);
            if (posix_memalign(&p, TCPMGM_HUGE_PAGE, rounded) != 0) return NULL;
            madvise(p, rounded, MADV_HUGEPAGE);      /* advice only: 4 KB pages still work */
            return p;
        }
    #endif
        return malloc(size ? size : 1);
    }
    """
    void* arena_alloc "tcpmgm_arena_alloc"(size_t size) nogil

cdef extern from *:
    """
    #define TCPMGM_NONE 0xFFFFFFFFu
    #define TCPMGM_NO_SLOT 0xFFFFFFFFFFFFFFFFull
    """
    const uint32_t NONE "TCPMGM_NONE"      # "no rule" as a rank, "no node" as an index
    const uint64_t NO_SLOT "TCPMGM_NO_SLOT"  # "hash slot not computed yet"

__all__ = ["Matcher", "LinearScanBaseline"]

cdef enum:
    ANY_PROTO = 0xFFFF        # proto key of the entries serving "any" lookups
    MIN_SLOT_BITS = 16        # the first stride's range (module docstring)
    MAX_SLOT_BITS = 22
    AHEAD = 4                 # lookup_many's pipeline distance between stages (lookups)
    DESCENT = 3               # its stages that prefetch one trie level each
    ID_AHEAD = 16             # its prefetch distance when it turns ranks into ids
    RING = 32                 # its ring of lookups in flight: a power of two > (2 + DESCENT) * AHEAD
    PIPELINE_MIN = 16384      # nodes + groups below which lookup_many does not prefetch
    HASH_PREFETCH_MIN = 32767  # hash slots - 1 below which probe_set does not prefetch (768 KiB)
    PREFETCH_GROUPS = 8       # a rule set's first groups whose hash slots are prefetched
    G_PROTO = 1               # group mask bits: which fields are exact
    G_RPORT = 2
    G_LPORT = 4
    G_LOCAL = 8
    G_INLINE = 16             # the group's single key is stored in the group
    LAST_SHORT = 0x8000       # ShortPrefix.group_cnt: the last record of its chain
    N_LOOKUP_ARRAYS = 9       # see Matcher._lookup_arrays


# -- the C layout (see the module docstring) ---------------------------------

ctypedef struct Node:
    uint64_t hi, lo           # prefix, masked to plen
    uint32_t child[2]
    uint32_t own_best
    uint32_t sub_best
    uint32_t group_off
    uint16_t group_cnt
    uint8_t plen
    uint8_t family

ctypedef struct Group:
    uint32_t best
    uint16_t mask             # G_* bits
    uint16_t lslot            # which local (family, length) when G_LOCAL
    uint32_t local_id         # the inline key (G_INLINE) ...
    uint16_t proto, rport, lport, pad

ctypedef struct Entry:
    uint64_t a                # group index | proto << 32 | remote port << 48
    uint32_t local_id
    uint32_t lport
    uint32_t rank             # NONE: empty slot

ctypedef struct LocalEntry:
    uint64_t hi, lo
    uint32_t fp               # family << 8 | plen; 0: empty slot
    uint32_t id

ctypedef struct LocalPrefix:
    uint64_t hi, lo
    uint8_t family, plen

ctypedef struct Slot:
    uint32_t chain            # its first ShortPrefix in pool, or NONE
    uint32_t start            # topmost node of length >= slot_bits, or NONE

ctypedef struct ShortPrefix:   # a rule-bearing prefix shorter than the stride, in a slot's chain
    uint32_t own_best
    uint32_t group_off        # its groups
    uint16_t group_cnt        # | LAST_SHORT on the chain's last record
    uint16_t proto            # its first group's key when that is a single key without a
    uint16_t rport, lport     # local address (0: any), so that no group read is needed;
                              # else proto = ANY_PROTO, which no rule has

ctypedef struct RuleRec:      # per rank, for explain
    uint32_t node             # remote prefix node, NONE for any
    uint32_t local_id         # 0 for any
    uint16_t proto, rport, lport, pad

ctypedef struct SortKey:        # only while building: a rule's Rule.order as C ints
    int64_t head              # Rule.order >> 64: everything in the key above the id
    int64_t id                # Rule.order's low 64 bits
    uint32_t index            # where the rule came in the rules given


cdef int compare_sort_keys(const void* a, const void* b) noexcept nogil:
    cdef const SortKey* x = <const SortKey*>a
    cdef const SortKey* y = <const SortKey*>b
    if x.head != y.head:
        return -1 if x.head < y.head else 1
    if x.id != y.id:
        return -1 if x.id < y.id else 1
    return (x.index > y.index) - (x.index < y.index)     # a repeated id: refused after the build


ctypedef struct PendingPrefix:  # only while building: a rule's remote prefix, to insert
    uint64_t hi, lo
    uint32_t rank
    uint8_t family, plen


cdef int compare_prefixes(const void* a, const void* b) noexcept nogil:
    """Address order, a prefix before the longer ones under it (then rank, so that qsort's
    order is fully defined)."""
    cdef const PendingPrefix* x = <const PendingPrefix*>a
    cdef const PendingPrefix* y = <const PendingPrefix*>b
    if x.family != y.family:
        return <int>x.family - <int>y.family
    if x.hi != y.hi:
        return -1 if x.hi < y.hi else 1
    if x.lo != y.lo:
        return -1 if x.lo < y.lo else 1
    if x.plen != y.plen:
        return <int>x.plen - <int>y.plen
    return (x.rank > y.rank) - (x.rank < y.rank)


ctypedef struct IdRank:      # only while building the id index
    int64_t id
    uint32_t rank


cdef int compare_ids(const void* a, const void* b) noexcept nogil:
    cdef int64_t x = (<const IdRank*>a).id, y = (<const IdRank*>b).id
    return (x > y) - (x < y)


ctypedef struct Core:
    Node* nodes
    uint32_t n_nodes, cap_nodes
    uint32_t root[2]          # [0] IPv4, [1] IPv6
    Slot* slots[2]
    int slot_bits[2]
    ShortPrefix* pool
    uint32_t n_pool, cap_pool
    Group* groups
    uint32_t n_groups, cap_groups
    Entry* table
    uint64_t hmask
    uint64_t n_entries
    LocalEntry* ltable
    uint64_t lmask
    LocalPrefix* lprefixes    # by local id (0 unused)
    uint32_t n_local
    LocalPrefix* lslots       # (family, plen) per local slot
    uint32_t n_lslots
    uint32_t any_off, any_cnt, any_best
    RuleRec* rules
    int64_t* id_of_rank
    int64_t* ids_sorted
    uint32_t* rank_of_sorted
    uint32_t n_rules
    void* arena               # once built: the block holding the arrays a lookup reads

ctypedef struct Query:
    uint64_t rhi, rlo, lhi, llo
    int rfam, lfam            # 0: no address
    uint32_t proto            # 0: any
    uint32_t rport, lport
    uint32_t memo_lslot, memo_lid


# -- bit helpers --------------------------------------------------------------

cdef inline uint64_t mask_hi(int plen) noexcept nogil:
    if plen <= 0:
        return 0
    if plen >= 64:
        return 0xFFFFFFFFFFFFFFFFULL
    return 0xFFFFFFFFFFFFFFFFULL << (64 - plen)


cdef inline uint64_t mask_lo(int plen) noexcept nogil:
    if plen <= 64:
        return 0
    return 0xFFFFFFFFFFFFFFFFULL << (128 - plen)


cdef inline int bit_at(uint64_t hi, uint64_t lo, int i) noexcept nogil:
    if i < 64:
        return <int>((hi >> (63 - i)) & 1)
    return <int>((lo >> (127 - i)) & 1)


cdef inline bint covers(uint64_t phi, uint64_t plo, int plen, uint64_t hi, uint64_t lo) noexcept nogil:
    return ((hi ^ phi) & mask_hi(plen)) == 0 and ((lo ^ plo) & mask_lo(plen)) == 0


cdef inline uint64_t mix(uint64_t x) noexcept nogil:
    x ^= x >> 33
    x *= 0xFF51AFD7ED558CCDULL
    x ^= x >> 33
    x *= 0xC4CEB9FE1A85EC53ULL
    x ^= x >> 33
    return x


cdef inline uint64_t entry_hash(uint64_t a, uint32_t local_id, uint32_t lport) noexcept nogil:
    return mix(a ^ ((<uint64_t>local_id << 16 | lport) * 0x9E3779B97F4A7C15ULL))


cdef inline uint64_t local_hash(uint64_t hi, uint64_t lo, uint32_t fp) noexcept nogil:
    return mix(hi ^ mix(lo ^ fp))


cdef inline void set_address(const uint8_t* raw, int family, uint64_t* hi, uint64_t* lo) noexcept nogil:
    # ``raw`` as parse_into writes it: IPv4 in the first 4 bytes, network order.
    if family == 4:
        hi[0] = <uint64_t>load_be32(raw) << 32
        lo[0] = 0
    else:
        hi[0] = load_be64(raw)
        lo[0] = load_be64(raw + 8)


# -- the lookup (no Python objects, callable without the GIL) ---------------

cdef inline uint32_t resolve_local(const Core* c, uint32_t lslot, Query* q) noexcept nogil:
    """The id of the local prefix in ``lslot``'s length that holds the local address (0: none)."""
    if q.memo_lslot == lslot:
        return q.memo_lid
    cdef const LocalPrefix* shape = &c.lslots[lslot]
    cdef uint32_t lid = 0
    cdef uint64_t hi, lo, h
    cdef uint32_t fp
    if q.lfam == shape.family:
        hi = q.lhi & mask_hi(shape.plen)
        lo = q.llo & mask_lo(shape.plen)
        fp = <uint32_t>shape.family << 8 | shape.plen
        h = local_hash(hi, lo, fp) & c.lmask
        while c.ltable[h].fp != 0:
            if c.ltable[h].fp == fp and c.ltable[h].hi == hi and c.ltable[h].lo == lo:
                lid = c.ltable[h].id
                break
            h = (h + 1) & c.lmask
    q.memo_lslot = lslot
    q.memo_lid = lid
    return lid


cdef inline bint key_matches(uint32_t proto, uint32_t rport, uint32_t lport, const Query* q) noexcept nogil:
    """A rule's protocol and ports (0: any) against the connection's ("any" protocol matches all)."""
    return ((proto == 0 or q.proto == 0 or proto == q.proto)
            and (rport == 0 or rport == q.rport) and (lport == 0 or lport == q.lport))


cdef inline uint32_t probe_group(const Core* c, uint32_t gi, Query* q, uint64_t h) noexcept nogil:
    """The smallest rank in group ``gi`` that matches the connection, or NONE.
    ``h``: the group's hash slot if ``prefetch_groups`` computed it, else NO_SLOT."""
    cdef const Group* g = &c.groups[gi]
    cdef uint32_t mask = g.mask
    cdef uint32_t proto = 0, rport = 0, lport = 0, lid = 0
    if mask & G_PROTO:
        proto = q.proto if q.proto != 0 else ANY_PROTO
    if mask & G_RPORT:
        rport = q.rport
    if mask & G_LPORT:
        lport = q.lport
    if mask & G_LOCAL:
        lid = resolve_local(c, g.lslot, q)
        if lid == 0:
            return NONE
    if mask & G_INLINE:
        if ((g.proto == proto or proto == ANY_PROTO) and g.rport == rport
                and g.lport == lport and g.local_id == lid):
            return g.best
        return NONE
    cdef uint64_t a = <uint64_t>gi | (<uint64_t>proto << 32) | (<uint64_t>rport << 48)
    if h == NO_SLOT:
        h = entry_hash(a, lid, lport) & c.hmask
    cdef const Entry* e
    while True:
        e = &c.table[h]
        if e.rank == NONE:
            return NONE
        if e.a == a and e.local_id == lid and e.lport == lport:
            return e.rank
        h = (h + 1) & c.hmask


cdef inline void prefetch_groups(const Core* c, uint32_t off, uint32_t cnt, const Query* q,
                                 uint64_t* slots) noexcept nogil:
    """Start loading the hash slots the hashed groups among the first PREFETCH_GROUPS
    will probe, so that their cache misses overlap instead of following one another
    (the ports workload); ``slots[k]`` gets group ``off + k``'s slot or NO_SLOT."""
    cdef uint32_t i, mask, proto, rport, lport
    cdef uint64_t a, h
    for i in range(off, off + min(cnt, PREFETCH_GROUPS)):
        mask = c.groups[i].mask
        if mask & (G_INLINE | G_LOCAL):
            slots[i - off] = NO_SLOT
            continue
        proto = (q.proto if q.proto != 0 else ANY_PROTO) if mask & G_PROTO else 0
        rport = q.rport if mask & G_RPORT else 0
        lport = q.lport if mask & G_LPORT else 0
        a = <uint64_t>i | (<uint64_t>proto << 32) | (<uint64_t>rport << 48)
        h = entry_hash(a, 0, lport) & c.hmask
        prefetch(&c.table[h])
        slots[i - off] = h


cdef inline uint32_t probe_set(const Core* c, uint32_t off, uint32_t cnt, Query* q,
                               uint32_t best) noexcept nogil:
    cdef uint32_t i, rank
    cdef uint64_t slots[PREFETCH_GROUPS]
    # A table that stays in cache gains nothing from the prefetch, and it would
    # hash groups that the bound then skips.
    cdef bint ahead = cnt > 1 and c.hmask >= HASH_PREFETCH_MIN
    if ahead:
        prefetch_groups(c, off, cnt, q, slots)
    for i in range(off, off + cnt):
        if c.groups[i].best >= best:
            break
        rank = probe_group(c, i, q, slots[i - off] if ahead and i - off < PREFETCH_GROUPS else NO_SLOT)
        if rank < best:
            best = rank
    return best


cdef inline uint32_t prefetch_step(const Core* c, const Query* q, uint32_t idx) noexcept nogil:
    """lookup_many's look ahead: if node ``idx`` holds the address, prefetch its groups
    and its child on the address's path, and return that child (else NONE)."""
    cdef const Node* n
    if idx == NONE:
        return NONE
    n = &c.nodes[idx]
    if not covers(n.hi, n.lo, n.plen, q.rhi, q.rlo):
        return NONE
    if n.group_cnt:
        prefetch(&c.groups[n.group_off])
    if n.plen >= 128:
        return NONE
    idx = n.child[bit_at(q.rhi, q.rlo, n.plen)]
    if idx != NONE:
        prefetch(&c.nodes[idx])
    return idx


cdef inline const Slot* slot_of(const Core* c, const Query* q) noexcept nogil:
    """The first-stride slot of the remote address, or NULL (no address, no trie of its family)."""
    if q.rfam == 0 or c.slots[q.rfam == 6] == NULL:
        return NULL
    cdef int f = q.rfam == 6
    return &c.slots[f][q.rhi >> (64 - c.slot_bits[f])]


cdef uint32_t classify(const Core* c, Query* q) noexcept nogil:
    """The smallest rank among the rules matching ``q``, or NONE."""
    cdef uint32_t best = NONE
    cdef uint32_t idx
    cdef const Slot* slot
    cdef const ShortPrefix* short
    cdef uint32_t cnt
    cdef const Node* n
    q.memo_lslot = NONE
    slot = slot_of(c, q)
    if slot != NULL:
        if slot.chain != NONE:
            short = &c.pool[slot.chain]
            while short.own_best < best:
                cnt = short.group_cnt & ~LAST_SHORT
                if short.proto == ANY_PROTO:
                    best = probe_set(c, short.group_off, cnt, q, best)
                else:
                    if key_matches(short.proto, short.rport, short.lport, q):
                        best = short.own_best
                    if cnt > 1:
                        best = probe_set(c, short.group_off + 1, cnt - 1, q, best)
                if short.group_cnt & LAST_SHORT:
                    break
                short += 1
        idx = slot.start
        while idx != NONE:
            n = &c.nodes[idx]
            if n.sub_best >= best or not covers(n.hi, n.lo, n.plen, q.rhi, q.rlo):
                break
            if n.own_best < best:
                best = probe_set(c, n.group_off, n.group_cnt, q, best)
            if n.plen >= 128:
                break
            idx = n.child[bit_at(q.rhi, q.rlo, n.plen)]
    if c.any_best < best:
        best = probe_set(c, c.any_off, c.any_cnt, q, best)
    return best


cdef bint rule_matches(const Core* c, uint32_t rank, const Query* q) noexcept nogil:
    """Rule ``rank`` against ``q``, filter by filter (explain's brute force)."""
    cdef const RuleRec* r = &c.rules[rank]
    cdef const Node* n
    cdef const LocalPrefix* lp
    if not key_matches(r.proto, r.rport, r.lport, q):
        return False
    if r.node != NONE:
        n = &c.nodes[r.node]
        if q.rfam != n.family or not covers(n.hi, n.lo, n.plen, q.rhi, q.rlo):
            return False
    if r.local_id != 0:
        lp = &c.lprefixes[r.local_id]
        if q.lfam != lp.family or not covers(lp.hi, lp.lo, lp.plen, q.lhi, q.llo):
            return False
    return True


# -- argument parsing shared by every lookup entry point --------------------

cdef dict _PROTO_CODES = {}      # lookup spelling -> code; the registry only grows

# The protocol strings a program passes are nearly always the same few objects
# (literals, interned names), so a direct-mapped cache keyed by the object's
# address answers most lookups without hashing.  Each slot owns a reference to
# its str, so an address cannot be reused by another object while cached.  Only
# touched with the GIL held (parse_query runs before the classification).
cdef enum:
    PROTO_CACHE_BITS = 6
cdef PyObject* _proto_obj[1 << PROTO_CACHE_BITS]
cdef uint32_t _proto_code[1 << PROTO_CACHE_BITS]
memset(_proto_obj, 0, sizeof(_proto_obj))


cdef uint32_t proto_arg(object proto) except? NONE:
    if proto is None:
        return 0
    # Fibonacci hashing of the address: neighbouring objects land in different slots.
    cdef size_t slot = <size_t>((<uint64_t><size_t><PyObject*>proto * 0x9E3779B97F4A7C15ULL)
                                >> (64 - PROTO_CACHE_BITS))
    if _proto_obj[slot] == <PyObject*>proto:
        return _proto_code[slot]
    if type(proto) is str:
        code = _PROTO_CODES.get(proto)
        if code is None:
            code = lookup_proto(proto)          # TypeError / ValueError naming "proto"
            if len(_PROTO_CODES) < 1024:
                _PROTO_CODES[proto] = code
        Py_INCREF(proto)
        Py_XDECREF(_proto_obj[slot])
        _proto_obj[slot] = <PyObject*>proto
        _proto_code[slot] = <uint32_t>code
        return <uint32_t>code
    return <uint32_t>lookup_proto(proto)


cdef inline uint32_t port_arg(object port, str argument) except? NONE:
    cdef int overflow = 0
    cdef long value
    if type(port) is int:
        value = PyLong_AsLongAndOverflow(port, &overflow)
        if 0 <= value <= 65535 and not overflow:
            return <uint32_t>value
        raise ValueError(f"{argument}: {shown(port)} is outside 0..65535")
    return <uint32_t>lookup_port(port, argument)


cdef int parse_query(Query* q, object proto, object remote_ip, object remote_port,
                     object local_ip, object local_port, const Core* warm) except -1:
    """Fills ``q`` from lookup()'s arguments.  With ``warm``, the remote address's slot,
    then its start node and chain, are prefetched while the other arguments are read:
    a single lookup has nothing else to overlap its cache misses with."""
    cdef uint8_t raw[16]
    cdef const Slot* slot = NULL
    q.proto = proto_arg(proto)
    q.rfam = parse_into(remote_ip, raw, "remote_ip")
    if q.rfam:
        set_address(raw, q.rfam, &q.rhi, &q.rlo)
        if warm != NULL:
            slot = slot_of(warm, q)
            if slot != NULL:
                prefetch(slot)
    q.rport = port_arg(remote_port, "remote_port")
    q.lfam = parse_into(local_ip, raw, "local_ip")
    if q.lfam:
        set_address(raw, q.lfam, &q.lhi, &q.llo)
    if slot != NULL:
        if slot.start != NONE:
            prefetch(&warm.nodes[slot.start])
        if slot.chain != NONE:
            prefetch(&warm.pool[slot.chain])
    q.lport = port_arg(local_port, "local_port")
    return 0


# -- lookup_many's buffers ---------------------------------------------------
#
# A buffer is read from its raw bytes as its format says (width from the
# itemsize, signedness from the format letter), never through memoryview
# indexing, which knows no byte-order prefix ('<i' from ctypes).  An integer
# item is zero-extended to 64 bits and only then checked against its range, so
# a negative signed value cannot turn into a large unsigned one on the way.

cdef enum:
    COL_NONE = 0              # argument was None: every row 0 / no address
    COL_SCALAR = 1            # protos given as one str: same code for every row
    COL_INT = 2               # integer buffer
    COL_V4 = 3                # uint32 IPv4 addresses, host order
    COL_PACKED = 4            # 16-byte packed addresses

ctypedef struct Column:
    const uint8_t* data
    Py_ssize_t n
    int kind
    int itemsize
    bint signed
    uint32_t scalar

cdef str _INT_FORMATS = "bBhHiIlLqQnN"
# Format prefixes that mean this machine's byte order ('@' and '=' always do).
cdef tuple _NATIVE_ORDER = ("@", "=", "<") if sys.byteorder == "little" else ("@", "=", ">", "!")
cdef tuple _FOREIGN_ORDER = (">", "!") if sys.byteorder == "little" else ("<",)
cdef str _FOREIGN_NAME = "big-endian" if sys.byteorder == "little" else "little-endian"


cdef object column(Column* col, object obj, str argument, bint address):
    """Fill ``col`` from ``obj``; returns the object that keeps the memory alive."""
    memset(col, 0, sizeof(Column))
    if obj is None:
        col.kind = COL_NONE
        return None
    try:
        view = memoryview(obj)
    except (TypeError, ValueError, BufferError) as exc:
        # TypeError: no buffer at all; ValueError/BufferError: an exporter that
        # refuses (a NumPy datetime array, a released view).
        raise TypeError(
            f"{argument}: expected a buffer (array.array, bytes, memoryview, NumPy array) or None, "
            f"got {type(obj).__name__}" + ("" if isinstance(exc, TypeError) else f" ({exc})")
        ) from None
    fmt = view.format
    order = fmt[:1]
    if order in _NATIVE_ORDER or order in _FOREIGN_ORDER:
        fmt = fmt[1:]
        # Byte order means nothing for one-byte items ('<B' from ctypes).
        if order in _FOREIGN_ORDER and view.itemsize != 1:
            raise ValueError(f"{argument}: {_FOREIGN_NAME} buffers are not accepted, use native byte order")
    if not view.c_contiguous:
        raise ValueError(f"{argument}: the buffer must be C-contiguous")
    if address and fmt in ("B", "b", "c") and view.itemsize == 1:
        # Bytes, or rows of 16 bytes (NumPy (n, 16), ctypes (c_ubyte * 16) * n).
        if view.nbytes % 16 or (view.ndim > 1 and view.shape[1:] != (16,)):
            got = f"{view.nbytes} bytes" if view.ndim <= 1 else f"shape {view.shape}"
            raise ValueError(f"{argument}: packed IPv6 buffers hold 16 bytes per address, got {got}")
        col.kind = COL_PACKED
        col.n = view.nbytes // 16
        return _bytes_of(col, view)
    if view.ndim != 1:
        raise ValueError(f"{argument}: expected a one-dimensional buffer, got {view.ndim} dimensions")
    # The itemsize, not the letter, gives the width ('<l' is 4 bytes, '@l' 8 here);
    # an exporter claiming any other width is refused rather than read past.
    if len(fmt) != 1 or fmt not in _INT_FORMATS or view.itemsize not in (1, 2, 4, 8):
        raise TypeError(f"{argument}: expected a buffer of integers, got format {view.format!r}")
    if address:
        if view.itemsize != 4 or fmt.islower():
            raise TypeError(
                f"{argument}: IPv4 addresses must be unsigned 32-bit integers (array 'I'), "
                f"got format {view.format!r}; IPv6 goes in a bytes buffer of 16 bytes per address"
            )
        col.kind = COL_V4
    else:
        col.kind = COL_INT
    col.itemsize = view.itemsize
    col.signed = fmt.islower()
    col.n = view.shape[0]
    return _bytes_of(col, view)


cdef object _bytes_of(Column* col, object view):
    """Points ``col.data`` at ``view``'s bytes; returns what keeps them alive."""
    # An empty buffer (its cast can fail: zeros in its shape) gets a byte that
    # is never read, so that data is a valid pointer.
    cdef const uint8_t[::1] raw = view.cast("B") if view.nbytes else bytearray(1)
    col.data = &raw[0]
    return raw


cdef inline bint read_int(const Column* col, Py_ssize_t i, uint64_t top, uint64_t* bits) noexcept nogil:
    """Item ``i`` zero-extended into ``bits``; True when its value lies in 0..top.

    A None column reads 0, a scalar one its code."""
    cdef const uint8_t* p = col.data + i * col.itemsize
    cdef uint16_t v16
    cdef uint32_t v32
    cdef uint64_t v
    if col.kind != COL_INT:
        bits[0] = col.scalar
        return True
    if col.itemsize == 1:
        v = p[0]
    elif col.itemsize == 2:
        memcpy(&v16, p, 2)
        v = v16
    elif col.itemsize == 4:
        memcpy(&v32, p, 4)
        v = v32
    else:
        memcpy(&v, p, 8)
    bits[0] = v
    if col.signed and v >> (8 * col.itemsize - 1):      # the sign bit: negative
        return False
    return v <= top


cdef object item_value(const Column* col, uint64_t bits):
    """The value ``read_int`` read as ``bits``, as the buffer's format means it."""
    cdef object value = bits
    cdef object width = 8 * col.itemsize        # a Python int: the shift below must not wrap
    if col.signed and bits >> (8 * col.itemsize - 1):
        value -= 1 << width
    return value


cdef inline int read_address(const Column* col, Py_ssize_t i, uint64_t* hi, uint64_t* lo) noexcept nogil:
    cdef const uint8_t* p
    cdef uint32_t v4
    if col.kind == COL_NONE:
        return 0
    if col.kind == COL_V4:
        memcpy(&v4, col.data + 4 * i, 4)
        hi[0] = <uint64_t>v4 << 32
        lo[0] = 0
        return 4
    p = col.data + 16 * i
    hi[0] = load_be64(p)
    lo[0] = load_be64(p + 8)
    if hi[0] == 0 and (lo[0] >> 32) == 0xFFFF:       # IPv4-mapped: matched as IPv4
        hi[0] = (lo[0] & 0xFFFFFFFFU) << 32
        lo[0] = 0
        return 4
    return 6


# -- growable arrays used while building ------------------------------------

cdef void* grow(void* p, uint32_t* cap, uint64_t need, size_t item) except NULL:
    cdef uint64_t new_cap = cap[0] if cap[0] else 16
    if need <= cap[0] and p != NULL:
        return p
    while new_cap < need:
        new_cap *= 2
    if new_cap > 0xFFFFFFF0:
        raise MemoryError("tcpmgm: rule set too large")
    cdef void* q = realloc(p, new_cap * item)
    if q == NULL:
        raise MemoryError()
    cap[0] = <uint32_t>new_cap
    return q


cdef uint64_t pow2_at_least(uint64_t n):
    cdef uint64_t size = 16
    while size < n:
        size *= 2
    return size


cdef class Matcher:
    """Compiled classifier: same API and answers as :class:`tcpmgm.ReferenceMatcher`.

    ``lookup`` and ``explain`` take the same arguments as the reference.
    ``lookup_many(protos, remote_ips, remote_ports=None, local_ips=None,
    local_ports=None)`` classifies a batch given as buffers (see its docstring)
    without the GIL.  Immutable once built; safe to share between threads.
    """

    cdef Core c
    cdef tuple _rules
    cdef tuple _profiles
    cdef object _default
    cdef bint _built
    cdef str _id_typecode
    cdef size_t _nbytes

    def __cinit__(self):
        memset(&self.c, 0, sizeof(Core))
        self.c.root[0] = self.c.root[1] = NONE
        self.c.any_best = NONE

    def __dealloc__(self):
        cdef void** where[N_LOOKUP_ARRAYS]
        cdef size_t size[N_LOOKUP_ARRAYS]
        cdef int k
        if self.c.arena != NULL:
            free(self.c.arena)
        else:
            self._lookup_arrays(where, size)
            for k in range(N_LOOKUP_ARRAYS):
                free(where[k][0])
        free(self.c.lprefixes)
        free(self.c.rules)
        free(self.c.ids_sorted)
        free(self.c.rank_of_sorted)

    def __init__(self, rules=(), *, default=None):
        if self._built:
            raise TypeError("a Matcher is immutable; build a new one")
        given = list(rules)
        for rule in given:
            if not isinstance(rule, Rule):
                check_unique_ids(given)            # raises the reference's TypeError
        self._default = (default if default is not None else default_profile()).replace(id=0)
        self._build(given)
        if self._repeated_id():
            check_unique_ids(given)                # raises the reference's RuleError
        self._built = True

    # -- build ---------------------------------------------------------------
    cdef int _build(self, list given) except -1:
        """One pass over the rules copies what the classifier needs into C (each
        rule's instance dict read once: at a million rules every object visited
        is a cache miss), then the ranks come from sorting ``Rule.order`` in C."""
        cdef Core* c = &self.c
        cdef uint32_t n = len(given)
        cdef uint32_t rank, i, j
        cdef RuleRec* rec
        cdef int family, overflow = 0
        cdef int64_t max_id = 0
        c.n_rules = n
        c.rules = <RuleRec*>calloc(n + 1, sizeof(RuleRec))
        c.id_of_rank = <int64_t*>malloc((n + 1) * sizeof(int64_t))
        if c.rules == NULL or c.id_of_rank == NULL:
            raise MemoryError()
        local_ids = {}               # local prefix (family, int, plen) -> id
        local_slots = {}             # (family, plen) -> slot
        lslot_of = array("I", [0]) * (n + 1) if n else array("I", [0])
        cdef uint32_t[::1] lslot_view = lslot_of
        codes = {}
        profiles = []
        cdef dict fields
        cdef PendingPrefix* p
        cdef uint32_t n_pending = 0
        # Scratch arrays (freed with these array objects): by position in ``given``.
        cdef array scratch = clone(array("B"), (n + 1) * (
            sizeof(PendingPrefix) + sizeof(SortKey) + sizeof(RuleRec) + 2 * sizeof(uint32_t)), True)
        cdef PendingPrefix* pending = <PendingPrefix*>scratch.data.as_voidptr
        cdef SortKey* keys = <SortKey*>(pending + n + 1)
        cdef RuleRec* recs = <RuleRec*>(keys + n + 1)
        cdef uint32_t* lslot_in = <uint32_t*>(recs + n + 1)
        cdef uint32_t* rank_of = lslot_in + n + 1
        for i in range(n):
            fields = PyObject_GenericGetDict(given[i], NULL)
            rec = &recs[i]
            rule_id = fields["id"]
            # Rule and from_row refuse these already; a rule made around them
            # (Rule._from_checked) gets the same RuleError, not a C overflow.
            check_id(rule_id, rule_id)
            check_priority(rule_id, fields["priority"], fields["priority"])
            keys[i].id = rule_id
            keys[i].index = i
            keys[i].head = PyLong_AsLongLongAndOverflow(fields["order"] >> 64, &overflow)
            if overflow:                   # an order not packed from its fields
                raise ValueError(f"rule {rule_id}: its Rule.order does not fit the compiled matcher")
            if rule_id > max_id:
                max_id = rule_id
            profiles.append(fields["profile"])
            proto = fields["proto"]
            code = codes.get(proto)
            if code is None:
                code = codes[proto] = protocol_code(proto)
                if code is None or code >= ANY_PROTO:
                    raise ValueError(f"rule {rule_id}: protocol {proto!r} is not registered")
            rec.proto = code
            rec.rport = fields["remote_port"]
            rec.lport = fields["local_port"]
            rec.node = NONE
            remote = fields["remote_prefix"]
            if remote is not None:
                p = &pending[n_pending]
                p.plen = split_prefix(remote, &family, &p.hi, &p.lo)
                p.family = family
                p.rank = i                 # a position until the ranks are known
                n_pending += 1
            local = fields["local_prefix"]
            if local is not None:
                lid = local_ids.get(local)
                if lid is None:
                    lid = local_ids[local] = len(local_ids) + 1
                rec.local_id = lid
                shape = (local[0], local[2])
                slot = local_slots.get(shape)
                if slot is None:
                    slot = local_slots[shape] = len(local_slots)
                lslot_in[i] = slot
        qsort(keys, n, sizeof(SortKey), compare_sort_keys)
        for rank in range(n):
            i = keys[rank].index
            c.rules[rank] = recs[i]
            c.id_of_rank[rank] = keys[rank].id
            lslot_view[rank] = lslot_in[i]
            rank_of[i] = rank
        for j in range(n_pending):
            pending[j].rank = rank_of[pending[j].rank]
        self._rules = tuple([given[keys[rank].index] for rank in range(n)])
        self._profiles = tuple([profiles[keys[rank].index] for rank in range(n)])
        self._insert_prefixes(pending, n_pending)
        self._id_typecode = "I" if max_id <= 0xFFFFFFFFU else "Q"
        self._build_locals(local_ids, local_slots)
        self._build_groups(lslot_view)
        self._build_bounds()
        for family in (4, 6):
            if c.root[family == 6] != NONE:
                self._build_slots(family)
        self._build_ids()
        self._nbytes = self._move_to_arena() + (
            (c.n_local + 1) * sizeof(LocalPrefix)
            + (n + 1) * (sizeof(RuleRec) + sizeof(int64_t) + sizeof(uint32_t)))
        return 0

    cdef void _lookup_arrays(self, void*** where, size_t* size) noexcept:
        """Where the arrays a lookup reads are kept, and their sizes in use."""
        cdef Core* c = &self.c
        where[0], size[0] = <void**>&c.nodes, c.n_nodes * sizeof(Node)
        where[1], size[1] = <void**>&c.groups, c.n_groups * sizeof(Group)
        where[2], size[2] = <void**>&c.table, (c.hmask + 1) * sizeof(Entry) if c.table != NULL else 0
        where[3], size[3] = <void**>&c.slots[0], (<size_t>1 << c.slot_bits[0]) * sizeof(Slot)
        where[4], size[4] = <void**>&c.slots[1], (<size_t>1 << c.slot_bits[1]) * sizeof(Slot)
        where[5], size[5] = <void**>&c.pool, c.n_pool * sizeof(ShortPrefix)
        where[6], size[6] = <void**>&c.ltable, (c.lmask + 1) * sizeof(LocalEntry)
        where[7], size[7] = <void**>&c.lslots, (c.n_lslots + 1) * sizeof(LocalPrefix)
        where[8], size[8] = <void**>&c.id_of_rank, (c.n_rules + 1) * sizeof(int64_t)

    cdef size_t _move_to_arena(self) except 0:
        """Move the lookup arrays into one block from ``arena_alloc``, each trimmed to its
        used length and cache-line aligned; returns the block's size."""
        cdef void** where[N_LOOKUP_ARRAYS]
        cdef size_t size[N_LOOKUP_ARRAYS]
        cdef size_t total = 0, offset = 0
        cdef int k
        self._lookup_arrays(where, size)
        for k in range(N_LOOKUP_ARRAYS):
            if where[k][0] != NULL:
                total += (size[k] + 63) & ~<size_t>63
        cdef char* arena = <char*>arena_alloc(total)
        if arena == NULL:
            raise MemoryError()
        for k in range(N_LOOKUP_ARRAYS):
            if where[k][0] != NULL:
                memcpy(arena + offset, where[k][0], size[k])
                free(where[k][0])
                where[k][0] = arena + offset
                offset += (size[k] + 63) & ~<size_t>63
        self.c.arena = arena
        return total if total else 1

    cdef uint32_t _new_node(self, int family, uint64_t hi, uint64_t lo, int plen) except NONE:
        cdef Core* c = &self.c
        c.nodes = <Node*>grow(c.nodes, &c.cap_nodes, <uint64_t>c.n_nodes + 1, sizeof(Node))
        cdef Node* node = &c.nodes[c.n_nodes]
        node.hi = hi & mask_hi(plen)
        node.lo = lo & mask_lo(plen)
        node.plen = plen
        node.family = family
        node.child[0] = node.child[1] = NONE
        node.own_best = node.sub_best = NONE
        node.group_off = 0
        node.group_cnt = 0
        c.n_nodes += 1
        return c.n_nodes - 1

    cdef int _insert_prefixes(self, PendingPrefix* pending, uint32_t n) except -1:
        """Give each rule its remote prefix's node.  Inserting in address order keeps
        consecutive walks on the same cached path: at a million rules, random order
        made the trie insert the largest part of the build (a cache miss per level)."""
        cdef uint32_t i, node = NONE
        cdef PendingPrefix* p
        qsort(pending, n, sizeof(PendingPrefix), compare_prefixes)
        for i in range(n):
            p = &pending[i]
            if not (i and p.family == pending[i - 1].family and p.hi == pending[i - 1].hi
                    and p.lo == pending[i - 1].lo and p.plen == pending[i - 1].plen):
                node = self._insert(p.family, p.hi, p.lo, p.plen)
            self.c.rules[p.rank].node = node
        return 0

    cdef uint32_t _insert(self, int family, uint64_t hi, uint64_t lo, int plen) except NONE:
        """The trie node of prefix hi:lo/plen, created (with a branching node) if needed."""
        cdef Core* c = &self.c
        cdef int f = family == 6
        cdef uint32_t cur = c.root[f], parent = NONE, fresh, branch
        cdef int parent_bit = 0, common, bit
        cdef uint64_t nhi, nlo
        if cur == NONE:
            c.root[f] = self._new_node(family, hi, lo, plen)
            return c.root[f]
        while True:
            nhi = c.nodes[cur].hi
            nlo = c.nodes[cur].lo
            common = clz64(hi ^ nhi)
            if common == 64:
                common += clz64(lo ^ nlo)
            common = min(common, plen, c.nodes[cur].plen)
            if common == c.nodes[cur].plen:
                if plen == common:
                    return cur                      # the prefix already has its node
                bit = bit_at(hi, lo, common)
                if c.nodes[cur].child[bit] == NONE:
                    fresh = self._new_node(family, hi, lo, plen)
                    c.nodes[cur].child[bit] = fresh
                    return fresh
                parent, parent_bit, cur = cur, bit, c.nodes[cur].child[bit]
                continue
            # The prefix and ``cur`` part ways at ``common`` bits: put a node there.
            if common == plen:
                fresh = branch = self._new_node(family, hi, lo, plen)
            else:
                branch = self._new_node(family, hi, lo, common)
                fresh = self._new_node(family, hi, lo, plen)
                c.nodes[branch].child[bit_at(hi, lo, common)] = fresh
            c.nodes[branch].child[bit_at(nhi, nlo, common)] = cur
            if parent == NONE:
                c.root[f] = branch
            else:
                c.nodes[parent].child[parent_bit] = branch
            return fresh

    cdef int _build_locals(self, dict local_ids, dict local_slots) except -1:
        cdef Core* c = &self.c
        cdef uint64_t size = pow2_at_least(2 * len(local_ids) + 2)
        cdef uint64_t h, hi, lo
        cdef uint32_t fp
        cdef int family, plen
        c.n_local = len(local_ids)
        c.n_lslots = len(local_slots)
        c.ltable = <LocalEntry*>calloc(size, sizeof(LocalEntry))
        c.lprefixes = <LocalPrefix*>calloc(c.n_local + 1, sizeof(LocalPrefix))
        c.lslots = <LocalPrefix*>calloc(c.n_lslots + 1, sizeof(LocalPrefix))
        if c.ltable == NULL or c.lprefixes == NULL or c.lslots == NULL:
            raise MemoryError()
        c.lmask = size - 1
        for prefix, lid in local_ids.items():
            plen = split_prefix(prefix, &family, &hi, &lo)
            c.lprefixes[lid].family = family
            c.lprefixes[lid].plen = plen
            c.lprefixes[lid].hi = hi
            c.lprefixes[lid].lo = lo
            fp = <uint32_t>family << 8 | <uint32_t>plen
            h = local_hash(hi, lo, fp) & c.lmask
            while c.ltable[h].fp != 0:
                h = (h + 1) & c.lmask
            c.ltable[h].hi = hi
            c.ltable[h].lo = lo
            c.ltable[h].fp = fp
            c.ltable[h].id = lid
        for (family, plen), slot in local_slots.items():
            c.lslots[slot].family = family
            c.lslots[slot].plen = plen
        return 0

    cdef int _put(self, uint64_t a, uint32_t local_id, uint32_t lport, uint32_t rank) except -1:
        """Insert a hash key unless present (ranks arrive in ascending order: the first is the best)."""
        cdef Core* c = &self.c
        cdef uint64_t h, size, i
        cdef Entry* old
        if c.table == NULL or 2 * (c.n_entries + 1) > c.hmask + 1:
            old = c.table
            size = pow2_at_least(4 * (c.n_entries + 1)) if old != NULL else 64
            c.table = <Entry*>malloc(size * sizeof(Entry))
            if c.table == NULL:
                c.table = old
                raise MemoryError()
            for i in range(size):
                c.table[i].rank = NONE
            if old != NULL:
                for i in range(c.hmask + 1):
                    if old[i].rank != NONE:
                        h = entry_hash(old[i].a, old[i].local_id, old[i].lport) & (size - 1)
                        while c.table[h].rank != NONE:
                            h = (h + 1) & (size - 1)
                        c.table[h] = old[i]
                free(old)
            c.hmask = size - 1
        h = entry_hash(a, local_id, lport) & c.hmask
        while c.table[h].rank != NONE:
            if c.table[h].a == a and c.table[h].local_id == local_id and c.table[h].lport == lport:
                return 0
            h = (h + 1) & c.hmask
        c.table[h].a = a
        c.table[h].local_id = local_id
        c.table[h].lport = lport
        c.table[h].rank = rank
        c.n_entries += 1
        return 0

    cdef int _put_rule(self, uint32_t gi, const RuleRec* r, uint32_t mask) except -1:
        cdef uint64_t base = gi | (<uint64_t>r.rport << 48)
        cdef uint32_t rank = <uint32_t>(r - self.c.rules)
        self._put(base | (<uint64_t>r.proto << 32), r.local_id, r.lport, rank)
        if mask & G_PROTO:
            self._put(base | (<uint64_t>ANY_PROTO << 32), r.local_id, r.lport, rank)
        return 0

    cdef int _build_groups(self, const uint32_t[::1] lslot_of) except -1:
        """Split each rule set (per trie node, plus remote "any") into groups; fill the hash."""
        cdef Core* c = &self.c
        cdef uint32_t n_sets = c.n_nodes + 1          # the last one is remote "any"
        cdef uint32_t* start = <uint32_t*>calloc(n_sets + 1, sizeof(uint32_t))
        cdef uint32_t* order = <uint32_t*>malloc((c.n_rules + 1) * sizeof(uint32_t))
        cdef uint32_t* sigs = NULL
        cdef uint32_t sig_cap = 0
        cdef uint32_t rank, s, i, k, n_sig, sig, gi, mask, first_group
        cdef RuleRec* r
        cdef RuleRec* first
        cdef Group* g
        if start == NULL or order == NULL:
            free(start)
            free(order)
            raise MemoryError()
        try:
            # Counting sort of the ranks by rule set; each set's ranks stay ascending.
            for rank in range(c.n_rules):
                s = c.rules[rank].node if c.rules[rank].node != NONE else c.n_nodes
                start[s + 1] += 1
            for s in range(n_sets):
                start[s + 1] += start[s]
            for rank in range(c.n_rules):
                s = c.rules[rank].node if c.rules[rank].node != NONE else c.n_nodes
                order[start[s]] = rank
                start[s] += 1
            for s in range(n_sets, 0, -1):
                start[s] = start[s - 1]
            start[0] = 0
            for s in range(n_sets):
                if start[s] == start[s + 1]:
                    continue
                n_sig = 0
                first_group = c.n_groups
                for i in range(start[s], start[s + 1]):
                    rank = order[i]
                    r = &c.rules[rank]
                    mask = ((G_PROTO if r.proto else 0) | (G_RPORT if r.rport else 0)
                            | (G_LPORT if r.lport else 0) | (G_LOCAL if r.local_id else 0))
                    sig = mask | (lslot_of[rank] << 8 if r.local_id else 0)
                    # Groups are found in order of their first (= best) rank, so they come out sorted.
                    for k in range(n_sig):
                        if sigs[k] == sig:
                            break
                    else:
                        sigs = <uint32_t*>grow(sigs, &sig_cap, n_sig + 1, sizeof(uint32_t))
                        sigs[n_sig] = sig
                        n_sig += 1
                        c.groups = <Group*>grow(c.groups, &c.cap_groups, <uint64_t>c.n_groups + 1, sizeof(Group))
                        g = &c.groups[c.n_groups]
                        c.n_groups += 1
                        g.best = rank
                        g.mask = mask | G_INLINE
                        g.lslot = lslot_of[rank] if r.local_id else 0
                        g.local_id = r.local_id
                        g.proto = r.proto
                        g.rport = r.rport
                        g.lport = r.lport
                        continue
                    gi = first_group + k
                    g = &c.groups[gi]
                    if (g.mask & G_INLINE and g.proto == r.proto and g.rport == r.rport
                            and g.lport == r.lport and g.local_id == r.local_id):
                        continue                            # same key, worse rank: can never win
                    if g.mask & G_INLINE:
                        g.mask &= ~G_INLINE
                        first = &c.rules[g.best]
                        self._put_rule(gi, first, mask)
                        g = &c.groups[gi]
                    self._put_rule(gi, r, mask)
                if s == c.n_nodes:
                    c.any_off = first_group
                    c.any_cnt = c.n_groups - first_group
                    c.any_best = c.groups[first_group].best
                else:
                    if c.n_groups - first_group >= LAST_SHORT:
                        raise ValueError("too many distinct filter shapes under one remote prefix")
                    c.nodes[s].group_off = first_group
                    c.nodes[s].group_cnt = c.n_groups - first_group
                    c.nodes[s].own_best = c.groups[first_group].best
        finally:
            free(start)
            free(order)
            free(sigs)
        return 0

    cdef int _build_bounds(self) except -1:
        """sub_best = min(own_best, children's sub_best): children are longer, so go by length down."""
        cdef Core* c = &self.c
        cdef uint32_t by_len[130]
        cdef uint32_t* order = <uint32_t*>malloc((c.n_nodes + 1) * sizeof(uint32_t))
        cdef uint32_t i, k, best
        cdef int plen
        cdef Node* node
        if order == NULL:
            raise MemoryError()
        memset(by_len, 0, sizeof(by_len))
        for i in range(c.n_nodes):
            by_len[c.nodes[i].plen + 1] += 1
        for plen in range(129):
            by_len[plen + 1] += by_len[plen]
        for i in range(c.n_nodes):
            order[by_len[c.nodes[i].plen]] = i
            by_len[c.nodes[i].plen] += 1
        for k in range(c.n_nodes, 0, -1):
            node = &c.nodes[order[k - 1]]
            best = node.own_best
            for plen in range(2):
                if node.child[plen] != NONE and c.nodes[node.child[plen]].sub_best < best:
                    best = c.nodes[node.child[plen]].sub_best
            node.sub_best = best
        free(order)
        return 0

    cdef int _build_slots(self, int family) except -1:
        cdef Core* c = &self.c
        cdef int f = family == 6
        cdef uint32_t stack[MAX_SLOT_BITS + 1]
        cdef uint64_t prefixes = 0
        cdef uint32_t i
        cdef int bits = MIN_SLOT_BITS
        for i in range(c.n_nodes):
            prefixes += c.nodes[i].family == family and c.nodes[i].group_cnt != 0
        while bits < MAX_SLOT_BITS and (<uint64_t>1 << bits) < 2 * prefixes:
            bits += 1
        cdef Slot* slots = <Slot*>malloc((<size_t>1 << bits) * sizeof(Slot))
        if slots == NULL:
            raise MemoryError()
        memset(slots, 0xFF, (<size_t>1 << bits) * sizeof(Slot))
        c.slots[f] = slots
        c.slot_bits[f] = bits
        self._fill(slots, bits, c.root[f], stack, 0)
        return 0

    cdef int _fill(self, Slot* slots, int bits, uint32_t idx, uint32_t* stack, int depth) except -1:
        """Pre-order walk: short rule-bearing prefixes write their chain over their slots,
        deeper ones overwrite; the first node of length >= ``bits`` is its slot's start."""
        cdef Core* c = &self.c
        cdef Node* node = &c.nodes[idx]
        cdef uint32_t head, first, count, i, j
        cdef ShortPrefix* chain
        cdef const Group* first_group
        cdef uint64_t s
        if node.plen >= bits:
            slots[node.hi >> (64 - bits)].start = idx
            return 0
        if node.group_cnt:
            stack[depth] = idx
            depth += 1
            # This slot range's chain: the rule-bearing short prefixes on the path, by own_best.
            c.pool = <ShortPrefix*>grow(c.pool, &c.cap_pool, <uint64_t>c.n_pool + depth, sizeof(ShortPrefix))
            chain = &c.pool[c.n_pool]
            for i in range(depth):          # insertion sort by own_best
                node = &c.nodes[stack[i]]
                j = i
                while j > 0 and chain[j - 1].own_best > node.own_best:
                    chain[j] = chain[j - 1]
                    j -= 1
                chain[j].own_best = node.own_best
                chain[j].group_off = node.group_off
                chain[j].group_cnt = node.group_cnt
                first_group = &c.groups[node.group_off]
                if first_group.mask & G_INLINE and not first_group.mask & G_LOCAL:
                    chain[j].proto = first_group.proto
                    chain[j].rport = first_group.rport
                    chain[j].lport = first_group.lport
                else:
                    chain[j].proto = ANY_PROTO
            chain[depth - 1].group_cnt |= LAST_SHORT
            head = c.n_pool
            c.n_pool += depth
            node = &c.nodes[idx]
            count = 1 << (bits - node.plen)
            first = <uint32_t>(node.hi >> (64 - bits)) if node.plen else 0
            for s in range(first, first + count):
                slots[s].chain = head
        for i in range(2):
            if c.nodes[idx].child[i] != NONE:
                self._fill(slots, bits, c.nodes[idx].child[i], stack, depth)
        return 0

    cdef int _build_ids(self) except -1:
        """ids sorted, with their ranks, for get() and ``in`` without a dict."""
        cdef Core* c = &self.c
        cdef uint32_t n = c.n_rules, i
        cdef IdRank* pairs = <IdRank*>malloc((n + 1) * sizeof(IdRank))
        c.ids_sorted = <int64_t*>malloc((n + 1) * sizeof(int64_t))
        c.rank_of_sorted = <uint32_t*>malloc((n + 1) * sizeof(uint32_t))
        if pairs == NULL or c.ids_sorted == NULL or c.rank_of_sorted == NULL:
            free(pairs)
            raise MemoryError()
        for i in range(n):
            pairs[i].id = c.id_of_rank[i]
            pairs[i].rank = i
        qsort(pairs, n, sizeof(IdRank), compare_ids)      # a repeated id: see _repeated_id
        for i in range(n):
            c.ids_sorted[i] = pairs[i].id
            c.rank_of_sorted[i] = pairs[i].rank
        free(pairs)
        return 0

    cdef bint _repeated_id(self) noexcept:
        cdef uint32_t i
        for i in range(1, self.c.n_rules):
            if self.c.ids_sorted[i] == self.c.ids_sorted[i - 1]:
                return True
        return False

    cdef uint32_t _rank_of_id(self, object rule_id) except? NONE:
        cdef int64_t want
        cdef uint32_t low = 0, high = self.c.n_rules, mid
        if type(rule_id) is not int or not 0 < rule_id < 2**63:
            return NONE
        want = rule_id
        while low < high:
            mid = (low + high) // 2
            if self.c.ids_sorted[mid] < want:
                low = mid + 1
            else:
                high = mid
        if low < self.c.n_rules and self.c.ids_sorted[low] == want:
            return self.c.rank_of_sorted[low]
        return NONE

    # -- container protocol --------------------------------------------------
    def __len__(self):
        return self.c.n_rules

    def __iter__(self):
        """The rules in key order (the order in which they are tried)."""
        return iter(self._rules)

    def __contains__(self, rule_id):
        return self._rank_of_id(rule_id) != NONE

    def get(self, rule_id, default=None):
        cdef uint32_t rank = self._rank_of_id(rule_id)
        return default if rank == NONE else self._rules[rank]

    @property
    def default(self):
        return self._default

    @property
    def nbytes(self):
        """Bytes of C memory this matcher owns (trie, groups, hashes, per-rule arrays)."""
        return self._nbytes

    @property
    def stride_bits(self):
        """(IPv4, IPv6): address bits the first stride indexes (0: no prefix of that family)."""
        return (self.c.slot_bits[0], self.c.slot_bits[1])

    def __repr__(self):
        return f"<{type(self).__name__} {self.c.n_rules} rules>"

    # -- lookups -------------------------------------------------------------
    def lookup(self, proto, remote_ip, remote_port=0, local_ip=None, local_port=0):
        """The profile of the winning rule, or the default profile (id 0)."""
        cdef Query q
        parse_query(&q, proto, remote_ip, remote_port, local_ip, local_port, &self.c)
        cdef uint32_t rank = classify(&self.c, &q)
        if rank == NONE:
            return self._default
        return <object>PyTuple_GET_ITEM(self._profiles, rank)

    def explain(self, proto, remote_ip, remote_port=0, local_ip=None, local_port=0):
        """The winner and every matching rule in key order, with why each lost."""
        cdef Query q
        cdef uint32_t rank
        parse_query(&q, proto, remote_ip, remote_port, local_ip, local_port, NULL)
        matches = [self._rules[rank] for rank in range(self.c.n_rules) if rule_matches(&self.c, rank, &q)]
        return explanation(matches, self._default)

    def lookup_many(self, protos, remote_ips, remote_ports=None, local_ips=None, local_ports=None):
        """Classify a batch; returns ``array('I')`` of winning rule ids (0: default).

        ``array('Q')`` instead when some rule id does not fit in 32 bits.
        Every argument but ``remote_ips`` may be ``None`` (any protocol, port 0,
        no local address).  Buffers (array, memoryview, bytes, NumPy, ctypes)
        must be C-contiguous in native byte order; integer buffers may be signed
        or unsigned, of 1, 2, 4 or 8 bytes:

        - ``protos``: integer buffer of protocol codes
          (``tcpmgm.protocols.protocol_code``; 0 = any), or one ``str`` for all;
        - ``remote_ips`` / ``local_ips``: either unsigned 32-bit integers
          (``array('I')``, NumPy ``uint32``), IPv4 in host order, or bytes
          (``bytes``, ``array('B')``, NumPy ``uint8`` of shape (n, 16)), 16 per
          address, IPv6 in network order (IPv4-mapped ones match as IPv4);
        - ``remote_ports`` / ``local_ports``: integer buffers, 0..65535.

        Each element gets what ``lookup()`` gives for the same values; one that
        ``lookup()`` refuses raises ``ValueError`` naming the argument, the index
        and the value (``remote_ports[3]: -1 is outside 0..65535``).
        The classification runs without the GIL.
        """
        cdef Column cp, cr, crp, cl, clp
        cdef Py_ssize_t n, i, bad = -1
        cdef uint64_t bits
        cdef const Column* bad_col = NULL
        cdef uint32_t max_code = len(protocols())
        cdef uint32_t rank
        cdef const Core* c = &self.c
        keep = (
            column(&cr, remote_ips, "remote_ips", True),
            column(&cl, local_ips, "local_ips", True),
            column(&crp, remote_ports, "remote_ports", False),
            column(&clp, local_ports, "local_ports", False),
        )
        if cr.kind == COL_NONE:
            raise TypeError("remote_ips: a buffer of addresses is required")
        if isinstance(protos, str):
            memset(&cp, 0, sizeof(Column))
            cp.kind = COL_SCALAR
            cp.scalar = proto_arg(protos)
        else:
            keep += (column(&cp, protos, "protos", False),)
        n = cr.n
        _check_length("protos", cp.kind, cp.n, n)
        _check_length("remote_ports", crp.kind, crp.n, n)
        _check_length("local_ips", cl.kind, cl.n, n)
        _check_length("local_ports", clp.kind, clp.n, n)
        cdef array template = array(self._id_typecode, [])
        cdef array out = clone(template, n, False)
        cdef uint32_t* out32 = <uint32_t*>out.data.as_voidptr
        cdef int64_t* out64 = <int64_t*>out.data.as_voidptr
        cdef bint wide = self._id_typecode == "Q"
        # Software pipeline over independent lookups, AHEAD lookups between stages:
        # (1) decode lookup i and prefetch its first-stride slot; (2) prefetch the
        # trie node that slot starts at and its chain's first short prefix; (3) to
        # (2 + DESCENT) each go one node down the address's path, prefetching that
        # node's groups and its child (the first also the chain's groups); then
        # classify.  The cache misses of several lookups overlap instead of
        # following one another, and classify mostly finds its lines in cache.
        cdef Query ring[RING]
        cdef const Slot* ring_slot[RING]
        cdef uint32_t ring_node[RING]       # the next node of each lookup's prefetch descent
        cdef Query* qq
        cdef const Slot* sl
        cdef Py_ssize_t j, stage
        # A small matcher stays in cache: the prefetch stages would only cost time.
        cdef Py_ssize_t ahead = AHEAD if c.n_nodes + c.n_groups > PIPELINE_MIN else 0
        cdef Py_ssize_t lag = (2 + DESCENT) * ahead      # from decoding a lookup to classifying it
        with nogil:
            for i in range(n + lag):
                if i < n:
                    qq = &ring[i & (RING - 1)]
                    if not read_int(&cp, i, max_code, &bits):
                        bad, bad_col = i, &cp
                        break
                    qq.proto = <uint32_t>bits
                    if not read_int(&crp, i, 65535, &bits):
                        bad, bad_col = i, &crp
                        break
                    qq.rport = <uint32_t>bits
                    if not read_int(&clp, i, 65535, &bits):
                        bad, bad_col = i, &clp
                        break
                    qq.lport = <uint32_t>bits
                    qq.rfam = read_address(&cr, i, &qq.rhi, &qq.rlo)
                    qq.lfam = read_address(&cl, i, &qq.lhi, &qq.llo)
                    sl = ring_slot[i & (RING - 1)] = slot_of(c, qq)
                    if sl != NULL:
                        prefetch(sl)
                for stage in range(1, 2 + DESCENT if ahead else 1):
                    j = i - stage * ahead
                    if j < 0 or j >= n:
                        continue
                    sl = ring_slot[j & (RING - 1)]
                    if sl == NULL:
                        continue
                    if stage == 1:
                        ring_node[j & (RING - 1)] = sl.start
                        if sl.start != NONE:
                            prefetch(&c.nodes[sl.start])
                        if sl.chain != NONE:
                            prefetch(&c.pool[sl.chain])
                        continue
                    if stage == 2 and sl.chain != NONE:
                        prefetch(&c.groups[c.pool[sl.chain].group_off])
                    ring_node[j & (RING - 1)] = prefetch_step(c, &ring[j & (RING - 1)], ring_node[j & (RING - 1)])
                if i >= lag:
                    rank = classify(c, &ring[(i - lag) & (RING - 1)])
                    if wide:
                        out64[i - lag] = rank
                    else:
                        out32[i - lag] = rank
            # Ranks to ids in a pass of their own: each id is a cache miss at a
            # million rules, and here nothing waits on it.
            if bad < 0:
                for i in range(n):
                    if i + ID_AHEAD < n:
                        rank = <uint32_t>(out64[i + ID_AHEAD] if wide else out32[i + ID_AHEAD])
                        if rank != NONE:
                            prefetch(&c.id_of_rank[rank])
                    rank = <uint32_t>(out64[i] if wide else out32[i])
                    if wide:
                        out64[i] = 0 if rank == NONE else c.id_of_rank[rank]
                    else:
                        out32[i] = 0 if rank == NONE else <uint32_t>c.id_of_rank[rank]
        if bad >= 0:
            value = item_value(bad_col, bits)
            if bad_col == &cp:
                raise ValueError(f"protos[{bad}]: unknown protocol code {value}")
            name = "remote_ports" if bad_col == &crp else "local_ports"
            raise ValueError(f"{name}[{bad}]: {value} is outside 0..65535")
        return out


cdef int _check_length(str argument, int kind, Py_ssize_t n, Py_ssize_t expected) except -1:
    if (kind == COL_INT or kind == COL_V4 or kind == COL_PACKED) and n != expected:
        raise ValueError(f"{argument}: {n} items, but remote_ips has {expected}")
    return 0


cdef int split_prefix(tuple prefix, int* family, uint64_t* hi, uint64_t* lo) except -1:
    """Reads a :data:`tcpmgm.rule.Prefix` as this module keys addresses; returns its length."""
    cdef object value = prefix[1]
    family[0] = prefix[0]
    if family[0] == 4:
        hi[0] = <uint64_t>value << 32
        lo[0] = 0
    else:
        hi[0] = <uint64_t>(value >> 64)
        lo[0] = <uint64_t>(value & 0xFFFFFFFFFFFFFFFFULL)
    return prefix[2]


# -- benchmark baseline -------------------------------------------------------

ctypedef struct ScanRule:
    uint64_t rhi, rlo, rmhi, rmlo, lhi, llo, lmhi, lmlo
    uint8_t rfam, lfam
    uint16_t proto, rport, lport


cdef class LinearScanBaseline:
    """Benchmark baseline only (benchmarks/README.md#baselines): the rules sorted by key, tried one by one.

    The algorithm OpenSIPS's tcp_mgm uses, compiled, with every filter inline
    in one flat array so that the comparison with :class:`Matcher` is fair.
    """

    cdef ScanRule* rules
    cdef uint32_t n
    cdef tuple _profiles
    cdef object _default

    def __dealloc__(self):
        free(self.rules)

    def __init__(self, rules=(), *, default=None):
        ordered = sorted(check_unique_ids(rules), key=Rule.key)
        self._profiles = tuple([rule.profile for rule in ordered])
        self._default = (default if default is not None else default_profile()).replace(id=0)
        free(self.rules)
        self.n = len(ordered)
        self.rules = <ScanRule*>calloc(self.n + 1, sizeof(ScanRule))
        if self.rules == NULL:
            raise MemoryError()
        cdef ScanRule* s
        cdef uint32_t i
        cdef int family, plen
        for i in range(self.n):
            rule = ordered[i]
            s = &self.rules[i]
            s.proto = protocol_code(rule.proto)
            s.rport = rule.remote_port
            s.lport = rule.local_port
            if rule.remote_prefix is not None:
                plen = split_prefix(rule.remote_prefix, &family, &s.rhi, &s.rlo)
                s.rfam = family
                s.rmhi = mask_hi(plen)
                s.rmlo = mask_lo(plen)
            if rule.local_prefix is not None:
                plen = split_prefix(rule.local_prefix, &family, &s.lhi, &s.llo)
                s.lfam = family
                s.lmhi = mask_hi(plen)
                s.lmlo = mask_lo(plen)

    def lookup(self, proto, remote_ip, remote_port=0, local_ip=None, local_port=0):
        cdef Query q
        cdef uint32_t i
        cdef const ScanRule* s
        parse_query(&q, proto, remote_ip, remote_port, local_ip, local_port, NULL)
        for i in range(self.n):
            s = &self.rules[i]
            if ((s.proto == 0 or q.proto == 0 or s.proto == q.proto)
                    and (s.rfam == 0 or (s.rfam == q.rfam and ((q.rhi ^ s.rhi) & s.rmhi) == 0
                                         and ((q.rlo ^ s.rlo) & s.rmlo) == 0))
                    and (s.rport == 0 or s.rport == q.rport)
                    and (s.lfam == 0 or (s.lfam == q.lfam and ((q.lhi ^ s.lhi) & s.lmhi) == 0
                                         and ((q.llo ^ s.llo) & s.lmlo) == 0))
                    and (s.lport == 0 or s.lport == q.lport)):
                return <object>PyTuple_GET_ITEM(self._profiles, i)
        return self._default
