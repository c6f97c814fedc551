"""WAF's text transformations (AWS WAF Developer Guide, "Text transformation options"), on bytes.

A match statement lists transformations applied in order before it matches, so that simple evasions
(``%41dmin``, ``ADMIN``, ``&lt;script&gt;``, runs of tabs) meet the same pattern as the plain form. The
request (lbd/waf/request.py) computes each field + chain once and shares it among statements.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import re
from collections.abc import Callable

Transform = Callable[[bytes], bytes]

_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")
_PERCENT_U = re.compile(rb"%[uU]([0-9A-Fa-f]{4})")
_ESCAPED = re.compile(rb"[%+]").search
# COMPRESS_WHITE_SPACE: \f \t \n \r \v and non-breaking space (160) become a space, then runs of spaces one.
_WHITE = re.compile(rb"[\f\t\n\r\v\xa0 ]+")


def url_decode(data: bytes) -> bytes:
    # Like WAF (and ModSecurity's urlDecode it follows): %XX decoded, "+" is a space, a bad escape kept.
    if _ESCAPED(data) is None:  # one search for "%" or "+" (bytes "in" raises and clears a TypeError)
        return data
    return _PERCENT.sub(lambda m: bytes((int(m.group(1), 16),)), data.replace(b"+", b" "))


def url_decode_uni(data: bytes) -> bytes:
    """URL_DECODE plus Microsoft's %uXXXX (the code point's low byte when it is not ASCII, as IIS does)."""

    def code_point(m: re.Match[bytes]) -> bytes:
        value = int(m.group(1), 16)
        return bytes((value if value < 0x80 else value & 0xFF,))

    return url_decode(_PERCENT_U.sub(code_point, data))


def html_entity_decode(data: bytes) -> bytes:
    if data.find(b"&") < 0:
        return data
    return html.unescape(data.decode("latin-1")).encode("utf-8", "surrogatepass")


def compress_white_space(data: bytes) -> bytes:
    return _WHITE.sub(b" ", data)


def base64_decode(data: bytes) -> bytes:
    try:
        return base64.b64decode(data + b"=" * (-len(data) % 4), validate=False)
    except binascii.Error:
        return data


def hex_decode(data: bytes) -> bytes:
    try:
        return binascii.unhexlify(data)
    except binascii.Error:
        return data


def normalize_path(data: bytes) -> bytes:
    """Repeated slashes, ``./`` and ``../`` removed (RFC 3986 5.2.4 remove_dot_segments, plus //)."""
    out: list[bytes] = []
    for segment in data.split(b"/"):
        if segment == b"..":
            if len(out) > 1:
                out.pop()
        elif segment != b"." and (segment or not out):
            out.append(segment)
    path = b"/".join(out)
    if data.endswith((b"/", b"/.", b"/..")) and not path.endswith(b"/"):
        path += b"/"
    return path or data[:1]


TRANSFORMS: dict[str, Transform] = {
    "NONE": lambda data: data,
    "LOWERCASE": bytes.lower,
    "UPPERCASE": bytes.upper,
    "URL_DECODE": url_decode,
    "URL_DECODE_UNI": url_decode_uni,
    "HTML_ENTITY_DECODE": html_entity_decode,
    "COMPRESS_WHITE_SPACE": compress_white_space,
    "BASE64_DECODE": base64_decode,
    "HEX_DECODE": hex_decode,
    "REMOVE_NULLS": lambda data: data.replace(b"\0", b""),
    "NORMALIZE_PATH": normalize_path,
    "MD5": lambda data: hashlib.md5(data, usedforsecurity=False).digest(),
    "TRIM": lambda data: data.strip(b" \t\n\r\f\v"),
}


def chain(names: tuple[str, ...]) -> tuple[str, ...]:
    """The chain that does something: NONE dropped (WAF lists NONE for "no transformation")."""
    return tuple(name for name in names if name != "NONE")


def apply(data: bytes, names: tuple[str, ...]) -> bytes:
    for name in names:
        data = TRANSFORMS[name](data)
    return data
