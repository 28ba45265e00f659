# The lookup: no Python objects, callable without the GIL (part of _matcher.pyx).
#
# ``classify`` keeps ``best`` = the smallest matching rank so far and visits
#     1. the slot's short prefixes in ``own_best`` order, stopping at the first whose
#        ``own_best`` cannot beat ``best``;
#     2. the trie from the slot's start node downwards, stopping when the node's ``sub_best``
#        cannot beat ``best`` or its prefix does not contain the address (then no deeper node
#        can);
#     3. the remote-"any" rule set.
# Each rule set is probed group by group in ``best`` order, stopping as soon as a group's
# ``best`` cannot beat ``best``.
#
# Why this is docs/behaviour.md#which-rule-wins exactly: every rule whose remote filter matches
# sits in a rule set visited in 1-3 unless a bound proved that everything it holds ranks after
# a rule already matched; inside a rule set a rule matches iff its group's exact fields equal
# the connection's (masked) fields, which is the hash key, and the hash keeps the smallest rank
# per key; the minimum over all of them is the smallest matching rank.  ``explain`` asks
# ``rule_matches`` of every rule instead, and the tests compare both with the pure-Python
# reference.

cdef enum:
    HASH_PREFETCH_MIN = 32767  # hash slots - 1 below which probe_set does not prefetch (768 KiB)
    PREFETCH_GROUPS = 8       # a rule set's first groups whose hash slots are prefetched


cdef inline uint32_t resolve_local(const Core* c, uint32_t lslot, Query* q) noexcept nogil:
    """The id of the local prefix in ``lslot``'s length that holds the local address (0: none)."""
    if q.memo_lslot == lslot:
        return q.memo_lid
    cdef const Prefix* shape = &c.lslots[lslot]
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


cdef inline uint64_t entry_key(uint32_t gi, uint32_t proto, uint32_t rport) noexcept nogil:
    """``Entry.a``: the group and the fields of the hash key that fit one word."""
    return <uint64_t>gi | (<uint64_t>proto << 32) | (<uint64_t>rport << 48)


cdef inline uint32_t probe_group(const Core* c, uint32_t gi, Query* q, uint64_t h) noexcept nogil:
    """The smallest rank in group ``gi`` that matches the connection, or NONE.
    ``h``: the group's hash slot if ``prefetch_groups`` computed it, else NO_SLOT."""
    cdef const Group* g = &c.groups[gi]
    cdef uint32_t mask = g.mask
    cdef uint32_t proto = 0, rport = 0, lport = 0, lid = 0
    if mask & G_PROTO:
        proto = q.proto if q.proto != 0 else ANY_PROTO_KEY
    if mask & G_RPORT:
        rport = q.rport
    if mask & G_LPORT:
        lport = q.lport
    if mask & G_LOCAL:
        lid = resolve_local(c, g.lslot, q)
        if lid == 0:
            return NONE
    if mask & G_INLINE:
        if ((g.proto == proto or proto == ANY_PROTO_KEY) and g.rport == rport
                and g.lport == lport and g.local_id == lid):
            return g.best
        return NONE
    cdef uint64_t a = entry_key(gi, proto, rport)
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
    cdef uint64_t h
    for i in range(off, off + min(cnt, PREFETCH_GROUPS)):
        mask = c.groups[i].mask
        if mask & (G_INLINE | G_LOCAL):
            slots[i - off] = NO_SLOT
            continue
        proto = (q.proto if q.proto != 0 else ANY_PROTO_KEY) if mask & G_PROTO else 0
        rport = q.rport if mask & G_RPORT else 0
        lport = q.lport if mask & G_LPORT else 0
        h = entry_hash(entry_key(i, proto, rport), 0, lport) & c.hmask
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


cdef inline uint32_t probe_chain(const Core* c, const ShortPrefix* short, Query* q, uint32_t best) noexcept nogil:
    """Step 1 of ``classify``: a slot's chain of short prefixes."""
    cdef uint32_t cnt
    while short.own_best < best:
        cnt = short.group_cnt & ~LAST_SHORT
        if short.proto == NO_SHORT_KEY:
            best = probe_set(c, short.group_off, cnt, q, best)
        else:
            if key_matches(short.proto, short.rport, short.lport, q):
                best = short.own_best
            if cnt > 1:
                best = probe_set(c, short.group_off + 1, cnt - 1, q, best)
        if short.group_cnt & LAST_SHORT:
            break
        short += 1
    return best


cdef uint32_t classify(const Core* c, Query* q) noexcept nogil:
    """The smallest rank among the rules matching ``q``, or NONE."""
    cdef uint32_t best = NONE
    cdef uint32_t idx
    cdef const Node* n
    q.memo_lslot = NONE
    cdef const Slot* slot = slot_of(c, q)
    if slot != NULL:
        if slot.chain != NONE:
            best = probe_chain(c, &c.pool[slot.chain], q, best)
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


cdef bint rank_matches(const Core* c, uint32_t rank, const Query* q) noexcept nogil:
    """Rule ``rank`` against ``q``, filter by filter (explain's brute force)."""
    cdef const RuleRec* r = &c.rules[rank]
    cdef Prefix remote
    memset(&remote, 0, sizeof(Prefix))     # family 0: any
    remote.hi, remote.lo, remote.family, remote.plen = r.rhi, r.rlo, r.rfam, r.rplen
    return rule_matches(r.proto, r.rport, r.lport, &remote, &c.lprefixes[r.local_id], q)
