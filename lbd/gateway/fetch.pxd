# Compiled types for fetch.py: the gateway's target connections and requests as extension types, so a
# request's bookkeeping is C struct access rather than instance dictionaries.
cimport cython
from lbd.upstream.target cimport Target


@cython.final
cdef class _TargetConnection:
    cdef public Target target
    cdef public long generation
    cdef public object transport, parser
    cdef public _Call call
    cdef public list headers, body
    cdef public long long size
    cdef public bint received, reused, keep_alive, head, partial

    cpdef void begin(self, _Call call) except *
    @cython.locals(parsed=tuple, status=int, head=bytes, keep_alive=bint, body_at=Py_ssize_t)
    cpdef data_received(self, bytes data)
    cpdef void _reply(self, object reply) except *
    cpdef void _fail(self, object exc) except *
    cpdef void close(self) except *


@cython.final
cdef class _Call:
    cdef public GatewayFetch fetch
    cdef public object group, done
    cdef public Target target
    cdef public bytes request
    cdef public bint head, finished
    cdef public _TargetConnection conn
    cdef public double deadline
    cdef public int attempt

    cpdef void replied(self, _TargetConnection conn, object reply) except *
    cpdef void failed(self, _TargetConnection conn, object exc) except *
    cpdef void _end(self) except *


@cython.final
cdef class GatewayFetch:
    cdef public object _groups, _generation, _loop, _timer
    cdef public dict _idle, _inflight
    cdef public bint _closed
    cdef public double _due

    @cython.locals(call=_Call, target=Target, line=str, fields=bytes, request=bytes)
    cpdef _Call start(self, str target_group, str method, str path, object headers, bytes body,
                      double timeout, object done)
    @cython.locals(conn=_TargetConnection)
    cpdef void _send(self, _Call call) except *
    @cython.locals(idle=list, conn=_TargetConnection)
    cpdef _TargetConnection _acquire(self, Target target)
    @cython.locals(idle=list)
    cpdef void _release(self, _TargetConnection conn) except *


@cython.locals(lines=list, fields=list, i=Py_ssize_t, line=str, name=str, value=str)
cpdef list _reply_fields(bytes head)
