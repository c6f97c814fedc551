# Compiled types for balancers.py: the round robin's pick is a C loop over typed targets.
cimport cython
from lbd.upstream.target cimport Target

@cython.final
cdef class RoundRobin:
    cdef tuple _targets
    cdef list _scores

    @cython.locals(targets=tuple, scores=list, best=Py_ssize_t, total=double, index=Py_ssize_t,
                   count=Py_ssize_t, target=Target, weight=double, result=Target)
    cpdef object pick(self, object flow_key=*, object exclude=*)

@cython.final
cdef class FlowHash:
    cdef tuple _targets
    cdef long long _size
    cdef public object table
    cdef dict _fallbacks

@cython.final
cdef class ConsistentHash:
    cdef FlowHash _keyed
    cdef RoundRobin _keyless
    cdef public object table

@cython.final
cdef class WeightedRandom:
    cdef tuple _targets
    cdef object _rng

@cython.final
cdef class LeastOutstanding:
    cdef tuple _targets
    cdef Py_ssize_t _next
