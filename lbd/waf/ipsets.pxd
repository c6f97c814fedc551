# Compiled types for ipsets.py: an IP set's lookup is a C call from its matcher.
cimport cython


@cython.final
cdef class IpMatcher:
    cdef public tuple _v4, _v6
    cdef public Py_ssize_t size

    @cython.locals(version=object, value=object, starts=list, ends=list, at=Py_ssize_t)
    cpdef bint contains(self, object address) except -1
