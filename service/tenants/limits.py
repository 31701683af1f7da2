"""Per-team quotas: active jobs, stored bytes and file count (reliability.md B3.3, API4).

This module owns the limits — deployment defaults, per-team overrides, the team row lock
that serialises creates — and nothing that is counted against them: files are counted in
``service.files.quota``, jobs in ``service.jobs.quota``, each next to its own table, so
tenants imports neither domain. Those checks run inside the transaction that creates the
file or job, after ``lock_team``, so two concurrent creates cannot both slip under the
limit (on SQLite the single writer serialises them anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, select

from service.config import LimitSettings, get_settings
from service.db import utcnow
from service.errors import InvalidRequest
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


def limits_object(session: Session, team_id: str, usage: dict[str, int]) -> dict[str, Any]:
    """The effective limits, the overrides that set them and ``usage`` (counted by the
    domains that own what is counted)."""
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
        "usage": usage,
    }
