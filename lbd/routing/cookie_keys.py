"""The node's stickiness cookie key when no key file is configured: made by the supervisor, inherited by
every worker through the environment (so that a cookie one worker seals, the others and restarted ones
open). Apart from lbd/routing/stickiness.py so that the supervisor, which only makes the key, does not
hold the stickiness code (issue 11, footprint)."""

from __future__ import annotations

import os

KEY_ENV = "LBD_COOKIE_KEY"
KEY_BYTES = 32  # AES-256-GCM


def cookie_key() -> bytes:
    """The supervisor's process-wide key (no key file configured), or a fresh one for a lone worker."""
    hex_key = os.environ.get(KEY_ENV)
    if hex_key:
        return bytes.fromhex(hex_key)
    key = os.urandom(KEY_BYTES)  # what AESGCM.generate_key and secrets.token_bytes do
    os.environ[KEY_ENV] = key.hex()
    return key
