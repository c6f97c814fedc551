# Compiled types for acl.py: the rule loop runs in C, calling each matcher through its vtable.
cimport cython
from lbd.waf.plan cimport FieldPlan
from lbd.waf.request cimport WafRequest
from lbd.waf.statements cimport Matcher


@cython.final
cdef class Verdict:
    cdef public str action, rule
    cdef public list labels
    cdef public object response
    cdef public bytes headers


@cython.final
cdef class WafStats:
    cdef public dict allowed, blocked, counted


@cython.final
cdef class CompiledRule:
    cdef public str name, action
    cdef public Matcher matcher
    cdef public tuple labels
    cdef public object response
    cdef public bytes insert


@cython.final
cdef class NeedleRun:
    cdef public FieldPlan plan
    cdef public Py_ssize_t index, end
    cdef public object unset, search

    @cython.locals(value=object)
    cpdef bint occurs(self, WafRequest request) except -1


@cython.final
cdef class CompiledAcl:
    cdef public str name, default_action
    cdef public WafStats stats
    cdef public list rules, runs
    cdef public Verdict default_allow
    cdef public FieldPlan plan
    cdef public object default_response
    cdef public bytes default_headers
    cdef public bint needs_body, body_field, uses_headers, label_header, rule_header

    @cython.locals(stats=WafStats, extra=bytes, rule=CompiledRule, rules=list, runs=list, at=Py_ssize_t,
                   run=NeedleRun)
    cpdef object evaluate(self, WafRequest request, double now)
    @cython.locals(counts=dict)
    cpdef object _end(self, WafRequest request, str action, str rule, object response, bytes headers)
