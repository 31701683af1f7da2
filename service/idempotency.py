"""Idempotency-Key on every POST: the same key and body return the same result; the same
key with another body is a 409. Keys are scoped to the caller's credentials and kept for a
day (as Stripe and Svix do); a request still running under a key answers 409 too.

The fingerprint covers the method, path, query, media type and the *whole* body, hashed
while the body streams (``BodyFingerprint``), so a 512 MB upload is never held in memory.
A multipart body is hashed with its boundary replaced by a fixed token: clients draw a new
boundary for every retry, and the same parts under another boundary are the same request.
Because the fingerprint is known only once the body has been read, a key is reserved
first (``begin``) and its fingerprint is written with the response (``finish``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, select

from service.db import session_scope, utcnow
from service.errors import Conflict

RETENTION = dt.timedelta(hours=24)


class IdempotencyKey(SQLModel, table=True):
    __tablename__ = "idempotency_keys"
    __table_args__ = (sa.UniqueConstraint("scope", "key", name="uq_idempotency_scope_key"),)

    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(max_length=64)  # hash of the credentials that sent the request
    key: str = Field(max_length=255)
    # Hash of method, path, media type and body; "" while the first request is running.
    fingerprint: str = Field(max_length=64)
    status_code: int | None = None  # None while the first request is still running
    content_type: str | None = Field(default=None, max_length=128)
    response_body: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    created_at: dt.datetime = Field(default_factory=utcnow, index=True)


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    content_type: str | None
    body: bytes


@dataclass(frozen=True)
class Existing:
    """What a key already holds: a finished request's fingerprint and response."""

    fingerprint: str
    response: StoredResponse


def digest(*parts: bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(len(part).to_bytes(8, "big"))
        hasher.update(part)
    return hasher.hexdigest()


_BOUNDARY_TOKEN = b"\x00ftq-multipart-boundary\x00"


class BodyFingerprint:
    """SHA-256 of a request, fed chunk by chunk as its body streams.

    ``boundary`` (multipart bodies) is replaced by a fixed token wherever it occurs; the
    last ``len(boundary) - 1`` bytes of each chunk wait for the next one, so an occurrence
    split across chunks is still found.
    """

    def __init__(self, request_line: bytes, media_type: bytes, boundary: bytes | None) -> None:
        self._hasher = hashlib.sha256()
        for part in (request_line, media_type):
            self._hasher.update(len(part).to_bytes(8, "big"))
            self._hasher.update(part)
        self._boundary = boundary or b""
        self.multipart = boundary is not None
        self._carry = b""
        self.complete = False  # the last chunk (more_body false) has been seen

    def update(self, chunk: bytes, *, more: bool) -> None:
        if not self._boundary:
            self._hasher.update(chunk)
        else:
            buffer = self._carry + chunk
            position = 0
            while (found := buffer.find(self._boundary, position)) >= 0:
                self._hasher.update(buffer[position:found])
                self._hasher.update(_BOUNDARY_TOKEN)
                position = found + len(self._boundary)
            keep = 0 if not more else min(len(self._boundary) - 1, len(buffer) - position)
            self._hasher.update(buffer[position : len(buffer) - keep])
            self._carry = buffer[len(buffer) - keep :]
        if not more:
            self.complete = True

    def hexdigest(self) -> str:
        return self._hasher.hexdigest()


def begin(scope: str, key: str) -> Existing | None:
    """Reserve ``key`` for a new request (None), or return what a finished one stored.

    A key whose first request is still running raises 409 at once.
    """
    try:
        with session_scope() as session:
            session.execute(
                sa.delete(IdempotencyKey).where(
                    IdempotencyKey.scope == scope,  # type: ignore[arg-type]
                    IdempotencyKey.key == key,  # type: ignore[arg-type]
                    IdempotencyKey.created_at < utcnow() - RETENTION,  # type: ignore[arg-type]
                )
            )
            session.add(IdempotencyKey(scope=scope, key=key, fingerprint=""))
        return None
    except IntegrityError:
        pass
    with session_scope() as session:
        row = session.exec(
            select(IdempotencyKey).where(IdempotencyKey.scope == scope, IdempotencyKey.key == key)
        ).first()
    if row is None:  # expired and removed between the two statements: start afresh
        return begin(scope, key)
    if row.status_code is None:
        raise Conflict(
            "A request with this Idempotency-Key is still being processed; retry shortly.",
            code="idempotency_request_in_progress",
            param="Idempotency-Key",
        )
    response = StoredResponse(row.status_code, row.content_type, row.response_body or b"")
    return Existing(row.fingerprint, response)


def check_replay(existing: Existing, fingerprint: str) -> StoredResponse:
    """The stored response when the request is the same one; 409 when it is another."""
    if existing.fingerprint != fingerprint:
        raise Conflict(
            "This Idempotency-Key was already used with a different request body or path.",
            code="idempotency_key_reused",
            param="Idempotency-Key",
        )
    return existing.response


def finish(scope: str, key: str, fingerprint: str, response: StoredResponse | None) -> None:
    """Store the request's fingerprint and response (``None`` releases the key so a retry
    may run again)."""
    with session_scope() as session:
        where = sa.and_(IdempotencyKey.scope == scope, IdempotencyKey.key == key)  # type: ignore[arg-type]
        if response is None:
            session.execute(sa.delete(IdempotencyKey).where(where))
        else:
            session.execute(
                sa.update(IdempotencyKey)
                .where(where)
                .values(
                    fingerprint=fingerprint,
                    status_code=response.status_code,
                    content_type=response.content_type,
                    response_body=response.body,
                )
            )
