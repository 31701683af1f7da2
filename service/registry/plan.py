"""The migration plan: a team's fine-tunes that shut down within N days, each with the
operator's suggested replacement (``FTQ_REGISTRY__REPLACEMENTS``, "<provider>:<base>") and
how far its re-training has got (``pending``, ``in_progress``, ``migrated``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlmodel import Session, col, select

from service.config import get_settings
from service.jobs.models import TERMINAL_STATUSES, FineTuningJob, JobStatus
from service.registry import clock


def suggested_target(base_model: str) -> dict[str, str] | None:
    table = get_settings().registry.replacements
    matches = [prefix for prefix in table if base_model.startswith(prefix)]
    if not matches:
        return None
    provider, _, model = table[max(matches, key=len)].partition(":")
    return {"provider": provider, "model": model} if model else None


def _progress(children: list[FineTuningJob]) -> str:
    if any(c.status == JobStatus.succeeded for c in children):
        return "migrated"
    if any(c.status not in TERMINAL_STATUSES for c in children):
        return "in_progress"
    return "pending"


def migration_plan(
    session: Session, team_id: str, within_days: int, at: dt.datetime | None = None
) -> dict[str, Any]:
    from service.registry.lineage import is_retired, successors
    from service.registry.shutdown import base_of, shutdown_date

    today = clock.today(at)
    horizon = today + dt.timedelta(days=within_days)
    items = []
    jobs = session.exec(
        select(FineTuningJob)
        .where(
            FineTuningJob.team_id == team_id,
            FineTuningJob.status == JobStatus.succeeded,
            col(FineTuningJob.fine_tuned_model).is_not(None),
        )
        .order_by(col(FineTuningJob.created_at))
    )
    for job in jobs:
        date = shutdown_date(session, job)
        if date is None or date > horizon:
            continue
        children = successors(session, job)
        base = base_of(job.model)
        items.append(
            {
                "object": "migration_plan.item",
                "model": job.fine_tuned_model,
                "fine_tuning_job_id": job.id,
                "provider": job.provider,
                "base_model": base,
                "shutdown_date": date.isoformat(),
                "days_left": (date - today).days,
                "retired": is_retired(session, job, at),
                "suggested_target": suggested_target(base),
                "status": _progress(children),
                "successors": [
                    {"id": c.fine_tuned_model, "fine_tuning_job_id": c.id, "status": c.status}
                    for c in children
                ],
            }
        )
    return {
        "object": "migration_plan",
        "as_of": today.isoformat(),
        "within_days": within_days,
        "data": items,
    }
