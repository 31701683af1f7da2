"""The local training loop: a plain PyTorch loop with step-level control.

Not HF Trainer: cancellation must be honoured before every step, every checkpoint must be
resumable bit-for-bit after a SIGKILL, and events go to ftq's callbacks, not to a logger.

Layout under ``spec.output_dir``::

    checkpoints/step-00000100/   resumable checkpoints (newest few kept)
    final/                       the fine-tuned model (full/freeze) or adapter (lora),
                                 its tokenizer, ftq_model.json and result.json
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from service.providers.local import checkpoints as ckpt
from service.providers.local.data import IGNORE_INDEX, Dataset, collate, load_dataset
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
from service.providers.local.spec import ResolvedHyperparameters, TrainingSpec, steps_per_epoch

RESULT_FILE = "result.json"

__all__ = [
    "MODEL_INFO_FILE",
    "TrainingCallbacks",
    "TrainingCancelled",
    "TrainingResult",
    "UnknownBaseModel",
    "resolve_base_model",
    "train",
]


class TrainingCancelled(Exception):
    """``callbacks.should_cancel()`` returned True; raised before the next step runs."""

    def __init__(self, completed_steps: int) -> None:
        self.completed_steps = completed_steps
        super().__init__(f"training cancelled after {completed_steps} steps")


class TrainingCallbacks:
    """Receives training events. Subclass and override what you need; all default to no-ops.

    Steps are 1-based counts of completed optimizer steps. Callbacks run on the training
    thread between steps, so they should be quick (queue an event, copy a checkpoint).
    """

    def on_step(
        self, step: int, total_steps: int, train_loss: float, learning_rate: float, tokens: int
    ) -> None:
        """Every ``log_every_steps`` and at the last step. ``train_loss`` is the mean batch
        loss since the previous report; ``tokens`` the cumulative tokens processed."""

    def on_eval(self, step: int, valid_loss: float) -> None:
        """Every ``eval_every_steps`` and at the last step, when there is a validation file."""

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        """A complete checkpoint now exists at ``path``. Copy it now if you want to keep it:
        older local checkpoints are pruned."""

    def should_cancel(self) -> bool:
        """Polled before every step."""
        return False


@dataclass(frozen=True)
class TrainingResult:
    trained_tokens: int
    steps: int
    final_train_loss: float
    final_valid_loss: float | None
    final_dir: Path
    first_train_loss: float
    resumed_from_step: int | None = None

    def to_json(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["final_dir"] = str(self.final_dir)
        return payload


def train(
    spec: TrainingSpec,
    training_file: Path,
    validation_file: Path | None,
    callbacks: TrainingCallbacks,
) -> TrainingResult:
    """Fine-tune ``spec.base_model_path`` as ``spec.method`` says; resume if checkpoints exist.

    If ``final/`` already holds a finished result (a re-delivered task), it is returned as is.
    """
    import torch

    final_dir = spec.output_dir / "final"
    if (final_dir / RESULT_FILE).is_file():
        return _read_result(final_dir)

    quiet_transformers()
    torch.set_num_threads(spec.torch_threads)
    _seed_everything(spec.seed)
    device = resolve_device(spec.device)

    tokenizer = load_tokenizer(spec.base_model_path)
    model = load_causal_lm(spec.base_model_path)
    max_len = model_max_length(model.config, tokenizer, spec.max_seq_len)
    train_set = load_dataset(training_file, tokenizer, max_len)
    valid_set = load_dataset(validation_file, tokenizer, max_len) if validation_file else None
    hp = spec.hyperparameters.resolve(len(train_set))

    model = apply_method(model, spec.method)
    model.to(device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    peak_lr = spec.learning_rate_base * hp.learning_rate_multiplier
    optimizer = torch.optim.AdamW(parameters, lr=peak_lr, weight_decay=0.0)
    per_epoch = steps_per_epoch(len(train_set), hp.batch_size)
    total_steps = per_epoch * hp.n_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _linear_schedule(total_steps))

    checkpoints_dir = spec.output_dir / "checkpoints"
    ckpt.remove_partial_checkpoints(checkpoints_dir)
    fingerprint = _fingerprint(spec, hp, train_set, total_steps)
    state = ckpt.TrainerState(total_steps=total_steps, fingerprint=fingerprint)
    resumed_from: int | None = None
    latest = ckpt.latest_checkpoint(checkpoints_dir)
    if latest is not None:
        state = ckpt.load_checkpoint(latest, model, optimizer, scheduler, fingerprint)
        resumed_from = state.step

    autocast = _autocast(device)
    pending_losses: list[float] = []
    for step in range(state.step + 1, total_steps + 1):
        if callbacks.should_cancel():
            raise TrainingCancelled(step - 1)
        epoch, index = divmod(step - 1, per_epoch)
        order = _epoch_order(spec.seed, epoch, len(train_set))
        batch_examples = [
            train_set.examples[i]
            for i in order[index * hp.batch_size : (index + 1) * hp.batch_size]
        ]
        batch = collate(batch_examples, tokenizer.pad_token_id, device)
        learning_rate = scheduler.get_last_lr()[0]

        model.train()
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"training loss became {loss_value} at step {step}")
        pending_losses.append(loss_value)
        state.step = step
        state.tokens += int(batch["attention_mask"].sum())
        if state.first_train_loss is None:
            state.first_train_loss = loss_value
        last_step = step == total_steps

        if step % spec.log_every_steps == 0 or last_step:
            state.last_train_loss = sum(pending_losses) / len(pending_losses)
            pending_losses.clear()
            callbacks.on_step(step, total_steps, state.last_train_loss, learning_rate, state.tokens)
        if valid_set is not None and (step % spec.eval_every_steps == 0 or last_step):
            state.last_valid_loss = evaluate(model, valid_set, hp.batch_size, tokenizer, device)
            callbacks.on_eval(step, state.last_valid_loss)
        epoch_end = spec.checkpoint_each_epoch and step % per_epoch == 0
        if step % spec.checkpoint_every_steps == 0 or epoch_end:
            path = ckpt.save_checkpoint(checkpoints_dir, model, optimizer, scheduler, state)
            callbacks.on_checkpoint(step, path, _metrics(state))
            ckpt.prune_checkpoints(checkpoints_dir, spec.keep_checkpoints)

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
    )
    _save_final(spec, hp, model, tokenizer, result, count_parameters(model))
    return result


def evaluate(model: Any, dataset: Dataset, batch_size: int, tokenizer: Any, device: Any) -> float:
    """Mean loss per trained token over the whole dataset."""
    import torch

    model.eval()
    total_loss = 0.0
    total_tokens = 0
    with torch.no_grad(), _autocast(device):
        for start in range(0, len(dataset), batch_size):
            batch = collate(
                dataset.examples[start : start + batch_size], tokenizer.pad_token_id, device
            )
            # The model shifts labels by one; count what it actually scores.
            n_scored = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            if n_scored:
                total_loss += float(model(**batch).loss) * n_scored
                total_tokens += n_scored
    return total_loss / max(1, total_tokens)


def _epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    """The shuffle of one epoch, a pure function of (seed, epoch): a resumed run replays the
    same batches without saving any data-loader state."""
    import torch

    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


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
    spec: TrainingSpec, hp: ResolvedHyperparameters, train_set: Dataset, total_steps: int
) -> dict[str, Any]:
    return {
        "base_model": str(spec.base_model_path),
        "method": spec.method.model_dump(mode="json"),
        "hyperparameters": hp.model_dump(mode="json"),
        "seed": spec.seed,
        "examples": len(train_set),
        "tokens": train_set.n_tokens,
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
) -> None:
    final_dir = result.final_dir
    tmp = final_dir.with_name(f".tmp-final-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    if spec.method.type == "lora":
        # The head is a LoRA target, not a retrained embedding: without this peft would copy
        # the whole (unchanged) head into the adapter.
        model.save_pretrained(tmp, save_embedding_layers=False)
    else:
        model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    info = {
        "format": "ftq-local-v1",
        "kind": "adapter" if spec.method.type == "lora" else "model",
        "base_model_path": str(spec.base_model_path.resolve()),
        "method": spec.method.model_dump(mode="json"),
        "hyperparameters": hp.model_dump(mode="json"),
        "seed": spec.seed,
        "trainable_parameters": parameter_counts[0],
        "total_parameters": parameter_counts[1],
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
