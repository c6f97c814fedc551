"""The pure parts of gRPC and HTTP/2 to targets, without a loop: gRPC semantics (lbd/http/grpc.py), the
HTTP/1.1 <-> HTTP/2 translation and stream placement (lbd/http/h2bridge.py), the GRPC check's verdict."""

from __future__ import annotations

import pytest

from lbd.health.grpc_probe import verdict
from lbd.health.state import RESPONSE_CODE_MISMATCH, Matcher
from lbd.http import grpc, h2bridge


def test_grpc_content_types() -> None:
    assert grpc.is_grpc(b"application/grpc")
    assert grpc.is_grpc(b"application/grpc+proto")
    assert grpc.is_grpc(b"Application/GRPC;charset=utf-8")
    assert not grpc.is_grpc(b"application/grpc-web")
    assert not grpc.is_grpc(b"application/json")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(b"1H", 3600.0), (b"2M", 120.0), (b"3S", 3.0), (b"300m", 0.3), (b"5u", 5e-6), (b"7n", 7e-9)],
)
def test_grpc_timeout_units(value: bytes, seconds: float) -> None:
    assert grpc.parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [b"", b"S", b"123456789S", b"1x", b"-1S", b"1.5S"])
def test_malformed_grpc_timeout_is_no_deadline(value: bytes) -> None:
    assert grpc.parse_timeout(value) is None


def test_status_for_lbd_errors() -> None:
    assert grpc.status_for(503) == grpc.UNAVAILABLE
    assert grpc.status_for(502) == grpc.UNAVAILABLE
    assert grpc.status_for(504) == grpc.DEADLINE_EXCEEDED
    assert grpc.status_for(404) == grpc.UNIMPLEMENTED
    assert grpc.status_for(200) == grpc.UNIMPLEMENTED  # a rule's answer implements no method
    assert grpc.status_for(400) == grpc.INTERNAL
    assert grpc.status_for(418) == grpc.UNKNOWN
    assert grpc.status_for(599) == grpc.UNAVAILABLE


def test_trailers_only_block() -> None:
    fields = dict(grpc.trailers_only(14, "no targets: 100%"))
    assert fields[b":status"] == b"200" and fields[b"content-type"] == b"application/grpc"
    assert fields[b"grpc-status"] == b"14"
    assert fields[b"grpc-message"] == b"no targets%3A 100%25"  # percent-encoded


def test_what_groups_refuse() -> None:
    assert grpc.mismatch("GRPC", over_h2=False, method="POST") == "GrpcGroupNeedsHttp2"
    assert grpc.mismatch("GRPC", over_h2=True, method="OPTIONS") == "GrpcGroupNeedsPost"
    assert grpc.mismatch("GRPC", over_h2=True, method="POST") == ""
    assert grpc.mismatch("HTTP2", over_h2=False, method="GET") == ""


def test_request_head_as_h2_fields() -> None:
    fields = h2bridge.request_fields(
        b"POST",
        b"/pkg.Svc/Do",
        b"https",
        [
            (b"Host", b"api.test:443"),
            (b"Connection", b"keep-alive"),
            (b"Transfer-Encoding", b"chunked"),
            (b"TE", b"gzip, trailers"),
            (b"X-Forwarded-For", b"10.0.0.1"),
        ],
    )
    assert fields == [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":authority", b"api.test:443"),
        (b":path", b"/pkg.Svc/Do"),
        (b"te", b"trailers"),
        (b"x-forwarded-for", b"10.0.0.1"),
    ]
    grpc_fields = h2bridge.request_fields(
        b"POST", b"/a", b"http", [(b"content-type", b"application/grpc")], True
    )
    assert (b"te", b"trailers") in grpc_fields  # the HTTP/1.1 hop dropped it; gRPC requires it


def test_response_fields_as_http1_head() -> None:
    fields = [(b":status", b"200"), (b"content-length", b"5"), (b"server", b"t"), (b"connection", b"x")]
    head, chunked = h2bridge.response_head(fields, bodiless=False, grpc=False)
    assert (head, chunked) == (b"HTTP/1.1 200 \r\nserver: t\r\ncontent-length: 5\r\n\r\n", False)
    head, chunked = h2bridge.response_head([(b":status", b"200")], bodiless=False, grpc=True)
    assert chunked and head.endswith(b"transfer-encoding: chunked\r\n\r\n")
    head, chunked = h2bridge.response_head(
        [(b":status", b"200"), (b"grpc-status", b"5")], bodiless=True, grpc=True
    )
    assert not chunked and b"grpc-status: 5\r\n" in head and head.endswith(b"content-length: 0\r\n\r\n")
    head, _ = h2bridge.response_head([(b":status", b"204")], bodiless=True, grpc=False)
    assert head == b"HTTP/1.1 204 \r\n\r\n"


def test_stream_placement() -> None:
    assert h2bridge.place([0, 3, 1], connecting=0) == 1  # the most free slots
    assert h2bridge.place([0, 0], connecting=0) == -1  # all full: open another
    assert h2bridge.place([0, 0], connecting=1) == -2  # one is on its way: wait for it
    full = [0] * h2bridge.MAX_CONNECTIONS_PER_TARGET
    assert h2bridge.place(full, connecting=0) == -2  # as many as allowed: wait for a slot
    assert h2bridge.place([], connecting=0) == -1


def test_grpc_check_verdicts() -> None:
    assert verdict(200, "12", Matcher("12")).ok
    assert verdict(200, "0", Matcher("0-99")).ok
    failed = verdict(200, "14", Matcher("0"))
    assert (failed.ok, failed.reason, failed.detail) == (False, RESPONSE_CODE_MISMATCH, "14")
    assert verdict(503, None, Matcher("0")).detail == "HTTP 503 without grpc-status"
