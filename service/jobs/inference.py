"""Calling a fine-tuned model: a team reaches only the models its own jobs produced."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import structlog
from sqlmodel import Session, select

from service.config import get_settings
from service.errors import NotFound
from service.jobs.models import FineTuningJob
from service.jobs.service import find_model_owner
from service.providers.base import InferenceProvider, Provider, ProviderError
from service.providers.errors import api_error_from_provider  # noqa: F401  (re-exported)
from service.providers.local import vllm
from service.providers.registry import default_provider, provider_for_account, provider_for_team

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
    result.extend(
        {
            "id": model,
            "object": "model",
            "created": 0,
            "owned_by": "ftq-local",
            "shutdown_date": None,
        }
        for model in local_base_models()
        if model not in get_settings().fine_tunable_models
    )
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
                # The evaluation gate's verdict (promoted/rejected), once it has run.
                "evaluation": _verdict_summary(job.evaluation),
            }
        )
    return result


def local_base_models() -> list[str]:
    """Open-weight base models the local provider serves (its allow-list)."""
    return sorted(get_settings().local.allowed_base_models)


def base_models() -> list[str]:
    """Every base model ``GET /v1/models`` lists; each answers through the team's provider."""
    listed = list(get_settings().fine_tunable_models)
    return listed + [m for m in local_base_models() if m not in listed]


def _verdict_summary(evaluation: dict[str, Any] | None) -> dict[str, Any] | None:
    if not evaluation:
        return None
    return {
        "verdict": evaluation.get("verdict"),
        "eval_id": evaluation.get("eval_id"),
        "criterion": evaluation.get("criterion"),
        "delta": evaluation.get("delta"),
    }


def provider_for_model(session: Session, team_id: str, model: str) -> InferenceProvider:
    """The provider that serves ``model`` to this team: a fine-tune or checkpoint of its own
    jobs through the account that trained it, a listed base model through the team's
    provider (the local provider for the local allow-list); anything else is a 404."""
    job = find_model_owner(session, team_id, model)
    if job is not None:
        return provider_for_account(job.account, session=session)
    if model in get_settings().local.allowed_base_models:
        return provider_for_account("local", session=session)
    if model in get_settings().fine_tunable_models:
        return provider_for_team(session, team_id)
    raise NotFound(
        f"The model '{model}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def _local_model_directory(model: str) -> Path | None:
    """Where a succeeded local fine-tune is served from (for the vLLM adapter loader)."""
    from service.db import session_scope
    from service.jobs.runners.local import model_dir_for

    with session_scope() as session:
        return model_dir_for(session, model)


vllm.register_model_directory(_local_model_directory)
