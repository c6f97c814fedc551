# Compiled types for tcp.py: both protocols of a flow as final extension types, counters as C integers.
cimport cython
from lbd.observe.stats cimport ListenerStats
from lbd.upstream.target cimport Target

cdef class TcpTargetSide


@cython.final
cdef class TcpClientSide:
    cdef public object listener, _tracker, transport, _connect_task, _idle_handle, _loop
    cdef public TcpTargetSide target_side
    cdef public Target target, surge_target
    cdef public tuple peer, destination
    cdef public bytes proxy_header
    cdef public list _pending
    cdef public bint _client_eof, _target_eof
    cdef public long long _moved, _received, _moved_at_check
    cdef public int _quiet_checks
    cdef public double _created_at
    cdef public ListenerStats _stats

    @cython.locals(size=Py_ssize_t, target_side=TcpTargetSide)
    cpdef void data_received(self, bytes data) except *
    @cython.locals(size=Py_ssize_t)
    cpdef void target_data(self, bytes data) except *
    cpdef void target_eof(self) except *
    cpdef void target_lost(self, object exc) except *
    cpdef void target_pause_writing(self) except *
    cpdef void target_resume_writing(self) except *
    cpdef void target_connected(self, TcpTargetSide target_side) except *


@cython.final
cdef class TcpTargetSide:
    cdef public TcpClientSide client_side
    cdef public Target target
    cdef public object transport

    cpdef void data_received(self, bytes data) except *
