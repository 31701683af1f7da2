"""Model registry settings (``FTQ_REGISTRY__*``): shutdown dates, job cut-offs, replacements.

Provider kinds are ftq's names for where a job trains: ``openai`` (api.openai.com only),
``openai_compatible`` (any other base URL spoken to through the SDK, the sandbox included),
``azure_openai``, ``together`` and ``local``.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field


def _openai_shutdowns() -> dict[str, dict[str, dt.date]]:
    # openai-contract.md §0: the gpt-4o and gpt-4.1 families and every fine-tune built on
    # them shut down on 2027-01-14; gpt-3.5-turbo and gpt-4.1-nano already did (2026-10-23).
    late = dt.date(2027, 1, 14)
    early = dt.date(2026, 10, 23)
    return {
        "openai": {
            "gpt-4o": late,
            "gpt-4.1": late,
            "gpt-4.1-nano": early,
            "gpt-3.5-turbo": early,
        }
    }


class RegistrySettings(BaseModel):
    # Base-model shutdown dates by provider kind, matched by the longest name prefix
    # (``gpt-4o`` covers ``gpt-4o-mini-2024-07-18``). The provider's own model list wins
    # when it reports a date; these fill in when it does not.
    shutdown_dates: dict[str, dict[str, dt.date]] = Field(default_factory=_openai_shutdowns)
    # The last day (exclusive) a provider kind accepts new fine-tuning jobs.
    provider_cutoffs: dict[str, dt.date] = Field(
        default_factory=lambda: {"openai": dt.date(2027, 1, 6)}
    )
    # Operator's suggested replacement per base model (longest prefix), as
    # "<provider>:<base model>", e.g. {"gpt-4o-mini": "local:qwen2.5-7b-instruct"}.
    replacements: dict[str, str] = Field(default_factory=dict)
    # Days before a fine-tune's shutdown date on which model.shutdown_approaching is sent.
    alert_days: list[int] = Field(default_factory=lambda: [30, 7, 1])
    # Shifts "today" for the shutdown alerts, the retirement check and the cut-offs: lets a
    # staging deployment rehearse 2027-01-14 ahead of time.
    clock_offset_days: float = 0.0
    # How often beat runs the shutdown alerts (seconds).
    alert_interval_seconds: float = Field(default=3600.0, gt=0)
