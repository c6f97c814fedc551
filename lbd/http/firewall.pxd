# Compiled types for firewall.py: the exchange's fields and the engine's evaluation read with C calls.
cimport cython
from lbd.http.exchange cimport Exchange
from lbd.waf.acl cimport CompiledAcl
from lbd.waf.request cimport WafRequest, fast_request


@cython.final
cdef class Firewall:
    cdef public CompiledAcl acl
    cdef public str name
    cdef public bint needs_body, body_field, uses_headers
    cdef public object clock
    cdef public dict _pages

    cpdef bint wants_body(self, Exchange exchange) except -1
    @cython.locals(block=object, size=Py_ssize_t, headers=object, request=WafRequest)
    cpdef object check(self, Exchange exchange, bytes body)
    @cython.locals(page=bytes)
    cpdef bytes block_page(self, object verdict, bint close)
