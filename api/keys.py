"""API keys and roles (pure).

A key is ``dk_<key_id>_<secret>``: ``key_id`` is 16 hex digits (the public handle, used to
find the row), ``secret`` 32 random bytes in URL-safe base64. The registry keeps only the
SHA-256 of the whole key: a 256-bit random secret needs no slow hash. The key is shown once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from enum import StrEnum
from typing import Final

import msgspec

_KEY_RE: Final = re.compile(r"dk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


class Role(StrEnum):
    CUSTOMER_VIEWER = "customer_viewer"
    CUSTOMER_ADMIN = "customer_admin"
    OPS = "ops"
    VENDOR = "vendor"


class IssuedKey(msgspec.Struct, frozen=True):
    """A freshly generated key: ``plaintext`` is shown once and never stored."""

    key_id: str
    plaintext: str
    sha256: bytes

    def __repr__(self) -> str:
        return f"IssuedKey(key_id={self.key_id!r}, plaintext=<hidden>)"


def generate() -> IssuedKey:
    key_id = secrets.token_hex(8)
    plaintext = f"dk_{key_id}_{secrets.token_urlsafe(32)}"
    return IssuedKey(key_id, plaintext, hashlib.sha256(plaintext.encode()).digest())


def parse_key_id(presented: str) -> str | None:
    """The key id of a well-formed key, or None."""
    match = _KEY_RE.fullmatch(presented)
    return match.group(1) if match else None


def matches(presented: str, stored_sha256: bytes) -> bool:
    """Constant-time comparison of a presented key with the stored hash."""
    return hmac.compare_digest(hashlib.sha256(presented.encode()).digest(), stored_sha256)
