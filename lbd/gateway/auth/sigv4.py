"""IAM-style authorization: AWS Signature Version 4 verified against lbd's access keys.

What a client computes ("Create a signed AWS API request", the Signature Version 4 signing process in the
IAM User Guide), and what lbd recomputes here:

  canonical request = METHOD \\n canonical URI \\n canonical query \\n canonical headers \\n
                      signed headers \\n payload hash
  string to sign    = "AWS4-HMAC-SHA256" \\n X-Amz-Date \\n date/region/service/aws4_request \\n
                      hex(SHA-256(canonical request))
  signature         = hex(HMAC(kSigning, string to sign)), kSigning derived from "AWS4" + secret through
                      the date, region, service and "aws4_request"

The canonical URI is the path as sent, dot segments and repeated slashes removed, then URI-encoded again
(every service but S3 encodes twice: a client's ``%20`` is ``%2520`` in the canonical request). botocore's
signer is the reference for the details (tests sign with it). Two forms are accepted: the Authorization
header, and a presigned URL (X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date, X-Amz-Expires,
X-Amz-SignedHeaders, X-Amz-Signature in the query).

Time: the header form is valid within ``clock_skew_seconds`` (5 minutes) either side of lbd's clock; a
presigned URL from X-Amz-Date (less the skew) until X-Amz-Date + X-Amz-Expires. Replay: as with AWS, a
signed request can be sent again while it is within that window; SigV4 has no nonce, and lbd keeps no
cache of seen signatures (a per-worker cache would not stop a replay sent to another worker or node).
Use TLS, which keeps signed requests from being captured in the first place.

Answers, as API Gateway gives them ("Gateway response types"): no signature at all is
MISSING_AUTHENTICATION_TOKEN 403; a malformed, wrongly scoped, stale or wrong signature and an unknown or
disabled key are INVALID_SIGNATURE 403 with AWS's messages; a key whose allow list does not cover the
method ARN is ACCESS_DENIED 403.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from lbd.gateway.access_keys import PROCESS_KEYS, AccessKeys
from lbd.gateway.arn import method_arn
from lbd.gateway.contracts import ALLOW, AuthResult, Clock, GatewayRequest

if TYPE_CHECKING:
    from lbd.config.gateway_auth import IamAuthorizer

ALGORITHM = "AWS4-HMAC-SHA256"
AMZ_DATE = "%Y%m%dT%H%M%SZ"
AMZ_DATE_RE = re.compile(r"^\d{8}T\d{6}Z$")
MAX_EXPIRES = 604_800  # a presigned URL lasts at most 7 days
HEX64 = re.compile(r"^[0-9a-f]{64}$")

MISSING_TOKEN = AuthResult("MISSING_AUTHENTICATION_TOKEN", message="Missing Authentication Token")
MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
    "Access Key and signing method. Consult the service documentation for details."
)
UNKNOWN_KEY = "The security token included in the request is invalid."


class SignatureRejected(Exception):
    """INVALID_SIGNATURE with this message."""


@dataclass(frozen=True, slots=True)
class Signed:
    """The signature parameters of a request, from its Authorization header or its query."""

    access_key_id: str
    date: str  # YYYYMMDD of the credential scope
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    timestamp: datetime
    expires: int | None  # presigned URLs only
    presigned: bool


# -- parsing ---------------------------------------------------------------------------------------------


def query_pairs(query: str) -> list[tuple[str, str]]:
    pairs = []
    for part in query.split("&"):
        if part:
            key, _, value = part.partition("=")
            pairs.append((key, value))
    return pairs


def is_signed(request: GatewayRequest) -> bool:
    authorization = request.header("authorization")
    if authorization is not None and authorization.strip():
        return True
    return any(unquote(k) == "X-Amz-Signature" for k, _ in query_pairs(request.query))


def _credential(value: str) -> tuple[str, str, str, str]:
    parts = value.split("/")
    if len(parts) != 5 or not all(parts):
        raise SignatureRejected(
            f"Credential should be of the form 'KEYID/YYYYMMDD/region/service/aws4_request', got '{value}'."
        )
    if parts[4] != "aws4_request":
        raise SignatureRejected(
            f"Credential should be scoped with a valid terminator: 'aws4_request', not '{parts[4]}'."
        )
    return parts[0], parts[1], parts[2], parts[3]


def _timestamp(request: GatewayRequest, amz_date: str | None) -> datetime:
    if amz_date is not None:
        try:
            if AMZ_DATE_RE.match(amz_date):
                return datetime.strptime(amz_date, AMZ_DATE).replace(tzinfo=UTC)
        except ValueError:  # 20261399T250000Z has the shape but is no date
            pass
        raise SignatureRejected(f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'.")
    date = request.header("date")  # the spec allows Date instead of X-Amz-Date
    if date is None:
        raise SignatureRejected(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        )
    try:
        return parsedate_to_datetime(date).astimezone(UTC)
    except (TypeError, ValueError):
        raise SignatureRejected(f"Date header is not an HTTP date: '{date}'.") from None


def parse_authorization(request: GatewayRequest) -> Signed:
    header = (request.header("authorization") or "").strip()
    algorithm, _, rest = header.partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureRejected(
            f"Authorization header requires the '{ALGORITHM}' algorithm, with 'Credential', 'SignedHeaders' "
            "and 'Signature' parameters."
        )
    fields: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, value = item.strip().partition("=")
        if sep:
            fields[name] = value
    missing = [f for f in ("Credential", "SignedHeaders", "Signature") if not fields.get(f)]
    if missing:
        raise SignatureRejected(
            " ".join(f"Authorization header requires '{name}' parameter." for name in missing)
            + f" Authorization={header[:200]}"
        )
    key_id, date, region, service = _credential(fields["Credential"])
    return Signed(
        key_id,
        date,
        region,
        service,
        tuple(fields["SignedHeaders"].split(";")),
        fields["Signature"],
        _timestamp(request, request.header("x-amz-date")),
        None,
        False,
    )


def parse_presigned(request: GatewayRequest) -> Signed:
    params = {unquote(k): unquote(v) for k, v in query_pairs(request.query)}
    names = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature")
    missing = [n for n in names if not params.get(n)]
    if missing:
        raise SignatureRejected(
            " ".join(f"AWS query-string parameters must include '{n}'." for n in missing)
            + " Re-examine the query-string parameters."
        )
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise SignatureRejected(f"X-Amz-Algorithm only supports '{ALGORITHM}'.")
    expires_text = params.get("X-Amz-Expires", "")
    if not expires_text.isdigit() or not 1 <= int(expires_text) <= MAX_EXPIRES:
        raise SignatureRejected(f"X-Amz-Expires must be a number of seconds from 1 to {MAX_EXPIRES}.")
    key_id, date, region, service = _credential(params["X-Amz-Credential"])
    return Signed(
        key_id,
        date,
        region,
        service,
        tuple(params["X-Amz-SignedHeaders"].split(";")),
        params["X-Amz-Signature"],
        _timestamp(request, params["X-Amz-Date"]),
        int(expires_text),
        True,
    )


# -- the canonical request ---------------------------------------------------------------------------------


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, and repeated slashes collapsed as AWS services require (botocore's rule)."""
    if not path:
        return "/"
    out: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if out:
                out.pop()
        elif segment and segment != ".":
            out.append(segment)
    first = "/" if path.startswith("/") else ""
    last = "/" if path.endswith("/") and out else ""
    return first + "/".join(out) + last


def canonical_uri(path: str) -> str:
    return quote(remove_dot_segments(path), safe="/~")


def canonical_queries(query: str, presigned: bool) -> Iterator[str]:
    """The canonical query string: AWS's form first (each name and value decoded, then encoded with only
    ``A-Za-z0-9-_.~`` left as is, sorted), then, if different, the pairs as sent, sorted (how botocore
    signs a URL that already carries its query)."""
    pairs = query_pairs(query)
    if presigned:
        pairs = [(k, v) for k, v in pairs if unquote(k) != "X-Amz-Signature"]
    encoded = sorted((quote(unquote(k), safe="-_.~"), quote(unquote(v), safe="-_.~")) for k, v in pairs)
    aws = "&".join(f"{k}={v}" for k, v in encoded)
    yield aws
    raw = "&".join(f"{k}={v}" for k, v in sorted(pairs))
    if raw != aws:
        yield raw


def canonical_headers(request: GatewayRequest, names: Sequence[str]) -> str:
    lines = []
    for name in names:
        value = request.header(name)
        if value is None:
            raise SignatureRejected(f"The signed header '{name}' is not in the request.")
        lines.append(f"{name}:{' '.join(value.split())}\n")
    return "".join(lines)


def payload_hash(request: GatewayRequest) -> str:
    computed = hashlib.sha256(request.body).hexdigest()
    declared = request.header("x-amz-content-sha256")
    if declared is not None and declared != computed:
        # A declared hash that differs would sign a body other than the one that came: refuse it, as S3 does.
        raise SignatureRejected(
            "The provided 'x-amz-content-sha256' header does not match what was computed."
        )
    return computed


def canonical_request(request: GatewayRequest, signed: Signed, query: str) -> str:
    return "\n".join(
        (
            request.method.upper(),
            canonical_uri(request.path),
            query,
            canonical_headers(request, signed.signed_headers),
            ";".join(signed.signed_headers),
            payload_hash(request),
        )
    )


@functools.lru_cache(maxsize=1024)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signature(secret: str, signed: Signed, canonical: str) -> str:
    scope = f"{signed.date}/{signed.region}/{signed.service}/aws4_request"
    string_to_sign = "\n".join(
        (
            ALGORITHM,
            signed.timestamp.strftime(AMZ_DATE),
            scope,
            hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest(),
        )
    )
    key = signing_key(secret, signed.date, signed.region, signed.service)
    return hmac.new(key, string_to_sign.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


# -- the checks, in order ----------------------------------------------------------------------------------


def _check_scope(signed: Signed, config: IamAuthorizer) -> None:
    if signed.date != signed.timestamp.strftime("%Y%m%d"):
        raise SignatureRejected(
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{signed.date}' != '{signed.timestamp.strftime('%Y%m%d')}'"
        )
    if signed.region != config.region:
        raise SignatureRejected(f"Credential should be scoped to a valid region, not '{signed.region}'.")
    if signed.service != config.service:
        raise SignatureRejected(f"Credential should be scoped to correct service: '{config.service}'.")
    if "host" not in signed.signed_headers:
        raise SignatureRejected("'Host' must be a 'SignedHeader' in the AWS Authorization.")
    if list(signed.signed_headers) != sorted(set(signed.signed_headers)):
        raise SignatureRejected("SignedHeaders must be lower case, sorted and without repeats.")


def _check_time(signed: Signed, config: IamAuthorizer, now: float) -> None:
    at = signed.timestamp.timestamp()
    skew = config.clock_skew_seconds
    stamp = signed.timestamp.strftime(AMZ_DATE)
    if signed.presigned and signed.expires is not None:
        if now > at + signed.expires:
            raise SignatureRejected(f"Signature expired: {stamp} + {signed.expires} s is before {_amz(now)}.")
        if now < at - skew:
            raise SignatureRejected(
                f"Signature not yet current: {stamp} is still later than {_amz(now + skew)}."
            )
        return
    if now - at > skew:
        raise SignatureRejected(
            f"Signature expired: {stamp} is now earlier than {_amz(now - skew)} "
            f"({_amz(now)} - {skew // 60} min.)"
        )
    if at - now > skew:
        raise SignatureRejected(
            f"Signature not yet current: {stamp} is still later than {_amz(now + skew)} "
            f"({_amz(now)} + {skew // 60} min.)"
        )


def _amz(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime(AMZ_DATE)


def verify(request: GatewayRequest, config: IamAuthorizer, keys: AccessKeys, now: float) -> AuthResult:
    """The whole decision for one request (pure: the clock's reading is passed in)."""
    if not is_signed(request):
        return MISSING_TOKEN
    try:
        presigned = not (request.header("authorization") or "").strip()
        signed = parse_presigned(request) if presigned else parse_authorization(request)
        _check_scope(signed, config)
        _check_time(signed, config, now)
        key = keys.get(signed.access_key_id)
        if key is None or not key.enabled:
            return AuthResult("INVALID_SIGNATURE", message=UNKNOWN_KEY)
        provided = signed.signature.encode("utf-8", "surrogateescape")
        matched = False
        for query in canonical_queries(request.query, signed.presigned):
            expected = signature(key.secret_access_key, signed, canonical_request(request, signed, query))
            matched = hmac.compare_digest(expected.encode(), provided) or matched
        if not matched:
            return AuthResult("INVALID_SIGNATURE", message=MISMATCH)
    except SignatureRejected as exc:
        return AuthResult("INVALID_SIGNATURE", message=str(exc))
    except UnicodeError:  # a path, query or header that is not text: no client could have signed it
        return AuthResult("INVALID_SIGNATURE", message=MISMATCH)
    arn = method_arn(config.region, request.api, request.stage, request.method, request.path)
    if not key.may_invoke(arn):
        return AuthResult(
            "ACCESS_DENIED",
            principal_id=key.access_key_id,
            message=f"User: {key.access_key_id} is not authorized to perform: execute-api:Invoke on "
            f"resource: {arn}",
        )
    return AuthResult(ALLOW, principal_id=key.access_key_id, context={"accessKey": key.access_key_id})


class SigV4Authorizer:
    """The Authorizer for ``type: IAM``: verification is pure and cheap, so nothing is cached."""

    def __init__(self, config: IamAuthorizer, clock: Clock, keys: AccessKeys = PROCESS_KEYS) -> None:
        self.name = config.name
        self.config = config
        self._clock = clock
        self._keys = keys

    def authorize_now(self, request: GatewayRequest, scopes: Sequence[str]) -> AuthResult:
        """``authorize`` in line: verifying a signature needs no I/O (the pipeline's fast path)."""
        return verify(request, self.config, self._keys, self._clock())

    async def authorize(self, request: GatewayRequest, scopes: Sequence[str]) -> AuthResult:
        return self.authorize_now(request, scopes)

    async def close(self) -> None:
        return None
