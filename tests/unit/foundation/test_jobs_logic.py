from __future__ import annotations

import random

import pytest

from api.errors import _param_from_loc
from service.jobs import failures
from service.jobs.schemas import CreateJobInput
from service.jobs.tracking import next_interval
from service.providers.base import ErrorKind, ProviderError


def test_poll_interval_doubles_while_unchanged_and_resets_on_change() -> None:
    rng = random.Random(7)
    first = next_interval(None, changed=False, rng=rng)
    assert 15 * 0.8 <= first <= 15 * 1.2
    grown = next_interval(60.0, changed=False, rng=rng)
    assert 120 * 0.8 <= grown <= 120 * 1.2
    capped = next_interval(10_000.0, changed=False, rng=rng)
    assert capped <= 600 * 1.2
    reset = next_interval(400.0, changed=True, rng=rng)
    assert reset <= 15 * 1.2


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (
            ProviderError(
                "x",
                kind=ErrorKind.permanent,
                status_code=400,
                code="invalid_training_file",
                param="training_file",
            ),
            "data_format",
        ),
        (
            ProviderError(
                "x", kind=ErrorKind.permanent, status_code=429, code="daily_rate_limit_exceeded"
            ),
            "quota_daily",
        ),
        (
            ProviderError(
                "x", kind=ErrorKind.permanent, status_code=429, code="insufficient_quota"
            ),
            "insufficient_funds",
        ),
        (
            ProviderError(
                "x", kind=ErrorKind.rate_limited, status_code=429, code="rate_limit_exceeded"
            ),
            "quota_concurrent",
        ),
        (
            ProviderError(
                "x", kind=ErrorKind.permanent, status_code=403, code="fine_tuning_unavailable"
            ),
            "provider_unavailable",
        ),
        (ProviderError("x", kind=ErrorKind.permanent, status_code=401), "permission"),
        (ProviderError("x", kind=ErrorKind.transient, status_code=503), "provider_internal"),
        # A provider 400 (e.g. a reinforcement job without a grader) is the caller's to fix.
        (
            ProviderError("x", kind=ErrorKind.permanent, status_code=400, param="method"),
            "invalid_request",
        ),
    ],
)
def test_provider_errors_map_to_stable_codes(error: ProviderError, code: str) -> None:
    mapped = failures.job_error_from_provider(error)
    assert mapped["code"] == code
    assert mapped["message"].startswith("x ")  # the provider's words, then what to do


def test_create_input_rejects_reserved_and_oversized_metadata() -> None:
    base = {"model": "gpt-4o-mini", "training_file": "file-1"}
    with pytest.raises(ValueError):
        CreateJobInput.model_validate({**base, "metadata": {"ftq_job_id": "spoof"}})
    with pytest.raises(ValueError):
        CreateJobInput.model_validate({**base, "metadata": {"k": "v" * 513}})
    assert CreateJobInput.model_validate({**base, "metadata": {"k": "v"}}).metadata == {"k": "v"}


def test_error_param_is_the_field_path_without_union_tags() -> None:
    assert (
        _param_from_loc(("body", "hyperparameters", "n_epochs", "constrained-int"))
        == "hyperparameters.n_epochs"
    )
    assert _param_from_loc(("body", "method", "type")) == "method.type"
    assert _param_from_loc(("body",)) is None


@pytest.mark.parametrize(
    "body",
    [
        # top-level and method hyperparameters that disagree: the job would show one value
        # and train with the other
        {
            "hyperparameters": {"n_epochs": 3},
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 4}}},
        },
        # top-level hyperparameters for a method they do not apply to
        {"hyperparameters": {"n_epochs": 3}, "method": {"type": "dpo", "dpo": {}}},
        # a reinforcement job needs its grader
        {"method": {"type": "reinforcement"}},
        # a section for another type than the one named
        {"method": {"type": "supervised", "dpo": {"hyperparameters": {"beta": 0.1}}}},
        {"suffix": "my:model"},
        {"suffix": "two words"},
        {"hyperparameters": {"learning_rate_multiplier": float("inf")}},
        {"hyperparameters": {"learning_rate_multiplier": 0}},
    ],
)
def test_create_input_refuses_requests_the_provider_would_refuse(body: dict) -> None:
    with pytest.raises(ValueError):
        CreateJobInput.model_validate({"model": "gpt-4o-mini", "training_file": "file-1", **body})


def test_create_input_accepts_agreeing_hyperparameters() -> None:
    request = CreateJobInput.model_validate(
        {
            "model": "gpt-4o-mini",
            "training_file": "file-1",
            "hyperparameters": {"n_epochs": 3},
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}},
            "suffix": "support-bot_v2.1",
        }
    )
    assert request.method is not None and request.suffix == "support-bot_v2.1"
