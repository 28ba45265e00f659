# cython: language_level=3, boundscheck=False, wraparound=False
"""Table rows to a matcher's build records, compiled (twin of ``_rows_py.py``; same API, same rules).

Validation has one definition, :meth:`Rule.from_row`.  This reader only
recognises the rows that need none of its judgement: every value already of
the type and range the column wants (ints in range, a protocol spelling
``from_row`` has accepted before, addresses that ``inet_pton`` reads, without
host bits or zones, ``NULL`` only where the column is nullable and
``from_row`` reads "any" or the default, no ``attrs``).  Those it writes
straight into the :class:`RuleRecords` as C records (a ``RuleIn`` and its
``ProfileRec``, docs/architecture.md#a-reload), with no Python object
per row; the tests hold the rule the records make of them to the one
``from_row`` makes.  Any other row, a value outside the ranges of
:mod:`tcpmgm.limits` included, goes to ``from_row``, which accepts it, warns
or refuses it with its message, and its :class:`Rule` is appended as it is.
"""

from cpython.ref cimport PyObject
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memchr, memcmp, memcpy, memset

from tcpmgm.matching._addr cimport unmap_ipv4
from tcpmgm.matching._layout cimport N_PROFILE_INTS, NONE, ProfileRec, RuleIn
from tcpmgm.matching._matcher cimport RuleRecords

from ..model import limits
from .nulls import null_warnings
from ..model.errors import RuleError
from ..model.profile import default_profile, format_attrs
from ..model.protocols import protocol_code
from ..model.rule import Rule, _FLAG_COLUMNS, _INT_PROFILE_FIELDS, _accepted_protos

cdef extern from "Python.h":
    PyObject* PyTuple_GET_ITEM(object, Py_ssize_t)
    Py_ssize_t PyTuple_GET_SIZE(object)
    bint PyLong_CheckExact(PyObject*)
    bint PyUnicode_CheckExact(PyObject*)
    bint PyUnicode_IS_COMPACT_ASCII(PyObject*)
    const void* PyUnicode_DATA(PyObject*)
    Py_ssize_t PyUnicode_GET_LENGTH(PyObject*)

cdef extern from *:
    """
    /* An exact int as a C long long; 0 when it does not fit.  Never raises.  The ints of a
       row are small: read those from the int's one digit (CPython's compact form), the others
       through the C API, which costs several times as much. */
    static inline int tcpmgm_int64(PyObject* o, long long* out) {
    #if defined(PYPY_VERSION)
    #elif PY_VERSION_HEX >= 0x030C0000
        if (PyUnstable_Long_IsCompact((PyLongObject*)o)) {
            *out = (long long)PyUnstable_Long_CompactValue((PyLongObject*)o);
            return 1;
        }
    #else
        Py_ssize_t size = Py_SIZE(o);
        if (size == 0 || size == 1 || size == -1) {
            *out = size * (long long)((PyLongObject*)o)->ob_digit[0];
            return 1;
        }
    #endif
        int overflow = 0;
        *out = PyLong_AsLongLongAndOverflow(o, &overflow);
        return !overflow;
    }
    """
    bint int64_of "tcpmgm_int64"(PyObject* o, long long* out) noexcept

cdef extern from "arpa/inet.h" nogil:
    int inet_pton(int af, const char* src, void* dst)

cdef extern from "sys/socket.h":
    int AF_INET
    int AF_INET6

cdef enum:
    # Protocol spellings known to the C path; a table with more spellings than this reads the
    # others through from_row's table of accepted spellings (a dict look-up, still no from_row).
    MAX_SPELLINGS = 32
    SPELLING_CHARS = 16

# The ranges of docs/behaviour.md#a-rule; a row outside them goes to from_row, which refuses it.
# ID_MAX is the largest int64 (limits.py): an id that fits a C long long without overflow is in range above.
cdef int64_t ID_MIN = limits.ID_MIN
cdef int64_t PRIORITY_MIN = limits.PRIORITY_MIN, PRIORITY_MAX = limits.PRIORITY_MAX
cdef int64_t PORT_MAX = limits.PORT_MAX
if limits.ID_MAX != 2**63 - 1:
    raise ImportError("tcpmgm.sql._rows reads ids as C int64: limits.ID_MAX must be the largest one")
# One definition of the profile's integers, the model's: ProfileRec.value holds them in its order.
if len(_INT_PROFILE_FIELDS) != N_PROFILE_INTS:
    raise ImportError("tcpmgm.sql._rows: ProfileRec holds another number of profile integers than the model has")

cdef int NOT_PLAIN = -1
# What a ProfileRec value holds; a default profile made around the ranges may hold more.
cdef int64_t INT32_MIN = -2**31, INT32_MAX = 2**31 - 1


ctypedef struct Spelling:       # a proto text from_row accepted, and its protocol's code
    char text[SPELLING_CHARS]
    Py_ssize_t length
    uint16_t code


cdef inline uint64_t _be64(const uint8_t* p) noexcept:
    cdef uint64_t v = 0
    cdef int i
    for i in range(8):
        v = v << 8 | p[i]
    return v


cdef bint _prefix(PyObject* text, uint8_t* family, uint8_t* length, uint64_t* hi, uint64_t* lo) noexcept:
    """Plain prefix text as the lookup's 128-bit key (IPv4 in the top 32 bits of ``hi``), masked,
    an IPv4-mapped prefix as the IPv4 one (as ``from_row``); false for any other text."""
    if not PyUnicode_CheckExact(text) or not PyUnicode_IS_COMPACT_ASCII(text):
        return False
    cdef const char* s = <const char*>PyUnicode_DATA(text)
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(text), cut, i
    cdef const char* slash = <const char*>memchr(s, b'/', n)
    cut = slash - s if slash != NULL else n
    if cut == 0 or cut >= 64 or memchr(s, 0, n) != NULL or memchr(s, b'%', n) != NULL:
        return False
    cdef char buf[64]
    memcpy(buf, s, cut)
    buf[cut] = 0
    cdef uint8_t raw[16]
    cdef int version = 6 if memchr(s, b':', cut) != NULL else 4
    if inet_pton(AF_INET6 if version == 6 else AF_INET, buf, raw) != 1:
        return False
    cdef int bits = 128 if version == 6 else 32
    cdef int plen = bits
    if slash != NULL:
        if n - cut - 1 < 1 or n - cut - 1 > 3:
            return False
        plen = 0
        for i in range(cut + 1, n):
            if not (c'0' <= s[i] <= c'9'):
                return False
            plen = plen * 10 + (s[i] - c'0')
        if plen > bits:
            return False
    cdef uint64_t h, l, keep_hi, keep_lo
    if version == 4:
        h = (<uint64_t>raw[0] << 24 | <uint64_t>raw[1] << 16 | <uint64_t>raw[2] << 8 | raw[3]) << 32
        l = 0
    else:
        h = _be64(raw)
        l = _be64(raw + 8)
    keep_hi = 0 if plen == 0 else (~<uint64_t>0) << (64 - plen) if plen < 64 else ~<uint64_t>0
    keep_lo = 0 if plen <= 64 else (~<uint64_t>0) << (128 - plen) if plen < 128 else ~<uint64_t>0
    if (h & ~keep_hi) or (l & ~keep_lo):
        return False                       # host bits set: from_row warns
    # IPv4-mapped: kept as IPv4, as from_row does.  The length is then >= 96: a shorter one
    # leaves the mapped address's ffff (bits 80..95) as host bits, refused above.
    if version == 6 and unmap_ipv4(raw) == 4:
        version = 4
        h = (l & 0xFFFFFFFFU) << 32
        l = 0
        plen -= 96
    family[0] = version
    length[0] = plen
    hi[0] = h
    lo[0] = l
    return True


cdef inline bint _port(PyObject* value, uint16_t* port) noexcept:
    cdef long long number
    if value == <PyObject*>None:
        port[0] = 0
        return True
    if not PyLong_CheckExact(value) or not int64_of(value, &number) or number < 0 or number > PORT_MAX:
        return False
    port[0] = <uint16_t>number
    return True


cdef class RowReader:
    """Reads rows of one ``SELECT`` (its column order) into rules, or into a matcher's records."""

    cdef readonly tuple columns
    cdef readonly frozenset not_null
    cdef object listeners, defaults
    cdef str attrs_text            # format_attrs of the defaults' attrs, None for none
    cdef Py_ssize_t n_columns
    cdef Py_ssize_t n_not_null
    cdef Py_ssize_t* not_null_index  # the not_null columns' indices (malloc'd)
    cdef Py_ssize_t i_id, i_proto, i_remote, i_rport, i_local, i_lport, i_priority, i_attrs
    cdef Py_ssize_t int_index[N_PROFILE_INTS]   # -1: the table lacks the column
    cdef int64_t int_top[N_PROFILE_INTS]
    cdef bint int_flag[N_PROFILE_INTS]
    cdef int32_t int_default[N_PROFILE_INTS]
    cdef bint int_default_fits[N_PROFILE_INTS]  # false: a NULL there goes to from_row (the records refuse it)
    cdef Spelling spellings[MAX_SPELLINGS]
    cdef Py_ssize_t n_spellings

    def __init__(self, columns, *, listeners=None, defaults=None, not_null=()):
        self.columns = tuple(columns)
        self.not_null = frozenset(not_null)
        self.listeners = listeners
        self.defaults = defaults if defaults is not None else default_profile()
        self.n_columns = len(self.columns)
        free(self.not_null_index)
        self.not_null_index = <Py_ssize_t*>malloc(max(self.n_columns, 1) * sizeof(Py_ssize_t))
        if self.not_null_index == NULL:
            raise MemoryError()
        self.n_not_null = 0
        for i, name in enumerate(self.columns):
            if name in self.not_null:
                self.not_null_index[self.n_not_null] = i
                self.n_not_null += 1
        where = {name: i for i, name in enumerate(self.columns)}
        self.i_id = where.get("id", -1)
        self.i_proto = where.get("proto", -1)
        self.i_remote = where.get("remote_addr", -1)
        self.i_rport = where.get("remote_port", -1)
        self.i_local = where.get("local_addr", -1)
        self.i_lport = where.get("local_port", -1)
        self.i_priority = where.get("priority", -1)
        self.i_attrs = where.get("attrs", -1)
        # A NULL (or a missing column) is int(default) to from_row, a flag as 0/1.
        for k, (name, top) in enumerate(_INT_PROFILE_FIELDS):
            self.int_index[k] = where.get(name, -1)
            self.int_top[k] = top
            self.int_flag[k] = name in _FLAG_COLUMNS
            default = int(getattr(self.defaults, name))
            self.int_default_fits[k] = INT32_MIN <= default <= INT32_MAX
            self.int_default[k] = default if self.int_default_fits[k] else 0
        self.attrs_text = format_attrs(self.defaults.attrs) or None
        self.n_spellings = 0

    def __dealloc__(self):
        free(self.not_null_index)

    def __call__(self, values):
        return Rule.from_row(dict(zip(self.columns, values)), listeners=self.listeners, defaults=self.defaults)

    def _plain(self, values):
        """Whether the row takes the C path (the tests check that typical rows do)."""
        cdef RuleIn rule
        cdef ProfileRec profile
        return type(values) is tuple and self._read_plain(values, &rule, &profile)

    def read_batch(self, batch, RuleRecords records not None, list rejected, list warnings):
        """As ``_rows_py.RowReader.read_batch``: the reload's loop over a batch, the plain rows in C
        (so ``records`` are the compiled ``RuleRecords``; the pure reader takes either twin's)."""
        cdef RuleIn rule
        cdef ProfileRec profile
        cdef uint32_t attrs = NONE     # the defaults' attrs text in the records, interned at first use
        cdef bint attrs_interned = self.attrs_text is None
        cdef Py_ssize_t i
        for values in batch:
            if type(values) is tuple and self._read_plain(values, &rule, &profile):
                if records.has_id(rule.id):
                    rejected.append(RuleError(rule.id, "id", values[self.i_id], "duplicate id"))
                    continue
                if not attrs_interned:
                    attrs = records.intern(self.attrs_text)
                    attrs_interned = True
                profile.attrs = attrs
                records.append_checked(&rule, &profile)
                continue
            try:
                made = self(values)
            except RuleError as exc:
                rejected.append(exc)
                continue
            if records.has_id(made.id):
                rejected.append(RuleError(made.id, "id", values[self.i_id], "duplicate id"))
                continue
            records.append(made)
            if made.warnings:
                warnings.extend(made.warnings)
            for i in range(self.n_not_null):
                if values[self.not_null_index[i]] is None:
                    warnings.extend(null_warnings(made, [self.columns[self.not_null_index[k]]
                                                         for k in range(self.n_not_null)
                                                         if values[self.not_null_index[k]] is None]))
                    break

    cdef inline PyObject* _at(self, tuple values, Py_ssize_t i) noexcept:
        return PyTuple_GET_ITEM(values, i) if i >= 0 else <PyObject*>None

    cdef int _proto_code(self, PyObject* text) except -2:
        """The code of a proto spelling ``from_row`` has accepted, else ``NOT_PLAIN``."""
        cdef Py_ssize_t n, k
        cdef const char* s
        if not PyUnicode_CheckExact(text):
            return NOT_PLAIN
        if PyUnicode_IS_COMPACT_ASCII(text):
            s = <const char*>PyUnicode_DATA(text)
            n = PyUnicode_GET_LENGTH(text)
            for k in range(self.n_spellings):
                if self.spellings[k].length == n and memcmp(self.spellings[k].text, s, n) == 0:
                    return self.spellings[k].code
        return self._learn_spelling(<object>text)

    cdef int _learn_spelling(self, str text) except -2:
        """A spelling not (yet) in the C table: from_row's table of accepted ones decides."""
        name = _accepted_protos.get(text, _accepted_protos)
        if name is _accepted_protos:
            return NOT_PLAIN               # from_row will judge it (and remember it when accepted)
        cdef int code = protocol_code(name)
        cdef bytes ascii
        if self.n_spellings < MAX_SPELLINGS and text.isascii() and len(text) <= SPELLING_CHARS:
            ascii = text.encode("ascii")
            memcpy(self.spellings[self.n_spellings].text, <const char*>ascii, len(ascii))
            self.spellings[self.n_spellings].length = len(ascii)
            self.spellings[self.n_spellings].code = <uint16_t>code
            self.n_spellings += 1
        return code

    cdef bint _read_plain(self, tuple values, RuleIn* rule, ProfileRec* profile) except -1:
        """Fill ``rule`` and ``profile`` (but its attrs) from a row that needs no judgement; else false."""
        cdef PyObject* item
        cdef int code
        cdef long long number
        cdef Py_ssize_t k
        if PyTuple_GET_SIZE(values) != self.n_columns:
            return False
        for k in range(self.n_not_null):   # a NULL there is read with a warning: from_row's path
            if PyTuple_GET_ITEM(values, self.not_null_index[k]) == <PyObject*>None:
                return False
        memset(rule, 0, sizeof(RuleIn))
        item = self._at(values, self.i_id)
        if not PyLong_CheckExact(item) or not int64_of(item, &number) or number < ID_MIN:
            return False
        rule.id = number
        code = self._proto_code(self._at(values, self.i_proto))
        if code == NOT_PLAIN:
            return False
        rule.proto = <uint16_t>code
        item = self._at(values, self.i_remote)
        if item != <PyObject*>None and not _prefix(item, &rule.rfam, &rule.rplen, &rule.rhi, &rule.rlo):
            return False
        item = self._at(values, self.i_local)
        if item != <PyObject*>None:
            if not _prefix(item, &rule.lfam, &rule.lplen, &rule.lhi, &rule.llo):
                return False
            if rule.rfam != 0 and rule.lfam != rule.rfam:
                return False               # from_row refuses the pair
        if not _port(self._at(values, self.i_rport), &rule.rport):
            return False
        if not _port(self._at(values, self.i_lport), &rule.lport):
            return False
        item = self._at(values, self.i_priority)
        if item != <PyObject*>None:
            if not PyLong_CheckExact(item) or not int64_of(item, &number):
                return False
            if number < PRIORITY_MIN or number > PRIORITY_MAX:
                return False
            rule.priority = <int32_t>number
        rule.tag = NONE
        if self._at(values, self.i_attrs) != <PyObject*>None:
            return False
        for k in range(N_PROFILE_INTS):
            item = self._at(values, self.int_index[k])
            if item == <PyObject*>None:
                if not self.int_default_fits[k]:
                    return False
                profile.value[k] = self.int_default[k]
                continue
            if not PyLong_CheckExact(item) or not int64_of(item, &number):
                return False
            if number < 0 or number > self.int_top[k]:
                return False
            profile.value[k] = (number != 0) if self.int_flag[k] else <int32_t>number
        profile.attrs = NONE
        return True
