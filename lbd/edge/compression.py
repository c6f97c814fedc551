"""Compressing objects at the edge: CloudFront's rules ("Serving compressed files").

CloudFront compresses when the behavior has Compress on, the viewer accepts gzip or br (the cache key's
normalised Accept-Encoding), the origin's response has no Content-Encoding, a body of 1,000 to
10,000,000 bytes, status 200, 403 or 404, and a Content-Type from its list. Brotli is preferred when the
viewer accepts both. A strong ETag becomes weak on the compressed copy (the bytes differ); an invalid one
is removed. gzip is the standard library's; Brotli is Google's ``brotli`` binding, imported when a
distribution that compresses with it is loaded (one that never does never loads it).
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from typing import Any

MIN_SIZE = 1_000
MAX_SIZE = 10_000_000
STATUSES = frozenset({200, 403, 404})
COMPRESSIBLE = frozenset(
    {
        *(
            f"text/{t}"
            for t in [
                "css",
                "csv",
                "html",
                "javascript",
                "js",
                "plain",
                "richtext",
                "tab-separated-values",
                "xml",
                "x-component",
                "x-java-source",
                "x-script",
            ]
        ),
        *(
            f"application/{t}"
            for t in [
                "dash+xml",
                "eot",
                "font",
                "font-sfnt",
                "javascript",
                "json",
                "opentype",
                "otf",
                "pkcs7-mime",
                "protobuf",
                "rss+xml",
                "truetype",
                "ttf",
                "vnd.apple.mpegurl",
                "vnd.mapbox-vector-tile",
                "vnd.ms-fontobject",
                "xhtml+xml",
                "xml",
                "x-font-opentype",
                "x-font-truetype",
                "x-font-ttf",
                "x-httpd-cgi",
                "x-javascript",
                "x-mpegurl",
                "x-opentype",
                "x-otf",
                "x-perl",
                "x-ttf",
            ]
        ),
        "font/eot",
        "font/opentype",
        "font/otf",
        "font/ttf",
        "image/svg+xml",
        "vnd.apple.mpegurl",
    }
)

_brotli: Any = None


def brotli_module() -> Any:
    global _brotli
    if _brotli is None:
        import brotli

        _brotli = brotli
    return _brotli


def compressible(status: int, headers: Mapping[str, str], size: int) -> bool:
    if status not in STATUSES or not MIN_SIZE <= size <= MAX_SIZE:
        return False
    if headers.get("content-encoding", "").strip():
        return False  # any value: the origin encoded it already
    if "no-transform" in headers.get("cache-control", "").lower():
        return False  # RFC 9111 5.2.2.6: intermediaries must not transform the content
    media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
    return media_type in COMPRESSIBLE


def choose(normalised_accept_encoding: str) -> str | None:
    """br when the viewer takes it, else gzip, else None."""
    codings = normalised_accept_encoding.split(",")
    if "br" in codings:
        return "br"
    if "gzip" in codings:
        return "gzip"
    return None


def compress(body: bytes, coding: str) -> bytes:
    if coding == "br":
        return bytes(brotli_module().compress(body, quality=5))
    # mtime=0: equal bodies compress to equal bytes (nothing about when it was compressed leaks).
    return gzip.compress(body, compresslevel=6, mtime=0)


def weak_etag(etag: str | None) -> str | None:
    """The ETag of a compressed copy: strong ones become weak, weak ones stay, invalid ones go."""
    if etag is None:
        return None
    etag = etag.strip()
    if etag.startswith("W/"):
        return etag
    if etag.startswith('"'):
        return "W/" + etag
    return None
