"""Authorizers: who may call a route. One module per kind, all behind contracts.Authorizer.

- ``JWT`` (jwt.py): tokens from an OpenID provider, verified against its JWKS;
- ``REQUEST`` (request.py): an HTTP endpoint on a target group decides, as a Lambda authorizer would;
- ``IAM`` (sigv4.py): AWS Signature Version 4 against the access keys of lbd/gateway/access_keys.py.

docs/gateway-auth.md describes them for users.
"""

from __future__ import annotations

from lbd.config.gateway_auth import IamAuthorizer, JwtAuthorizer, RequestAuthorizer
from lbd.gateway.access_keys import PROCESS_KEYS, AccessKeys
from lbd.gateway.auth.jwt import JwksFetch, JwtAuthorizerEngine
from lbd.gateway.auth.request import RequestAuthorizerEngine
from lbd.gateway.auth.sigv4 import SigV4Authorizer
from lbd.gateway.contracts import Authorizer, Clock, Fetch

__all__ = ["build_authorizer"]


def build_authorizer(
    config: JwtAuthorizer | RequestAuthorizer | IamAuthorizer,
    fetch: Fetch,
    clock: Clock,
    *,
    access_keys: AccessKeys = PROCESS_KEYS,
    jwks_fetch: JwksFetch | None = None,
) -> Authorizer:
    """The engine for one authorizer of the config.

    ``fetch`` reaches target groups (REQUEST authorizers' endpoints); ``clock`` is time.time or a test's.
    ``access_keys`` (IAM) defaults to the set the supervisor sends this worker; ``jwks_fetch`` (JWT) to
    aiohttp's client. Raises ValueError naming the authorizer if a jwks_file cannot be read.
    """
    if isinstance(config, JwtAuthorizer):
        return JwtAuthorizerEngine(config, clock, jwks_fetch)
    if isinstance(config, RequestAuthorizer):
        return RequestAuthorizerEngine(config, fetch, clock)
    return SigV4Authorizer(config, clock, access_keys)
