"""Every visible change of a job goes through here, so its event row, its sequence number
and its outbox row are written in the same transaction as the change itself."""

from __future__ import annotations

import time
from typing import Any

from sqlmodel import Session

from service import ids
from service.db import utcnow
from service.jobs.models import TERMINAL_STATUSES, FineTuningJob, JobCheckpoint, JobEvent, JobStage
from service.jobs.serializers import checkpoint_object, job_object
from service.webhooks.outbox import record_event

# Statuses that produce a webhook event (validating_files is the initial state).
NOTIFIED_STATUSES = {"queued", "running", "paused", "succeeded", "failed", "cancelled"}


def add_event(
    session: Session,
    job: FineTuningJob,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
    created_at: int | None = None,
    upstream_event_id: str | None = None,
) -> JobEvent:
    event = JobEvent(
        id=ids.event_id(),
        job_id=job.id,
        created_at=created_at if created_at is not None else int(time.time()),
        level=level,
        message=message,
        type=type,
        data=data,
        upstream_event_id=upstream_event_id,
    )
    session.add(event)
    return event


def set_status(session: Session, job: FineTuningJob, status: str) -> bool:
    """Move ``job`` to ``status``; returns whether anything changed."""
    if job.status == status:
        return False
    job.status = status
    job.sequence += 1
    job.updated_at = utcnow()
    if status in TERMINAL_STATUSES:
        job.stage = JobStage.done
        job.finished_at = job.finished_at or utcnow()
        job.next_poll_at = None
    session.add(job)
    if status in NOTIFIED_STATUSES:
        record_event(
            session,
            team_id=job.team_id,
            event_type=f"fine_tuning.job.{status}",
            object_id=job.id,
            sequence=job.sequence,
            data=job_object(job),
        )
    return True


def add_checkpoint(session: Session, job: FineTuningJob, checkpoint: JobCheckpoint) -> None:
    session.add(checkpoint)
    job.sequence += 1
    session.add(job)
    record_event(
        session,
        team_id=job.team_id,
        event_type="fine_tuning.job.checkpoint.created",
        object_id=job.id,
        sequence=job.sequence,
        data=checkpoint_object(checkpoint),
    )
