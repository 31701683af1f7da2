"""A team's file quotas, counted where files live (files and stored bytes).

The limits themselves (defaults, per-team overrides, the team lock) are the tenants
domain's; what counts against them is this domain's, so tenants never imports files.
Checked inside the transaction that creates the file, after taking the team's row lock,
so two concurrent uploads cannot both slip under the limit.

- file count over the limit: 429 ``quota_exceeded`` (clears when files are deleted);
- stored bytes over the limit: 413 ``storage_quota_exceeded`` (this upload does not fit).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session, col, select

from service.errors import PayloadTooLarge, RateLimited
from service.files.models import File
from service.tenants.limits import effective_limits, lock_team


@dataclass(frozen=True)
class FileUsage:
    files: int
    stored_bytes: int


def usage(session: Session, team_id: str) -> FileUsage:
    """The team's live (not deleted) files and their bytes."""
    count, stored = session.exec(
        select(sa.func.count(), sa.func.coalesce(sa.func.sum(File.bytes), 0)).where(
            col(File.team_id) == team_id, col(File.deleted_at).is_(None)
        )
    ).one()
    return FileUsage(files=int(count), stored_bytes=int(stored))


def check_file_create(session: Session, team_id: str, size: int) -> None:
    """Refuse a new file of ``size`` bytes that would exceed the team's storage quotas."""
    lock_team(session, team_id)
    limits = effective_limits(session, team_id)
    current = usage(session, team_id)
    if current.files + 1 > limits.max_files:
        raise RateLimited(
            f"File quota exceeded: your team has {current.files} files and may keep "
            f"{limits.max_files}. Delete files to upload more.",
            code="quota_exceeded",
        )
    if current.stored_bytes + size > limits.max_stored_bytes:
        raise PayloadTooLarge(
            f"Storage quota exceeded: your team stores {current.stored_bytes} bytes; this "
            f"file ({size} bytes) would exceed the team's {limits.max_stored_bytes} bytes.",
            param="file",
            code="storage_quota_exceeded",
        )
