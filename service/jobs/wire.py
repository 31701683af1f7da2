"""Jobs, events, checkpoints, estimates and usage as typed wire objects.

The rule: these classes are what leaves ftq — API responses and webhook ``data`` alike
(``service.jobs.serializers`` builds them from rows). Field names and types are OpenAI's
(``openai.types.fine_tuning``); ftq's own fields are added, optional, after OpenAI's, so
the official SDK parses every object and keeps the extras in ``model_extra``. A field
added to a row reaches clients only once it is declared here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatusName = Literal[
    "validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"
]
AutoOrInt = Literal["auto"] | int
AutoOrFloat = Literal["auto"] | float


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None
    # ftq: the provider's own error, verbatim, when the failure came from it.
    provider_error: Any = None


class Hyperparameters(BaseModel):
    batch_size: AutoOrInt | None = "auto"
    learning_rate_multiplier: AutoOrFloat | None = "auto"
    n_epochs: AutoOrInt | None = "auto"


class JobMethod(BaseModel):
    """OpenAI's method (supervised, dpo, reinforcement) or ftq's local ones (full, freeze,
    lora); each section holds that method's settings."""

    model_config = ConfigDict(extra="allow")

    type: Literal["supervised", "dpo", "reinforcement", "full", "freeze", "lora"]
    supervised: dict[str, Any] | None = None
    dpo: dict[str, Any] | None = None
    reinforcement: dict[str, Any] | None = None


class FineTuningJobObject(BaseModel):
    """OpenAI's ``fine_tuning.job`` (``status`` adds ``paused``, which pause/resume use)."""

    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: Hyperparameters
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: JobStatusName
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    integrations: list[dict[str, Any]] | None = None
    estimated_finish: int | None = None
    method: JobMethod | None = None
    metadata: dict[str, str] | None = None
    # ftq's added fields.
    stage: str | None = Field(default=None, description="ftq's finer position in the job's life")
    queue_position: int | None = Field(
        default=None, description="Place in ftq's queue while waiting for a slot"
    )
    priority: int | None = None
    provider: str | None = None
    sequence: int | None = Field(
        default=None, description="Increases with every change; orders webhook events"
    )
    cost_usd: float | None = Field(default=None, description="Trained tokens at the price")
    estimated_cost_usd: float | None = None
    cancel_requested: bool = Field(
        default=False, description="A cancel is on its way to the provider or trainer"
    )


class FineTuningJobEventObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"] | None = None
    data: dict[str, Any] | None = None


class CheckpointMetrics(BaseModel):
    model_config = ConfigDict(extra="allow")

    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None
    step: float | None = None
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None


class FineTuningJobCheckpointObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int


class JobEstimateObject(BaseModel):
    """``POST /v1/fine_tuning/jobs/estimate``: the report's verdict and the cost estimate."""

    model_config = ConfigDict(extra="allow")

    object: Literal["fine_tuning.job.estimate"] = "fine_tuning.job.estimate"
    training_file: str
    verdict: Literal["pass", "warn", "block"]
    validation_report: str
    model: str
    n_examples: int
    n_epochs: int
    billed_tokens: int
    cost_usd: float


class UsageObject(BaseModel):
    object: Literal["usage"] = "usage"
    team_id: str
    month: str
    jobs: int
    jobs_by_status: dict[str, int]
    trained_tokens: int
    estimated_cost_usd: float
    actual_cost_usd: float
    reserved_usd: float
    budget_usd: float | None
    remaining_usd: float | None
    # What the team's evaluation runs spent this month (model calls for sampling, judges).
    eval_cost_usd: float | None = None


class BudgetObject(BaseModel):
    object: Literal["budget"] = "budget"
    monthly_budget_usd: float | None


class ModelObject(BaseModel):
    """OpenAI's ``model``, plus the shutdown date ftq knows for base models."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    shutdown_date: str | None = None
    # A team's fine-tuned model: the job that made it and its evaluation verdict.
    fine_tuning_job_id: str | None = None
    evaluation: dict[str, Any] | None = None


# Inference: the team's models answer OpenAI's chat and legacy completions. Bodies pass
# through to the provider as sent (unknown fields included) and its answer comes back as
# it is, so these classes document the shape and allow what they do not list.
class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None


class CompletionRequest(BaseModel):
    """Legacy completions (fine-tunes of babbage-002 and davinci-002); no streaming."""

    model_config = ConfigDict(extra="allow")

    model: str
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None


class CompletionUsage(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | None = None


class ChatCompletionChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int
    message: ChatCompletionMessage
    finish_reason: str | None = None


class ChatCompletionObject(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: CompletionUsage | None = None


class CompletionChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int
    text: str
    finish_reason: str | None = None


class CompletionObject(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage | None = None
