"""A job's events and checkpoints, each written with its sequence number and outbox row in
the transaction that records it. Status and stage changes are the state machine's
(``service.jobs.lifecycle``)."""

from __future__ import annotations

import time
from typing import Any

from sqlmodel import Session

from service import ids
from service.jobs.models import FineTuningJob, JobCheckpoint, JobEvent
from service.jobs.serializers import checkpoint_object
from service.webhooks.outbox import record_event


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
