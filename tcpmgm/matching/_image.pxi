# The compiled image (part of _matcher.pyx): a Core written to a file as it lies in memory, and a
# file mapped read-only as a Core (docs/architecture.md#the-image: the format and why each check).
#
# The file is a 512-byte ImageHeader, then the N_SECTIONS arrays of the Core (image_sections in
# _build.pxi, in that order), each at a multiple of 64 bytes, zero padding between them, and a
# size that is a multiple of 64.  ``save`` writes the header and the sections as they lie in
# memory; ``open`` maps the file read-only and shared (every process that opens it shares its
# pages) and points the Core at it, so the lookup code runs unchanged on a mapping.
#
# A mapping is trusted only once it is checked, each check before anything relies on what it
# guards: the header (magic, byte order, version, size), the sections' places and sizes against
# the header's counts, then in one pass over the file the checksum (sum64) and, chunk by chunk
# right after each chunk's sum while it is in cache, every index a lookup, explain, get or
# iteration follows in the large arrays, in C (checksum_and_check); then the small arrays
# (map_checked).  A wrong sum is reported before any other fault.  A file with a right checksum
# is not thereby one tcpmgm wrote: the structural checks are what keep a crafted file from
# sending a lookup out of its arrays or into an endless loop.  Only then does the Core point
# into the mapping.

from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.errno cimport errno
from posix.fcntl cimport O_CLOEXEC, O_NONBLOCK, O_RDONLY, open as c_open
from posix.mman cimport MAP_FAILED, MAP_SHARED, PROT_READ, madvise, mmap, munmap
from posix.stat cimport S_ISREG, fstat, struct_stat
from libc.string cimport memcmp
from posix.unistd cimport close as c_close

from tcpmgm.matching._layout cimport HAS_INDEX, N_SECTIONS, static_check

import functools
import os

from ..model.errors import ImageError
from ..model.profile import parse_attrs
from ..model.protocols import register_protocol
from ..model.rule import _INT_PROFILE_FIELDS
from .publish import publish

cdef extern from *:
    """
    #include <errno.h>
    #include <stddef.h>
    #include <stdint.h>
    #include <string.h>
    #include <unistd.h>
    #include <sys/mman.h>
    #ifndef MAP_POPULATE
    #define MAP_POPULATE 0
    #endif
    #ifndef MADV_RANDOM
    #define MADV_RANDOM 0
    #endif

    /* The image header (docs/architecture.md#the-image), 512 bytes, zero-padded. */
    typedef struct { uint64_t offset, size; } tcpmgm_image_section;
    typedef struct {
        char magic[8];
        uint32_t version, byte_order;
        uint64_t file_size, checksum;
        uint32_t flags, schema_version;
        uint32_t n_rules, n_nodes, n_pool, n_groups;
        uint32_t root[2];
        int32_t slot_bits[2];
        uint64_t hmask, n_entries, lmask;
        uint32_t n_local, n_lslots;
        uint32_t any_off, any_cnt, any_best;
        uint32_t n_profiles, n_strings, n_protocols;
        uint32_t default_profile, reserved0;
        int64_t max_id;
        tcpmgm_image_section sections[18];
        unsigned char padding[80];
    } tcpmgm_image_header;
    _Static_assert(sizeof(tcpmgm_image_header) == 512, "tcpmgm: the image header is 512 bytes");
    _Static_assert(offsetof(tcpmgm_image_header, checksum) == 24, "tcpmgm: the checksum is word 3");
    _Static_assert(offsetof(tcpmgm_image_header, sections) == 144, "tcpmgm: the sections follow max_id");

    /* sum64: four FNV-1a-style lanes over the file's 64-bit words, word i into lane i % 4, so that
       the four multiplications of a block run side by side (one lane's chain is a multiply's
       latency per word; four keep up with memory), then the lanes folded with the file size. */
    #define TCPMGM_SUM64_PRIME 0x100000001B3ULL
    #define TCPMGM_SUM64_BASIS 0xCBF29CE484222325ULL
    typedef struct { uint64_t h[4]; } tcpmgm_sum64;

    static void tcpmgm_sum64_start(tcpmgm_sum64* s) {
        for (int j = 0; j < 4; j++) s->h[j] = TCPMGM_SUM64_BASIS ^ (uint64_t)j;
    }

    /* ``n_blocks`` blocks of four words that start at a file offset that is a multiple of 32.
       Not inlined into open's pass (checksum_and_check), whose checks would take the registers
       the four lanes need; each word loaded on its own (memcpy of 8: one load, no copy). */
    __attribute__((noinline))
    static void tcpmgm_sum64_blocks(tcpmgm_sum64* s, const void* data, size_t n_blocks) {
        const unsigned char* p = (const unsigned char*)data;
        uint64_t h0 = s->h[0], h1 = s->h[1], h2 = s->h[2], h3 = s->h[3], w0, w1, w2, w3;
        for (size_t i = 0; i < n_blocks; i++, p += 32) {
            memcpy(&w0, p, 8);
            memcpy(&w1, p + 8, 8);
            memcpy(&w2, p + 16, 8);
            memcpy(&w3, p + 24, 8);
            h0 = (h0 ^ w0) * TCPMGM_SUM64_PRIME;
            h1 = (h1 ^ w1) * TCPMGM_SUM64_PRIME;
            h2 = (h2 ^ w2) * TCPMGM_SUM64_PRIME;
            h3 = (h3 ^ w3) * TCPMGM_SUM64_PRIME;
        }
        s->h[0] = h0; s->h[1] = h1; s->h[2] = h2; s->h[3] = h3;
    }

    /* ``size`` bytes at a multiple of 64, then the zero padding to the next multiple of 64. */
    static void tcpmgm_sum64_padded(tcpmgm_sum64* s, const void* data, size_t size) {
        unsigned char tail[64];
        size_t full = size / 32, padded = (size + 63) & ~(size_t)63;
        tcpmgm_sum64_blocks(s, data, full);
        if (padded > full * 32) {
            memset(tail, 0, sizeof tail);
            memcpy(tail, (const unsigned char*)data + full * 32, size - full * 32);
            tcpmgm_sum64_blocks(s, tail, (padded - full * 32) / 32);
        }
    }

    static uint64_t tcpmgm_sum64_end(const tcpmgm_sum64* s, uint64_t file_size) {
        uint64_t r = file_size;
        for (int j = 0; j < 4; j++) r = (r ^ s->h[j]) * TCPMGM_SUM64_PRIME;
        return r;
    }

    /* write(2) until all of it is written; 0, or -1 with errno. */
    static int tcpmgm_write_all(int fd, const void* data, size_t size) {
        const unsigned char* p = (const unsigned char*)data;
        while (size) {
            ssize_t n = write(fd, p, size < ((size_t)1 << 30) ? size : ((size_t)1 << 30));
            if (n < 0) {
                if (errno == EINTR) continue;
                return -1;
            }
            p += n;
            size -= (size_t)n;
        }
        return 0;
    }
    """
    ctypedef struct ImageSection "tcpmgm_image_section":
        uint64_t offset, size
    ctypedef struct ImageHeader "tcpmgm_image_header":
        char magic[8]
        uint32_t version, byte_order
        uint64_t file_size, checksum
        uint32_t flags, schema_version
        uint32_t n_rules, n_nodes, n_pool, n_groups
        uint32_t root[2]
        int32_t slot_bits[2]
        uint64_t hmask, n_entries, lmask
        uint32_t n_local, n_lslots
        uint32_t any_off, any_cnt, any_best
        uint32_t n_profiles, n_strings, n_protocols
        uint32_t default_profile, reserved0
        int64_t max_id
        ImageSection sections[N_SECTIONS]
    ctypedef struct Sum64 "tcpmgm_sum64":
        pass
    void sum64_start "tcpmgm_sum64_start"(Sum64* s) noexcept nogil
    void sum64_blocks "tcpmgm_sum64_blocks"(Sum64* s, const void* data, size_t n_blocks) noexcept nogil
    void sum64_padded "tcpmgm_sum64_padded"(Sum64* s, const void* data, size_t size) noexcept nogil
    uint64_t sum64_end "tcpmgm_sum64_end"(const Sum64* s, uint64_t file_size) noexcept nogil
    int write_all "tcpmgm_write_all"(int fd, const void* data, size_t size) noexcept nogil
    const int MAP_POPULATE
    const int MADV_RANDOM

cdef enum:
    IMAGE_VERSION = 1
    IMAGE_HEADER_SIZE = 512
    IMAGE_ALIGN = 64              # every section starts at a multiple of this: a cache line
    IMAGE_BYTE_ORDER = 0x01020304  # as the writer stored it: read back otherwise on a foreign machine
    IMAGE_BYTE_ORDER_SWAPPED = 0x04030201
    # The sections, in image order (image_sections in _build.pxi fills them in this order).
    S_NODES = 0
    S_GROUPS = 1
    S_TABLE = 2
    S_SLOTS4 = 3
    S_SLOTS6 = 4
    S_POOL = 5
    S_LTABLE = 6
    S_LSLOTS = 7
    S_ID_OF_RANK = 8
    S_RULES = 9
    S_LPREFIXES = 10
    S_IDS_SORTED = 11
    S_RANK_OF_SORTED = 12
    S_PROFILES = 13
    S_STRING_OFFSETS = 14
    S_STRING_BYTES = 15
    S_PROTOCOLS = 16
    S_GIVEN = 17
    N_INDEX_SECTIONS = 8          # sections 0..7: the lookup index, filled only with HAS_INDEX
    CHECK_CHUNK = 1 << 17         # bytes summed, then checked, at a time: well inside a core's L2

cdef bytes IMAGE_MAGIC = b"TCPMGMIM"
cdef uint64_t SIZE_FROM_OFFSETS = 0xFFFFFFFFFFFFFFFFULL   # STRING_BYTES: its size is the last offset
cdef tuple SECTION_NAMES = (
    "NODES", "GROUPS", "TABLE", "SLOTS4", "SLOTS6", "POOL", "LTABLE", "LSLOTS", "ID_OF_RANK", "RULES",
    "LPREFIXES", "IDS_SORTED", "RANK_OF_SORTED", "PROFILES", "STRING_OFFSETS", "STRING_BYTES", "PROTOCOLS",
    "GIVEN",
)
cdef str FOREIGN_ORDER = "written on a big-endian machine" if sys.byteorder == "little" else (
    "written on a little-endian machine")

# The largest value of each ProfileRec integer (the smallest is 0), as Rule.from_row bounds its column.
cdef int32_t PROFILE_INT_HIGHEST[N_PROFILE_INTS]
for _k, (_name, _highest) in enumerate(_INT_PROFILE_FIELDS):
    if _name != PROFILE_INT_NAMES[_k]:
        raise ImportError("tcpmgm.matching._matcher: the profile integers are not model/rule.py's")
    PROFILE_INT_HIGHEST[_k] = _highest

static_check(N_SECTIONS == 18)      # the header's sections[18] (C above)


cdef inline size_t aligned(size_t size) noexcept nogil:
    return (size + IMAGE_ALIGN - 1) & ~<size_t>(IMAGE_ALIGN - 1)


# -- writing -------------------------------------------------------------------------

cdef int fill_header(const Core* c, ImageHeader* h, const size_t* size) noexcept:
    """``h`` for ``c``: counts, and each non-empty section's place; checksum still 0."""
    cdef int k
    cdef uint64_t offset = IMAGE_HEADER_SIZE
    memset(h, 0, sizeof(ImageHeader))
    memcpy(h.magic, <const char*>IMAGE_MAGIC, 8)
    h.version = IMAGE_VERSION
    h.byte_order = IMAGE_BYTE_ORDER
    h.flags = c.flags
    h.schema_version = c.schema_version
    h.n_rules, h.n_nodes, h.n_pool, h.n_groups = c.n_rules, c.n_nodes, c.n_pool, c.n_groups
    h.root[0], h.root[1] = c.root[0], c.root[1]
    h.slot_bits[0], h.slot_bits[1] = c.slot_bits[0], c.slot_bits[1]
    h.hmask, h.n_entries, h.lmask = c.hmask, c.n_entries, c.lmask
    h.n_local, h.n_lslots = c.n_local, c.n_lslots
    h.any_off, h.any_cnt, h.any_best = c.any_off, c.any_cnt, c.any_best
    h.n_profiles, h.n_strings, h.n_protocols = c.n_profiles, c.n_strings, c.n_protocols
    h.default_profile = c.default_profile
    h.max_id = c.max_id
    for k in range(N_SECTIONS):
        if size[k]:
            h.sections[k].offset = offset
            h.sections[k].size = size[k]
            offset += aligned(size[k])
    h.file_size = offset
    return 0


cdef int write_image(const Core* c, int fd) except -1:
    """The image of ``c`` into ``fd`` (a new, empty file), checksum included."""
    cdef void** where[N_SECTIONS]
    cdef size_t size[N_SECTIONS]
    cdef ImageHeader h
    cdef Sum64 s
    cdef int k, failed = 0
    cdef char zeros[IMAGE_ALIGN]
    image_sections(<Core*>c, where, size)
    fill_header(c, &h, size)
    memset(zeros, 0, IMAGE_ALIGN)
    with nogil:
        sum64_start(&s)
        sum64_blocks(&s, &h, IMAGE_HEADER_SIZE // 32)
        for k in range(N_SECTIONS):
            if size[k]:
                sum64_padded(&s, where[k][0], size[k])
        h.checksum = sum64_end(&s, h.file_size)
        failed = write_all(fd, &h, IMAGE_HEADER_SIZE)
        for k in range(N_SECTIONS):
            if size[k] and not failed:
                failed = (write_all(fd, where[k][0], size[k])
                          or write_all(fd, zeros, aligned(size[k]) - size[k]))
    if failed:
        raise OSError(errno, os.strerror(errno))
    return 0


def _write_image_to(Matcher matcher, int fd):
    """publish's writer for ``Matcher.save``: the image into the new file ``fd``."""
    write_image(&matcher.c, fd)


cdef int save_image(Matcher matcher, object path) except -1:
    """``Matcher.save``: the image put in place atomically by ``publish`` (a temporary file
    beside ``path``, fsync'd, renamed over it: a process opening ``path`` gets the old image or
    the new one, never a part of one)."""
    publish(path, functools.partial(_write_image_to, matcher))
    return 0


# -- opening: the checks ----------------------------------------------------------------

ctypedef struct View:         # a mapped image while it is checked
    const ImageHeader* h
    const uint8_t* base
    const void* at[N_SECTIONS]    # each section's first byte, NULL when it is empty
    uint64_t size[N_SECTIONS]

ctypedef struct Fault:        # what a check found wrong (kind F_NONE: nothing), for FAULT_TEXT
    int kind
    int section
    int64_t index, a, b, c

ctypedef struct Pass:         # the records' checks run during the checksum (checksum_and_check)
    uint64_t done[N_SECTIONS]     # each streamed section's records checked so far
    uint64_t table_used           # TABLE's entries in use among them
    bint bad                      # a check failed: ``f`` says which (the rest are skipped)
    Fault f

cdef enum:
    F_NONE = 0
    F_RANK                    # an index that must be a rank or NONE
    F_STRING                  # an index that must be a string or NONE
    F_GROUPS                  # a range of groups beyond GROUPS
    F_SHAPE                   # a (family, length) that is no prefix
    F_NODE_CHILD
    F_NODE_CHILD_LENGTH
    F_GROUP_MASK
    F_GROUP_LSLOT
    F_GROUP_LOCAL
    F_GROUP_NO_TABLE
    F_TABLE_FULL
    F_TABLE_COUNT
    F_SLOT_CHAIN
    F_SLOT_START
    F_POOL_UNENDED
    F_LOCAL_ID
    F_ID_RANGE
    F_ID_RANK
    F_PROFILE_VALUE
    F_RULE_NODE
    F_RULE_PROFILE
    F_RULE_PROTO
    F_LPREFIX_ZERO
    F_HOST_BITS
    F_MAPPED
    F_IDS_UNSORTED
    F_IDS_MAX
    F_STRING_FIRST
    F_STRING_ORDER
    F_STRING_SPLIT

# Each fault's message; {section} and {index} say where, a, b, c (and end = a + b) what.
cdef dict FAULT_TEXT = {
    F_RANK: "{section}[{index}]: rank {a} is not a rule (n_rules {b})",
    F_STRING: "{section}[{index}]: string {a} is not one (n_strings {b})",
    F_GROUPS: "{section}[{index}]: groups {a}..{end} lie beyond the {c} of GROUPS",
    F_SHAPE: "{section}[{index}]: family {a}, length {b} is not a prefix",
    F_NODE_CHILD: "{section}[{index}]: child {a} is not a node (n_nodes {b})",
    F_NODE_CHILD_LENGTH: "{section}[{index}]: child {a} is /{b}, not longer than its parent's /{c}",
    F_GROUP_MASK: "{section}[{index}]: unknown mask bits {a:#x}",
    F_GROUP_LSLOT: "{section}[{index}]: local slot {a} is not one (n_lslots {b})",
    F_GROUP_LOCAL: "{section}[{index}]: local id {a} is not one (n_local {b})",
    F_GROUP_NO_TABLE: "{section}[{index}]: a hashed group, and TABLE is empty",
    F_TABLE_FULL: "{section}: no empty slot among its {a} (a probe would never end)",
    F_TABLE_COUNT: "{section}: {a} entries in use, the header says {b}",
    F_SLOT_CHAIN: "{section}[{index}]: chain {a} is not in POOL (n_pool {b})",
    F_SLOT_START: "{section}[{index}]: start {a} is not a node (n_nodes {b})",
    F_POOL_UNENDED: "{section}: its last record lacks LAST_SHORT (a chain would run past its end)",
    F_LOCAL_ID: "{section}[{index}]: local id {a} is not one (n_local {b})",
    F_ID_RANGE: "{section}[{index}]: id {a} is outside 1..max_id {b}",
    F_ID_RANK: "{section}[{index}]: rank {a} holds id {b}, IDS_SORTED[{index}] is {c}",
    F_PROFILE_VALUE: "{section}[{index}]: {field} is {a}, outside 0..{b}",
    F_RULE_NODE: "{section}[{index}]: node {a} is not a node (n_nodes {b})",
    F_RULE_PROFILE: "{section}[{index}]: profile {a} is not one (n_profiles {b})",
    F_RULE_PROTO: "{section}[{index}]: protocol code {a} is not in PROTOCOLS (n_protocols {b})",
    F_LPREFIX_ZERO: "{section}[0] (no local prefix) is not all zero",
    F_HOST_BITS: "{section}[{index}]: its prefix has bits set past its length {b}",
    F_MAPPED: "{section}[{index}]: an IPv4-mapped IPv6 prefix (a rule holds those as IPv4)",
    F_IDS_UNSORTED: "{section}[{index}]: id {a} does not follow {b} (the ids must be sorted and distinct)",
    F_IDS_MAX: "{section}: the largest id is {a}, max_id {b}",
    F_STRING_FIRST: "{section}[0] is {a}, not 0",
    F_STRING_ORDER: "{section}[{index}]: {a} is below the offset before it, {b}",
    F_STRING_SPLIT: "{section}[{index}]: offset {a} is inside a UTF-8 character",
}


# The checks are written without branches on the data (bitwise | and & instead of ``or`` and
# ``and``, a NONE folded into a comparison by unsigned wrap-around): the only branch in a loop is
# "is this record bad", which is never taken in a good file, so it costs nothing, while a branch
# on, say, whether a slot holds a chain is taken at random and mispredicted half of the time.

cdef inline bint is_index(uint32_t value, uint32_t n) noexcept nogil:
    """``value`` < ``n`` or NONE (n < NONE: check_counts): NONE + 1 wraps to 0."""
    return <uint32_t>(value + 1) <= n


cdef inline bint is_rank(uint32_t value, uint32_t n_rules) noexcept nogil:
    return is_index(value, n_rules)


cdef inline bint is_shape(uint32_t family, uint32_t plen) noexcept nogil:
    """A prefix's (family, length): IPv4 up to /32, IPv6 up to /128."""
    return ((family == 4) & (plen <= 32)) | ((family == 6) & (plen <= 128))


cdef inline bint is_masked(uint64_t hi, uint64_t lo, uint32_t plen) noexcept nogil:
    """No bit set past the length (for IPv4, in the key's top 32 bits, none below them either):
    a prefix as a rule holds it, which ``ipaddress`` takes back.  The length is clamped: the
    checks run branch-free, so this also runs for a length is_shape refuses (a shift by more
    than 64 bits would be undefined behaviour)."""
    cdef int length = plen if plen <= 128 else 128
    return ((hi & ~mask_hi(length)) == 0) & ((lo & ~mask_lo(length)) == 0)


cdef inline bint is_mapped(uint32_t family, uint64_t hi, uint64_t lo, uint32_t plen) noexcept nogil:
    """An IPv6 prefix inside ::ffff:0:0/96, which model/prefix.py's unmap_ipv6 makes IPv4."""
    return (family == 6) & (plen >= 96) & (hi == 0) & ((lo >> 32) == 0xFFFF)


cdef inline bint fault(Fault* f, int kind, int section, int64_t index, int64_t a, int64_t b,
                       int64_t c=0) noexcept nogil:
    f.kind, f.section, f.index, f.a, f.b, f.c = kind, section, index, a, b, c
    return True


cdef bint groups_fault(Fault* f, int section, int64_t index, uint32_t off, uint32_t cnt,
                       uint32_t n_groups) noexcept nogil:
    if off > n_groups or cnt > n_groups - off:
        return fault(f, F_GROUPS, section, index, off, cnt, n_groups)
    return False


cdef inline bint longer_child(const Node* nodes, uint32_t n_nodes, uint32_t i, uint32_t child) noexcept nogil:
    """Whether ``child`` (in range or NONE) is NONE or longer than node ``i``; reads a node
    either way (node ``i`` itself for NONE), so that no branch depends on it."""
    cdef uint32_t read = child if child < n_nodes else i
    return (child == NONE) | (nodes[read].plen > nodes[i].plen)


cdef bint check_nodes(const View* v, uint64_t first, uint64_t end, Fault* f) noexcept nogil:
    """Children in range and longer than their parent (so a descent ends within 129 steps),
    groups in range, bounds that are ranks.  A child's length is a read elsewhere in NODES: the
    build stores the nodes in preorder (store_preorder), so it is the next node or one a
    subtree further, near enough to be in cache."""
    cdef const Node* nodes = <const Node*>v.at[S_NODES]
    cdef const Node* n
    cdef uint32_t i, b, child, n_nodes = v.h.n_nodes, n_rules = v.h.n_rules, n_groups = v.h.n_groups
    for i in range(<uint32_t>first, <uint32_t>end):
        n = &nodes[i]
        if not (is_shape(n.family, n.plen) & is_index(n.child[0], n_nodes) & is_index(n.child[1], n_nodes)
                & (n.group_off <= n_groups) & (n.group_cnt <= n_groups - n.group_off)
                & is_rank(n.own_best, n_rules) & is_rank(n.sub_best, n_rules)
                & longer_child(nodes, n_nodes, i, n.child[0]) & longer_child(nodes, n_nodes, i, n.child[1])):
            # Which one: in the order the message names them.
            if not is_shape(n.family, n.plen):
                return fault(f, F_SHAPE, S_NODES, i, n.family, n.plen)
            for b in range(2):
                child = n.child[b]
                if not is_index(child, n_nodes):
                    return fault(f, F_NODE_CHILD, S_NODES, i, child, n_nodes)
                if not longer_child(nodes, n_nodes, i, child):
                    return fault(f, F_NODE_CHILD_LENGTH, S_NODES, i, child, nodes[child].plen, n.plen)
            if groups_fault(f, S_NODES, i, n.group_off, n.group_cnt, n_groups):
                return True
            return fault(f, F_RANK, S_NODES, i, n.own_best if not is_rank(n.own_best, n_rules) else n.sub_best,
                         n_rules)
    return False


cdef bint check_groups(const View* v, uint64_t first, uint64_t end, Fault* f) noexcept nogil:
    cdef const Group* groups = <const Group*>v.at[S_GROUPS]
    cdef const Group* g
    cdef uint32_t i
    cdef uint32_t known = G_PROTO | G_RPORT | G_LPORT | G_LOCAL | G_INLINE
    cdef bint no_table = v.size[S_TABLE] == 0
    for i in range(<uint32_t>first, <uint32_t>end):
        g = &groups[i]
        if (is_rank(g.best, v.h.n_rules) & ((g.mask & ~known) == 0) & (g.local_id <= v.h.n_local)
                & (((g.mask & G_LOCAL) == 0) | (g.lslot < v.h.n_lslots))
                & (((g.mask & G_INLINE) != 0) | (not no_table))):
            continue
        if not is_rank(g.best, v.h.n_rules):
            return fault(f, F_RANK, S_GROUPS, i, g.best, v.h.n_rules)
        if g.mask & ~known:
            return fault(f, F_GROUP_MASK, S_GROUPS, i, g.mask & ~known, 0)
        if g.mask & G_LOCAL and g.lslot >= v.h.n_lslots:
            return fault(f, F_GROUP_LSLOT, S_GROUPS, i, g.lslot, v.h.n_lslots)
        if g.local_id > v.h.n_local:
            return fault(f, F_GROUP_LOCAL, S_GROUPS, i, g.local_id, v.h.n_local)
        if not g.mask & G_INLINE and v.size[S_TABLE] == 0:
            return fault(f, F_GROUP_NO_TABLE, S_GROUPS, i, 0, 0)
    return False


cdef bint check_table(const View* v, uint64_t first, uint64_t end, uint64_t* used, Fault* f) noexcept nogil:
    """Ranks, counting the entries in use into ``used`` (for table_end)."""
    cdef const Entry* table = <const Entry*>v.at[S_TABLE]
    cdef uint64_t i, in_use = 0
    for i in range(first, end):
        if not is_rank(table[i].rank, v.h.n_rules):
            return fault(f, F_RANK, S_TABLE, i, table[i].rank, v.h.n_rules)
        in_use += table[i].rank != NONE
    used[0] += in_use
    return False


cdef bint table_end(const View* v, uint64_t used, Fault* f) noexcept nogil:
    """At least one empty slot (a probe walks until it meets one), as many in use as the header says."""
    cdef uint64_t size = v.size[S_TABLE] // sizeof(Entry)
    if size and used == size:
        return fault(f, F_TABLE_FULL, S_TABLE, 0, size, 0)
    if used != v.h.n_entries:
        return fault(f, F_TABLE_COUNT, S_TABLE, 0, used, v.h.n_entries)
    return False


cdef bint check_slots(const View* v, int section, uint64_t first, uint64_t end, Fault* f) noexcept nogil:
    cdef const Slot* slots = <const Slot*>v.at[section]
    cdef uint64_t i
    for i in range(first, end):
        if is_index(slots[i].chain, v.h.n_pool) & is_index(slots[i].start, v.h.n_nodes):
            continue
        if not is_index(slots[i].chain, v.h.n_pool):
            return fault(f, F_SLOT_CHAIN, section, i, slots[i].chain, v.h.n_pool)
        return fault(f, F_SLOT_START, section, i, slots[i].start, v.h.n_nodes)
    return False


cdef bint check_pool(const View* v, uint64_t first, uint64_t end, Fault* f) noexcept nogil:
    """Groups and ranks in range."""
    cdef const ShortPrefix* pool = <const ShortPrefix*>v.at[S_POOL]
    cdef uint32_t i
    for i in range(<uint32_t>first, <uint32_t>end):
        if groups_fault(f, S_POOL, i, pool[i].group_off, pool[i].group_cnt & ~LAST_SHORT, v.h.n_groups):
            return True
        if not is_rank(pool[i].own_best, v.h.n_rules):
            return fault(f, F_RANK, S_POOL, i, pool[i].own_best, v.h.n_rules)
    return False


cdef bint pool_end(const View* v, Fault* f) noexcept nogil:
    """The last record ends a chain, so no chain runs off the pool."""
    cdef const ShortPrefix* pool = <const ShortPrefix*>v.at[S_POOL]
    if v.h.n_pool and not pool[v.h.n_pool - 1].group_cnt & LAST_SHORT:
        return fault(f, F_POOL_UNENDED, S_POOL, 0, 0, 0)
    return False


cdef bint check_ltable(const View* v, Fault* f) noexcept nogil:
    cdef const LocalEntry* ltable = <const LocalEntry*>v.at[S_LTABLE]
    cdef uint64_t i, size = v.size[S_LTABLE] // sizeof(LocalEntry), used = 0
    for i in range(size):
        # A slot in use holds an id in 1..n_local (id - 1 wraps for 0).
        if (ltable[i].fp != 0) & (<uint32_t>(ltable[i].id - 1) >= v.h.n_local):
            return fault(f, F_LOCAL_ID, S_LTABLE, i, ltable[i].id, v.h.n_local)
        used += ltable[i].fp != 0
    if used == size:
        return fault(f, F_TABLE_FULL, S_LTABLE, 0, size, 0)
    return False


cdef bint check_prefixes(const View* v, int section, uint32_t first, uint32_t count, bint as_rules,
                        Fault* f) noexcept nogil:
    """Each a (family, length) a mask can take; ``as_rules``: also one a rule holds (its
    ``local``: masked, not IPv4-mapped)."""
    cdef const Prefix* prefixes = <const Prefix*>v.at[section]
    cdef const Prefix* p
    cdef uint32_t i
    for i in range(first, first + count):
        p = &prefixes[i]
        if not is_shape(p.family, p.plen):
            return fault(f, F_SHAPE, section, i, p.family, p.plen)
        if as_rules and not is_masked(p.hi, p.lo, p.plen):
            return fault(f, F_HOST_BITS, section, i, p.family, p.plen)
        if as_rules and is_mapped(p.family, p.hi, p.lo, p.plen):
            return fault(f, F_MAPPED, section, i, 0, 0)
    return False


cdef bint check_rules(const View* v, uint64_t first, uint64_t end, Fault* f) noexcept nogil:
    cdef const RuleRec* rules = <const RuleRec*>v.at[S_RULES]
    cdef const RuleRec* r
    cdef uint32_t i
    cdef bint indexed = v.h.flags & HAS_INDEX
    for i in range(<uint32_t>first, <uint32_t>end):
        r = &rules[i]
        if (((not indexed) | is_index(r.node, v.h.n_nodes)) & (r.local_id <= v.h.n_local)
                & (r.profile < v.h.n_profiles) & is_index(r.tag, v.h.n_strings) & (r.proto <= v.h.n_protocols)
                & (is_shape(r.rfam, r.rplen) | ((r.rfam == 0) & (r.rplen == 0)))
                & is_masked(r.rhi, r.rlo, r.rplen) & (not is_mapped(r.rfam, r.rhi, r.rlo, r.rplen))):
            continue
        if indexed and not is_index(r.node, v.h.n_nodes):
            return fault(f, F_RULE_NODE, S_RULES, i, r.node, v.h.n_nodes)
        if r.local_id > v.h.n_local:
            return fault(f, F_LOCAL_ID, S_RULES, i, r.local_id, v.h.n_local)
        if r.profile >= v.h.n_profiles:
            return fault(f, F_RULE_PROFILE, S_RULES, i, r.profile, v.h.n_profiles)
        if not is_index(r.tag, v.h.n_strings):
            return fault(f, F_STRING, S_RULES, i, r.tag, v.h.n_strings)
        if r.proto > v.h.n_protocols:
            return fault(f, F_RULE_PROTO, S_RULES, i, r.proto, v.h.n_protocols)
        if not (is_shape(r.rfam, r.rplen) | ((r.rfam == 0) & (r.rplen == 0))):
            return fault(f, F_SHAPE, S_RULES, i, r.rfam, r.rplen)
        if not is_masked(r.rhi, r.rlo, r.rplen):       # remote "any" included: 0, 0 /0
            return fault(f, F_HOST_BITS, S_RULES, i, r.rfam, r.rplen)
        return fault(f, F_MAPPED, S_RULES, i, 0, 0)
    return False


# The id index: ids sorted and distinct (get's binary search halves them), from 1 to max_id
# (lookup_many's id width), each at a rank that holds it, so that it is a one-to-one map of the
# rules' ids, ID_OF_RANK included: check_ids_sorted, check_id_ranks, ids_end.

cdef bint check_ids_sorted(const View* v, uint64_t first, uint64_t end, Fault* f) noexcept nogil:
    cdef const int64_t* ids = <const int64_t*>v.at[S_IDS_SORTED]
    cdef uint32_t i
    for i in range(<uint32_t>max(first, 1), <uint32_t>end):
        if ids[i] <= ids[i - 1]:
            return fault(f, F_IDS_UNSORTED, S_IDS_SORTED, i, ids[i], ids[i - 1])
    return False


cdef bint check_id_ranks(const View* v, uint64_t first, uint64_t end, Fault* f) noexcept nogil:
    cdef const int64_t* id_of_rank = <const int64_t*>v.at[S_ID_OF_RANK]
    cdef const int64_t* ids = <const int64_t*>v.at[S_IDS_SORTED]
    cdef const uint32_t* ranks = <const uint32_t*>v.at[S_RANK_OF_SORTED]
    cdef uint32_t i, n = v.h.n_rules
    for i in range(<uint32_t>first, <uint32_t>end):
        if ranks[i] >= n:
            return fault(f, F_RANK, S_RANK_OF_SORTED, i, ranks[i], n)
        if id_of_rank[ranks[i]] != ids[i]:
            return fault(f, F_ID_RANK, S_RANK_OF_SORTED, i, ranks[i], id_of_rank[ranks[i]], ids[i])
    return False


cdef bint ids_end(const View* v, Fault* f) noexcept nogil:
    cdef const int64_t* ids = <const int64_t*>v.at[S_IDS_SORTED]
    cdef uint32_t n = v.h.n_rules
    if n and ids[0] < 1:
        return fault(f, F_ID_RANGE, S_IDS_SORTED, 0, ids[0], v.h.max_id)
    if (ids[n - 1] if n else 0) != v.h.max_id:
        return fault(f, F_IDS_MAX, S_IDS_SORTED, 0, ids[n - 1] if n else 0, v.h.max_id)
    return False


cdef bint check_rank_list(const View* v, int section, uint64_t first, uint64_t end, Fault* f) noexcept nogil:
    cdef const uint32_t* ranks = <const uint32_t*>v.at[section]
    cdef uint32_t i
    for i in range(<uint32_t>first, <uint32_t>end):
        if ranks[i] >= v.h.n_rules:
            return fault(f, F_RANK, section, i, ranks[i], v.h.n_rules)
    return False


cdef bint check_profiles(const View* v, Fault* f) noexcept nogil:
    """Each value in the range Rule.from_row gives its column (a flag 0 or 1), attrs a string."""
    cdef const ProfileRec* profiles = <const ProfileRec*>v.at[S_PROFILES]
    cdef uint32_t i
    cdef int k
    for i in range(v.h.n_profiles):
        for k in range(N_PROFILE_INTS):
            if not 0 <= profiles[i].value[k] <= PROFILE_INT_HIGHEST[k]:
                return fault(f, F_PROFILE_VALUE, S_PROFILES, i, profiles[i].value[k], PROFILE_INT_HIGHEST[k], k)
        if profiles[i].attrs != NONE and profiles[i].attrs >= v.h.n_strings:
            return fault(f, F_STRING, S_PROFILES, i, profiles[i].attrs, v.h.n_strings)
    return False


cdef bint check_string_offsets(const View* v, Fault* f) noexcept nogil:
    """Offsets from 0, never falling (STRING_BYTES' size is the last one: checked with the sizes)."""
    cdef const uint32_t* offsets = <const uint32_t*>v.at[S_STRING_OFFSETS]
    cdef uint32_t k
    if offsets[0] != 0:
        return fault(f, F_STRING_FIRST, S_STRING_OFFSETS, 0, offsets[0], 0)
    for k in range(1, v.h.n_strings + 1):
        if offsets[k] < offsets[k - 1]:
            return fault(f, F_STRING_ORDER, S_STRING_OFFSETS, k, offsets[k], offsets[k - 1])
    return False


cdef bint check_string_starts(const View* v, Fault* f) noexcept nogil:
    """Every string starts at a character (STRING_BYTES, valid UTF-8 as a whole, is then valid
    UTF-8 string by string)."""
    cdef const uint32_t* offsets = <const uint32_t*>v.at[S_STRING_OFFSETS]
    cdef const uint8_t* text = <const uint8_t*>v.at[S_STRING_BYTES]
    cdef uint32_t k
    for k in range(v.h.n_strings):
        if offsets[k] < offsets[k + 1] and text[offsets[k]] & 0xC0 == 0x80:
            return fault(f, F_STRING_SPLIT, S_STRING_OFFSETS, k, offsets[k], 0)
    return False


cdef bint check_protocol_names(const View* v, Fault* f) noexcept nogil:
    cdef const uint32_t* names = <const uint32_t*>v.at[S_PROTOCOLS]
    cdef uint32_t k
    for k in range(v.h.n_protocols):
        if names[k] >= v.h.n_strings:
            return fault(f, F_STRING, S_PROTOCOLS, k, names[k], v.h.n_strings)
    return False


cdef int refuse(object path, str reason) except -1:
    raise ImageError(f"image {path}: {reason}")


cdef inline size_t streamed_record(int section) noexcept nogil:
    """The record size of a section checked during the checksum (check_streamed), else 0: the
    large arrays; the small ones are checked after it (check_rest)."""
    if section == S_NODES:
        return sizeof(Node)
    if section == S_GROUPS:
        return sizeof(Group)
    if section == S_TABLE:
        return sizeof(Entry)
    if section == S_SLOTS4 or section == S_SLOTS6:
        return sizeof(Slot)
    if section == S_POOL:
        return sizeof(ShortPrefix)
    if section == S_RULES:
        return sizeof(RuleRec)
    if section == S_IDS_SORTED:
        return sizeof(int64_t)
    if section == S_RANK_OF_SORTED or section == S_GIVEN:
        return sizeof(uint32_t)
    return 0


cdef bint check_streamed(const View* v, int section, uint64_t first, uint64_t end, Pass* p) noexcept nogil:
    """Records ``first`` to ``end`` of a streamed section."""
    if section == S_NODES:
        return check_nodes(v, first, end, &p.f)
    if section == S_GROUPS:
        return check_groups(v, first, end, &p.f)
    if section == S_TABLE:
        return check_table(v, first, end, &p.table_used, &p.f)
    if section == S_SLOTS4 or section == S_SLOTS6:
        return check_slots(v, section, first, end, &p.f)
    if section == S_POOL:
        return check_pool(v, first, end, &p.f)
    if section == S_RULES:
        return check_rules(v, first, end, &p.f)
    if section == S_IDS_SORTED:
        return check_ids_sorted(v, first, end, &p.f)
    if section == S_RANK_OF_SORTED:
        return check_id_ranks(v, first, end, &p.f)
    return check_rank_list(v, S_GIVEN, first, end, &p.f)


cdef void check_through(const View* v, uint64_t checked, Pass* p) noexcept nogil:
    """Check the streamed sections' records not checked yet that lie wholly in the file's first
    ``checked`` bytes (any placement check_sections let through, overlapping ones included)."""
    cdef int k
    cdef uint64_t offset, ready
    cdef size_t record
    for k in range(N_SECTIONS):
        record = streamed_record(k)
        if p.bad or record == 0 or v.size[k] == 0:
            continue
        offset = <const uint8_t*>v.at[k] - v.base
        if checked <= offset:
            continue
        ready = min(checked - offset, v.size[k]) // record
        if ready > p.done[k]:
            p.bad = check_streamed(v, k, p.done[k], ready, p)
            p.done[k] = ready


cdef uint64_t checksum_and_check(const View* v, uint64_t file_size, bint placed, Pass* p) noexcept nogil:
    """sum64 of the mapped image (``file_size``: a multiple of 64, at least the header), its
    checksum field read as 0; with ``placed`` (the sections checked), each chunk's records are
    checked right after its sum, while the chunk is still in cache: one pass over the file
    instead of two.  The first fault stops the checks, not the sum."""
    cdef Sum64 s
    cdef uint64_t first[4]
    cdef uint64_t at = 32, step
    memcpy(first, v.base, 32)
    first[3] = 0                  # the checksum: word 3
    sum64_start(&s)
    sum64_blocks(&s, first, 1)
    while at < file_size:
        step = min(<uint64_t>CHECK_CHUNK, file_size - at)
        sum64_blocks(&s, v.base + at, step // 32)
        at += step
        if placed:
            check_through(v, at, p)
    return sum64_end(&s, file_size)


cdef int check_header(const ImageHeader* h, uint64_t file_size, object path) except -1:
    """What the header says of the file (the checksum comes with the records: checksum_and_check)."""
    if memcmp(h.magic, <const char*>IMAGE_MAGIC, 8) != 0:
        refuse(path, "not a tcpmgm image")
    if h.byte_order != IMAGE_BYTE_ORDER:
        refuse(path, FOREIGN_ORDER if h.byte_order == IMAGE_BYTE_ORDER_SWAPPED
               else f"unknown byte order mark {h.byte_order:#010x}")
    if h.version != IMAGE_VERSION:
        refuse(path, f"format version {h.version}, this tcpmgm reads {IMAGE_VERSION}")
    if h.file_size > file_size:
        refuse(path, f"truncated: {file_size} of {h.file_size} bytes")
    if h.file_size < file_size:
        refuse(path, f"{file_size} bytes, but the header says {h.file_size}")
    if file_size % IMAGE_ALIGN:
        refuse(path, f"file size {file_size} is not a multiple of {IMAGE_ALIGN}")
    return 0


cdef int check_counts(const ImageHeader* h, uint64_t file_size, object path) except -1:
    """The header's counts and scalars on their own: in range, so that the section sizes they
    make cannot overflow."""
    cdef int f
    if h.flags & ~<uint32_t>HAS_INDEX:
        refuse(path, f"unknown flags {h.flags & ~<uint32_t>HAS_INDEX:#x}")
    for name, value in (("n_rules", h.n_rules), ("n_nodes", h.n_nodes), ("n_pool", h.n_pool),
                        ("n_groups", h.n_groups), ("n_local", h.n_local), ("n_lslots", h.n_lslots),
                        ("n_profiles", h.n_profiles), ("n_strings", h.n_strings)):
        if value >= NONE:
            refuse(path, f"{name} {value} is out of range")
    if h.n_protocols >= MAX_PROTO_CODE:
        refuse(path, f"n_protocols {h.n_protocols} is out of range (below {MAX_PROTO_CODE})")
    if h.default_profile >= h.n_profiles:
        refuse(path, f"default_profile {h.default_profile} is not a profile (n_profiles {h.n_profiles})")
    if h.max_id < 0:
        refuse(path, f"max_id {h.max_id} is negative")
    if not h.flags & HAS_INDEX:
        return 0
    for f in range(2):
        if h.slot_bits[f] != 0 and not MIN_SLOT_BITS <= h.slot_bits[f] <= MAX_SLOT_BITS:
            refuse(path, f"slot_bits[{f}] is {h.slot_bits[f]}, not 0 or {MIN_SLOT_BITS}..{MAX_SLOT_BITS}")
        if h.root[f] != NONE and h.root[f] >= h.n_nodes:
            refuse(path, f"root[{f}] is {h.root[f]}, not a node (n_nodes {h.n_nodes})")
    for name, mask in (("hmask", h.hmask), ("lmask", h.lmask)):
        if mask & (mask + 1) or mask >= file_size // sizeof(Entry):
            refuse(path, f"{name} {mask:#x} is not a power of two less one that fits the file")
    if h.any_off > h.n_groups or h.any_cnt > h.n_groups - h.any_off:
        refuse(path, f"the remote-any groups {h.any_off}..{h.any_off + h.any_cnt} lie beyond "
                     f"the {h.n_groups} of GROUPS")
    if not is_rank(h.any_best, h.n_rules):
        refuse(path, f"any_best {h.any_best} is not a rule (n_rules {h.n_rules})")
    return 0


cdef void expected_sizes(const ImageHeader* h, uint64_t* want) noexcept nogil:
    """The byte size each section must have by the header's counts (check_counts first), the
    Core's sizes in use (image_sections); STRING_BYTES: SIZE_FROM_OFFSETS."""
    cdef int f
    memset(want, 0, N_SECTIONS * sizeof(uint64_t))
    if h.flags & HAS_INDEX:
        want[S_NODES] = <uint64_t>h.n_nodes * sizeof(Node)
        want[S_GROUPS] = <uint64_t>h.n_groups * sizeof(Group)
        want[S_TABLE] = (h.hmask + 1) * sizeof(Entry) if h.hmask else 0     # hmask 0: no table
        for f in range(2):
            want[S_SLOTS4 + f] = sizeof(Slot) << h.slot_bits[f] if h.slot_bits[f] else 0
        want[S_POOL] = <uint64_t>h.n_pool * sizeof(ShortPrefix)
        want[S_LTABLE] = (h.lmask + 1) * sizeof(LocalEntry)
        want[S_LSLOTS] = <uint64_t>h.n_lslots * sizeof(Prefix)
    want[S_ID_OF_RANK] = <uint64_t>h.n_rules * sizeof(int64_t)
    want[S_RULES] = <uint64_t>h.n_rules * sizeof(RuleRec)
    want[S_LPREFIXES] = (<uint64_t>h.n_local + 1) * sizeof(Prefix)
    want[S_IDS_SORTED] = <uint64_t>h.n_rules * sizeof(int64_t)
    want[S_RANK_OF_SORTED] = <uint64_t>h.n_rules * sizeof(uint32_t)
    want[S_PROFILES] = <uint64_t>h.n_profiles * sizeof(ProfileRec)
    want[S_STRING_OFFSETS] = (<uint64_t>h.n_strings + 1) * sizeof(uint32_t)
    want[S_STRING_BYTES] = SIZE_FROM_OFFSETS
    want[S_PROTOCOLS] = <uint64_t>h.n_protocols * sizeof(uint32_t)
    want[S_GIVEN] = <uint64_t>h.n_rules * sizeof(uint32_t)


cdef int check_sections(View* v, uint64_t file_size, object path) except -1:
    """Each section inside the file, aligned, of the size the counts give; fills ``v``."""
    cdef uint64_t want[N_SECTIONS]
    cdef const ImageSection* s
    cdef Fault f
    cdef int k
    expected_sizes(v.h, want)
    for k in range(N_SECTIONS):
        s = &v.h.sections[k]
        name = SECTION_NAMES[k]
        if s.size == 0 and s.offset != 0:
            refuse(path, f"section {name}: empty, at offset {s.offset} (empty sections are at 0)")
        if s.size and (s.offset % IMAGE_ALIGN or s.offset < IMAGE_HEADER_SIZE or s.offset > file_size
                       or s.size > file_size - s.offset):
            refuse(path, f"section {name}: {s.size} bytes at offset {s.offset}, not a 64-aligned part of the body")
        if want[k] != SIZE_FROM_OFFSETS and s.size != want[k]:
            refuse(path, f"section {name}: {s.size} bytes, its count makes it {want[k]}")
        v.at[k] = v.base + s.offset if s.size else NULL
        v.size[k] = s.size
    if check_string_offsets(v, &f):
        refuse(path, described(&f))
    cdef uint32_t text_size = (<const uint32_t*>v.at[S_STRING_OFFSETS])[v.h.n_strings]
    if v.size[S_STRING_BYTES] != text_size:
        refuse(path, f"section STRING_BYTES: {v.size[S_STRING_BYTES]} bytes, STRING_OFFSETS make {text_size}")
    return 0


cdef str described(const Fault* f):
    return FAULT_TEXT[f.kind].format(
        section=SECTION_NAMES[f.section], index=f.index, a=f.a, b=f.b, c=f.c, end=(<object>f.a) + f.b,
        field=PROFILE_INT_NAMES[f.c] if f.kind == F_PROFILE_VALUE else None)


cdef int check_rest(const View* v, Pass* p, object path) except -1:
    """After the streamed records (checksum_and_check): the small arrays and what holds for a
    whole array, without the GIL."""
    cdef Fault* f = &p.f
    cdef bint bad
    cdef const Prefix* no_local = <const Prefix*>v.at[S_LPREFIXES]
    if no_local.family or no_local.plen or no_local.hi or no_local.lo:
        refuse(path, FAULT_TEXT[F_LPREFIX_ZERO].format(section="LPREFIXES"))
    with nogil:
        bad = (check_string_starts(v, f) or check_protocol_names(v, f) or check_profiles(v, f)
               or check_prefixes(v, S_LPREFIXES, 1, v.h.n_local, True, f) or ids_end(v, f))
        if not bad and v.h.flags & HAS_INDEX:
            bad = (table_end(v, p.table_used, f) or pool_end(v, f) or check_ltable(v, f)
                   or check_prefixes(v, S_LSLOTS, 0, v.h.n_lslots, False, f))
    if bad:
        refuse(path, described(f))
    return 0


cdef str image_string(const View* v, uint32_t k):
    cdef const uint32_t* offsets = <const uint32_t*>v.at[S_STRING_OFFSETS]
    return PyUnicode_DecodeUTF8(<const char*>v.at[S_STRING_BYTES] + offsets[k], offsets[k + 1] - offsets[k],
                                "strict")


cdef int check_text(const View* v, object path) except -1:
    """STRING_BYTES is UTF-8 (with check_string_starts: every string is)."""
    try:
        PyUnicode_DecodeUTF8(<const char*>v.at[S_STRING_BYTES], v.size[S_STRING_BYTES], "strict")
    except UnicodeDecodeError as exc:
        refuse(path, f"section STRING_BYTES: not UTF-8 ({exc.reason} at byte {exc.start})")
    return 0


cdef int check_attrs(const View* v, object path) except -1:
    """Each profile's attrs text names registered attributes in their ranges (parse_attrs, the
    model's one reading of it); once per distinct text."""
    cdef const ProfileRec* profiles = <const ProfileRec*>v.at[S_PROFILES]
    cdef uint32_t k
    seen = set()
    for k in range(v.h.n_profiles):
        if profiles[k].attrs == NONE or profiles[k].attrs in seen:
            continue
        seen.add(profiles[k].attrs)
        text = image_string(v, profiles[k].attrs)
        try:
            parse_attrs(text)
        except ValueError as exc:
            refuse(path, f"PROFILES[{k}]: attrs {text!r}: {exc}")
    return 0


cdef int check_protocols(const View* v, object path) except -1:
    """The image's protocol codes are this process's: each name has its code here, or is unknown
    here and registering it (in code order) gives that code; those are registered last."""
    cdef const uint32_t* names = <const uint32_t*>v.at[S_PROTOCOLS]
    cdef uint32_t k
    unknown = {}                  # name -> the code registering it will give
    following = len(protocols()) + 1
    for k in range(v.h.n_protocols):
        name = image_string(v, names[k])
        code = protocol_code(name)
        if code is None:
            code = unknown.get(name)
            if code is None:
                code = unknown[name] = following
                following += 1
        if code != k + 1:
            refuse(path, f"protocol {name!r} has code {k + 1} in the image, {code} here")
    for name, code in unknown.items():
        try:
            registered = register_protocol(name)
        except ValueError as exc:
            refuse(path, f"protocol {name!r} cannot be registered here: {exc}")
        if registered != code:    # another thread registered one in between
            refuse(path, f"protocol {name!r} has code {code} in the image, {registered} here")
    return 0


cdef int point_core(Core* c, const View* v) noexcept:
    """The Core of a checked image: its scalars from the header, its arrays in the mapping."""
    cdef const ImageHeader* h = v.h
    cdef void** where[N_SECTIONS]
    cdef size_t size[N_SECTIONS]
    cdef int k
    c.flags, c.schema_version = h.flags, h.schema_version
    c.n_rules, c.n_nodes, c.n_pool, c.n_groups = h.n_rules, h.n_nodes, h.n_pool, h.n_groups
    c.root[0], c.root[1] = h.root[0], h.root[1]
    c.slot_bits[0], c.slot_bits[1] = h.slot_bits[0], h.slot_bits[1]
    c.hmask, c.n_entries, c.lmask = h.hmask, h.n_entries, h.lmask
    c.n_local, c.n_lslots = h.n_local, h.n_lslots
    c.any_off, c.any_cnt, c.any_best = h.any_off, h.any_cnt, h.any_best
    c.n_profiles, c.n_strings, c.n_protocols = h.n_profiles, h.n_strings, h.n_protocols
    c.default_profile = h.default_profile
    c.max_id = h.max_id
    image_sections(c, where, size)
    for k in range(N_SECTIONS):
        where[k][0] = <void*>v.at[k]
    return 0


cdef int map_checked(Core* c, const uint8_t* base, uint64_t file_size, object path) except -1:
    cdef View v
    cdef Pass p
    cdef uint64_t checksum
    cdef bint placed
    memset(&v, 0, sizeof(View))
    memset(&p, 0, sizeof(Pass))
    v.base = base
    v.h = <const ImageHeader*>base
    check_header(v.h, file_size, path)
    # The counts and the sections read only the header and STRING_OFFSETS, each read checked,
    # so they can come before the checksum, which then runs with the records' checks; a file
    # that fails them or the records is still refused as corrupt first when its sum is wrong.
    placement_refused = None
    try:
        check_counts(v.h, file_size, path)
        check_sections(&v, file_size, path)
    except ImageError as exc:
        placement_refused = exc
    placed = placement_refused is None
    with nogil:
        checksum = checksum_and_check(&v, file_size, placed, &p)
    if checksum != v.h.checksum:
        refuse(path, f"corrupt: checksum {v.h.checksum:#018x}, the content sums to {checksum:#018x}")
    if placement_refused is not None:
        raise placement_refused
    if p.bad:
        refuse(path, described(&p.f))
    check_rest(&v, &p, path)
    check_text(&v, path)
    check_attrs(&v, path)
    check_protocols(&v, path)
    point_core(c, &v)
    return 0


cdef int map_image(Core* c, object path) except -1:
    """Map the image at ``path`` read-only and shared, check it (ImageError) and point
    ``c`` at it; ``c.map`` then holds the mapping, which free_core unmaps."""
    cdef bytes name = os.fsencode(path)
    cdef struct_stat st
    cdef void* p
    cdef int saved
    cdef uint64_t size
    # O_NONBLOCK: a FIFO at ``path`` must not block the open; it is refused below.
    cdef int fd = c_open(name, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
    if fd < 0:
        refuse(path, f"cannot read: {os.strerror(errno)}")
    if fstat(fd, &st) != 0:
        saved = errno
        c_close(fd)
        refuse(path, f"cannot read: {os.strerror(saved)}")
    if not S_ISREG(st.st_mode):
        c_close(fd)
        refuse(path, "cannot read: not a regular file")
    size = st.st_size
    if size < IMAGE_HEADER_SIZE:
        c_close(fd)
        refuse(path, f"truncated: {size} bytes, shorter than the {IMAGE_HEADER_SIZE}-byte header")
    # MAP_POPULATE: the checksum reads every page at once; the lookups then fault on none.
    p = mmap(NULL, size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0)
    saved = errno
    c_close(fd)                   # the mapping keeps the file
    if p == MAP_FAILED:
        refuse(path, f"cannot read: {os.strerror(saved)}")
    try:
        map_checked(c, <const uint8_t*>p, size, path)
    except BaseException:
        munmap(p, size)
        raise
    # Lookups read scattered records: a page evicted under memory pressure is read back alone.
    madvise(p, size, MADV_RANDOM)
    c.map = p
    c.map_size = size
    c.nbytes = size               # Matcher.nbytes: the mapping is this matcher's block (shared)
    return 0


# -- an image without the index --------------------------------------------------------

cdef uint32_t reinterned(RuleRecords records, const Core* c, uint32_t* memo, uint32_t k) except? NONE:
    """String ``k`` of the image in ``records``' own table (``memo``: those done)."""
    if k == NONE:
        return NONE
    if memo[k] == NONE:
        offsets = c.string_offsets
        memo[k] = records.intern(PyUnicode_DecodeUTF8(c.string_bytes + offsets[k], offsets[k + 1] - offsets[k],
                                                      "strict"))
    return memo[k]


cdef RuleRecords records_of_image(const Core* c):
    """The rules of an opened image, in the order given, as the RuleRecords a build reads: what
    Matcher.open builds the index from when the image has none (the pure twin writes those).
    Strings are interned as RuleRecords.append interns them (a rule's tag, then its profile's
    attrs), so the build numbers them as a build from the same rules does."""
    cdef RuleRecords records = RuleRecords()
    cdef RuleIn r
    cdef ProfileRec p
    cdef const RuleRec* rec
    cdef const Prefix* local
    cdef uint32_t i, rank
    cdef uint32_t* memo = <uint32_t*>malloc((<size_t>c.n_strings + 1) * sizeof(uint32_t))
    if memo == NULL:
        raise MemoryError()
    memset(memo, 0xFF, (<size_t>c.n_strings + 1) * sizeof(uint32_t))
    try:
        for i in range(c.n_rules):
            rank = c.given[i]
            rec = &c.rules[rank]
            local = &c.lprefixes[rec.local_id]
            memset(&r, 0, sizeof(RuleIn))
            r.id = c.id_of_rank[rank]
            r.rfam, r.rplen = rec.rfam, rec.rplen
            r.rhi, r.rlo = rec.rhi & mask_hi(rec.rplen), rec.rlo & mask_lo(rec.rplen)
            r.lfam, r.lplen = local.family, local.plen
            r.lhi, r.llo = local.hi & mask_hi(local.plen), local.lo & mask_lo(local.plen)
            r.priority, r.proto, r.rport, r.lport = rec.priority, rec.proto, rec.rport, rec.lport
            r.tag = reinterned(records, c, memo, rec.tag)
            p = c.profiles[rec.profile]
            p.attrs = reinterned(records, c, memo, p.attrs)
            records.append_checked(&r, &p)
    finally:
        free(memo)
    return records


# -- Matcher.save and Matcher.open -------------------------------------------------------

cdef object open_image(type cls, object path, bint count_hits):
    """``Matcher.open``: the image mapped and served, or, without the index, built from its
    records (its mapping then goes with the matcher that read it)."""
    target = os.fsdecode(os.fspath(path))
    cdef Matcher matcher = cls.__new__(cls)
    map_image(&matcher.c, target)
    cdef bint indexed = matcher.c.flags & HAS_INDEX
    matcher._serve(count_hits and indexed)     # without the index: only to make its default profile
    if not indexed:
        try:
            matcher = cls.from_records(records_of_image(&matcher.c), default=matcher._default,
                                       count_hits=count_hits, schema_version=matcher.c.schema_version or None)
        except ValueError as exc:          # RuleError included: records no build takes
            refuse(target, f"its records do not build a matcher: {exc}")
    matcher._image_path = target
    return matcher
