"""Access logs: ALB's field order for HTTP requests, one line per flow for network listeners, or JSON lines.

Off by default (``access_log`` on a load balancer). Lines are formatted on the event loop (cheap string
work) and written by one thread per file, in batches, so a slow disk never blocks the data path. SIGUSR1
reopens every file (logrotate's ``postrotate``).

ALB's fields, in order (AWS: Application Load Balancers, "Access log entries"):

    type time elb client:port target:port request_processing_time target_processing_time
    response_processing_time elb_status_code target_status_code received_bytes sent_bytes "request"
    "user_agent" ssl_cipher ssl_protocol target_group_arn "trace_id" "domain_name" "chosen_cert_arn"
    matched_rule_priority request_creation_time "actions_executed" "redirect_url" "error_reason"
    "target:port_list" "target_status_code_list" "classification" "classification_reason"
    waf_rule waf_action   (lbd's: the web ACL's deciding rule and action, "-" without one)

lbd has no ARNs: ``elb`` is ``app/<name>`` (``net/<name>``) and target_group_arn the target group's name.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import IO, Any

log = logging.getLogger("lbd.access")

FLUSH_SECONDS = 0.2
FLUSH_BYTES = 256 * 1024

ALB_FIELDS = (
    "type",
    "time",
    "elb",
    "client:port",
    "target:port",
    "request_processing_time",
    "target_processing_time",
    "response_processing_time",
    "elb_status_code",
    "target_status_code",
    "received_bytes",
    "sent_bytes",
    "request",
    "user_agent",
    "ssl_cipher",
    "ssl_protocol",
    "target_group_arn",
    "trace_id",
    "domain_name",
    "chosen_cert_arn",
    "matched_rule_priority",
    "request_creation_time",
    "actions_executed",
    "redirect_url",
    "error_reason",
    "target:port_list",
    "target_status_code_list",
    "classification",
    "classification_reason",
    # lbd's, after ALB's: the web ACL's deciding rule (or Default_Action) and its action (docs/waf.md).
    "waf_rule",
    "waf_action",
)
# Fields ALB writes in double quotes (they may contain spaces).
QUOTED = frozenset(
    {
        "request",
        "user_agent",
        "trace_id",
        "domain_name",
        "chosen_cert_arn",
        "actions_executed",
        "redirect_url",
        "error_reason",
        "target:port_list",
        "target_status_code_list",
        "classification",
        "classification_reason",
    }
)
# Network listeners, one line per flow (NLB logs only TLS flows; lbd logs TCP and UDP ones in the same
# spirit: a UDP flow's line is written when it expires).
NLB_FIELDS = (
    "type",
    "version",
    "time",
    "elb",
    "listener",
    "client:port",
    "destination:port",
    "connection_time",
    "received_bytes",
    "sent_bytes",
    "connection_creation_time",
    "error_reason",
)


def timestamp(wall: float) -> str:
    """ISO 8601 in UTC with microseconds, as ALB writes ``time`` and ``request_creation_time``."""
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_alb(entry: Mapping[str, Any]) -> str:
    out = []
    for name in ALB_FIELDS:
        value = entry.get(name)
        text = "-" if value is None or value == "" else str(value)
        out.append(_quote(text) if name in QUOTED else text.replace(" ", "+"))
    return " ".join(out)


def format_nlb(entry: Mapping[str, Any]) -> str:
    return " ".join(
        "-" if entry.get(n) in (None, "") else str(entry[n]).replace(" ", "+") for n in NLB_FIELDS
    )


def seconds(value: float) -> str:
    return "-1" if value < 0 else f"{value:.6f}"


class AccessLogFile:
    """One destination (a file, or stdout for "-"), written by its own thread in batches."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._buffer: list[str] = []
        self._size = 0
        self._flush: asyncio.TimerHandle | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lbd-access-log")
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._executor.submit(self._open)

    def write(self, line: str) -> None:
        self._buffer.append(line)
        self._size += len(line) + 1
        if self._size >= FLUSH_BYTES:
            self.flush()
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if not self._buffer:
            return
        data = "\n".join(self._buffer) + "\n"
        self._buffer, self._size = [], 0
        self._executor.submit(self._write, data)

    def reopen(self) -> None:
        self.flush()
        self._executor.submit(self._open)

    def close(self) -> None:
        self.flush()
        self._executor.submit(self._close)
        self._executor.shutdown(wait=True)

    # -- in the writer thread ----------------------------------------------------------------------

    def _open(self) -> None:
        with self._lock:
            self._close()
            try:
                self._file = sys.stdout if self.path == "-" else open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                log.error("access log %s: cannot open: %s", self.path, exc)

    def _write(self, data: str) -> None:
        with self._lock:
            if self._file is None:
                return
            try:
                self._file.write(data)
                self._file.flush()
            except OSError as exc:
                log.error("access log %s: write failed: %s", self.path, exc)

    def _close(self) -> None:
        if self._file is not None and self._file is not sys.stdout:
            self._file.close()
        self._file = None


class AccessLog:
    """What one load balancer logs: ALB lines or JSON lines, to one AccessLogFile."""

    def __init__(self, sink: AccessLogFile, fmt: str, elb: str) -> None:
        self.sink = sink
        self.json = fmt == "json"
        self.elb = elb

    def emit(self, entry: dict[str, Any], kind: str = "http") -> None:
        if self.json:
            self.sink.write(json.dumps(entry, separators=(",", ":")))
        elif kind in ("tcp", "udp"):
            self.sink.write(format_nlb(entry))
        else:
            self.sink.write(format_alb(entry))

    def wall(self, instant: float) -> float:
        """A time.monotonic() instant as wall-clock seconds."""
        return time.time() - (time.monotonic() - instant)


class AccessLogs:
    """The worker's open access-log files, shared by path (several load balancers may log to one file)."""

    def __init__(self) -> None:
        self._files: dict[str, AccessLogFile] = {}

    def get(self, path: str, fmt: str, elb: str) -> AccessLog:
        sink = self._files.get(path)
        if sink is None:
            sink = self._files[path] = AccessLogFile(path)
        return AccessLog(sink, fmt, elb)

    def reopen(self) -> None:
        for sink in self._files.values():
            sink.reopen()

    def close(self) -> None:
        for sink in self._files.values():
            sink.close()
        self._files.clear()
