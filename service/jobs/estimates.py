"""Tokens, epochs and money for a job, before anything is spent."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from service.config import get_settings
from service.errors import Conflict, InvalidRequest
from service.files.reports import report_for_model
from service.files.validation.estimate import estimate_for_job
from service.jobs.runners import choose
from service.jobs.schemas import CreateJobInput, requested_epochs
from service.jobs.service import _usable_file


def estimate(session: Session, team_id: str, request: CreateJobInput) -> dict[str, Any]:
    # A re-train estimates the parent's data and method, exactly as its create would run.
    from service.registry.retrain import resolve as resolve_retrain

    request, _ = resolve_retrain(session, team_id, request)
    provider = choose(session, team_id, request).check_request(session, team_id, request)
    training = _usable_file(session, team_id, request.training_file, "training_file")
    if training.validation_status in ("pending", "running"):
        raise Conflict(
            f"File {training.id} is still being validated; retry in a few seconds.",
            param="training_file",
            code="validation_pending",
            headers={"Retry-After": "2"},
        )
    if training.validation_status != "completed" or not training.report:
        raise InvalidRequest(
            f"File {training.id} could not be validated; "
            f"see GET /v1/files/{training.id}/validation.",
            param="training_file",
            code="validation_failed",
        )
    # The stored report as it applies to this model and method (encoding, context limit,
    # price, format fit), as the estimate's note promises.
    report = report_for_model(
        training,
        request.model,
        request.method.type if request.method else None,
        local=provider.name == "local",
    )
    result = estimate_for_job(
        report, request.model, requested_epochs(request), get_settings().validation
    )
    return {
        "object": "fine_tuning.job.estimate",
        "training_file": training.id,
        "verdict": report.verdict,
        "validation_report": f"/v1/files/{training.id}/validation",
        **result.model_dump(mode="json"),
    }
