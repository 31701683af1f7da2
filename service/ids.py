"""Object identifiers in OpenAI's style: a type prefix and a random base62 tail."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


# Bytes below 248 (= 4 x 62) map onto the alphabet without bias; the rest are dropped.
_UNBIASED_BELOW = 256 - 256 % len(_ALPHABET)


def random_base62(length: int) -> str:
    # One urandom call per id rather than one per character (ids are minted on hot paths:
    # every delivery, event and outbox row).
    chars: list[str] = []
    while len(chars) < length:
        for byte in secrets.token_bytes(length + 8):
            if byte < _UNBIASED_BELOW:
                chars.append(_ALPHABET[byte % len(_ALPHABET)])
                if len(chars) == length:
                    break
    return "".join(chars)


def new_id(prefix: str, length: int = 24) -> str:
    return f"{prefix}{random_base62(length)}"


def file_id() -> str:
    return new_id("file-")


def job_id() -> str:
    return new_id("ftjob-")


def event_id() -> str:
    return new_id("ftevent-")


def checkpoint_id() -> str:
    return new_id("ftckpt-")


def team_id() -> str:
    return new_id("team_", 16)


def api_key_id() -> str:
    return new_id("key_", 16)


def outbox_id() -> str:
    return new_id("evt_")
