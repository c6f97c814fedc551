# Compiled types for request.py: the request a web ACL inspects, with typed fields.
cimport cython


# One per request on listeners with a web ACL: kept out of the cyclic GC (its fields hold bytes, str,
# lists of them and caches of them, never a reference back) and reused from a free list.
@cython.final
@cython.no_gc
@cython.freelist(8)
cdef class WafRequest:
    cdef public bytes method, body
    cdef public object url, path, query, block, _lowered
    cdef public object headers, api_key, _header_map, _address, memo, _forwarded
    cdef public str client
    cdef public long long body_size
    cdef public list labels, values

    cpdef object raw(self, int kind, bytes header)
    @cython.locals(url=bytes, size=Py_ssize_t, question=Py_ssize_t, hash_at=Py_ssize_t, at=Py_ssize_t,
                   char=cython.uchar)
    cpdef void _split(self) except *
    @cython.locals(found=object, previous=object)
    cpdef object header(self, bytes lower_name)
    @cython.locals(block=bytes, lowered=bytes, needle=bytes, found=object, at=Py_ssize_t,
                   start=Py_ssize_t, end=Py_ssize_t, value=bytes)
    cpdef object _block_header(self, bytes lower_name)
    cpdef object field(self, tuple key)
    cpdef object address(self)
    @cython.locals(found=object, value=object, cache=dict)
    cpdef list forwarded(self, bytes header)


@cython.locals(request=WafRequest)
cpdef WafRequest fast_request(str method, bytes url, bytes block, str client)
@cython.locals(found=object)
cpdef bytes method_bytes(str method)
