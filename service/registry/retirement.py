"""Calling a retired fine-tune: a clear 404 ``model_retired`` that names its re-trained
successor (the newest that succeeded) when there is one, instead of the provider's bare
"model not found" — or a late failure after the shutdown date."""

from __future__ import annotations

from sqlmodel import Session, col, select

from service.errors import NotFound
from service.jobs.models import JobStatus
from service.jobs.service import find_model_owner
from service.registry.lineage import RETIRED, is_retired, successors
from service.registry.models import ModelNotice
from service.registry.shutdown import shutdown_date


def refuse_if_retired(session: Session, team_id: str, model: str) -> None:
    job = find_model_owner(session, team_id, model)
    # Configuration and recorded notices only: an inference call never waits on the
    # provider's model list (beat reads it and records the retirement on the day).
    if job is None or job.provider == "local" or not is_retired(session, job, ask_provider=False):
        return
    notice = session.exec(
        select(col(ModelNotice.shutdown_date)).where(
            ModelNotice.team_id == team_id,
            ModelNotice.model == job.fine_tuned_model,
            ModelNotice.notice == RETIRED,
        )
    ).first()
    date = notice or shutdown_date(session, job, ask_provider=False)
    when = f" on {date.isoformat()}" if date else ""
    ready = [s for s in successors(session, job) if s.status == JobStatus.succeeded]
    if ready:
        successor = ready[-1]
        hint = (
            f" Its re-trained successor is '{successor.fine_tuned_model}' "
            f"(job {successor.id}, provider {successor.provider}); call that model instead."
        )
    else:
        hint = (
            " It has no re-trained successor yet: create one with "
            f"extra_body={{'retrain_of': '{job.id}', 'provider': …}} (see GET /v1/migration_plan)."
        )
    raise NotFound(
        f"The model '{model}' was retired{when}: its base model {job.model} shut down at "
        f"its provider.{hint}",
        param="model",
        code="model_retired",
    )
