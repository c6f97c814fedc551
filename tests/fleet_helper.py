"""What tests/test_fleet_netns.py runs in its namespaces: ``ip netns exec NS python -m tests.fleet_helper``.

- ``serve NAME ADDRESS``: a target: TCP on 7000 answers each line with "NAME PEER" (PEER: the lbd node's
  address, so the test knows which node relayed the flow) and keeps the connection; HTTP on 8000 answers
  every request with the same words.
- ``flows SERVICE FIRST_PORT COUNT``: opens COUNT TCP connections to SERVICE:7000 from source ports
  FIRST_PORT.. (the same 5-tuples every run), asks each once, prints {source port: "NAME PEER"} as JSON,
  and resets them (no TIME_WAIT, so the same 5-tuple can be opened again at once).
- ``http URL [COOKIE] [SOURCE_PORT]``: one GET; prints {"status", "body", "set_cookie"} as JSON.
- ``keyed URL API_KEY FIRST_PORT COUNT``: COUNT GETs with ``x-api-key``, one after another, from source
  ports FIRST_PORT.. (so ECMP spreads them over the nodes); prints their {"status", "body"} in order.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import sys

SOURCE = "10.0.0.1"  # the client namespace's own address (the ECMP route's src)


async def serve(name: str, address: str) -> None:
    async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0]
        while await reader.readline():
            writer.write(f"{name} {peer}\n".encode())
            await writer.drain()
        writer.close()

    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0]
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                body = f"{name} {peer}".encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    servers = [
        await asyncio.start_server(tcp, address, 7000),
        await asyncio.start_server(http, address, 8000),
    ]
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def _connect(service: str, port: int, source_port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
    sock.settimeout(5)
    sock.bind((SOURCE, source_port))
    sock.connect((service, port))
    return sock


def flows(service: str, first: int, count: int) -> None:
    answers: dict[int, str] = {}
    for source_port in range(first, first + count):
        try:
            sock = _connect(service, 7000, source_port)
            sock.sendall(b"who\n")
            answers[source_port] = sock.recv(200).decode().strip() or "closed"
            sock.close()
        except OSError as exc:
            answers[source_port] = f"error {exc}"
    print(json.dumps(answers))


def get(url: str, headers: dict[str, str], source_port: int) -> dict[str, object]:
    host, _, path = url.removeprefix("http://").partition("/")
    authority, _, port = host.partition(":")
    sock = _connect(authority, int(port or 80), source_port)
    head = f"GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    sock.sendall((head + "\r\n").encode())
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
    sock.close()
    fields, _, body = raw.partition(b"\r\n\r\n")
    lines = fields.decode("latin-1").split("\r\n")
    cookies = [line.split(":", 1)[1].strip() for line in lines[1:] if line.lower().startswith("set-cookie:")]
    return {"status": int(lines[0].split()[1]), "body": body.decode(), "set_cookie": cookies}


def http(url: str, cookie: str = "", source_port: int = 0) -> None:
    print(json.dumps(get(url, {"Cookie": cookie} if cookie else {}, source_port)))


def keyed(url: str, api_key: str, first: int, count: int) -> None:
    answers = []
    for source_port in range(first, first + count):
        answer = get(url, {"x-api-key": api_key}, source_port)
        answers.append({"status": answer["status"], "body": answer["body"]})
    print(json.dumps(answers))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "serve":
        asyncio.run(serve(*args))
    elif command == "flows":
        flows(args[0], int(args[1]), int(args[2]))
    elif command == "keyed":
        keyed(args[0], args[1], int(args[2]), int(args[3]))
    else:
        http(args[0], *(args[1:2]), *(int(a) for a in args[2:3]))
