"""Distributions with several workers, HTTPS viewers and signed origin requests, through a real lbd.

Invalidations go through the admin API and must take effect on every worker before the answer: each
worker has its own cache, so the test first fills both (new connections land on either worker), then
invalidates, then checks that no connection, whichever worker takes it, gets the old object again.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import ssl
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from lbd.tls.store import CertificateStore, issue
from tests.edge_origin import PATTERN, Answer, Origin
from tests.h2_client import H2Client
from tests.lbdproc import Lbd, free_port, http_request, wait_for


def config(port: int, server: Origin, **extra: Any) -> dict[str, Any]:
    listener = extra.pop("listener", {"protocol": "HTTP", "port": port, "address": "127.0.0.1"})
    return {
        "node": {"workers": extra.pop("workers", 1)},
        "target_groups": [
            {
                "name": "web",
                "protocol": "HTTP",
                "health_check": {"enabled": False},
                "targets": [{"id": "127.0.0.1", "port": server.port}],
            }
        ],
        "distributions": [
            {
                "name": "site",
                "listeners": [listener],
                "origins": [{"id": "app", "target_group": "web", **extra.pop("origin", {})}],
                "default_cache_behavior": {"origin": "app", "cache_policy": "CachingOptimized"},
                **extra,
            }
        ],
    }


async def test_an_invalidation_reaches_every_worker_before_it_is_answered(tmp_path: Path) -> None:
    origin = await Origin().start()
    origin.routes["/images/a.png"] = Answer(body=b"v1", headers={"Cache-Control": "max-age=3600"})
    origin.routes["/images/b.png"] = Answer(body=b"v1", headers={"Cache-Control": "max-age=3600"})
    origin.routes["/index.html"] = Answer(body=b"v1", headers={"Cache-Control": "max-age=3600"})
    port = free_port()
    lbd = Lbd(tmp_path, config(port, origin, workers=2), workers=2)
    lbd.start()
    try:
        await lbd.wait_ready()

        async def both_workers_cached() -> bool:
            for path in ("/images/a.png", "/images/b.png", "/index.html"):
                await http_request(port, "GET", path)
            return all(origin.hits[p] >= 2 for p in ("/images/a.png", "/images/b.png", "/index.html"))

        await wait_for(both_workers_cached, interval=0, what="both workers to cache every object")
        for path in origin.routes:
            origin.routes[path] = Answer(body=b"v2", headers={"Cache-Control": "max-age=3600"})

        status, record = await lbd.admin(
            "POST", "/v1/distributions/site/invalidations", json.dumps({"paths": ["/images/*"]}).encode()
        )
        assert status == 201 and record["status"] == "Completed" and record["paths"] == ["/images/*"]
        assert record["id"].startswith("I") and len(record["id"]) == 14
        for _ in range(30):  # new connections: both workers answer some of them
            assert (await http_request(port, "GET", "/images/a.png"))[2] == b"v2"
            assert (await http_request(port, "GET", "/images/b.png"))[2] == b"v2"
            assert (await http_request(port, "GET", "/index.html"))[2] == b"v1"  # not invalidated

        status, listed = await lbd.admin("GET", "/v1/distributions/site/invalidations")
        assert status == 200 and [i["id"] for i in listed["invalidations"]] == [record["id"]]
        status, shown = await lbd.admin("GET", f"/v1/distributions/site/invalidations/{record['id']}")
        assert status == 200 and shown == record

        for body, expected in (
            ({"paths": []}, 400),
            ({"paths": ["/a*b"]}, 400),  # a wildcard only at the end
            ({"path": ["/x"]}, 400),
        ):
            status, answer = await lbd.admin(
                "POST", "/v1/distributions/site/invalidations", json.dumps(body).encode()
            )
            assert status == expected, answer
        status, _ = await lbd.admin("POST", "/v1/distributions/nope/invalidations", b'{"paths": ["/*"]}')
        assert status == 404
        status, listed = await lbd.admin("GET", "/v1/distributions")
        assert status == 200 and listed["distributions"][0]["name"] == "site"
        assert listed["distributions"][0]["listeners"] == [f"HTTP:127.0.0.1:{port}"]
    finally:
        lbd.stop()
        await origin.stop()


async def test_https_viewers_get_sni_certificates_and_h2_and_origins_a_signature(tmp_path: Path) -> None:
    store = CertificateStore(tmp_path / "store")
    store.put(issue("site", ["site.test"]))
    store.put(issue("other", ["cdn.other.test"]))
    origin = await Origin().start()
    origin.routes["/doc"] = Answer(body=b"signed", headers={"Cache-Control": "max-age=60"})
    origin.routes["/h2-only"] = Answer(body=b"via h2", headers={"Cache-Control": "max-age=60"})
    port = free_port()
    secret = tmp_path / "oac.secret"
    secret.write_text("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n")
    cfg = config(
        port,
        origin,
        listener={
            "protocol": "HTTPS",
            "port": port,
            "address": "127.0.0.1",
            "certificates": ["site", "other"],
        },
        origin={
            "origin_access": {
                "type": "sigv4",
                "access_key_id": "AKIDEXAMPLE",
                "secret_file": str(secret),
                "region": "eu-west-1",
                "service": "s3",
            }
        },
    )
    cfg["certificates"] = {"store": str(store.directory)}
    lbd = Lbd(tmp_path, cfg)
    lbd.start()
    try:
        await lbd.wait_ready()
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        for server_name, expected in (("cdn.other.test", "cdn.other.test"), ("site.test", "site.test")):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname=server_name
            )
            cert = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            writer.write(b"GET /doc HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
            response = await reader.read()
            writer.close()
            assert expected.encode() in cert
            assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"signed")
        assert origin.hits["/doc"] == 1  # the second viewer got a hit
        seen = origin.last("/doc")
        assert seen.headers["cloudfront-forwarded-proto"] == "https"
        # botocore signs the same request independently: the signatures must agree.
        request = AWSRequest(
            method="GET",
            url="http://site.test/doc",
            headers={"Host": "site.test", "X-Amz-Content-Sha256": seen.headers["x-amz-content-sha256"]},
        )
        # add_auth stamps the request with its own clock: give it the second lbd signed in, or a test
        # that crosses a second boundary between the two compares signatures of different dates.
        signed_at = datetime.datetime.strptime(seen.headers["x-amz-date"], "%Y%m%dT%H%M%SZ")
        with mock.patch("botocore.auth.get_current_datetime", return_value=signed_at):
            SigV4Auth(
                Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"), "s3", "eu-west-1"
            ).add_auth(request)
        assert seen.headers["authorization"] == request.headers["Authorization"]

        # HTTP/2 by ALPN: streams of one connection, answered from the same cache.
        client = await H2Client.connect(port)
        try:
            responses = await asyncio.gather(*(client.request("GET", "/doc") for _ in range(5)))
            miss = await client.request("GET", "/h2-only")
        finally:
            await client.close()
        assert [(r.status, bytes(r.body), r.header(b"x-cache")) for r in responses] == [
            (200, b"signed", b"Hit from lbd")
        ] * 5
        assert origin.hits["/doc"] == 1
        assert (miss.status, bytes(miss.body), miss.header(b"x-cache")) == (200, b"via h2", b"Miss from lbd")
    finally:
        lbd.stop()
        await origin.stop()


def _peak_rss(pid: int) -> int:
    """A process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _workers(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


@pytest.mark.slow
async def test_a_large_object_streams_through_without_being_buffered(tmp_path: Path) -> None:
    size = 1024 * 1024 * 1024  # 1 GiB
    origin = await Origin().start()
    origin.routes["/video.bin"] = Answer(size=size, headers={"Cache-Control": "max-age=600"})
    port = free_port()
    lbd = Lbd(tmp_path, config(port, origin))
    lbd.start()
    try:
        await lbd.wait_ready()
        assert lbd.process is not None
        (worker,) = _workers(lbd.process.pid)
        before = _peak_rss(worker)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /video.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and f"content-length: {size}".encode() in head.lower()
        digest, expected, received = hashlib.sha256(), hashlib.sha256(), 0
        while chunk := await reader.read(1 << 20):
            digest.update(chunk)
            received += len(chunk)
        writer.close()
        left = size
        while left:
            piece = PATTERN[: min(left, len(PATTERN))]
            expected.update(piece)
            left -= len(piece)
        assert received == size and digest.digest() == expected.digest()
        grown = _peak_rss(worker) - before
        assert grown < 64 * 1024 * 1024, f"the worker's peak RSS grew by {grown >> 20} MiB"
    finally:
        lbd.stop()
        await origin.stop()


async def test_a_reload_keeps_the_cache_and_the_access_log_has_cloudfronts_fields(tmp_path: Path) -> None:
    origin = await Origin().start()
    origin.routes["/kept"] = Answer(body=b"kept", headers={"Cache-Control": "max-age=3600"})
    port = free_port()
    log_path = tmp_path / "edge.log"
    cfg = config(port, origin, access_log={"path": str(log_path)})
    lbd = Lbd(tmp_path, cfg)
    lbd.start()
    try:
        await lbd.wait_ready()
        await http_request(port, "GET", "/kept?x=1", headers={"User-Agent": "test agent"})
        cfg["distributions"][0]["comment"] = "changed"
        cfg["distributions"][0]["cache"] = {"capacity_mb": 64}
        lbd.write_config(cfg)
        status, body = await lbd.admin("POST", "/v1/reload")
        assert status == 200 and body["reloaded"], body
        _, headers, _ = await http_request(port, "GET", "/kept?x=1")
        assert headers["x-cache"] == "Hit from lbd" and origin.hits["/kept"] == 1

        def logged() -> list[list[str]]:
            lines = log_path.read_text().splitlines() if log_path.exists() else []
            return [line.split("\t") for line in lines if not line.startswith("#")] if len(lines) >= 4 else []

        entries = await wait_for(logged, what="two access-log lines")
        header = log_path.read_text().splitlines()[:2]
        assert header[0] == "#Version: 1.0" and header[1].startswith("#Fields: date time x-edge-location")
        fields = header[1].removeprefix("#Fields: ").split()
        first, second = (dict(zip(fields, entry, strict=True)) for entry in entries)
        assert (first["cs-method"], first["cs-uri-stem"], first["cs-uri-query"]) == ("GET", "/kept", "x=1")
        assert (first["sc-status"], first["x-edge-result-type"], second["x-edge-result-type"]) == (
            "200",
            "Miss",
            "Hit",
        )
        assert first["cs(User-Agent)"] == "test%20agent" and first["sc-bytes"] == "4"
        assert first["x-edge-request-id"] != second["x-edge-request-id"]
    finally:
        lbd.stop()
        await origin.stop()
