"""Request smuggling defence: ALB's desync mitigation classes and what each mode does with them.

| class      | monitor | defensive                  | strictest |
|------------|---------|----------------------------|-----------|
| compliant  | allow   | allow                      | allow     |
| acceptable | allow   | allow                      | block     |
| ambiguous  | allow   | allow, close both after    | block     |
| severe     | block   | block                      | block     |

(elb-semantics.md section 1, "Desync mitigation"; AWS http-desync-guardian.) lbd is stricter than ALB in
one place: in monitor mode ALB forwards severe requests, but a request whose length cannot be determined
cannot be forwarded safely by a proxy that re-frames bodies, so lbd blocks them in every mode.

Ambiguous requests that a strict parser refuses (duplicate identical Content-Length, obs-fold) are
rewritten to a normal form by ``normalise_head`` and parsed again, so that defensive mode can forward them
with their framing normalised, as ALB does.
"""

from __future__ import annotations

import enum
import re

from lbd.http.errors import HttpError


class Verdict(enum.Enum):
    ALLOW = "allow"
    CLOSE = "close"  # forward, then close the client and target connections
    BLOCK = "block"


ACCEPTABLE = "acceptable"
AMBIGUOUS = "ambiguous"
SEVERE = "severe"

_ACTIONS = {
    "monitor": {ACCEPTABLE: Verdict.ALLOW, AMBIGUOUS: Verdict.ALLOW, SEVERE: Verdict.BLOCK},
    "defensive": {ACCEPTABLE: Verdict.ALLOW, AMBIGUOUS: Verdict.CLOSE, SEVERE: Verdict.BLOCK},
    "strictest": {ACCEPTABLE: Verdict.BLOCK, AMBIGUOUS: Verdict.BLOCK, SEVERE: Verdict.BLOCK},
}

# Parse errors of requests that are ambiguous rather than severe: worth normalising and parsing again.
REPLAYABLE = frozenset({"MultipleContentLength", "ObsFold"})

# RFC 9110 5.6.2 token: what a header name may be made of.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTENT_LENGTH = re.compile(rb"[0-9]+")
_MAX_HEAD = 80 * 1024  # larger heads are answered 431 anyway


def verdict(mode: str, severity: str) -> Verdict:
    return _ACTIONS[mode][severity]


def lenient_te_cl(mode: str) -> bool:
    """Let the parser accept Transfer-Encoding with Content-Length (ambiguous) so it can be classified;
    strictest mode leaves llhttp strict and the request is refused at parse time."""
    return mode != "strictest"


def normalise_head(raw: bytes) -> tuple[bytes, str]:
    """Rewrite an ambiguous request head to a normal form: obs-fold unfolded (RFC 9112 5.2: replace each
    fold with a space) and identical duplicate Content-Length fields merged into one (RFC 9110 8.6).

    Returns the new bytes (head plus whatever followed it) and the reason code. Raises HttpError when
    the request is severe rather than ambiguous (Content-Length values that differ).
    """
    end = raw.find(b"\r\n\r\n")
    if end < 0 or end > _MAX_HEAD:
        raise HttpError(400, "MalformedRequest", desync=True)
    request_line, *lines = raw[:end].split(b"\r\n")
    reasons = []
    fields: list[bytearray] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise HttpError(400, "MalformedRequest", desync=True)
            fields[-1] += b" " + line.strip(b" \t")
            if "ObsFold" not in reasons:
                reasons.append("ObsFold")
        else:
            fields.append(bytearray(line))
    lengths: list[bytes] = []
    out = [request_line]
    for field in fields:
        name, sep, value = bytes(field).partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise HttpError(400, "BadHeaderName", desync=True)
        if name.lower() == b"content-length":
            value = value.strip(b" \t")
            if not _CONTENT_LENGTH.fullmatch(value):
                raise HttpError(400, "BadContentLength", desync=True)
            if lengths:
                if int(value) != int(lengths[0]):
                    raise HttpError(400, "MultipleContentLength", desync=True)
                if "DuplicateContentLength" not in reasons:
                    reasons.append("DuplicateContentLength")
                continue
            lengths.append(value)
            out.append(b"Content-Length: " + value)
            continue
        out.append(bytes(field))
    if not reasons:
        raise HttpError(400, "MalformedRequest", desync=True)
    return b"\r\n".join(out) + raw[end:], "+".join(reasons)


def classify_framing(
    method: str, content_length: bytes | None, transfer_encoding: bytes | None, version: str = "1.1"
) -> tuple[str, str] | None:
    """Requests llhttp parsed but ALB still calls non-compliant, as (class, reason); None when compliant.

    llhttp has already refused conflicting or malformed Content-Length fields. Transfer-Encoding is an
    HTTP/1.1 feature: an HTTP/1.0 recipient may not know it (RFC 9112 6.1), so on a 1.0 request it is
    ambiguous (http-desync-guardian, "Transfer-Encoding for HTTP/1.0").
    """
    if transfer_encoding is not None:
        if content_length is not None:
            return AMBIGUOUS, "BothTeClPresent"
        if method in ("GET", "HEAD") or version != "1.1":
            return AMBIGUOUS, "UndefinedTransferEncodingSemantics"
    elif content_length is not None and method in ("GET", "HEAD"):
        if content_length.strip() in (b"0", b""):
            return ACCEPTABLE, "GetHeadZeroContentLength"
        return AMBIGUOUS, "UndefinedContentLengthSemantics"
    return None


# Names a target may read as a framing field: some servers and gateways map "_" to "-" (CGI-style
# environments, nginx with underscores_in_headers). http-desync-guardian calls them SuspiciousHeader,
# an ambiguous request (tests/ambiguous.yaml, "Content_Length with underscore").
_FRAMING_LOOKALIKES = frozenset({b"content_length", b"transfer_encoding"})


def classify_field(name: bytes, value: bytes) -> tuple[str, str] | None:
    """A field llhttp accepted that ALB's desync mitigation still calls non-compliant, as (class, reason).

    - An underscore lookalike of Content-Length or Transfer-Encoding: ambiguous (SuspiciousHeader).
    - obs-text (bytes 0x80-0xff) in a value: RFC 9110 5.5 keeps it only for old senders and tells
      recipients to treat it as opaque; http-desync-guardian's NonCompliantHeader, acceptable.
    """
    if b"_" in name and name.lower() in _FRAMING_LOOKALIKES:
        return AMBIGUOUS, "SuspiciousHeader"
    if not value.isascii():
        return ACCEPTABLE, "NonCompliantHeader"
    return None


_RANK = {ACCEPTABLE: 1, AMBIGUOUS: 2, SEVERE: 3}


def worst(*found: tuple[str, str] | None) -> tuple[str, str] | None:
    """The most severe of several findings (the one the request is classified by), or None."""
    present = [f for f in found if f is not None]
    return max(present, key=lambda f: _RANK[f[0]]) if present else None


def check_transfer_encoding(value: bytes) -> None:
    """Only "chunked" is forwarded (RFC 9112 6.1). Other codings get ALB's 501; garbage gets 400."""
    codings = [c.strip().lower() for c in value.split(b",")]
    if codings == [b"chunked"]:
        return
    if all(_TOKEN.fullmatch(c.partition(b";")[0].strip()) for c in codings):
        raise HttpError(501, "UnsupportedTransferEncoding", desync=True)
    raise HttpError(400, "BadTransferEncoding", desync=True)
