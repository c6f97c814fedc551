# Compiled types for proxy.py: the client connection as an extension type with typed fields.
cimport cython
from lbd.http.exchange cimport Exchange
from lbd.http.upstream cimport HttpTargetSide, UpstreamPool
from lbd.observe.stats cimport ListenerStats
from lbd.http.dispatch cimport HttpDispatcher


@cython.final
cdef class HttpClientSide:
    cdef public object listener, slot, tls_info, fast_forwarded, tracker, transport, parser, exchanges
    cdef public ListenerStats stats
    cdef public HttpDispatcher dispatcher
    cdef public UpstreamPool pool
    cdef public long long received_bytes, sent_bytes, received_mark, _header_bytes, _moved, _moved_at_check
    cdef public bint _replayable, closing, draining, upgrading, _in_message, _in_head
    cdef public tuple peer
    cdef public HttpTargetSide tunnel_target
    cdef public int tunnel_eofs, _paused, _quiet_checks, _begun
    cdef public bytes _url
    cdef public list _headers, _out
    cdef public object _loop, _idle_handle, _head_raw
    cdef public double _request_started_at
    cdef public str _replay_reason

    cpdef data_received(self, bytes data)
    @cython.locals(parsed=tuple, exchange=Exchange)
    cpdef bint _fast_request(self, bytes data) except -1
    cpdef object _latest_listener(self)
    cpdef void write(self, bytes data) except *
    cpdef void cork(self) except *
    @cython.locals(out=list)
    cpdef void uncork(self) except *
    cpdef void exchange_done(self, Exchange exchange) except *
    cpdef void close(self) except *
    cpdef void abort(self) except *
    cpdef void pause_reading(self, int reason) except *
    cpdef void resume_reading(self, int reason) except *
