# Compiled types for rate.py: in-process rate windows, hit once per request by rate-based rules.
cimport cython


@cython.final
cdef class _Ring:
    cdef public list counts
    cdef public Py_ssize_t slot, total


@cython.final
cdef class WindowCounter:
    cdef public double window, slice
    cdef public dict _rings

    @cython.locals(slot=Py_ssize_t, ring=_Ring)
    cpdef Py_ssize_t hit(self, str key, double now) except -1
    @cython.locals(ring=_Ring)
    cpdef Py_ssize_t count(self, str key, double now) except -1


@cython.locals(steps=Py_ssize_t, step=Py_ssize_t, index=Py_ssize_t, counts=list)
cpdef void _advance(_Ring ring, Py_ssize_t slot) except *
