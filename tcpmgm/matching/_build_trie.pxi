# The build's trie and first stride (part of _matcher.pyx, see _layout.pxd): the remote prefixes
# into a PATRICIA trie, its subtree bounds, and the slots a lookup starts from.


# -- the trie --------------------------------------------------------------------

cdef uint32_t new_node(Core* c, int family, uint64_t hi, uint64_t lo, int plen) except NONE:
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


cdef int insert_prefixes(Core* c, PendingPrefix* pending, uint32_t n) except -1:
    """Give each rule its remote prefix's node.  Inserting in address order keeps
    consecutive walks on the same cached path: at a million rules, random order
    made the trie insert the largest part of the build (a cache miss per level)."""
    cdef uint32_t i, node = NONE
    cdef PendingPrefix* p
    sort_records(pending, n)
    for i in range(n):
        p = &pending[i]
        if not (i and p.family == pending[i - 1].family and p.hi == pending[i - 1].hi
                and p.lo == pending[i - 1].lo and p.plen == pending[i - 1].plen):
            node = insert(c, p.family, p.hi, p.lo, p.plen)
        c.rules[p.rank].node = node
    return 0


cdef int store_preorder(Core* c) except -1:
    """Renumber the nodes in depth-first preorder (IPv4's trie, then IPv6's), so that every
    child is stored after its parent: a node's first child is the next node and a path's nodes
    lie near each other, so that open's check of each child's length reads nearby memory
    instead of a random place (docs/architecture.md#opening-and-why-each-check).  Runs right
    after insert_prefixes, while only the children, the roots and the rules' nodes hold node
    indices (the groups, bounds and slots are built on the new numbers)."""
    cdef uint32_t n = c.n_nodes, i, at = 0, top
    cdef int f, b
    # The pending nodes of a walk: at most one per level and the current one, the levels
    # strictly longer downwards (0..128).
    cdef uint32_t stack[2 * 130]
    cdef uint32_t* new_of = <uint32_t*>malloc((<size_t>n + 1) * sizeof(uint32_t))
    cdef Node* nodes = <Node*>malloc((<size_t>n + 1) * sizeof(Node))
    cdef Node* node
    if new_of == NULL or nodes == NULL:
        free(new_of)
        free(nodes)
        raise MemoryError()
    for f in range(2):
        if c.root[f] == NONE:
            continue
        stack[0] = c.root[f]
        top = 1
        while top:
            top -= 1
            i = stack[top]
            new_of[i] = at
            at += 1
            for b in (1, 0):            # child 0 popped first: it follows its parent
                if c.nodes[i].child[b] != NONE:
                    stack[top] = c.nodes[i].child[b]
                    top += 1
    # Every node is on a path from its root (insert links each node it makes), so ``at`` == n.
    for i in range(n):
        node = &nodes[new_of[i]]
        node[0] = c.nodes[i]
        for b in range(2):
            if node.child[b] != NONE:
                node.child[b] = new_of[node.child[b]]
    for f in range(2):
        if c.root[f] != NONE:
            c.root[f] = new_of[c.root[f]]
    for i in range(c.n_rules):
        if c.rules[i].node != NONE:
            c.rules[i].node = new_of[c.rules[i].node]
    free(c.nodes)
    c.nodes = nodes
    c.cap_nodes = n + 1
    free(new_of)
    return 0


cdef uint32_t insert(Core* c, int family, uint64_t hi, uint64_t lo, int plen) except NONE:
    """The trie node of prefix hi:lo/plen, created (with a branching node) if needed."""
    cdef int f = family == 6
    cdef uint32_t cur = c.root[f], parent = NONE, fresh, branch
    cdef int parent_bit = 0, common, bit
    cdef uint64_t nhi, nlo
    if cur == NONE:
        c.root[f] = new_node(c, family, hi, lo, plen)
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
                fresh = new_node(c, family, hi, lo, plen)
                c.nodes[cur].child[bit] = fresh
                return fresh
            parent, parent_bit, cur = cur, bit, c.nodes[cur].child[bit]
            continue
        # The prefix and ``cur`` part ways at ``common`` bits: put a node there.
        if common == plen:
            fresh = branch = new_node(c, family, hi, lo, plen)
        else:
            branch = new_node(c, family, hi, lo, common)
            fresh = new_node(c, family, hi, lo, plen)
            c.nodes[branch].child[bit_at(hi, lo, common)] = fresh
        c.nodes[branch].child[bit_at(nhi, nlo, common)] = cur
        if parent == NONE:
            c.root[f] = branch
        else:
            c.nodes[parent].child[parent_bit] = branch
        return fresh


cdef int build_bounds(Core* c) except -1:
    """sub_best = min(own_best, children's sub_best): children are longer, so go by length down."""
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


# -- the first stride ----------------------------------------------------------------

cdef int build_slots(Core* c, int family) except -1:
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
    fill_slots(c, slots, bits, c.root[f], stack, 0)
    return 0


cdef void copy_short(const Core* c, ShortPrefix* short, const Node* node) noexcept:
    """``short``: what the lookup needs of ``node``, and its first group's key when that is one
    key without a local address."""
    cdef const Group* first_group = &c.groups[node.group_off]
    short.own_best = node.own_best
    short.group_off = node.group_off
    short.group_cnt = node.group_cnt
    if first_group.mask & G_INLINE and not first_group.mask & G_LOCAL:
        short.proto = first_group.proto
        short.rport = first_group.rport
        short.lport = first_group.lport
    else:
        short.proto = NO_SHORT_KEY
        short.rport = short.lport = 0     # unused; zero, so that the same rules give the same image


cdef int fill_slots(Core* c, Slot* slots, int bits, uint32_t idx, uint32_t* stack, int depth) except -1:
    """Pre-order walk: short rule-bearing prefixes write their chain over their slots,
    deeper ones overwrite; the first node of length >= ``bits`` is its slot's start."""
    cdef Node* node = &c.nodes[idx]
    cdef uint32_t head, first, count, i, j
    cdef ShortPrefix* chain
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
            copy_short(c, &chain[j], node)
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
            fill_slots(c, slots, bits, c.nodes[idx].child[i], stack, depth)
    return 0
