# Compiled types for statements.py: matchers are extension types; match() is a C call between them.
cimport cython
from lbd.waf.ipsets cimport IpMatcher
from lbd.waf.plan cimport FieldPlan
from lbd.waf.request cimport WafRequest


cdef class Matcher:
    cdef public bint needs_body

    cpdef bint match(self, WafRequest request, double now) except -1


cdef class FieldMatcher(Matcher):
    cdef public tuple key
    cdef public FieldPlan plan
    cdef public Py_ssize_t index
    cdef public object unset
    cdef public object test
    cdef public str oversize

    @cython.locals(value=object)
    cpdef bint match(self, WafRequest request, double now) except -1


cdef class ContainsMatcher(FieldMatcher):
    cdef public bytes needle

    @cython.locals(value=object)
    cpdef bint match(self, WafRequest request, double now) except -1


cdef class RegexMatcher(FieldMatcher):
    cdef public object search
    cdef public bint matches_empty

    @cython.locals(value=object)
    cpdef bint match(self, WafRequest request, double now) except -1


cdef class SizeMatcher(FieldMatcher):
    cdef public object compare
    cdef public long long size
    cdef public bint whole_body

    cpdef bint match(self, WafRequest request, double now) except -1


cdef class IpSetMatcher(Matcher):
    cdef public IpMatcher addresses
    cdef public object forwarded
    cdef public bytes header

    @cython.locals(listed=list)
    cpdef bint match(self, WafRequest request, double now) except -1


cdef class LabelMatcher(Matcher):
    cdef public str key
    cdef public bint namespace

    cpdef bint match(self, WafRequest request, double now) except -1


cdef class AndMatcher(Matcher):
    cdef public list parts

    @cython.locals(part=Matcher)
    cpdef bint match(self, WafRequest request, double now) except -1


cdef class OrMatcher(AndMatcher):
    @cython.locals(part=Matcher)
    cpdef bint match(self, WafRequest request, double now) except -1


cdef class NotMatcher(Matcher):
    cdef public Matcher part

    cpdef bint match(self, WafRequest request, double now) except -1


cdef class RateMatcher(Matcher):
    cdef public Matcher scope_down
    cdef public object store
    cdef public long long limit
    cdef public str key_kind
    cdef public bytes forwarded_header, header
    cdef public bint fallback_match

    @cython.locals(listed=list, value=object)
    cpdef object key(self, WafRequest request)
    @cython.locals(key=object)
    cpdef bint match(self, WafRequest request, double now) except -1
