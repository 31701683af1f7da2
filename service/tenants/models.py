"""Teams and their API keys."""

from __future__ import annotations

import datetime as dt
import enum

from sqlmodel import Field, SQLModel

from service.db import utcnow


class Role(enum.StrEnum):
    admin = "admin"
    member = "member"
    viewer = "viewer"


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
