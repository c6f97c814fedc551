# Compiled types for target.py: balancers and the exchange read these fields as C struct members.
cimport cython
from lbd.observe.stats cimport TargetStats

@cython.final
cdef class Target:
    cdef public str id, zone
    cdef public int port, weight
    cdef public bint healthy, draining, ejected, eligible
    cdef public double ramp, effective_weight
    cdef public long outstanding
    cdef public TargetStats stats
    cdef public bytes hash_key

    cpdef void refresh(self, bint fail_open=*) except *
