"""lbd's H2Connection (lbd/http/h2conn.py): the cheap open-stream count makes h2's own decisions, and
closed streams are still dropped. Pure: an h2 client and lbd's server connection talk through bytes."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import pytest

from lbd.http.h2conn import H2Connection

LIMIT = 4
REQUEST = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/")]


def _pair() -> tuple[h2.connection.H2Connection, H2Connection]:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server = H2Connection(h2.config.H2Configuration(client_side=False))
    server.local_settings = h2.settings.Settings(
        client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: LIMIT}
    )
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())  # the SETTINGS ack: the limit is in force
    return client, server


def _open(client: h2.connection.H2Connection, server: H2Connection) -> int:
    stream_id = client.get_next_available_stream_id()
    client.send_headers(stream_id, REQUEST, end_stream=True)
    events = server.receive_data(client.data_to_send())
    assert any(isinstance(e, h2.events.RequestReceived) for e in events)
    return stream_id


def _answer(client: h2.connection.H2Connection, server: H2Connection, stream_id: int) -> None:
    server.send_headers(stream_id, [(b":status", b"200")], end_stream=True)
    client.receive_data(server.data_to_send())


def test_a_stream_over_the_limit_is_refused_as_h2_refuses_it() -> None:
    client, server = _pair()
    for _ in range(LIMIT):
        _open(client, server)
    assert server.open_inbound_streams == LIMIT
    # The client is told the limit too; go around its own check to send the fifth stream.
    client.remote_settings = h2.settings.Settings(
        client=True, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100}
    )
    client.send_headers(client.get_next_available_stream_id(), REQUEST, end_stream=True)
    with pytest.raises(h2.exceptions.TooManyStreamsError):
        server.receive_data(client.data_to_send())


def test_closed_streams_make_room_and_are_dropped() -> None:
    client, server = _pair()
    for _ in range(50):
        _answer(client, server, _open(client, server))
        # Never more streams held than the limit: closed ones are dropped when the limit is reached.
        assert len(server.streams) <= LIMIT
    # The closed ones left room for a full set of concurrent streams again.
    for _ in range(LIMIT):
        _open(client, server)
    assert server.open_inbound_streams == LIMIT
