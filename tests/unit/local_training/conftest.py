"""Fixtures for local-training tests: a tiny base model built once per session, the dataset,
and one finished training run per method shared by the tests that inspect it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Nothing may come from a model hub in tests; set before transformers/huggingface_hub load.
os.environ["HF_HUB_OFFLINE"] = "1"

from tests.support.tiny_model import QA_PAIRS, chat_examples, write_chat_dataset

# 16 examples, batch 4 -> 4 steps/epoch; 60 epochs = 240 steps, enough for every method to
# reproduce all training answers on the tiny model (a few seconds per method on one thread).
EPOCHS = 60
BATCH_SIZE = 4
TOTAL_STEPS = EPOCHS * len(QA_PAIRS) // BATCH_SIZE


@dataclass
class RecordingCallbacks:
    """Records every event; cancels once ``cancel_after`` steps have completed."""

    cancel_after: int | None = None
    steps: list[tuple[int, int, float, float, int]] = field(default_factory=list)
    evals: list[tuple[int, float]] = field(default_factory=list)
    checkpoints: list[tuple[int, Path, dict[str, float]]] = field(default_factory=list)
    checkpoint_complete_at_callback: list[bool] = field(default_factory=list)
    cancel_polls: int = 0

    def on_step(self, step, total_steps, train_loss, learning_rate, tokens) -> None:
        self.steps.append((step, total_steps, train_loss, learning_rate, tokens))

    def on_eval(self, step, valid_loss) -> None:
        self.evals.append((step, valid_loss))

    def on_checkpoint(self, step, path, metrics) -> None:
        self.checkpoints.append((step, path, dict(metrics)))
        self.checkpoint_complete_at_callback.append((path / "trainer_state.json").is_file())

    def should_cancel(self) -> bool:
        self.cancel_polls += 1
        completed = self.steps[-1][0] if self.steps else 0
        return self.cancel_after is not None and completed >= self.cancel_after


@dataclass
class TrainedRun:
    method: str
    base_dir: Path
    spec: object
    result: object
    callbacks: RecordingCallbacks


@pytest.fixture(scope="session", autouse=True)
def _single_thread_torch():
    # One thread: with another process busy on the second core, two threads are ~100x slower.
    try:
        import torch
        from transformers.utils import logging as hf_logging
    except ImportError:  # the train extra is absent: only the torch-free tests run
        return
    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    from tests.support.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "base")


@pytest.fixture(scope="session")
def data_files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("data")
    train_file = write_chat_dataset(folder / "train.jsonl")
    valid_file = write_chat_dataset(folder / "valid.jsonl", chat_examples()[:4])
    return train_file, valid_file


def make_spec(base: Path, output_dir: Path, method: dict, **overrides):
    from service.providers.local.spec import TRAINING_METHOD, Hyperparameters, TrainingSpec

    options = {
        "hyperparameters": Hyperparameters(n_epochs=EPOCHS, batch_size=BATCH_SIZE),
        "checkpoint_every_steps": 100,
        "checkpoint_each_epoch": False,  # 60 tiny epochs: per-epoch checkpoints cost seconds
        "eval_every_steps": 50,
        "log_every_steps": 1,
        "torch_threads": 1,
        "device": "cpu",
        "seed": 0,
    }
    options.update(overrides)
    return TrainingSpec(
        base_model_path=base,
        output_dir=output_dir,
        method=TRAINING_METHOD.validate_python(method),
        **options,
    )


_METHODS = {
    "full": {"type": "full"},
    "freeze": {"type": "freeze", "trainable_layers": 1},
    "lora": {"type": "lora", "rank": 8, "alpha": 16},
}


@pytest.fixture(scope="session")
def trained_runs(tiny_base, data_files, tmp_path_factory):
    """Lazily trains each method once per session: ``trained_runs("lora")``."""
    from service.providers.local.trainer import train

    runs: dict[str, TrainedRun] = {}

    def get(method: str) -> TrainedRun:
        if method not in runs:
            spec = make_spec(tiny_base, tmp_path_factory.mktemp(f"run-{method}"), _METHODS[method])
            callbacks = RecordingCallbacks()
            result = train(spec, data_files[0], data_files[1], callbacks)
            runs[method] = TrainedRun(method, tiny_base, spec, result, callbacks)
        return runs[method]

    return get


def reproduced(model_dir: Path, cache) -> list[str]:
    """Questions whose training answer the model reproduces exactly (greedy)."""
    from service.providers.local.inference import generate_chat

    hits = []
    for question, answer in QA_PAIRS:
        reply = generate_chat(
            model_dir,
            [{"role": "user", "content": question}],
            max_tokens=16,  # answers are at most 11 tokens; the base model never stops
            temperature=0,
            stream=False,
            cache=cache,
        )
        if reply == answer:
            hits.append(question)
    return hits


# A multi-process run (DDP or FSDP) against one process on the same data: per-step losses
# within this, the same learning rates, tokens, evaluation steps and checkpoint steps.
LOSS_TOLERANCE = 1e-4


def assert_same_curve(
    got: RecordingCallbacks, want: RecordingCallbacks, *, steps: int, checkpoints: list[int]
) -> None:
    assert [s[0] for s in got.steps] == list(range(1, steps + 1))
    for (step, _, loss, lr, tokens), (_, _, want_loss, want_lr, want_tokens) in zip(
        got.steps, want.steps, strict=True
    ):
        assert abs(loss - want_loss) < LOSS_TOLERANCE, (step, loss, want_loss)
        assert lr == pytest.approx(want_lr) and tokens == want_tokens
    assert [s for s, _ in got.evals] == [s for s, _ in want.evals]
    assert all(
        abs(a - b) < LOSS_TOLERANCE for (_, a), (_, b) in zip(got.evals, want.evals, strict=True)
    )
    assert [c[0] for c in got.checkpoints] == checkpoints
    assert all(got.checkpoint_complete_at_callback)
