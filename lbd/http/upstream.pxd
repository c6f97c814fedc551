# Compiled types for upstream.py: target connections and the pool as extension types.
cimport cython
from lbd.http.exchange cimport Exchange
from lbd.upstream.target cimport Target


@cython.final
cdef class HttpTargetSide:
    cdef public UpstreamPool pool
    cdef public Target target
    cdef public long generation
    cdef public object transport, parser, tunnel
    cdef public Exchange exchange
    cdef public bytes reason
    cdef public list headers
    cdef public double idle_since
    cdef public bint reused, _in_message, _fast_keep_alive
    cdef public long long _head_bytes
    cdef public long long remaining

    @cython.locals(exchange=Exchange, parsed=tuple, status=int, head=bytes, length="long long",
                   keep_alive=bint, body_at=Py_ssize_t, body=bytes)
    cpdef data_received(self, bytes data)
    @cython.locals(remaining="long long")
    cpdef void _body_more(self, Exchange exchange, bytes data) except *
    cpdef void write(self, bytes data) except *
    cpdef void close(self) except *
    cpdef void abort(self) except *

@cython.final
cdef class UpstreamPool:
    cdef public Py_ssize_t max_idle_per_target
    cdef public double idle_timeout
    cdef public dict _idle
    cdef public object _loop, _sweeper, h2
    cdef public long generation
    cdef public long long opened

    @cython.locals(idle=list, conn=HttpTargetSide)
    cpdef HttpTargetSide acquire(self, Target target)
    @cython.locals(idle=list)
    cpdef void release(self, HttpTargetSide conn) except *
