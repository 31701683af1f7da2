"""Uploaded datasets and their copies at providers."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.db import utcnow
from service.dbtypes import json_column


class File(SQLModel, table=True):
    __tablename__ = "files"

    id: str = Field(primary_key=True, max_length=40)
    team_id: str = Field(foreign_key="teams.id", index=True, max_length=32)
    filename: str = Field(max_length=512)
    purpose: str = Field(max_length=32)
    bytes: int
    sha256: str = Field(max_length=64, index=True)
    storage_key: str = Field(max_length=512)
    status: str = Field(default="processed", max_length=16)  # OpenAI's (deprecated) field
    created_at: dt.datetime = Field(default_factory=utcnow)
    deleted_at: dt.datetime | None = None
    # The pre-flight report (datasets issue): pending -> running -> completed | error.
    validation_status: str = Field(default="pending", max_length=16)
    verdict: str | None = Field(default=None, max_length=8)
    format: str | None = Field(default=None, max_length=32)
    examples: int | None = None
    report: dict[str, Any] | None = Field(default=None, sa_column=json_column())
    validation_lease_expires_at: dt.datetime | None = None
    validation_attempts: int = 0


class ProviderFile(SQLModel, table=True):
    """One upload of a dataset (by content hash) to one provider account."""

    __tablename__ = "provider_files"
    __table_args__ = (
        sa.UniqueConstraint("account", "sha256", name="uq_provider_files_account_sha"),
    )

    id: int | None = Field(default=None, primary_key=True)
    account: str = Field(max_length=64)
    sha256: str = Field(max_length=64)
    # None while the upload is announced but not confirmed (see jobs.submission).
    upstream_file_id: str | None = Field(default=None, max_length=128)
    created_at: dt.datetime = Field(default_factory=utcnow)
