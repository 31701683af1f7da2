"""Re-training elsewhere in one call: ``retrain_of`` on a job create replays a job's data and
method on another provider and records the parent.

The rule: what the request gives wins; what it leaves out comes from the parent — training
and validation files, method (mapped between providers, below), seed, suffix, metadata and
the evaluation gate (so the same eval runs on both models and the registry reports the
difference). The parent is found by job id or model name within the caller's team only;
another team's id reads as a missing one.

Method mapping (docs/leaving-openai.md):
  supervised -> local: lora (ftq's default rank and alpha), hyperparameters kept
  dpo        -> local: dpo with a lora section, beta and hyperparameters kept
  full/freeze/lora -> an upstream provider: supervised, epochs/batch/lr multiplier kept
  reinforcement: no provider but OpenAI offers it; refused (give ``method`` explicitly)
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from service.config import get_settings
from service.errors import InvalidRequest
from service.jobs.models import FineTuningJob, JobCheckpoint
from service.jobs.schemas import LOCAL_METHOD_TYPES, CreateJobInput, Method

SHARED_HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")


def find_parent(session: Session, team_id: str, ref: str) -> FineTuningJob:
    job = (
        session.exec(
            select(FineTuningJob).where(FineTuningJob.team_id == team_id, FineTuningJob.id == ref)
        ).first()
        or session.exec(
            select(FineTuningJob).where(
                FineTuningJob.team_id == team_id, FineTuningJob.fine_tuned_model == ref
            )
        ).first()
    )
    if job is None:
        checkpoint = session.exec(
            select(JobCheckpoint)
            .join(FineTuningJob, JobCheckpoint.job_id == FineTuningJob.id)  # type: ignore[arg-type]
            .where(
                FineTuningJob.team_id == team_id,
                JobCheckpoint.fine_tuned_model_checkpoint == ref,
            )
        ).first()
        job = session.get(FineTuningJob, checkpoint.job_id) if checkpoint else None
    if job is None:
        raise InvalidRequest(
            f"retrain_of '{ref}' is neither a fine-tuning job nor a model of your team.",
            param="retrain_of",
            code="retrain_source_not_found",
        )
    return job


def _hyper_of(stored: dict[str, Any] | None, top: dict[str, Any] | None) -> dict[str, Any]:
    kind = (stored or {}).get("type", "supervised")
    section = (stored or {}).get(kind) or {}
    hyper = dict(section.get("hyperparameters") or top or {})
    return {k: v for k, v in hyper.items() if v is not None}


def map_method(
    stored: dict[str, Any] | None, top: dict[str, Any] | None, *, to_local: bool
) -> dict[str, Any]:
    """The parent's stored method as the target provider takes it."""
    kind = (stored or {}).get("type", "supervised")
    hyper = _hyper_of(stored, top)
    shared = {k: v for k, v in hyper.items() if k in SHARED_HYPERPARAMETERS}
    if kind == "reinforcement":
        raise InvalidRequest(
            "The parent used reinforcement fine-tuning, which no provider other than OpenAI "
            "offers; give method explicitly (e.g. supervised or dpo on a graded dataset).",
            param="method",
            code="invalid_method",
        )
    if to_local:
        if kind == "supervised":
            return {"type": "lora", "lora": {"hyperparameters": shared}}
        if kind == "dpo":
            beta = {"beta": hyper["beta"]} if "beta" in hyper else {}
            return {"type": "dpo", "dpo": {"hyperparameters": {**shared, **beta}}}
        return {"type": kind, kind: dict((stored or {}).get(kind) or {})}
    if kind in LOCAL_METHOD_TYPES:
        return {"type": "supervised", "supervised": {"hyperparameters": shared}}
    if kind == "dpo":
        return {"type": "dpo", "dpo": {"hyperparameters": hyper}}
    return {"type": "supervised", "supervised": {"hyperparameters": shared}}


def resolve(
    session: Session, team_id: str, request: CreateJobInput
) -> tuple[CreateJobInput, str | None]:
    """The request with the parent's data and method filled in, and the parent's id."""
    if not request.retrain_of:
        if not request.training_file:
            raise InvalidRequest(
                "Missing required parameter: 'training_file'.", param="training_file"
            )
        return request, None
    parent = find_parent(session, team_id, request.retrain_of)
    to_local = request.provider == "local" or (
        request.provider is None and request.model in get_settings().local.allowed_base_models
    )
    update: dict[str, Any] = {
        "training_file": request.training_file or parent.training_file_id,
        "validation_file": request.validation_file or parent.validation_file_id,
        "seed": request.seed if request.seed is not None else parent.seed,
        "suffix": request.suffix or parent.suffix,
        "metadata": {**(parent.user_metadata or {}), **(request.metadata or {})} or None,
        "evaluation": request.evaluation or parent.evaluation_config,
    }
    if request.method is None:
        try:
            update["method"] = Method.model_validate(
                map_method(parent.method, parent.hyperparameters, to_local=to_local)
            )
        except ValueError as exc:
            raise InvalidRequest(
                f"The parent's method cannot be replayed here: {exc}", param="method"
            ) from exc
        update["hyperparameters"] = None
    return request.model_copy(update=update), parent.id
