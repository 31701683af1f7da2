"""The registry's view of a team's models: where each fine-tune came from and when it ends.

A fine-tune's entry is OpenAI's ``model`` object plus ftq's extensions: ``provider``,
``base_model``, ``shutdown_date``, ``retired``, ``parent`` (the model it was re-trained from)
and, on ``GET /v1/models/{id}``, the full ``lineage``: the job, provider and account, method
and hyperparameters, the training and validation files with their sha256, trained tokens,
cost, the evaluation verdict, checkpoints, successors and the comparison with the parent.
Everything is read from the job rows; nothing here calls a provider except for the
(cached) model list that carries shutdown dates.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlmodel import Session, col, select

from service.errors import NotFound
from service.files.models import File
from service.jobs import inference
from service.jobs.budgets import actual_cost
from service.jobs.models import FineTuningJob, JobCheckpoint
from service.providers.registry import provider_for_team
from service.registry import clock
from service.registry.comparison import compare_with_parent
from service.registry.models import ModelNotice
from service.registry.shutdown import (
    base_of,
    configured_shutdown,
    kind_of_job,
    kind_of_provider,
    shutdown_date,
)

RETIRED = "retired"


def _file(session: Session, file_id: str | None) -> dict[str, Any] | None:
    record = session.get(File, file_id) if file_id else None
    if record is None:
        return None
    return {
        "id": record.id,
        "filename": record.filename,
        "bytes": record.bytes,
        "sha256": record.sha256,
        "deleted": record.deleted_at is not None,
    }


def _model_ref(job: FineTuningJob) -> dict[str, Any]:
    return {
        "id": job.fine_tuned_model,
        "fine_tuning_job_id": job.id,
        "provider": job.provider,
        "base_model": base_of(job.model),
        "status": job.status,
    }


def is_retired(
    session: Session,
    job: FineTuningJob,
    at: dt.datetime | None = None,
    *,
    ask_provider: bool = True,
) -> bool:
    """Retired: the registry announced it, or its shutdown date has come."""
    if (
        job.fine_tuned_model
        and session.exec(
            select(ModelNotice.pk).where(
                ModelNotice.team_id == job.team_id,
                ModelNotice.model == job.fine_tuned_model,
                ModelNotice.notice == RETIRED,
            )
        ).first()
    ):
        return True
    date = shutdown_date(session, job, ask_provider=ask_provider)
    return date is not None and date <= clock.today(at)


def successors(session: Session, job: FineTuningJob) -> list[FineTuningJob]:
    return list(
        session.exec(
            select(FineTuningJob)
            .where(FineTuningJob.team_id == job.team_id, FineTuningJob.parent_job_id == job.id)
            .order_by(col(FineTuningJob.created_at))
        )
    )


def summary(session: Session, job: FineTuningJob, entry: dict[str, Any]) -> dict[str, Any]:
    """A fine-tune's list entry: the inference listing's fields plus ftq's registry ones."""
    date = shutdown_date(session, job)
    parent = session.get(FineTuningJob, job.parent_job_id) if job.parent_job_id else None
    return {
        **entry,
        "shutdown_date": date.isoformat() if date else None,
        "retired": is_retired(session, job),
        "provider": job.provider,
        "provider_kind": kind_of_job(session, job),
        "base_model": base_of(job.model),
        "parent": _model_ref(parent) if parent and parent.team_id == job.team_id else None,
    }


def lineage(session: Session, job: FineTuningJob) -> dict[str, Any]:
    parent = session.get(FineTuningJob, job.parent_job_id) if job.parent_job_id else None
    if parent is not None and parent.team_id != job.team_id:
        parent = None
    checkpoints = session.exec(
        select(JobCheckpoint)
        .where(JobCheckpoint.job_id == job.id)
        .order_by(col(JobCheckpoint.step_number))
    )
    return {
        "fine_tuning_job_id": job.id,
        "provider": job.provider,
        "provider_kind": kind_of_job(session, job),
        "account": job.account,
        "base_model": base_of(job.model),
        "model": job.model,
        "method": job.method,
        "hyperparameters": job.hyperparameters,
        "seed": job.seed,
        "training_file": _file(session, job.training_file_id),
        "validation_file": _file(session, job.validation_file_id),
        "trained_tokens": job.trained_tokens,
        # The provider's metrics CSV, and for local jobs the weights (service.registry.export).
        "result_files": [
            _file(session, file_id) or {"id": file_id} for file_id in job.result_files or []
        ],
        "cost_usd": actual_cost(job),
        "created_at": int(job.created_at.timestamp()),
        "finished_at": int(job.finished_at.timestamp()) if job.finished_at else None,
        "evaluation": job.evaluation,
        "checkpoints": [
            {
                "id": c.id,
                "model": c.fine_tuned_model_checkpoint,
                "step_number": c.step_number,
                "metrics": c.metrics,
            }
            for c in checkpoints
        ],
        "parent": _model_ref(parent) if parent else None,
        "successors": [_model_ref(s) for s in successors(session, job)],
        "comparison_with_parent": compare_with_parent(session, job, parent) if parent else None,
    }


def _job_of(session: Session, team_id: str, model: str) -> FineTuningJob | None:
    return session.exec(
        select(FineTuningJob).where(
            FineTuningJob.team_id == team_id, FineTuningJob.fine_tuned_model == model
        )
    ).first()


def list_entries(
    session: Session,
    team_id: str,
    *,
    provider: str | None = None,
    base_model: str | None = None,
    shuts_down_before: dt.date | None = None,
) -> list[dict[str, Any]]:
    """``GET /v1/models`` with ftq's filters (each optional, all must hold)."""
    team_kind = kind_of_provider(provider_for_team(session, team_id))
    result = []
    for entry in inference.list_models(session, team_id):
        job = _job_of(session, team_id, entry["id"]) if entry.get("fine_tuning_job_id") else None
        if job is not None:
            entry = summary(session, job, entry)
        else:
            local = entry.get("owned_by") == "ftq-local"
            entry = {
                **entry,
                "provider": "local" if local else team_kind,
                "provider_kind": "local" if local else team_kind,
                "base_model": entry["id"],
            }
            if not local and entry.get("shutdown_date") is None:
                date = configured_shutdown(team_kind, entry["id"])
                entry["shutdown_date"] = date.isoformat() if date else None
        if provider and provider not in (entry.get("provider"), entry.get("provider_kind")):
            continue
        if base_model and entry.get("base_model") != base_model:
            continue
        if shuts_down_before:
            date_text = entry.get("shutdown_date")
            if not date_text or dt.date.fromisoformat(date_text[:10]) >= shuts_down_before:
                continue
        result.append(entry)
    return result


def retrieve(session: Session, team_id: str, model: str) -> dict[str, Any]:
    """``GET /v1/models/{id}``: a fine-tune with its lineage, or a listed base model."""
    job = _job_of(session, team_id, model)
    if job is not None:
        for entry in inference.list_models(session, team_id):
            if entry["id"] == model:
                return {**summary(session, job, entry), "lineage": lineage(session, job)}
    for entry in list_entries(session, team_id):
        if entry["id"] == model:
            return entry
    raise NotFound(f"The model '{model}' does not exist", param="model", code="model_not_found")
