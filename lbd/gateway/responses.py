"""Gateway responses: what the gateway itself answers, by API Gateway's response types.

Types, default status codes and messages are API Gateway's ("Gateway response types for API Gateway");
an API's ``gateway_responses`` overrides status, headers and body per type, and a type without its own
entry takes the API's DEFAULT_4XX or DEFAULT_5XX entry when one is set. Pure: built once per Snapshot.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lbd.config.gateway import GatewayResponse


# type -> (status, message of the JSON body {"message": ...})
DEFAULTS: dict[str, tuple[int, str]] = {
    "ACCESS_DENIED": (403, "Forbidden"),
    "API_CONFIGURATION_ERROR": (500, "Internal server error"),
    "AUTHORIZER_CONFIGURATION_ERROR": (500, "Internal server error"),
    "AUTHORIZER_FAILURE": (500, "Internal server error"),
    "BAD_REQUEST_PARAMETERS": (400, "Bad request parameters"),
    "BAD_REQUEST_BODY": (400, "Invalid request body"),
    "EXPIRED_TOKEN": (403, "The security token included in the request is expired"),
    # API Gateway's table says 504; a target that refuses or breaks the connection gets 502 and a target
    # group with no target 503 (INTEGRATION_FAILURE with the status of what happened, see integration.py).
    "INTEGRATION_FAILURE": (502, "Internal server error"),
    "INTEGRATION_TIMEOUT": (504, "Endpoint request timed out"),
    "INVALID_API_KEY": (403, "Forbidden"),
    "INVALID_SIGNATURE": (
        403,
        "The request signature we calculated does not match the signature you provided",
    ),
    "MISSING_AUTHENTICATION_TOKEN": (403, "Missing Authentication Token"),
    "QUOTA_EXCEEDED": (429, "Limit Exceeded"),
    "REQUEST_TOO_LARGE": (413, "Request Too Long"),
    "RESOURCE_NOT_FOUND": (404, "Not Found"),
    "THROTTLED": (429, "Too Many Requests"),
    "UNAUTHORIZED": (401, "Unauthorized"),
    "UNSUPPORTED_MEDIA_TYPE": (415, "Unsupported Media Type"),
    "WAF_FILTERED": (403, "Forbidden"),
    "UNAVAILABLE": (503, "Service Unavailable"),  # lbd: shared state unreachable with on_failure: closed
    "BAD_REQUEST": (400, "Bad Request"),  # lbd: a request HTTP/1.1 cannot parse
}
JSON = "application/json"


# Not frozen, though never changed once made (an answer may be written to many clients, a cache entry's
# to every hit): one is made per request, and a frozen dataclass's __init__ costs several times a plain
# one's. Hashable all the same.
@dataclass(slots=True, unsafe_hash=True)
class Answer:
    status: int
    headers: Sequence[tuple[str, str]]  # a tuple, or a target's head's fields (lbd/gateway/fetch.py)
    body: bytes
    response_type: str = ""  # the gateway response type; "" for an integration's own answer
    # For an answer served many times (a stage-cache entry, a gateway response): its status line, fields
    # and content-length as the connection writes them (``with_head``); empty: written field by field.
    head: bytes = field(default=b"", compare=False, repr=False)


_REASONS = {status.value: status.phrase for status in HTTPStatus}
_STATUS_LINES = {code: f"HTTP/1.1 {code} {phrase}\r\n" for code, phrase in _REASONS.items()}


def render_head(status: int, headers: Sequence[tuple[str, str]], length: int) -> bytes:
    """An HTTP/1.1 response head (RFC 9112 4, 5) up to the fields the connection adds per response
    (the request id, ``connection: close``) and the blank line."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers])
    return f"{line}{fields}content-length: {length}\r\n".encode("latin-1", "replace")


def with_head(answer: Answer) -> Answer:
    """``answer`` with its head rendered once, for answers that are written again and again."""
    head = render_head(answer.status, answer.headers, len(answer.body))
    return Answer(answer.status, answer.headers, answer.body, answer.response_type, head)


class GatewayResponses:
    KNOWN = frozenset(DEFAULTS)

    def __init__(self, overrides: Mapping[str, GatewayResponse]) -> None:
        self._answers: dict[str, Answer] = {}
        for kind, (status, message) in DEFAULTS.items():
            override = overrides.get(kind)
            if override is None:
                fallback = "DEFAULT_4XX" if status < 500 else "DEFAULT_5XX"
                override = overrides.get(fallback)
            body = json.dumps({"message": message}, separators=(",", ":")).encode()
            headers: tuple[tuple[str, str], ...] = (("content-type", JSON),)
            if override is not None:
                status = override.status_code or status
                if override.body is not None:
                    body = override.body.encode()
                headers += tuple((k.lower(), v) for k, v in override.headers.items())
            self._answers[kind] = with_head(Answer(status, headers, body, kind))

    def answer(self, kind: str, status: int | None = None, message: str | None = None) -> Answer:
        """The response of type ``kind``; ``status`` and ``message`` replace the defaults (not an
        override from the config) where the caller knows better, as an authorizer's message."""
        answer = self._answers[kind]
        if status is not None and answer.status == DEFAULTS[kind][0]:
            answer = Answer(status, answer.headers, answer.body, kind)
        if (
            message is not None
            and answer.body == json.dumps({"message": DEFAULTS[kind][1]}, separators=(",", ":")).encode()
        ):
            answer = Answer(
                answer.status,
                answer.headers,
                json.dumps({"message": message}, separators=(",", ":")).encode(),
                kind,
            )
        return answer
