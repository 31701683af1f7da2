"""Object identifiers in OpenAI's style: a type prefix and a random base62 tail."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def random_base62(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


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
