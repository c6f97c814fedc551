# Compiled types for exchange.py: an Exchange is an extension type with typed fields, its methods C calls.
cimport cython
from lbd.http.proxy cimport HttpClientSide
from lbd.http.upstream cimport HttpTargetSide
from lbd.observe.stats cimport ListenerStats
from lbd.http.dispatch cimport RouteDecision, HttpDispatcher
from lbd.upstream.target cimport Target


@cython.final
@cython.freelist(64)
cdef class Exchange:
    cdef public HttpClientSide client
    cdef public str method, version, desync_reason, action, redirect_url, error_reason
    cdef public str classification, classification_reason, waf_rule, waf_action
    cdef public bytes url, early_tunnel_data, set_cookie, sticky_cookie, _head, host, trace_id
    cdef public object _headers, head_block, _tried, _pending_body, target_group, sticky
    cdef public bint keep_alive, keep_client, upgrade, head_request, chunked_request, request_complete
    cdef public bint close_target, response_started, response_done, _response_chunked, _response_close
    cdef public bint _target_until_close, _switching, waf_waiting
    cdef public int _connect_error_status, target_status, local_status, action_priority
    cdef public Target target, surge_target
    cdef public HttpTargetSide target_side
    cdef public double waiting_since, sent_at, response_at, started_at
    cdef public long long received_mark, sent_mark, waf_buffered

    cpdef void start(self) except *
    cpdef void start_fast(self, bytes block, bytes host, Py_ssize_t host_at) except *
    @cython.locals(decision=RouteDecision, dispatcher=HttpDispatcher, waf=object)
    cpdef void _dispatch(self, object listener, bytes head) except *
    @cython.locals(pending=object, close=bint, page=bytes)
    cpdef bytes _inspect(self, object waf, object listener, bytes head)
    cpdef void _waf_resume(self) except *
    @cython.locals(target=Target, sticky=object)
    cpdef void _forward(self, bytes head) except *
    @cython.locals(conn=HttpTargetSide)
    cpdef void _forward_to(self, Target target, bytes head) except *
    @cython.locals(pending=object)
    cpdef void _attach(self, HttpTargetSide conn, bytes head) except *
    cpdef void _arm_response_timer(self) except *
    cpdef bytes _frame(self, bytes chunk)
    cpdef void request_body(self, bytes chunk) except *
    cpdef void request_end(self) except *
    cpdef void _respond_locally(self, bytes response, bint close) except *
    cpdef void _respond_error(self, int status, str reason) except *
    cpdef void response_headers_complete(
        self, int status, bytes reason, list headers, bint target_keep_alive) except *
    @cython.locals(stats=ListenerStats, now=double)
    cpdef void _response_begins(self, int status) except *
    @cython.locals(end=bytes, cookies=bytes)
    cpdef void response_fast(self, int status, bytes head, bytes body, bint target_keep_alive) except *
    @cython.locals(cookies=bytes)
    cpdef bytes _sticky_response(self, bytes head, object headers)
    cpdef void response_body(self, bytes chunk) except *
    @cython.locals(conn=HttpTargetSide)
    cpdef void response_complete(self, bint keep_alive) except *
    @cython.locals(client=HttpClientSide, stats=ListenerStats, now=double)
    cpdef void _finish(self) except *
    cpdef void target_lost(self, HttpTargetSide conn, object exc) except *
    cpdef bint _can_retry(self) except -1
    @cython.locals(conn=HttpTargetSide)
    cpdef void response_timeout(self) except *
    @cython.locals(conn=HttpTargetSide)
    cpdef void client_lost(self) except *
    cpdef void target_pause_writing(self) except *
    cpdef void target_resume_writing(self) except *
    cpdef void client_pause_writing(self) except *
    cpdef void client_resume_writing(self) except *
