"""API key format: ``ftq_sk_`` + 40 random base62 + 6-char base62 CRC32 checksum.

The typed prefix and checksum make leaked keys recognisable by secret scanners; only a
keyed hash (HMAC-SHA256 under FTQ_SECRET_KEY) is stored, so a database dump reveals none.
A fast keyed hash suits high-entropy random tokens (passwords would need Argon2).
"""

from __future__ import annotations

import hashlib
import hmac
import zlib

from service.ids import random_base62

KEY_PREFIX = "ftq_sk_"
_BODY_LENGTH = 40
_CHECKSUM_LENGTH = 6
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
DISPLAY_LENGTH = len(KEY_PREFIX) + 6


def _base62(number: int, width: int) -> str:
    out = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        out.append(_B62[rem])
    return "".join(reversed(out))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECKSUM_LENGTH)


def generate_key() -> str:
    body = random_base62(_BODY_LENGTH)
    return f"{KEY_PREFIX}{body}{_checksum(body)}"


def looks_like_key(token: str) -> bool:
    """Cheap structural check (prefix, length, checksum) before touching the database."""
    if not token.startswith(KEY_PREFIX):
        return False
    rest = token[len(KEY_PREFIX) :]
    if len(rest) != _BODY_LENGTH + _CHECKSUM_LENGTH:
        return False
    body, checksum = rest[:_BODY_LENGTH], rest[_BODY_LENGTH:]
    return hmac.compare_digest(_checksum(body), checksum)


def hash_key(token: str, secret: str) -> str:
    return hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()


def display_prefix(token: str) -> str:
    return token[:DISPLAY_LENGTH]
