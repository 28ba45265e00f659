# Per-rule hit counts (part of _matcher.pyx): how many lookups each rule won since the
# matcher was built (docs/architecture.md#hit-counts).
#
# One uint64_t counter per rank and one for the default profile, in an array of their own
# beside the Core: the Core never changes after the build, the counters change with every
# lookup.  A lookup's winner counts at index ``rank + 1`` in uint32_t arithmetic, so that NONE
# (no rule: the default) wraps to index 0 without a branch.
#
# Why the counts are exact with threads: every counter is read and written back with the GIL
# held, and no Python code runs between the read and the write, so no other thread can
# increment the same counter in between.  ``lookup`` holds the GIL throughout.  ``lookup_many``
# classifies without it; each row's rank waits in the call's own output buffer, and the batch
# adds them to the counters only once it holds the GIL again (``ranks_to_ids``), and only
# when the whole batch was accepted, so a refused batch counts nothing.  Relaxed atomic adds
# would let the batch count without the GIL, but on x86 each is a locked instruction that
# waits for the stores before it, which the batch's prefetching pipeline cannot afford; the
# GIL-held pass is one increment per row on a counter prefetched in advance.  This module
# does not declare free-threading support, so a free-threaded CPython turns the GIL on when
# it imports it, and the argument holds there too.
#
# ``lookups`` (every lookup answered, counted or not per rule) is one more counter on the
# Matcher itself, added to with the GIL held as well: one increment per ``lookup``, one
# addition per accepted batch, so that it costs nothing worth switching off.


cdef inline uint32_t hit_slot(uint32_t rank) noexcept nogil:
    """The counter of ``rank``'s win: ``rank + 1``, and 0 for NONE (the default profile)."""
    return <uint32_t>(rank + 1)


cdef uint64_t* new_hit_counts(uint32_t n_rules) except NULL:
    """Zeroed counters for ``n_rules`` rules and the default (a new matcher starts at zero)."""
    cdef uint64_t* hits = <uint64_t*>calloc(<size_t>n_rules + 1, sizeof(uint64_t))
    if hits == NULL:
        raise MemoryError()
    return hits


cdef dict hit_counts(const Core* c, const uint64_t* hits, uint32_t first, uint32_t last):
    """``Matcher.hits(start, stop)``: 0 -> the default profile's count, then rule id -> lookups
    won for the ranks ``first`` to ``last`` (excluded), in their order."""
    cdef uint32_t rank
    counts = {0: hits[0]}
    for rank in range(first, last):
        counts[c.id_of_rank[rank]] = hits[hit_slot(rank)]
    return counts


cdef inline bint outranks(const Core* c, const uint64_t* hits, uint32_t a, uint32_t b) noexcept nogil:
    """Whether rank ``a`` comes before rank ``b`` in ``top_hits``: more hits, or as many and a lower id."""
    cdef uint64_t ha = hits[hit_slot(a)], hb = hits[hit_slot(b)]
    return ha > hb or (ha == hb and c.id_of_rank[a] < c.id_of_rank[b])


cdef list top_hit_counts(const Core* c, const uint64_t* hits, Py_ssize_t n):
    """``Matcher.top_hits(n)``: the at most ``n`` rules with hits, most first, as (id, count).

    One pass over the counters with a heap of ``n`` ranks in C whose root is the weakest
    kept (the rule a better one replaces), then Python objects for those ``n`` only: a
    million rules cost a scan of their counters, not a million-entry dict.  The GIL is
    held throughout, so the counts are one moment's (no lookup counts in between)."""
    cdef uint32_t rank, held
    cdef Py_ssize_t size = 0, at, child
    cdef uint32_t* heap
    if n > c.n_rules:
        n = c.n_rules
    if n <= 0:
        return []
    heap = <uint32_t*>malloc(<size_t>n * sizeof(uint32_t))
    if heap == NULL:
        raise MemoryError()
    try:
        for rank in range(c.n_rules):
            if hits[hit_slot(rank)] == 0:
                continue
            if size < n:  # room left: sift the new rank up towards the root
                at = size
                size += 1
                while at > 0 and outranks(c, hits, heap[(at - 1) // 2], rank):
                    heap[at] = heap[(at - 1) // 2]
                    at = (at - 1) // 2
                heap[at] = rank
            elif outranks(c, hits, rank, heap[0]):  # better than the weakest kept: it takes the root
                at = 0
                while True:
                    child = 2 * at + 1
                    if child >= size:
                        break
                    if child + 1 < size and outranks(c, hits, heap[child], heap[child + 1]):
                        child += 1  # the weaker of the two children
                    if not outranks(c, hits, rank, heap[child]):
                        break
                    heap[at] = heap[child]
                    at = child
                heap[at] = rank
        top = [(c.id_of_rank[heap[at]], hits[hit_slot(heap[at])]) for at in range(size)]
    finally:
        free(heap)
    top.sort(key=lambda entry: (-entry[1], entry[0]))
    return top
