# Compiled type for request.py: a gateway request's fields as a C struct.
cimport cython


@cython.final
cdef class GatewayRequest:
    cdef public str method, path, query, source_ip, api, stage, route_key, request_id
    cdef public object headers, path_parameters
    cdef public bytes body, raw_fields, raw_forwarded
    cdef public double received_at
