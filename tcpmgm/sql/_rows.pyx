# cython: language_level=3, boundscheck=False, wraparound=False
"""Table rows to rules, compiled (twin of ``_rows_py.py``; same API, same rules).

Validation has one definition, :meth:`Rule.from_row`.  This reader only
recognises the rows that need none of its judgement: every value already of
the type and range the column wants (ints in range, a protocol spelling
``from_row`` has accepted before, addresses that ``inet_pton`` reads, without
host bits or zones, ``NULL`` where ``from_row`` reads "any" or the default).
Those it turns into the same :class:`Rule` ``from_row`` would make (the
tests compare both on generated rows); any other row, a value outside the
ranges of :mod:`tcpmgm.limits` included, goes to ``from_row``, which accepts
it, warns or refuses it with its message.  A typical row costs
~14,000 instructions here against ~72,000 through ``from_row`` (callgrind).

What a rule keeps and how ``Rule.order`` packs the key are not written here
but read from the model when this module loads: the attribute names from
``rule._CHECKED_ATTRIBUTES`` (the rule's fields), the levels of the key from
``model/key.py`` (tests/test_key.py holds the packing to ``key.order_of``).
"""

from cpython.tuple cimport PyTuple_GET_SIZE
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memchr, memcpy

from tcpmgm.matching._addr cimport unmap_ipv4

from ..model import key, limits
from .nulls import null_warnings
from ..model.errors import RuleError
from ..model.profile import Profile, default_profile
from ..model.rule import Rule, _CHECKED_ATTRIBUTES, _FLAG_COLUMNS, _INT_PROFILE_FIELDS, _accepted_protos

cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object)
    const void* PyUnicode_DATA(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    int PyObject_GenericSetDict(object, object, void*) except -1
    dict _PyDict_NewPresized(Py_ssize_t)
    ctypedef struct PyTypeObject
    object PyType_GenericNew(PyTypeObject*, object, object)

cdef extern from "arpa/inet.h" nogil:
    int inet_pton(int af, const char* src, void* dst)

cdef extern from "sys/socket.h":
    int AF_INET
    int AF_INET6

cdef inline object _new(type cls):
    """``object.__new__(cls)`` without the Python-level call (the classes here have no ``__new__``)."""
    return PyType_GenericNew(<PyTypeObject*>cls, (), None)

cdef object _NOT_PLAIN = object()     # "ask Rule.from_row"
cdef enum:
    MAX_PROFILE_INTS = 16
    MAX_LEVELS = 16
# The ranges of docs/behaviour.md#a-rule; a row outside them goes to from_row, which refuses it.  In
# range, the levels of the key above the id take 53 bits and fit an int64 (_read_levels checks it).
cdef object ID_MIN = limits.ID_MIN, ID_MAX = limits.ID_MAX
cdef int64_t PRIORITY_MIN = limits.PRIORITY_MIN, PRIORITY_MAX = limits.PRIORITY_MAX
cdef long PORT_MAX = limits.PORT_MAX

# What a rule keeps (Rule._from_checked's values, rule.ATTRIBUTES without the order), and
# Rule.order's packing, read from model/key.py's levels by _read_levels when this module loads.
cdef tuple CHECKED = _CHECKED_ATTRIBUTES
cdef Py_ssize_t N_CHECKED = len(CHECKED)
cdef enum LevelKind:
    KIND_VALUE, KIND_ANY_NONE, KIND_ANY_ZERO, KIND_LENGTH
cdef Py_ssize_t n_head                        # the levels above the last (the id), in one int64
cdef Py_ssize_t level_at[MAX_LEVELS]          # each level's attribute: its index in CHECKED
cdef LevelKind level_kind[MAX_LEVELS]
cdef int64_t level_scale[MAX_LEVELS]          # 2 ** its width
cdef Py_ssize_t last_at                       # the last level's attribute (the id), under the others
cdef int last_bits
cdef int64_t LENGTH_OFFSET = key.LENGTH_OFFSET


cdef int _read_levels() except -1:
    """Rule.order's packing from ``key.LEVELS``: the levels above the last in
    one C int64 (as the compiled matcher reads them), the last (an int of
    ``key.ID_BITS``) below them.  A table this packing cannot follow stops
    the import instead of packing another order."""
    global n_head, last_at, last_bits
    kinds = {key.Kind.VALUE: KIND_VALUE, key.Kind.ANY_NONE: KIND_ANY_NONE,
             key.Kind.ANY_ZERO: KIND_ANY_ZERO, key.Kind.LENGTH: KIND_LENGTH}
    *head, last = key.LEVELS
    if (len(head) > MAX_LEVELS or sum(level.bits for level in head) > 63 or last.kind is not key.Kind.VALUE
            or any(level.kind not in kinds for level in head)):
        raise ImportError("tcpmgm.sql._rows cannot pack Rule.order as model/key.py's levels say")
    for k, level in enumerate(head):
        level_at[k] = CHECKED.index(level.attribute)
        level_kind[k] = kinds[level.kind]
        level_scale[k] = <int64_t>1 << level.bits
    n_head = len(head)
    last_at = CHECKED.index(last.attribute)
    last_bits = last.bits
    return 0


_read_levels()


cdef inline uint64_t _be64(const uint8_t* p) noexcept:
    cdef uint64_t v = 0
    cdef int i
    for i in range(8):
        v = v << 8 | p[i]
    return v


cdef object _prefix(object text):
    """``(version, network int, length)`` for plain prefix text, else ``_NOT_PLAIN``."""
    if type(text) is not str or not PyUnicode_IS_COMPACT_ASCII(text):
        return _NOT_PLAIN
    cdef const char* s = <const char*>PyUnicode_DATA(text)
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(text), cut, i
    cdef const char* slash = <const char*>memchr(s, b'/', n)
    cut = slash - s if slash != NULL else n
    if cut == 0 or cut >= 64 or memchr(s, 0, n) != NULL or memchr(s, b'%', n) != NULL:
        return _NOT_PLAIN
    cdef char buf[64]
    memcpy(buf, s, cut)
    buf[cut] = 0
    cdef uint8_t raw[16]
    cdef int version = 6 if memchr(s, b':', cut) != NULL else 4
    if inet_pton(AF_INET6 if version == 6 else AF_INET, buf, raw) != 1:
        return _NOT_PLAIN
    cdef int bits = 128 if version == 6 else 32
    cdef int length = bits
    if slash != NULL:
        if n - cut - 1 < 1 or n - cut - 1 > 3:
            return _NOT_PLAIN
        length = 0
        for i in range(cut + 1, n):
            if not (c'0' <= s[i] <= c'9'):
                return _NOT_PLAIN
            length = length * 10 + (s[i] - c'0')
        if length > bits:
            return _NOT_PLAIN
    cdef uint64_t hi, lo, keep_hi, keep_lo
    if version == 4:
        hi = (<uint64_t>raw[0] << 24 | <uint64_t>raw[1] << 16 | <uint64_t>raw[2] << 8 | raw[3]) << 32
        lo = 0
    else:
        hi = _be64(raw)
        lo = _be64(raw + 8)
    keep_hi = 0 if length == 0 else (~<uint64_t>0) << (64 - length) if length < 64 else ~<uint64_t>0
    keep_lo = 0 if length <= 64 else (~<uint64_t>0) << (128 - length) if length < 128 else ~<uint64_t>0
    if (hi & ~keep_hi) or (lo & ~keep_lo):
        return _NOT_PLAIN                   # host bits set: from_row warns
    if version == 4:
        return (4, hi >> 32, length)
    # IPv4-mapped: kept as IPv4, as from_row does.  The length is then >= 96: a shorter one
    # leaves the mapped address's ffff (bits 80..95) as host bits, refused above.
    if unmap_ipv4(raw) == 4:
        return (4, lo & 0xFFFFFFFFU, length - 96)
    return (6, (<object>hi) << 64 | lo, length)


cdef inline object _port(object value):
    if value is None:
        return 0
    if type(value) is int and 0 <= value <= PORT_MAX:
        return value
    return _NOT_PLAIN


cdef class RowReader:
    """Reads rows of one ``SELECT`` (its column order) into rules."""

    cdef readonly tuple columns
    cdef readonly frozenset not_null
    cdef object listeners, defaults
    cdef tuple not_null_at         # indices of the not_null columns
    cdef Py_ssize_t i_id, i_proto, i_remote, i_rport, i_local, i_lport, i_priority, i_attrs
    cdef Py_ssize_t n_ints
    cdef Py_ssize_t int_index[MAX_PROFILE_INTS]   # -1: the table lacks the column
    cdef long int_top[MAX_PROFILE_INTS]
    cdef bint int_flag[MAX_PROFILE_INTS]
    cdef tuple int_names
    cdef dict profile_template

    def __init__(self, columns, *, listeners=None, defaults=None, not_null=()):
        self.columns = tuple(columns)
        self.not_null = frozenset(not_null)
        self.not_null_at = tuple(i for i, name in enumerate(self.columns) if name in self.not_null)
        self.listeners = listeners
        self.defaults = defaults if defaults is not None else default_profile()
        where = {name: i for i, name in enumerate(self.columns)}
        self.i_id = where.get("id", -1)
        self.i_proto = where.get("proto", -1)
        self.i_remote = where.get("remote_addr", -1)
        self.i_rport = where.get("remote_port", -1)
        self.i_local = where.get("local_addr", -1)
        self.i_lport = where.get("local_port", -1)
        self.i_priority = where.get("priority", -1)
        self.i_attrs = where.get("attrs", -1)
        if len(_INT_PROFILE_FIELDS) > MAX_PROFILE_INTS:
            raise AssertionError("more integer profile columns than RowReader has room for")
        self.n_ints = len(_INT_PROFILE_FIELDS)
        for k, (name, top) in enumerate(_INT_PROFILE_FIELDS):
            self.int_index[k] = where.get(name, -1)
            self.int_top[k] = top
            self.int_flag[k] = name in _FLAG_COLUMNS
        self.int_names = tuple(name for name, _ in _INT_PROFILE_FIELDS)
        # A profile's attributes for a row of NULLs: from_row reads NULL (or a
        # missing column) as int(default), flags as bools, attrs as the default's.
        self.profile_template = {"id": 0}
        for k, name in enumerate(self.int_names):
            default = int(getattr(self.defaults, name))
            self.profile_template[name] = bool(default) if self.int_flag[k] else default
        self.profile_template["attrs"] = self.defaults.attrs

    def __call__(self, values):
        return self._read(values)

    cdef object _read(self, object values):
        rule = self._plain(values) if type(values) is tuple else None
        if rule is None:
            rule = Rule.from_row(dict(zip(self.columns, values)), listeners=self.listeners, defaults=self.defaults)
        return rule

    def read_batch(self, batch, list rules, list rejected, list warnings, set seen_ids):
        """As ``_rows_py.RowReader.read_batch``: the reload's loop over a batch, in C."""
        cdef Py_ssize_t i
        for values in batch:
            try:
                rule = self._read(values)
            except RuleError as exc:
                rejected.append(exc)
                continue
            rule_id = rule.id
            if rule_id in seen_ids:
                rejected.append(RuleError(rule_id, "id", values[self.i_id], "duplicate id"))
                continue
            seen_ids.add(rule_id)
            rules.append(rule)
            if rule.warnings:
                warnings.extend(rule.warnings)
            for i in self.not_null_at:
                if values[i] is None:
                    warnings.extend(null_warnings(
                        rule, [self.columns[k] for k in self.not_null_at if values[k] is None]))
                    break

    cdef inline object _at(self, tuple values, Py_ssize_t i):
        return values[i] if i >= 0 else None

    cpdef object _plain(self, tuple values):
        """The rule of a row that needs no judgement, else ``None``."""
        if PyTuple_GET_SIZE(values) != len(self.columns):
            return None
        rule_id = self._at(values, self.i_id)
        if type(rule_id) is not int or not ID_MIN <= rule_id <= ID_MAX:
            return None
        proto = self._at(values, self.i_proto)
        if type(proto) is not str:
            return None
        proto = _accepted_protos.get(proto, _NOT_PLAIN)
        if proto is _NOT_PLAIN:
            return None
        remote = self._at(values, self.i_remote)
        if remote is not None:
            remote = _prefix(remote)
            if remote is _NOT_PLAIN:
                return None
        local = self._at(values, self.i_local)
        if local is not None:
            local = _prefix(local)
            if local is _NOT_PLAIN:
                return None
            if remote is not None and (<tuple>local)[0] != (<tuple>remote)[0]:
                return None
        remote_port = _port(self._at(values, self.i_rport))
        local_port = _port(self._at(values, self.i_lport))
        if remote_port is _NOT_PLAIN or local_port is _NOT_PLAIN:
            return None
        priority = self._at(values, self.i_priority)
        if priority is None:
            priority = 0
        elif type(priority) is not int or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
            return None
        if self.i_attrs >= 0 and values[self.i_attrs] is not None:
            return None
        # The defaults are in the template; a copy of a dict that size is a memcpy.
        cdef dict profile = self.profile_template.copy()
        profile["id"] = rule_id
        cdef Py_ssize_t k
        for k in range(self.n_ints):
            if self.int_index[k] < 0:
                continue
            value = values[self.int_index[k]]
            if value is None:
                continue
            if type(value) is not int or value < 0 or value > self.int_top[k]:
                return None
            profile[self.int_names[k]] = (value != 0) if self.int_flag[k] else value
        # What Profile._from_checked makes, without the Python call.
        made_profile = _new(Profile)
        PyObject_GenericSetDict(made_profile, profile, NULL)
        # Rule._from_checked's values, in the order of CHECKED (the rule's fields).
        return _rule((rule_id, proto, remote, remote_port, local, local_port, priority, made_profile, None, ()))


cdef object _rule(tuple checked):
    """What ``Rule._from_checked(*checked)`` makes, without the Python call."""
    if PyTuple_GET_SIZE(checked) != N_CHECKED:
        raise AssertionError(f"RowReader gives {PyTuple_GET_SIZE(checked)} of the rule's {N_CHECKED} attributes")
    cdef dict attributes = _PyDict_NewPresized(N_CHECKED + 1)   # as a dict literal is made
    cdef Py_ssize_t k
    for k in range(N_CHECKED):
        attributes[CHECKED[k]] = checked[k]
    attributes["order"] = _order(checked)
    rule = _new(Rule)
    PyObject_GenericSetDict(rule, attributes, NULL)
    return rule


cdef object _order(tuple checked):
    """``key.order_of`` of the rule of ``checked``, the levels above the id
    packed in one C int64 (in range, as _plain reads them, their values fit)."""
    cdef int64_t head = 0, value
    cdef Py_ssize_t k
    for k in range(n_head):
        item = checked[level_at[k]]
        if level_kind[k] == KIND_ANY_NONE:
            value = item is None
        elif level_kind[k] == KIND_ANY_ZERO:
            value = item == 0
        elif level_kind[k] == KIND_LENGTH:
            value = LENGTH_OFFSET - (0 if item is None else <int>(<tuple>item)[2])
        else:
            value = item
        # A product, not a shift: the first level (the priority) may be negative.
        head = head * level_scale[k] + value
    return (<object>head) << last_bits | checked[last_at]
