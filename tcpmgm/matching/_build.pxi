# The build: RuleRecords into the Core of _layout.pxd (part of _matcher.pyx).  Everything here runs
# once per Matcher, with the GIL held; nothing it builds changes afterwards.

cdef extern from *:
    """
    #include <stdlib.h>
    #if defined(__linux__)
    #include <sys/mman.h>
    #endif
    #if defined(__GLIBC__)
    #include <malloc.h>
    #endif
    /* A large matcher's block is mapped on its own, in 2 MB pages where the OS offers them:
       a lookup reads a few random cache lines spread over tens of megabytes, and with 4 KB
       pages each of those also costs a TLB miss and a page walk (a two-dimensional one under
       a hypervisor).  Mapped, not malloc'd: unmapping it gives the memory back to the OS at
       once, where glibc would keep a freed block of that size in its heap (it raises its mmap
       threshold after such a free), and every reload would add a matcher's worth of RSS
       (docs/architecture.md#a-reload). */
    #define TCPMGM_HUGE_PAGE ((size_t)2 << 20)
    static int tcpmgm_arena_mapped(size_t size) {
    #if defined(__linux__) && defined(MAP_ANONYMOUS)
        return size >= 2 * TCPMGM_HUGE_PAGE;
    #else
        return 0;
    #endif
    }
    static size_t tcpmgm_arena_span(size_t size) {   /* what a mapped block of size spans */
        return (size + TCPMGM_HUGE_PAGE - 1) & ~(TCPMGM_HUGE_PAGE - 1);
    }
    static void* tcpmgm_arena_alloc(size_t size) {
    #if defined(__linux__) && defined(MAP_ANONYMOUS)
        if (tcpmgm_arena_mapped(size)) {
            size_t span = tcpmgm_arena_span(size), head;
            /* One huge page more than needed, then the slack on both sides unmapped: the block
               starts on a 2 MB boundary, which a huge page needs. */
            char* p = (char*)mmap(NULL, span + TCPMGM_HUGE_PAGE, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == (char*)MAP_FAILED) return NULL;
            head = (TCPMGM_HUGE_PAGE - ((size_t)p & (TCPMGM_HUGE_PAGE - 1))) & (TCPMGM_HUGE_PAGE - 1);
            if (head) munmap(p, head);
            munmap(p + head + span, TCPMGM_HUGE_PAGE - head);
    #if defined(MADV_HUGEPAGE)
            madvise(p + head, span, MADV_HUGEPAGE);      /* advice only: 4 KB pages still work */
    #endif
            return p + head;
        }
    #endif
        return malloc(size ? size : 1);
    }
    static void tcpmgm_arena_free(void* p, size_t size) {
    #if defined(__linux__) && defined(MAP_ANONYMOUS)
        if (tcpmgm_arena_mapped(size)) { munmap(p, tcpmgm_arena_span(size)); return; }
    #endif
        free(p);
    }
    /* The build frees its growing arrays once they are copied into the block; glibc keeps
       those holes in its heap unless asked to give back what is free. */
    static void tcpmgm_give_back(void) {
    #if defined(__GLIBC__)
        malloc_trim(0);
    #endif
    }
    """
    void* arena_alloc "tcpmgm_arena_alloc"(size_t size) nogil
    void arena_free "tcpmgm_arena_free"(void* p, size_t size) nogil
    void give_back_free_memory "tcpmgm_give_back"() nogil

cdef enum:
    # From this many rules on, a build and a free end with give_back_free_memory: a few
    # milliseconds against megabytes that glibc would otherwise keep after every reload.
    GIVE_BACK_RULES = 65536
    TRIM_SECTION_BYTES = 8 << 20     # move_to_arena gives back each freed array from this size on

cdef extern from "sys/mman.h" nogil:
    int munmap(void* addr, size_t length)

ctypedef struct SortKey:      # a rule's key (Rule.key) as C ints
    int64_t head              # the levels of the key above the id, packed as Rule.order packs them
    int64_t id                # the last level: the id
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
    uint32_t* local_id_in     # each rule's local prefix id (0: any)
    uint32_t* lslot_in        # the local slot of each rule with a local prefix
    uint32_t lslot_of_shape[2][129]   # (family 4 / 6, plen) -> local slot, NONE: none yet
    uint32_t cap_local        # room in Core.lprefixes


# -- the key, as model/key.py's levels say -------------------------------------------
#
# The build ranks RuleIns, not Rules: the levels of the key are read from model/key.py when this
# module loads, each as the RuleIn field that holds its attribute and the kind that turns it into
# an int, and packed into SortKey.head as Rule.order packs them (tests/test_differential.py holds
# the ranks to the reference's sort by Rule.key).

cdef enum:
    MAX_LEVELS = 16

cdef enum RuleInField:        # the RuleIn fields a level may read
    F_ID, F_PRIORITY, F_PROTO, F_REMOTE, F_RPORT, F_LOCAL, F_LPORT

cdef enum LevelKind:
    KIND_VALUE, KIND_ANY_NONE, KIND_ANY_ZERO, KIND_LENGTH

cdef int n_head_levels                      # the levels above the last (the id)
cdef RuleInField level_field[MAX_LEVELS]
cdef LevelKind level_kind[MAX_LEVELS]
cdef int64_t level_scale[MAX_LEVELS]        # 2 ** its width
cdef int64_t LENGTH_OFFSET = key.LENGTH_OFFSET


cdef int read_levels() except -1:
    """The packing of SortKey.head from ``key.LEVELS``; a table it cannot follow stops the import
    instead of ranking by another order."""
    global n_head_levels
    fields = {"id": F_ID, "priority": F_PRIORITY, "proto": F_PROTO, "remote_prefix": F_REMOTE,
              "remote_port": F_RPORT, "local_prefix": F_LOCAL, "local_port": F_LPORT}
    # Which kinds each field can be read as (a Prefix has no VALUE, a protocol code no order).
    kinds = {key.Kind.VALUE: (KIND_VALUE, (F_ID, F_PRIORITY, F_RPORT, F_LPORT)),
             key.Kind.ANY_NONE: (KIND_ANY_NONE, (F_PROTO, F_REMOTE, F_LOCAL)),
             key.Kind.ANY_ZERO: (KIND_ANY_ZERO, (F_RPORT, F_LPORT)),
             key.Kind.LENGTH: (KIND_LENGTH, (F_REMOTE, F_LOCAL))}
    *head, last = key.LEVELS
    if (len(head) > MAX_LEVELS or sum(level.bits for level in head) > 63 or last.kind is not key.Kind.VALUE
            or last.attribute != "id" or any(level.kind not in kinds or fields.get(level.attribute)
                                             not in kinds[level.kind][1] for level in head)):
        raise ImportError("tcpmgm.matching._matcher cannot rank by model/key.py's levels")
    for k, level in enumerate(head):
        level_field[k] = fields[level.attribute]
        level_kind[k] = kinds[level.kind][0]
        level_scale[k] = <int64_t>1 << level.bits
    n_head_levels = len(head)
    return 0


read_levels()


cdef inline int64_t level_value(const RuleIn* r, int k) noexcept nogil:
    """Level ``k`` of rule ``r``'s key, as Rule.order holds it."""
    cdef int64_t value = 0          # the field as an int (a prefix: its length)
    cdef bint any_value = False     # whether the field is "any"
    cdef RuleInField field = level_field[k]
    if field == F_ID:
        value = r.id
    elif field == F_PRIORITY:
        value = r.priority
    elif field == F_PROTO:
        any_value = r.proto == 0
    elif field == F_RPORT:
        value = r.rport
        any_value = value == 0
    elif field == F_LPORT:
        value = r.lport
        any_value = value == 0
    elif field == F_REMOTE:
        value = r.rplen
        any_value = r.rfam == 0
    else:
        value = r.lplen
        any_value = r.lfam == 0
    if level_kind[k] == KIND_VALUE:
        return value
    if level_kind[k] == KIND_LENGTH:
        return LENGTH_OFFSET - value
    return any_value


cdef inline int64_t key_head(const RuleIn* r) noexcept nogil:
    """The levels above the id, each shifted above the next by its width (as Rule.order)."""
    cdef int64_t head = level_value(r, 0)
    cdef int k
    for k in range(1, n_head_levels):
        head = head * level_scale[k] + level_value(r, k)
    return head


# -- sorting ----------------------------------------------------------------------------
#
# The build sorts three arrays of n records (the keys, the remote prefixes, the ids).  libc's
# qsort calls its comparison through a pointer and moves records with memcpy; an introsort
# (Musser, "Introspective sorting and selection algorithms", 1997) compiled once per record
# type with the comparison inlined takes a third of the time, and its heapsort fallback keeps
# every input O(n log n).  Every key compared is unique (the records carry their position or
# rank, ids are unique), so the order is fully defined.

ctypedef fused Sorted:
    SortKey
    PendingPrefix
    IdRank

cdef enum:
    INSERTION_SORT_MAX = 16   # shorter runs are finished by insertion sort


cdef inline bint before(const Sorted* x, const Sorted* y) noexcept nogil:
    if Sorted is SortKey:      # the key, then the position given (a repeated id is refused)
        if x.head != y.head:
            return x.head < y.head
        if x.id != y.id:
            return x.id < y.id
        return x.index < y.index
    elif Sorted is PendingPrefix:
        # Address order, a prefix before the longer ones under it, then rank.
        if x.family != y.family:
            return x.family < y.family
        if x.hi != y.hi:
            return x.hi < y.hi
        if x.lo != y.lo:
            return x.lo < y.lo
        if x.plen != y.plen:
            return x.plen < y.plen
        return x.rank < y.rank
    else:
        return x.id < y.id


cdef void sort_records(Sorted* a, size_t n) noexcept nogil:
    cdef int depth = 0
    cdef size_t m = n
    while m:
        depth += 2
        m >>= 1
    introsort(a, n, depth)
    insertion_sort(a, n)


cdef void introsort(Sorted* a, size_t n, int depth) noexcept nogil:
    """Quicksort down to runs of INSERTION_SORT_MAX (left for the final insertion sort), heapsort
    once ``depth`` partitions have not made the runs short."""
    cdef Sorted pivot, swap
    cdef Py_ssize_t i, j
    while n > INSERTION_SORT_MAX:
        if depth == 0:
            heapsort(a, n)
            return
        depth -= 1
        median_to_front(a, n)
        pivot = a[0]                   # Hoare's partition around a[0]: j ends in [0, n - 2]
        i = -1
        j = <Py_ssize_t>n
        while True:
            i += 1
            while before(&a[i], &pivot):
                i += 1
            j -= 1
            while before(&pivot, &a[j]):
                j -= 1
            if i >= j:
                break
            swap = a[i]
            a[i] = a[j]
            a[j] = swap
        if <size_t>j + 1 < n - <size_t>j - 1:      # recurse into the shorter part
            introsort(a, <size_t>j + 1, depth)
            a += j + 1
            n -= <size_t>j + 1
        else:
            introsort(a + j + 1, n - <size_t>j - 1, depth)
            n = <size_t>j + 1


cdef inline void median_to_front(Sorted* a, size_t n) noexcept nogil:
    """The median of the first, middle and last record into a[0]."""
    cdef Sorted swap
    cdef size_t m = n // 2, last = n - 1, k
    if before(&a[m], &a[0]):
        if before(&a[last], &a[m]):
            k = m
        elif before(&a[last], &a[0]):
            k = last
        else:
            k = 0
    elif before(&a[m], &a[last]):
        k = m
    elif before(&a[0], &a[last]):
        k = last
    else:
        k = 0
    swap = a[0]
    a[0] = a[k]
    a[k] = swap


cdef void insertion_sort(Sorted* a, size_t n) noexcept nogil:
    cdef size_t i, j
    cdef Sorted x
    for i in range(1, n):
        x = a[i]
        j = i
        while j > 0 and before(&x, &a[j - 1]):
            a[j] = a[j - 1]
            j -= 1
        a[j] = x


cdef void heapsort(Sorted* a, size_t n) noexcept nogil:
    cdef size_t i, k
    cdef Sorted swap
    i = n // 2
    while i > 0:
        i -= 1
        sift_down(a, i, n)
    k = n
    while k > 1:
        k -= 1
        swap = a[0]
        a[0] = a[k]
        a[k] = swap
        sift_down(a, 0, k)


cdef inline void sift_down(Sorted* a, size_t i, size_t n) noexcept nogil:
    cdef Sorted x = a[i]
    cdef size_t child
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and before(&a[child], &a[child + 1]):
            child += 1
        if not before(&x, &a[child]):
            break
        a[i] = a[child]
        i = child
    a[i] = x


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

cdef int build_core(Core* c, RuleRecords records, object default) except -1:
    """Fill ``c`` from ``records`` (the rules as given) and ``default`` (the matcher's default
    profile, id 0).

    Everything runs over C records: the ranks come from sorting the keys packed in C, and no
    Python object is made per rule.  At the end every array moves into one block laid out as
    the image's body (``move_to_arena``)."""
    cdef uint32_t n = records.n_recs, i
    cdef int64_t repeated
    c.n_rules = n
    c.flags = HAS_INDEX
    build_tables(c, records, default)
    c.rules = <RuleRec*>calloc(n + 1, sizeof(RuleRec))
    c.id_of_rank = <int64_t*>malloc((n + 1) * sizeof(int64_t))
    c.given = <uint32_t*>malloc((n + 1) * sizeof(uint32_t))
    if c.rules == NULL or c.id_of_rank == NULL or c.given == NULL:
        raise MemoryError()
    # Scratch arrays (freed with this array object).
    cdef array memory = clone(array("B"), (n + 1) * (
        sizeof(PendingPrefix) + sizeof(SortKey) + 3 * sizeof(uint32_t)), False)
    cdef Scratch s
    s.pending = <PendingPrefix*>memory.data.as_voidptr
    s.keys = <SortKey*>(s.pending + n + 1)
    s.local_id_in = <uint32_t*>(s.keys + n + 1)
    s.lslot_in = s.local_id_in + n + 1
    cdef uint32_t* lslot_of = s.lslot_in + n + 1     # by rank
    s.n_pending = 0
    s.cap_local = 0
    memset(s.lslot_of_shape, 0xFF, sizeof(s.lslot_of_shape))
    read_rules(c, records, &s)
    rank_rules(c, records, &s, lslot_of)
    insert_prefixes(c, s.pending, s.n_pending)
    store_preorder(c)
    build_lslots(c, &s)
    build_groups(c, lslot_of)
    build_bounds(c)
    for family in (4, 6):
        if c.root[family == 6] != NONE:
            build_slots(c, family)
    build_ids(c)
    memory = None                  # the scratch, freed before the block is filled (a reload's peak)
    for i in range(1, n):
        if c.ids_sorted[i] == c.ids_sorted[i - 1]:
            # The matchers' error: the first rule, in the order given, whose id came before.
            repeated = first_repeated_id(records.recs, n)
            raise RuleError(repeated, "id", repeated, "duplicate id")
    move_to_arena(c)
    c.nbytes = c.arena_size
    return 0


cdef int build_tables(Core* c, RuleRecords records, object default) except -1:
    """The Core's strings (the records' in their order, then the protocol names and the default's
    attrs), its protocols (the registry, by code) and its profiles (the records', then the
    default's unless one of them equals it)."""
    strings = list(records.strings)
    index = dict(records.string_index)
    names = protocols()
    cdef uint32_t k, n_names = len(names)
    cdef ProfileRec wanted
    for k in range(records.n_recs):
        if records.recs[k].proto > n_names:
            raise ValueError(f"rule {records.recs[k].id}: protocol code {records.recs[k].proto} is not registered")
    c.n_protocols = n_names
    c.protocols = <uint32_t*>malloc((c.n_protocols + 1) * sizeof(uint32_t))
    c.profiles = <ProfileRec*>malloc((records.n_profiles + 1) * sizeof(ProfileRec))
    if c.protocols == NULL or c.profiles == NULL:
        raise MemoryError()
    for k in range(c.n_protocols):
        c.protocols[k] = index.setdefault(names[k], len(index))
    memset(&wanted, 0, sizeof(ProfileRec))
    profile_ints(0, default, &wanted)
    text = attrs_text(0, default.attrs, index)
    wanted.attrs = NONE if text is None else index.setdefault(text, len(index))
    if records.n_profiles:        # records without rules may have no table at all (NULL): memcpy wants a valid source
        memcpy(c.profiles, records.profiles, records.n_profiles * sizeof(ProfileRec))
    c.n_profiles = records.n_profiles
    c.default_profile = NONE
    for k in range(c.n_profiles):
        if memcmp(&c.profiles[k], &wanted, sizeof(ProfileRec)) == 0:
            c.default_profile = k
            break
    else:
        c.profiles[c.n_profiles] = wanted
        c.default_profile = c.n_profiles
        c.n_profiles += 1
    strings.extend(list(index)[len(strings):])      # the new ones, in the order given their index
    fill_strings(c, strings)
    return 0


cdef int fill_strings(Core* c, list strings) except -1:
    """The string table: UTF-8 bytes back to back, string k from offset k to offset k + 1."""
    encoded = [text.encode() for text in strings]
    cdef bytes joined = b"".join(encoded)
    cdef uint32_t k, at = 0
    if len(joined) >= NONE or len(encoded) >= NONE:
        raise MemoryError("tcpmgm: strings too large")
    c.n_strings = len(encoded)
    c.string_offsets = <uint32_t*>malloc((c.n_strings + 1) * sizeof(uint32_t))
    c.string_bytes = <char*>malloc(len(joined) + 1)
    if c.string_offsets == NULL or c.string_bytes == NULL:
        raise MemoryError()
    for k in range(c.n_strings):
        c.string_offsets[k] = at
        at += len(encoded[k])
    c.string_offsets[c.n_strings] = at
    memcpy(c.string_bytes, <const char*>joined, len(joined))
    return 0


cdef int read_rules(Core* c, RuleRecords records, Scratch* s) except -1:
    """Each rule's key, remote prefix, local prefix id and local slot into ``s`` (by position)."""
    cdef uint32_t i
    cdef const RuleIn* r
    cdef PendingPrefix* p
    c.max_id = 0
    for i in range(records.n_recs):
        r = &records.recs[i]
        s.keys[i].head = key_head(r)
        s.keys[i].id = r.id
        s.keys[i].index = i
        if r.id > c.max_id:
            c.max_id = r.id
        if r.rfam:
            p = &s.pending[s.n_pending]
            p.hi, p.lo, p.family, p.plen = r.rhi, r.rlo, r.rfam, r.rplen
            p.rank = i                 # a position until the ranks are known
            s.n_pending += 1
        s.local_id_in[i] = 0
        s.lslot_in[i] = 0
        if r.lfam:
            s.local_id_in[i] = local_id(c, s, r.lfam, r.lplen, r.lhi, r.llo)
            s.lslot_in[i] = local_slot(c, s, r.lfam, r.lplen)
    return 0


cdef int rank_rules(Core* c, RuleRecords records, Scratch* s, uint32_t* lslot_of) except -1:
    """Sort the rules by key; each one's record, id and local slot go to its rank."""
    cdef uint32_t rank, i, j
    cdef const RuleIn* r
    cdef RuleRec* rec
    sort_records(s.keys, c.n_rules)
    for rank in range(c.n_rules):
        i = s.keys[rank].index
        r = &records.recs[i]
        rec = &c.rules[rank]            # calloc'd: the padding stays zero
        rec.rhi, rec.rlo, rec.rfam, rec.rplen = r.rhi, r.rlo, r.rfam, r.rplen
        rec.node = NONE
        rec.local_id = s.local_id_in[i]
        rec.priority = r.priority
        rec.profile = r.profile         # the Core's profiles begin with the records'
        rec.tag = r.tag                 # and its strings with theirs
        rec.proto, rec.rport, rec.lport = r.proto, r.rport, r.lport
        c.id_of_rank[rank] = s.keys[rank].id
        lslot_of[rank] = s.lslot_in[i]
        c.given[i] = rank
    for j in range(s.n_pending):
        s.pending[j].rank = c.given[s.pending[j].rank]
    return 0


# -- the arrays' memory: one block, the image's body ---------------------------------------

cdef void image_sections(Core* c, void*** where, size_t* size) noexcept:
    """Where the Core keeps each of its N_SECTIONS arrays, in image order
    (docs/architecture.md#the-image), and its size in bytes in use (0: absent)."""
    cdef uint32_t n = c.n_rules
    where[0], size[0] = <void**>&c.nodes, c.n_nodes * sizeof(Node)
    where[1], size[1] = <void**>&c.groups, c.n_groups * sizeof(Group)
    where[2], size[2] = <void**>&c.table, (c.hmask + 1) * sizeof(Entry) if c.table != NULL else 0
    where[3], size[3] = <void**>&c.slots[0], (<size_t>1 << c.slot_bits[0]) * sizeof(Slot) if c.slots[0] != NULL else 0
    where[4], size[4] = <void**>&c.slots[1], (<size_t>1 << c.slot_bits[1]) * sizeof(Slot) if c.slots[1] != NULL else 0
    where[5], size[5] = <void**>&c.pool, c.n_pool * sizeof(ShortPrefix)
    where[6], size[6] = <void**>&c.ltable, (c.lmask + 1) * sizeof(LocalEntry) if c.ltable != NULL else 0
    where[7], size[7] = <void**>&c.lslots, c.n_lslots * sizeof(Prefix)
    where[8], size[8] = <void**>&c.id_of_rank, n * sizeof(int64_t)
    where[9], size[9] = <void**>&c.rules, n * sizeof(RuleRec)
    where[10], size[10] = <void**>&c.lprefixes, (c.n_local + 1) * sizeof(Prefix) if c.lprefixes != NULL else 0
    where[11], size[11] = <void**>&c.ids_sorted, n * sizeof(int64_t)
    where[12], size[12] = <void**>&c.rank_of_sorted, n * sizeof(uint32_t)
    where[13], size[13] = <void**>&c.profiles, c.n_profiles * sizeof(ProfileRec)
    where[14], size[14] = (<void**>&c.string_offsets,
                           (c.n_strings + 1) * sizeof(uint32_t) if c.string_offsets != NULL else 0)
    where[15], size[15] = (<void**>&c.string_bytes,
                           c.string_offsets[c.n_strings] if c.string_offsets != NULL else 0)
    where[16], size[16] = <void**>&c.protocols, c.n_protocols * sizeof(uint32_t)
    where[17], size[17] = <void**>&c.given, n * sizeof(uint32_t)


cdef inline size_t aligned64(size_t size) noexcept nogil:
    return (size + 63) & ~<size_t>63


cdef int move_to_arena(Core* c) except -1:
    """Move the arrays into one block from ``arena_alloc``, in section order, each trimmed to its
    used length and starting at a multiple of 64 (a cache line), the gaps zero: the block is the
    image's body (docs/architecture.md#the-image), which ``save`` writes as it is."""
    cdef void** where[N_SECTIONS]
    cdef size_t size[N_SECTIONS]
    cdef size_t total = 0, offset = 0
    cdef int k
    image_sections(c, where, size)
    for k in range(N_SECTIONS):
        total += aligned64(size[k])
    cdef char* arena = <char*>arena_alloc(total)
    if arena == NULL:
        raise MemoryError()
    for k in range(N_SECTIONS):
        if size[k]:
            memcpy(arena + offset, where[k][0], size[k])
            memset(arena + offset + size[k], 0, aligned64(size[k]) - size[k])
        free(where[k][0])
        if size[k] >= TRIM_SECTION_BYTES:
            # The block's pages become resident as they are written: giving each freed array
            # back before the next is copied keeps a reload's peak near one copy, not two.
            give_back_free_memory()
        where[k][0] = arena + offset if size[k] else NULL
        offset += aligned64(size[k])
    c.arena = arena
    c.arena_size = total
    return 0


cdef void free_core(Core* c) noexcept:
    """Free what ``c`` owns, built, opened or not (a build that failed half-way included)."""
    cdef void** where[N_SECTIONS]
    cdef size_t size[N_SECTIONS]
    cdef int k
    if c.map != NULL:
        munmap(c.map, c.map_size)
    elif c.arena != NULL:
        arena_free(c.arena, c.arena_size)
    else:
        image_sections(c, where, size)
        for k in range(N_SECTIONS):
            free(where[k][0])
    reset_core(c)


cdef void reset_core(Core* c) noexcept:
    """An empty Core: nothing allocated, no trie, no rule."""
    memset(c, 0, sizeof(Core))
    c.root[0] = c.root[1] = NONE
    c.any_best = NONE


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
    sort_records(pairs, n)      # ids are unique: build_core refuses a repeated one
    for i in range(n):
        c.ids_sorted[i] = pairs[i].id
        c.rank_of_sorted[i] = pairs[i].rank
    free(pairs)
    return 0
