"""Jobs, events and checkpoints as OpenAI objects (plus ftq's added fields)."""

from __future__ import annotations

from typing import Any

from service.jobs.budgets import actual_cost
from service.jobs.models import FineTuningJob, JobCheckpoint, JobEvent


def _ts(value: Any) -> int | None:
    return int(value.timestamp()) if value is not None else None


def job_object(job: FineTuningJob, *, queue_position: int | None = None) -> dict[str, Any]:
    hyper = job.hyperparameters or {}
    return {
        "id": job.id,
        "object": "fine_tuning.job",
        "created_at": _ts(job.created_at),
        "error": job.error,
        "fine_tuned_model": job.fine_tuned_model,
        "finished_at": _ts(job.finished_at),
        "hyperparameters": {
            "batch_size": hyper.get("batch_size", "auto"),
            "learning_rate_multiplier": hyper.get("learning_rate_multiplier", "auto"),
            "n_epochs": hyper.get("n_epochs", "auto"),
        },
        "model": job.model,
        "organization_id": job.team_id,
        "result_files": job.result_files or [],
        "seed": job.seed,
        "status": job.status,
        "trained_tokens": job.trained_tokens,
        "training_file": job.training_file_id,
        "validation_file": job.validation_file_id,
        "integrations": job.integrations,
        "estimated_finish": job.estimated_finish,
        "method": job.method,
        "metadata": job.user_metadata,
        # ftq's added fields; SDK clients keep them in model_extra.
        "stage": job.stage,
        "queue_position": queue_position,
        "priority": job.priority,
        "provider": job.provider,
        "sequence": job.sequence,
        # What the provider bills for (trained tokens at the configured price).
        "cost_usd": actual_cost(job),
        "estimated_cost_usd": job.estimated_cost_usd,
    }


def event_object(event: JobEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "object": "fine_tuning.job.event",
        "created_at": event.created_at,
        "level": event.level,
        "message": event.message,
        "type": event.type,
        "data": event.data,
    }


def checkpoint_object(checkpoint: JobCheckpoint) -> dict[str, Any]:
    return {
        "id": checkpoint.id,
        "object": "fine_tuning.job.checkpoint",
        "created_at": checkpoint.created_at,
        "fine_tuned_model_checkpoint": checkpoint.fine_tuned_model_checkpoint,
        "fine_tuning_job_id": checkpoint.job_id,
        "metrics": checkpoint.metrics or {},
        "step_number": checkpoint.step_number,
    }
