"""Standard Webhooks (v1, symmetric) signatures for outbound deliveries.

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``, HMAC-SHA256 under each
endpoint secret. During a rotation both the old and the new secret sign, so the
``webhook-signature`` header carries one ``v1,<base64>`` per secret and a receiver holding
either one verifies. ``webhook-id`` must stay the same across retries and replays (it is the
receiver's idempotency key); ``webhook-timestamp`` is per attempt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets as _random
import time
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
# The spec asks for 24-64 random bytes; shorter keys are refused rather than weakly signed.
_MIN_SECRET_BYTES = 24
_MAX_SECRET_BYTES = 64
USER_AGENT = "ftq-webhooks/1"

# The signed content is dot-separated, so an id with a "." (or whitespace, which breaks
# the header) would make signatures ambiguous.
_MSG_ID = re.compile(r"[A-Za-z0-9_\-]{1,255}")


def generate_secret() -> str:
    """A fresh endpoint secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(SECRET_BYTES)).decode("ascii")


def decode_secret(secret: str) -> bytes:
    """The raw HMAC key of a ``whsec_…`` secret (the prefix is optional, as in the spec)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("webhook secret is not valid base64") from exc
    if not _MIN_SECRET_BYTES <= len(key) <= _MAX_SECRET_BYTES:
        raise ValueError(
            f"webhook secret must be {_MIN_SECRET_BYTES}-{_MAX_SECRET_BYTES} bytes, got {len(key)}"
        )
    return key


def sign(secrets: Sequence[str], msg_id: str, timestamp: int, payload: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,<sig>`` per secret, space-separated."""
    if isinstance(secrets, str):
        # A bare string is a sequence of characters; signing with each would be nonsense.
        raise TypeError("secrets must be a sequence of secrets, not a single string")
    if not secrets:
        raise ValueError("at least one secret is required")
    if not _MSG_ID.fullmatch(msg_id):
        raise ValueError("msg_id must be 1-255 characters of [A-Za-z0-9_-]")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ValueError("timestamp must be a non-negative integer of Unix seconds")
    signed_content = f"{msg_id}.{timestamp}.".encode("ascii") + payload
    signatures = []
    for secret in secrets:
        digest = hmac.new(decode_secret(secret), signed_content, hashlib.sha256).digest()
        signatures.append("v1," + base64.b64encode(digest).decode("ascii"))
    return " ".join(signatures)


def build_headers(
    secrets: Sequence[str], msg_id: str, payload: bytes, now: float | None = None
) -> dict[str, str]:
    """All headers of one delivery attempt; ``now`` (Unix seconds) defaults to the clock."""
    timestamp = int(time.time() if now is None else now)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secrets, msg_id, timestamp, payload),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
