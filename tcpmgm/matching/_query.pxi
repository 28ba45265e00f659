# A lookup's arguments into a Query (part of _matcher.pyx; parse_query is shared through
# _matcher.pxd).  Only run with the GIL held, before the classification.

cdef dict _PROTO_CODES = {}      # lookup spelling -> code; the registry only grows

# The protocol strings a program passes are nearly always the same few objects
# (literals, interned names), so a direct-mapped cache keyed by the object's
# address answers most lookups without hashing.  Each slot owns a reference to
# its str, so an address cannot be reused by another object while cached.
cdef enum:
    PROTO_CACHE_BITS = 6
cdef PyObject* _proto_obj[1 << PROTO_CACHE_BITS]
cdef uint32_t _proto_code[1 << PROTO_CACHE_BITS]
memset(_proto_obj, 0, sizeof(_proto_obj))


cdef uint32_t proto_arg(object proto) except? NONE:
    if proto is None:
        return 0
    # Fibonacci hashing of the address: neighbouring objects land in different slots.
    cdef size_t slot = <size_t>((<uint64_t><size_t><PyObject*>proto * 0x9E3779B97F4A7C15ULL)
                                >> (64 - PROTO_CACHE_BITS))
    if _proto_obj[slot] == <PyObject*>proto:
        return _proto_code[slot]
    if type(proto) is str:
        code = _PROTO_CODES.get(proto)
        if code is None:
            code = lookup_proto(proto)          # TypeError / ValueError naming "proto"
            if len(_PROTO_CODES) < 1024:
                _PROTO_CODES[proto] = code
        Py_INCREF(proto)
        Py_XDECREF(_proto_obj[slot])
        _proto_obj[slot] = <PyObject*>proto
        _proto_code[slot] = <uint32_t>code
        return <uint32_t>code
    return <uint32_t>lookup_proto(proto)


cdef inline uint32_t port_arg(object port, str argument) except? NONE:
    cdef int overflow = 0
    cdef long value
    if type(port) is int:
        value = PyLong_AsLongAndOverflow(port, &overflow)
        if 0 <= value <= 65535 and not overflow:
            return <uint32_t>value
        raise ValueError(f"{argument}: {shown(port)} is outside 0..65535")
    return <uint32_t>lookup_port(port, argument)


cdef int parse_query(Query* q, object proto, object remote_ip, object remote_port,
                     object local_ip, object local_port, const Core* warm) except -1:
    """Fills ``q`` from lookup()'s arguments.  With ``warm``, the remote address's slot,
    then its start node and chain, are prefetched while the other arguments are read:
    a single lookup has nothing else to overlap its cache misses with."""
    cdef uint8_t raw[16]
    cdef const Slot* slot = NULL
    q.proto = proto_arg(proto)
    q.rfam = parse_into(remote_ip, raw, "remote_ip")
    if q.rfam:
        set_address(raw, q.rfam, &q.rhi, &q.rlo)
        if warm != NULL:
            slot = slot_of(warm, q)
            if slot != NULL:
                prefetch(slot)
    q.rport = port_arg(remote_port, "remote_port")
    q.lfam = parse_into(local_ip, raw, "local_ip")
    if q.lfam:
        set_address(raw, q.lfam, &q.lhi, &q.llo)
    if slot != NULL:
        if slot.start != NONE:
            prefetch(&warm.nodes[slot.start])
        if slot.chain != NONE:
            prefetch(&warm.pool[slot.chain])
    q.lport = port_arg(local_port, "local_port")
    return 0
