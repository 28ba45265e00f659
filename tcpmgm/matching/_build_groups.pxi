# The build's rule sets (part of _matcher.pyx, see _layout.pxd): local prefix ids, each rule
# set's groups, and the hash of the groups that hold more than one key.


# -- local prefixes ----------------------------------------------------------------

cdef uint32_t local_id(Core* c, Scratch* s, uint8_t family, uint8_t plen, uint64_t hi, uint64_t lo) except 0:
    """The id of a local prefix (1, 2, ... in order of first use), entered in ``lprefixes`` and
    ``ltable`` on first use.  ``ltable`` is kept at pow2_at_least(2 * n_local + 2) slots, at
    most half full, so that a probe ends at an empty slot."""
    cdef uint32_t fp = <uint32_t>family << 8 | plen
    cdef uint64_t h
    if c.ltable == NULL or 2 * (<uint64_t>c.n_local + 1) + 2 > c.lmask + 1:
        grow_ltable(c, 2 * (<uint64_t>c.n_local + 1) + 2)
    h = local_hash(hi, lo, fp) & c.lmask
    while c.ltable[h].fp != 0:
        if c.ltable[h].fp == fp and c.ltable[h].hi == hi and c.ltable[h].lo == lo:
            return c.ltable[h].id
        h = (h + 1) & c.lmask
    c.n_local += 1
    c.lprefixes = <Prefix*>grow(c.lprefixes, &s.cap_local, <uint64_t>c.n_local + 1, sizeof(Prefix))
    memset(&c.lprefixes[c.n_local], 0, sizeof(Prefix))       # the padding too: image bytes
    c.lprefixes[c.n_local].hi, c.lprefixes[c.n_local].lo = hi, lo
    c.lprefixes[c.n_local].family, c.lprefixes[c.n_local].plen = family, plen
    c.ltable[h].hi, c.ltable[h].lo, c.ltable[h].fp, c.ltable[h].id = hi, lo, fp, c.n_local
    return c.n_local


cdef int grow_ltable(Core* c, uint64_t need) except -1:
    """Rehash ``ltable`` into pow2_at_least(need) slots."""
    cdef uint64_t size = pow2_at_least(need), h
    cdef uint32_t lid, fp
    cdef LocalEntry* table = <LocalEntry*>calloc(size, sizeof(LocalEntry))
    cdef const Prefix* p
    if table == NULL:
        raise MemoryError()
    for lid in range(1, c.n_local + 1):
        p = &c.lprefixes[lid]
        fp = <uint32_t>p.family << 8 | p.plen
        h = local_hash(p.hi, p.lo, fp) & (size - 1)
        while table[h].fp != 0:
            h = (h + 1) & (size - 1)
        table[h].hi, table[h].lo, table[h].fp, table[h].id = p.hi, p.lo, fp, lid
    free(c.ltable)
    c.ltable = table
    c.lmask = size - 1
    return 0


cdef uint32_t local_slot(Core* c, Scratch* s, uint8_t family, uint8_t plen) noexcept:
    """The local slot of a (family, length), numbered in order of first use."""
    cdef uint32_t* slot = &s.lslot_of_shape[family == 6][plen]
    if slot[0] == NONE:
        slot[0] = c.n_lslots
        c.n_lslots += 1
    return slot[0]


cdef int build_lslots(Core* c, Scratch* s) except -1:
    """The local slots' shapes, and the (empty) tables of a matcher without local prefixes."""
    cdef int f, plen
    if c.ltable == NULL:
        grow_ltable(c, 2)
    if c.lprefixes == NULL:
        c.lprefixes = <Prefix*>calloc(1, sizeof(Prefix))          # local id 0: unused, zero
    else:
        memset(&c.lprefixes[0], 0, sizeof(Prefix))
    c.lslots = <Prefix*>calloc(c.n_lslots + 1, sizeof(Prefix))
    if c.lprefixes == NULL or c.lslots == NULL:
        raise MemoryError()
    for f in range(2):
        for plen in range(129):
            if s.lslot_of_shape[f][plen] != NONE:
                c.lslots[s.lslot_of_shape[f][plen]].family = 6 if f else 4
                c.lslots[s.lslot_of_shape[f][plen]].plen = plen
    return 0


# -- groups and the hash -------------------------------------------------------------

cdef int grow_table(Core* c) except -1:
    """Rehash into a table four times the entries (64 slots for the first)."""
    cdef Entry* old = c.table
    cdef uint64_t size = pow2_at_least(4 * (c.n_entries + 1)) if old != NULL else 64
    cdef uint64_t h, i
    c.table = <Entry*>calloc(size, sizeof(Entry))       # the padding zero: image bytes
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
    return 0


cdef int put(Core* c, uint64_t a, uint32_t local_id, uint32_t lport, uint32_t rank) except -1:
    """Insert a hash key unless present (ranks arrive in ascending order: the first is the best)."""
    cdef uint64_t h
    if c.table == NULL or 2 * (c.n_entries + 1) > c.hmask + 1:
        grow_table(c)
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


cdef int put_rule(Core* c, uint32_t gi, const RuleRec* r, uint32_t mask) except -1:
    cdef uint32_t rank = <uint32_t>(r - c.rules)
    put(c, entry_key(gi, r.proto, r.rport), r.local_id, r.lport, rank)
    if mask & G_PROTO:
        put(c, entry_key(gi, ANY_PROTO_KEY, r.rport), r.local_id, r.lport, rank)
    return 0


cdef int sort_by_rule_set(Core* c, uint32_t* start, uint32_t* order) noexcept:
    """Counting sort of the ranks by rule set (a node's, then remote "any" as set ``n_nodes``):
    set s's ranks, ascending, are ``order[start[s]:start[s + 1]]``."""
    cdef uint32_t n_sets = c.n_nodes + 1, rank, s
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
    return 0


cdef int new_group(Core* c, uint32_t rank, uint32_t mask, uint32_t lslot) except -1:
    """A group whose best (and so far only) rule is ``rank``, its key inline."""
    cdef const RuleRec* r = &c.rules[rank]
    c.groups = <Group*>grow(c.groups, &c.cap_groups, <uint64_t>c.n_groups + 1, sizeof(Group))
    cdef Group* g = &c.groups[c.n_groups]
    c.n_groups += 1
    g.best = rank
    g.mask = mask | G_INLINE
    g.lslot = lslot
    g.local_id = r.local_id
    g.proto = r.proto
    g.rport = r.rport
    g.lport = r.lport
    g.pad = 0
    return 0


cdef int add_to_group(Core* c, uint32_t gi, uint32_t rank, uint32_t mask) except -1:
    """A further rule of group ``gi``: the first one that differs moves the key into the hash."""
    cdef const RuleRec* r = &c.rules[rank]
    cdef Group* g = &c.groups[gi]
    if g.mask & G_INLINE:
        if (g.proto == r.proto and g.rport == r.rport and g.lport == r.lport
                and g.local_id == r.local_id):
            return 0                            # same key, worse rank: can never win
        g.mask &= ~G_INLINE
        put_rule(c, gi, &c.rules[g.best], mask)
    put_rule(c, gi, r, mask)
    return 0


cdef uint32_t group_rule_set(Core* c, const uint32_t* ranks, uint32_t count, const uint32_t* lslot_of,
                             uint32_t** sigs, uint32_t* sig_cap) except NONE:
    """Split one rule set (its ranks, ascending) into groups; returns its first group.  Groups
    are found in order of their first (= best) rank, so they come out sorted by ``best``."""
    cdef uint32_t first_group = c.n_groups, n_sig = 0, i, k, rank, mask, sig
    cdef const RuleRec* r
    for i in range(count):
        rank = ranks[i]
        r = &c.rules[rank]
        mask = ((G_PROTO if r.proto else 0) | (G_RPORT if r.rport else 0)
                | (G_LPORT if r.lport else 0) | (G_LOCAL if r.local_id else 0))
        sig = mask | (lslot_of[rank] << 8 if r.local_id else 0)
        for k in range(n_sig):
            if sigs[0][k] == sig:
                add_to_group(c, first_group + k, rank, mask)
                break
        else:
            sigs[0] = <uint32_t*>grow(sigs[0], sig_cap, n_sig + 1, sizeof(uint32_t))
            sigs[0][n_sig] = sig
            n_sig += 1
            new_group(c, rank, mask, lslot_of[rank] if r.local_id else 0)
    return first_group


cdef int build_groups(Core* c, const uint32_t* lslot_of) except -1:
    """Split each rule set (per trie node, plus remote "any") into groups; fill the hash."""
    cdef uint32_t n_sets = c.n_nodes + 1          # the last one is remote "any"
    cdef uint32_t* start = <uint32_t*>calloc(n_sets + 1, sizeof(uint32_t))
    cdef uint32_t* order = <uint32_t*>malloc((c.n_rules + 1) * sizeof(uint32_t))
    cdef uint32_t* sigs = NULL
    cdef uint32_t sig_cap = 0, s, first_group
    if start == NULL or order == NULL:
        free(start)
        free(order)
        raise MemoryError()
    try:
        sort_by_rule_set(c, start, order)
        for s in range(n_sets):
            if start[s] == start[s + 1]:
                continue
            first_group = group_rule_set(c, order + start[s], start[s + 1] - start[s], lslot_of, &sigs, &sig_cap)
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
