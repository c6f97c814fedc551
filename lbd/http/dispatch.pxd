# Compiled types for dispatch.py: the per-listener dispatcher and its route decisions as extension types.
cimport cython
from lbd.http.exchange cimport Exchange
from lbd.routing.conditions cimport BytesMatcher

@cython.final
cdef class RouteDecision:
    cdef public str kind, redirect_url
    cdef public object target_group
    cdef public bytes response, set_cookie
    cdef public int priority

@cython.final
cdef class HttpDispatcher:
    cdef public object runtime, table, xff_mode, desync_mode
    cdef public int listener_port, fast_pattern
    cdef public bytes port, scheme_bytes, _forwarded_fields
    cdef public str scheme
    cdef public bint default_port, xff_client_port, preserve_host, drop_invalid
    cdef public dict _target_hosts
    cdef public RouteDecision _fast, _unmatched
    cdef public BytesMatcher _gate
    cdef public object waf

    @cython.locals(gate=BytesMatcher, unmatched=RouteDecision)
    cpdef RouteDecision route(self, Exchange exchange)
    @cython.locals(target_host=bytes, cached=tuple, forwarded=bytes, trace=bytes,
                   head=bytes)
    cpdef tuple fast_head(self, Exchange exchange, bytes block, bytes host, Py_ssize_t host_at)

@cython.final
cdef class _TraceRoots:
    cdef public long long second
    cdef public bytes prefix, digits
    cdef public Py_ssize_t at

    @cython.locals(second="long long", at=Py_ssize_t)
    cpdef bytes new(self)

cdef _TraceRoots _trace_roots
cdef dict _METHOD_BYTES
