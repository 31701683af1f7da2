"""Shutdown alerts: ``model.shutdown_approaching`` 30, 7 and 1 days before a fine-tune's
shutdown date, and ``model.retired`` on the day, each once per team and model.

The rule: a notice is a ``model_notices`` row and an outbox event written in one
transaction; the row's unique key (team, model, notice) and the outbox's (job, type,
threshold) make a second send impossible, across beat restarts and concurrent beats alike.
Only the most urgent threshold reached is sent; ones already passed when a model is first
seen are recorded unsent, never delivered late. The clock is ``registry.clock`` (shifted by
``FTQ_REGISTRY__CLOCK_OFFSET_DAYS``) or the ``now`` given.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from service.config import get_settings
from service.db import session_scope
from service.jobs.models import FineTuningJob, JobStatus
from service.registry import clock
from service.registry.lineage import RETIRED, successors
from service.registry.models import ModelNotice
from service.registry.plan import suggested_target
from service.registry.shutdown import base_of, shutdown_date
from service.webhooks.events import EventType
from service.webhooks.outbox import record_event

log = structlog.get_logger(__name__)

APPROACHING = "shutdown_approaching"


def _candidates(team_id: str | None) -> list[str]:
    with session_scope() as session:
        query = select(FineTuningJob.id).where(
            FineTuningJob.status == JobStatus.succeeded,
            col(FineTuningJob.fine_tuned_model).is_not(None),
            FineTuningJob.provider != "local",
        )
        if team_id is not None:
            query = query.where(FineTuningJob.team_id == team_id)
        return list(session.exec(query.order_by(col(FineTuningJob.created_at))))


def _payload(
    session: Session, job: FineTuningJob, date: dt.date, days_left: int, threshold: int | None
) -> dict[str, Any]:
    return {
        "object": "model",
        "id": job.fine_tuned_model,
        "fine_tuning_job_id": job.id,
        "provider": job.provider,
        "base_model": base_of(job.model),
        "shutdown_date": date.isoformat(),
        "days_left": days_left,
        "threshold_days": threshold,
        "successors": [
            {"id": s.fine_tuned_model, "fine_tuning_job_id": s.id, "status": s.status}
            for s in successors(session, job)
        ],
        "suggested_target": suggested_target(base_of(job.model)),
    }


def _notices_due(days_left: int, sent: set[str]) -> list[tuple[str, int | None, bool]]:
    """(notice, threshold, send?) rows to write now for a model ``days_left`` from shutdown."""
    if days_left <= 0:
        return [] if RETIRED in sent else [(RETIRED, None, True)]
    reached = sorted(d for d in get_settings().registry.alert_days if days_left <= d)
    if not reached:
        return []
    due: list[tuple[str, int | None, bool]] = []
    for index, threshold in enumerate(reached):
        name = f"{APPROACHING}:{threshold}"
        if name not in sent:
            due.append((name, threshold, index == 0))  # only the most urgent is sent
    return due


def _notify(job_id: str, at: dt.datetime) -> list[str]:
    with session_scope() as session:
        job = session.get(FineTuningJob, job_id)
        if job is None or job.fine_tuned_model is None:
            return []
        date = shutdown_date(session, job)
        if date is None:
            return []
        days_left = (date - clock.today(at)).days
        sent = set(
            session.exec(
                select(ModelNotice.notice).where(
                    ModelNotice.team_id == job.team_id,
                    ModelNotice.model == job.fine_tuned_model,
                )
            )
        )
        written = []
        for notice, threshold, send in _notices_due(days_left, sent):
            session.add(
                ModelNotice(
                    team_id=job.team_id,
                    model=job.fine_tuned_model,
                    job_id=job.id,
                    notice=notice,
                    shutdown_date=date,
                    sent=send,
                )
            )
            if send:
                record_event(
                    session,
                    team_id=job.team_id,
                    event_type=EventType.MODEL_RETIRED
                    if notice == RETIRED
                    else EventType.MODEL_SHUTDOWN_APPROACHING,
                    object_id=job.id,
                    sequence=threshold or 0,
                    data=_payload(session, job, date, days_left, threshold),
                )
                written.append(notice)
        return written


def send_due_alerts(now: dt.datetime | None = None, team_id: str | None = None) -> dict[str, int]:
    """Write every notice that is due ``now`` (default: the registry's clock), optionally for
    one team; returns how many of each kind were sent. Safe to run any number of times."""
    at = now or clock.now()
    counts: dict[str, int] = {}
    for job_id in _candidates(team_id):
        try:
            written = _notify(job_id, at)
        except IntegrityError:
            # Another beat wrote the same notice first: it is sent, once.
            log.info("model_notice_raced", job_id=job_id)
            continue
        for notice in written:
            kind = notice.split(":")[0]
            counts[kind] = counts.get(kind, 0) + 1
    if counts:
        log.info("model_notices_sent", **counts)
    return counts
