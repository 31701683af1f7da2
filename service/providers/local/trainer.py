"""The local training loop: a plain PyTorch loop with step-level control, on one process or
on each rank of a torchrun launch.

Not HF Trainer: cancellation must be honoured before every step, every checkpoint must be
resumable bit-for-bit after a SIGKILL, and events go to ftq's callbacks, not to a logger.

The rule for several processes: the global batch is the spec's ``batch_size`` whatever the
number of ranks; each rank takes its share of it, and each rank's loss is divided by the
*global* count of scored tokens (pairs for DPO), so the averaged gradient — and the loss curve —
equal the single-process run's up to floating-point order. Rank 0 alone writes checkpoints
(the single-process format) and ``final/``; every rank can resume from them.

Layout under ``spec.output_dir``::

    checkpoints/step-00000100/   resumable checkpoints (newest few kept)
    final/                       the fine-tuned model (full/freeze) or adapter (lora),
                                 its tokenizer, ftq_model.json and result.json
    run/                         a multi-process run's launch file, events and cancel flag
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from service.providers.local import checkpoints as ckpt
from service.providers.local.batching import Batch, Encoded, encode, pack, pad, token_loss_sum
from service.providers.local.contract import (
    TrainingCallbacks,
    TrainingCancelled,
    TrainingProcessFailed,
    TrainingResult,
)
from service.providers.local.data import IGNORE_INDEX, Dataset, Example, load_dataset
from service.providers.local.methods import apply_method, count_parameters
from service.providers.local.models import (
    MODEL_INFO_FILE,
    UnknownBaseModel,
    load_causal_lm,
    load_tokenizer,
    model_max_length,
    quiet_transformers,
    resolve_base_model,
    resolve_device,
)
from service.providers.local.sharding import Placement
from service.providers.local.spec import (
    DpoMethod,
    ResolvedHyperparameters,
    TrainingSpec,
    steps_per_epoch,
    trains_adapter,
)

log = structlog.get_logger(__name__)

RESULT_FILE = "result.json"
# Packed or scored-only and padded losses of the probe batch may differ by float order only.
PACKING_TOLERANCE = 1e-4

__all__ = [
    "MODEL_INFO_FILE",
    "TrainingCallbacks",
    "TrainingCancelled",
    "TrainingProcessFailed",
    "TrainingResult",
    "UnknownBaseModel",
    "resolve_base_model",
    "train",
]


def train(
    spec: TrainingSpec,
    training_file: Path,
    validation_file: Path | None,
    callbacks: TrainingCallbacks,
) -> TrainingResult:
    """Fine-tune ``spec.base_model_path`` as ``spec.method`` says; resume if checkpoints exist.

    With ``spec.processes`` > 1 the run is launched through torchrun and followed from here
    (``distributed.run``); a dead rank raises TrainingProcessFailed. If ``final/`` already
    holds a finished result (a re-delivered task), it is returned as is.
    """
    final_dir = spec.output_dir / "final"
    if (final_dir / RESULT_FILE).is_file():
        return _read_result(final_dir)
    if spec.processes > 1:
        from service.providers.local import distributed

        return distributed.run(spec, training_file, validation_file, callbacks)
    return run_loop(spec, training_file, validation_file, callbacks, Ranks())


# Ranks ---------------------------------------------------------------------------------------
@dataclass
class Ranks:
    """This process's place in the run; one process is rank 0 of 1 and needs no collectives."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: Any = None  # where collectives' tensors live (cuda for NCCL, cpu for gloo)
    local_world: int = 1  # ranks on this host

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (one collective for the whole list)."""
        if self.world == 1:
            return values
        import torch
        import torch.distributed as torch_dist

        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch_dist.all_reduce(tensor)
        return tensor.tolist()

    def minimum(self, values: list[float]) -> list[float]:
        """Element-wise minimum over ranks (so every rank takes the same decision)."""
        if self.world == 1:
            return values
        import torch
        import torch.distributed as torch_dist

        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.MIN)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as torch_dist

            torch_dist.barrier()

    def shard(self, items: list[Any]) -> list[Any]:
        return items[self.rank :: self.world]


# Objectives ----------------------------------------------------------------------------------
@dataclass
class Supervised:
    """Next-token loss on the trained (assistant / completion) tokens; the normaliser is the
    number of scored tokens."""

    dataset: Dataset
    pad_id: int
    device: Any
    packing: bool
    # Packed rows hold up to this many tokens (the run's sequence limit): short examples
    # share a row instead of each being padded to the batch's longest.
    pack_capacity: int | None = None
    # Logits only where a target is (not at prompt or padding positions); the probe keeps
    # it only for models whose loss it leaves unchanged.
    scored_only: bool = True
    # Per example, built once: its tensors and its number of scored tokens, so a step does
    # no per-token Python work.
    encoded: list[Encoded] = field(init=False, repr=False)
    scored: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.encoded = [encode(e) for e in self.dataset.examples]
        self.scored = [
            sum(1 for label in e.labels[1:] if label != IGNORE_INDEX) for e in self.dataset.examples
        ]

    def count(self, items: list[Example], indices: list[int]) -> int:
        return sum(self.scored[i] for i in indices)

    def tokens(self, items: list[Example]) -> int:
        return sum(e.n_tokens for e in items)

    def batch(self, items: list[Example], indices: list[int]) -> Batch:
        encoded = [self.encoded[i] for i in indices]
        if self.packing:
            return pack(items, self.pad_id, self.device, self.pack_capacity, encoded)
        return pad(items, self.pad_id, self.device, encoded)

    def loss_sum(self, model: Any, items: list[Example], indices: list[int]) -> Any:
        return token_loss_sum(model, self.batch(items, indices), self.scored_only)

    def probe(self, model: Any, items: list[Example], indices: list[int]) -> None:
        """Keep packing and scored-only logits only if each leaves this batch's loss (padded,
        every logit) unchanged on this model."""
        import torch

        if not items:
            return
        encoded = [self.encoded[i] for i in indices]
        was_training = model.training
        model.eval()
        with torch.no_grad():
            reference = float(token_loss_sum(model, pad(items, self.pad_id, self.device, encoded)))
            if self.packing and len(items) >= 2:
                packed = pack(items, self.pad_id, self.device, self.pack_capacity, encoded)
                # Nothing shares a row: the probe proves nothing, decide on a real batch.
                if packed.inputs["input_ids"].shape[0] < len(items):
                    loss = float(token_loss_sum(model, packed))
                    if not _same_loss(loss, reference):
                        log.warning(
                            "local_training_packing_disabled", packed=loss, padded=reference
                        )
                        self.packing = False
            if self.scored_only:
                try:
                    loss = float(token_loss_sum(model, self.batch(items, indices), True))
                except TypeError:  # a model whose forward has no logits_to_keep
                    loss = math.nan
                if not _same_loss(loss, reference):
                    log.warning("local_training_scored_only_disabled", loss=loss, full=reference)
                    self.scored_only = False
        model.train(was_training)


def _same_loss(a: float, b: float) -> bool:
    return abs(a - b) <= PACKING_TOLERANCE * max(1.0, abs(b))


@dataclass
class Preference:
    """DPO on preference pairs; the normaliser is the number of pairs."""

    dataset: Any  # PreferenceDataset
    method: DpoMethod
    pad_id: int
    device: Any
    references: Any = None  # (n, 2) reference log-probs, set by prepare()
    packing: bool = False  # pairs are scored per sequence: always padded

    def count(self, items: list[Any], indices: list[int]) -> int:
        return len(items)

    def tokens(self, items: list[Any]) -> int:
        return sum(p.n_tokens for p in items)

    def prepare(self, model: Any, batch_size: int) -> None:
        from service.providers.local.preference import reference_logps

        self.references = reference_logps(
            model, self.dataset.examples, batch_size, self.pad_id, self.device
        )

    def loss_sum(self, model: Any, items: list[Any], indices: list[int]) -> Any:
        from service.providers.local.preference import pair_loss_sum

        return pair_loss_sum(
            model,
            items,
            self.references[indices],
            self.method.beta,
            self.method.sft_weight,
            self.pad_id,
            self.device,
        )

    def probe(self, model: Any, items: list[Any], indices: list[int]) -> None:
        return None


Objective = Supervised | Preference


def _load_objective(
    spec: TrainingSpec, path: Path, tokenizer: Any, max_len: int, device: Any
) -> Objective:
    if isinstance(spec.method, DpoMethod):
        from service.providers.local.preference import load_preference_dataset

        return Preference(
            load_preference_dataset(path, tokenizer, max_len),
            spec.method,
            tokenizer.pad_token_id,
            device,
        )
    return Supervised(
        load_dataset(path, tokenizer, max_len),
        tokenizer.pad_token_id,
        device,
        spec.packing,
        pack_capacity=max_len,
    )


# The loop ------------------------------------------------------------------------------------
@dataclass
class _Progress:
    pending_losses: list[float] = field(default_factory=list)
    epoch: int = -1
    order: list[int] = field(default_factory=list)


def run_loop(
    spec: TrainingSpec,
    training_file: Path,
    validation_file: Path | None,
    callbacks: TrainingCallbacks,
    ranks: Ranks,
) -> TrainingResult:
    """The training loop on this process (every rank of a torchrun launch runs it)."""
    import torch

    final_dir = spec.output_dir / "final"
    quiet_transformers()
    torch.set_num_threads(spec.torch_threads)
    _seed_everything(spec.seed)
    device = _rank_device(spec.device, ranks)

    tokenizer = load_tokenizer(spec.base_model_path)
    model = load_causal_lm(spec.base_model_path)
    max_len = model_max_length(model.config, tokenizer, spec.max_seq_len)
    objective = _load_objective(spec, training_file, tokenizer, max_len, device)
    valid = (
        _load_objective(spec, validation_file, tokenizer, max_len, device)
        if validation_file
        else None
    )
    hp = spec.hyperparameters.resolve(len(objective.dataset))

    if spec.gradient_checkpointing:
        model.config.use_cache = False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = apply_method(model, spec.method)
    placement = _placement(spec, model, ranks, device)
    model = placement.place(model)  # on the device: whole, or this rank's shard
    # The reference (DPO) is the model as it is now: the base, adapters still zero.
    if isinstance(objective, Preference):
        objective.prepare(model, hp.batch_size)
    if isinstance(valid, Preference):
        valid.prepare(model, hp.batch_size)
    probed = list(range(min(hp.batch_size, len(objective.dataset))))
    objective.probe(model, [objective.dataset.examples[i] for i in probed], probed)
    if isinstance(valid, Supervised) and isinstance(objective, Supervised):
        valid.packing, valid.scored_only = objective.packing, objective.scored_only
    placement.settle(model)  # the optimizer must hold the parameters that train

    parameters = [p for p in model.parameters() if p.requires_grad]
    peak_lr = spec.learning_rate_base * hp.learning_rate_multiplier
    optimizer = _adamw(parameters, peak_lr)
    per_epoch = steps_per_epoch(len(objective.dataset), hp.batch_size)
    total_steps = per_epoch * hp.n_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _linear_schedule(total_steps))

    checkpoints_dir = spec.output_dir / "checkpoints"
    if ranks.is_main:
        ckpt.remove_partial_checkpoints(checkpoints_dir)
    ranks.barrier()
    fingerprint = _fingerprint(spec, hp, objective.dataset, total_steps)
    state = ckpt.TrainerState(total_steps=total_steps, fingerprint=fingerprint)
    resumed_from: int | None = None
    latest = ckpt.latest_checkpoint(checkpoints_dir)
    if latest is not None:
        # The whole checkpoint on every rank; a sharded placement keeps its shard of it.
        saved = ckpt.read_checkpoint(latest, model, fingerprint)
        placement.load_weights(model, saved.weights)
        placement.load_optimizer(model, optimizer, saved.optimizer)
        scheduler.load_state_dict(saved.scheduler)
        ckpt.restore_rng_state(saved.rng)
        state, resumed_from = saved.state, saved.state.step

    trained = model  # what checkpoints and final/ save: never the DDP wrapper
    model = placement.wrap(model)
    autocast = _autocast(device)
    progress = _Progress()
    model.train()  # once: evaluation puts the model back in training mode itself
    for step in range(state.step + 1, total_steps + 1):
        epoch, index = divmod(step - 1, per_epoch)
        if epoch != progress.epoch:
            progress.epoch, progress.order = (
                epoch,
                _epoch_order(spec.seed, epoch, len(objective.dataset)),
            )
        indices = progress.order[index * hp.batch_size : (index + 1) * hp.batch_size]
        mine = ranks.shard(indices)
        items = [objective.dataset.examples[i] for i in mine]
        # One collective before the step: the global normaliser, and whether any rank (any
        # one may see the cancel flag first) must stop, so all stop at the same step.
        count, cancel = ranks.sum([objective.count(items, mine), float(callbacks.should_cancel())])
        if cancel:
            raise TrainingCancelled(step - 1)
        learning_rate = float(scheduler.get_last_lr()[0])

        with autocast:
            if items:
                loss_sum = objective.loss_sum(model, items, mine)
            else:  # fewer examples than ranks: join the gradient exchange with nothing
                first = [objective.dataset.examples[indices[0]]]
                loss_sum = objective.loss_sum(model, first, indices[:1]) * 0.0
        (loss_sum * (ranks.world / max(count, 1.0))).backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0, foreach=True)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        loss_total, tokens = ranks.sum([float(loss_sum.detach()), objective.tokens(items)])
        loss_value = loss_total / max(count, 1.0)
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"training loss became {loss_value} at step {step}")
        progress.pending_losses.append(loss_value)
        state.step = step
        state.tokens += int(tokens)
        if state.first_train_loss is None:
            state.first_train_loss = loss_value
        last_step = step == total_steps

        if step % spec.log_every_steps == 0 or last_step:
            state.last_train_loss = sum(progress.pending_losses) / len(progress.pending_losses)
            progress.pending_losses.clear()
            callbacks.on_step(step, total_steps, state.last_train_loss, learning_rate, state.tokens)
        if valid is not None and (step % spec.eval_every_steps == 0 or last_step):
            state.last_valid_loss = _evaluate(
                trained, valid, hp.batch_size, ranks, autocast, placement.lockstep
            )
            placement.settle(trained)
            callbacks.on_eval(step, state.last_valid_loss)
        epoch_end = spec.checkpoint_each_epoch and step % per_epoch == 0
        if step % spec.checkpoint_every_steps == 0 or epoch_end:
            # Gathered whole to rank 0 (a collective under FSDP), in one format for all.
            weights = placement.gather_weights(trained)
            optimizer_state = placement.gather_optimizer(trained, optimizer)
            if weights is not None and optimizer_state is not None:  # rank 0
                path = ckpt.save_checkpoint(
                    checkpoints_dir, weights, optimizer_state, scheduler, state
                )
                callbacks.on_checkpoint(step, path, _metrics(state))
                if ranks.world == 1:  # a multi-process run's parent prunes after copying
                    ckpt.prune_checkpoints(checkpoints_dir, spec.keep_checkpoints)
            ranks.barrier()

    if state.first_train_loss is None or state.last_train_loss is None:
        raise RuntimeError("training ran no step")  # unreachable: total_steps >= 1
    result = TrainingResult(
        trained_tokens=state.tokens,
        steps=total_steps,
        final_train_loss=state.last_train_loss,
        final_valid_loss=state.last_valid_loss,
        final_dir=final_dir,
        first_train_loss=state.first_train_loss,
        resumed_from_step=resumed_from,
        strategy=placement.name,
    )
    counts = count_parameters(trained)
    whole = placement.final_state_dict(trained, trains_adapter(spec.method))
    if ranks.is_main:
        _save_final(spec, hp, trained, tokenizer, result, counts, whole)
    ranks.barrier()
    return result


def _placement(spec: TrainingSpec, model: Any, ranks: Ranks, device: Any) -> Placement:
    """Replicated on one process; on several, the spec's strategy with "auto" decided from
    the model's size and the smallest device among the ranks (so all decide alike)."""
    from service.providers.local.sharding import (
        choose_strategy,
        device_memory_bytes,
        estimate_bytes,
        placement,
    )

    if ranks.world == 1:
        return placement("ddp", device, 1, True)
    trainable, total = count_parameters(model)
    memory = int(ranks.minimum([float(device_memory_bytes(device, ranks.local_world))])[0])
    strategy = choose_strategy(spec.strategy, trainable, total, memory, ranks.world)
    if ranks.is_main:
        log.info(
            "local_training_strategy",
            requested=spec.strategy,
            strategy=strategy,
            replicated_bytes=estimate_bytes(trainable, total, ranks.world, "ddp"),
            sharded_bytes=estimate_bytes(trainable, total, ranks.world, "fsdp"),
            device_bytes=memory,
        )
    return placement(strategy, device, ranks.world, ranks.is_main)


def _rank_device(requested: str, ranks: Ranks) -> Any:
    import torch

    device = resolve_device(requested)
    if ranks.world > 1 and device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    return device


def _evaluate(
    model: Any,
    objective: Objective,
    batch_size: int,
    ranks: Ranks,
    autocast: Any,
    lockstep: bool = False,
) -> float:
    """Mean loss per scored token (per pair for DPO) over the whole validation set, each rank
    scoring its share. ``lockstep`` (FSDP: each forward is a collective): every rank runs as
    many forwards as the rank with the largest share, padding with zero-weighted ones."""
    import torch

    model.eval()
    loss_total = 0.0
    count_total = 0.0
    examples = objective.dataset.examples
    mine = ranks.shard(list(range(len(examples))))
    largest_share = math.ceil(len(examples) / ranks.world)
    batches = math.ceil((largest_share if lockstep else len(mine)) / batch_size)
    with torch.no_grad(), autocast:
        for start in range(0, batches * batch_size, batch_size):
            indices = mine[start : start + batch_size]
            items = [examples[i] for i in indices]
            count = objective.count(items, indices) if items else 0
            if count:
                loss_total += float(objective.loss_sum(model, items, indices))
                count_total += count
            elif lockstep and examples:
                objective.loss_sum(model, [examples[0]], [0])
    model.train()
    loss_total, count_total = ranks.sum([loss_total, count_total])
    return loss_total / max(1.0, count_total)


def evaluate(model: Any, dataset: Dataset, batch_size: int, tokenizer: Any, device: Any) -> float:
    """Mean loss per trained token over the whole dataset (one process)."""
    objective = Supervised(
        dataset, tokenizer.pad_token_id, device, packing=False, scored_only=False
    )
    return _evaluate(model, objective, batch_size, Ranks(), _autocast(device))


def _epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    """The shuffle of one epoch, a pure function of (seed, epoch): a resumed run replays the
    same batches without saving any data-loader state."""
    import torch

    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def _adamw(parameters: list[Any], lr: float) -> Any:
    """AdamW as one fused kernel over every parameter (CPU and CUDA), else torch's
    multi-tensor one: torch's default on CPU is a Python loop over the parameters, and even
    the multi-tensor path costs several small kernels per step where the fused one costs one.
    """
    import torch

    try:
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0, fused=True)
    except RuntimeError:  # a device or dtype without the fused kernel
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0, foreach=True)


def _linear_schedule(total_steps: int):
    """Short linear warm-up, then linear decay to zero."""
    warmup = min(10, total_steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def _autocast(device: Any):
    import contextlib

    import torch

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy

        numpy.random.seed(seed % 2**32)
    except ImportError:
        pass


def _fingerprint(
    spec: TrainingSpec, hp: ResolvedHyperparameters, dataset: Any, total_steps: int
) -> dict[str, Any]:
    # Not the process count: the loss curve does not depend on it, so a run may resume on
    # another number of processes.
    return {
        "base_model": str(spec.base_model_path),
        "method": spec.method.model_dump(mode="json"),
        "hyperparameters": hp.model_dump(mode="json"),
        "seed": spec.seed,
        "examples": len(dataset),
        "tokens": dataset.n_tokens,
        "total_steps": total_steps,
    }


def _metrics(state: ckpt.TrainerState) -> dict[str, float]:
    metrics: dict[str, float] = {"step": float(state.step), "tokens": float(state.tokens)}
    if state.last_train_loss is not None:
        metrics["train_loss"] = state.last_train_loss
    if state.last_valid_loss is not None:
        metrics["valid_loss"] = state.last_valid_loss
    return metrics


def _save_final(
    spec: TrainingSpec,
    hp: ResolvedHyperparameters,
    model: Any,
    tokenizer: Any,
    result: TrainingResult,
    parameter_counts: tuple[int, int],
    state_dict: dict[str, Any] | None = None,
) -> None:
    """Write ``final/`` (rank 0). ``state_dict``: the whole model gathered from its shards;
    None when the model on this process is whole."""
    final_dir = result.final_dir
    tmp = final_dir.with_name(f".tmp-final-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    adapter = trains_adapter(spec.method)
    gathered = {} if state_dict is None else {"state_dict": state_dict}
    if adapter:
        # The head is a LoRA target, not a retrained embedding: without this peft would copy
        # the whole (unchanged) head into the adapter.
        model.save_pretrained(tmp, save_embedding_layers=False, **gathered)
    else:
        model.save_pretrained(tmp, **gathered)
    tokenizer.save_pretrained(tmp)
    info = {
        "format": "ftq-local-v1",
        "kind": "adapter" if adapter else "model",
        "base_model_path": str(spec.base_model_path.resolve()),
        "method": spec.method.model_dump(mode="json"),
        "hyperparameters": hp.model_dump(mode="json"),
        "seed": spec.seed,
        "trainable_parameters": parameter_counts[0],
        "total_parameters": parameter_counts[1],
        "processes": spec.processes,
        "strategy": result.strategy,
    }
    (tmp / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
    # result.json last: its presence marks a complete final directory.
    (tmp / RESULT_FILE).write_text(json.dumps(result.to_json(), indent=2), encoding="utf-8")
    if final_dir.exists():
        shutil.rmtree(final_dir)
    os.replace(tmp, final_dir)


def _read_result(final_dir: Path) -> TrainingResult:
    payload = json.loads((final_dir / RESULT_FILE).read_text(encoding="utf-8"))
    payload["final_dir"] = final_dir
    return TrainingResult(**payload)
