"""Tunable knobs of the dataset validator (embedded as ``Settings.validation``)."""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import BaseModel, Field

from service.files.validation.codes import Severity

T = TypeVar("T")

# Training-example context per model, longest matching prefix wins (openai-contract.md §4.2).
# gpt-4.1* has no published figure; it falls through to the default.
DEFAULT_CONTEXT_LIMITS: dict[str, int] = {
    "gpt-4o-2024-08-06": 65_536,
    "gpt-4o-mini-2024-07-18": 65_536,
    "gpt-4o": 65_536,
    "gpt-3.5-turbo-0613": 4_096,
    "gpt-3.5-turbo": 16_385,
    "babbage-002": 16_384,
    "davinci-002": 16_384,
}

# USD per 1M *training* tokens, longest matching prefix wins. Illustrative defaults taken from
# OpenAI's public pricing page as remembered at the time of writing; operators must override
# them (FTQ_VALIDATION__PRICES_PER_MILLION_TOKENS) with their contract prices.
DEFAULT_PRICES_PER_MILLION_TOKENS: dict[str, float] = {
    "gpt-4o-mini": 3.00,
    "gpt-4o": 25.00,
    "gpt-4.1-nano": 1.50,
    "gpt-4.1-mini": 5.00,
    "gpt-4.1": 25.00,
    "gpt-3.5-turbo": 8.00,
    "babbage-002": 0.40,
    "davinci-002": 6.00,
}

DEFAULT_PII_SEVERITY: dict[str, Severity] = {
    "pii_email": "warning",
    "pii_phone": "warning",
    "pii_card_number": "error",
    "pii_api_key": "error",
}


class ModerationSettings(BaseModel):
    mode: Literal["all", "sample"] = "sample"
    sample_size: int = Field(default=1_000, ge=1)
    seed: int = 0
    batch_size: int = Field(default=32, ge=1)
    # < 1: fraction of screened examples; >= 1: absolute number of flagged examples.
    block_threshold: float = Field(default=0.01, gt=0)
    # Optional per-category score cut-offs that flag an example even when the provider didn't.
    category_score_thresholds: dict[str, float] = Field(default_factory=dict)
    # The moderation endpoint has an input limit; longer example texts are cut to this.
    max_chars_per_input: int = Field(default=32_000, ge=100)


class ValidationSettings(BaseModel):
    min_examples: int = 10
    recommended_examples: int = 50  # OpenAI's distillation guide: "start with 50"
    default_model: str = "gpt-4o-mini-2024-07-18"
    context_limits: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_CONTEXT_LIMITS))
    default_context_limit: int = 65_536
    prices_per_million_tokens: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_PRICES_PER_MILLION_TOKENS)
    )
    default_price_per_million_tokens: float = 25.00
    # Near duplicates are examples whose text is equal after case-folding, dropping punctuation
    # and collapsing whitespace; examples shorter than this many normalized chars are ignored
    # because short greetings collide legitimately.
    near_duplicate_min_chars: int = 20
    # Slots of each fixed-size duplicate hash table (8-byte hash + 4-byte line per slot);
    # memory is capacity * 12 bytes per table whatever the file size.
    dedup_capacity: int = 1 << 21
    findings_cap_per_code: int = 100
    pii_severity: dict[str, Severity] = Field(default_factory=lambda: dict(DEFAULT_PII_SEVERITY))
    pii_enabled: bool = True
    # Legacy prepare_data: prompt + completion longer than this (chars) is "long".
    legacy_long_example_chars: int = 10_000
    chunk_bytes: int = 4 * 1024 * 1024
    # Files smaller than this are validated in-process: a worker pool costs more than it saves.
    parallel_min_bytes: int = 8 * 1024 * 1024
    # Each cached string is held in memory; 1k entries keep every repeated system prompt.
    token_cache_size: int = 1_024
    moderation: ModerationSettings = Field(default_factory=ModerationSettings)


def longest_prefix_lookup(table: dict[str, T], model: str, default: T) -> T:
    best: str | None = None
    for prefix in table:
        if model.startswith(prefix) and (best is None or len(prefix) > len(best)):
            best = prefix
    return table[best] if best is not None else default


def context_limit_for(model: str, settings: ValidationSettings) -> int:
    return longest_prefix_lookup(settings.context_limits, model, settings.default_context_limit)


def price_per_million_for(model: str, settings: ValidationSettings) -> float:
    # Fine-tuned model names ("ft:gpt-4o-mini-2024-07-18:org::id") bill as their base model.
    base = model.split(":")[1] if model.startswith("ft:") and ":" in model[3:] else model
    return longest_prefix_lookup(
        settings.prices_per_million_tokens, base, settings.default_price_per_million_tokens
    )
