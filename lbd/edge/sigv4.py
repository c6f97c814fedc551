"""Signing origin requests with AWS Signature Version 4 (CloudFront's origin access control).

CloudFront's OAC signs each request to the origin ("Restricting access to an Amazon S3 origin", signing
behavior "always"), so the origin can refuse anything that did not come through the distribution. The
canonical request, the signing key and the string to sign follow the SigV4 documentation ("Create a
signed AWS API request"); the canonical path and query and the key derivation are the ones lbd's SigV4
authorizer checks with (lbd/gateway/auth/sigv4.py), so what lbd signs, lbd (and botocore) verify.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from lbd.gateway.auth.sigv4 import canonical_queries, canonical_uri, signing_key

ALGORITHM = "AWS4-HMAC-SHA256"


def sign(
    method: str,
    path: str,
    query: str,
    host: str,
    body: bytes,
    *,
    access_key_id: str,
    secret: str,
    region: str,
    service: str,
    now: float | None = None,
) -> list[tuple[str, str]]:
    """The fields to add to the request: X-Amz-Date, X-Amz-Content-Sha256 and Authorization."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    date = stamp[:8]
    payload = hashlib.sha256(body).hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": stamp}
    names = sorted(headers)
    canonical = "\n".join(
        (
            method.upper(),
            canonical_uri(path),
            next(canonical_queries(query, False)) if query else "",
            "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in names),
            ";".join(names),
            payload,
        )
    )
    scope = f"{date}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join((ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()))
    key = signing_key(secret, date, region, service)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    authorization = (
        f"{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={';'.join(names)}, "
        f"Signature={signature}"
    )
    return [("X-Amz-Date", stamp), ("X-Amz-Content-Sha256", payload), ("Authorization", authorization)]
