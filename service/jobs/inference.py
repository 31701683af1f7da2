"""Calling a fine-tuned model: a team reaches only the models its own jobs produced."""

from __future__ import annotations

from sqlmodel import Session

from service.errors import FtqError, InvalidRequest, NotFound, RateLimited, UpstreamError
from service.jobs.service import find_model_owner
from service.providers.base import ErrorKind, Provider, ProviderError
from service.providers.registry import provider_for_account


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
