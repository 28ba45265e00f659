# C-level access to the address parser, for the compiled classifier.
from libc.stdint cimport uint8_t

# Writes the address as 16 bytes (IPv4 in the first 4, network order) and
# returns 4 or 6; returns 0 for None.  Raises ValueError/TypeError naming
# ``argument`` like the Python-level ``normalize``.
cdef int parse_into(object value, uint8_t* out, str argument) except -1
