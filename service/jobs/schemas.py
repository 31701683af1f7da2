"""The create request, in OpenAI's shape (``CreateFineTuningJobRequest``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Auto = Literal["auto"]
BatchSize = Annotated[int, Field(ge=1, le=256)] | Auto
LearningRate = Annotated[float, Field(gt=0, allow_inf_nan=False)] | Auto
Epochs = Annotated[int, Field(ge=1, le=50)] | Auto


class SupervisedHyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batch_size: BatchSize | None = None
    learning_rate_multiplier: LearningRate | None = None
    n_epochs: Epochs | None = None


class DpoHyperparameters(SupervisedHyperparameters):
    beta: Annotated[float, Field(gt=0, le=2)] | Auto | None = None


class ReinforcementHyperparameters(SupervisedHyperparameters):
    reasoning_effort: Literal["default", "low", "medium", "high"] | None = None
    compute_multiplier: Annotated[float, Field(gt=0.00001, le=10)] | Auto | None = None
    eval_interval: Annotated[int, Field(ge=1)] | Auto | None = None
    eval_samples: Annotated[int, Field(ge=1)] | Auto | None = None


class SupervisedMethod(BaseModel):
    hyperparameters: SupervisedHyperparameters | None = None


class DpoMethod(BaseModel):
    hyperparameters: DpoHyperparameters | None = None
    # ftq extensions for the local provider: adapters instead of full weights, and an SFT
    # term on the preferred answer. Refused for other providers at create.
    lora: dict[str, Any] | None = None
    sft_weight: Annotated[float, Field(ge=0, le=10)] | None = None


class ReinforcementMethod(BaseModel):
    grader: dict[str, Any]
    hyperparameters: ReinforcementHyperparameters | None = None


# ftq extensions for the local provider (send with extra_body): full-parameter, frozen-layer
# and LoRA fine-tuning; hyperparameters keep their OpenAI meaning.
class FullMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: SupervisedHyperparameters | None = None


class FreezeMethod(FullMethod):
    trainable_layers: Annotated[int, Field(ge=0)] | None = None
    trainable_modules: list[str] | None = None
    train_lm_head: bool | None = None


class LoraMethod(FullMethod):
    rank: Annotated[int, Field(ge=1, le=1024)] | None = None
    alpha: Annotated[int, Field(ge=1)] | None = None
    dropout: Annotated[float, Field(ge=0, lt=1)] | None = None
    target_modules: list[str] | Literal["all-linear"] | None = None
    train_lm_head: bool | None = None


LOCAL_METHOD_TYPES = frozenset({"full", "freeze", "lora"})


class Method(BaseModel):
    type: Literal["supervised", "dpo", "reinforcement", "full", "freeze", "lora"]
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None
    reinforcement: ReinforcementMethod | None = None
    full: FullMethod | None = None
    freeze: FreezeMethod | None = None
    lora: LoraMethod | None = None

    @model_validator(mode="after")
    def _one_section_of_its_type(self) -> Method:
        # A section for another type would be silently ignored: say so instead.
        for name in ("supervised", "dpo", "reinforcement", "full", "freeze", "lora"):
            if name != self.type and getattr(self, name) is not None:
                raise ValueError(f"method.{name} is given but method.type is '{self.type}'")
        if self.type == "reinforcement" and self.reinforcement is None:
            raise ValueError("method.reinforcement.grader is required for reinforcement")
        return self

    def section_hyperparameters(self) -> dict[str, Any]:
        section = getattr(self, self.type, None)
        hyper = getattr(section, "hyperparameters", None) if section is not None else None
        return hyper.model_dump(exclude_none=True) if hyper is not None else {}


class WandbIntegration(BaseModel):
    project: str
    name: str | None = None
    entity: str | None = None
    tags: list[str] | None = None


class Integration(BaseModel):
    type: Literal["wandb"]
    wandb: WandbIntegration


class CreateJobInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(min_length=1, max_length=256)]
    # Required unless retrain_of names a job whose training file is replayed (checked by
    # service.registry.retrain.resolve, which fills it in).
    training_file: Annotated[str, Field(min_length=1, max_length=64)] = ""
    validation_file: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    hyperparameters: SupervisedHyperparameters | None = None
    method: Method | None = None
    suffix: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    seed: Annotated[int, Field(ge=0, le=2147483647)] | None = None
    metadata: dict[str, str] | None = None
    integrations: Annotated[list[Integration], Field(max_length=5)] | None = None
    # ftq extension (send with extra_body): order within the team's own queue.
    priority: Annotated[int, Field(ge=-10, le=10)] = 0
    # ftq extension (send with extra_body): processes for a local job, e.g. {"processes": 2};
    # checked against the training workers' limit at create.
    resources: dict[str, Any] | None = None
    # ftq extension (send with extra_body): where it trains; None: the team's default.
    provider: Literal["openai", "local"] | None = None
    # ftq extension (send with extra_body): the evaluation gate run when training succeeds,
    # {"eval_id", "gate": {"criterion", "min_delta"}, "checkpoints"}; checked at create.
    evaluation: dict[str, Any] | None = None
    # ftq extension (send with extra_body): re-train this job or model (of the team) here,
    # replaying its files, method and evaluation; see service.registry.retrain.
    retrain_of: Annotated[str, Field(min_length=1, max_length=512)] | None = None

    @field_validator("suffix")
    @classmethod
    def _suffix_characters(cls, value: str | None) -> str | None:
        # The suffix becomes part of ft:{base}:{org}:{suffix}:{id}: a colon, a space or a
        # control character would make a model name no client can parse back.
        if value is not None and any(c == ":" or c.isspace() or not c.isprintable() for c in value):
            raise ValueError("suffix may not contain ':', spaces or control characters")
        return value

    @model_validator(mode="after")
    def _hyperparameters_agree(self) -> CreateJobInput:
        """Top-level ``hyperparameters`` (deprecated) and the method's own must not disagree:
        the job would show one value and train with the other."""
        if self.hyperparameters is None or self.method is None:
            return self
        top = self.hyperparameters.model_dump(exclude_none=True)
        if self.method.type not in ("supervised", "full", "freeze", "lora"):
            if top:
                raise ValueError(
                    f"hyperparameters apply to supervised fine-tuning only; give them in "
                    f"method.{self.method.type}.hyperparameters"
                )
            return self
        inner = self.method.section_hyperparameters()
        clashes = sorted(k for k in top.keys() & inner.keys() if top[k] != inner[k])
        if clashes:
            raise ValueError(
                "hyperparameters and method."
                f"{self.method.type}.hyperparameters disagree on {', '.join(clashes)}; "
                "give them once, in method"
            )
        return self

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        # Providers take 16 pairs; ftq tags every upstream job with its own ftq_job_id (the
        # exactly-once lookup), so a team keeps 15.
        if len(value) > 15:
            raise ValueError(
                "metadata may hold at most 15 key-value pairs (ftq adds ftq_job_id upstream)"
            )
        for key, item in value.items():
            if len(key) > 64:
                raise ValueError(f"metadata key '{key[:20]}…' is longer than 64 characters")
            if len(item) > 512:
                raise ValueError(f"metadata value for '{key}' is longer than 512 characters")
            if key.startswith("ftq_"):
                raise ValueError("metadata keys starting with 'ftq_' are reserved")
        return value


def requested_epochs(request: CreateJobInput) -> int | Literal["auto"]:
    hyper = None
    if request.method is not None:
        section = getattr(request.method, request.method.type, None)
        hyper = getattr(section, "hyperparameters", None) if section else None
    hyper = hyper or request.hyperparameters
    epochs = getattr(hyper, "n_epochs", None) if hyper else None
    return epochs if isinstance(epochs, int) else "auto"
