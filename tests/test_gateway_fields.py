"""The gateway's reading of a request head's field block (lbd/gateway/server.py ``block_fields``): each
name and value decoded from its bytes must give what splitting the decoded lines gives (RFC 9110 5.5:
whitespace around a value is not part of it; 5.3: repeated fields joined with ","; RFC 6265 5.4:
cookies with "; ")."""

from __future__ import annotations

import pytest

from lbd.gateway.server import block_fields


def by_lines(block: bytes) -> dict[str, str]:
    """The obvious reading: decode, split at LF, partition at the colon, strip, join repeats."""
    fields: dict[str, str] = {}
    for line in block.decode("latin-1").split("\n"):
        if not line:
            continue
        name, _, value = line.partition(":")
        name, value = name.lower(), value.strip(" \t\r")
        if name in fields:
            fields[name] = f"{fields[name]}{'; ' if name == 'cookie' else ','}{value}"
        else:
            fields[name] = value
    return fields


TOKEN = "eyJhbGciOiJSUzI1NiJ9." + "a" * 700 + ".sig"


@pytest.mark.parametrize(
    "block",
    [
        f"Host: 127.0.0.1:8080\r\nx-api-key: K\r\nAuthorization: Bearer {TOKEN}\r\n".encode(),
        b"Accept: a\r\nACCEPT: b\r\ncookie: x=1\r\nCookie: y=2\r\n",
        b"x-empty:\r\nx-spaces: \t  v  w \t\r\nX-Tab:\tt\r\n",
        b"x-colon: a:b:c\r\n",
        b"\xc0-Name: \xe9t\xe9\r\n",  # obs-text in a value (RFC 9110 5.5) and a byte lower() changes
        b"no-crlf:v",
        b"",
    ],
)
def test_block_fields_reads_as_the_lines_do(block: bytes) -> None:
    assert block_fields(block) == by_lines(block)


def test_block_fields_keeps_a_long_value_whole() -> None:
    fields = block_fields(f"Authorization: Bearer {TOKEN}\r\nX-Api-Key:  key \r\n".encode())
    assert fields == {"authorization": f"Bearer {TOKEN}", "x-api-key": "key"}
