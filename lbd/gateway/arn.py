"""execute-api ARNs and the IAM wildcards that match them (pure).

A request's method ARN is ``arn:aws:execute-api:REGION:ACCOUNT:API/STAGE/METHOD/PATH`` ("Use API Gateway
Lambda authorizers", the methodArn of the authorizer input; "Control access to an API with IAM
permissions", the Resource of execute-api:Invoke). Policies and access-key allow lists name resources with
IAM's wildcards: ``*`` any run of characters (slashes included), ``?`` exactly one ("IAM JSON policy
elements: Resource").
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from urllib.parse import unquote

# lbd has no AWS accounts. Its ARNs name this one, so that patterns written for AWS with "*" for the account
# (the usual form) match, and ones that name an account do not match by accident.
ACCOUNT_ID = "000000000000"
DEFAULT_REGION = "us-east-1"
INVOKE = "execute-api:Invoke"


def method_arn(region: str, api: str, stage: str, method: str, path: str) -> str:
    """The ARN of one call: the path percent-decoded, without its leading slash (API Gateway's form)."""
    resource = unquote(path).lstrip("/")
    return f"arn:aws:execute-api:{region}:{ACCOUNT_ID}:{api}/{stage}/{method.upper()}/{resource}"


@functools.lru_cache(maxsize=4096)
def _compile(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def wildcard_match(pattern: str, value: str, ignore_case: bool = False) -> bool:
    return _compile(pattern, ignore_case).fullmatch(value) is not None


def any_resource_matches(patterns: Iterable[str], arn: str) -> bool:
    """ARNs are case-sensitive; IAM matches action names without regard to case."""
    return any(wildcard_match(p, arn) for p in patterns)


def action_matches(patterns: Iterable[str], action: str = INVOKE) -> bool:
    return any(wildcard_match(p, action, ignore_case=True) for p in patterns)
