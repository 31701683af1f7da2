"""Calling a fine-tuned model: a team reaches only the models its own jobs produced."""

from __future__ import annotations

import time
from typing import Any

import structlog
from sqlmodel import Session, select

from service.config import get_settings
from service.errors import FtqError, InvalidRequest, NotFound, RateLimited, UpstreamError
from service.jobs.models import FineTuningJob
from service.jobs.service import find_model_owner
from service.providers.base import ErrorKind, Provider, ProviderError
from service.providers.registry import default_provider, provider_for_account

log = structlog.get_logger(__name__)

_CATALOGUE_TTL_SECONDS = 300.0
_catalogue: dict[str, tuple[float, dict[str, dict[str, Any]]]] = {}


def provider_models(provider: Provider) -> dict[str, dict[str, Any]]:
    """The provider's model list (for shutdown dates), cached for a few minutes."""
    cached = _catalogue.get(provider.account)
    if cached and time.monotonic() - cached[0] < _CATALOGUE_TTL_SECONDS:
        return cached[1]
    try:
        models = {m["id"]: m for m in provider.list_models()}
    except ProviderError as error:
        log.warning("model_list_unavailable", error=error.message)
        return cached[1] if cached else {}
    _catalogue[provider.account] = (time.monotonic(), models)
    return models


def _base_of(model: str) -> str:
    return model.split(":")[1] if model.startswith("ft:") and model.count(":") >= 2 else model


def list_models(session: Session, team_id: str) -> list[dict[str, Any]]:
    """Configured base models and the team's fine-tuned models, with shutdown dates."""
    catalogue = provider_models(default_provider())

    def shutdown(model: str) -> str | None:
        return (catalogue.get(model) or {}).get("shutdown_date")

    result = [
        {
            "id": model,
            "object": "model",
            "created": (catalogue.get(model) or {}).get("created", 0),
            "owned_by": (catalogue.get(model) or {}).get("owned_by", "system"),
            "shutdown_date": shutdown(model),
        }
        for model in get_settings().fine_tunable_models
    ]
    jobs = session.exec(
        select(FineTuningJob)
        .where(FineTuningJob.team_id == team_id, FineTuningJob.fine_tuned_model.is_not(None))  # type: ignore[union-attr]
        .order_by(FineTuningJob.created_at)  # type: ignore[arg-type]
    )
    for job in jobs:
        assert job.fine_tuned_model is not None
        result.append(
            {
                "id": job.fine_tuned_model,
                "object": "model",
                "created": int((job.finished_at or job.created_at).timestamp()),
                "owned_by": team_id,
                # A fine-tune stops working when its base model shuts down.
                "shutdown_date": shutdown(_base_of(job.model)) or shutdown(job.model),
                "fine_tuning_job_id": job.id,
            }
        )
    return result


def provider_for_model(session: Session, team_id: str, model: str) -> Provider:
    job = find_model_owner(session, team_id, model)
    if job is None:
        raise NotFound(
            f"The model '{model}' does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    return provider_for_account(job.account, session=session)


def api_error_from_provider(error: ProviderError) -> FtqError:
    """What the caller sees when the provider refuses or fails an inference call."""
    if error.kind == ErrorKind.rate_limited:
        headers = {"Retry-After": str(int(error.retry_after or 1))}
        return RateLimited(error.message, code=error.code, headers=headers)
    if (
        error.status_code is not None
        and 400 <= error.status_code < 500
        and error.status_code != 404
    ):
        return InvalidRequest(error.message, param=error.param, code=error.code)
    return UpstreamError(
        f"The provider failed: {error.message}", code=error.code or "provider_error"
    )
