"""A team's active-job quota, counted where jobs live.

The limit is the tenants domain's; the count of active (not terminal) jobs is this
domain's, so tenants never imports jobs. Checked inside the transaction that creates the
job, after taking the team's row lock. Over the limit: 429 ``quota_exceeded`` (clears
when a job finishes or is cancelled).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session, col, select

from service.errors import RateLimited
from service.jobs.models import TERMINAL_STATUSES, FineTuningJob
from service.tenants.limits import effective_limits, lock_team


def active_jobs(session: Session, team_id: str) -> int:
    return int(
        session.exec(
            select(sa.func.count()).where(
                col(FineTuningJob.team_id) == team_id,
                col(FineTuningJob.status).not_in(list(TERMINAL_STATUSES)),
            )
        ).one()
    )


def check_job_create(session: Session, team_id: str) -> None:
    """Refuse a new job while the team already has its maximum of active jobs."""
    lock_team(session, team_id)
    limits = effective_limits(session, team_id)
    active = active_jobs(session, team_id)
    if active + 1 > limits.max_active_jobs:
        raise RateLimited(
            f"Active job quota exceeded: your team has {active} active fine-tuning jobs and "
            f"may run {limits.max_active_jobs} at once. Wait for one to finish or cancel one.",
            code="quota_exceeded",
        )
