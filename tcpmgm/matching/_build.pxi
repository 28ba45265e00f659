# The build: rules into the Core of _layout.pxd (part of _matcher.pyx).  Everything here runs
# once per Matcher, with the GIL held; nothing it builds changes afterwards.

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

cdef enum:
    N_LOOKUP_ARRAYS = 9       # see lookup_arrays

ctypedef struct SortKey:      # a rule's Rule.order as C ints
    int64_t head              # Rule.order >> key.ID_BITS: everything in the key above the id
    int64_t id                # Rule.order's low 64 bits
    uint32_t index            # where the rule came in the rules given

ctypedef struct PendingPrefix:  # a rule's remote prefix, to insert
    uint64_t hi, lo
    uint32_t rank
    uint8_t family, plen

ctypedef struct IdRank:       # for the id index
    int64_t id
    uint32_t rank

ctypedef struct Scratch:      # per rule, by position in the rules given
    PendingPrefix* pending    # the rules' remote prefixes (n_pending of them)
    uint32_t n_pending
    SortKey* keys
    RuleRec* recs
    uint32_t* lslot_in        # the local slot of each rule with a local prefix
    uint32_t* rank_of


cdef int compare_sort_keys(const void* a, const void* b) noexcept nogil:
    cdef const SortKey* x = <const SortKey*>a
    cdef const SortKey* y = <const SortKey*>b
    if x.head != y.head:
        return -1 if x.head < y.head else 1
    if x.id != y.id:
        return -1 if x.id < y.id else 1
    return (x.index > y.index) - (x.index < y.index)     # a repeated id: refused after the build


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


cdef int compare_ids(const void* a, const void* b) noexcept nogil:
    cdef int64_t x = (<const IdRank*>a).id, y = (<const IdRank*>b).id
    return (x > y) - (x < y)


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


# -- the whole build -----------------------------------------------------------

cdef tuple build_core(Core* c, list given):
    """Fill ``c`` from ``given``; returns (the rules, their profiles) by rank.

    One pass over the rules copies what the classifier needs into C (each rule's instance
    dict read once: at a million rules every object visited is a cache miss), then the ranks
    come from sorting ``Rule.order`` in C."""
    cdef uint32_t n = len(given), rank
    c.n_rules = n
    c.rules = <RuleRec*>calloc(n + 1, sizeof(RuleRec))
    c.id_of_rank = <int64_t*>malloc((n + 1) * sizeof(int64_t))
    if c.rules == NULL or c.id_of_rank == NULL:
        raise MemoryError()
    local_ids = {}               # local prefix (family, int, plen) -> id
    local_slots = {}             # (family, plen) -> slot
    lslot_of = array("I", [0]) * (n + 1)
    cdef uint32_t[::1] lslot_view = lslot_of
    # Scratch arrays (freed with this array object).
    cdef array memory = clone(array("B"), (n + 1) * (
        sizeof(PendingPrefix) + sizeof(SortKey) + sizeof(RuleRec) + 2 * sizeof(uint32_t)), True)
    cdef Scratch s
    s.pending = <PendingPrefix*>memory.data.as_voidptr
    s.keys = <SortKey*>(s.pending + n + 1)
    s.recs = <RuleRec*>(s.keys + n + 1)
    s.lslot_in = <uint32_t*>(s.recs + n + 1)
    s.rank_of = s.lslot_in + n + 1
    s.n_pending = 0
    profiles = read_rules(c, given, &s, local_ids, local_slots)
    rank_rules(c, &s, &lslot_view[0])
    ranked = tuple([given[s.keys[rank].index] for rank in range(n)])
    ranked_profiles = tuple([profiles[s.keys[rank].index] for rank in range(n)])
    insert_prefixes(c, s.pending, s.n_pending)
    build_locals(c, local_ids, local_slots)
    build_groups(c, &lslot_view[0])
    build_bounds(c)
    for family in (4, 6):
        if c.root[family == 6] != NONE:
            build_slots(c, family)
    build_ids(c)
    c.nbytes = move_to_arena(c) + (
        (c.n_local + 1) * sizeof(Prefix) + (n + 1) * (sizeof(RuleRec) + sizeof(int64_t) + sizeof(uint32_t)))
    return ranked, ranked_profiles


cdef list read_rules(Core* c, list given, Scratch* s, dict local_ids, dict local_slots):
    """Each rule's fields into ``s`` (by position); returns the profiles in that order."""
    cdef uint32_t i
    cdef int family, overflow = 0
    cdef dict fields
    cdef RuleRec* rec
    cdef PendingPrefix* p
    codes = {}
    profiles = []
    c.max_id = 0
    for i in range(len(given)):
        fields = PyObject_GenericGetDict(given[i], NULL)
        rec = &s.recs[i]
        rule_id = fields["id"]
        # Rule and from_row refuse these already; a rule made around them
        # (Rule._from_checked) gets the same RuleError, not a C overflow.
        check_id(rule_id, rule_id)
        check_priority(rule_id, fields["priority"], fields["priority"])
        s.keys[i].id = rule_id
        s.keys[i].index = i
        s.keys[i].head = PyLong_AsLongLongAndOverflow(fields["order"] >> key.ID_BITS, &overflow)
        if overflow:                   # an order not packed from its fields
            raise ValueError(f"rule {rule_id}: its Rule.order does not fit the compiled matcher")
        c.max_id = max(c.max_id, s.keys[i].id)
        profiles.append(fields["profile"])
        proto = fields["proto"]
        code = codes.get(proto)
        if code is None:
            code = codes[proto] = protocol_code(proto)
            if code is None or code >= MAX_PROTO_CODE:
                raise ValueError(f"rule {rule_id}: protocol {proto!r} is not registered")
        rec.proto = code
        rec.rport = fields["remote_port"]
        rec.lport = fields["local_port"]
        rec.node = NONE
        remote = fields["remote_prefix"]
        if remote is not None:
            p = &s.pending[s.n_pending]
            p.plen = split_prefix(remote, &family, &p.hi, &p.lo)
            p.family = family
            p.rank = i                 # a position until the ranks are known
            s.n_pending += 1
        local = fields["local_prefix"]
        if local is not None:
            rec.local_id = local_ids.setdefault(local, len(local_ids) + 1)
            s.lslot_in[i] = local_slots.setdefault((local[0], local[2]), len(local_slots))
    return profiles


cdef int rank_rules(Core* c, Scratch* s, uint32_t* lslot_of) except -1:
    """Sort the rules by key; each one's record, id and local slot go to its rank."""
    cdef uint32_t rank, i, j
    qsort(s.keys, c.n_rules, sizeof(SortKey), compare_sort_keys)
    for rank in range(c.n_rules):
        i = s.keys[rank].index
        c.rules[rank] = s.recs[i]
        c.id_of_rank[rank] = s.keys[rank].id
        lslot_of[rank] = s.lslot_in[i]
        s.rank_of[i] = rank
    for j in range(s.n_pending):
        s.pending[j].rank = s.rank_of[s.pending[j].rank]
    return 0


# -- the lookup arrays' memory ---------------------------------------------------

cdef void lookup_arrays(Core* c, void*** where, size_t* size) noexcept:
    """Where the arrays a lookup reads are kept, and their sizes in use."""
    where[0], size[0] = <void**>&c.nodes, c.n_nodes * sizeof(Node)
    where[1], size[1] = <void**>&c.groups, c.n_groups * sizeof(Group)
    where[2], size[2] = <void**>&c.table, (c.hmask + 1) * sizeof(Entry) if c.table != NULL else 0
    where[3], size[3] = <void**>&c.slots[0], (<size_t>1 << c.slot_bits[0]) * sizeof(Slot)
    where[4], size[4] = <void**>&c.slots[1], (<size_t>1 << c.slot_bits[1]) * sizeof(Slot)
    where[5], size[5] = <void**>&c.pool, c.n_pool * sizeof(ShortPrefix)
    where[6], size[6] = <void**>&c.ltable, (c.lmask + 1) * sizeof(LocalEntry)
    where[7], size[7] = <void**>&c.lslots, (c.n_lslots + 1) * sizeof(Prefix)
    where[8], size[8] = <void**>&c.id_of_rank, (c.n_rules + 1) * sizeof(int64_t)


cdef size_t move_to_arena(Core* c) except 0:
    """Move the lookup arrays into one block from ``arena_alloc``, each trimmed to its
    used length and cache-line aligned; returns the block's size."""
    cdef void** where[N_LOOKUP_ARRAYS]
    cdef size_t size[N_LOOKUP_ARRAYS]
    cdef size_t total = 0, offset = 0
    cdef int k
    lookup_arrays(c, where, size)
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
    c.arena = arena
    return total if total else 1


cdef void free_core(Core* c) noexcept:
    """Free what ``c`` owns, built or not (a build that failed half-way included)."""
    cdef void** where[N_LOOKUP_ARRAYS]
    cdef size_t size[N_LOOKUP_ARRAYS]
    cdef int k
    if c.arena != NULL:
        free(c.arena)
    else:
        lookup_arrays(c, where, size)
        for k in range(N_LOOKUP_ARRAYS):
            free(where[k][0])
    free(c.lprefixes)
    free(c.rules)
    free(c.ids_sorted)
    free(c.rank_of_sorted)


# -- the id index ----------------------------------------------------------------------

cdef int build_ids(Core* c) except -1:
    """ids sorted, with their ranks, for get() and ``in`` without a dict."""
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
    qsort(pairs, n, sizeof(IdRank), compare_ids)      # a repeated id: see Matcher._repeated_id
    for i in range(n):
        c.ids_sorted[i] = pairs[i].id
        c.rank_of_sorted[i] = pairs[i].rank
    free(pairs)
    return 0
