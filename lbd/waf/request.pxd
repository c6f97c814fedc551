# Compiled types for request.py: the request a web ACL inspects, with typed fields.
cimport cython


@cython.final
cdef class WafRequest:
    cdef public bytes method, path, query, body
    cdef public object headers, api_key, _header_map, _address
    cdef public str client
    cdef public long long body_size
    cdef public list labels
    cdef public dict memo, _forwarded

    @cython.locals(memo=dict, value=object, found=object, slot=str)
    cpdef object field(self, tuple key)
    cpdef object _raw(self, str name, object header)
    @cython.locals(found=object, previous=object)
    cpdef object header(self, bytes lower_name)
    cpdef object address(self)
    @cython.locals(found=object, value=object)
    cpdef list forwarded(self, bytes header)
