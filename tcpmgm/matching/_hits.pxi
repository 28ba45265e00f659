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


cdef inline uint32_t hit_slot(uint32_t rank) noexcept nogil:
    """The counter of ``rank``'s win: ``rank + 1``, and 0 for NONE (the default profile)."""
    return <uint32_t>(rank + 1)


cdef uint64_t* new_hit_counts(uint32_t n_rules) except NULL:
    """Zeroed counters for ``n_rules`` rules and the default (a new matcher starts at zero)."""
    cdef uint64_t* hits = <uint64_t*>calloc(<size_t>n_rules + 1, sizeof(uint64_t))
    if hits == NULL:
        raise MemoryError()
    return hits


cdef dict hit_counts(const Core* c, const uint64_t* hits):
    """``Matcher.hits()``: rule id -> lookups won, every rule, 0 for the default profile."""
    cdef uint32_t rank
    counts = {0: hits[0]}
    for rank in range(c.n_rules):
        counts[c.id_of_rank[rank]] = hits[hit_slot(rank)]
    return counts
