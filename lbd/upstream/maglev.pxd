# Compiled types for maglev.py: the table is filled by a C loop over typed views of its arrays.
cimport cython

@cython.locals(count=Py_ssize_t, heaviest=cython.longlong, slots=cython.int[:],
               position_at=cython.longlong[:], skip_of=cython.longlong[:], turn_of=cython.longlong[:],
               weight_of=cython.longlong[:], filled=Py_ssize_t, round_=cython.longlong, index=Py_ssize_t,
               weight=cython.longlong, position=cython.longlong, skip=cython.longlong)
cpdef object _populate(tuple names, tuple weights, long long size)
