# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled classifier: docs/behaviour.md#which-rule-wins answered by a prefix trie and tuple-space hashing.

One extension module in parts (docs/architecture.md):

    _layout.pxd          the data layout, its invariants and the techniques it follows: read it first
    _bits.pxd            the 128-bit address key: masks, containment, hashing
    _predicate.pxd       "does a rule match a connection", shared with explain and the linear scan
    _build.pxi           rules into the layout: ranks, memory, the id index
    _build_trie.pxi      the trie and the first stride
    _build_groups.pxi    local prefix ids, groups and their hash
    _records.pxi         RuleRecords (the build's input) and Rule / Profile objects made from records
    _lookup.pxi          the lookup (no Python objects, no GIL) and why it is exact
    _query.pxi           a lookup's arguments into a Query (parse_query: shared, _matcher.pxd)
    _buffers.pxi         lookup_many's buffers and its batch pipeline
    _hits.pxi            the per-rule hit counts and why they are exact with threads
    _image.pxi           save and open: the Core as a file, a checked file mapped as a Core
    _matcher.pyx         this file: the Python API, the Matcher class
"""

from cpython.array cimport array, clone
from cpython.ref cimport PyObject
from libc.stdint cimport INT32_MAX, INT32_MIN, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset

from tcpmgm.matching._addr cimport is_ipv4_mapped, parse_into
from tcpmgm.matching._bits cimport (
    bit_at, clz64, covers, entry_hash, load_be32, load_be64, local_hash, mask_hi, mask_lo, mix, prefetch,
    set_address, split_prefix,
)
from tcpmgm.matching._layout cimport (
    ANY_PROTO_KEY, G_INLINE, G_LOCAL, G_LPORT, G_PROTO, G_RPORT, LAST_SHORT, MAX_PROTO_CODE, MAX_SLOT_BITS,
    HAS_INDEX, MIN_SLOT_BITS, N_PROFILE_INTS, N_SECTIONS, NO_SHORT_KEY, NO_SLOT, NONE, Core, Entry, Group, LocalEntry, Node, Prefix,
    ProfileRec, Query, RuleIn, RuleRec, ShortPrefix, Slot, check_layout,
)
from tcpmgm.matching._predicate cimport key_matches, rule_matches

import sys

from ..model import key
from ..model.errors import RuleError, shown
from ..model.limits import ID_MAX, ID_MIN, PORT_MAX, PRIORITY_MAX, PRIORITY_MIN, check_id, check_priority
from ..model.profile import Profile, default_profile
from ..model.protocols import protocol_code, protocols
from ..model.rule import Rule
from .arguments import check_top_hits_n, check_unique_ids, lookup_port, lookup_proto
from .explanation import explanation

cdef extern from "Python.h":
    dict PyObject_GenericGetDict(object, void*)
    long long PyLong_AsLongLongAndOverflow(object, int*) except? -1
    long PyLong_AsLongAndOverflow(object, int*)     # no exception when it overflows
    void Py_INCREF(object)
    void Py_XDECREF(PyObject*)

__all__ = ["Matcher", "RuleRecords"]

check_layout()      # compiles only if the struct sizes are the ones _layout.pxd states

include "_lookup.pxi"
include "_query.pxi"
include "_hits.pxi"
include "_buffers.pxi"
include "_build.pxi"
include "_build_trie.pxi"
include "_build_groups.pxi"
include "_records.pxi"
include "_image.pxi"


cdef class Matcher:
    """Compiled classifier: same API and answers as :class:`tcpmgm.ReferenceMatcher`.

    ``lookup`` and ``explain`` take the same arguments as the reference.
    ``lookup_many(protos, remote_ips, remote_ports=None, local_ips=None,
    local_ports=None)`` classifies a batch given as buffers (see its docstring)
    without the GIL.  Its rules are immutable once built; safe to share
    between threads, whose lookups all count in ``hits()`` unless built with
    ``count_hits=False``.

    It keeps its rules as C records (docs/architecture.md#rule-records): the
    Rule and Profile objects it hands out are made when first asked for.
    """

    cdef Core c
    cdef object _default
    cdef bint _built
    cdef str _id_typecode
    cdef uint64_t* _hits          # lookups won, by rank + 1 (_hits.pxi); NULL: not counting
    cdef uint64_t _lookups        # lookups answered, whether or not counted per rule (_hits.pxi)
    cdef PyObject** _profile_of_rank   # each rank's Profile once made (owned references), else NULL
    cdef list _texts              # string index -> its str once decoded, else None
    cdef list _attrs              # string index -> the attrs mapping of that text once made, else None
    cdef object _image_path       # the image this matcher was opened from (set by Matcher.open), else None

    def __cinit__(self):
        reset_core(&self.c)

    def __dealloc__(self):
        cdef bint large = self.c.n_rules >= GIVE_BACK_RULES
        self._forget_objects()
        free_core(&self.c)
        free(self._hits)
        if large:                                  # its per-rule arrays freed: back to the OS (_build.pxi)
            give_back_free_memory()

    def __init__(self, rules=(), *, default=None, count_hits=True):
        if self._built:
            raise TypeError("a Matcher is immutable; build a new one")
        self._build(rules if isinstance(rules, RuleRecords) else records_of(rules), default, count_hits, None)

    @classmethod
    def from_records(cls, RuleRecords records not None, *, default=None, count_hits=True, schema_version=None):
        """A matcher of ``records`` (the rules as given; ``as_given()`` gives them back in that
        order), built without a Rule object; ``schema_version``: that of the table they were read
        from, kept as ``schema_version`` (None: unknown)."""
        cdef Matcher matcher = cls.__new__(cls)
        matcher._build(records, default, count_hits, schema_version)
        return matcher

    cdef int _build(self, RuleRecords records, object default, bint count_hits, object schema_version) except -1:
        cdef uint32_t version = 0
        if schema_version is not None:
            if type(schema_version) is not int:
                raise TypeError(f"schema_version: expected int or None, got {type(schema_version).__name__}")
            if not 0 < schema_version < NONE:
                raise ValueError(f"schema_version: {shown(schema_version)} is not a schema version")
            version = schema_version
        self._default = (default if default is not None else default_profile()).replace(id=0)
        free_core(&self.c)                         # a half-built Core of an earlier failed call
        build_core(&self.c, records, self._default)
        if self.c.n_rules >= GIVE_BACK_RULES:      # the build's scratch, freed: back to the OS (_build.pxi)
            give_back_free_memory()
        self.c.schema_version = version
        self._serve(count_hits)
        return 0

    cdef int _serve(self, bint count_hits) except -1:
        """Ready a filled Core (built, or mapped by Matcher.open) for lookups: the hit counts
        and the caches of the objects made on demand; the default profile from the Core unless
        the build was given one."""
        cdef uint32_t n = self.c.n_rules
        self._forget_objects()
        self._id_typecode = "I" if self.c.max_id <= 0xFFFFFFFFU else "Q"
        self._texts = [None] * self.c.n_strings
        self._attrs = [None] * self.c.n_strings
        self._profile_of_rank = <PyObject**>calloc(<size_t>n + 1, sizeof(PyObject*))
        if self._profile_of_rank == NULL:
            raise MemoryError()
        if self._default is None:
            self._default = profile_object(&self.c.profiles[self.c.default_profile], 0,
                                           self._attrs_of(self.c.profiles[self.c.default_profile].attrs))
        free(self._hits)
        self._hits = new_hit_counts(n) if count_hits else NULL
        self._built = True
        return 0

    cdef void _forget_objects(self) noexcept:
        """Drop the cached profiles (their array is private to this matcher)."""
        cdef uint32_t rank
        if self._profile_of_rank != NULL:
            for rank in range(self.c.n_rules):
                Py_XDECREF(self._profile_of_rank[rank])
            free(self._profile_of_rank)
            self._profile_of_rank = NULL

    cdef uint32_t _rank_of_id(self, object rule_id) except? NONE:
        cdef int64_t want
        cdef uint32_t low = 0, high = self.c.n_rules, mid
        if type(rule_id) is not int or not 0 < rule_id < 2**63:
            return NONE
        want = rule_id
        while low < high:
            mid = (low + high) // 2
            if self.c.ids_sorted[mid] < want:
                low = mid + 1
            else:
                high = mid
        if low < self.c.n_rules and self.c.ids_sorted[low] == want:
            return self.c.rank_of_sorted[low]
        return NONE

    # -- objects made on demand (docs/architecture.md#rule-records) ---------------------------
    cdef object _text(self, uint32_t k):
        """String ``k`` of the Core as a str (decoded once)."""
        text = self._texts[k]
        if text is None:
            text = self._texts[k] = self.c.string_bytes[self.c.string_offsets[k]:self.c.string_offsets[k + 1]].decode()
        return text

    cdef object _attrs_of(self, uint32_t k):
        """The attrs mapping of string ``k`` (NONE: none), one per distinct text."""
        if k == NONE:
            return EMPTY_ATTRS
        attrs = self._attrs[k]
        if attrs is None:
            attrs = self._attrs[k] = attrs_of_text(self._text(k))
        return attrs

    cdef object _profile(self, uint32_t rank):
        """The Profile of rank ``rank``: made at first need, the same object ever after."""
        cdef PyObject* cached = self._profile_of_rank[rank]
        if cached != NULL:
            return <object>cached
        cdef const ProfileRec* rec = &self.c.profiles[self.c.rules[rank].profile]
        profile = profile_object(rec, self.c.id_of_rank[rank], self._attrs_of(rec.attrs))
        # Making it ran Python code, during which another thread may have made it first: keep
        # that one (no Python code runs between this check and the store).
        cached = self._profile_of_rank[rank]
        if cached != NULL:
            return <object>cached
        Py_INCREF(profile)
        self._profile_of_rank[rank] = <PyObject*>profile
        return profile

    cdef object _rule(self, uint32_t rank):
        """The Rule of rank ``rank``, made now (its profile is the cached one)."""
        cdef const RuleRec* r = &self.c.rules[rank]
        cdef const Prefix* local = &self.c.lprefixes[r.local_id]
        return rule_object(
            self.c.id_of_rank[rank],
            None if r.proto == 0 else self._text(self.c.protocols[r.proto - 1]),
            prefix_of(r.rfam, r.rplen, r.rhi, r.rlo), r.rport,
            prefix_of(local.family, local.plen, local.hi, local.lo), r.lport, r.priority,
            self._profile(rank), None if r.tag == NONE else self._text(r.tag))

    # -- container protocol --------------------------------------------------
    def __len__(self):
        return self.c.n_rules

    def __iter__(self):
        """The rules in key order (the order in which they are tried)."""
        cdef uint32_t rank
        for rank in range(self.c.n_rules):
            yield self._rule(rank)

    def as_given(self):
        """The rules in the order given to the build (a reload's: the database's)."""
        cdef uint32_t i
        for i in range(self.c.n_rules):
            yield self._rule(self.c.given[i])

    def __contains__(self, rule_id):
        return self._rank_of_id(rule_id) != NONE

    def get(self, rule_id, default=None):
        cdef uint32_t rank = self._rank_of_id(rule_id)
        return default if rank == NONE else self._rule(rank)

    @property
    def default(self):
        return self._default

    @property
    def schema_version(self):
        """The schema version of the table the rules came from (``from_records``), None: unknown."""
        return self.c.schema_version if self.c.schema_version else None

    @property
    def image_path(self):
        """The image file this matcher was opened from; None when it was built."""
        return self._image_path

    @property
    def nbytes(self):
        """Bytes of C memory this matcher holds: its block of arrays (the image's body), the hit
        counts and its array of cached profiles (not the Python objects made on demand)."""
        cdef size_t total = self.c.nbytes + (<size_t>self.c.n_rules + 1) * sizeof(PyObject*)
        if self._hits != NULL:
            total += (<size_t>self.c.n_rules + 1) * sizeof(uint64_t)
        return total

    @property
    def stride_bits(self):
        """(IPv4, IPv6): address bits the first stride indexes (0: no prefix of that family)."""
        return (self.c.slot_bits[0], self.c.slot_bits[1])

    def __repr__(self):
        return f"<{type(self).__name__} {self.c.n_rules} rules>"

    # -- the image (_image.pxi, docs/architecture.md#the-image) ---------------------------------
    def save(self, path):
        """Write this matcher's image to ``path`` atomically: a new file in the same folder,
        fsync'd, then renamed over ``path``, so that a process opening it gets the old image
        or the new one, never a part of one."""
        save_image(self, path)

    @classmethod
    def open(cls, path, *, count_hits=True):
        """The matcher of the image at ``path``, mapped read-only and shared: every process
        that opens the same file shares its pages.  A file that is not a whole, intact image
        of this format, or whose index does not hold together, is refused with
        :class:`tcpmgm.ImageError`.  An image without the index (the pure twin writes those)
        is built from its records instead.  The hit counts are this matcher's own."""
        return open_image(cls, path, count_hits)

    # -- hit counts ----------------------------------------------------------
    @property
    def count_hits(self):
        """Whether lookups count in ``hits()`` (the constructor's ``count_hits``)."""
        return self._hits != NULL

    @property
    def lookups(self):
        """Lookups answered since this matcher was built (``lookup``, and each row of an accepted
        ``lookup_many``), counted also with ``count_hits=False``; ``explain`` does not count."""
        return self._lookups

    def hits(self, start=0, stop=None):
        """Lookups each rule won since this matcher was built: rule id -> count, key 0 (first)
        for the default profile, then the rules ``list(self)[start:stop]`` in that order (every
        rule without arguments, zeros included); ``{}`` when not counting.

        ``lookup`` and ``lookup_many`` count (a refused batch counts nothing); ``explain`` does not."""
        first, last, _ = slice(start, stop).indices(self.c.n_rules)
        if self._hits == NULL:
            return {}
        return hit_counts(&self.c, self._hits, first, max(first, last))

    def top_hits(self, n):
        """The at most ``n`` rules with the most hits, as ``[(rule id, count), ...]``, most first and
        ties by the lower id; rules that won nothing and the default profile are left out, and
        so is everything when not counting (``[]``)."""
        check_top_hits_n(n)
        if self._hits == NULL:
            return []
        return top_hit_counts(&self.c, self._hits, n)

    # -- lookups -------------------------------------------------------------
    def lookup(self, proto, remote_ip, remote_port=0, local_ip=None, local_port=0):
        """The profile of the winning rule, or the default profile (id 0)."""
        cdef Query q
        parse_query(&q, proto, remote_ip, remote_port, local_ip, local_port, &self.c)
        cdef uint32_t rank = classify(&self.c, &q)
        self._lookups += 1                        # the GIL is held: _hits.pxi
        if self._hits != NULL:
            self._hits[hit_slot(rank)] += 1
        if rank == NONE:
            return self._default
        if self._profile_of_rank[rank] != NULL:       # made before: no call, no allocation
            return <object>self._profile_of_rank[rank]
        return self._profile(rank)

    def explain(self, proto, remote_ip, remote_port=0, local_ip=None, local_port=0):
        """The winner and every matching rule in key order, with why each lost."""
        cdef Query q
        cdef uint32_t rank
        parse_query(&q, proto, remote_ip, remote_port, local_ip, local_port, NULL)
        matches = [self._rule(rank) for rank in range(self.c.n_rules) if rank_matches(&self.c, rank, &q)]
        return explanation(matches, self._default)

    def lookup_many(self, protos, remote_ips, remote_ports=None, local_ips=None, local_ports=None):
        """Classify a batch; returns ``array('I')`` of winning rule ids (0: default).

        ``array('Q')`` instead when some rule id does not fit in 32 bits.
        Every argument but ``remote_ips`` may be ``None`` (any protocol, port 0,
        no local address).  Buffers (array, memoryview, bytes, NumPy, ctypes)
        must be C-contiguous in native byte order; integer buffers may be signed
        or unsigned, of 1, 2, 4 or 8 bytes:

        - ``protos``: integer buffer of protocol codes
          (``tcpmgm.protocols.protocol_code``; 0 = any), or one ``str`` for all;
        - ``remote_ips`` / ``local_ips``: either unsigned 32-bit integers
          (``array('I')``, NumPy ``uint32``), IPv4 in host order, or bytes
          (``bytes``, ``array('B')``, NumPy ``uint8`` of shape (n, 16)), 16 per
          address, IPv6 in network order (IPv4-mapped ones match as IPv4);
        - ``remote_ports`` / ``local_ports``: integer buffers, 0..65535.

        Each element gets what ``lookup()`` gives for the same values; one that
        ``lookup()`` refuses raises ``ValueError`` naming the argument, the index
        and the value (``remote_ports[3]: -1 is outside 0..65535``).
        The classification runs without the GIL; an accepted batch counts
        each row in ``hits()`` as ``lookup()`` would.
        """
        cdef Batch b
        keep = open_batch(&b, protos, remote_ips, remote_ports, local_ips, local_ports)
        cdef array out = clone(array(self._id_typecode, []), b.n, False)
        cdef uint32_t* out32 = <uint32_t*>out.data.as_voidptr
        cdef int64_t* out64 = <int64_t*>out.data.as_voidptr if self._id_typecode == "Q" else NULL
        with nogil:
            classify_batch(&self.c, &b, out32, out64)
            if b.bad < 0 and self._hits == NULL:
                ranks_to_ids(&self.c, b.n, out32, out64, NULL)
        if b.bad >= 0:
            raise_bad_item(&b)
        self._lookups += <uint64_t>b.n            # the GIL is held again: _hits.pxi
        if self._hits != NULL:
            ranks_to_ids(&self.c, b.n, out32, out64, self._hits)   # counting: with the GIL (_hits.pxi)
        return out


cdef RuleRecords records_of(object rules):
    """``Matcher(rules)``'s Rules as records; a non-Rule gets the reference's TypeError (or the
    RuleError of a repeated id before it, as the reference checks them in order)."""
    given = list(rules)
    for rule in given:
        if not isinstance(rule, Rule):
            check_unique_ids(given)
    cdef RuleRecords records = RuleRecords()
    for rule in given:
        append_rule(records, rule)
    return records
