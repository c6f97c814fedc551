# Compiled types for udp.py: the listener socket and its flows as final extension types; the per-datagram
# loops run in C over typed fields and cached bound socket methods.
cimport cython
from lbd.observe.stats cimport ListenerStats
from lbd.upstream.target cimport Target

cdef class UdpFlow


@cython.final
cdef class UdpListenerSide:
    cdef public object sock, slot, runtime, loop, sweeper, view, recvfrom_into, sendto
    cdef public dict flows
    cdef public bytearray buffer
    cdef public int fd
    cdef public tuple local
    cdef public bint closed

    @cython.locals(flow=UdpFlow, size=Py_ssize_t, _=int, flows=dict, buffer=bytearray)
    cpdef void readable(self) except *
    cpdef UdpFlow new_flow(self, object runtime, tuple client)
    cpdef bint repick(self, UdpFlow flow, object runtime) except -1
    cpdef bint reply(self, object data, tuple client) except -1
    @cython.locals(flow=UdpFlow, moved="long long")
    cpdef void sweep(self) except *
    cpdef void end_flow(self, UdpFlow flow, str error_reason) except *


@cython.final
cdef class UdpFlow:
    cdef public UdpListenerSide listener
    cdef public object runtime, sock, send, recv_into
    cdef public ListenerStats stats
    cdef public tuple client
    cdef public Target target
    cdef public int fd, quiet_sweeps
    cdef public long long packets_in, packets_out, bytes_in, bytes_out, dropped, packets_at_sweep
    cdef public double created_at

    cpdef void from_client(self, object data, Py_ssize_t size) except *
    @cython.locals(size=Py_ssize_t, _=int, listener=UdpListenerSide, stats=ListenerStats, buffer=bytearray)
    cpdef void readable(self) except *
