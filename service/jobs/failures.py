"""Provider failures mapped to stable ftq codes, each with a sentence on what to do.

The job's ``error`` keeps OpenAI's shape (code, message, param) so SDK clients parse it;
the provider's raw error is kept beside it for support.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.providers.base import ErrorKind, ProviderError


@dataclass(frozen=True)
class FailureCode:
    code: str
    remediation: str


DATA_FORMAT = FailureCode(
    "data_format", "Fix the training data (see the file's validation report) and create a new job."
)
MODERATION_BLOCKED = FailureCode(
    "moderation_blocked", "Remove the flagged examples (see the validation report) and retry."
)
QUOTA_CONCURRENT = FailureCode(
    "quota_concurrent", "The provider's concurrent-job limit is reached; ftq retries automatically."
)
QUOTA_DAILY = FailureCode(
    "quota_daily", "The provider's daily job limit for this model is reached; retry tomorrow."
)
INSUFFICIENT_FUNDS = FailureCode(
    "insufficient_funds", "The provider account is out of credit; add funds or raise its limit."
)
PERMISSION = FailureCode(
    "permission", "The provider credentials lack access to fine-tuning; check key, org and project."
)
MODEL_UNAVAILABLE = FailureCode(
    "model_unavailable", "The base model cannot be fine-tuned by this provider; pick another model."
)
PROVIDER_UNAVAILABLE = FailureCode(
    "provider_unavailable",
    "The provider no longer accepts new fine-tuning jobs (OpenAI stops on 2027-01-06); "
    "choose another provider for this team.",
)
PROVIDER_INTERNAL = FailureCode(
    "provider_internal", "The provider failed internally; create the job again later."
)
INVALID_REQUEST = FailureCode(
    "invalid_request",
    "The provider refused the job as asked (see provider_error); fix the request and create a "
    "new job — retrying the same request will not help.",
)
WORKER_LOST = FailureCode(
    "worker_lost", "ftq's workers failed to submit this job repeatedly; operators have the logs."
)

_BY_PROVIDER_CODE = {
    "invalid_training_file": DATA_FORMAT,
    "invalid_validation_file": DATA_FORMAT,
    "invalid_file_format": DATA_FORMAT,
    "moderation_blocked": MODERATION_BLOCKED,
    "daily_rate_limit_exceeded": QUOTA_DAILY,
    "insufficient_quota": INSUFFICIENT_FUNDS,
    "billing_hard_limit_reached": INSUFFICIENT_FUNDS,
    "model_not_found": MODEL_UNAVAILABLE,
    "model_not_available": MODEL_UNAVAILABLE,
    "fine_tuning_unavailable": PROVIDER_UNAVAILABLE,
}


_CAPACITY_CODES = {"rate_limit_exceeded", "daily_rate_limit_exceeded", "concurrent_jobs_limit"}


def is_capacity_limit(error: ProviderError) -> bool:
    """A create refused because of concurrency or a daily cap: wait and retry, never fail."""
    if error.status_code != 429:
        return False
    return error.code in _CAPACITY_CODES or error.kind == ErrorKind.rate_limited


def classify(error: ProviderError) -> FailureCode:
    if error.code in _BY_PROVIDER_CODE:
        return _BY_PROVIDER_CODE[error.code]
    if error.kind == ErrorKind.rate_limited:
        return QUOTA_CONCURRENT
    if error.status_code in (401, 403):
        return PERMISSION
    if error.status_code is not None and error.status_code >= 500:
        return PROVIDER_INTERNAL
    if error.param in ("training_file", "validation_file"):
        return DATA_FORMAT
    if error.status_code is not None and 400 <= error.status_code < 500:
        # The provider said the request is wrong: the caller's to fix, not "try later".
        return INVALID_REQUEST
    return PROVIDER_INTERNAL


def job_error(
    failure: FailureCode, message: str, *, param: str | None = None, raw: Any = None
) -> dict[str, Any]:
    return {
        "code": failure.code,
        "message": f"{message} {failure.remediation}".strip(),
        "param": param,
        "provider_error": raw,
    }


def job_error_from_provider(error: ProviderError) -> dict[str, Any]:
    return job_error(classify(error), error.message, param=error.param, raw=error.raw)


def job_error_from_upstream(error: dict[str, Any]) -> dict[str, Any]:
    """An upstream job's own ``error`` (it failed at the provider)."""
    code = error.get("code")
    failure = _BY_PROVIDER_CODE.get(code or "")
    if failure is None:
        if error.get("param") in ("training_file", "validation_file"):
            failure = DATA_FORMAT
        elif code in ("invalid_request_error", "invalid_value", "invalid_hyperparameters"):
            failure = INVALID_REQUEST
        else:
            failure = PROVIDER_INTERNAL
    return job_error(failure, error.get("message") or "", param=error.get("param"), raw=error)
