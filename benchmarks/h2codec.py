"""The downstream HTTP/2 codec's CPU per request, without sockets: lbd's (lbd/http/h2codec.py) and the h2
library's, on the same frames.

    python -m benchmarks.h2codec [--requests N]

Requests are what h2load sends (HEADERS with END_STREAM, HPACK with Huffman and the dynamic table, 100
streams per read); each is answered with a small response (HEADERS, then DATA with END_STREAM), and the
queued bytes are taken once per read, as lbd/http/h2front.py does. Prints microseconds of CPU per request.
"""

from __future__ import annotations

import argparse
import time

import h2.events
import h2.settings
from hpack import Encoder
from hyperframe.frame import HeadersFrame, SettingsFrame

from lbd.http import h2codec
from lbd.http.h2conn import H2Connection
from lbd.http.h2front import CONNECTION_WINDOW, MAX_HEADER_LIST_SIZE, STREAM_WINDOW, _config

REQUEST = [
    (":method", "GET"),
    (":scheme", "https"),
    (":authority", "127.0.0.1:8443"),
    (":path", "/"),
    ("user-agent", "h2load nghttp2/1.52.0"),
]
RESPONSE = [
    (b":status", b"200"),
    (b"server", b"python"),
    (b"date", b"Tue, 01 Dec 2026 14:00:00 GMT"),
    (b"content-type", b"text/plain"),
    (b"content-length", b"2"),
]
PER_READ = 100


def reads(requests: int) -> list[bytes]:
    encoder = Encoder()
    out = []
    for batch in range(requests // PER_READ):
        first = 1 + 2 * PER_READ * batch
        out.append(
            b"".join(
                HeadersFrame(
                    first + 2 * i, encoder.encode(REQUEST), flags=["END_HEADERS", "END_STREAM"]
                ).serialize()
                for i in range(PER_READ)
            )
        )
    return out


def lbd_codec(data: list[bytes]) -> float:
    conn = h2codec.H2ServerConnection(1 << 30, MAX_HEADER_LIST_SIZE, STREAM_WINDOW, CONNECTION_WINDOW)
    conn.initiate_connection()
    conn.receive_data(h2codec.PREFACE + SettingsFrame(0).serialize())
    started = time.process_time()
    for read in data:
        for event in conn.receive_data(read):
            if event.kind == h2codec.REQUEST:
                conn.send_headers(event.stream_id, RESPONSE)
                conn.send_data(event.stream_id, b"ok", True)
        conn.data_to_send()
    return time.process_time() - started


def h2_library(data: list[bytes]) -> float:
    conn = H2Connection(config=_config())
    conn.local_settings = h2.settings.Settings(
        client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1 << 30}
    )
    conn.initiate_connection()
    conn.receive_data(h2codec.PREFACE + SettingsFrame(0).serialize())
    started = time.process_time()
    for read in data:
        for event in conn.receive_data(read):
            if isinstance(event, h2.events.RequestReceived) and event.stream_id is not None:
                conn.send_headers(event.stream_id, RESPONSE)
                conn.send_data(event.stream_id, b"ok", end_stream=True)
        conn.data_to_send()
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests (default 20000)")
    args = parser.parse_args()
    data = reads(args.requests)
    count = len(data) * PER_READ
    compiled = "compiled" if h2codec.__file__.endswith((".so", ".pyd")) else "interpreted"
    print(f"lbd codec ({compiled}) {lbd_codec(data) / count * 1e6:8.2f} us/request")
    print(f"h2 library           {h2_library(data) / count * 1e6:8.2f} us/request")


if __name__ == "__main__":
    main()
