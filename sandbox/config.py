"""Runtime configuration of the sandbox: job timings and fault injection.

Every field can be set from an environment variable named ``SANDBOX_<FIELD>`` (upper case),
changed live through ``PUT /sandbox/config`` and restored with ``POST /sandbox/reset``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ENV_PREFIX = "SANDBOX_"

DEFAULT_FINE_TUNABLE_MODELS: tuple[str, ...] = (
    "gpt-4o-mini-2024-07-18",
    "gpt-4o-2024-08-06",
    "gpt-4.1-2025-04-14",
    "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano-2025-04-14",
    "gpt-3.5-turbo-0125",
    "babbage-002",
    "davinci-002",
    "gpt-4o-mini",
    "gpt-4.1-mini",
)


class SandboxConfig(BaseModel):
    """Timings (before division by ``job_speed``) and faults of one sandbox process."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- job timings; every duration is divided by job_speed -------------------------------
    job_speed: float = Field(1.0, gt=0)
    validating_seconds: float = Field(2.0, ge=0)
    queued_seconds: float = Field(2.0, ge=0)
    step_seconds: float = Field(0.5, ge=0)
    # None derives steps per epoch from examples / batch size, capped by max_steps_per_epoch.
    steps_per_epoch: int | None = Field(None, ge=1)
    max_steps_per_epoch: int = Field(3, ge=1)
    # Caps the running phase so the cookbook's many-epochs rule for tiny datasets stays quick.
    max_running_seconds: float = Field(10.0, ge=0)
    fine_tunable_models: list[str] = Field(
        default_factory=lambda: list(DEFAULT_FINE_TUNABLE_MODELS)
    )
    min_training_examples: int = Field(10, ge=1)

    # --- faults, applied to /v1 requests only ------------------------------------------------
    error_rate_429: float = Field(0.0, ge=0, le=1)
    error_rate_500: float = Field(0.0, ge=0, le=1)
    drop_rate: float = Field(0.0, ge=0, le=1)
    # "before": the request never reaches the app; "after": it is processed, then dropped.
    drop_mode: Literal["before", "after"] = "before"
    retry_after_seconds: float = Field(1.0, ge=0)
    slow_rate: float = Field(0.0, ge=0, le=1)
    slow_seconds: float = Field(0.0, ge=0)
    fault_paths: str | None = None
    fault_seed: int | None = None
    hold_create_seconds: float = Field(0.0, ge=0)
    max_active_jobs: int | None = Field(None, ge=0)
    refuse_new_jobs: bool = False
    # Malformed answers: moderation returns this many fewer results than it got inputs.
    moderation_missing_results: int = Field(0, ge=0)

    @field_validator("fine_tunable_models", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("fault_paths")
    @classmethod
    def _check_regex(cls, value: str | None) -> str | None:
        import re

        if value:
            re.compile(value)
        return value or None

    def scaled(self, seconds: float) -> float:
        return seconds / self.job_speed

    def updated(self, patch: Mapping[str, Any]) -> SandboxConfig:
        """A validated copy with ``patch`` applied (raises pydantic.ValidationError)."""
        return SandboxConfig.model_validate({**self.model_dump(), **patch})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SandboxConfig:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = environ.get(ENV_PREFIX + name.upper())
            if not raw:
                continue
            values[name] = raw if name in _RAW_STRING_FIELDS else _parse_env_value(raw)
        return cls.model_validate(values)


# Fields whose values must never be JSON-decoded (a regex such as "123" is still a regex).
_RAW_STRING_FIELDS = frozenset({"fault_paths", "drop_mode"})


def _parse_env_value(raw: str) -> Any:
    # JSON covers numbers, booleans, null and lists; anything else (a comma list) stays a
    # string for pydantic to coerce.
    try:
        return json.loads(raw)
    except ValueError:
        return raw
