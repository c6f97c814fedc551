# Compiled types for limiter.py: the in-process limiter as an extension type, its admission a C call.
cimport cython


cdef class LocalLimiter:
    cdef public dict _buckets, _quotas

    @cython.locals(states=list, state=list, used="long long", held=tuple, key=str)
    cpdef object admit_now(self, object buckets, object quota, double now)
