# Compiled types for plan.py: the slots of a web ACL's fields, read by matchers with C calls.
cimport cython
from lbd.waf.request cimport WafRequest


@cython.final
cdef class FieldSource:
    cdef public int kind
    cdef public bytes header
    cdef public Py_ssize_t parent
    cdef public object transform
    cdef public bint keeps_empty


@cython.final
cdef class FieldPlan:
    cdef public list sources, blank
    cdef public dict _slots

    cpdef Py_ssize_t slot(self, tuple key) except -1
    cpdef void begin(self, WafRequest request) except *
    @cython.locals(values=list, found=object, source=FieldSource)
    cpdef object value(self, WafRequest request, Py_ssize_t index)
