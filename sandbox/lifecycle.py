"""Deterministic plan of a fine-tuning job's life, as milestones on an effective clock.

A job's whole future is computed once, at creation, as a list of milestones at offsets
(seconds of *effective* time since creation). The store applies the milestones whose offset
has passed every time it is read; pausing stops the effective clock and resuming restarts it,
so the same config and seed always give the same events, metrics and checkpoints.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from sandbox.config import SandboxConfig
from sandbox.datasets import Dataset

# Cookbook (Chat_finetuning_data_prep) default-epochs rule.
_TARGET_EPOCHS = 3
_MIN_TARGET_EXAMPLES = 100
_MAX_TARGET_EXAMPLES = 25_000
_MIN_DEFAULT_EPOCHS = 1
_MAX_DEFAULT_EPOCHS = 25
_AUTO_BATCH_SIZE = 1
_AUTO_LR_MULTIPLIER = 1.8
_AUTO_BETA = 0.1
_CHECKPOINT_EPOCHS = 3  # OpenAI keeps checkpoints for the last three epochs


@dataclass(frozen=True)
class EventSpec:
    message: str
    level: str = "info"
    type: str = "message"
    data: dict[str, Any] | None = None


@dataclass(frozen=True)
class Milestone:
    at: float
    event: EventSpec | None = None
    status: str | None = None
    checkpoint_step: int | None = None
    checkpoint_metrics: dict[str, float] | None = None
    error: dict[str, Any] | None = None
    succeed: bool = False


@dataclass(frozen=True)
class JobPlan:
    milestones: tuple[Milestone, ...]
    end_at: float  # effective offset of the terminal milestone
    running_at: float  # effective offset at which the job starts running
    total_steps: int
    metrics_rows: tuple[dict[str, float], ...] = field(default=())


def default_epochs(n_examples: int) -> int:
    if n_examples * _TARGET_EPOCHS < _MIN_TARGET_EXAMPLES:
        return min(_MAX_DEFAULT_EPOCHS, _MIN_TARGET_EXAMPLES // max(n_examples, 1))
    if n_examples * _TARGET_EPOCHS > _MAX_TARGET_EXAMPLES:
        return max(_MIN_DEFAULT_EPOCHS, _MAX_TARGET_EXAMPLES // n_examples)
    return _TARGET_EPOCHS


def resolve_hyperparameters(
    requested: dict[str, Any], method_type: str, n_examples: int
) -> dict[str, Any]:
    """Replace "auto" (or missing) values with what the sandbox will train with."""
    resolved = dict(requested)

    def pick(name: str, auto: Any) -> None:
        if resolved.get(name, "auto") == "auto":
            resolved[name] = auto

    pick("n_epochs", default_epochs(n_examples))
    pick("batch_size", _AUTO_BATCH_SIZE)
    pick("learning_rate_multiplier", _AUTO_LR_MULTIPLIER)
    if method_type == "dpo":
        pick("beta", _AUTO_BETA)
    return resolved


def _metrics(step: int, total: int, rng: random.Random) -> dict[str, float]:
    # A falling, slightly noisy loss curve; accuracy rises as the loss falls.
    progress = step / total
    train_loss = 0.12 + 2.1 * math.exp(-4.0 * progress) + rng.uniform(-0.03, 0.03)
    valid_loss = train_loss * 1.07 + 0.02
    return {
        "step": step,
        "train_loss": round(train_loss, 5),
        "train_mean_token_accuracy": round(min(0.99, 1.0 - train_loss / 2.8), 5),
        "valid_loss": round(valid_loss, 5),
        "valid_mean_token_accuracy": round(min(0.99, 1.0 - valid_loss / 2.8), 5),
        "total_steps": total,
    }


def plan_job(
    *,
    job_id: str,
    fine_tuned_model: str,
    training_file: str,
    validation_file: str | None,
    dataset: Dataset | None,
    data_error: dict[str, Any] | None,
    hyperparameters: dict[str, Any],
    seed: int,
    fail_code: str | None,
    config: SandboxConfig,
) -> JobPlan:
    milestones: list[Milestone] = [
        Milestone(0.0, EventSpec(f"Created fine-tuning job: {job_id}")),
        Milestone(0.0, EventSpec(f"Validating training file: {training_file}")),
    ]
    if validation_file:
        milestones.append(
            Milestone(0.0, EventSpec(f"Validating validation file: {validation_file}"))
        )

    validated_at = config.scaled(config.validating_seconds)
    if data_error is not None or dataset is None:
        error = data_error or {"code": "invalid_training_file", "message": "", "param": None}
        milestones.append(
            Milestone(validated_at, EventSpec(error["message"], level="error"), error=error)
        )
        return JobPlan(tuple(milestones), validated_at, validated_at, 0)

    milestones.append(
        Milestone(
            validated_at,
            EventSpec("Files validated, moving job to queued state"),
            status="queued",
        )
    )
    running_at = validated_at + config.scaled(config.queued_seconds)
    milestones.append(Milestone(running_at, EventSpec("Fine-tuning job started"), status="running"))
    if fail_code:
        error = {
            "code": fail_code,
            "message": f"Sandbox fault injected through metadata.sandbox_fail: {fail_code}",
            "param": None,
        }
        milestones.append(
            Milestone(running_at, EventSpec(error["message"], level="error"), error=error)
        )
        return JobPlan(tuple(milestones), running_at, running_at, 0)

    n_epochs = int(hyperparameters["n_epochs"])
    batch_size = int(hyperparameters["batch_size"])
    steps_per_epoch = config.steps_per_epoch or min(
        math.ceil(len(dataset.examples) / batch_size), config.max_steps_per_epoch
    )
    total_steps = n_epochs * steps_per_epoch
    step_duration = config.scaled(
        min(config.step_seconds, config.max_running_seconds / total_steps)
    )
    rng = random.Random(seed)
    rows: list[dict[str, float]] = []
    first_checkpoint_epoch = max(1, n_epochs - _CHECKPOINT_EPOCHS + 1)
    for step in range(1, total_steps + 1):
        at = running_at + step * step_duration
        metrics = _metrics(step, total_steps, rng)
        rows.append(metrics)
        message = f"Step {step}/{total_steps}: training loss={metrics['train_loss']:.4f}"
        if validation_file:
            message += f", validation loss={metrics['valid_loss']:.4f}"
        milestones.append(Milestone(at, EventSpec(message, type="metrics", data=metrics)))
        epoch, at_epoch_end = divmod(step, steps_per_epoch)
        if at_epoch_end == 0 and epoch >= first_checkpoint_epoch:
            checkpoint_metrics = {
                key: value for key, value in metrics.items() if key != "total_steps"
            }
            checkpoint_metrics["full_valid_loss"] = metrics["valid_loss"]
            checkpoint_metrics["full_valid_mean_token_accuracy"] = metrics[
                "valid_mean_token_accuracy"
            ]
            milestones.append(
                Milestone(
                    at,
                    EventSpec(f"Checkpoint created at step {step}"),
                    checkpoint_step=step,
                    checkpoint_metrics=checkpoint_metrics,
                )
            )
    end_at = running_at + total_steps * step_duration
    milestones.append(
        Milestone(end_at, EventSpec(f"New fine-tuned model created: {fine_tuned_model}"))
    )
    milestones.append(
        Milestone(
            end_at,
            EventSpec("The job has successfully completed"),
            status="succeeded",
            succeed=True,
        )
    )
    return JobPlan(tuple(milestones), end_at, running_at, total_steps, tuple(rows))


def results_csv(rows: tuple[dict[str, float], ...]) -> bytes:
    """The ``step_metrics.csv`` result file, one row per step."""
    header = "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    lines = [header] + [
        f"{r['step']},{r['train_loss']},{r['train_mean_token_accuracy']},"
        f"{r['valid_loss']},{r['valid_mean_token_accuracy']}"
        for r in rows
    ]
    return ("\n".join(lines) + "\n").encode()
