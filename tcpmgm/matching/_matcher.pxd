# What the compiled matcher shares with other compiled modules (the benchmarks' linear scan):
# reading a lookup's arguments exactly as Matcher.lookup does.

from tcpmgm.matching._layout cimport Core, Query

cdef int parse_query(Query* q, object proto, object remote_ip, object remote_port,
                     object local_ip, object local_port, const Core* warm) except -1
