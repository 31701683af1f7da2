"""What a local training run does: the method, the hyperparameters, where it writes, and on
how many processes.

The method is ftq's extension of OpenAI's ``method`` object; hyperparameters keep their OpenAI
meaning, ``"auto"`` included (resolved against the number of training examples). OpenAI's
``dpo`` method is accepted as is (full fine-tuning) or with a ``lora`` section (adapters).
Everything here is pure: the API imports it to check a request before anything is queued.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from service.providers.local.settings import LocalTrainingSettings

Auto = Literal["auto"]
Strategy = Literal["ddp", "fsdp"]
StrategyRequest = Literal["auto", "ddp", "fsdp"]
STRATEGIES: tuple[str, ...] = ("auto", "ddp", "fsdp")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FullMethod(_Frozen):
    """Train every parameter."""

    type: Literal["full"] = "full"


class FreezeMethod(_Frozen):
    """Train only the top transformer layers and/or named modules; the rest stays frozen.

    The trainable set is the union of the top ``trainable_layers`` layers, every parameter whose
    name (or any enclosing module's name) matches a ``trainable_modules`` glob, and the output
    head when ``train_lm_head``.
    """

    type: Literal["freeze"] = "freeze"
    trainable_layers: int = Field(default=1, ge=0)
    trainable_modules: list[str] | None = None
    train_lm_head: bool = True

    @field_validator("trainable_modules")
    @classmethod
    def _non_empty_patterns(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not all(p.strip() for p in value):
            raise ValueError("trainable_modules entries must be non-empty names or globs")
        return value


class LoraMethod(_Frozen):
    """Train low-rank adapters; the base weights stay untouched.

    ``train_lm_head`` adds the output head to the LoRA targets: on a model whose head was never
    trained for the new outputs, adapters on the body alone plateau at a high loss.
    """

    type: Literal["lora"] = "lora"
    rank: int = Field(default=8, ge=1, le=1024)
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    train_lm_head: bool = True

    @field_validator("target_modules")
    @classmethod
    def _non_empty_targets(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list) and (not value or not all(v.strip() for v in value)):
            raise ValueError("target_modules must be 'all-linear' or a non-empty list of names")
        return value


class DpoMethod(_Frozen):
    """Direct Preference Optimization on preference pairs (OpenAI's ``dpo`` method).

    The reference model is the base model: its log-probabilities of both answers are computed
    once before training. ``beta`` scales the implicit reward (higher: stay closer to the
    reference). ``sft_weight`` adds the negative log-likelihood of the preferred answer
    (TRL's ``rpo_alpha``), which keeps the preferred answer likely in absolute terms and not
    only relative to the rejected one. With ``lora`` only adapters train.
    """

    type: Literal["dpo"] = "dpo"
    beta: float = Field(default=0.1, gt=0, le=2)
    sft_weight: float = Field(default=0.0, ge=0, le=10)
    lora: LoraMethod | None = None

    @property
    def rate_key(self) -> str:
        return "lora" if self.lora is not None else "dpo"


TrainingMethod = Annotated[
    FullMethod | FreezeMethod | LoraMethod | DpoMethod, Field(discriminator="type")
]
TRAINING_METHOD = TypeAdapter(TrainingMethod)
MethodType = Literal["full", "freeze", "lora", "dpo"]

# Used when a spec names no base learning rate; same values as LocalTrainingSettings.
DEFAULT_LEARNING_RATES: dict[str, float] = {
    "full": 1e-3,
    "freeze": 3e-3,
    "lora": 3e-3,
    "dpo": 5e-4,
}


def rate_key(method: FullMethod | FreezeMethod | LoraMethod | DpoMethod) -> str:
    """Which per-method base learning rate applies (LoRA-DPO trains adapters: LoRA's)."""
    return method.rate_key if isinstance(method, DpoMethod) else method.type


def trains_adapter(method: FullMethod | FreezeMethod | LoraMethod | DpoMethod) -> bool:
    """Whether the run's result is a LoRA adapter (else a complete model)."""
    return isinstance(method, LoraMethod) or (
        isinstance(method, DpoMethod) and method.lora is not None
    )


class ResolvedHyperparameters(_Frozen):
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float


class Hyperparameters(_Frozen):
    """OpenAI's fine-tuning hyperparameters, each a value or ``"auto"``."""

    n_epochs: int | Auto = Field(default="auto")
    batch_size: int | Auto = Field(default="auto")
    learning_rate_multiplier: float | Auto = Field(default="auto")

    @field_validator("n_epochs")
    @classmethod
    def _epochs_range(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 1000:
            raise ValueError("n_epochs must be between 1 and 1000")
        return value

    @field_validator("batch_size")
    @classmethod
    def _batch_range(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 256:
            raise ValueError("batch_size must be between 1 and 256")
        return value

    @field_validator("learning_rate_multiplier")
    @classmethod
    def _multiplier_range(cls, value: float | str) -> float | str:
        if isinstance(value, float | int) and not 0 < value <= 100:
            raise ValueError("learning_rate_multiplier must be in (0, 100]")
        return value

    def resolve(self, n_examples: int) -> ResolvedHyperparameters:
        """Replace each ``"auto"`` with a value for a dataset of ``n_examples`` examples."""
        n = max(1, n_examples)
        return ResolvedHyperparameters(
            n_epochs=auto_epochs(n) if self.n_epochs == "auto" else int(self.n_epochs),
            batch_size=auto_batch_size(n) if self.batch_size == "auto" else int(self.batch_size),
            learning_rate_multiplier=(
                1.0
                if self.learning_rate_multiplier == "auto"
                else float(self.learning_rate_multiplier)
            ),
        )


def auto_epochs(n_examples: int) -> int:
    """OpenAI's documented default: 3 epochs, stretched for tiny and shrunk for huge datasets
    so that a job sees roughly 100 to 25,000 examples in total."""
    n = max(1, n_examples)
    if n * 3 < 100:
        return min(25, 100 // n)
    if n * 3 > 25_000:
        return max(1, 25_000 // n)
    return 3


def auto_batch_size(n_examples: int) -> int:
    """About a tenth of the dataset per batch, between 1 and 8: small datasets get several
    optimizer steps per epoch, large ones stay within CPU/small-GPU memory."""
    return min(8, max(1, n_examples // 10))


class TrainingSpec(_Frozen):
    """Everything ``trainer.train`` needs besides the data files and the callbacks."""

    base_model_path: Path
    method: TrainingMethod = Field(default_factory=FullMethod)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    seed: int = 0
    output_dir: Path
    # None: the model's own limit.
    max_seq_len: int | None = Field(default=None, ge=8)
    # None: DEFAULT_LEARNING_RATES for the method. The effective rate is this times the
    # learning_rate_multiplier.
    base_learning_rate: float | None = Field(default=None, gt=0)
    checkpoint_every_steps: int = Field(default=100, ge=1)
    # Also checkpoint at each epoch end (OpenAI keeps per-epoch checkpoints).
    checkpoint_each_epoch: bool = True
    keep_checkpoints: int = Field(default=2, ge=1)
    eval_every_steps: int = Field(default=50, ge=1)
    log_every_steps: int = Field(default=1, ge=1)
    torch_threads: int = Field(default=1, ge=1)
    device: str = "auto"
    # > 1: torchrun launches this many ranks (see distributed.py); the global batch stays
    # ``batch_size``, split across ranks, so the loss curve does not depend on it.
    processes: int = Field(default=1, ge=1, le=64)
    # How several processes share the model: "ddp" replicates it on every rank, "fsdp" shards
    # weights, gradients and optimizer state across ranks (FSDP2), "auto" picks FSDP when the
    # replicated estimate does not fit one device (``sharding.choose_strategy``). Ignored on
    # one process. Checkpoints and results have one format whatever the strategy.
    strategy: StrategyRequest = "auto"
    gradient_checkpointing: bool = False
    packing: bool = True

    @property
    def learning_rate_base(self) -> float:
        if self.base_learning_rate is not None:
            return self.base_learning_rate
        return DEFAULT_LEARNING_RATES[rate_key(self.method)]

    @classmethod
    def from_settings(
        cls,
        settings: LocalTrainingSettings,
        *,
        base_model_path: Path,
        method: FullMethod | FreezeMethod | LoraMethod | DpoMethod,
        hyperparameters: Hyperparameters,
        seed: int,
        output_dir: Path,
        processes: int = 1,
        strategy: StrategyRequest = "auto",
    ) -> TrainingSpec:
        """A spec whose run options (threads, cadences, rates, device, distribution) come from
        settings; ``processes`` and ``strategy`` from the job's ``resources`` (see
        ``check_resources``)."""
        if processes > settings.max_processes:
            raise ValueError(
                f"resources.processes={processes} exceeds this worker's limit "
                f"({settings.max_processes})"
            )
        return cls(
            base_model_path=base_model_path,
            method=method,
            hyperparameters=hyperparameters,
            seed=seed,
            output_dir=output_dir,
            max_seq_len=settings.max_seq_len,
            base_learning_rate=settings.base_learning_rate(rate_key(method)),
            checkpoint_every_steps=settings.checkpoint_every_steps,
            keep_checkpoints=settings.keep_checkpoints,
            eval_every_steps=settings.eval_every_steps,
            log_every_steps=settings.log_every_steps,
            torch_threads=settings.torch_threads,
            device=settings.device,
            processes=processes,
            strategy=strategy,
            gradient_checkpointing=settings.gradient_checkpointing,
            packing=settings.packing,
        )


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    return max(1, math.ceil(n_examples / batch_size))


# Job requests -> spec parts (pure; the API and the job runner both call these) ---------------
LOCAL_METHODS = ("full", "freeze", "lora", "dpo", "supervised")


def method_from_job(
    method: dict[str, Any] | None, hyperparameters: dict[str, Any] | None
) -> tuple[TrainingMethod, Hyperparameters]:
    """The trainer's method and hyperparameters for a job's stored ``method``.

    ``supervised`` (OpenAI's default) means full fine-tuning. ``dpo`` takes OpenAI's DPO
    hyperparameters (``beta``, ``"auto"`` = 0.1) plus ftq's ``sft_weight`` and an optional
    ``lora`` section (adapters instead of full fine-tuning). Raises ValueError with a message
    for the caller to show (pydantic's ValidationError is one).
    """
    method = method or {"type": "supervised"}
    kind = method.get("type", "supervised")
    if kind not in LOCAL_METHODS:
        raise ValueError(
            f"method '{kind}' is not supported (use full, freeze, lora, dpo or supervised)"
        )
    section = dict(method.get(kind) or {})
    hyper = dict(section.pop("hyperparameters", None) or hyperparameters or {})
    hyper = {k: v for k, v in hyper.items() if v is not None}
    if kind == "supervised":
        kind, section = "full", {}
    if kind == "dpo":
        beta = hyper.pop("beta", "auto")
        if beta != "auto":
            section["beta"] = beta
        if "sft_weight" in hyper:
            section.setdefault("sft_weight", hyper.pop("sft_weight"))
        if section.get("lora") is not None:
            section["lora"] = {"type": "lora", **dict(section["lora"])}
    spec_method = TRAINING_METHOD.validate_python({"type": kind, **section})
    return spec_method, Hyperparameters(**hyper)


class Resources(_Frozen):
    """What a job asks of the training worker: processes, and how they share the model."""

    processes: int = 1
    strategy: StrategyRequest = "auto"


class ResourcesError(ValueError):
    """A ``resources`` field a worker cannot honour; ``param`` names it for the 400."""

    def __init__(self, message: str, param: str = "resources") -> None:
        super().__init__(message)
        self.param = param


RESOURCE_FIELDS = ("processes", "strategy")


def check_resources(resources: dict[str, Any] | None, settings: LocalTrainingSettings) -> Resources:
    """A job's ``resources`` (``{"processes": N, "strategy": "auto" | "ddp" | "fsdp"}``),
    checked against the worker limit (``FTQ_LOCAL__MAX_PROCESSES``). Raises ResourcesError
    with a message and the offending field for a 400."""
    if resources is None:
        return Resources()
    if not isinstance(resources, dict):
        raise ResourcesError(
            'resources must be an object such as {"processes": 2, "strategy": "auto"}'
        )
    unknown = sorted(set(resources) - set(RESOURCE_FIELDS))
    if unknown:
        raise ResourcesError(
            f"unknown resources field(s): {', '.join(unknown)} "
            f"(known: {', '.join(RESOURCE_FIELDS)})"
        )
    processes = resources.get("processes", 1)
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ResourcesError(
            "resources.processes must be a positive integer", "resources.processes"
        )
    if processes > settings.max_processes:
        raise ResourcesError(
            f"resources.processes={processes} exceeds the limit of this deployment's training "
            f"workers ({settings.max_processes}; FTQ_LOCAL__MAX_PROCESSES)",
            "resources.processes",
        )
    strategy = resources.get("strategy", "auto")
    if strategy not in STRATEGIES:
        raise ResourcesError(
            f"resources.strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}",
            "resources.strategy",
        )
    if strategy == "fsdp" and processes < 2:
        # Sharding over one process shards nothing: say so rather than run something else.
        raise ResourcesError(
            "resources.strategy 'fsdp' shards the model across processes: it needs "
            "resources.processes of 2 or more",
            "resources.strategy",
        )
    return Resources(processes=processes, strategy=strategy)


def resources_from_job(resources: dict[str, Any] | None) -> Resources:
    """A stored job's resources (checked at create; the limit is the worker's to enforce)."""
    stored = resources or {}
    return Resources(
        processes=int(stored.get("processes", 1)), strategy=stored.get("strategy", "auto")
    )


__all__ = [
    "DpoMethod",
    "FreezeMethod",
    "FullMethod",
    "Hyperparameters",
    "LoraMethod",
    "Resources",
    "ResourcesError",
    "TrainingSpec",
    "ValidationError",
    "check_resources",
    "method_from_job",
    "resources_from_job",
]
