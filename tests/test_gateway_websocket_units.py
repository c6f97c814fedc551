"""WebSocket APIs without a loop: route selection, the session's protocol rules (Autobahn-style cases
driven by a real wsproto client), and the config's rules with their key paths."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Ping, Pong, Request, TextMessage

from lbd.config.loader import ConfigError, parse_config
from lbd.config.preflight import startup_issues
from lbd.gateway.websocket.selection import compile_expression, error_frame, select_route
from lbd.gateway.websocket.session import Closed, Message, Session, Upgrade

# -- route selection ----------------------------------------------------------------------------------------

ROUTES = {"$default", "send", "1", "true", "a/b"}


@pytest.mark.parametrize(
    ("expression", "message", "routes", "expected"),
    [
        ("$request.body.action", '{"action": "send"}', ROUTES, "send"),
        ("$request.body.action", '{"action": "other"}', ROUTES, "$default"),  # unmatched
        ("$request.body.action", '{"no": "action"}', ROUTES, "$default"),  # missing path: ""
        ("$request.body.action", "not json", ROUTES, "$default"),
        ("$request.body.action", '["send"]', ROUTES, "$default"),  # JSON, not an object
        ("$request.body.action", b'{"action": "send"}', ROUTES, "$default"),  # binary: not evaluated
        ("$request.body.action", '{"action": 1}', ROUTES, "1"),  # stringified
        ("$request.body.action", '{"action": true}', ROUTES, "true"),
        ("$request.body.action", '{"action": "$default"}', {"send"}, None),  # no $default: error frame
        ("$request.body.action", '{"action": "nosuch"}', {"send"}, None),
        ("$request.body.m.kind", '{"m": {"kind": "send"}}', ROUTES, "send"),
        ("${request.body.a}/${request.body.b}", '{"a": "a", "b": "b"}', ROUTES, "a/b"),
        (None, '{"action": "send"}', ROUTES, "$default"),  # no expression: everything to $default
    ],
)
def test_route_selection(
    expression: str | None, message: str | bytes, routes: set[str], expected: str
) -> None:
    assert select_route(compile_expression(expression), message, routes)[0] == expected


def test_the_error_frame_is_api_gateways() -> None:
    assert json.loads(error_frame("Forbidden", "abc=", "r-1")) == {
        "message": "Forbidden",
        "connectionId": "abc=",
        "requestId": "r-1",
    }


# -- the session: RFC 6455 rules over wsproto ---------------------------------------------------------------


def opened(**limits: int) -> tuple[Session, WSConnection]:
    session, client = Session(**limits), WSConnection(ConnectionType.CLIENT)
    [upgrade] = session.receive(client.send(Request(host="x", target="/chat?room=1", subprotocols=["v1"])))
    assert isinstance(upgrade, Upgrade)
    assert upgrade.target == "/chat?room=1" and ("host", "x") in upgrade.headers
    assert upgrade.subprotocols == ("v1",)
    session.accept("v1")
    client.receive_data(session.data_to_send())
    assert [type(e) for e in client.events()] == [AcceptConnection]
    return session, client


def answers(session: Session, client: WSConnection) -> list[Any]:
    client.receive_data(session.data_to_send())
    return list(client.events())


def test_fragments_with_a_ping_between_them_make_one_message() -> None:
    session, client = opened()
    data = client.send(TextMessage(data="Hel", message_finished=False))
    data += client.send(Ping(b"p"))  # RFC 6455 5.4: control frames may come between fragments
    data += client.send(TextMessage(data="lo"))
    assert session.receive(data) == [Message("Hello")]
    assert answers(session, client) == [Pong(b"p")]


def test_binary_messages_and_messages_out() -> None:
    session, client = opened()
    assert session.receive(client.send(BytesMessage(data=b"\x00\xff"))) == [Message(b"\x00\xff")]
    assert session.send("text") and session.send(b"bin")
    assert [(type(e), e.data) for e in answers(session, client)] == [
        (TextMessage, "text"),
        (BytesMessage, b"bin"),
    ]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"\x81\x02hi", 1002),  # unmasked
        (b"\x89\xfe\x00\x7e\x00\x00\x00\x00" + b"\x00" * 126, 1002),  # a control frame over 125 bytes
        (b"\xc1\x80\x00\x00\x00\x00", 1002),  # RSV1 without an extension that defines it
        (b"\x01\x80\x00\x00\x00\x00\x01\x80\x00\x00\x00\x00", 1002),  # a new message inside a fragmented one
        (b"\x88\x82\x00\x00\x00\x00\x03\xec", 1002),  # close code 1004 is reserved (7.4.2)
        (b"\x83\x80\x00\x00\x00\x00", 1002),  # a reserved opcode (5.2)
    ],
)
def test_frames_that_fail_the_connection(raw: bytes, code: int) -> None:
    session, client = opened()
    [closed] = session.receive(raw)
    assert isinstance(closed, Closed) and closed.code == code and not closed.by_client
    [close] = answers(session, client)
    assert isinstance(close, CloseConnection) and close.code == code
    assert session.failed  # RFC 6455 7.1.7: the TCP connection ends now, no closing handshake awaited
    assert session.receive(b"\x81\x85\x00\x00\x00\x00after") == []  # nothing more is read
    assert not session.send("late")


def test_utf8_split_across_fragments_and_empty_messages_are_fine() -> None:
    """Autobahn 6.x: a character split between two fragments is valid; 1.1.1 / 1.2.1: empty messages."""
    session, _ = opened()
    snowman = "\u2603".encode()
    raw = b"\x01\x82\x00\x00\x00\x00" + snowman[:2] + b"\x80\x81\x00\x00\x00\x00" + snowman[2:]
    assert session.receive(raw) == [Message("\u2603")]
    assert session.receive(b"\x81\x80\x00\x00\x00\x00\x82\x80\x00\x00\x00\x00") == [Message(""), Message(b"")]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"\x88\x81\x00\x00\x00\x00\x03", 1002),  # Autobahn 7.3.2: a close payload of one byte
        (b"\x88\x84\x00\x00\x00\x00\x03\xe8\xc3\x28", 1007),  # 7.5.1: a close reason that is not UTF-8
        (b"\x88\x82\x00\x00\x00\x00\x13\x88", 1002),  # 7.9.x: close code 5000 is not allowed
    ],
)
def test_bad_close_frames(raw: bytes, code: int) -> None:
    session, _ = opened()
    [closed] = session.receive(raw)
    assert isinstance(closed, Closed) and closed.code == code


def test_a_ping_of_125_bytes_is_answered() -> None:
    """Autobahn 2.4: the largest control frame allowed, answered with the same payload."""
    session, client = opened()
    assert session.receive(client.send(Ping(b"p" * 125))) == []
    assert answers(session, client) == [Pong(b"p" * 125)]


def test_bad_utf8_in_a_text_message_closes_with_1007() -> None:
    session, _ = opened()
    [closed] = session.receive(b"\x81\x82\x00\x00\x00\x00\xc3\x28")
    assert isinstance(closed, Closed) and closed.code == 1007


def test_the_clients_close_is_echoed_and_reported() -> None:
    session, client = opened()
    assert session.receive(client.send(CloseConnection(4000, "bye"))) == [Closed(4000, "bye", True)]
    assert session.done
    [close] = answers(session, client)
    assert isinstance(close, CloseConnection) and close.code == 4000


def test_a_close_without_a_code_is_1005_and_an_end_without_close_is_1006() -> None:
    session, _ = opened()
    assert session.receive(b"\x88\x80\x00\x00\x00\x00") == [Closed(1005, "", True)]
    session, _ = opened()
    assert session.receive(None) == [Closed(1006, "", True)]


def test_lbds_close_waits_for_the_clients_answer() -> None:
    session, client = opened()
    assert session.close(1001, "idle timeout") == Closed(1001, "idle timeout", False)
    assert not session.done and not session.failed
    in_flight = client.send(TextMessage(data="in flight"))  # sent before the client saw the close
    [close] = answers(session, client)
    assert close.code == 1001
    assert session.receive(in_flight) == []  # dropped while closing
    assert not session.done
    session.receive(client.send(close.response()))
    assert session.done


def test_messages_out_are_sent_in_frames_of_at_most_32_kb() -> None:
    session, client = opened()
    session.send(b"b" * 70_000)
    session.send("t" * 20_000)
    client.receive_data(session.data_to_send())
    frames = [e for e in client.events() if isinstance(e, BytesMessage | TextMessage)]
    assert [len(f.data) for f in frames] == [32768, 32768, 4464, 8192, 8192, 3616]
    assert [f.message_finished for f in frames] == [False, False, True, False, False, True]


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([32 * 1024 + 1], "frame larger than 32768 bytes"),
        ([30_000] * 5, "message larger than 131072 bytes"),
    ],
)
def test_limits_close_with_1009(frames: list[int], reason: str) -> None:
    session, client = opened()
    data = b"".join(
        client.send(BytesMessage(data=b"x" * size, message_finished=i == len(frames) - 1))
        for i, size in enumerate(frames)
    )
    assert session.receive(data) == [Closed(1009, reason, False)]


def test_a_frame_is_measured_as_it_arrives() -> None:
    """A frame over the limit closes once 32 KB of it are in, not when the whole of it has come."""
    session, client = opened()
    data = client.send(BytesMessage(data=b"x" * 1_000_000))
    assert session.receive(data[: 40 * 1024]) == [Closed(1009, "frame larger than 32768 bytes", False)]


def test_the_frame_quota_is_on_octets_sent_not_on_decoded_text() -> None:
    """Two text frames of exactly 32 KB, the first ending inside a code point: within the quota, fed
    whole or an octet at a time (the decoder moves 3 octets of it into the second frame's text)."""
    split = "*" * 32765 + "\U0001f600" + "*" * 32767
    for step in (None, 1):
        session, _ = opened()
        raw = split.encode()
        data = _text_frame(raw[:32768], fin=False) + _text_frame(raw[32768:], fin=True, first=False)
        chunks = [data] if step is None else [data[i : i + 4096] for i in range(0, len(data), 4096)]
        events = [e for chunk in chunks for e in session.receive(chunk)]
        assert events == [Message(split)]


def _text_frame(payload: bytes, fin: bool, first: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | (1 if first else 0), 0x80 | 126]) + len(payload).to_bytes(2, "big")
    return head + b"\x00" * 4 + payload  # a zero mask key leaves the payload as it is


def test_frames_sent_with_the_upgrade_request_wait_for_the_accept_and_are_metered() -> None:
    session, client = Session(), WSConnection(ConnectionType.CLIENT)
    request = client.send(Request(host="x", target="/"))
    early = _text_frame(b"x" * 32768, fin=True) + _text_frame(b"y" * 32769, fin=True)
    assert session.receive(request[:-1]) == []  # the blank line that ends the head spans two reads
    [upgrade] = session.receive(request[-1:] + early[:100])
    assert isinstance(upgrade, Upgrade)
    session.accept()
    assert session.receive(b"") == []  # what came with the request: part of the first frame
    assert session.receive(early[100:]) == [
        Message("x" * 32768),
        Closed(1009, "frame larger than 32768 bytes", False),
    ]


@pytest.mark.parametrize(
    ("request_head", "status", "field"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 426, b"upgrade: websocket"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 400, b""),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
            426,
            b"sec-websocket-version: 13",
        ),
        (b"GARBAGE\r\n\r\n", 400, b""),
        (  # RFC 6455 4.2.1: HTTP/1.1 or higher, and a key of 16 octets in base64
            b"GET / HTTP/1.0\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            400,
            b"HTTP/1.1 request",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n",
            400,
            b"16 octets",
        ),
    ],
)
def test_requests_that_are_not_an_opening_handshake(request_head: bytes, status: int, field: bytes) -> None:
    session = Session()
    [closed] = session.receive(request_head)
    assert isinstance(closed, Closed) and closed.code == status
    answer = session.data_to_send()
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()) and field in answer


def test_a_refused_upgrade_carries_the_status_and_body() -> None:
    session, client = Session(), WSConnection(ConnectionType.CLIENT)
    session.receive(client.send(Request(host="x", target="/")))
    session.reject(403, [("content-type", "application/json")], b'{"message":"Forbidden"}')
    answer = session.data_to_send()
    assert answer.startswith(b"HTTP/1.1 403 ") and answer.endswith(b'{"message":"Forbidden"}')


# -- config -------------------------------------------------------------------------------------------------


def ws_config(**api: Any) -> dict[str, Any]:
    return {
        "target_groups": [{"name": "chat", "protocol": "HTTP", "targets": [{"id": "127.0.0.1", "port": 9}]}],
        "apis": [
            {
                "name": "chat",
                "protocol": "WEBSOCKET",
                "listeners": [{"protocol": "HTTP", "port": 8082, "address": "127.0.0.1"}],
                "route_selection_expression": "$request.body.action",
                "routes": [
                    {"route_key": "$connect", "integration": {"type": "HTTP_PROXY", "target_group": "chat"}},
                    {"route_key": "send", "integration": {"type": "HTTP_PROXY", "target_group": "chat"}},
                ],
                **api,
            }
        ],
    }


def errors(config: dict[str, Any]) -> list[str]:
    try:
        parsed = parse_config(yaml.safe_dump(config))
    except ConfigError as exc:
        return [str(issue) for issue in exc.issues]
    return [str(issue) for issue in startup_issues(parsed)]


def test_a_websocket_api_is_served() -> None:
    assert errors(ws_config()) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"route_selection_expression": "$request.header.x"}, "apis[0].route_selection_expression: "),
        (
            {"routes": [{"route_key": "GET /x", "integration": {"type": "MOCK"}}]},
            "apis[0].routes[0].route_key: 'GET /x': WEBSOCKET APIs take",
        ),
        (
            {"routes": [{"route_key": "$other", "integration": {"type": "MOCK"}}]},
            "apis[0].routes[0].route_key",
        ),
        (
            {"routes": [{"route_key": "send", "authorizer": "a", "integration": {"type": "MOCK"}}]},
            "apis[0].routes[0].authorizer: a WEBSOCKET API authorizes on $connect only",
        ),
        (
            {
                "routes": [
                    {
                        "route_key": "$connect",
                        "route_response_selection_expression": "$default",
                        "integration": {"type": "MOCK"},
                    }
                ]
            },
            "apis[0].routes[0].route_response_selection_expression: $connect has no route response",
        ),
        ({"max_connection_seconds": 7201}, "apis[0].max_connection_seconds"),
        ({"cache": {"enabled": True}}, "apis[0].cache.enabled: WEBSOCKET APIs have no stage cache"),
    ],
)
def test_websocket_config_errors_name_the_exact_key(change: dict[str, Any], expected: str) -> None:
    found = errors(ws_config(**change))
    assert any(text.startswith(expected) for text in found), found


def test_http_apis_keep_their_route_form() -> None:
    config = ws_config(protocol="HTTP", route_selection_expression=None)
    config["apis"][0]["routes"] = [{"route_key": "sendmessage", "integration": {"type": "MOCK"}}]
    assert any(
        text.startswith("apis[0].routes[0].route_key: 'sendmessage': HTTP APIs take")
        for text in errors(config)
    )
