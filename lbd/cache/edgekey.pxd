# Compiled types for edgekey.py (Cython pure-Python mode: this file augments the .py, which stays the one
# source): a request's key is made by C calls between these functions.
cimport cython

@cython.locals(chosen=list, part=str, name=str)
cpdef str query_key(str query, object rule)

cpdef list header_parts(object headers, object names)

cpdef list cookie_parts(object cookie_header, object rule)

@cython.locals(encoding=str, parts=list)
cpdef tuple primary_key(str distribution, object policy, str path, str query, object fields)

cpdef bytes vary_key(object names, object fields)
