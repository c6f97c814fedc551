# Compiled types for hit.py (Cython pure-Python mode: this file augments the .py, which stays the one
# source). The head is read through a C pointer; indices are C integers.
cimport cython

cdef bytes TCHAR, VALUE, TARGET, _URL_SAFE, _ids
cdef frozenset DECLINED
cdef tuple _RESPONSE_CLASSES
cdef Py_ssize_t MAX_SCANNED, _ID_BYTES, _IDS_AT_ONCE, _next_id

@cython.locals(p="const unsigned char *", i=Py_ssize_t, c=int)
cdef bint _lower_is(bytes data, Py_ssize_t at, Py_ssize_t end, bytes lower) noexcept

@cython.locals(p="const unsigned char *", found=int, option_at=Py_ssize_t, option_end=Py_ssize_t)
cdef int _connection_options(bytes data, Py_ssize_t at, Py_ssize_t end) noexcept

@cython.locals(
    p="const unsigned char *", tchar="const unsigned char *", value_table="const unsigned char *",
    target="const unsigned char *", n=Py_ssize_t, i=Py_ssize_t, url_at=Py_ssize_t, url_end=Py_ssize_t,
    query_at=Py_ssize_t, minor=int, name_at=Py_ssize_t, name_end=Py_ssize_t, value_at=Py_ssize_t,
    value_end=Py_ssize_t, close=bint, keep_alive_option=bint, keep_alive=bint, options=int, fields=dict,
    name=str, value=str, path=str, query=str, method=str,
)
cpdef tuple scan_request(bytes data)

@cython.locals(at=Py_ssize_t)
cpdef bytes request_id()

@cython.final
cdef class HitRoute:
    cdef public object dist, cache, engine, stats
    cdef public str name
    cdef public tuple behaviors, methods, key_policies
    cdef public bytes hit_fields

@cython.locals(
    route=HitRoute, index=Py_ssize_t, scanned=tuple, method=str, version=str, path=str, query=str,
    fields=dict, keep_alive=bint, key=bytes, names=tuple, now=double, head=bytes, body=bytes,
    age="long long", close=bint, tail=bytes, sent=Py_ssize_t, rid=bytes, response=bytes, status_class=int,
    results=dict, responses=dict, klass=str,
)
cpdef bint serve_hit(object conn, bytes data) except -1
