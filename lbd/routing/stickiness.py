"""Sealed stickiness cookies (ALB's AWSALBTG for target-group stickiness on weighted forwards).

The value is AES-GCM over "<name>|<expiry>" with a key every worker shares (the supervisor makes it and
hands it to its workers), so a client can neither read which group it is on nor forge another one, and any
worker can open a cookie another worker set.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_ENV = "LBD_COOKIE_KEY"


def cookie_key() -> bytes:
    """The key the supervisor put in the environment, or a fresh one (a lone worker, tests)."""
    hex_key = os.environ.get(KEY_ENV)
    if hex_key:
        return bytes.fromhex(hex_key)
    key = AESGCM.generate_key(bit_length=128)
    os.environ[KEY_ENV] = key.hex()
    return key


class CookieSealer:
    def __init__(self, key: bytes, purpose: bytes) -> None:
        self._aead = AESGCM(key)
        self._purpose = purpose  # associated data: an AWSALBTG value is not accepted as another cookie

    def seal(self, name: str, ttl_seconds: int, now: float | None = None) -> tuple[str, int]:
        expiry = int(now if now is not None else time.time()) + ttl_seconds
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, f"{name}|{expiry}".encode(), self._purpose)
        return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("="), expiry

    def open(self, value: str, now: float | None = None) -> str | None:
        """The name sealed in ``value``, or None when it is forged, damaged or expired."""
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            plain = self._aead.decrypt(raw[:12], raw[12:], self._purpose).decode()
        except (InvalidTag, ValueError, binascii.Error, UnicodeDecodeError):
            return None
        name, _, expiry = plain.rpartition("|")
        if not expiry.isdigit() or int(expiry) < (now if now is not None else time.time()):
            return None
        return name


def cookie_value(headers: Iterable[tuple[bytes, bytes]], cookie_name: bytes) -> str | None:
    """The value of one cookie in the request's Cookie headers (RFC 6265 5.4)."""
    prefix = cookie_name + b"="
    for name, value in headers:
        if len(name) == 6 and name.lower() == b"cookie" and prefix in value:
            for pair in value.split(b";"):
                pair = pair.strip()
                if pair.startswith(prefix):
                    return pair[len(prefix) :].decode("latin-1")
    return None
