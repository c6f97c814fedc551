# Compiled types for stats.py: counters are C integers, incremented without touching a Python object.
cimport cython


@cython.final
cdef class Histogram:
    cdef public list counts
    cdef public double sum

    @cython.locals(index=Py_ssize_t, last=Py_ssize_t)
    cpdef void observe(self, double seconds) except *

@cython.final
cdef class ListenerStats:
    cdef public long long new_connections, active_connections, rejected_connections, processed_bytes
    cdef public long long target_connection_errors, client_resets, target_resets, idle_timeouts
    cdef public long long client_tls_negotiation_errors, requests, non_compliant_requests, redirects
    cdef public long long fixed_responses
    cdef public long long udp_new_flows, udp_active_flows, udp_processed_bytes, processed_packets
    cdef public long long udp_dropped_packets, proxy_protocol_errors
    cdef public long long surge_queue_length, spillover_count
    cdef public long long grpc_requests
    cdef public list elb_responses, target_responses
    cdef public dict elb_statuses
    cdef public Histogram target_response_time, request_duration

    cpdef void elb_response(self, int status) except *

@cython.final
cdef class TargetStats:
    cdef public long long requests, connection_errors
