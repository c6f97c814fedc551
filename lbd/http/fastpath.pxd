# Compiled types for fastpath.py (Cython pure-Python mode: this file augments the .py, which stays the one
# source). Bytes are read through C pointers; indices are C integers.
cimport cython

cdef bytes TCHAR, ALNUM_NAME, VALUE, REQUEST_VALUE, TARGET, HOST_NAME
cdef dict _METHODS
cdef tuple _REQUEST_SPECIAL, _RESPONSE_FIELDS
cdef frozenset _SPECIAL_LENGTHS, _RESPONSE_LENGTHS
cdef Py_ssize_t FAST_REQUEST_MAX, _MAX_DIGITS
cdef int _KEEP, _LENGTH, _CONNECTION, _CUT, _DECLINE

@cython.locals(i=Py_ssize_t, c=int)
cdef bint _name_is(bytes data, Py_ssize_t at, Py_ssize_t size, bytes lower) noexcept

@cython.locals(name=bytes)
cdef bint _special_request_field(bytes data, Py_ssize_t at, Py_ssize_t size) except -1

@cython.locals(
    p="const unsigned char *", tchar="const unsigned char *", name_table="const unsigned char *", host=bytes,
    value_table="const unsigned char *", target="const unsigned char *",
    n=Py_ssize_t, i=Py_ssize_t, url_at=Py_ssize_t, url_end=Py_ssize_t, block_at=Py_ssize_t,
    host_at=Py_ssize_t, host_end=Py_ssize_t, name_at=Py_ssize_t, size=Py_ssize_t, value_at=Py_ssize_t,
    minor=int, connection=bint, cut_at=Py_ssize_t, cut_end=Py_ssize_t, close=bint, keep_alive_option=bint,
    keep_alive=bint, options=int, block=bytes,
)
cpdef tuple simple_request(bytes data, int names)

@cython.locals(name=bytes, kind=int)
cdef int _response_field(bytes data, Py_ssize_t at, Py_ssize_t size) except -1

@cython.locals(p="const unsigned char *", found=int, option_at=Py_ssize_t, option_end=Py_ssize_t,
               size=Py_ssize_t)
cdef int _connection_options(bytes data, Py_ssize_t at, Py_ssize_t end) except -2

@cython.locals(
    p="const unsigned char *", tchar="const unsigned char *", value_table="const unsigned char *",
    n=Py_ssize_t, i=Py_ssize_t, minor=int, d0=int, d1=int, d2=int, status=int, reason_end=Py_ssize_t,
    block_at=Py_ssize_t, keep_alive=bint, length="long long", spans=list, kept_at=Py_ssize_t,
    line_at=Py_ssize_t, size=Py_ssize_t, kind=int, value_at=Py_ssize_t, value_end=Py_ssize_t,
    options=int, body_at=Py_ssize_t, k=Py_ssize_t, pieces=list,
)
cpdef tuple simple_response(bytes data)

@cython.locals(p="const unsigned char *", name="const unsigned char *", i=Py_ssize_t, port="long long")
cdef bint _plain_host(bytes data, Py_ssize_t at, Py_ssize_t end) except -1

@cython.locals(p="const unsigned char *", value="long long", digit=int)
cdef long long _decimal(bytes data, Py_ssize_t at, Py_ssize_t end) noexcept
