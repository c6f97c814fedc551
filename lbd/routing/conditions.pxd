# Compiled types for conditions.py: the byte-level matcher as an extension type, its tests typed so that
# set lookup and startswith/endswith over a tuple run as C calls.
cimport cython

@cython.final
cdef class BytesMatcher:
    cdef public object text, regex
    cdef public bint fold
    cdef public frozenset exact
    cdef public tuple prefixes, suffixes

    cpdef bint matches(self, bytes data) except -1
