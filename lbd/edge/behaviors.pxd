# Compiled types for behaviors.py (Cython pure-Python mode: this file augments the .py, which stays the
# one source).
cimport cython

@cython.locals(index=Py_ssize_t)
cpdef Py_ssize_t behavior_index(tuple behaviors, str path) except -2
