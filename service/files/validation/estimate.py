"""Epochs, billed tokens and cost (openai-contract.md §4.3)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from service.files.validation.report import Estimate, Report
from service.files.validation.settings import (
    ValidationSettings,
    context_limit_for,
    price_per_million_for,
)
from service.files.validation.tokens import encoding_for_model

TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25


def default_epochs(n_examples: int) -> int:
    """OpenAI's "auto" epochs: 3, raised for tiny and lowered for huge datasets."""
    if n_examples <= 0:
        return TARGET_EPOCHS
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


def estimate_cost(billed_tokens: int, model: str, settings: ValidationSettings) -> float:
    return round(billed_tokens * price_per_million_for(model, settings) / 1_000_000, 4)


def billed_tokens_per_epoch(histogram: Iterable[tuple[int, int]], context_limit: int) -> int:
    """Tokens past the context are truncated, so they aren't trained on or billed."""
    return sum(min(tokens, context_limit) * n for tokens, n in histogram)


def build_estimate(
    *,
    model: str,
    counted_encoding: str,
    n_examples: int,
    histogram: Iterable[tuple[int, int]],
    n_epochs: int | Literal["auto"],
    settings: ValidationSettings,
) -> Estimate:
    context_limit = context_limit_for(model, settings)
    per_epoch = billed_tokens_per_epoch(histogram, context_limit)
    epochs = default_epochs(n_examples) if n_epochs == "auto" else int(n_epochs)
    billed = per_epoch * epochs
    encoding = encoding_for_model(model)
    notes = [
        "Estimate only: the job's trained_tokens is the authoritative billed count.",
        "Prices come from the configurable table and may be out of date.",
    ]
    exact = encoding == counted_encoding
    if not exact:
        notes.append(
            f"Tokens were counted with {counted_encoding}; {model} uses {encoding}. "
            "For exact counts re-validate the file for this model: "
            "GET /v1/files/{file_id}/validation?model=<model>."
        )
    return Estimate(
        model=model,
        encoding=encoding,
        n_examples=n_examples,
        n_epochs=epochs,
        epochs_source="auto" if n_epochs == "auto" else "requested",
        context_limit=context_limit,
        billed_tokens_per_epoch=per_epoch,
        billed_tokens=billed,
        price_per_million_tokens=price_per_million_for(model, settings),
        cost_usd=estimate_cost(billed, model, settings),
        exact_tokens=exact,
        notes=notes,
    )


def estimate_for_job(
    report: Report,
    model: str,
    n_epochs: int | Literal["auto"],
    settings: ValidationSettings | None = None,
) -> Estimate:
    """Answers POST /v1/fine_tuning/jobs/estimate from a stored report, without the file."""
    return build_estimate(
        model=model,
        counted_encoding=report.tokens.encoding,
        n_examples=report.examples,
        histogram=report.tokens.histogram,
        n_epochs=n_epochs,
        settings=settings or ValidationSettings(),
    )
