"""Per-team quotas: active jobs, stored bytes and file count (reliability.md B3.3, API4).

Checks run inside the transaction that creates the file or job, after taking the team's
row lock, so two concurrent creates cannot both slip under the limit (on SQLite the
single writer serialises them anyway). Answers:

- active jobs over the limit: 429 ``quota_exceeded`` (clears when a job finishes);
- stored bytes over the limit: 413 ``storage_quota_exceeded`` (this upload does not fit);
- file count over the limit: 429 ``quota_exceeded`` (clears when files are deleted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from service.config import LimitSettings, get_settings
from service.db import utcnow
from service.errors import InvalidRequest, PayloadTooLarge, RateLimited
from service.files.models import File
from service.jobs.models import TERMINAL_STATUSES, FineTuningJob
from service.tenants import audit
from service.tenants.models import Team, TeamLimits

LIMIT_FIELDS = ("max_active_jobs", "max_stored_bytes", "max_files", "requests_per_minute")


@dataclass(frozen=True)
class Limits:
    max_active_jobs: int
    max_stored_bytes: int
    max_files: int
    requests_per_minute: int


def effective_limits(session: Session, team_id: str) -> Limits:
    defaults: LimitSettings = get_settings().limits
    override = session.get(TeamLimits, team_id)
    values: dict[str, int] = {}
    for name in LIMIT_FIELDS:
        value = getattr(override, name) if override else None
        values[name] = value if value is not None else getattr(defaults, name)
    return Limits(**values)


def lock_team(session: Session, team_id: str) -> None:
    # FOR NO KEY UPDATE, not FOR UPDATE: a concurrent insert of a file or job holds KEY SHARE
    # on the team row through its foreign key, and FOR UPDATE would deadlock with it.
    session.exec(select(Team.id).where(Team.id == team_id).with_for_update(key_share=True)).first()


def usage(session: Session, team_id: str) -> dict[str, int]:
    files_row = session.exec(
        select(sa.func.count(), sa.func.coalesce(sa.func.sum(File.bytes), 0)).where(
            File.team_id == team_id,
            File.deleted_at.is_(None),  # type: ignore[union-attr]
        )
    ).one()
    active_jobs = session.exec(
        select(sa.func.count()).where(
            FineTuningJob.team_id == team_id,
            FineTuningJob.status.not_in(list(TERMINAL_STATUSES)),  # type: ignore[attr-defined]
        )
    ).one()
    return {
        "files": int(files_row[0]),
        "stored_bytes": int(files_row[1]),
        "active_jobs": int(active_jobs),
    }


def check_file_create(session: Session, team_id: str, size: int) -> None:
    """Refuse a new file of ``size`` bytes that would exceed the team's storage quotas."""
    lock_team(session, team_id)
    limits = effective_limits(session, team_id)
    current = usage(session, team_id)
    if current["files"] + 1 > limits.max_files:
        raise RateLimited(
            f"File quota exceeded: your team has {current['files']} files and may keep "
            f"{limits.max_files}. Delete files to upload more.",
            code="quota_exceeded",
        )
    if current["stored_bytes"] + size > limits.max_stored_bytes:
        raise PayloadTooLarge(
            f"Storage quota exceeded: your team stores {current['stored_bytes']} bytes; this "
            f"file ({size} bytes) would exceed the team's {limits.max_stored_bytes} bytes.",
            param="file",
            code="storage_quota_exceeded",
        )


def check_job_create(session: Session, team_id: str) -> None:
    """Refuse a new job while the team already has its maximum of active jobs."""
    lock_team(session, team_id)
    limits = effective_limits(session, team_id)
    active = usage(session, team_id)["active_jobs"]
    if active + 1 > limits.max_active_jobs:
        raise RateLimited(
            f"Active job quota exceeded: your team has {active} active fine-tuning jobs and "
            f"may run {limits.max_active_jobs} at once. Wait for one to finish or cancel one.",
            code="quota_exceeded",
        )


def set_overrides(session: Session, team_id: str, changes: dict[str, int | None]) -> TeamLimits:
    """Set (int) or clear (None) a team's overrides; fields not in ``changes`` stay."""
    unknown = set(changes) - set(LIMIT_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unknown limit '{sorted(unknown)[0]}'.", param="limits")
    for name, value in changes.items():
        if value is not None and value < 0:
            raise InvalidRequest(f"{name} must not be negative.", param=f"limits.{name}")
    row = session.get(TeamLimits, team_id) or TeamLimits(team_id=team_id)
    for name, value in changes.items():
        setattr(row, name, value)
    row.updated_at = utcnow()
    session.add(row)
    audit.record(session, None, "team.limits_update", "team", team_id, changes, team_id=team_id)
    return row


def limits_object(session: Session, team_id: str) -> dict[str, Any]:
    limits = effective_limits(session, team_id)
    override = session.get(TeamLimits, team_id)
    return {
        "object": "team.limits",
        **{name: getattr(limits, name) for name in LIMIT_FIELDS},
        "overrides": {
            name: getattr(override, name)
            for name in LIMIT_FIELDS
            if getattr(override, name) is not None
        }
        if override
        else {},
        "usage": usage(session, team_id),
    }
