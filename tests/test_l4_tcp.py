"""Network load balancer, TCP listener: functional tests through a real ``lbd run`` on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from tests.conftest import TcpBackend, echo, identify_then_echo
from tests.lbdproc import Lbd, free_port, network_config, refused_port, wait_for

MiB = 1024 * 1024

Backends = Callable[..., Awaitable[TcpBackend]]
LbdFactory = Callable[..., Lbd]


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def stats(proc: Lbd) -> dict[str, Any]:
    status, body = await proc.admin("GET", "/v1/stats")
    assert status == 200
    assert len(body["listeners"]) == 1
    listener: dict[str, Any] = body["listeners"][0]
    return listener


async def test_100_mib_byte_exact_both_directions(lbd: LbdFactory, backends: Backends) -> None:
    backend = await backends(echo)
    port = free_port()
    proc = lbd(network_config(port, [backend.port]))
    await proc.wait_ready()

    reader, writer = await connect(port)
    block = hashlib.shake_256(b"lbd").digest(MiB)  # incompressible, not a repeating short pattern
    sent = hashlib.sha256()

    async def send() -> None:
        for i in range(100):
            chunk = i.to_bytes(4, "big") + block[4:]
            sent.update(chunk)
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()

    async def receive() -> tuple[int, str]:
        received = hashlib.sha256()
        total = 0
        while data := await reader.read(MiB):
            received.update(data)
            total += len(data)
        return total, received.hexdigest()

    _, (total, received_digest) = await asyncio.gather(send(), receive())
    writer.close()
    assert total == 100 * MiB
    assert received_digest == sent.hexdigest()
    counters = await stats(proc)
    assert counters["processed_bytes"] == 200 * MiB
    assert counters["new_connections"] == 1


def worker_pids(proc: Lbd) -> list[int]:
    assert proc.process is not None
    children = f"/proc/{proc.process.pid}/task/{proc.process.pid}/children"
    with open(children) as f:
        return [int(pid) for pid in f.read().split()]


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_client_that_stops_reading_bounds_memory(lbd: LbdFactory, backends: Backends) -> None:
    limit = 1024 * MiB

    async def firehose(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, backend: TcpBackend
    ) -> None:
        chunk = b"x" * (256 * 1024)
        while backend.sent < limit:
            writer.write(chunk)
            backend.sent += len(chunk)
            await writer.drain()

    backend = await backends(firehose)
    port = free_port()
    proc = lbd(network_config(port, [backend.port]))
    await proc.wait_ready()
    (worker,) = worker_pids(proc)
    rss_before = rss_bytes(worker)

    _reader, writer = await connect(port)  # and never read
    # The backend stalls once every buffer on the way is full; wait until its count stops moving.
    seen: list[int] = []

    def stalled() -> bool:
        seen.append(backend.sent)
        return len(seen) > 10 and seen[-1] == seen[-10] and seen[-1] > 0

    await wait_for(stalled, interval=0.1, what="the backend to be blocked by backpressure")
    growth = rss_bytes(worker) - rss_before
    # Without backpressure lbd would read the whole gigabyte into memory.
    assert backend.sent < 64 * MiB, backend.sent
    assert growth < 32 * MiB, growth
    writer.close()


async def test_half_close_passes_fin_and_keeps_the_other_direction(
    lbd: LbdFactory, backends: Backends
) -> None:
    async def answer_after_eof(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, backend: TcpBackend
    ) -> None:
        request = await reader.read(-1)  # until the client's FIN reaches us through lbd
        backend.saw_eof += 1
        writer.write(b"got:" + request)
        await writer.drain()
        writer.write(b" and more after your FIN")
        await writer.drain()
        writer.write_eof()

    backend = await backends(answer_after_eof)
    port = free_port()
    proc = lbd(network_config(port, [backend.port]))
    await proc.wait_ready()

    reader, writer = await connect(port)
    writer.write(b"hello")
    writer.write_eof()
    answer = await asyncio.wait_for(reader.read(-1), 30)
    writer.close()
    assert answer == b"got:hello and more after your FIN"
    assert backend.saw_eof == 1


async def test_target_half_close_first(lbd: LbdFactory, backends: Backends) -> None:
    late: list[bytes] = []

    async def greet_then_listen(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, backend: TcpBackend
    ) -> None:
        writer.write(b"greeting")
        writer.write_eof()  # the target is done talking but still listens
        await writer.drain()
        late.append(await reader.read(-1))

    backend = await backends(greet_then_listen)
    port = free_port()
    proc = lbd(network_config(port, [backend.port]))
    await proc.wait_ready()

    reader, writer = await connect(port)
    assert await asyncio.wait_for(reader.read(-1), 30) == b"greeting"  # EOF arrived
    writer.write(b"late words")
    writer.write_eof()
    await wait_for(lambda: late, what="the target to receive data sent after its FIN")
    writer.close()
    assert late == [b"late words"]


async def test_dead_target_is_skipped_on_connect(lbd: LbdFactory, backends: Backends) -> None:
    live = await backends(identify_then_echo(b"live"))
    dead_port = refused_port()  # nothing listens here: connect is refused
    for algorithm in ("round_robin", "flow_hash"):
        port = free_port()
        proc = lbd(network_config(port, [dead_port, live.port], algorithm=algorithm))
        await proc.wait_ready()
        # 20 flows: with flow_hash each lands on the dead target with probability 1/2, so at least one
        # tries it (all 20 missing it would be a one-in-a-million event).
        for _ in range(20):
            reader, writer = await connect(port)
            assert await asyncio.wait_for(reader.readline(), 30) == b"live\n"
            writer.close()
        counters = await stats(proc)
        assert counters["target_connection_errors"] >= 1
        assert counters["new_connections"] == 20
        proc.stop()


async def test_connect_timeout_fails_over(lbd: LbdFactory, backends: Backends) -> None:
    live = await backends(identify_then_echo(b"live"))
    # A listener whose accept queue is full drops further SYNs, so connecting to it times out.
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(blackhole.getsockname())
        fillers.append(filler)
    try:
        port = free_port()
        config = network_config(port, [blackhole.getsockname()[1], live.port], connect_timeout_seconds=0.5)
        proc = lbd(config)
        await proc.wait_ready()
        for _ in range(4):
            reader, writer = await connect(port)
            assert await asyncio.wait_for(reader.readline(), 30) == b"live\n"
            writer.close()
        assert "TimeoutError" in proc.log
    finally:
        for filler in fillers:
            filler.close()
        blackhole.close()


async def test_no_targets_closes_cleanly_and_counts(lbd: LbdFactory) -> None:
    port = free_port()
    proc = lbd(network_config(port, []))
    await proc.wait_ready()
    reader, writer = await connect(port)
    assert await asyncio.wait_for(reader.read(-1), 30) == b""  # a clean close, not a hang
    writer.close()
    counters = await wait_for(lambda: stats(proc), what="stats")
    await wait_for(lambda: _rejected(proc), what="rejected count")
    assert counters["new_connections"] == 1


async def _rejected(proc: Lbd) -> bool:
    return (await stats(proc))["rejected_connections"] == 1


async def test_idle_timeout_closes_quiet_flows(lbd: LbdFactory, backends: Backends) -> None:
    backend = await backends(echo)
    port = free_port()
    config = network_config(port, [backend.port])
    config["load_balancers"][0]["idle_timeout_seconds"] = 1
    proc = lbd(config)
    await proc.wait_ready()
    reader, writer = await connect(port)
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    # Now stay quiet: lbd closes the flow after 1 to 1.5 idle timeouts.
    assert await asyncio.wait_for(reader.read(-1), 30) == b""
    writer.close()
    assert (await stats(proc))["idle_timeouts"] == 1


async def test_sighup_moves_new_connections_while_open_one_keeps_flowing(
    lbd: LbdFactory, backends: Backends
) -> None:
    a = await backends(identify_then_echo(b"A"))
    b = await backends(identify_then_echo(b"B"))
    port = free_port()
    config = network_config(port, [a.port])
    proc = lbd(config)
    await proc.wait_ready()

    reader, writer = await connect(port)
    assert await reader.readline() == b"A\n"

    config["target_groups"][0]["targets"] = [{"id": "127.0.0.1", "port": b.port}]
    proc.write_config(config)
    proc.signal(signal.SIGHUP)
    await proc.wait_generation(2)

    for _ in range(3):
        new_reader, new_writer = await connect(port)
        assert await new_reader.readline() == b"B\n"
        new_writer.close()
    # The flow opened before the reload is still spliced to A.
    writer.write(b"still here")
    assert await reader.readexactly(10) == b"still here"
    writer.close()


async def test_invalid_reload_keeps_serving(lbd: LbdFactory, backends: Backends) -> None:
    backend = await backends(identify_then_echo(b"A"))
    port = free_port()
    config = network_config(port, [backend.port])
    proc = lbd(config)
    await proc.wait_ready()

    proc.config_path.write_text("load_balancers:\n  - name: nlb\n    type: nonsense\n")
    status, body = await proc.admin("POST", "/v1/reload")
    assert status == 422
    assert body["reloaded"] is False
    assert any("load_balancers[0].type" in error for error in body["errors"])
    proc.signal(signal.SIGHUP)
    await wait_for(
        lambda: proc.log.count("still serving generation 1") >= 2, what="the rejected SIGHUP reload"
    )

    assert (await proc.readyz() or {}).get("generation") == 1
    reader, writer = await connect(port)
    assert await reader.readline() == b"A\n"
    writer.close()


async def test_reload_adds_and_removes_listeners(lbd: LbdFactory, backends: Backends) -> None:
    backend = await backends(identify_then_echo(b"A"))
    first, second = free_port(), free_port()
    config = network_config(first, [backend.port])
    proc = lbd(config)
    await proc.wait_ready()
    reader, writer = await connect(first)
    assert await reader.readline() == b"A\n"

    config["load_balancers"][0]["listeners"][0]["port"] = second
    proc.write_config(config)
    status, body = await proc.admin("POST", "/v1/reload")
    assert (status, body["generation"]) == (200, 2), body

    new_reader, new_writer = await connect(second)
    assert await new_reader.readline() == b"A\n"
    new_writer.close()
    try:
        _, refused = await connect(first)
        refused.close()
        raise AssertionError("the removed listener still accepts connections")
    except ConnectionRefusedError:
        pass
    # The flow accepted on the removed listener drains instead of being cut.
    writer.write(b"draining")
    assert await reader.readexactly(8) == b"draining"
    writer.close()


async def test_sigterm_drains_open_flows_then_exits_zero(lbd: LbdFactory, backends: Backends) -> None:
    backend = await backends(echo)
    port = free_port()
    proc = lbd(network_config(port, [backend.port]))
    await proc.wait_ready()
    reader, writer = await connect(port)
    writer.write(b"one")
    assert await reader.readexactly(3) == b"one"

    proc.signal(signal.SIGTERM)

    async def refusing() -> bool:
        try:
            _, w = await connect(port)
        except ConnectionRefusedError:
            return True
        w.close()
        return False

    await wait_for(refusing, what="listeners to close")
    writer.write(b"two")  # the open flow keeps working while lbd drains
    assert await reader.readexactly(3) == b"two"
    assert proc.process is not None and proc.process.poll() is None
    writer.write_eof()
    assert await reader.read(-1) == b""
    writer.close()
    assert await proc.wait_exit() == 0


async def test_sigterm_deadline_force_closes(lbd: LbdFactory, backends: Backends) -> None:
    backend = await backends(echo)
    port = free_port()
    config = network_config(port, [backend.port])
    config["node"] = {"shutdown_timeout_seconds": 1}
    proc = lbd(config)
    await proc.wait_ready()
    reader, writer = await connect(port)
    writer.write(b"x")
    assert await reader.readexactly(1) == b"x"
    proc.signal(signal.SIGTERM)
    assert await asyncio.wait_for(reader.read(-1), 30) == b""  # cut at the deadline
    writer.close()
    assert await proc.wait_exit() == 0
    assert "shutdown deadline reached" in proc.log


async def test_two_workers_share_the_port(lbd: LbdFactory, backends: Backends) -> None:
    backend = await backends(echo)
    port = free_port()
    proc = lbd(network_config(port, [backend.port]), workers=2)
    await proc.wait_ready()
    assert len(worker_pids(proc)) == 2

    async def one(i: int) -> None:
        reader, writer = await connect(port)
        payload = f"n{i}".encode()
        writer.write(payload)
        assert await reader.readexactly(len(payload)) == payload
        writer.close()

    for _ in range(10):
        await asyncio.gather(*(one(i) for i in range(20)))
    _status, body = await proc.admin("GET", "/v1/stats")
    per_worker = [w["listeners"][0]["new_connections"] for w in body["workers"] if w["listeners"]]
    assert sum(per_worker) == 200
    # SO_REUSEPORT hashes connections over both workers' sockets; 200 all landing on one is ~1e-60.
    assert len(per_worker) == 2 and min(per_worker) > 0, per_worker


async def test_startup_fails_when_the_port_is_taken(lbd: LbdFactory) -> None:
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # would share the port silently
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        proc = lbd(network_config(squatter.getsockname()[1], [free_port()]))
        assert await proc.wait_exit() == 3
    assert "address already in use" in proc.log


async def test_startup_refuses_an_invalid_config(lbd: LbdFactory) -> None:
    config = network_config(free_port(), [free_port()])
    config["target_groups"][0]["protocol"] = "HTTP"  # behind a TCP listener
    proc = lbd(config)
    assert await proc.wait_exit() == 2
    assert "load_balancers[0].listeners[0]" in proc.log


async def test_sd_notify_ready_reloading_stopping(lbd: LbdFactory, backends: Backends, tmp_path: Any) -> None:
    backend = await backends(echo)
    path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(path)
    notify.setblocking(False)
    messages: list[str] = []

    def drain() -> list[str]:
        try:
            while True:
                messages.append(notify.recv(4096).decode())
        except BlockingIOError:
            pass
        return messages

    os.environ["NOTIFY_SOCKET"] = path
    try:
        proc = lbd(network_config(free_port(), [backend.port]))
    finally:
        del os.environ["NOTIFY_SOCKET"]
    await proc.wait_ready()
    await wait_for(lambda: any("READY=1" in m for m in drain()), what="READY=1")
    proc.signal(signal.SIGHUP)
    await wait_for(lambda: sum("READY=1" in m for m in drain()) >= 2, what="READY=1 after reload")
    proc.signal(signal.SIGTERM)
    assert await proc.wait_exit() == 0
    drain()
    notify.close()
    kinds = [m.split("\n")[0] for m in messages]
    assert kinds == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"], messages
    assert any("MONOTONIC_USEC=" in m for m in messages)
