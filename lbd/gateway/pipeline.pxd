# Compiled types for pipeline.py: a request's outcome, the compiled routes and the pipeline as extension
# types, so the steps of a request read and set C struct fields rather than instance dictionaries.
cimport cython
from lbd.gateway.limiter cimport LocalLimiter
from lbd.gateway.request cimport GatewayRequest


@cython.final
cdef class Outcome:
    cdef public str route_key, response_type, authorizer, key_id, cache, waf_rule, waf_action
    cdef public long integration_status
    cdef public double integration_latency
    cdef public object stats


@cython.final
cdef class CompiledRoute:
    cdef public str route_key
    cdef public object call, authorizer, stats
    cdef public tuple scopes, cache_keys
    cdef public bint key_required
    cdef public list stage_buckets
    cdef public long cache_ttl


cdef class ApiPipeline:
    cdef public object api, responses, cors, waf, cache, table, _keys, _fetch, _limiter, _clock
    cdef public LocalLimiter _local
    cdef public object _authorizers, _unmatched
    cdef public str name, stage
    cdef public bint rest, private, from_authorizer
    cdef public dict plans, _authorize_nows

    @cython.locals(route=CompiledRoute, limits=object, local=LocalLimiter, now=double)
    cpdef object serve(self, GatewayRequest request, Outcome outcome, object done)
    cpdef object _route(self, GatewayRequest request, Outcome outcome)
    cpdef object _authorize_now(self, CompiledRoute route, GatewayRequest request, Outcome outcome)
    cpdef object _auth_refused(self, object auth, Outcome outcome)
    @cython.locals(buckets=list, now=double)
    cpdef object _limits(self, CompiledRoute route, GatewayRequest request, Outcome outcome, object auth)
    cpdef object _admission(self, CompiledRoute route, Outcome outcome, object admission)
    cpdef object _plan_of(self, object key)
    cpdef object _refuse(self, Outcome outcome, str kind, object message=*)
