"""Teams, their API keys, per-team limits and the audit log."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.db import utcnow
from service.dbtypes import json_column


class Role(enum.StrEnum):
    admin = "admin"
    member = "member"
    viewer = "viewer"
    # Platform operators manage teams (/v1/tenants) and nothing inside a team.
    operator = "operator"


# Operator keys belong to this built-in team, so every key still has a team.
PLATFORM_TEAM_NAME = "platform"


class Team(SQLModel, table=True):
    __tablename__ = "teams"

    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(unique=True, max_length=128)
    created_at: dt.datetime = Field(default_factory=utcnow)


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=32)
    team_id: str = Field(foreign_key="teams.id", index=True, max_length=32)
    name: str = Field(default="", max_length=128)
    role: str = Field(max_length=16)
    # What people see to recognise a key ("ftq_sk_AbCd…"); the key itself is never stored.
    prefix: str = Field(max_length=32)
    key_hash: str = Field(unique=True, max_length=64)
    created_at: dt.datetime = Field(default_factory=utcnow)
    last_used_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None


class TeamLimits(SQLModel, table=True):
    """Per-team overrides of ``FTQ_LIMITS__*``; a NULL column means the deployment default."""

    __tablename__ = "team_limits"

    team_id: str = Field(primary_key=True, foreign_key="teams.id", max_length=32)
    max_active_jobs: int | None = None
    max_stored_bytes: int | None = Field(default=None, sa_type=sa.BigInteger)
    max_files: int | None = None
    requests_per_minute: int | None = None
    updated_at: dt.datetime = Field(default_factory=utcnow)


class ApiKeyAddress(SQLModel, table=True):
    """Addresses a key has been used from: the first use from a new one is audited."""

    __tablename__ = "api_key_addresses"

    key_id: str = Field(primary_key=True, foreign_key="api_keys.id", max_length=32)
    ip: str = Field(primary_key=True, max_length=64)
    first_seen_at: dt.datetime = Field(default_factory=utcnow)


class AuditEvent(SQLModel, table=True):
    """Append-only: rows are inserted in the transaction of the action and never updated."""

    __tablename__ = "audit_events"

    # The integer key orders the log (ids are random); paging uses it.
    pk: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    )
    id: str = Field(unique=True, max_length=40)
    # NULL for auth failures, where no team is known.
    team_id: str | None = Field(default=None, index=True, max_length=32)
    actor_key_id: str | None = Field(default=None, max_length=32)
    action: str = Field(index=True, max_length=64)
    target_type: str = Field(default="", max_length=32)
    target_id: str | None = Field(default=None, max_length=128)
    request_id: str | None = Field(default=None, max_length=64)
    ip: str | None = Field(default=None, max_length=64)
    details: dict[str, Any] | None = Field(default=None, sa_column=json_column())
    created_at: dt.datetime = Field(default_factory=utcnow, index=True)
