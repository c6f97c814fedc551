# Compiled types for keys.py (Cython pure-Python mode: this file augments the .py, which stays the one
# source): the key builders call each other as C functions.
cimport cython

cdef tuple _LENGTHS
cdef dict _EDGE_PREFIXES

cdef bytes _length(Py_ssize_t n)

@cython.locals(data=bytes)
cpdef bytes _field(str value)

@cython.locals(prefix=bytes)
cpdef bytes edge_prefix(str distribution)

@cython.locals(out=list, name=str, value=str)
cpdef bytes edge_key(str distribution, str path, str query, object parts)
