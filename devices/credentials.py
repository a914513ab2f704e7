"""Device passwords: generated here, shown once, stored only as a salted hash.

The hash is PBKDF2-SHA256, hex-encoded, with a per-device random salt (hex): the format
EMQX's PostgreSQL authenticator verifies (docs/broker-auth.md), so a city deployment can
let EMQX read firegrid's tables directly. Passwords are 128-bit random, which is what
makes them unguessable; the iteration count is defence in depth.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceCredentials:
    device_id: str   # also the MQTT username
    kind: str        # smoke_detector | camera | gateway
    password: str    # plain text: only ever in memory on its way to the broker and the user


def new_password() -> str:
    """128 random bits, URL-safe text (22 characters), easy to paste into device config.
    It starts with a letter or digit: a spreadsheet reads a leading '-' as a formula."""
    while True:
        password = secrets.token_urlsafe(16)
        if password[0].isalnum():
            return password


def hash_password(password: str, iterations: int, salt: str | None = None) -> tuple[str, str]:
    """Return (hash_hex, salt_hex)."""
    salt = salt if salt is not None else secrets.token_hex(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return digest.hex(), salt


def verify_password(password: str, hash_hex: str, salt: str, iterations: int) -> bool:
    candidate, _ = hash_password(password, iterations, salt)
    return hmac.compare_digest(candidate, hash_hex)
