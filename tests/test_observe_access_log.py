"""Access logs through a real ``lbd run``: every ALB field of a forwarded request, a redirect, a fixed
response and an error, the JSON-lines form, a network flow line, and reopening on SIGUSR1."""

from __future__ import annotations

import json
import re
import shlex
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lbd.observe.access_log import ALB_FIELDS
from tests.conftest import LbdFactory, TcpBackend
from tests.http_backend import HttpBackend
from tests.http_client import Client
from tests.lbdproc import application_config, free_port, network_config, wait_for

RULES = [
    {
        "priority": 5,
        "conditions": [{"field": "path-pattern", "values": ["/fixed"]}],
        "actions": [{"type": "fixed-response", "status_code": 418, "message_body": "teapot"}],
    },
    {
        "priority": 7,
        "conditions": [{"field": "path-pattern", "values": ["/moved"]}],
        "actions": [{"type": "redirect", "status_code": "HTTP_302", "host": "example.org"}],
    },
]


def lines(path: Path, count: int) -> list[str]:
    text = path.read_text() if path.exists() else ""
    found = text.splitlines()
    return found if len(found) >= count else []


def parse(line: str) -> dict[str, str]:
    values = shlex.split(line)
    assert len(values) == len(ALB_FIELDS), line
    return dict(zip(ALB_FIELDS, values, strict=True))


def recent(stamp: str) -> bool:
    when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return abs(datetime.now(UTC) - when) < timedelta(minutes=5)


async def request(port: int, path: str, **headers: str) -> int:
    client = await Client.connect(port)
    try:
        return (await client.request("GET", path, headers={"User-Agent": "tester/1.0", **headers})).status
    finally:
        client.close()


async def test_alb_fields_for_forward_redirect_fixed_and_error(lbd: LbdFactory, tmp_path: Path) -> None:
    backend = await HttpBackend("b").start()
    port = free_port()
    log_path = tmp_path / "access.log"
    config = application_config(port, [backend.port], rules=RULES, access_log={"path": str(log_path)})
    proc = lbd(config)
    await proc.wait_ready()
    assert await request(port, "/page?q=1", Host="shop.example.com") == 200
    assert await request(port, "/moved") == 302
    assert await request(port, "/fixed") == 418
    assert await request(port, "/garbage") == 502
    found: list[str] = await wait_for(lambda: lines(log_path, 4), what="4 access-log lines")
    forward, moved, fixed, error = (parse(line) for line in found)

    target = f"127.0.0.1:{backend.port}"
    assert forward["type"] == "http"
    assert recent(forward["time"]) and recent(forward["request_creation_time"])
    assert forward["elb"] == "app/alb"
    assert re.fullmatch(r"127\.0\.0\.1:\d+", forward["client:port"])
    assert forward["target:port"] == forward["target:port_list"] == target
    for name in ("request_processing_time", "target_processing_time", "response_processing_time"):
        assert re.fullmatch(r"\d+\.\d{6}", forward[name]), name
    assert (forward["elb_status_code"], forward["target_status_code"]) == ("200", "200")
    assert forward["target_status_code_list"] == "200"
    assert int(forward["received_bytes"]) > 0
    assert int(forward["sent_bytes"]) > len("hello from b\n")
    assert forward["request"] == f"GET http://shop.example.com:{port}/page?q=1 HTTP/1.1"
    assert forward["user_agent"] == "tester/1.0"
    assert (forward["ssl_cipher"], forward["ssl_protocol"], forward["domain_name"]) == ("-", "-", "-")
    assert forward["target_group_arn"] == "web"
    assert forward["trace_id"] == backend.requests[0].header("x-amzn-trace-id")
    assert (forward["matched_rule_priority"], forward["actions_executed"]) == ("0", "forward")
    assert (forward["redirect_url"], forward["error_reason"]) == ("-", "-")
    assert (forward["classification"], forward["classification_reason"]) == ("-", "-")

    assert (moved["elb_status_code"], moved["target_status_code"]) == ("302", "-")
    assert (moved["matched_rule_priority"], moved["actions_executed"]) == ("7", "redirect")
    assert moved["redirect_url"] == f"http://example.org:{port}/moved"
    assert moved["target:port"] == "-" and moved["request_processing_time"] == "-1"

    assert (fixed["elb_status_code"], fixed["matched_rule_priority"], fixed["actions_executed"]) == (
        "418",
        "5",
        "fixed-response",
    )

    assert (error["elb_status_code"], error["target_status_code"]) == ("502", "-")
    assert error["error_reason"] == "MalformedResponse"
    assert error["target:port"] == target  # it was sent, the answer was garbage
    assert error["target_processing_time"] == "-1"
    await backend.close()


async def test_rejected_request_is_logged_with_its_reason(lbd: LbdFactory, tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "access.log"
    proc = lbd(application_config(port, [free_port()], access_log={"path": str(log_path)}))
    await proc.wait_ready()
    client = await Client.connect(port)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    assert (await client.response()).status == 400
    client.close()
    (line,) = await wait_for(lambda: lines(log_path, 1), what="a line")
    entry = parse(line)
    assert (entry["elb_status_code"], entry["matched_rule_priority"]) == ("400", "-1")
    assert (entry["classification"], entry["classification_reason"]) == ("Severe", "MultipleContentLength")
    assert entry["error_reason"] == "MultipleContentLength"


async def test_json_lines_and_reopen_on_sigusr1(lbd: LbdFactory, tmp_path: Path) -> None:
    backend = await HttpBackend("b").start()
    port = free_port()
    log_path = tmp_path / "access.jsonl"
    proc = lbd(application_config(port, [backend.port], access_log={"path": str(log_path), "format": "json"}))
    await proc.wait_ready()
    assert await request(port, "/") == 200
    (line,) = await wait_for(lambda: lines(log_path, 1), what="a JSON line")
    entry: dict[str, Any] = json.loads(line)
    assert set(ALB_FIELDS) <= set(entry)
    assert entry["elb_status_code"] == 200 and entry["actions_executed"] == "forward"

    rotated = tmp_path / "access.jsonl.1"
    log_path.rename(rotated)  # what logrotate does, then it signals the main process
    proc.signal(signal.SIGUSR1)

    async def reopened() -> bool:
        await request(port, "/")
        return bool(lines(log_path, 1))

    await wait_for(reopened, what="a new file after SIGUSR1")
    assert len(rotated.read_text().splitlines()) >= 1
    await backend.close()


async def test_network_listener_logs_one_line_per_flow(
    lbd: LbdFactory, backends: Any, tmp_path: Path
) -> None:
    echo: TcpBackend = await backends()
    port = free_port()
    log_path = tmp_path / "flows.log"
    config = network_config(port, [echo.port])
    config["load_balancers"][0]["access_log"] = {"path": str(log_path)}
    proc = lbd(config)
    await proc.wait_ready()
    client = await Client.connect(port)
    client.send(b"twelve bytes")
    assert await client.reader.readexactly(12) == b"twelve bytes"
    client.writer.write_eof()
    assert await client.reader.read() == b""
    client.close()
    (line,) = await wait_for(lambda: lines(log_path, 1), what="a flow line")
    fields = line.split(" ")
    assert fields[0] == "tcp" and fields[3] == "net/nlb" and fields[4] == f"TCP:{port}"
    assert fields[6] == f"127.0.0.1:{echo.port}"
    assert (fields[8], fields[9]) == ("12", "12")  # received from and sent to the client
