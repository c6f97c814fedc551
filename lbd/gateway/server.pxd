# Compiled types for server.py: the API client connection as an extension type with typed fields, and the
# pipeline it hands requests to as a C call.
cimport cython
from lbd.observe.stats cimport ListenerStats
from lbd.gateway.pipeline cimport ApiPipeline, Outcome
from lbd.gateway.request cimport GatewayRequest


@cython.final
cdef class GatewayClientSide:
    cdef public object runtime, tracker, transport, parser, queue, task, current, timer, _loop
    cdef public ListenerStats stats
    cdef public ApiPipeline pipeline
    cdef public tuple peer
    cdef public bint _inline, closing, paused, _refused, _partial, edge
    cdef public double idle_since, _started
    cdef public bytes _url
    cdef public dict _headers
    cdef public list _body
    cdef public long long _size, _head_size
    cdef public str scheme, port
    cdef public bytes _forwarded
    cdef public object _forwarded_peer

    @cython.locals(parsed=tuple, headers=dict, block=bytes, host_at=Py_ssize_t, raw=bytes)
    cpdef data_received(self, bytes data)
    @cython.locals(path=str, query=str, forwarded=str, request=GatewayRequest, source=str, scheme=str,
                   port=str)
    cpdef void _enqueue(self, str method, str url, dict headers, bytes body, bint keep_alive,
                        bytes raw) except *
    @cython.locals(outcome=Outcome, keep_alive=bint, started=double, request=GatewayRequest)
    cpdef void _serve(self) except *
    @cython.locals(keep_alive=bint, started=double, outcome=Outcome, request=GatewayRequest)
    cpdef void _answered(self, object answer) except *
    cpdef void _served(self) except *
    cpdef bytes _forwarded_lines(self)
    @cython.locals(body=bytes, start=bytes, tail=bytes, out=bytes)
    cpdef void _write(self, object answer, bint head, str request_id) except *
    cpdef void _arm(self) except *


@cython.locals(headers=dict, size=Py_ssize_t, at=Py_ssize_t, end=Py_ssize_t, colon=Py_ssize_t,
               start=Py_ssize_t, stop=Py_ssize_t, c=cython.uchar, upper=bint, name=str, value=str)
cpdef dict block_fields(bytes block)
@cython.locals(start=Py_ssize_t, end=Py_ssize_t)
cpdef bytes without_field(bytes block, Py_ssize_t at)
cpdef void _add_field(dict headers, str name, str value) except *
cpdef str _request_id()
