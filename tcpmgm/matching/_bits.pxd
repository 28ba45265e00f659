# The 128-bit address key of _layout.pxd (IPv4 in the top 32 bits of ``hi``): reading it, masking
# it, hashing it.  Inline, so each user compiles them into its own code.

from libc.stdint cimport uint8_t, uint32_t, uint64_t

cdef extern from *:
    """
    #include <string.h>
    static inline int tcpmgm_clz64(unsigned long long x) { return x ? __builtin_clzll(x) : 64; }
    static inline unsigned long long tcpmgm_load_be64(const unsigned char* p) {
        unsigned long long v; memcpy(&v, p, 8); return __builtin_bswap64(v);
    }
    static inline unsigned int tcpmgm_load_be32(const unsigned char* p) {
        unsigned int v; memcpy(&v, p, 4); return __builtin_bswap32(v);
    }
    #define tcpmgm_prefetch(p) __builtin_prefetch(p)
    """
    int clz64 "tcpmgm_clz64"(uint64_t x) nogil
    uint64_t load_be64 "tcpmgm_load_be64"(const uint8_t* p) nogil
    uint32_t load_be32 "tcpmgm_load_be32"(const uint8_t* p) nogil
    void prefetch "tcpmgm_prefetch"(const void* p) nogil


cdef inline uint64_t mask_hi(int plen) noexcept nogil:
    if plen <= 0:
        return 0
    if plen >= 64:
        return 0xFFFFFFFFFFFFFFFFULL
    return 0xFFFFFFFFFFFFFFFFULL << (64 - plen)


cdef inline uint64_t mask_lo(int plen) noexcept nogil:
    if plen <= 64:
        return 0
    return 0xFFFFFFFFFFFFFFFFULL << (128 - plen)


cdef inline int bit_at(uint64_t hi, uint64_t lo, int i) noexcept nogil:
    if i < 64:
        return <int>((hi >> (63 - i)) & 1)
    return <int>((lo >> (127 - i)) & 1)


cdef inline bint covers(uint64_t phi, uint64_t plo, int plen, uint64_t hi, uint64_t lo) noexcept nogil:
    return ((hi ^ phi) & mask_hi(plen)) == 0 and ((lo ^ plo) & mask_lo(plen)) == 0


cdef inline uint64_t mix(uint64_t x) noexcept nogil:
    x ^= x >> 33
    x *= 0xFF51AFD7ED558CCDULL
    x ^= x >> 33
    x *= 0xC4CEB9FE1A85EC53ULL
    x ^= x >> 33
    return x


cdef inline uint64_t entry_hash(uint64_t a, uint32_t local_id, uint32_t lport) noexcept nogil:
    return mix(a ^ ((<uint64_t>local_id << 16 | lport) * 0x9E3779B97F4A7C15ULL))


cdef inline uint64_t local_hash(uint64_t hi, uint64_t lo, uint32_t fp) noexcept nogil:
    return mix(hi ^ mix(lo ^ fp))


cdef inline void set_address(const uint8_t* raw, int family, uint64_t* hi, uint64_t* lo) noexcept nogil:
    # ``raw`` as _addr.parse_into writes it: IPv4 in the first 4 bytes, network order.
    if family == 4:
        hi[0] = <uint64_t>load_be32(raw) << 32
        lo[0] = 0
    else:
        hi[0] = load_be64(raw)
        lo[0] = load_be64(raw + 8)


cdef inline int split_prefix(tuple prefix, int* family, uint64_t* hi, uint64_t* lo) except -1:
    """Reads a :data:`tcpmgm.rule.Prefix` ``(version, network int, length)`` as the key; returns its length."""
    cdef object value = prefix[1]
    family[0] = prefix[0]
    if family[0] == 4:
        hi[0] = <uint64_t>value << 32
        lo[0] = 0
    else:
        hi[0] = <uint64_t>(value >> 64)
        lo[0] = <uint64_t>(value & 0xFFFFFFFFFFFFFFFFULL)
    return prefix[2]
