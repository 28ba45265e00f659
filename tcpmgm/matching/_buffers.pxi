# lookup_many's buffers and its batch pipeline (part of _matcher.pyx).
#
# A buffer is read from its raw bytes as its format says (width from the itemsize, signedness
# from the format letter), never through memoryview indexing, which knows no byte-order prefix
# ('<i' from ctypes).  An integer item is zero-extended to 64 bits and only then checked
# against its range, so a negative signed value cannot turn into a large unsigned one on the way.

cdef enum:
    COL_NONE = 0              # argument was None: every row 0 / no address
    COL_SCALAR = 1            # protos given as one str: same code for every row
    COL_INT = 2               # integer buffer
    COL_V4 = 3                # uint32 IPv4 addresses, host order
    COL_PACKED = 4            # 16-byte packed addresses
    AHEAD = 4                 # the pipeline's distance between stages (lookups)
    DESCENT = 3               # its stages that prefetch one trie level each
    ID_AHEAD = 16             # its prefetch distance when it turns ranks into ids
    RING = 32                 # its ring of lookups in flight: a power of two > (2 + DESCENT) * AHEAD
    PIPELINE_MIN = 16384      # nodes + groups below which the pipeline does not prefetch
    BAD_PROTO = 0             # Batch.bad_column
    BAD_REMOTE_PORT = 1
    BAD_LOCAL_PORT = 2

ctypedef struct Column:
    const uint8_t* data
    Py_ssize_t n
    int kind
    int itemsize
    bint signed
    uint32_t scalar

ctypedef struct Batch:        # lookup_many's arguments
    Column protos, remote_ips, remote_ports, local_ips, local_ports
    Py_ssize_t n
    uint32_t max_code         # protocol codes are below it
    # where reading stopped (bad >= 0): the row, its column (BAD_*) and the item's bits
    Py_ssize_t bad
    int bad_column
    uint64_t bad_bits

cdef str _INT_FORMATS = "bBhHiIlLqQnN"
# Format prefixes that mean this machine's byte order ('@' and '=' always do).
cdef tuple _NATIVE_ORDER = ("@", "=", "<") if sys.byteorder == "little" else ("@", "=", ">", "!")
cdef tuple _FOREIGN_ORDER = (">", "!") if sys.byteorder == "little" else ("<",)
cdef str _FOREIGN_NAME = "big-endian" if sys.byteorder == "little" else "little-endian"


cdef object _buffer_view(object obj, str argument):
    """``memoryview(obj)``, refused with the message lookup_many documents."""
    try:
        return memoryview(obj)
    except (TypeError, ValueError, BufferError) as exc:
        # TypeError: no buffer at all; ValueError/BufferError: an exporter that
        # refuses (a NumPy datetime array, a released view).
        raise TypeError(
            f"{argument}: expected a buffer (array.array, bytes, memoryview, NumPy array) or None, "
            f"got {type(obj).__name__}" + ("" if isinstance(exc, TypeError) else f" ({exc})")
        ) from None


cdef object column(Column* col, object obj, str argument, bint address):
    """Fill ``col`` from ``obj``; returns the object that keeps the memory alive."""
    memset(col, 0, sizeof(Column))
    if obj is None:
        col.kind = COL_NONE
        return None
    view = _buffer_view(obj, argument)
    fmt = view.format
    order = fmt[:1]
    if order in _NATIVE_ORDER or order in _FOREIGN_ORDER:
        fmt = fmt[1:]
        # Byte order means nothing for one-byte items ('<B' from ctypes).
        if order in _FOREIGN_ORDER and view.itemsize != 1:
            raise ValueError(f"{argument}: {_FOREIGN_NAME} buffers are not accepted, use native byte order")
    if not view.c_contiguous:
        raise ValueError(f"{argument}: the buffer must be C-contiguous")
    if address and fmt in ("B", "b", "c") and view.itemsize == 1:
        # Bytes, or rows of 16 bytes (NumPy (n, 16), ctypes (c_ubyte * 16) * n).
        if view.nbytes % 16 or (view.ndim > 1 and view.shape[1:] != (16,)):
            got = f"{view.nbytes} bytes" if view.ndim <= 1 else f"shape {view.shape}"
            raise ValueError(f"{argument}: packed IPv6 buffers hold 16 bytes per address, got {got}")
        col.kind = COL_PACKED
        col.n = view.nbytes // 16
        return _bytes_of(col, view)
    if view.ndim != 1:
        raise ValueError(f"{argument}: expected a one-dimensional buffer, got {view.ndim} dimensions")
    # The itemsize, not the letter, gives the width ('<l' is 4 bytes, '@l' 8 here);
    # an exporter claiming any other width is refused rather than read past.
    if len(fmt) != 1 or fmt not in _INT_FORMATS or view.itemsize not in (1, 2, 4, 8):
        raise TypeError(f"{argument}: expected a buffer of integers, got format {view.format!r}")
    if address:
        if view.itemsize != 4 or fmt.islower():
            raise TypeError(
                f"{argument}: IPv4 addresses must be unsigned 32-bit integers (array 'I'), "
                f"got format {view.format!r}; IPv6 goes in a bytes buffer of 16 bytes per address"
            )
        col.kind = COL_V4
    else:
        col.kind = COL_INT
    col.itemsize = view.itemsize
    col.signed = fmt.islower()
    col.n = view.shape[0]
    return _bytes_of(col, view)


cdef object _bytes_of(Column* col, object view):
    """Points ``col.data`` at ``view``'s bytes; returns what keeps them alive."""
    # An empty buffer (its cast can fail: zeros in its shape) gets a byte that
    # is never read, so that data is a valid pointer.
    cdef const uint8_t[::1] raw = view.cast("B") if view.nbytes else bytearray(1)
    col.data = &raw[0]
    return raw


cdef int _check_length(str argument, const Column* col, Py_ssize_t expected) except -1:
    if (col.kind == COL_INT or col.kind == COL_V4 or col.kind == COL_PACKED) and col.n != expected:
        raise ValueError(f"{argument}: {col.n} items, but remote_ips has {expected}")
    return 0


cdef tuple open_batch(Batch* b, object protos, object remote_ips, object remote_ports,
                      object local_ips, object local_ports):
    """Fill ``b`` from lookup_many's arguments; returns what keeps their memory alive."""
    memset(b, 0, sizeof(Batch))
    b.bad = -1
    b.max_code = len(protocols())
    keep = (
        column(&b.remote_ips, remote_ips, "remote_ips", True),
        column(&b.local_ips, local_ips, "local_ips", True),
        column(&b.remote_ports, remote_ports, "remote_ports", False),
        column(&b.local_ports, local_ports, "local_ports", False),
    )
    if b.remote_ips.kind == COL_NONE:
        raise TypeError("remote_ips: a buffer of addresses is required")
    if isinstance(protos, str):
        b.protos.kind = COL_SCALAR
        b.protos.scalar = proto_arg(protos)
    else:
        keep += (column(&b.protos, protos, "protos", False),)
    b.n = b.remote_ips.n
    _check_length("protos", &b.protos, b.n)
    _check_length("remote_ports", &b.remote_ports, b.n)
    _check_length("local_ips", &b.local_ips, b.n)
    _check_length("local_ports", &b.local_ports, b.n)
    return keep


cdef inline bint read_int(const Column* col, Py_ssize_t i, uint64_t top, uint64_t* bits) noexcept nogil:
    """Item ``i`` zero-extended into ``bits``; True when its value lies in 0..top.

    A None column reads 0, a scalar one its code."""
    cdef const uint8_t* p = col.data + i * col.itemsize
    cdef uint16_t v16
    cdef uint32_t v32
    cdef uint64_t v
    if col.kind != COL_INT:
        bits[0] = col.scalar
        return True
    if col.itemsize == 1:
        v = p[0]
    elif col.itemsize == 2:
        memcpy(&v16, p, 2)
        v = v16
    elif col.itemsize == 4:
        memcpy(&v32, p, 4)
        v = v32
    else:
        memcpy(&v, p, 8)
    bits[0] = v
    if col.signed and v >> (8 * col.itemsize - 1):      # the sign bit: negative
        return False
    return v <= top


cdef inline int read_address(const Column* col, Py_ssize_t i, uint64_t* hi, uint64_t* lo) noexcept nogil:
    cdef const uint8_t* p
    cdef uint32_t v4
    if col.kind == COL_NONE:
        return 0
    if col.kind == COL_V4:
        memcpy(&v4, col.data + 4 * i, 4)
        hi[0] = <uint64_t>v4 << 32
        lo[0] = 0
        return 4
    p = col.data + 16 * i         # read in place: a copy to unmap costs ~5 instructions a row
    set_address(p, 6, hi, lo)
    if is_ipv4_mapped(p):
        set_address(p + 12, 4, hi, lo)
        return 4
    return 6


cdef inline bint read_query(Batch* b, Py_ssize_t i, Query* q) noexcept nogil:
    """Row ``i`` into ``q``; False (and ``b.bad`` set) when one of its items is out of range."""
    cdef uint64_t bits
    if not read_int(&b.protos, i, b.max_code, &bits):
        b.bad, b.bad_column, b.bad_bits = i, BAD_PROTO, bits
        return False
    q.proto = <uint32_t>bits
    if not read_int(&b.remote_ports, i, 65535, &bits):
        b.bad, b.bad_column, b.bad_bits = i, BAD_REMOTE_PORT, bits
        return False
    q.rport = <uint32_t>bits
    if not read_int(&b.local_ports, i, 65535, &bits):
        b.bad, b.bad_column, b.bad_bits = i, BAD_LOCAL_PORT, bits
        return False
    q.lport = <uint32_t>bits
    q.rfam = read_address(&b.remote_ips, i, &q.rhi, &q.rlo)
    q.lfam = read_address(&b.local_ips, i, &q.lhi, &q.llo)
    return True


cdef int raise_bad_item(const Batch* b) except -1:
    """The ValueError for the item ``read_query`` stopped at."""
    cdef const Column* col = (&b.protos if b.bad_column == BAD_PROTO
                              else &b.remote_ports if b.bad_column == BAD_REMOTE_PORT else &b.local_ports)
    cdef object value = b.bad_bits
    cdef object width = 8 * col.itemsize        # a Python int: the shift below must not wrap
    if col.signed and b.bad_bits >> (8 * col.itemsize - 1):
        value -= 1 << width
    if b.bad_column == BAD_PROTO:
        raise ValueError(f"protos[{b.bad}]: unknown protocol code {value}")
    name = "remote_ports" if b.bad_column == BAD_REMOTE_PORT else "local_ports"
    raise ValueError(f"{name}[{b.bad}]: {value} is outside 0..65535")


cdef void classify_batch(const Core* c, Batch* batch, uint32_t* out32, int64_t* out64) noexcept nogil:
    """The rank of each row into ``out32`` (or ``out64`` when that is not NULL), NONE for none;
    stops at a row ``read_query`` refuses.

    A software pipeline over independent lookups, AHEAD lookups between stages: (0) decode
    lookup i and prefetch its first-stride slot; (1) prefetch the trie node that slot starts at
    and its chain's first short prefix; (2) to (1 + DESCENT) each go one node down the address's
    path, prefetching that node's groups and its child (the first also the chain's groups); then
    classify.  The cache misses of several lookups overlap instead of following one another, and
    classify mostly finds its lines in cache."""
    # A copy on the stack: stores into the ring cannot alias it, so the compiler keeps the
    # columns in registers instead of reloading them for every row (a quarter of the batch's
    # instructions, callgrind).
    cdef Batch b = batch[0]
    cdef Query ring[RING]
    cdef const Slot* ring_slot[RING]
    cdef uint32_t ring_node[RING]       # the next node of each lookup's prefetch descent
    cdef Query* qq
    cdef const Slot* sl
    cdef Py_ssize_t i, j, stage, n = b.n
    cdef uint32_t rank
    # A small matcher stays in cache: the prefetch stages would only cost time.
    cdef Py_ssize_t ahead = AHEAD if c.n_nodes + c.n_groups > PIPELINE_MIN else 0
    cdef Py_ssize_t lag = (2 + DESCENT) * ahead      # from decoding a lookup to classifying it
    for i in range(n + lag):
        if i < n:
            qq = &ring[i & (RING - 1)]
            if not read_query(&b, i, qq):
                batch[0] = b
                return
            sl = ring_slot[i & (RING - 1)] = slot_of(c, qq)
            if sl != NULL:
                prefetch(sl)
        for stage in range(1, 2 + DESCENT if ahead else 1):
            j = i - stage * ahead
            if j < 0 or j >= n:
                continue
            sl = ring_slot[j & (RING - 1)]
            if sl == NULL:
                continue
            if stage == 1:
                ring_node[j & (RING - 1)] = sl.start
                if sl.start != NONE:
                    prefetch(&c.nodes[sl.start])
                if sl.chain != NONE:
                    prefetch(&c.pool[sl.chain])
                continue
            if stage == 2 and sl.chain != NONE:
                prefetch(&c.groups[c.pool[sl.chain].group_off])
            ring_node[j & (RING - 1)] = prefetch_step(c, &ring[j & (RING - 1)], ring_node[j & (RING - 1)])
        if i >= lag:
            rank = classify(c, &ring[(i - lag) & (RING - 1)])
            if out64 != NULL:
                out64[i - lag] = rank
            else:
                out32[i - lag] = rank


cdef inline void ranks_to_ids(const Core* c, Py_ssize_t n, uint32_t* out32, int64_t* out64,
                              uint64_t* hits) noexcept nogil:
    """Each rank in place into its rule's id (0: the default), in a pass of its own: each id is
    a cache miss at a million rules, and here nothing waits on it.  With ``hits`` (not NULL)
    each row's win is counted on the way, and the caller holds the GIL (_hits.pxi says why)."""
    cdef Py_ssize_t i
    cdef uint32_t rank, ahead
    if out64 != NULL:
        for i in range(n):
            if i + ID_AHEAD < n:
                ahead = <uint32_t>out64[i + ID_AHEAD]
                if ahead != NONE:
                    prefetch(&c.id_of_rank[ahead])
                if hits != NULL:
                    prefetch(&hits[hit_slot(ahead)])
            rank = <uint32_t>out64[i]
            if hits != NULL:
                hits[hit_slot(rank)] += 1
            out64[i] = 0 if rank == NONE else c.id_of_rank[rank]
        return
    for i in range(n):
        if i + ID_AHEAD < n:
            ahead = out32[i + ID_AHEAD]
            if ahead != NONE:
                prefetch(&c.id_of_rank[ahead])
            if hits != NULL:
                prefetch(&hits[hit_slot(ahead)])
        rank = out32[i]
        if hits != NULL:
            hits[hit_slot(rank)] += 1
        out32[i] = 0 if rank == NONE else <uint32_t>c.id_of_rank[rank]
