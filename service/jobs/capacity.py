"""Concurrency limits and the fair queue.

A job may hold an upstream slot only while its team and its provider account are under
their limits. Jobs over a limit wait (status ``queued``, stage ``waiting``); the admission
sweep hands out free slots round-robin by team — the team served longest ago first — then
by priority and age within a team, so one team's twenty jobs never starve another's one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from service import leases
from service.config import get_settings
from service.db import utcnow
from service.jobs import lifecycle
from service.jobs.models import TERMINAL_STATUSES, FineTuningJob, JobStage
from service.jobs.runners import runner_for

# Stages that hold (or are about to hold) a slot at the provider.
ACTIVE_STAGES = (JobStage.uploading, JobStage.creating, JobStage.tracking, JobStage.training)


def lock_account(session: Session, account: str) -> None:
    """Serialise admission per provider account (Postgres; SQLite has one writer anyway)."""
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(account.encode()).digest()[:8], "big", signed=True)
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _active_counts(session: Session, column: Any, values: Iterable[str]) -> dict[str, int]:
    rows = session.execute(
        sa.select(column, sa.func.count())
        .where(
            column.in_(list(values)),
            FineTuningJob.stage.in_([s.value for s in ACTIVE_STAGES]),  # type: ignore[attr-defined]
            FineTuningJob.status.not_in([s.value for s in TERMINAL_STATUSES]),  # type: ignore[attr-defined]
        )
        .group_by(column)
    )
    return {key: count for key, count in rows}


def has_slot(session: Session, job: FineTuningJob) -> bool:
    settings = get_settings()
    team_active = _active_counts(session, col(FineTuningJob.team_id), [job.team_id]).get(
        job.team_id, 0
    )
    account_active = _active_counts(session, col(FineTuningJob.account), [job.account]).get(
        job.account, 0
    )
    return (
        team_active < settings.max_active_jobs_per_team
        and account_active < settings.max_active_jobs_per_account
    )


def others_waiting(session: Session, job: FineTuningJob) -> bool:
    return (
        session.exec(
            select(FineTuningJob.id).where(
                FineTuningJob.account == job.account,
                FineTuningJob.stage == JobStage.waiting,
                FineTuningJob.id != job.id,
            )
        ).first()
        is not None
    )


def send_to_queue(
    session: Session, job: FineTuningJob, reason: str, *, not_before: dt.datetime | None = None
) -> None:
    job.next_poll_at = not_before  # the admission sweep skips the job until then
    leases.clear(job)
    lifecycle.move(session, job, "enqueue", message=reason)


def take_slot(session: Session, job: FineTuningJob, *, inline: bool = False) -> None:
    """Give ``job`` its slot (under the account lock) and let its runner move it on."""
    job.admitted_at = utcnow()
    job.next_poll_at = None
    runner_for(job.provider).admit(session, job, inline=inline)


def fair_order(
    waiting: list[FineTuningJob], last_served: dict[str, dt.datetime | None]
) -> list[FineTuningJob]:
    """Round-robin by team (least recently served first), then priority, then age."""
    by_team: dict[str, list[FineTuningJob]] = defaultdict(list)
    for job in waiting:
        by_team[job.team_id].append(job)
    for jobs in by_team.values():
        jobs.sort(key=lambda j: (-j.priority, j.created_at, j.id))
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    teams = sorted(
        by_team,
        key=lambda t: (last_served.get(t) or epoch, by_team[t][0].created_at),
    )
    ordered: list[FineTuningJob] = []
    depth = 0
    while len(ordered) < len(waiting):
        for team in teams:
            if depth < len(by_team[team]):
                ordered.append(by_team[team][depth])
        depth += 1
    return ordered


def _last_served(session: Session, teams: Iterable[str]) -> dict[str, dt.datetime | None]:
    rows = session.execute(
        sa.select(col(FineTuningJob.team_id), sa.func.max(FineTuningJob.admitted_at))
        .where(col(FineTuningJob.team_id).in_(list(teams)))
        .group_by(col(FineTuningJob.team_id))
    )
    return {team: at for team, at in rows}


def admit(session: Session, account: str) -> list[str]:
    """Give free slots of ``account`` to waiting jobs, fairly; returns the admitted ids."""
    settings = get_settings()
    lock_account(session, account)
    now = utcnow()
    waiting = list(
        session.exec(
            select(FineTuningJob).where(
                FineTuningJob.account == account,
                FineTuningJob.stage == JobStage.waiting,
                sa.or_(
                    col(FineTuningJob.next_poll_at).is_(None),
                    col(FineTuningJob.next_poll_at) <= now,
                ),
            )
        )
    )
    if not waiting:
        return []
    teams = {job.team_id for job in waiting}
    account_free = settings.max_active_jobs_per_account - _active_counts(
        session, col(FineTuningJob.account), [account]
    ).get(account, 0)
    team_active = _active_counts(session, col(FineTuningJob.team_id), teams)
    admitted: list[str] = []
    for job in fair_order(waiting, _last_served(session, teams)):
        if account_free <= 0:
            break
        if team_active.get(job.team_id, 0) >= settings.max_active_jobs_per_team:
            continue
        # The slot is taken now, under the account lock; the runner moves the job on and
        # enqueues its work without queueing it a second time.
        take_slot(session, job)
        account_free -= 1
        team_active[job.team_id] = team_active.get(job.team_id, 0) + 1
        admitted.append(job.id)
    return admitted


def admit_all(session: Session) -> list[str]:
    accounts = session.exec(
        select(FineTuningJob.account).where(FineTuningJob.stage == JobStage.waiting).distinct()
    ).all()
    admitted: list[str] = []
    for account in accounts:
        admitted.extend(admit(session, account))
    return admitted


def queue_positions(session: Session, jobs: Iterable[FineTuningJob]) -> dict[str, int]:
    """1-based position of each waiting job in its account's fair order."""
    positions: dict[str, int] = {}
    accounts = {job.account for job in jobs if job.stage == JobStage.waiting}
    for account in accounts:
        waiting = list(
            session.exec(
                select(FineTuningJob).where(
                    FineTuningJob.account == account, FineTuningJob.stage == JobStage.waiting
                )
            )
        )
        order = fair_order(waiting, _last_served(session, {j.team_id for j in waiting}))
        positions.update({job.id: index + 1 for index, job in enumerate(order)})
    return positions
