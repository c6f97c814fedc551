"""Web ACLs in front of an application load balancer, through a real ``lbd run`` and real backends: each
statement type, evasions, custom responses, count and labels, rate-based blocking, metrics, the access log,
admin API changes reaching every worker, IP set files, and invalid changes keeping the old ACL."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import LbdFactory
from tests.http_backend import HttpBackend, pattern
from tests.http_client import Client
from tests.lbdproc import application_config, free_port, http_request, wait_for


def byte(field: str, positional: str, value: str, *chain: str, **extra: Any) -> dict[str, Any]:
    spec = {
        "field": field,
        "positional": positional,
        "value": value,
        "transformations": list(chain) or ["NONE"],
    }
    return {"byte_match": {**spec, **extra}}


def rule(
    name: str, priority: int, statement: dict[str, Any], action: Any = "block", **extra: Any
) -> dict[str, Any]:
    return {"name": name, "priority": priority, "action": action, "statement": statement, **extra}


RULES = [
    rule("forwarded-deny", 1, {"ip_set": {"name": "deny", "forwarded_ip": {"position": "FIRST"}}}),
    rule(
        "loopback-path",
        2,
        {
            "and": [
                {"ip_set": {"addresses": ["127.0.0.0/8", "::1/128"]}},
                byte("uri_path", "EXACTLY", "/ipblock"),
            ]
        },
    ),
    rule(
        "admin",
        3,
        byte("uri_path", "STARTS_WITH", "/admin", "URL_DECODE", "LOWERCASE"),
        {
            "block": {
                "status_code": 404,
                "body": "nothing here",
                "headers": [{"name": "X-Blocked-By", "value": "waf"}],
            }
        },
    ),
    rule(
        "sqli",
        4,
        {
            "regex_match": {
                "field": "query_string",
                "pattern": r"union\s+select",
                "transformations": ["URL_DECODE", "LOWERCASE"],
            }
        },
    ),
    rule(
        "scanner",
        5,
        byte("single_header", "CONTAINS", "sqlmap", "LOWERCASE", header="User-Agent"),
        {"count": {"insert_headers": [{"name": "scanner", "value": "yes"}]}},
        rule_labels=["bot:scanner"],
    ),
    rule(
        "scanner-api",
        6,
        {"and": [{"label_match": {"key": "bot:scanner"}}, byte("uri_path", "STARTS_WITH", "/api")]},
    ),
    rule("xss-body", 7, byte("body", "CONTAINS", "<script>", "HTML_ENTITY_DECODE", "LOWERCASE")),
    rule(
        "big-header",
        8,
        {"size_constraint": {"field": "single_header", "header": "X-Big", "comparison": "GT", "size": 100}},
    ),
    rule("no-delete", 9, {"not": {"not": byte("method", "EXACTLY", "DELETE")}}),
    rule(
        "flood",
        10,
        {"rate_based": {"limit": 10, "window_seconds": 60, "aggregate_key": "header", "header": "X-Flood"}},
        {"block": {"status_code": 429, "body": "slow down"}},
    ),
]


def web_acl(rules: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "name": "protect",
        "default_action": "allow",
        "associations": [{"load_balancer": "alb"}],
        "ip_sets": [{"name": "deny", "addresses": ["192.0.2.0/24"]}],
        "rules": rules,
        **extra,
    }


async def metrics(proc: Any) -> dict[tuple[str, str, str], float]:
    status, _, payload = await http_request(proc.admin_port, "GET", "/metrics")
    assert status == 200
    found: dict[tuple[str, str, str], float] = {}
    for line in payload.decode().splitlines():
        match = re.match(r'lbd_waf_(\w+)_requests_total\{rule="([^"]*)",web_acl="([^"]*)"\} (\S+)', line)
        if match:
            found[(match.group(1), match.group(3), match.group(2))] = float(match.group(4))
    return found


def log_entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_each_statement_action_and_observation(
    lbd: LbdFactory, http_backends: Any, tmp_path: Path
) -> None:
    backend: HttpBackend = await http_backends("b1")
    port = free_port()
    log_path = tmp_path / "access.log"
    config = application_config(port, [backend.port], access_log={"path": str(log_path), "format": "json"})
    config["web_acls"] = [web_acl(RULES, request_headers={"labels": True, "rule": True})]
    proc = lbd(config)
    await proc.wait_ready()
    before = await metrics(proc)
    client = await Client.connect(port)
    try:

        async def status(method: str, path: str, body: bytes = b"", **headers: str) -> int:
            return (await client.request(method, path, body, headers)).status

        assert await status("GET", "/") == 200
        assert await status("GET", "/", **{"X-Forwarded-For": "192.0.2.44, 10.1.1.1"}) == 403
        assert await status("GET", "/", **{"X-Forwarded-For": "10.1.1.1, 192.0.2.44"}) == 200  # FIRST only
        assert await status("GET", "/ipblock") == 403
        # Evasions: URL-encoded and mixed case reach the same rule.
        for evasion in ("/admin", "/%61dmin/x", "/ADMIN", "/%41dMiN"):
            response = await client.request("GET", evasion)
            assert (response.status, response.body, response.header("x-blocked-by")) == (
                404,
                b"nothing here",
                "waf",
            )
            assert response.keep_alive  # a block answers on the same connection
        assert await status("GET", "/q?id=1%20UNION%20%20SeLeCt%201") == 403
        assert await status("GET", "/q?id=union") == 200
        # Count: labels the request and lets it go on; the next rule matches the label.
        assert await status("GET", "/page", **{"User-Agent": "SQLMap/1.7"}) == 200
        seen = backend.requests[-1]
        assert seen.header("x-amzn-waf-scanner") == "yes"
        assert seen.header("x-amzn-waf-labels") == "bot:scanner"
        assert seen.header("x-amzn-waf-rule") == "Default_Action"
        assert await status("GET", "/api/x", **{"User-Agent": "sqlmap"}) == 403
        assert await status("GET", "/api/x") == 200
        # The body's first bytes, entity-encoded and mixed case; a clean body reaches the target whole.
        assert await status("POST", "/echo", b"a=&lt;ScRiPt&gt;alert(1)") == 403
        clean = pattern(100_000).replace(b"<", b"(")
        response = await client.request("POST", "/echo", clean)
        assert (response.status, response.body) == (200, clean)
        assert await status("GET", "/", **{"X-Big": "x" * 101}) == 403
        assert await status("GET", "/", **{"X-Big": "x" * 100}) == 200
        assert await status("DELETE", "/thing") == 403
        # Rate-based: the 11th request within the window is over the limit of 10.
        flood = [await status("GET", "/", **{"X-Flood": "k1"}) for _ in range(12)]
        assert flood == [200] * 10 + [429] * 2
        assert await status("GET", "/", **{"X-Flood": "k2"}) == 200  # another key has its own count
    finally:
        client.close()
    # A chunked body is inspected too (its first 8 KB, before the request is forwarded).
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n9\r\n <SCRIPT>\r\n0\r\n\r\n"
    )
    raw = await asyncio.wait_for(reader.read(-1), 30)
    writer.close()
    assert raw.startswith(b"HTTP/1.1 403 Forbidden\r\n") and b"Connection: close" in raw

    after = await metrics(proc)

    def delta(outcome: str, rule_name: str) -> float:
        key = (outcome, "protect", rule_name)
        return after.get(key, 0) - before.get(key, 0)

    assert delta("blocked", "forwarded-deny") == 1
    assert delta("blocked", "loopback-path") == 1
    assert delta("blocked", "admin") == 4
    assert delta("blocked", "sqli") == 1
    assert delta("counted", "scanner") == 2
    assert delta("blocked", "scanner-api") == 1
    assert delta("blocked", "xss-body") == 2
    assert delta("blocked", "big-header") == 1
    assert delta("blocked", "no-delete") == 1
    assert delta("blocked", "flood") == 2
    assert delta("allowed", "Default_Action") == 18

    def logged() -> list[dict[str, Any]]:
        entries = log_entries(log_path)
        return entries if len(entries) >= 32 else []

    entries = await wait_for(logged, what="access log lines")
    by_rule = {(e["waf_rule"], e["waf_action"], e["elb_status_code"]) for e in entries}
    assert ("admin", "block", 404) in by_rule
    assert ("flood", "block", 429) in by_rule
    allowed = [e for e in entries if e["waf_action"] == "allow"]
    assert allowed and all(
        e["waf_rule"] == "Default_Action" and e["actions_executed"] == "waf,forward" for e in allowed
    )
    assert all(e["actions_executed"] == "waf" for e in entries if e["waf_action"] == "block")


async def test_default_block_with_an_allow_rule(lbd: LbdFactory, http_backends: Any) -> None:
    backend: HttpBackend = await http_backends("b1")
    port = free_port()
    config = application_config(port, [backend.port])
    config["web_acls"] = [
        {
            "name": "closed",
            "default_action": "block",
            "associations": [{"load_balancer": "alb"}],
            "rules": [rule("open", 1, byte("uri_path", "STARTS_WITH", "/public/"), "allow")],
        }
    ]
    proc = lbd(config)
    await proc.wait_ready()
    status, _, body = await http_request(port, "GET", "/public/a")
    assert (status, body) == (200, b"hello from b1\n")
    status, _, body = await http_request(port, "GET", "/private")
    assert status == 403 and b"<h1>403 Forbidden</h1>" in body  # WAF's default block page
    assert [r.target for r in backend.requests] == ["/public/a"]


async def test_admin_changes_reach_every_worker_and_invalid_ones_keep_the_old_acl(
    lbd: LbdFactory, http_backends: Any, tmp_path: Path
) -> None:
    backend: HttpBackend = await http_backends("b1")
    port = free_port()
    ip_file = tmp_path / "deny.txt"
    ip_file.write_text("# blocked at the edge\n198.51.100.0/24\n")
    config = application_config(port, [backend.port])
    forwarded = {"forwarded_ip": {"position": "FIRST"}}
    config["web_acls"] = [
        web_acl(
            [
                rule("deny", 1, {"ip_set": {"name": "deny", **forwarded}}),
                rule("from-file", 2, {"ip_set": {"name": "listed", **forwarded}}),
            ],
            ip_sets=[
                {"name": "deny", "addresses": ["192.0.2.0/24"]},
                {"name": "listed", "file": str(ip_file)},
            ],
        )
    ]
    proc = lbd(config, workers=2)
    await proc.wait_ready()

    async def statuses(address: str, count: int = 16) -> set[int]:
        # New connections each: SO_REUSEPORT spreads them over both workers.
        results = await asyncio.gather(
            *(http_request(port, "GET", "/", headers={"X-Forwarded-For": address}) for _ in range(count))
        )
        return {status for status, _, _ in results}

    assert await statuses("203.0.113.5") == {200}
    assert await statuses("198.51.100.7") == {403}

    status, body = await proc.admin(
        "PUT", "/v1/web-acls/protect/ip-sets/deny", json.dumps({"addresses": ["203.0.113.0/24"]}).encode()
    )
    assert status == 200, body
    assert await statuses("203.0.113.5") == {403}
    assert await statuses("192.0.2.1") == {200}
    status, stats = await proc.admin("GET", "/v1/stats")
    refused = [
        sum(entry["elb_responses_4xx"] for entry in worker["listeners"]) for worker in stats["workers"]
    ]
    assert len(refused) == 2 and all(refused), refused  # both workers blocked with the new set

    # Invalid changes: refused with the key path, the old ACL keeps serving.
    status, body = await proc.admin(
        "PUT", "/v1/web-acls/protect/ip-sets/deny", b'{"addresses": ["203.0.113.0/33"]}'
    )
    assert status == 400 and any(
        e.startswith("web_acls[0].ip_sets[0].addresses[0]:") for e in body["errors"]
    ), body
    bad_rule = web_acl(
        [rule("r", 1, {"regex_match": {"field": "uri_path", "pattern": "(", "transformations": ["NONE"]}})]
    )
    status, body = await proc.admin("PUT", "/v1/web-acls/protect", json.dumps(bad_rule).encode())
    assert status == 400 and any(
        e.startswith("web_acls[0].rules[0].statement.regex_match.pattern:") for e in body["errors"]
    )
    status, body = await proc.admin("PUT", "/v1/web-acls/nope/ip-sets/deny", b'{"addresses": []}')
    assert status == 404
    assert await statuses("203.0.113.5") == {403}

    # A whole ACL replaced: rules too.
    replaced = web_acl([rule("only-put", 1, byte("uri_path", "EXACTLY", "/put-blocked"))])
    status, body = await proc.admin("PUT", "/v1/web-acls/protect", json.dumps(replaced).encode())
    assert status == 200, body
    assert await statuses("203.0.113.5") == {200}
    results = await asyncio.gather(*(http_request(port, "GET", "/put-blocked") for _ in range(16)))
    assert {s for s, _, _ in results} == {403}
    status, listing = await proc.admin("GET", "/v1/web-acls")
    assert status == 200
    assert listing["web_acls"][0]["rules"] == [
        {"name": "only-put", "priority": 1, "action": "block", "statement": "byte_match"}
    ]
    assert listing["web_acls"][0]["changed_through_api"] is True

    # A reload of an unchanged file keeps the API's ACL; once the file's ACL changes, the file's is in force.
    status, body = await proc.admin("POST", "/v1/reload")
    assert status == 200, body
    assert (await http_request(port, "GET", "/put-blocked"))[0] == 403
    edited = yaml.safe_load(proc.config_path.read_text())
    edited["web_acls"][0]["rules"] = [rule("file-again", 1, byte("uri_path", "EXACTLY", "/file-blocked"))]
    proc.write_config(edited)
    status, body = await proc.admin("POST", "/v1/reload")
    assert status == 200, body
    assert (await http_request(port, "GET", "/put-blocked"))[0] == 200
    assert (await http_request(port, "GET", "/file-blocked"))[0] == 403


async def test_ip_set_file_changes_apply_without_reload(
    lbd: LbdFactory, http_backends: Any, tmp_path: Path
) -> None:
    backend: HttpBackend = await http_backends("b1")
    port = free_port()
    ip_file = tmp_path / "deny.txt"
    ip_file.write_text("198.51.100.0/24\n")
    config = application_config(port, [backend.port])
    config["web_acls"] = [
        web_acl(
            [rule("from-file", 1, {"ip_set": {"file": str(ip_file), "forwarded_ip": {"position": "LAST"}}})],
            ip_sets=[],
        )
    ]
    proc = lbd(config, workers=2)
    await proc.wait_ready()

    async def status(address: str) -> int:
        return (await http_request(port, "GET", "/", headers={"X-Forwarded-For": address}))[0]

    assert await status("198.51.100.9") == 403
    assert await status("192.0.2.9") == 200
    ip_file.write_text("192.0.2.0/24\n2001:db8::/32\n")

    async def applied() -> bool:
        return await status("192.0.2.9") == 403 and await status("198.51.100.9") == 200

    await wait_for(applied, what="the new IP set file in force")
    ip_file.write_text("192.0.2.0/24\nnot-an-address\n")
    await wait_for(lambda: "IP set file not applied" in proc.log, what="the bad file logged")
    assert await status("192.0.2.9") == 403  # the old addresses stay in force
    # lbd check refuses it too, naming the key path.
    check = subprocess.run(
        [sys.executable, "-m", "lbd", "check", "-c", str(proc.config_path)], capture_output=True, text=True
    )
    assert check.returncode == 2
    assert "web_acls[0].rules[0].statement.ip_set.file:" in check.stdout + check.stderr
    assert "line 2: not an IPv4 or IPv6 CIDR" in check.stdout + check.stderr


async def test_invalid_acl_is_refused_by_check_and_by_reload(
    lbd: LbdFactory, http_backends: Any, tmp_path: Path
) -> None:
    backend: HttpBackend = await http_backends("b1")
    port = free_port()
    config = application_config(port, [backend.port])
    config["web_acls"] = [web_acl([rule("r", 1, byte("uri_path", "EXACTLY", "/blocked"))])]
    proc = lbd(config)
    await proc.wait_ready()
    assert (await http_request(port, "GET", "/blocked"))[0] == 403
    broken = yaml.safe_load(proc.config_path.read_text())
    broken["web_acls"][0]["rules"][0]["statement"]["byte_match"]["positional"] = "SOMEWHERE"
    broken["web_acls"][0]["associations"].append({"api": "pets"})
    proc.write_config(broken)
    check = subprocess.run(
        [sys.executable, "-m", "lbd", "check", "-c", str(proc.config_path)], capture_output=True, text=True
    )
    assert check.returncode == 2
    assert "web_acls[0].rules[0].statement.byte_match.positional:" in check.stdout + check.stderr
    status, body = await proc.admin("POST", "/v1/reload")
    assert status == 422 and any("byte_match.positional" in e for e in body["errors"])
    assert (await http_request(port, "GET", "/blocked"))[0] == 403  # the old ACL still serves
    # Valid, but associated with an API the file does not define: refused, naming the key path.
    broken["web_acls"][0]["rules"][0]["statement"]["byte_match"]["positional"] = "EXACTLY"
    proc.write_config(broken)
    check = subprocess.run(
        [sys.executable, "-m", "lbd", "check", "-c", str(proc.config_path)], capture_output=True, text=True
    )
    assert check.returncode == 2
    assert (
        "web_acls[0].associations[1].api: no API named 'pets' (defined: none)" in check.stdout + check.stderr
    )
    status, body = await proc.admin("POST", "/v1/reload")
    assert status == 422
