"""Authorizers: who may call a route. One module per kind, all behind contracts.Authorizer.

- ``JWT`` (jwt.py): tokens from an OpenID provider, verified against its JWKS;
- ``REQUEST`` (request.py): an HTTP endpoint on a target group decides, as a Lambda authorizer would;
- ``IAM`` (sigv4.py): AWS Signature Version 4 against the access keys of lbd/gateway/access_keys.py.

docs/gateway-auth.md describes them for users.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lbd.gateway.access_keys import PROCESS_KEYS, AccessKeys
from lbd.gateway.contracts import Authorizer, Clock, Fetch

if TYPE_CHECKING:
    # The models, or their plain records in a worker (lbd/config/plain.py): the kind is the ``type`` field.
    from lbd.config.gateway_auth import IamAuthorizer, JwtAuthorizer, RequestAuthorizer
    from lbd.gateway.auth.jwt import JwksFetch

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
    # Each engine imported when an authorizer of its kind is built: PyJWT (and the cryptography it loads)
    # only in workers that verify JWTs.
    if config.type == "JWT":
        from lbd.gateway.auth.jwt import JwtAuthorizerEngine

        return JwtAuthorizerEngine(config, clock, jwks_fetch)
    if config.type == "REQUEST":
        from lbd.gateway.auth.request import RequestAuthorizerEngine

        return RequestAuthorizerEngine(config, fetch, clock)
    from lbd.gateway.auth.sigv4 import SigV4Authorizer

    return SigV4Authorizer(config, clock, access_keys)


def authorizer_errors(config: JwtAuthorizer | RequestAuthorizer | IamAuthorizer, where: str) -> list[str]:
    """For preflight (``lbd check`` and ``lbd run`` alike): what build_authorizer would refuse, with the
    key path ``where`` (e.g. ``apis[0].authorizers[1]``) in front. Today: a jwks_file that cannot be read or
    holds no signing keys."""
    if config.type == "JWT" and config.jwks_file is not None:
        from lbd.gateway.auth.jwt import JwksSource

        try:
            JwksSource(config, lambda: 0.0)
        except ValueError as exc:
            return [f"{where}.jwks_file: {exc.__cause__ or exc}"]
    return []
