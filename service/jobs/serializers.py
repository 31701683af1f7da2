"""Jobs, events and checkpoints as their wire objects (``service.jobs.wire``).

The same objects answer the API and fill webhook ``data``: ``*_wire`` builds the typed
object from a row, ``*_object`` its JSON-ready dump for payloads stored as JSON.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from service.jobs.budgets import actual_cost
from service.jobs.models import FineTuningJob, JobCheckpoint, JobEvent
from service.jobs.wire import (
    CheckpointMetrics,
    FineTuningJobCheckpointObject,
    FineTuningJobEventObject,
    FineTuningJobObject,
    Hyperparameters,
    JobError,
    JobMethod,
)


def _ts(value: dt.datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def job_wire(job: FineTuningJob, *, queue_position: int | None = None) -> FineTuningJobObject:
    hyper = job.hyperparameters or {}
    created_at = _ts(job.created_at)
    assert created_at is not None
    return FineTuningJobObject(
        id=job.id,
        created_at=created_at,
        error=JobError.model_validate(job.error) if job.error else None,
        fine_tuned_model=job.fine_tuned_model,
        finished_at=_ts(job.finished_at),
        hyperparameters=Hyperparameters(
            batch_size=hyper.get("batch_size", "auto"),
            learning_rate_multiplier=hyper.get("learning_rate_multiplier", "auto"),
            n_epochs=hyper.get("n_epochs", "auto"),
        ),
        model=job.model,
        organization_id=job.team_id,
        result_files=job.result_files or [],
        seed=job.seed,
        status=job.status,  # type: ignore[arg-type]  # a JobStatus value; validated here
        trained_tokens=job.trained_tokens,
        training_file=job.training_file_id,
        validation_file=job.validation_file_id,
        integrations=job.integrations,
        estimated_finish=job.estimated_finish,
        method=JobMethod.model_validate(job.method) if job.method else None,
        metadata=job.user_metadata,
        stage=job.stage,
        queue_position=queue_position,
        priority=job.priority,
        provider=job.provider,
        sequence=job.sequence,
        cost_usd=actual_cost(job),
        estimated_cost_usd=job.estimated_cost_usd,
        cancel_requested=job.cancel_requested,
        evaluation=job.evaluation,
    )


def job_object(job: FineTuningJob, *, queue_position: int | None = None) -> dict[str, Any]:
    return job_wire(job, queue_position=queue_position).model_dump(mode="json")


# Providers' events are copied as they come; a level or type outside OpenAI's enums (a
# compatible server's "warning", "debug") is shown as its nearest OpenAI value.
_LEVELS: dict[str, Literal["info", "warn", "error"]] = {
    "info": "info",
    "warn": "warn",
    "warning": "warn",
    "error": "error",
}


def event_wire(event: JobEvent) -> FineTuningJobEventObject:
    return FineTuningJobEventObject(
        id=event.id,
        created_at=event.created_at,
        level=_LEVELS.get(event.level, "info"),
        message=event.message,
        type="metrics" if event.type == "metrics" else "message",
        data=event.data,
    )


def event_object(event: JobEvent) -> dict[str, Any]:
    return event_wire(event).model_dump(mode="json")


def checkpoint_wire(checkpoint: JobCheckpoint) -> FineTuningJobCheckpointObject:
    return FineTuningJobCheckpointObject(
        id=checkpoint.id,
        created_at=checkpoint.created_at,
        fine_tuned_model_checkpoint=checkpoint.fine_tuned_model_checkpoint,
        fine_tuning_job_id=checkpoint.job_id,
        metrics=CheckpointMetrics.model_validate(checkpoint.metrics or {}),
        step_number=checkpoint.step_number,
    )


def checkpoint_object(checkpoint: JobCheckpoint) -> dict[str, Any]:
    return checkpoint_wire(checkpoint).model_dump(mode="json")
