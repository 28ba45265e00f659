# The compiled matcher's data layout: its constants and structs (cimported by the parts of
# _matcher.pyx and by the benchmarks' linear scan).
#
# Records
#     A build reads the rules as ``RuleIn`` records (``RuleRecords``, _records.pxi), each with
#     its profile as an index into a table of distinct ``ProfileRec``s and its tag as an index
#     into a table of strings.  A built matcher keeps the same: ``RuleRec`` per rank, the
#     profiles, the strings, and makes Rule and Profile objects only when asked
#     (docs/architecture.md#rule-records).
#
# Rank
#     The rules are sorted once by :meth:`tcpmgm.Rule.key` (the one definition of the key,
#     docs/behaviour.md#which-rule-wins), packed from each RuleIn's fields as ``Rule.order``
#     packs them (the levels read from model/key.py, _build.pxi) into two C integers (which the
#     ranges of ``tcpmgm.limits``, docs/behaviour.md#a-rule, guarantee; a rule outside them is
#     refused by name).  Each rule
#     gets its position, its *rank*: "smallest key among the matching rules" is then "smallest
#     rank among the matching rules".  Every structure below stores ranks, every comparison is
#     one integer compare, and nothing here re-derives the key.  ``NONE`` is "no rule".
#
# The structures, all plain C arrays in one ``Core`` owned by the ``Matcher``:
#
#     rule set     The rules sharing one remote prefix (or all rules whose remote is "any"),
#                  split into *groups* by which of proto / remote port / local address (and
#                  its prefix length) / local port are exact rather than "any": the tuple
#                  spaces of tuple space search (Srinivasan, Suri and Varghese, "Packet
#                  classification using tuple space search", SIGCOMM 1999) as Open vSwitch's
#                  classifier uses them (Pfaff et al., "The design and implementation of Open
#                  vSwitch", NSDI 2015), one tuple space per rule set.
#     group        One exact key (the common case) is stored inline (``G_INLINE``); otherwise
#                  the group's keys live in ``table``, one open-addressing hash for the whole
#                  matcher, keyed by (group index, proto, remote port, local prefix id, local
#                  port) -> smallest rank with that key.  Rules of a proto-exact group also
#                  get an entry under the proto ``ANY_PROTO_KEY`` (smallest rank over their
#                  protocols) for lookups whose protocol is "any".
#     local ids    Every distinct local prefix gets an id (hash ``ltable``); a group filtering
#                  on a local prefix of length L masks the connection's local address to L and
#                  asks ``ltable`` for the id: one probe instead of a scan.
#     trie         Per family one binary path-compressed trie (PATRICIA: Morrison, JACM 1968)
#                  over the remote prefixes; an address is a 128-bit key ``hi:lo`` with IPv4 in
#                  the top 32 bits.  A node exists for each rule prefix and each branching
#                  point; ``own_best`` is the best rank of its own rule set, ``sub_best`` the
#                  best rank anywhere in its subtree.
#     first stride Per family a direct table of 2**B slots indexed by the top B address bits,
#                  as DIR-24-8 does (Gupta, Lin and McKeown, INFOCOM 1998; DPDK's rte_lpm), B
#                  (``slot_bits``) from 16 to 22, about two slots per remote prefix of the
#                  family: the trie below a slot then holds one prefix or so, and a lookup at
#                  a million rules reads one or two nodes instead of five or six.  A slot holds
#                  (a) the rule-bearing prefixes shorter than /B that cover it, as a chain of
#                  ``ShortPrefix`` records in ``pool`` sorted by ``own_best``, each a copy of
#                  what the lookup needs from the node and, when that is one key, of its first
#                  group (one sequential read instead of a node miss and a group miss each),
#                  and (b) ``start``, the topmost trie node of length >= B under it, where the
#                  descent starts.
#
# Invariants (established by the build, relied on by the lookup):
#     - nothing changes after the build, so lookups from many threads need no lock;
#     - a group's ``best`` is its smallest rank; a rule set's groups are contiguous and sorted by
#       ``best``, so its first group's ``best`` is the set's ``own_best``;
#     - ``sub_best`` <= ``own_best`` and <= every child's ``sub_best``;
#     - a child is longer than its parent (a descent ends within 129 steps; an opened image is
#       refused otherwise) and stored after it: the nodes are in depth-first preorder
#       (``store_preorder``, _build_trie.pxi), IPv4's trie first, so a node's first child is the
#       next node and a path's nodes lie near each other.  The lookup needs only the first of
#       these; the order makes open's check of each child's length read nearby memory instead of
#       a random place in the nodes (docs/architecture.md#opening-and-why-each-check);
#     - a slot's chain is sorted by ``own_best``, its last record flagged with ``LAST_SHORT``;
#     - a hash key maps to the smallest rank with that key (ranks are inserted ascending, the
#       first insert wins); the table is at most half full, so a probe ends at an empty slot;
#     - every rule's protocol code is below ``MAX_PROTO_CODE``, so the markers ``ANY_PROTO_KEY``
#       and ``NO_SHORT_KEY`` never collide with a rule's protocol; local id 0 is "no local prefix";
#     - all N_SECTIONS arrays end up in one block (``arena``), in 2 MB pages where Linux offers
#       them, laid out as the image's body (docs/architecture.md#the-image): in section order
#       (``image_sections``, _build.pxi), each at a multiple of 64 bytes, every gap and padding
#       byte zero, so that the same rules give the same bytes; an opened image maps the same
#       layout (``map``) and the same lookup reads it;
#     - the struct sizes are checked at compile time (``check_layout``): they decide how many
#       records share a 64-byte cache line, and they are the image's format.
#
# The lookup (``classify`` in _lookup.pxi) and why it answers docs/behaviour.md#which-rule-wins
# exactly are described there.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from *:
    """
    #define TCPMGM_NONE 0xFFFFFFFFu
    #define TCPMGM_NO_SLOT 0xFFFFFFFFFFFFFFFFull
    /* A struct of the layout changed size: see the sizes in _layout.pxd, check_layout. */
    #define TCPMGM_CHECK_LAYOUT(condition) _Static_assert(condition, "tcpmgm: a struct of _layout.pxd changed size")
    """
    const uint32_t NONE "TCPMGM_NONE"      # "no rule" as a rank, "no node" as an index
    const uint64_t NO_SLOT "TCPMGM_NO_SLOT"  # "hash slot not computed yet"
    void static_check "TCPMGM_CHECK_LAYOUT"(bint condition) noexcept nogil

cdef enum:
    ANY_PROTO_KEY = 0xFFFF    # the proto of the hash entries serving lookups whose protocol is "any"
    NO_SHORT_KEY = 0xFFFF     # ShortPrefix.proto: the record carries no key, probe its groups
    MAX_PROTO_CODE = 0xFFFF   # a rule's protocol code is below this (both markers above are not)
    MIN_SLOT_BITS = 16        # the first stride's range
    MAX_SLOT_BITS = 22
    G_PROTO = 1               # group mask bits: which fields are exact
    G_RPORT = 2
    G_LPORT = 4
    G_LOCAL = 8
    G_INLINE = 16             # the group's single key is stored in the group
    LAST_SHORT = 0x8000       # ShortPrefix.group_cnt: the last record of its chain
    N_PROFILE_INTS = 11       # a profile's integers: PROFILE_FIELDS without "attrs" (checked at import)
    N_SECTIONS = 18           # the arrays of a Core, in image order (image_sections in _build.pxi)
    HAS_INDEX = 1             # Core.flags: sections 0..7 (the lookup index) are filled


ctypedef struct Node:         # 40 bytes
    uint64_t hi, lo           # prefix, masked to plen
    uint32_t child[2]
    uint32_t own_best
    uint32_t sub_best
    uint32_t group_off
    uint16_t group_cnt
    uint8_t plen
    uint8_t family

ctypedef struct Group:        # 20 bytes
    uint32_t best
    uint16_t mask             # G_* bits
    uint16_t lslot            # which local (family, length) when G_LOCAL
    uint32_t local_id         # the inline key (G_INLINE) ...
    uint16_t proto, rport, lport, pad

ctypedef struct Entry:        # 24 bytes
    uint64_t a                # group index | proto << 32 | remote port << 48
    uint32_t local_id
    uint32_t lport
    uint32_t rank             # NONE: empty slot

ctypedef struct LocalEntry:   # 24 bytes
    uint64_t hi, lo
    uint32_t fp               # family << 8 | plen; 0: empty slot
    uint32_t id

ctypedef struct Prefix:       # a prefix of the 128-bit key (a local prefix, a local slot's shape)
    uint64_t hi, lo
    uint8_t family, plen

ctypedef struct Slot:         # 8 bytes: eight per cache line
    uint32_t chain            # its first ShortPrefix in pool, or NONE
    uint32_t start            # topmost node of length >= slot_bits, or NONE

ctypedef struct ShortPrefix:  # 16 bytes, four per cache line: a prefix shorter than the stride
    uint32_t own_best
    uint32_t group_off        # its groups
    uint16_t group_cnt        # | LAST_SHORT on the chain's last record
    uint16_t proto            # its first group's key when that is a single key without a
    uint16_t rport, lport     # local address (0: any), so that no group read is needed;
                              # else proto = NO_SHORT_KEY

ctypedef struct RuleRec:      # 48 bytes, per rank: what explain, get and iteration read (the image's RULES)
    uint64_t rhi, rlo         # remote prefix (key form), 0 when rfam == 0
    uint32_t node             # remote prefix node, NONE for any (and in an image without HAS_INDEX)
    uint32_t local_id         # 0 for any; else its lprefixes entry
    int32_t priority
    uint32_t profile          # index in Core.profiles
    uint32_t tag              # local_tag: string index, NONE for none
    uint16_t proto, rport, lport
    uint8_t rfam, rplen       # rfam 0: remote "any"
    uint32_t pad              # 0

ctypedef struct RuleIn:       # 64 bytes: one validated rule as given, the build's input (RuleRecords)
    int64_t id
    uint64_t rhi, rlo         # remote prefix, masked, as the lookup's 128-bit key
    uint64_t lhi, llo         # local prefix, same form
    int32_t priority
    uint32_t profile          # index into the records' profile table
    uint32_t tag              # local_tag: string index, NONE for no tag
    uint16_t proto            # protocol code (0: any)
    uint16_t rport, lport
    uint8_t rfam, rplen       # rfam 0: remote "any"; 4 or 6 else
    uint8_t lfam, lplen       # lfam 0: local "any"
    uint16_t pad              # 0

ctypedef struct ProfileRec:   # 48 bytes: a profile without its id
    int32_t value[N_PROFILE_INTS]   # PROFILE_FIELDS without "attrs", in that order (flags as 0/1)
    uint32_t attrs            # string index of format_attrs(profile.attrs), NONE for no attrs

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
    Prefix* lprefixes         # by local id (0 unused, all zero)
    uint32_t n_local
    Prefix* lslots            # (family, plen) per local slot
    uint32_t n_lslots
    uint32_t any_off, any_cnt, any_best
    RuleRec* rules            # by rank
    int64_t* id_of_rank
    int64_t* ids_sorted
    uint32_t* rank_of_sorted
    uint32_t n_rules
    int64_t max_id
    ProfileRec* profiles      # the distinct profiles (RuleRec.profile indexes them)
    uint32_t n_profiles
    uint32_t default_profile  # the matcher's default profile (id 0) in profiles
    uint32_t* string_offsets  # string k: string_bytes[string_offsets[k]:string_offsets[k + 1]], UTF-8
    char* string_bytes
    uint32_t n_strings
    uint32_t* protocols       # the string index of the name of protocol code k + 1, by k
    uint32_t n_protocols
    uint32_t* given           # the rank of the i-th rule given to the build
    uint32_t flags            # HAS_INDEX
    uint32_t schema_version   # 0: unknown
    size_t nbytes             # C memory owned, for Matcher.nbytes
    void* map                 # an opened image's mapping (NULL when built): free_core unmaps it
    size_t map_size
    void* arena               # a built matcher: ONE block holding the N_SECTIONS arrays, each
    size_t arena_size         # 64-aligned, in section order (the image body's layout)

ctypedef struct Query:        # one lookup's arguments, as the lookup reads them
    uint64_t rhi, rlo, lhi, llo
    int rfam, lfam            # 0: no address
    uint32_t proto            # 0: any
    uint32_t rport, lport
    uint32_t memo_lslot, memo_lid


cdef inline void check_layout() noexcept nogil:
    """Compile-time checks (C11 _Static_assert, as DPDK's rte_lpm.h checks its table entry)
    of the sizes that decide how many records share a cache line."""
    static_check(sizeof(Node) == 40)
    static_check(sizeof(Group) == 20)
    static_check(sizeof(Entry) == 24)
    static_check(sizeof(LocalEntry) == 24)
    static_check(sizeof(Slot) == 8)
    static_check(sizeof(ShortPrefix) == 16)
    static_check(sizeof(Prefix) == 24)
    static_check(sizeof(RuleRec) == 48)
    static_check(sizeof(RuleIn) == 64)
    static_check(sizeof(ProfileRec) == 48)
    static_check(ANY_PROTO_KEY >= MAX_PROTO_CODE)      # no rule's protocol is a marker
    static_check(NO_SHORT_KEY >= MAX_PROTO_CODE)
