# RuleRecords, the build's input, and Rule / Profile objects made from C records (part of
# _matcher.pyx; docs/architecture.md#rule-records).
#
# A rule given to a build is one RuleIn (64 bytes, _layout.pxd); its profile is an index into the
# records' table of distinct ProfileRecs (a million rules of one profile keep one ProfileRec, found
# by a C hash of its bytes), its tag and attrs text indices into a table of the few distinct
# strings.  The ids appended are a C open-addressing set, made at the first ``rule_id in
# records`` (the loader's duplicate check), so that it keeps no Python int per rule.  The compiled row reader fills records
# through ``append_checked`` and ``intern`` (_matcher.pxd); Python callers append Rules.

from types import MappingProxyType

from ..model.limits import check_port
from ..model.profile import PROFILE_FIELDS, format_attrs
from ..model.protocols import protocol_name
from ..model.rule import _CHECKED_ATTRIBUTES, _FLAG_COLUMNS

# A profile's integers, by name in ProfileRec order: PROFILE_FIELDS without "attrs" (its last).
cdef tuple PROFILE_INT_NAMES = tuple(name for name in PROFILE_FIELDS if name != "attrs")
if len(PROFILE_INT_NAMES) != N_PROFILE_INTS or PROFILE_FIELDS != (*PROFILE_INT_NAMES, "attrs"):
    raise ImportError("tcpmgm.matching._matcher: ProfileRec does not have model/profile.py's fields")
cdef tuple PROFILE_INT_IS_FLAG = tuple(name in _FLAG_COLUMNS for name in PROFILE_INT_NAMES)
cdef tuple CHECKED = _CHECKED_ATTRIBUTES    # Rule._from_checked's values, by name
cdef dict RULE_PROTO_CODES = {}             # Rule.proto name -> code (the registry only grows)
# The ranges of docs/behaviour.md#a-rule as C ints (tcpmgm.limits is their definition).
cdef int64_t ID_LOW = ID_MIN, ID_HIGH = ID_MAX
cdef int64_t PRIORITY_LOW = PRIORITY_MIN, PRIORITY_HIGH = PRIORITY_MAX
cdef int64_t PORT_HIGH = PORT_MAX
cdef object EMPTY_ATTRS = Profile().attrs    # a profile without attrs: the model's empty mapping


cdef inline uint64_t profile_hash(const ProfileRec* p) noexcept nogil:
    cdef uint64_t words[6]          # 48 bytes (check_layout)
    cdef uint64_t h = 0
    cdef int k
    memcpy(words, p, sizeof(ProfileRec))
    for k in range(6):
        h = mix(h ^ words[k])
    return h


cdef inline uint64_t id_hash(int64_t rule_id) noexcept nogil:
    return mix(<uint64_t>rule_id)


cdef int prefix_fields(object prefix, uint8_t* family, uint8_t* plen, uint64_t* hi, uint64_t* lo) except -1:
    """A Rule's Prefix (or None: family 0) as RuleIn's fields."""
    cdef int fam
    if prefix is None:
        family[0] = plen[0] = 0
        hi[0] = lo[0] = 0
        return 0
    plen[0] = split_prefix(prefix, &fam, hi, lo)
    family[0] = fam
    return 0


cdef object prefix_of(uint8_t family, uint8_t plen, uint64_t hi, uint64_t lo):
    """RuleIn's / RuleRec's / Prefix's fields as a Rule's Prefix, None for family 0."""
    if family == 0:
        return None
    if family == 4:
        return (4, <object>(hi >> 32), plen)
    return (6, (<object>hi) << 64 | <object>lo, plen)


cdef object attrs_of_text(str text):
    """A profile's attrs from format_attrs' text (``name=value;...``), without the registry:
    the text was made from a validated profile when the records were."""
    values = {}
    for item in text.split(";"):
        name, _, value = item.partition("=")
        values[name] = int(value)
    return MappingProxyType(values)


cdef object profile_object(const ProfileRec* rec, int64_t rule_id, object attrs):
    """The Profile of rule ``rule_id`` (0: the default) with ProfileRec ``rec``'s values."""
    values = {"id": rule_id}
    cdef int k
    for k in range(N_PROFILE_INTS):
        values[PROFILE_INT_NAMES[k]] = (rec.value[k] != 0) if PROFILE_INT_IS_FLAG[k] else rec.value[k]
    values["attrs"] = attrs
    return Profile._from_checked(values)


cdef object rule_object(int64_t rule_id, object proto, object remote, uint16_t rport, object local,
                        uint16_t lport, int32_t priority, object profile, object tag):
    """A Rule from checked values (warnings ``()``: the reload's report keeps those)."""
    values = {"id": rule_id, "proto": proto, "remote_prefix": remote, "remote_port": rport,
              "local_prefix": local, "local_port": lport, "priority": priority, "profile": profile,
              "local_tag": tag, "warnings": ()}
    return Rule._from_checked(*[values[name] for name in CHECKED])


cdef uint16_t rule_proto_code(object rule_id, object proto) except? 0xFFFF:
    code = RULE_PROTO_CODES.get(proto)
    if code is None:
        code = protocol_code(proto)
        if code is None or code >= MAX_PROTO_CODE:
            raise ValueError(f"rule {rule_id}: protocol {proto!r} is not registered")
        RULE_PROTO_CODES[proto] = code
    return <uint16_t>code


cdef inline bint in_range(object value, int64_t low, int64_t high) except -1:
    cdef int overflow = 0
    cdef long long v
    if type(value) is not int and type(value) is not bool:
        return False
    v = PyLong_AsLongLongAndOverflow(value, &overflow)
    return not overflow and low <= v <= high


cdef class RuleRecords:
    """Rules as C records, in the order given: the input of a compiled :class:`Matcher` build.

    ``append(rule)`` adds a validated :class:`tcpmgm.Rule`; ``len(records)``, ``rule_id in
    records`` (O(1), no Python object kept per rule) and ``rules()`` (the rules as given, made
    on demand) read them.  Repeated ids are accepted here and refused by the build with the
    ``RuleError`` of a repeated id.  See docs/architecture.md#rule-records.
    """

    def __cinit__(self):
        self.strings = []
        self.string_index = {}
        self.attrs_seen_index = NONE

    def __dealloc__(self):
        free(self.recs)
        free(self.profiles)
        free(self.profile_slots)
        free(self.id_slots)

    # -- the C API (_matcher.pxd) ------------------------------------------------------------
    cdef bint has_id(self, int64_t rule_id) noexcept:
        cdef uint64_t h
        cdef uint32_t i
        if rule_id < ID_LOW:
            return False
        if self.id_slots == NULL and not fill_id_set(self):
            for i in range(self.n_recs):               # no memory for the set: slower, still right
                if self.recs[i].id == rule_id:
                    return True
            return False
        h = id_hash(rule_id) & self.id_mask
        while self.id_slots[h] != 0:
            if self.id_slots[h] == rule_id:
                return True
            h = (h + 1) & self.id_mask
        return False

    cdef uint32_t intern(self, str text) except? 0xFFFFFFFF:
        index = self.string_index.get(text)
        if index is None:
            if len(self.strings) >= NONE:
                raise MemoryError("tcpmgm: too many distinct strings")
            index = self.string_index[text] = len(self.strings)
            self.strings.append(text)
        return index

    cdef int append_checked(self, const RuleIn* rule, const ProfileRec* profile) except -1:
        check_rule_in(rule, profile, len(self.strings))
        cdef uint32_t at = self.n_recs
        self.recs = <RuleIn*>grow(self.recs, &self.cap_recs, <uint64_t>at + 1, sizeof(RuleIn))
        self.recs[at] = rule[0]
        self.recs[at].pad = 0
        self.recs[at].profile = intern_profile(self, profile)
        if self.id_slots != NULL:                     # once asked, the set follows every append
            add_id(self, rule.id)
        self.n_recs = at + 1
        return 0

    # -- the Python API ------------------------------------------------------------------------
    def append(self, rule):
        """Add a validated :class:`tcpmgm.Rule` (the ranges of ``tcpmgm.limits`` are checked
        again, with the same ``RuleError``, for a rule made around them)."""
        append_rule(self, rule)

    def __len__(self):
        return self.n_recs

    def __contains__(self, rule_id):
        return type(rule_id) is int and in_range(rule_id, ID_LOW, ID_HIGH) and self.has_id(rule_id)

    def rules(self):
        """The rules as given, each made when the iteration reaches it."""
        cdef uint32_t i
        cdef RuleIn r
        attrs_by_index = {NONE: EMPTY_ATTRS}
        for i in range(self.n_recs):
            r = self.recs[i]
            attrs_index = self.profiles[r.profile].attrs
            attrs = attrs_by_index.get(attrs_index)
            if attrs is None:
                attrs = attrs_by_index[attrs_index] = attrs_of_text(self.strings[attrs_index])
            yield rule_object(
                r.id, None if r.proto == 0 else protocol_name(r.proto),
                prefix_of(r.rfam, r.rplen, r.rhi, r.rlo), r.rport,
                prefix_of(r.lfam, r.lplen, r.lhi, r.llo), r.lport, r.priority,
                profile_object(&self.profiles[r.profile], r.id, attrs),
                None if r.tag == NONE else self.strings[r.tag])

    def __repr__(self):
        return f"<{type(self).__name__} {self.n_recs} rules>"


# -- the records' tables ----------------------------------------------------------------------


cdef uint32_t intern_profile(RuleRecords self, const ProfileRec* profile) except NONE:
    cdef uint64_t h
    cdef uint32_t k
    if self.profile_slots == NULL or 2 * (<uint64_t>self.n_profiles + 1) > self.profile_mask + 1:
        grow_profile_slots(self)
    h = profile_hash(profile) & self.profile_mask
    while self.profile_slots[h] != NONE:
        k = self.profile_slots[h]
        if memcmp(&self.profiles[k], profile, sizeof(ProfileRec)) == 0:
            return k
        h = (h + 1) & self.profile_mask
    self.profiles = <ProfileRec*>grow(self.profiles, &self.cap_profiles, <uint64_t>self.n_profiles + 1,
                                      sizeof(ProfileRec))
    self.profiles[self.n_profiles] = profile[0]
    self.profile_slots[h] = self.n_profiles
    self.n_profiles += 1
    return self.n_profiles - 1


cdef int grow_profile_slots(RuleRecords self) except -1:
    cdef uint64_t size = pow2_at_least(4 * (<uint64_t>self.n_profiles + 1)), h
    cdef uint32_t k
    cdef uint32_t* slots = <uint32_t*>malloc(size * sizeof(uint32_t))
    if slots == NULL:
        raise MemoryError()
    memset(slots, 0xFF, size * sizeof(uint32_t))
    for k in range(self.n_profiles):
        h = profile_hash(&self.profiles[k]) & (size - 1)
        while slots[h] != NONE:
            h = (h + 1) & (size - 1)
        slots[h] = k
    free(self.profile_slots)
    self.profile_slots = slots
    self.profile_mask = size - 1
    return 0


cdef bint put_id(int64_t* slots, uint64_t mask, int64_t rule_id) noexcept nogil:
    """Put ``rule_id`` in an id set of ``mask + 1`` slots (0: empty) with room left; whether
    it was there already."""
    cdef uint64_t h = id_hash(rule_id) & mask
    while slots[h] != 0:
        if slots[h] == rule_id:
            return True
        h = (h + 1) & mask
    slots[h] = rule_id
    return False


cdef bint fill_id_set(RuleRecords self) noexcept:
    """The records' id set, made at the first question (a build alone never asks, and at a
    million rules the set is a cache miss per rule and 32 MB); false without the memory."""
    cdef uint64_t size = pow2_at_least(4 * (<uint64_t>self.n_recs + 1))
    cdef uint32_t i
    cdef int64_t* slots = <int64_t*>calloc(size, sizeof(int64_t))
    if slots == NULL:
        return False
    for i in range(self.n_recs):
        put_id(slots, size - 1, self.recs[i].id)
    self.id_slots = slots
    self.id_mask = size - 1
    return True


cdef int add_id(RuleRecords self, int64_t rule_id) except -1:
    """Put ``rule_id`` in the id set (kept half empty at most)."""
    cdef uint64_t size, i
    cdef int64_t* slots
    if 2 * (<uint64_t>self.n_recs + 1) > self.id_mask + 1:
        size = pow2_at_least(4 * (<uint64_t>self.n_recs + 1))
        slots = <int64_t*>calloc(size, sizeof(int64_t))
        if slots == NULL:
            raise MemoryError()
        for i in range(self.id_mask + 1):
            if self.id_slots[i] != 0:
                put_id(slots, size - 1, self.id_slots[i])
        free(self.id_slots)
        self.id_slots = slots
        self.id_mask = size - 1
    put_id(self.id_slots, self.id_mask, rule_id)
    return 0


cdef int64_t first_repeated_id(const RuleIn* recs, uint32_t n) except -1:
    """The id of the first rule whose id an earlier rule has (in the order given), 0 if none."""
    cdef uint64_t size = pow2_at_least(2 * (<uint64_t>n + 1))
    cdef uint32_t i
    cdef int64_t found = 0
    cdef int64_t* slots = <int64_t*>calloc(size, sizeof(int64_t))
    if slots == NULL:
        raise MemoryError()
    for i in range(n):
        if put_id(slots, size - 1, recs[i].id):
            found = recs[i].id
            break
    free(slots)
    return found


cdef int profile_ints(object rule_id, object profile, ProfileRec* p) except -1:
    """A Profile's integers into ``p`` (flags as 0/1).  Read as attributes: asking for the
    instance dict would make one for each profile (Python keeps a dataclass's attributes
    without a dict until someone asks for it), a million dicts for a million rules."""
    cdef int k
    for k in range(N_PROFILE_INTS):
        value = getattr(profile, PROFILE_INT_NAMES[k])
        if not in_range(value, INT32_MIN, INT32_MAX):
            raise ValueError(f"rule {rule_id}: profile {PROFILE_INT_NAMES[k]} {shown(value)} "
                             "does not fit the compiled matcher")
        p.value[k] = value
    return 0


cdef str attrs_text(object rule_id, object attrs, dict known):
    """format_attrs' text of a profile's attrs, None for none.  Text not in ``known`` is checked
    to read back as the same attrs (attrs_of_text), once per distinct text."""
    if not attrs:
        return None
    text = format_attrs(attrs)
    if text not in known:
        try:
            same = attrs_of_text(text) == attrs
        except ValueError:             # a name holding ";" or "=", a value that is no int
            same = False
        if not same:
            raise ValueError(f"rule {rule_id}: profile attrs {shown(dict(attrs))} are not names and integers")
    return text


cdef int append_rule(RuleRecords records, object rule) except -1:
    """``records.append(rule)``: a validated Rule's fields into a RuleIn and a ProfileRec."""
    cdef RuleIn r
    cdef ProfileRec p
    cdef dict fields
    if not isinstance(rule, Rule):
        check_unique_ids((rule,))                  # raises the matchers' TypeError
    fields = PyObject_GenericGetDict(rule, NULL)
    memset(&r, 0, sizeof(RuleIn))
    memset(&p, 0, sizeof(ProfileRec))
    # Rule and from_row refuse values outside these ranges; a rule made around them
    # (Rule._from_checked) gets the same RuleError, not a C overflow.
    rule_id = fields["id"]
    if not in_range(rule_id, ID_LOW, ID_HIGH):
        check_id(rule_id, rule_id)
    r.id = rule_id
    priority = fields["priority"]
    if not in_range(priority, PRIORITY_LOW, PRIORITY_HIGH):
        check_priority(rule_id, priority, priority)
    r.priority = priority
    port = fields["remote_port"]
    if not in_range(port, 0, PORT_HIGH):
        check_port(rule_id, "remote_port", port, port)
    r.rport = port
    port = fields["local_port"]
    if not in_range(port, 0, PORT_HIGH):
        check_port(rule_id, "local_port", port, port)
    r.lport = port
    r.proto = rule_proto_code(rule_id, fields["proto"])
    prefix_fields(fields["remote_prefix"], &r.rfam, &r.rplen, &r.rhi, &r.rlo)
    prefix_fields(fields["local_prefix"], &r.lfam, &r.lplen, &r.lhi, &r.llo)
    tag = fields["local_tag"]
    r.tag = NONE if tag is None else records.intern(tag)
    profile = fields["profile"]
    profile_ints(rule_id, profile, &p)
    attrs = profile.attrs
    if attrs is records.attrs_seen:                # the same mapping as the rule before
        p.attrs = records.attrs_seen_index
    else:
        text = attrs_text(rule_id, attrs, records.string_index)
        p.attrs = NONE if text is None else records.intern(text)
        records.attrs_seen = attrs
        records.attrs_seen_index = p.attrs
    records.append_checked(&r, &p)
    return 0


cdef int check_rule_in(const RuleIn* r, const ProfileRec* p, Py_ssize_t n_strings) except -1:
    """Refuse a RuleIn the build could not read safely (a caller's bug, not a row's error: the
    rows were validated before they became records)."""
    cdef str why = None
    if r.id < ID_LOW:
        why = "id below the smallest id"
    elif r.proto >= MAX_PROTO_CODE:
        why = "protocol code out of range"
    elif not prefix_ok(r.rfam, r.rplen, r.rhi, r.rlo) or not prefix_ok(r.lfam, r.lplen, r.lhi, r.llo):
        why = "a prefix that is not a masked IPv4 or IPv6 prefix"
    elif r.tag != NONE and r.tag >= n_strings:
        why = "tag index out of range"
    elif p.attrs != NONE and p.attrs >= n_strings:
        why = "attrs index out of range"
    if why is not None:
        raise ValueError(f"rule {r.id}: RuleIn with {why}")
    return 0


cdef inline bint prefix_ok(uint8_t family, uint8_t plen, uint64_t hi, uint64_t lo) noexcept:
    if family == 0:
        return plen == 0 and hi == 0 and lo == 0
    if family == 4:
        return plen <= 32 and lo == 0 and (hi & 0xFFFFFFFFULL) == 0 and hi & ~mask_hi(plen) == 0
    return family == 6 and plen <= 128 and hi & ~mask_hi(plen) == 0 and lo & ~mask_lo(plen) == 0
