# cython: language_level=3, boundscheck=False, wraparound=False
"""The linear-scan baseline (benchmarks/README.md#baselines): the rules sorted by key, tried one by one.

The algorithm OpenSIPS's tcp_mgm uses, compiled, with every filter inline in one
flat array so that the comparison with :class:`tcpmgm.matching._matcher.Matcher`
is fair.  It reads its arguments and asks "does this rule match" with the
matcher's own C (``parse_query``, ``rule_matches``), so that the two differ only
in how they find the winner.
"""

from cpython.ref cimport PyObject
from libc.stdint cimport uint16_t, uint32_t
from libc.stdlib cimport calloc, free

from tcpmgm.matching._bits cimport split_prefix
from tcpmgm.matching._layout cimport Prefix, Query
from tcpmgm.matching._matcher cimport parse_query
from tcpmgm.matching._predicate cimport rule_matches

from tcpmgm.matching.arguments import check_unique_ids
from tcpmgm.model.profile import default_profile
from tcpmgm.model.protocols import protocol_code
from tcpmgm.model.rule import Rule

cdef extern from "Python.h":
    PyObject* PyTuple_GET_ITEM(object, Py_ssize_t)

__all__ = ["LinearScanBaseline"]


ctypedef struct ScanRule:
    Prefix remote, local      # family 0: any
    uint16_t proto, rport, lport


cdef int read_prefix(object prefix, Prefix* out) except -1:
    cdef int family
    if prefix is not None:
        out.plen = split_prefix(prefix, &family, &out.hi, &out.lo)
        out.family = family
    return 0


cdef class LinearScanBaseline:
    """Benchmark baseline only: the rules in key order, the first that matches wins."""

    cdef ScanRule* rules
    cdef uint32_t n
    cdef tuple _profiles
    cdef object _default

    def __dealloc__(self):
        free(self.rules)

    def __init__(self, rules=(), *, default=None):
        ordered = sorted(check_unique_ids(rules), key=Rule.key)
        self._profiles = tuple([rule.profile for rule in ordered])
        self._default = (default if default is not None else default_profile()).replace(id=0)
        free(self.rules)
        self.n = len(ordered)
        self.rules = <ScanRule*>calloc(self.n + 1, sizeof(ScanRule))
        if self.rules == NULL:
            raise MemoryError()
        cdef ScanRule* s
        cdef uint32_t i
        for i in range(self.n):
            rule = ordered[i]
            s = &self.rules[i]
            s.proto = protocol_code(rule.proto)
            s.rport = rule.remote_port
            s.lport = rule.local_port
            read_prefix(rule.remote_prefix, &s.remote)
            read_prefix(rule.local_prefix, &s.local)

    def lookup(self, proto, remote_ip, remote_port=0, local_ip=None, local_port=0):
        """The profile of the first rule in key order that matches, or the default (id 0)."""
        cdef Query q
        cdef uint32_t i
        cdef const ScanRule* s
        parse_query(&q, proto, remote_ip, remote_port, local_ip, local_port, NULL)
        for i in range(self.n):
            s = &self.rules[i]
            if rule_matches(s.proto, s.rport, s.lport, &s.remote, &s.local, &q):
                return <object>PyTuple_GET_ITEM(self._profiles, i)
        return self._default
