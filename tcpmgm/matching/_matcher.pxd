# What the compiled matcher shares with other compiled modules: reading a lookup's arguments
# exactly as Matcher.lookup does (the benchmarks' linear scan), and RuleRecords, the build's
# input, which the compiled row reader (tcpmgm/sql/_rows.pyx) fills without a Python object per
# rule (docs/architecture.md#rule-records).

from libc.stdint cimport int64_t, uint32_t, uint64_t

from tcpmgm.matching._layout cimport Core, ProfileRec, Query, RuleIn

cdef int parse_query(Query* q, object proto, object remote_ip, object remote_port,
                     object local_ip, object local_port, const Core* warm) except -1


cdef class RuleRecords:
    # The rules as given (RuleIn, 64 bytes each), in order of append.
    cdef RuleIn* recs
    cdef uint32_t n_recs, cap_recs
    # The distinct profiles; profile_slots: open-addressing hash of their indices (NONE: empty).
    cdef ProfileRec* profiles
    cdef uint32_t n_profiles, cap_profiles
    cdef uint32_t* profile_slots
    cdef uint64_t profile_mask
    # The ids appended: open-addressing hash set of the ids themselves (0, below every id: empty),
    # made at the first has_id (NULL until then).
    cdef int64_t* id_slots
    cdef uint64_t id_mask
    # The strings (tags, attrs text): few distinct ones, kept as Python str.
    cdef list strings
    cdef dict string_index
    # append(rule)'s memo: the last attrs mapping seen and its string index.
    cdef object attrs_seen
    cdef uint32_t attrs_seen_index

    cdef int append_checked(self, const RuleIn* rule, const ProfileRec* profile) except -1
        # rule.profile is ignored on input (the records intern the profile: equal ProfileRec -> same index)
    cdef uint32_t intern(self, str text) except? 0xFFFFFFFF     # a string's index (tags, attrs text)
    cdef bint has_id(self, int64_t rule_id) noexcept
