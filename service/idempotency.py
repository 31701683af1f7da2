"""Idempotency-Key on every POST: the same key and body return the same result; the same
key with another body is a 409. Keys are scoped to the caller's credentials and kept for a
day (as Stripe and Svix do); a request still running under a key answers 409 too.
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
    fingerprint: str = Field(max_length=64)  # hash of method, path and body
    status_code: int | None = None  # None while the first request is still running
    content_type: str | None = Field(default=None, max_length=128)
    response_body: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    created_at: dt.datetime = Field(default_factory=utcnow, index=True)


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    content_type: str | None
    body: bytes


def digest(*parts: bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(len(part).to_bytes(8, "big"))
        hasher.update(part)
    return hasher.hexdigest()


def begin(scope: str, key: str, fingerprint: str) -> StoredResponse | None:
    """Reserve ``key`` for this request, or return the response already stored under it."""
    try:
        with session_scope() as session:
            session.execute(
                sa.delete(IdempotencyKey).where(
                    IdempotencyKey.scope == scope,  # type: ignore[arg-type]
                    IdempotencyKey.key == key,  # type: ignore[arg-type]
                    IdempotencyKey.created_at < utcnow() - RETENTION,  # type: ignore[arg-type]
                )
            )
            session.add(IdempotencyKey(scope=scope, key=key, fingerprint=fingerprint))
        return None
    except IntegrityError:
        pass
    with session_scope() as session:
        row = session.exec(
            select(IdempotencyKey).where(IdempotencyKey.scope == scope, IdempotencyKey.key == key)
        ).first()
    if row is None:  # expired and removed between the two statements: start afresh
        return begin(scope, key, fingerprint)
    if row.fingerprint != fingerprint:
        raise Conflict(
            "This Idempotency-Key was already used with a different request body or path.",
            code="idempotency_key_reused",
            param="Idempotency-Key",
        )
    if row.status_code is None:
        raise Conflict(
            "A request with this Idempotency-Key is still being processed; retry shortly.",
            code="idempotency_request_in_progress",
            param="Idempotency-Key",
        )
    return StoredResponse(row.status_code, row.content_type, row.response_body or b"")


def finish(scope: str, key: str, response: StoredResponse | None) -> None:
    """Store the response (``None`` releases the key so a retry may run again)."""
    with session_scope() as session:
        where = sa.and_(IdempotencyKey.scope == scope, IdempotencyKey.key == key)  # type: ignore[arg-type]
        if response is None:
            session.execute(sa.delete(IdempotencyKey).where(where))
        else:
            session.execute(
                sa.update(IdempotencyKey)
                .where(where)
                .values(
                    status_code=response.status_code,
                    content_type=response.content_type,
                    response_body=response.body,
                )
            )
