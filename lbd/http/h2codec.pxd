# Compiled types for h2codec.py (Cython pure-Python mode): the codec's classes as extension types, their
# internal methods C calls, the Huffman machine read through C pointers.
cimport cython

cdef object _FRAME_HEAD, _SETTING, _U32
cdef frozenset _CONNECTION_FIELDS, _REQUEST_PSEUDO
cdef dict _STATIC_FIELD, _STATIC_NAME
cdef bytes _HUFFMAN_NEXT, _HUFFMAN_SYMBOL, _HUFFMAN_FLAGS, _HUFFMAN_ACCEPT


@cython.locals(out=bytearray, state=int, accept=int, at=int, flag=int, octet=int, i=Py_ssize_t,
               p="const unsigned char *", nxt="const unsigned char *", sym="const unsigned char *",
               flags="const unsigned char *", acc="const unsigned char *")
cpdef bytes huffman_decode(bytes data)


@cython.final
cdef class HpackDecoder:
    cdef public list table
    cdef public Py_ssize_t table_size, max_table_size, settings_table_size, max_header_list_size
    cdef Py_ssize_t _pos

    @cython.locals(headers=list, end=Py_ssize_t, total=Py_ssize_t, octet=int, index=Py_ssize_t,
                   field=tuple, name=bytes, value=bytes, size=Py_ssize_t)
    cpdef list decode(self, bytes data)
    @cython.locals(mask=Py_ssize_t, at=Py_ssize_t, value=Py_ssize_t, shift=int, octet=int)
    cdef Py_ssize_t _integer(self, bytes data, Py_ssize_t end, int prefix) except -1
    @cython.locals(huffman=int, length=Py_ssize_t, at=Py_ssize_t, raw=bytes)
    cdef bytes _string(self, bytes data, Py_ssize_t end)
    @cython.locals(dynamic=Py_ssize_t)
    cdef tuple _field(self, Py_ssize_t index)
    @cython.locals(size=Py_ssize_t)
    cdef void _add(self, bytes name, bytes value) except *
    @cython.locals(table=list, name=bytes, value=bytes)
    cdef void _evict(self, Py_ssize_t room) except *


@cython.locals(mask=int)
cdef void _encode_integer(bytearray out, Py_ssize_t value, int prefix, int first) except *

@cython.locals(out=bytearray, index=int)
cdef bytes _encode_field(bytes name, bytes value)


@cython.final
cdef class HpackEncoder:
    cdef dict _cache
    cdef public Py_ssize_t table_size_update

    @cython.locals(cache=dict, parts=list, encoded=object, update=bytearray)
    cpdef bytes encode(self, object headers)


@cython.locals(start=Py_ssize_t, i=Py_ssize_t, c=int)
cdef bint _name_ok(bytes name, bint pseudo_allowed) except -1

@cython.locals(size=Py_ssize_t)
cdef bint _value_ok(bytes value) except -1

@cython.locals(seen=set, regular=bint, method=bytes, field=tuple, name=bytes, value=bytes)
cpdef str check_request(list headers)

@cython.locals(field=tuple, name=bytes)
cpdef str check_trailers(list headers)

@cython.locals(length=Py_ssize_t, field=tuple, value=bytes)
cdef Py_ssize_t _content_length(list headers) except -3


@cython.final
@cython.freelist(64)
cdef class Event:
    cdef public int kind
    cdef public long stream_id
    cdef public list headers
    cdef public bytes data
    cdef public long long flow_length, error_code
    cdef public bint end_stream, remote_reset, window_changed


@cython.final
@cython.freelist(64)
cdef class Stream:
    cdef public long stream_id
    cdef public long long inbound, outbound, unacked, expected, received
    cdef public bint remote_open, local_open


@cython.final
cdef class H2ServerConnection:
    cdef public long long max_concurrent_streams, max_header_list_size, stream_window, connection_window
    cdef public long long max_outbound_frame_size, remote_initial_window
    cdef public dict streams
    cdef public long highest_stream_id
    cdef public bint closed
    cdef dict _closed_streams
    cdef HpackDecoder _decoder
    cdef HpackEncoder _encoder
    cdef bytearray _out, _block
    cdef bytes _buffer
    cdef bint _preface, _settings_seen, _block_end_stream
    cdef long long _inbound, _unacked, _outbound
    cdef long _block_stream
    cdef int _block_frames
    cdef list _events

    @cython.locals(size=Py_ssize_t)
    cdef void _frame(self, int kind, int flags, long stream_id, bytes payload) except *
    cpdef bytes data_to_send(self)
    cpdef void send_goaway(self, long long error_code, long last_stream_id=*) except *
    @cython.locals(stream=Stream)
    cdef Stream _sendable(self, long stream_id)
    @cython.locals(stream=Stream, block=bytes, limit=Py_ssize_t, flags=int, at=Py_ssize_t, piece=bytes)
    cpdef void send_headers(self, long stream_id, object headers, bint end_stream=*) except *
    @cython.locals(stream=Stream, size=Py_ssize_t)
    cpdef void send_data(self, long stream_id, bytes data, bint end_stream=*) except *
    cpdef void end_stream(self, long stream_id) except *
    @cython.locals(stream=Stream)
    cpdef void reset_stream(self, long stream_id, long long error_code=*) except *
    @cython.locals(stream=Stream)
    cpdef Py_ssize_t local_flow_control_window(self, long stream_id) except -1
    @cython.locals(stream=Stream)
    cpdef void acknowledge_received_data(self, long long size, long stream_id) except *
    cdef void _local_end(self, Stream stream) except *
    cdef void _remote_end(self, Stream stream) except *
    @cython.locals(closed=dict)
    cdef void _close(self, Stream stream, int how) except *

    @cython.locals(events=list)
    cpdef list receive_data(self, bytes data)
    cdef void _connection_error(self, long long error_code, str reason) except *
    @cython.locals(buffer=bytes, at=Py_ssize_t, end=Py_ssize_t, size=Py_ssize_t, length=Py_ssize_t,
                   kind=int, flags=int, stream_id=long, payload=bytes, p="const unsigned char *")
    cdef void _receive(self, bytes data) except *
    @cython.locals(event=Event)
    cdef void _dispatch(self, int kind, int flags, long stream_id, bytes payload) except *
    cdef bytes _unpad(self, int flags, bytes payload)
    @cython.locals(event=Event)
    cdef void _stream_error(self, Stream stream, long stream_id, long long error_code) except *
    cdef int _closed_stream(self, long stream_id) except -3
    @cython.locals(size=Py_ssize_t, stream=Stream, how=int, data=bytes, end=bint, event=Event)
    cdef void _data(self, int flags, long stream_id, bytes payload) except *
    @cython.locals(fragment=bytes, end_stream=bint)
    cdef void _headers(self, int flags, long stream_id, bytes payload) except *
    @cython.locals(block=bytes)
    cdef void _continuation(self, int flags, long stream_id, bytes payload) except *
    @cython.locals(headers=list, stream=Stream, how=int, reason=str, event=Event)
    cdef void _header_block(self, long stream_id, bytes block, bint end_stream) except *
    @cython.locals(reason=str, stream=Stream, expected="long long", event=Event)
    cdef void _new_stream(self, long stream_id, list headers, bint end_stream) except *
    @cython.locals(stream=Stream, event=Event)
    cdef void _rst_stream(self, long stream_id, bytes payload) except *
    @cython.locals(event=Event, at=Py_ssize_t, code=int, value="long long", delta="long long",
                   stream=Stream)
    cdef void _settings(self, int flags, long stream_id, bytes payload) except *
    @cython.locals(increment="long long", stream=Stream)
    cdef void _window_update(self, long stream_id, bytes payload) except *
    cdef void _ping(self, int flags, long stream_id, bytes payload) except *
    @cython.locals(stream=Stream)
    cdef void _priority(self, long stream_id, bytes payload) except *
