"""Evaluation settings (``FTQ_EVALS__*``)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class EvalSettings(BaseModel):
    # Items of one run sampled at once (threads of the run's task).
    item_concurrency: int = Field(default=8, ge=1, le=64)
    # Runs sampling at once through one provider account (others wait in the queue).
    max_runs_per_account: int = Field(default=4, ge=1)
    lease_seconds: float = Field(default=60.0, gt=0)
    # One task works on a run for at most this long, then hands the rest to a fresh task
    # (well inside Celery's time limit, so a long run is never killed mid-item).
    slice_seconds: float = Field(default=240.0, gt=0)
    # A queued run whose message may be lost is re-enqueued after this long.
    requeue_seconds: float = Field(default=30.0, gt=0)
    # A 429 without Retry-After waits this long; longer Retry-After values release the run.
    default_retry_after_seconds: float = Field(default=2.0, gt=0)
    max_inline_retry_seconds: float = Field(default=10.0, gt=0)
    max_items: int = Field(default=50_000, ge=1)
    # Grader and judge calls per item are retried this often on transient provider errors.
    max_item_attempts: int = Field(default=3, ge=1)
    # The python grader runs arbitrary code; ftq ships no sandboxed runner, so it is refused.
    python_grader_enabled: bool = False
    # The gate: held-out share of the training file when the job has no validation file,
    # bootstrap resamples for the confidence interval, and its seed.
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)
    holdout_max_items: int = Field(default=500, ge=1)
    bootstrap_samples: int = Field(default=2000, ge=100)
    bootstrap_seed: int = 20261130
    # A gate whose runs made no progress for this long is re-enqueued by the reconciler.
    gate_stale_seconds: float = Field(default=60.0, gt=0)
    # A team's default gate for every fine-tune ({"eval_id", "gate": {...}}) by team id.
    default_gate_for_teams: dict[str, dict[str, object]] = Field(default_factory=dict)
    # USD per million tokens (input, output) for sampling and judge calls; fine-tunes of a
    # base cost ``fine_tuned_multiplier`` times their base; unknown models cost nothing.
    inference_prices: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {
            "gpt-4.1-nano": (0.10, 0.40),
            "gpt-4.1-mini": (0.40, 1.60),
            "gpt-4.1": (2.00, 8.00),
            "gpt-4o-mini": (0.15, 0.60),
            "gpt-4o": (2.50, 10.00),
            "gpt-3.5-turbo": (0.50, 1.50),
            "babbage-002": (0.40, 0.40),
            "davinci-002": (2.00, 2.00),
        }
    )
    fine_tuned_multiplier: float = 2.0
    # The judge of the templates' model graders, and the embeddings model behind cosine.
    judge_model: str = "gpt-4.1-mini-2025-04-14"
    embedding_model: str = "text-embedding-3-small"
