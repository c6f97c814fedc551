"""A corpus of raw HTTP/1.1 request vectors from public sources, each sent on its own connection through a
real ``lbd run`` in defensive and in strictest mode (one lbd per mode).

Every vector must either be refused with the expected status and reach no target, or be forwarded exactly
once, with framing the target (h11, a strict parser) accepts. The valid requests at the top must be
forwarded, so lbd cannot pass by refusing everything.

Sources, cited per group below:
- RFC 9110 / RFC 9112 grammar and examples (request-line, request-target forms, Host, chunked coding).
- llhttp's test fixtures (nodejs/llhttp test/request/*.md: content-length, transfer-encoding,
  invalid, uri, connection, method).
- HAProxy's reg-tests (reg-tests/http-messaging/h1_to_h1.vtc, h1_host_normalization.vtc,
  http_abortonclose/http_request_buffer, truncated and te/cl cases).
- The HTTP Garden (narfindustries/http-garden) discrepancy reports between origin servers and proxies.
- AWS http-desync-guardian's test cases (tests/severe.yaml, ambiguous.yaml, acceptable.yaml).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from tests.conftest import Alb
from tests.http_backend import HttpBackend
from tests.http_client import Client

H = b"Host: example.com\r\n"
FORWARD = 0  # the expected outcome "forwarded once"


@dataclass(frozen=True)
class Vector:
    name: str
    raw: bytes
    defensive: int  # FORWARD, or the status lbd answers
    strictest: int

    def expected(self, mode: str) -> int:
        return self.defensive if mode == "defensive" else self.strictest


def same(name: str, raw: bytes, outcome: int) -> Vector:
    return Vector(name, raw, outcome, outcome)


def get(extra: bytes, target: bytes = b"/", version: bytes = b"HTTP/1.1") -> bytes:
    return b"GET " + target + b" " + version + b"\r\n" + extra + b"\r\n"


def post(fields: bytes, body: bytes = b"") -> bytes:
    return b"POST /echo HTTP/1.1\r\n" + H + fields + b"\r\n" + body


VALID: list[Vector] = [
    # RFC 9112 section 3 request-line and 3.2 request-target forms; RFC 9110 section 9 methods.
    same("GET origin-form", get(H), FORWARD),
    same("GET with query", get(H, b"/p?a=1&b=2"), FORWARD),
    same("GET percent-encoded path", get(H, b"/a%20b/%7Euser"), FORWARD),
    same("GET double slash path", get(H, b"//a//b"), FORWARD),
    same("GET long path", get(H, b"/" + b"x" * 4000), FORWARD),
    same("HEAD", b"HEAD / HTTP/1.1\r\n" + H + b"\r\n", FORWARD),
    same("DELETE", b"DELETE /r/1 HTTP/1.1\r\n" + H + b"\r\n", FORWARD),
    same("OPTIONS origin-form", b"OPTIONS /x HTTP/1.1\r\n" + H + b"\r\n", FORWARD),
    same("OPTIONS asterisk-form (RFC 9112 3.2.4)", b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n", FORWARD),
    same("POST with Content-Length", post(b"Content-Length: 5\r\n", b"hello"), FORWARD),
    same("POST Content-Length 0", post(b"Content-Length: 0\r\n"), FORWARD),
    same("PUT with body", b"PUT /echo HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nabc", FORWARD),
    same("PATCH with body", b"PATCH /echo HTTP/1.1\r\n" + H + b"Content-Length: 2\r\n\r\nab", FORWARD),
    same("custom method (RFC 9110 9.1 token)", b"PURGE /x HTTP/1.1\r\n" + H + b"\r\n", FORWARD),
    # RFC 9112 7.1 chunked coding, with extensions (7.1.1) and trailers (7.1.2).
    same("chunked body", post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"), FORWARD),
    same(
        "chunked upper-case hex",
        post(b"Transfer-Encoding: chunked\r\n", b"A\r\n0123456789\r\n0\r\n\r\n"),
        FORWARD,
    ),
    same("chunk extension", post(b"Transfer-Encoding: chunked\r\n", b"3;x=1\r\nabc\r\n0\r\n\r\n"), FORWARD),
    same(
        "chunked with trailer",
        post(b"Transfer-Encoding: chunked\r\n", b"1\r\na\r\n0\r\nX-T: 1\r\n\r\n"),
        FORWARD,
    ),
    same(
        "chunked several chunks",
        post(b"Transfer-Encoding: chunked\r\n", b"1\r\na\r\n2\r\nbc\r\n0\r\n\r\n"),
        FORWARD,
    ),
    same(
        "Transfer-Encoding case-insensitive", post(b"Transfer-Encoding: Chunked\r\n", b"0\r\n\r\n"), FORWARD
    ),
    # RFC 9112 3.2.2 absolute-form: forwarded in origin-form, Host from the target.
    same("absolute-form", get(H, b"http://example.com/p?q=1"), FORWARD),
    same("absolute-form with port", get(H, b"http://example.com:8080/p"), FORWARD),
    same("absolute-form without path", get(H, b"http://example.com"), FORWARD),
    same("absolute-form https scheme", get(H, b"https://example.com/"), FORWARD),
    same("absolute-form upper-case scheme", get(H, b"HTTP://example.com/"), FORWARD),
    # RFC 9110 7.2 Host = uri-host [ ":" port ]; RFC 3986 3.2.2 host forms.
    same("Host with port", get(b"Host: example.com:8080\r\n"), FORWARD),
    same("Host IPv4", get(b"Host: 192.0.2.1\r\n"), FORWARD),
    same("Host IPv6 literal", get(b"Host: [2001:db8::1]:8080\r\n"), FORWARD),
    same("Host upper-case", get(b"Host: EXAMPLE.com\r\n"), FORWARD),
    same("Host with trailing whitespace", get(b"Host: example.com \r\n"), FORWARD),
    same("empty Host (RFC 9112 3.2)", get(b"Host:\r\n"), FORWARD),
    same("HTTP/1.0 without Host", get(b"", version=b"HTTP/1.0"), FORWARD),
    same("HTTP/1.0 with Host", get(H, version=b"HTTP/1.0"), FORWARD),
    same("HTTP/1.0 keep-alive", get(H + b"Connection: keep-alive\r\n", version=b"HTTP/1.0"), FORWARD),
    # RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request-line.
    same("leading CRLF", b"\r\n" + get(H), FORWARD),
    # RFC 9110 5.5 / 5.6: OWS, tokens, repeated fields.
    same("tab as OWS", get(H + b"X-A:\tv\t\r\n"), FORWARD),
    same("no OWS", get(H + b"X-A:v\r\n"), FORWARD),
    same("empty value", get(H + b"X-Empty:\r\n"), FORWARD),
    same("token characters in a name", get(H + b"X!#$%&'*+.^`|~: v\r\n"), FORWARD),
    same("repeated field", get(H + b"Accept: a\r\nAccept: b\r\n"), FORWARD),
    same("value with inner spaces", get(H + b"User-Agent: a b  c\r\n"), FORWARD),
    same("underscore in another name", get(H + b"X_Custom: 1\r\n"), FORWARD),
    same("Connection keep-alive", get(H + b"Connection: keep-alive\r\n"), FORWARD),
    same("Connection close", get(H + b"Connection: close\r\n"), FORWARD),
    same("Expect 100-continue", post(b"Expect: 100-continue\r\nContent-Length: 2\r\n", b"ok"), FORWARD),
    same("TE trailers (hop-by-hop)", get(H + b"TE: trailers\r\n"), FORWARD),
    same("X-Forwarded-For from client", get(H + b"X-Forwarded-For: 192.0.2.9\r\n"), FORWARD),
]

REFUSED: list[Vector] = [
    # Request-line version (RFC 9112 2.3; ALB 505, R10). llhttp accepts 0.9 and 2.0; lbd does not.
    same("HTTP/2.0 as text", get(H, version=b"HTTP/2.0"), 505),
    same("HTTP/0.9 with version", get(H, version=b"HTTP/0.9"), 505),
    same("HTTP/0.9 simple request", b"GET /\r\n\r\n", 505),
    same("HTTP/1.2", get(H, version=b"HTTP/1.2"), 505),
    same("HTTP/3.0", get(H, version=b"HTTP/3.0"), 505),
    same("HTTP/1.10", get(H, version=b"HTTP/1.10"), 400),
    same("HTTP/01.1", get(H, version=b"HTTP/01.1"), 400),
    same("lower-case http/1.1", get(H, version=b"http/1.1"), 400),
    same("HTTP/ 1.1", get(H, version=b"HTTP/ 1.1"), 400),
    same("version with trailing space", get(H, version=b"HTTP/1.1 "), 400),
    same("version without minor", get(H, version=b"HTTP/1"), 400),
    same("HTTP/2 connection preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    # Request-target forms (RFC 9112 3.2).
    same("asterisk-form with GET", get(H, b"*"), 400),
    same("asterisk-form with POST", b"POST * HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n", 400),
    same("CONNECT authority-form", b"CONNECT example.com:443 HTTP/1.1\r\n" + H + b"\r\n", 405),
    same("CONNECT origin-form", b"CONNECT / HTTP/1.1\r\n" + H + b"\r\n", 405),
    same("authority-form with GET", get(H, b"example.com:443"), 400),
    same("relative target", get(H, b"foo/bar"), 400),
    same("fragment in target", get(H, b"/a#frag"), 400),
    same("bare # target", get(H, b"/#"), 400),
    same("absolute-form ftp scheme", get(H, b"ftp://example.com/"), 400),
    same("absolute-form with userinfo", get(H, b"http://user@example.com/"), 400),
    same("absolute-form with password", get(H, b"http://u:p@example.com/"), 400),
    same("absolute-form empty authority", get(H, b"http:///p"), 400),
    same("absolute-form bad port", get(H, b"http://example.com:99999/"), 400),
    same("absolute-form fragment", get(H, b"http://example.com/#x"), 400),
    same("TRACE", b"TRACE / HTTP/1.1\r\n" + H + b"\r\n", 405),
    # Host (RFC 9112 3.2: invalid or repeated Host is 400; RFC 3986 3.2 authority grammar).
    # HAProxy reg-tests h1_host_normalization.vtc and HTTP Garden Host discrepancies.
    same("Host list", get(b"Host: a.example, b.example\r\n"), 400),
    same("Host list without space", get(b"Host: a.example,b.example\r\n"), 400),
    same("Host with space", get(b"Host: a example\r\n"), 400),
    same("Host with userinfo", get(b"Host: u@example.com\r\n"), 400),
    same("Host with path", get(b"Host: example.com/x\r\n"), 400),
    same("Host is a path", get(b"Host: /x\r\n"), 400),
    same("Host with fragment", get(b"Host: example.com#f\r\n"), 400),
    same("Host is #", get(b"Host: #\r\n"), 400),
    same("Host with query", get(b"Host: example.com?x\r\n"), 400),
    same("Host port too large", get(b"Host: example.com:99999\r\n"), 400),
    same("Host port not numeric", get(b"Host: example.com:http\r\n"), 400),
    same("Host negative port", get(b"Host: example.com:-1\r\n"), 400),
    same("Host two ports", get(b"Host: example.com:80:80\r\n"), 400),
    same("Host only a port", get(b"Host: :80\r\n"), 400),
    same("Host unclosed IPv6", get(b"Host: [::1\r\n"), 400),
    same("Host invalid IPv6", get(b"Host: [zz::1]\r\n"), 400),
    same("Host IPvFuture", get(b"Host: [v1.x]\r\n"), 400),
    same("Host with backslash", get(b"Host: example.com\\x\r\n"), 400),
    same("Host with quote", get(b'Host: "example.com"\r\n'), 400),
    same("Host with scheme", get(b"Host: http://example.com\r\n"), 400),
    same("Host with NUL", get(b"Host: example.com\x00\r\n"), 400),
    same("two Host fields", get(H + b"Host: other.example\r\n"), 400),
    same("two identical Host fields", get(H + H), 400),
    same("HTTP/1.1 without Host", get(b"Accept: */*\r\n"), 400),
    same("absolute-form without Host on 1.1", get(b"", b"http://example.com/"), 400),
    same("absolute-form with bad Host", get(b"Host: a b\r\n", b"http://example.com/"), 400),
    # Methods (RFC 9110 9.1 token; llhttp test/request/method.md, invalid.md).
    same("lower-case method", b"get / HTTP/1.1\r\n" + H + b"\r\n", 400),
    same("method with @", b"GE@T / HTTP/1.1\r\n" + H + b"\r\n", 400),
    same("method with control char", b"G\x01ET / HTTP/1.1\r\n" + H + b"\r\n", 400),
    same("empty method", b" / HTTP/1.1\r\n" + H + b"\r\n", 400),
    # URI characters (llhttp test/request/uri.md).
    same("space in URI", get(H, b"/a b"), 400),
    same("NUL in URI", get(H, b"/\x00"), 400),
    same("control char in URI", get(H, b"/\x01"), 400),
    same("DEL in URI", get(H, b"/\x7f"), 400),
    same("non-ASCII in URI", get(H, b"/\xff"), 400),
    same("tab in URI", get(H, b"/a\tb"), 400),
    # Field syntax (RFC 9112 5, RFC 9110 5.1/5.5; llhttp invalid.md; desync-guardian severe.yaml).
    same("space in name", get(H + b"Bad Name: v\r\n"), 400),
    same("space before colon", get(H + b"X-A : v\r\n"), 400),
    same("tab before colon", get(H + b"X-A\t: v\r\n"), 400),
    same("empty name", get(H + b": v\r\n"), 400),
    same("name starting with colon", get(H + b":X: v\r\n"), 400),
    same("DEL in name", get(H + b"X\x7f: v\r\n"), 400),
    same("control char before a name", get(H + b"\x01X-A: v\r\n"), 400),
    same("NUL in name", get(H + b"X\x00A: v\r\n"), 400),
    same("non-ASCII in name", get(H + b"X-\xe9: v\r\n"), 400),
    same(
        "UTF-8 long s in Transfer-Encoding",
        post("Tran\u017ffer-Encoding: chunked\r\n".encode(), b"0\r\n\r\n"),
        400,
    ),
    same("NUL in value", get(H + b"X-A: a\x00b\r\n"), 400),
    same("control char in value", get(H + b"X-A: a\x01b\r\n"), 400),
    same("CR in value", get(H + b"X-A: a\rb\r\n"), 400),
    same("DEL in value", get(H + b"X-A: a\x7fb\r\n"), 400),
    same("vertical tab in value", get(H + b"X-A: a\x0bb\r\n"), 400),
    same("bare LF line end", get(H + b"X-A: a\nX-B: b\r\n"), 400),
    same("bare LF request line", b"GET / HTTP/1.1\n" + H + b"\r\n", 400),
    same("bare CR line end", get(H + b"X-A: a\rX-B: b\r\n"), 400),
    same("line without colon", get(H + b"NoColon\r\n"), 400),
    same("line starting with space (first)", b"GET / HTTP/1.1\r\n " + H + b"\r\n", 400),
    # Content-Length (RFC 9110 8.6, RFC 9112 6.3; llhttp content-length.md; desync-guardian severe.yaml).
    same("two different Content-Length", post(b"Content-Length: 1\r\nContent-Length: 2\r\n", b"ab"), 400),
    same("Content-Length list", post(b"Content-Length: 1, 2\r\n", b"ab"), 400),
    same("Content-Length identical list", post(b"Content-Length: 1,1\r\n", b"a"), 400),
    same("Content-Length with inner space", post(b"Content-Length: 1 0\r\n", b"a"), 400),
    same("Content-Length not a number", post(b"Content-Length: 1x\r\n", b"a"), 400),
    same("Content-Length hex", post(b"Content-Length: 0x10\r\n"), 400),
    same("Content-Length decimal point", post(b"Content-Length: 1.0\r\n", b"a"), 400),
    same("Content-Length negative", post(b"Content-Length: -1\r\n"), 400),
    same("Content-Length plus", post(b"Content-Length: +1\r\n", b"a"), 400),
    same("Content-Length 2^64", post(b"Content-Length: 18446744073709551616\r\n"), 400),
    same("Content-Length empty", post(b"Content-Length:\r\n"), 400),
    same("Content-Length control char", post(b"Content-Length: 1\x11\r\n", b"a"), 400),
    same("Content-Length with trailing space name", post(b"Content-Length : 1\r\n", b"a"), 400),
    same("Content-Length obs-fold", post(b"Content-Length: 1\r\n 2\r\n", b"a"), 400),
    # Transfer-Encoding (RFC 9112 6.1, 7; llhttp transfer-encoding.md; desync-guardian severe.yaml;
    # HTTP Garden TE discrepancies).
    same("Transfer-Encoding gzip", post(b"Transfer-Encoding: gzip\r\n"), 501),
    same("Transfer-Encoding gzip, chunked", post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), 501),
    same("Transfer-Encoding identity", post(b"Transfer-Encoding: identity\r\n"), 501),
    same("Transfer-Encoding xchunked", post(b"Transfer-Encoding: xchunked\r\n"), 501),
    same("Transfer-Encoding chunked, identity", post(b"Transfer-Encoding: chunked, identity\r\n"), 400),
    same(
        "Transfer-Encoding chunked twice",
        post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
        400,
    ),
    same("Transfer-Encoding chunked,chunked", post(b"Transfer-Encoding: chunked,chunked\r\n"), 400),
    same("Transfer-Encoding control char", post(b"Transfer-Encoding: chunked\x01\r\n"), 400),
    same("Transfer-Encoding vertical tab", post(b"Transfer-Encoding: chunked\x0b\r\n"), 400),
    same("Transfer-Encoding leading comma", post(b"Transfer-Encoding: ,chunked\r\n", b"0\r\n\r\n"), 400),
    same("Transfer-Encoding empty", post(b"Transfer-Encoding:\r\n"), 400),
    same("Transfer-Encoding quoted", post(b'Transfer-Encoding: "chunked"\r\n', b"0\r\n\r\n"), 400),
    same("Transfer-Encoding name with space", post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"), 400),
    same("Transfer-Encoding obs-fold", post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"), 400),
    # Chunked body syntax (RFC 9112 7.1; llhttp transfer-encoding.md; HAProxy h1_to_h1.vtc).
    same("chunk size not hex", post(b"Transfer-Encoding: chunked\r\n", b"zz\r\nab\r\n0\r\n\r\n"), 400),
    same("chunk size 0x prefix", post(b"Transfer-Encoding: chunked\r\n", b"0x2\r\nab\r\n0\r\n\r\n"), 400),
    same("chunk size negative", post(b"Transfer-Encoding: chunked\r\n", b"-2\r\nab\r\n0\r\n\r\n"), 400),
    same(
        "chunk size overflow", post(b"Transfer-Encoding: chunked\r\n", b"1" * 20 + b"\r\na\r\n0\r\n\r\n"), 400
    ),
    same("space after chunk size", post(b"Transfer-Encoding: chunked\r\n", b"2 \r\nab\r\n0\r\n\r\n"), 400),
    same("space before chunk size", post(b"Transfer-Encoding: chunked\r\n", b" 2\r\nab\r\n0\r\n\r\n"), 400),
    same(
        "chunk longer than its size", post(b"Transfer-Encoding: chunked\r\n", b"2\r\nabXX\r\n0\r\n\r\n"), 400
    ),
    same("chunk data without CRLF", post(b"Transfer-Encoding: chunked\r\n", b"2\r\nab0\r\n\r\n"), 400),
    same("bare LF after chunk size", post(b"Transfer-Encoding: chunked\r\n", b"2\nab\r\n0\r\n\r\n"), 400),
    same("bare LF after chunk data", post(b"Transfer-Encoding: chunked\r\n", b"2\r\nab\n0\r\n\r\n"), 400),
    same(
        "NUL in chunk extension", post(b"Transfer-Encoding: chunked\r\n", b"2;a\x00\r\nab\r\n0\r\n\r\n"), 400
    ),
    same(
        "bare LF in chunk extension",
        post(b"Transfer-Encoding: chunked\r\n", b"2;a\nb\r\nab\r\n0\r\n\r\n"),
        400,
    ),
    # Size limits (ALB R6: request line 16K, one header 16K, all headers 64K).
    same("request line over 16K", get(H, b"/" + b"a" * (17 * 1024)), 414),
    same("one header over 16K", get(H + b"X-Big: " + b"a" * (17 * 1024) + b"\r\n"), 431),
    same(
        "31 X-Forwarded-For addresses",
        get(H + b"X-Forwarded-For: " + b", ".join([b"10.0.0.1"] * 31) + b"\r\n"),
        463,
    ),
    # Header names desync-guardian flags as SuspiciousHeader when llhttp refuses them (not tokens).
    same(
        "Transfer-Encoding trailing space",
        post(b"Transfer-Encoding : chunked\r\nContent-Length: 1\r\n", b"a"),
        400,
    ),
    same("Transfer-Encoding leading space", post(b" Transfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400),
    same("Transfer- Encoding inner space", post(b"Transfer- Encoding: chunked\r\n", b"0\r\n\r\n"), 400),
    same(
        "Transfer-Encoding with non-ASCII byte",
        post(b"Transfer-Encoding\x88: chunked\r\n", b"0\r\n\r\n"),
        400,
    ),
    same("NBSP Content-Length", post(b"\xa0Content-Length: 1\r\n", b"a"), 400),
]

# desync-guardian's classes where the two modes differ (ALB's desync mitigation table, R9/R15):
# acceptable and ambiguous requests are forwarded in defensive mode, refused (400) in strictest.
CLASSIFIED: list[Vector] = [
    # acceptable.yaml: GetHeadZeroContentLength.
    Vector("GET Content-Length 0", get(H + b"Content-Length: 0\r\n"), FORWARD, 400),
    Vector("HEAD Content-Length 0", b"HEAD / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n", FORWARD, 400),
    # obs-text in values (RFC 9110 5.5): NonCompliantHeader, acceptable.
    Vector("obs-text in a value", get(H + b"X-Name: caf\xe9\r\n"), FORWARD, 400),
    Vector("UTF-8 in a value", get(H + "X-Name: żółw\r\n".encode()), FORWARD, 400),
    Vector("obs-text in User-Agent", get(H + b"User-Agent: \xff\xfe\r\n"), FORWARD, 400),
    # ambiguous.yaml: underscore lookalikes of framing names (SuspiciousHeader).
    Vector("Content_Length on GET", get(H + b"Content_Length: 5\r\n"), FORWARD, 400),
    Vector(
        "Transfer_Encoding on POST",
        post(b"Transfer_Encoding: chunked\r\nContent-Length: 0\r\n"),
        FORWARD,
        400,
    ),
    Vector("content_length lower-case", get(H + b"content_length: 0\r\n"), FORWARD, 400),
    Vector(
        "Content_Length with Content-Length",
        post(b"Content_Length: 9\r\nContent-Length: 1\r\n", b"a"),
        FORWARD,
        400,
    ),
    # ambiguous.yaml: Both TE and CL, GET with a body, duplicate Content-Length, TE on HTTP/1.0.
    Vector(
        "Transfer-Encoding with Content-Length",
        post(b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"),
        FORWARD,
        400,
    ),
    Vector(
        "duplicate identical Content-Length",
        post(b"Content-Length: 3\r\nContent-Length: 3\r\n", b"abc"),
        FORWARD,
        400,
    ),
    Vector("GET with a body", get(H + b"Content-Length: 2\r\n") + b"ab", FORWARD, 400),
    Vector(
        "HEAD with a chunked body",
        b"HEAD / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        FORWARD,
        400,
    ),
    Vector(
        "Transfer-Encoding on HTTP/1.0",
        b"POST /echo HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
        FORWARD,
        400,
    ),
    Vector("obs-fold", post(b"X-Folded: a\r\n b\r\nContent-Length: 3\r\n", b"abc"), FORWARD, 400),
]

# Smuggling attempts from the HTTP Garden and PortSwigger-style CL.TE / TE.CL pairs: at most one request
# may reach the target, whatever the mode. (Bytes after Connection: close are ignored, RFC 9112 9.6.)
SMUGGLE = b"GET /smuggled HTTP/1.1\r\n" + H + b"\r\n"
SMUGGLING: list[Vector] = [
    same("bytes after Connection: close", get(H + b"Connection: close\r\n") + SMUGGLE, FORWARD),
    same("bytes after HTTP/1.0", get(H, version=b"HTTP/1.0") + SMUGGLE, FORWARD),
    same(
        "Connection nominates Content-Length",
        post(b"Connection: content-length\r\nContent-Length: %d\r\n" % len(SMUGGLE), SMUGGLE),
        FORWARD,
    ),
    same(
        "Connection nominates Transfer-Encoding",
        post(
            b"Connection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n",
            b"%x\r\n%b\r\n0\r\n\r\n" % (len(SMUGGLE), SMUGGLE),
        ),
        FORWARD,
    ),
    same(
        "CL.TE with conflicting lengths",
        post(b"Content-Length: 4\r\nContent-Length: 40\r\n", b"0\r\n\r\n" + SMUGGLE),
        400,
    ),
    Vector(
        "TE.CL: chunked body hiding a request",
        post(
            b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
            b"%x\r\n%b\r\n0\r\n\r\n" % (len(SMUGGLE), SMUGGLE),
        ),
        FORWARD,
        400,
    ),
]

CORPUS = VALID + REFUSED + CLASSIFIED + SMUGGLING


def test_corpus_size_and_names() -> None:
    assert len(CORPUS) >= 150
    assert len({v.name for v in CORPUS}) == len(CORPUS)
    assert len(VALID) >= 40


async def _run(client: Client, vector: Vector, mode: str, backend: HttpBackend) -> str | None:
    """One vector on its own connection; the failure message, or None."""
    before = len(backend.requests)
    client.send(vector.raw)
    try:
        if vector.raw.startswith(b"HEAD "):
            response = await asyncio.wait_for(client.head_response(), 10)
            response.keep_alive = response.header("connection") != "close"  # head_response does not say
        else:
            response = await client.response(timeout=10)
    except (ConnectionError, TimeoutError) as exc:
        return f"no response ({exc!r})"
    expected = vector.expected(mode)
    if expected == FORWARD:
        if response.status != 200:
            return f"expected forwarding, got {response.status}"
        seen = backend.requests[before:]
        if len(seen) != 1:
            return f"{len(seen)} requests reached the target"
        framing = [k for k, _ in seen[0].headers if k in ("content-length", "transfer-encoding")]
        if len(framing) > 1 or seen[0].target == "/smuggled":
            return f"unclean framing at the target: {seen[0]}"
        if not seen[0].header("host"):
            return "no Host at the target"
        return None
    if response.status != expected:
        return f"expected {expected}, got {response.status}"
    if response.keep_alive:
        return "refused without Connection: close"
    if len(backend.requests) != before:
        return "reached the target"
    return None


@pytest.mark.parametrize("mode", ["defensive", "strictest"])
async def test_every_vector_is_refused_or_forwarded_once(alb: Alb, mode: str) -> None:
    _, port, backend = await alb(desync_mitigation_mode=mode)
    failures = []
    forwarded = 0
    for vector in CORPUS:
        client = await Client.connect(port)
        try:
            failure = await _run(client, vector, mode, backend)
        finally:
            client.close()
        if failure is not None:
            failures.append(f"{vector.name}: {failure}")
        forwarded += vector.expected(mode) == FORWARD
    assert failures == [], "\n".join(failures)
    # Nothing arrived late either: a request smuggled by an early vector would have reached the target
    # by the time the rest of the corpus has run.
    assert len(backend.requests) == forwarded
    assert all(r.target != "/smuggled" for r in backend.requests)


async def test_absolute_form_is_forwarded_in_origin_form_with_the_target_host(alb: Alb) -> None:
    """RFC 9112 3.2.2: the authority of an absolute-form target replaces Host, and the target gets
    origin-form."""
    _, port, backend = await alb()
    client = await Client.connect(port)
    client.send(b"GET http://Other.Example:8080/p?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert (await client.response()).status == 200
    seen = backend.requests[0]
    assert seen.target == "/p?q=1"
    assert seen.header("host") == "other.example:8080"


async def test_http10_without_host_gets_the_listener_address(alb: Alb) -> None:
    _, port, backend = await alb()
    client = await Client.connect(port)
    client.send(b"GET /x HTTP/1.0\r\n\r\n")
    assert (await client.response()).status == 200
    assert backend.requests[0].header("host") == f"127.0.0.1:{port}"


async def test_bytes_after_connection_close_are_ignored(alb: Alb) -> None:
    _, port, backend = await alb()
    client = await Client.connect(port)
    client.send(get(H + b"Connection: close\r\n", b"/first") + b"GARBAGE \x00\r\n\r\n" + SMUGGLE)
    answer = await client.read_all()
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1 ") == 1
    assert [r.target for r in backend.requests] == ["/first"]
