"""Authorizers: who may call a route. One module per kind, all behind contracts.Authorizer.

- ``JWT`` (jwt.py): tokens from an OpenID provider, verified against its JWKS;
- ``REQUEST`` (request.py): an HTTP endpoint on a target group decides, as a Lambda authorizer would;
- ``IAM`` (sigv4.py): AWS Signature Version 4 against the access keys of lbd/gateway/access_keys.py.

docs/gateway-auth.md describes them for users.
"""

from __future__ import annotations

from lbd.config.gateway_auth import IamAuthorizer, JwtAuthorizer, RequestAuthorizer
from lbd.gateway.access_keys import PROCESS_KEYS, AccessKeys
from lbd.gateway.auth.jwt import JwksFetch, JwksSource, JwtAuthorizerEngine
from lbd.gateway.auth.request import RequestAuthorizerEngine
from lbd.gateway.auth.sigv4 import SigV4Authorizer
from lbd.gateway.contracts import Authorizer, Clock, Fetch

__all__ = ["authorizer_errors", "build_authorizer"]


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


def authorizer_errors(config: JwtAuthorizer | RequestAuthorizer | IamAuthorizer, where: str) -> list[str]:
    """For preflight (``lbd check`` and ``lbd run`` alike): what build_authorizer would refuse, with the
    key path ``where`` (e.g. ``apis[0].authorizers[1]``) in front. Today: a jwks_file that cannot be read or
    holds no signing keys."""
    if isinstance(config, JwtAuthorizer) and config.jwks_file is not None:
        try:
            JwksSource(config, lambda: 0.0)
        except ValueError as exc:
            return [f"{where}.jwks_file: {exc.__cause__ or exc}"]
    return []
